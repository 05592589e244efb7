//! What the analyzer tells people: one durability problem, with the process,
//! the file, the structured evidence and the ordered calls that prove it.

use std::fmt;
use std::str::FromStr;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::{Container, FileId};
use crate::stack::Stack;

/// How bad a finding is; ordered so `--fail-on` can compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    /// Every severity, worst first, for counts and listings.
    pub const ALL_WORST_FIRST: [Severity; 3] = [Severity::High, Severity::Medium, Severity::Low];

    /// The lowercase name used in reports and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = anyhow::Error;

    /// Parses `--fail-on` values so the CLI gets one clear error message.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            _ => anyhow::bail!("unknown severity `{s}` (valid: low, medium, high)"),
        }
    }
}

/// The process a finding is about, copied out so findings outlive the
/// tracker's process records. Its executable and command line are shared
/// with the process record: every file a process leaves dirty holds a few
/// of these, and 50,000 files must not hold 200,000 copies of its argv.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub comm: Arc<str>,
    /// Executable path when known (exec or process start), else null; a
    /// re-exec of `/proc/self/exe` keeps the binary it re-ran.
    pub exe: Option<Arc<str>>,
    /// Its command line as its last exec set it (argv[0] names re-execs
    /// such as dockerd's `docker-untar`); empty when unknown.
    #[serde(default, skip_serializing_if = "no_args")]
    pub argv: Arc<[String]>,
}

fn no_args(argv: &Arc<[String]>) -> bool {
    argv.is_empty()
}

/// One call in the chain of evidence, already rendered for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRef {
    pub seq: u64,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// e.g. `write(fd=3, 4096) = 4096` or `rename("/d/a.tmp", "/d/a") = 0`.
    pub call: String,
    /// Where the call was made; reports show it once, as the finding's
    /// [`Finding::stack`].
    #[serde(skip)]
    pub stack: Option<std::sync::Arc<Stack>>,
}

/// Most calls a finding carries; the first and last ones are kept when a
/// chain is longer, so a report stays readable and bounded.
pub const MAX_CALLS: usize = 20;

/// One durability problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable rule id (`rename-without-fsync`, ...).
    pub rule: String,
    pub severity: Severity,
    /// The file (or directory entry) at risk, as people know it: its path
    /// on the host, or, when `host_path_unknown` says why that cannot be
    /// known, the process's own.
    pub path: String,
    /// The path as the process saw it, when the host's differs (a chroot,
    /// a container's mount namespace, a re-exec that pivoted its root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_in_process: Option<String>,
    /// Why the host has no name for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path_unknown: Option<String>,
    /// The container whose process named it so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// Identity of the file; null when the kernel never told us.
    pub inode: Option<FileId>,
    pub process: ProcessRef,
    /// One line for people.
    pub summary: String,
    /// Structured, rule-specific facts.
    pub evidence: Map<String, Value>,
    /// The ordered calls that led to the finding (at most [`MAX_CALLS`]).
    pub calls: Vec<CallRef>,
    /// Lost events could have changed this verdict.
    pub inconclusive: bool,
    pub inconclusive_reason: Option<String>,
    /// Stable across runs (rule, path relative to the working directory
    /// or repository, call site): what baselines and code review compare.
    /// Set when the report is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The group of alike findings it belongs to in the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Where in the code the call that put the data at risk was made (the
    /// rename, the first unsynced write, the create, ...), when the probes
    /// took its stack. Shared with the call it came from and the other
    /// findings made there: 50,000 findings from one loop hold one stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<std::sync::Arc<Stack>>,
}

impl Finding {
    /// Starts a finding of `rule` with no evidence; rules add their facts.
    pub fn new(
        rule: &str,
        severity: Severity,
        path: impl Into<String>,
        inode: Option<FileId>,
        process: ProcessRef,
        summary: impl Into<String>,
    ) -> Finding {
        Finding {
            rule: rule.to_string(),
            severity,
            path: path.into(),
            path_in_process: None,
            host_path_unknown: None,
            container: None,
            inode,
            process,
            summary: summary.into(),
            evidence: Map::new(),
            calls: Vec::new(),
            inconclusive: false,
            inconclusive_reason: None,
            fingerprint: None,
            group: None,
            stack: None,
        }
    }

    /// An empty finding that allocates nothing: what stays behind when a
    /// finding is moved out of a structure that owns it.
    pub fn placeholder() -> Finding {
        Finding::new(
            "",
            Severity::Low,
            String::new(),
            None,
            ProcessRef {
                pid: 0,
                comm: "".into(),
                exe: None,
                argv: Default::default(),
            },
            String::new(),
        )
    }

    /// Adds one evidence entry (builder style, so rules read top-down).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Finding {
        self.evidence.insert(key.to_string(), value.into());
        self
    }

    /// Adds every entry of `evidence` (facts shared by several findings).
    pub fn with_all(mut self, evidence: &Map<String, Value>) -> Finding {
        self.evidence.extend(evidence.clone());
        self
    }

    /// Sets the call chain, keeping the first and last calls when too long.
    pub fn with_calls(mut self, calls: Vec<CallRef>) -> Finding {
        self.calls = bound_calls(calls);
        self
    }
}

/// Keeps at most [`MAX_CALLS`] calls in order, without duplicates: the first
/// few (how it started) and the last ones (what triggered the finding).
pub fn bound_calls(mut calls: Vec<CallRef>) -> Vec<CallRef> {
    calls.sort_by_key(|c| (c.seq, c.ts_ns));
    calls.dedup_by(|a, b| a.seq == b.seq && a.tid == b.tid && a.call == b.call);
    if calls.len() > MAX_CALLS {
        let head = 5;
        let tail = MAX_CALLS - head;
        calls.drain(head..calls.len() - tail);
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(seq: u64) -> CallRef {
        CallRef {
            seq,
            ts_ns: seq,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            call: format!("c{seq}"),
            stack: None,
        }
    }

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::High > Severity::Medium && Severity::Medium > Severity::Low);
        assert_eq!("HIGH".parse::<Severity>().unwrap(), Severity::High);
        let err = "urgent".parse::<Severity>().unwrap_err().to_string();
        assert!(err.contains("low, medium, high"), "{err}");
    }

    #[test]
    fn long_call_chains_keep_first_and_last() {
        let calls = bound_calls((0..50).rev().map(call).collect());
        assert_eq!(calls.len(), MAX_CALLS);
        assert_eq!(calls[0].seq, 0);
        assert_eq!(calls[4].seq, 4);
        assert_eq!(calls[5].seq, 35);
        assert_eq!(calls.last().unwrap().seq, 49);
    }
}
