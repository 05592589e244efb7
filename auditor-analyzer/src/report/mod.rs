//! A finished analysis as people and machines receive it: the run, the
//! findings worst first, counts and coverage stats, and the exit code.

pub mod groups;
pub mod help;
pub mod json;
pub mod jsonl;
pub mod layout;
pub mod left_out;
pub mod plural;
pub mod sarif;
mod sorted;
pub mod text;

pub use jsonl::{jsonl_at_risk_line, jsonl_finding_line, jsonl_summary_line};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analyzer::Analyzer;
use crate::calls::signal_name;
use crate::finding::{Finding, Severity};
use crate::rules::RULES;
use crate::stats::AnalyzerStats;

/// Schema id of the JSON report (and the JSON Lines summary).
pub const REPORT_SCHEMA: &str = "auditor.report/v1";

/// How the traced command ended: `{"code": 0}` or `{"signal": 9}` in
/// recordings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatusInfo {
    /// Exited normally with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatusInfo {
    /// Exit code when it exited normally.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatusInfo::Code(c) => Some(c),
            ExitStatusInfo::Signal(_) => None,
        }
    }

    /// Terminating signal when it was killed.
    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatusInfo::Signal(s) => Some(s),
            ExitStatusInfo::Code(_) => None,
        }
    }

    /// The exit code a wrapper must pass on for it: its code when it
    /// exited non-zero, 128 + the signal when it was killed (as a shell
    /// reports it); None when it succeeded.
    pub fn failure(self) -> Option<i32> {
        match self {
            ExitStatusInfo::Code(0) => None,
            ExitStatusInfo::Code(c) => Some(c),
            ExitStatusInfo::Signal(s) => Some(128 + s),
        }
    }

    /// `exited with code 0` / `killed by SIGKILL`.
    pub fn describe(self) -> String {
        match self {
            ExitStatusInfo::Code(c) => format!("exited with code {c}"),
            ExitStatusInfo::Signal(s) => format!("killed by {}", signal_name(s)),
        }
    }
}

/// What the capture side knows about the run the events came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub tool_version: String,
    pub command: Vec<String>,
    pub exit_status: Option<ExitStatusInfo>,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub ended_at: String,
    /// Events the kernel could not deliver (per-CPU drop counters).
    pub dropped: u64,
    /// Events captured.
    pub events: u64,
    /// "run" (live) or "report" (from a recording).
    pub mode: String,
    /// What finding paths are shown relative to and fingerprinted from:
    /// the repository (or else the working directory) of the launched
    /// command, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Where a recording read back stops being whole (a crash or kill cut
    /// it): byte offset of its first missing or partial line.
    #[serde(default)]
    pub truncated_at_byte: Option<u64>,
    /// Stacks the probes could not take (unreadable user stack, ring
    /// full) or passed over (a copy from the same place not yet
    /// answered): the findings about those calls have no stack.
    #[serde(default)]
    pub stacks_lost: u64,
    /// Calls whose stack the probes knew already (named, not copied
    /// again).
    #[serde(default)]
    pub stacks_reused: u64,
}

/// Findings per rule and severity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub total: usize,
    pub by_severity: BTreeMap<String, usize>,
    /// Every rule id, zero included, so consumers need no rule list.
    pub by_rule: BTreeMap<String, usize>,
    pub inconclusive: usize,
    /// Distinct paths with findings.
    pub files: usize,
}

/// One analysis, ready to render.
#[derive(Clone, Debug)]
pub struct Report {
    pub run: RunInfo,
    /// Worst first, then by path and order raised; each with its
    /// fingerprint and group.
    pub findings: Vec<Finding>,
    /// Alike findings, in the order of their worst member.
    pub groups: Vec<groups::Group>,
    pub stats: AnalyzerStats,
    /// Findings in a baseline or accepted by an allow rule, taken out by
    /// [`Report::leave_out`].
    pub left_out: left_out::LeftOut,
}

impl Report {
    /// Snapshots the analyzer with the run facts. Call
    /// [`Analyzer::finish`] first, or end-of-life findings are missing.
    pub fn new(analyzer: &Analyzer, run: RunInfo) -> Report {
        Report::from_findings(analyzer.findings().to_vec(), analyzer.stats(), run)
    }

    /// [`Report::new`] that takes the verdicts out of the analyzer instead
    /// of copying them (call [`Analyzer::conclude`] first).
    pub fn take(analyzer: &mut Analyzer, run: RunInfo) -> Report {
        let stats = analyzer.stats();
        Report::from_findings(analyzer.take_findings(), stats, run)
    }

    fn from_findings(mut findings: Vec<Finding>, stats: AnalyzerStats, run: RunInfo) -> Report {
        // A stable sort keeps the order raised among equals; by cached key,
        // so 50,000 findings of some 400 bytes each are moved once, not at
        // every step of a merge.
        findings.sort_by_cached_key(|f| (std::cmp::Reverse(f.severity), f.path.clone()));
        let base = run.base.as_deref();
        let groups = groups::groups(&findings, base);
        for g in &groups {
            for &i in &g.members {
                findings[i].group = Some(g.id.clone());
            }
        }
        for f in &mut findings {
            f.fingerprint = Some(groups::fingerprint(f, base));
        }
        Report {
            run,
            findings,
            groups,
            stats,
            left_out: left_out::LeftOut::default(),
        }
    }

    /// Events lost, from whichever side counted more.
    pub fn dropped(&self) -> u64 {
        self.run.dropped.max(self.stats.lost_events)
    }

    /// Records the kernel delivered (the same count in every mode; the
    /// events the auditor adds itself, such as what it found open at an
    /// attach, are not among them). A recording cut before its trailer
    /// only has the analyzer's count.
    pub fn events(&self) -> u64 {
        if self.run.events > 0 {
            self.run.events
        } else {
            self.stats.events
        }
    }

    /// Per rule / severity counts.
    pub fn counts(&self) -> Counts {
        let mut by_severity: BTreeMap<String, usize> = Severity::ALL_WORST_FIRST
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        let mut by_rule: BTreeMap<String, usize> =
            RULES.iter().map(|r| (r.id.to_string(), 0)).collect();
        for f in &self.findings {
            *by_severity.entry(f.severity.to_string()).or_default() += 1;
            *by_rule.entry(f.rule.clone()).or_default() += 1;
        }
        let mut paths: Vec<&str> = self.findings.iter().map(|f| f.path.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        Counts {
            total: self.findings.len(),
            by_severity,
            by_rule,
            inconclusive: self.findings.iter().filter(|f| f.inconclusive).count(),
            files: paths.len(),
        }
    }

    /// The traced command's own failure, as the exit code that must not be
    /// masked: its code when it exited non-zero, 128 + the signal when it
    /// was killed. Only for runs that launched it (`run`, `crashtest`); a
    /// report of a recording judges what was recorded.
    pub fn command_failure(&self) -> Option<i32> {
        if !matches!(self.run.mode.as_str(), "run" | "crashtest") {
            return None;
        }
        self.run.exit_status?.failure()
    }

    /// The command's failure first (see [`Report::command_failure`]); then
    /// 0 when no finding reaches `fail_on`, 1 when one does. Inconclusive
    /// findings count: a verdict we could not confirm is not a clean one.
    /// A truncated recording with no such finding is 2, not 0: what it
    /// lost could have held one, so the analysis did not do its job.
    pub fn exit_code(&self, fail_on: Severity) -> i32 {
        if let Some(code) = self.command_failure() {
            return code;
        }
        if self.findings.iter().any(|f| f.severity >= fail_on) {
            1
        } else if self.run.truncated_at_byte.is_some() {
            2
        } else {
            0
        }
    }

    /// Whether the events analyzed are all there were: none dropped, and
    /// the recording (if any) whole.
    pub fn complete(&self) -> bool {
        self.dropped() == 0 && self.run.truncated_at_byte.is_none()
    }

    /// `; 4 moot (gone or replaced before the end); 2 suppressed by --ignore`,
    /// or nothing: what the counts above leave out, so a clean report can
    /// be read for what it is.
    fn left_out(&self) -> String {
        let m = &self.stats.moot;
        let moot = m.deleted + m.replaced + m.moved;
        let mut s = String::new();
        if moot > 0 {
            s.push_str(&format!(
                "; {moot} moot (deleted, replaced or moved before the end)"
            ));
        }
        if self.stats.suppressed_findings > 0 {
            s.push_str(&format!(
                "; {} suppressed by --ignore",
                self.stats.suppressed_findings
            ));
        }
        s.push_str(&self.left_out_summary());
        s
    }

    /// `3 findings (1 high, 2 medium) in 2 files; 12345 events, 0 dropped`.
    pub fn summary_line(&self) -> String {
        let c = self.counts();
        let mut tail = format!(
            "{}, {} dropped",
            plural::count(self.events(), "event", "events"),
            self.dropped()
        );
        if let Some(b) = self.run.truncated_at_byte {
            tail.push_str(&format!("; recording truncated at byte {b}"));
        }
        if c.total == 0 {
            return format!("no durability findings; {tail}{}", self.left_out());
        }
        let parts: Vec<String> = Severity::ALL_WORST_FIRST
            .iter()
            .filter_map(|s| {
                c.by_severity
                    .get(s.as_str())
                    .filter(|&&n| n > 0)
                    .map(|n| format!("{n} {s}"))
            })
            .collect();
        let plural = |n: usize, w: &str| {
            if n == 1 {
                format!("{n} {w}")
            } else {
                format!("{n} {w}s")
            }
        };
        let mut line = format!(
            "{} ({}) in {}; {tail}",
            plural(c.total, "finding"),
            parts.join(", "),
            plural(c.files, "file")
        );
        if c.inconclusive > 0 {
            line.push_str(&format!("; {} inconclusive", c.inconclusive));
        }
        line.push_str(&self.left_out());
        line
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Config;
    use crate::test_support::*;

    /// A small analyzed run with one high and one medium finding.
    pub(crate) fn sample_report() -> Report {
        let (a, _) = run_with(
            Config::default(),
            trace![
                start(100, "/d"),
                create_unsynced(100, "a.tmp", 3, 10, 4096),
                rename(100, "a.tmp", "a"),
                write_new(100, "/d/log", 4, 11, 10),
                exit(100, 0),
            ],
        );
        Report::new(
            &a,
            RunInfo {
                tool_version: "0.1.0".into(),
                command: vec!["app".into(), "--save".into()],
                exit_status: Some(ExitStatusInfo::Code(0)),
                started_at: "2024-07-01T14:14:56.000Z".into(),
                ended_at: "2024-07-01T14:14:57.500Z".into(),
                dropped: 0,
                events: 8,
                mode: "run".into(),
                truncated_at_byte: None,
                base: Some("/d".into()),
                stacks_lost: 0,
                stacks_reused: 0,
            },
        )
    }

    #[test]
    fn a_truncated_recording_is_incomplete_and_never_exits_clean() {
        let mut r = sample_report();
        r.run.truncated_at_byte = Some(1234);
        assert!(!r.complete());
        assert_eq!(r.exit_code(Severity::Medium), 1, "findings still say 1");
        r.findings.clear();
        assert_eq!(r.exit_code(Severity::Medium), 2);
        assert!(
            r.summary_line()
                .ends_with("; recording truncated at byte 1234")
        );
        let v = r.to_json();
        assert_eq!(v["complete"], false);
        assert_eq!(v["truncated_at_byte"], 1234);
        r.run.truncated_at_byte = None;
        assert_eq!(r.exit_code(Severity::Medium), 0);
        assert_eq!(r.to_json()["truncated_at_byte"], serde_json::Value::Null);
    }

    #[test]
    fn findings_sort_worst_first_and_count() {
        let r = sample_report();
        let sev: Vec<Severity> = r.findings.iter().map(|f| f.severity).collect();
        assert_eq!(
            sev,
            vec![Severity::High, Severity::Medium, Severity::Medium],
            "{:#?}",
            r.findings
        );
        let c = r.counts();
        assert_eq!(c.by_rule["rename-without-fsync"], 1);
        assert_eq!(c.by_rule["rename-without-dir-fsync"], 1);
        assert_eq!(c.by_rule["unsynced-at-exit"], 1);
        assert_eq!(c.by_rule["truncate-in-place"], 0);
        assert_eq!(
            r.summary_line(),
            "3 findings (1 high, 2 medium) in 2 files; 8 events, 0 dropped"
        );
    }

    #[test]
    fn a_failing_command_is_never_masked() {
        let mut r = sample_report();
        r.run.exit_status = Some(ExitStatusInfo::Code(3));
        assert_eq!(r.exit_code(Severity::Medium), 3, "findings or not");
        r.findings.clear();
        assert_eq!(r.exit_code(Severity::Medium), 3);
        r.run.exit_status = Some(ExitStatusInfo::Signal(9));
        assert_eq!(r.exit_code(Severity::Medium), 137);
        // A recording's report judges the recording.
        r.run.mode = "report".into();
        assert_eq!(r.exit_code(Severity::Medium), 0);
    }

    #[test]
    fn exit_code_follows_fail_on() {
        let r = sample_report();
        assert_eq!(r.exit_code(Severity::High), 1);
        assert_eq!(r.exit_code(Severity::Medium), 1);
        let mut only_medium = r.clone();
        only_medium
            .findings
            .retain(|f| f.severity == Severity::Medium);
        assert_eq!(only_medium.exit_code(Severity::High), 0);
        assert_eq!(only_medium.exit_code(Severity::Low), 1);
        let mut clean = r.clone();
        clean.findings.clear();
        assert_eq!(clean.exit_code(Severity::Low), 0);
        let mut inconclusive = only_medium.clone();
        inconclusive.findings[0].inconclusive = true;
        assert_eq!(
            inconclusive.exit_code(Severity::Medium),
            1,
            "inconclusive findings count"
        );
    }
}
