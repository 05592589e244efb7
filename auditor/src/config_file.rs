//! `auditor.toml`: a project's accepted findings, each with the reason it
//! is accepted, so a known and understood risk stops failing CI without
//! being forgotten (it is counted, and listed with its reason under -v).
//!
//! ```toml
//! [[allow]]
//! rule = "unsynced-at-exit"
//! path = "build/**"          # relative to the repository, or absolute
//! process = "make"           # optional: the process's name
//! reason = "build output, made again by the next build"
//! ```
//!
//! It is read from the working directory, or from `--config FILE`;
//! `--no-config` ignores it. The file is user input: every mistake (a
//! missing reason, an unknown rule or key, a bad glob) is one line naming
//! the file and the line.

use std::path::{Path, PathBuf};

use auditor_analyzer::report::left_out::AllowRule;
use serde::Deserialize;
use toml::Spanned;

use crate::{cli::ReportOptions, error::UserError};

/// The name looked for in the working directory.
pub const CONFIG_FILE: &str = "auditor.toml";

/// Largest config file read.
const MAX_BYTES: u64 = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    allow: Vec<Spanned<RawAllow>>,
}

/// An `[[allow]]` table as written; what is missing is reported by us,
/// with its line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    rule: Option<String>,
    path: Option<String>,
    process: Option<String>,
    reason: Option<String>,
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Which file to read: `--config`, else `auditor.toml` here if it exists.
fn chosen(o: &ReportOptions) -> Option<PathBuf> {
    if o.no_config {
        return None;
    }
    if let Some(p) = &o.config {
        return Some(p.clone());
    }
    let here = Path::new(CONFIG_FILE);
    here.exists().then(|| here.to_path_buf())
}

/// The allow rules the options and the working directory call for.
pub fn load(o: &ReportOptions) -> Result<Vec<AllowRule>, UserError> {
    let Some(path) = chosen(o) else {
        return Ok(Vec::new());
    };
    let shown = path.display().to_string();
    let text = read(&path).map_err(|e| UserError::new(format!("{shown}: {e}")))?;
    parse(&text, &shown).map_err(UserError::new)
}

fn read(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB; is it the right file?",
            MAX_BYTES >> 10
        )));
    }
    Ok(text)
}

/// The allow rules in `text`, read from the file named `shown`.
fn parse(text: &str, shown: &str) -> Result<Vec<AllowRule>, String> {
    let file: File = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(1, |s| line_of(text, s.start));
        format!("{shown}:{at}: {}", e.message().trim().replace('\n', " "))
    })?;
    file.allow
        .into_iter()
        .map(|entry| {
            let at = format!("{shown}:{}", line_of(text, entry.span().start));
            let a = entry.into_inner();
            let need = |v: Option<String>, key: &str, why: &str| {
                v.ok_or_else(|| format!("{at}: [[allow]] needs {key}: {why}"))
            };
            let rule = need(a.rule, "rule", "the rule id the finding has")?;
            let path = need(a.path, "path", "a glob of the paths it covers")?;
            let reason = need(a.reason, "reason", "say why these findings are accepted")?;
            AllowRule::new(&rule, &path, a.process.as_deref(), &reason, &at)
                .map_err(|e| format!("{at}: {e:#}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
# Accepted risks.
[[allow]]
rule = "unsynced-at-exit"
path = "build/**"
reason = "build output, made again by the next build"

[[allow]]
rule = "rename-without-dir-fsync"
path = "/var/cache/app/*"
process = "app"
reason = "a cache"
"#;

    #[test]
    fn allow_rules_are_read_with_where_they_were_written() {
        let rules = parse(GOOD, "auditor.toml").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].rule, "unsynced-at-exit");
        assert_eq!(rules[0].path, "build/**");
        assert_eq!(rules[0].process, None);
        assert_eq!(rules[0].origin, "auditor.toml:3");
        assert_eq!(rules[1].process.as_deref(), Some("app"));
        assert_eq!(rules[1].origin, "auditor.toml:8");
        assert!(parse("", "auditor.toml").unwrap().is_empty());
    }

    #[test]
    fn a_missing_reason_names_the_file_and_line() {
        let text = "[[allow]]\nrule = \"unsynced-at-exit\"\npath = \"*\"\n\n[[allow]]\nrule = \"unsynced-at-exit\"\npath = \"x\"\n";
        let e = parse(text, "ci/auditor.toml").unwrap_err();
        assert_eq!(
            e,
            "ci/auditor.toml:1: [[allow]] needs reason: say why these findings are accepted"
        );
        let e = parse(
            "[[allow]]\nrule = \"unsynced-at-exit\"\npath = \"*\"\nreason = \"\"\n",
            "a.toml",
        )
        .unwrap_err();
        assert!(e.starts_with("a.toml:1: the reason is empty"), "{e}");
    }

    #[test]
    fn mistakes_are_one_line_with_a_line_number() {
        for (text, want) in [
            (
                "[[allow]]\nrule = \"nope\"\npath = \"*\"\nreason = \"r\"\n",
                "a.toml:1: unknown rule `nope`",
            ),
            (
                "[[allow]]\nrule = \"unsynced-at-exit\"\npath = \"[\"\nreason = \"r\"\n",
                "a.toml:1: invalid",
            ),
            (
                "\n[[allow]]\nrule = \"unsynced-at-exit\"\npaht = \"*\"\n",
                "a.toml:4: unknown field `paht`",
            ),
            ("[allowed]\n", "a.toml:1: unknown field `allowed`"),
            ("[[allow]]\nrule = unquoted\n", "a.toml:2:"),
            ("[[allow]]\nrule = 3\n", "a.toml:2:"),
        ] {
            let e = parse(text, "a.toml").unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
