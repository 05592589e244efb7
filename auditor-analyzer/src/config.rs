//! What the user chose: when to fail, which paths and rules to leave out.

use std::collections::BTreeSet;

use anyhow::{Result, bail};

use crate::finding::Severity;
use crate::glob::Glob;
use crate::report::left_out::AllowRule;
use crate::rules::RULES;

/// Options of one analysis, as the CLI gathers them.
#[derive(Clone, Debug)]
pub struct Config {
    /// Lowest severity that makes the exit code 1.
    pub fail_on: Severity,
    /// Globs on finding paths to leave out of the report.
    pub ignore: Vec<String>,
    /// When not empty, only these rule ids run.
    pub only_rules: Vec<String>,
    /// Rule ids that never report.
    pub skip_rules: Vec<String>,
    /// Report findings on caches too (see [`CACHE_DIRS`]); off by default.
    pub judge_caches: bool,
    /// Most inode states kept at once. Past it the least recently used go
    /// (idle ones first); a state evicted while it still carried unsynced
    /// data or a pending verdict is counted, and later verdicts on that
    /// inode are marked inconclusive. Bounds memory on long attaches.
    pub max_files: usize,
    /// Most process records kept at once (live ones whose exit was never
    /// seen pile up only when events are lost); past it the least recently
    /// active go, and verdicts on the files they wrote become inconclusive.
    pub max_processes: usize,
    /// Fingerprints of known findings, left out of the report
    /// ([`crate::Report::leave_out`]); None when no baseline was given.
    pub baseline: Option<BTreeSet<String>>,
    /// Accepted findings, left out of the report with their reason.
    pub allow: Vec<AllowRule>,
}

/// Default of [`Config::max_files`]: a few hundred MiB at most, far more
/// files than a daemon keeps in flight.
pub const DEFAULT_MAX_FILES: usize = 100_000;
/// Default of [`Config::max_processes`]: the kernel's traced-process table
/// holds as many.
pub const DEFAULT_MAX_PROCESSES: usize = 32_768;

impl Default for Config {
    fn default() -> Self {
        Config {
            fail_on: Severity::Medium,
            ignore: Vec::new(),
            only_rules: Vec::new(),
            skip_rules: Vec::new(),
            judge_caches: false,
            max_files: DEFAULT_MAX_FILES,
            max_processes: DEFAULT_MAX_PROCESSES,
            baseline: None,
            allow: Vec::new(),
        }
    }
}

impl Config {
    /// Checks the globs and rule ids, so a typo fails before any capture.
    pub fn check(&self) -> Result<()> {
        Filter::new(self).map(|_| ())
    }
}

/// Directories whose files are caches their programs check and rebuild
/// when they are missing or damaged: Python bytecode, pytest's and mypy's
/// caches, and the XDG cache directory (non-essential data by definition).
/// Losing them to a crash costs a rebuild, not data, so findings on them
/// are counted and left out unless asked for.
pub const CACHE_DIRS: &[&str] = &["__pycache__", ".pytest_cache", ".mypy_cache", ".cache"];

/// Whether `path` lies inside one of the [`CACHE_DIRS`].
pub fn is_cache(path: &str) -> bool {
    let dirs = path.rsplit_once('/').map_or("", |(dirs, _)| dirs);
    dirs.split('/').any(|c| CACHE_DIRS.contains(&c))
}

/// The config checked and compiled once, so per-finding filtering is cheap.
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    ignore: Vec<Glob>,
    enabled: Vec<&'static str>,
    judge_caches: bool,
}

impl Filter {
    /// Checks globs and rule ids; errors name the culprit and the valid ids.
    pub(crate) fn new(config: &Config) -> Result<Filter> {
        let ignore = config
            .ignore
            .iter()
            .map(|p| Glob::new(p))
            .collect::<Result<Vec<_>>>()?;
        for id in config.only_rules.iter().chain(&config.skip_rules) {
            if !RULES.iter().any(|r| r.id == id) {
                let valid: Vec<&str> = RULES.iter().map(|r| r.id).collect();
                bail!("unknown rule id `{id}` (valid: {})", valid.join(", "));
            }
        }
        let enabled = RULES
            .iter()
            .map(|r| r.id)
            .filter(|id| config.only_rules.is_empty() || config.only_rules.iter().any(|o| o == id))
            .filter(|id| !config.skip_rules.iter().any(|s| s == id))
            .collect();
        Ok(Filter {
            ignore,
            enabled,
            judge_caches: config.judge_caches,
        })
    }

    /// Whether findings of this rule are wanted at all.
    pub(crate) fn rule_enabled(&self, id: &str) -> bool {
        self.enabled.contains(&id)
    }

    /// Whether a finding on this path is left out as one on a cache.
    pub(crate) fn path_is_skipped_cache(&self, path: &str) -> bool {
        !self.judge_caches && is_cache(path)
    }

    /// Whether a finding on this path is left out by an ignore glob.
    pub(crate) fn path_ignored(&self, path: &str) -> bool {
        self.ignore.iter().any(|g| g.is_match(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_are_files_inside_cache_directories() {
        assert!(is_cache("/srv/app/__pycache__/m.cpython-311.pyc"));
        assert!(is_cache("/home/u/.cache/pip/http/a/b"));
        assert!(is_cache("/w/.pytest_cache/v/cache/lastfailed"));
        assert!(
            !is_cache("/srv/app/__pycache__"),
            "the directory's own name"
        );
        assert!(!is_cache("/srv/app/__pycache__x/m.pyc"));
        assert!(!is_cache("/srv/.cache.db"));
        assert!(!is_cache("/var/lib/app/state.json"));
    }

    #[test]
    fn unknown_rule_ids_list_the_valid_ones() {
        let config = Config {
            skip_rules: vec!["rename-no-fsync".into()],
            ..Config::default()
        };
        let err = Filter::new(&config).unwrap_err().to_string();
        assert!(err.contains("unknown rule id `rename-no-fsync`"), "{err}");
        assert!(err.contains("rename-without-fsync"), "{err}");
    }

    #[test]
    fn only_and_skip_select_rules() {
        let config = Config {
            only_rules: vec!["rename-without-fsync".into(), "unsynced-at-exit".into()],
            skip_rules: vec!["unsynced-at-exit".into()],
            ..Config::default()
        };
        let f = Filter::new(&config).unwrap();
        assert!(f.rule_enabled("rename-without-fsync"));
        assert!(!f.rule_enabled("unsynced-at-exit"));
        assert!(!f.rule_enabled("truncate-in-place"));
    }

    #[test]
    fn bad_globs_are_errors() {
        let config = Config {
            ignore: vec!["/x/[".into()],
            ..Config::default()
        };
        assert!(Filter::new(&config).is_err());
    }
}
