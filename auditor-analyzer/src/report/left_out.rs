//! What a report leaves out on purpose: findings already known (their
//! fingerprint is in a baseline) and findings a team accepted (an allow
//! rule, with the reason). CI then fails on what is new, and what was left
//! out is still counted, and listed under `-v`, so nothing disappears
//! silently.

use std::collections::BTreeSet;
use std::fmt::Write;

use anyhow::{Result, bail};

use super::Report;
use super::groups::{self, escape, relative};
use crate::finding::Finding;
use crate::glob::Glob;
use crate::rules::RULES;

/// One accepted finding pattern: a rule, a path glob, optionally a process
/// name, and why it is accepted.
#[derive(Clone, Debug)]
pub struct AllowRule {
    pub rule: String,
    /// The glob as written.
    pub path: String,
    glob: Glob,
    /// Matches the process's name (`comm`) or its executable's file name.
    pub process: Option<String>,
    pub reason: String,
    /// Where it was written (`auditor.toml:12`), for listings.
    pub origin: String,
}

impl AllowRule {
    /// Checks the rule id and compiles the glob; errors say which is wrong.
    pub fn new(
        rule: &str,
        path: &str,
        process: Option<&str>,
        reason: &str,
        origin: &str,
    ) -> Result<AllowRule> {
        if !RULES.iter().any(|r| r.id == rule) {
            let valid: Vec<&str> = RULES.iter().map(|r| r.id).collect();
            bail!("unknown rule `{rule}` (valid: {})", valid.join(", "));
        }
        if reason.trim().is_empty() {
            bail!("the reason is empty: say why this finding is accepted");
        }
        Ok(AllowRule {
            rule: rule.to_string(),
            path: path.to_string(),
            glob: Glob::new(path)?,
            process: process.map(str::to_string),
            reason: reason.to_string(),
            origin: origin.to_string(),
        })
    }

    /// Whether `f` is accepted. A glob starting with `/` is matched against
    /// the absolute path, any other against the path relative to `base`
    /// (the repository or working directory), so one file serves every
    /// checkout; a glob without `/` matches the file name alone.
    pub fn matches(&self, f: &Finding, base: Option<&str>) -> bool {
        if f.rule != self.rule {
            return false;
        }
        if let Some(p) = &self.process {
            let exe = f.process.exe.as_deref().and_then(|e| e.rsplit('/').next());
            // The kernel keeps 15 bytes of a name.
            let cut = p.get(..15).unwrap_or(p);
            if *f.process.comm != **p && &*f.process.comm != cut && exe != Some(p.as_str()) {
                return false;
            }
        }
        let subject = if self.path.starts_with('/') {
            f.path.as_str()
        } else {
            relative(&f.path, base)
        };
        self.glob.is_match(subject)
    }
}

/// A finding an allow rule accepted.
#[derive(Clone, Debug)]
pub struct Allowed {
    pub finding: Finding,
    pub reason: String,
    pub origin: String,
}

/// What [`Report::leave_out`] took out.
#[derive(Clone, Debug, Default)]
pub struct LeftOut {
    /// Whether a baseline was given (every result left is then new).
    pub baseline_given: bool,
    /// Findings whose fingerprint is in the baseline.
    pub baseline: Vec<Finding>,
    /// Findings an allow rule accepted.
    pub allowed: Vec<Allowed>,
}

impl Report {
    /// Takes out the findings an allow rule accepts (first, since a reason
    /// says more) and those whose fingerprint is in `baseline`; groups are
    /// made again from what is left, and counts and the exit code follow it.
    pub fn leave_out(&mut self, baseline: Option<&BTreeSet<String>>, allow: &[AllowRule]) {
        let base = self.run.base.clone();
        let base = base.as_deref();
        self.left_out.baseline_given |= baseline.is_some();
        // In place: 50,000 findings are not copied into a second vector.
        let mut findings = std::mem::take(&mut self.findings);
        let allowed = |f: &Finding| allow.iter().find(|a| a.matches(f, base));
        for f in findings.extract_if(.., |f| {
            f.group = None;
            allowed(f).is_some()
        }) {
            let a = allowed(&f).expect("matched just now");
            self.left_out.allowed.push(Allowed {
                reason: a.reason.clone(),
                origin: a.origin.clone(),
                finding: f,
            });
        }
        let in_baseline = |f: &mut Finding| {
            baseline
                .zip(f.fingerprint.as_ref())
                .is_some_and(|(b, fp)| b.contains(fp))
        };
        self.left_out
            .baseline
            .extend(findings.extract_if(.., in_baseline));
        self.findings = findings;
        self.groups = groups::groups(&self.findings, base);
        for g in &self.groups {
            for &i in &g.members {
                self.findings[i].group = Some(g.id.clone());
            }
        }
    }

    /// `; 2 in the baseline; 1 allowed by the allow-list`, or nothing.
    pub(crate) fn left_out_summary(&self) -> String {
        let mut s = String::new();
        if !self.left_out.baseline.is_empty() {
            s.push_str(&format!(
                "; {} in the baseline",
                self.left_out.baseline.len()
            ));
        }
        if !self.left_out.allowed.is_empty() {
            s.push_str(&format!(
                "; {} allowed by the allow-list",
                self.left_out.allowed.len()
            ));
        }
        s
    }

    /// The findings left out, one line each (for `-v`).
    pub(crate) fn render_left_out(&self, out: &mut impl Write) {
        let base = self.run.base.as_deref();
        let line = |f: &Finding| {
            format!(
                "{} {}  {}  by {} (pid {})",
                f.severity.as_str().to_uppercase(),
                f.rule,
                escape(relative(&f.path, base)),
                escape(&f.process.comm),
                f.process.pid
            )
        };
        if !self.left_out.baseline.is_empty() {
            let _ = writeln!(out, "in the baseline ({}):", self.left_out.baseline.len());
            for f in &self.left_out.baseline {
                let _ = writeln!(out, "  {}", line(f));
            }
        }
        if !self.left_out.allowed.is_empty() {
            let _ = writeln!(out, "allowed ({}):", self.left_out.allowed.len());
            for a in &self.left_out.allowed {
                let _ = writeln!(
                    out,
                    "  {}\n    reason ({}): {}",
                    line(&a.finding),
                    escape(&a.origin),
                    escape(&a.reason)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;
    use crate::report::tests::sample_report;
    use crate::report::text::TextOptions;

    fn allow(rule: &str, path: &str, process: Option<&str>) -> AllowRule {
        AllowRule::new(
            rule,
            path,
            process,
            "generated, rebuilt on demand",
            "auditor.toml:2",
        )
        .unwrap()
    }

    #[test]
    fn allow_rules_match_rule_path_and_process() {
        let r = sample_report();
        let log = r.findings.iter().find(|f| f.path == "/d/log").unwrap();
        let base = r.run.base.as_deref();
        assert!(allow("unsynced-at-exit", "log", None).matches(log, base));
        assert!(allow("unsynced-at-exit", "*", None).matches(log, base));
        assert!(allow("unsynced-at-exit", "/d/*", None).matches(log, base));
        assert!(allow("unsynced-at-exit", "**", Some("app")).matches(log, base));
        assert!(!allow("unsynced-at-exit", "**", Some("make")).matches(log, base));
        assert!(!allow("rename-without-fsync", "**", None).matches(log, base));
        assert!(!allow("unsynced-at-exit", "sub/*", None).matches(log, base));
    }

    #[test]
    fn allow_rules_need_a_known_rule_a_glob_and_a_reason() {
        let e = AllowRule::new("no-such", "*", None, "r", "x:1").unwrap_err();
        assert!(e.to_string().contains("unknown rule `no-such`"), "{e}");
        assert!(AllowRule::new("unsynced-at-exit", "[", None, "r", "x:1").is_err());
        let e = AllowRule::new("unsynced-at-exit", "*", None, "  ", "x:1").unwrap_err();
        assert!(e.to_string().contains("reason"), "{e}");
    }

    #[test]
    fn left_out_findings_are_counted_not_reported() {
        let mut r = sample_report();
        let high = r.findings[0].fingerprint.clone().unwrap();
        let baseline: BTreeSet<String> = [high, "0000000000000000".to_string()].into();
        r.leave_out(Some(&baseline), &[allow("unsynced-at-exit", "log", None)]);
        assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
        assert_eq!(r.findings[0].rule, "rename-without-dir-fsync");
        assert_eq!(r.findings[0].group, Some(r.groups[0].id.clone()));
        assert_eq!(r.groups.len(), 1);
        assert_eq!(r.left_out.baseline.len(), 1);
        assert_eq!(r.left_out.allowed.len(), 1);
        assert_eq!(r.counts().total, 1);
        assert_eq!(r.exit_code(Severity::High), 0, "the high one is known");
        assert!(
            r.summary_line()
                .ends_with("; 1 in the baseline; 1 allowed by the allow-list"),
            "{}",
            r.summary_line()
        );
        let v = r.to_json();
        assert_eq!(v["stats"]["baseline_findings"], 1);
        assert_eq!(v["stats"]["allowed_findings"], 1);
        let terse = r.render_text(&TextOptions::default());
        assert!(!terse.contains("in the baseline ("), "{terse}");
        let verbose = r.render_text(&TextOptions {
            verbose: true,
            ..TextOptions::default()
        });
        assert!(
            verbose
                .contains("in the baseline (1):\n  HIGH rename-without-fsync  a  by app (pid 100)"),
            "{verbose}"
        );
        assert!(
            verbose.contains("reason (auditor.toml:2): generated, rebuilt on demand"),
            "{verbose}"
        );
    }
}
