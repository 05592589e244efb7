//! What the catalog says of a rule, apart from the rules themselves, so the
//! exposures they open can name their rule without depending on them.

use crate::event::FileId;
use crate::finding::{Finding, ProcessRef, Severity};

/// How a rule's exposures are judged at the end of the observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Data a process left unsynced at its end: made durable later by
    /// anyone, it is `low` (the window is shown); still open while a live
    /// process could still fsync it, `low` too.
    EndOfLife,
    /// A wrong order of calls (rename before fsync, truncate before the
    /// rewrite is durable): a window that closed before a successful
    /// command ended is `low`; under attach, or when the command failed,
    /// the rule's severity with the window's length (a serving daemon was
    /// exposed for that long).
    Ordering,
    /// Damage no later call undoes (a torn record, an ignored fsync
    /// error): the rule's severity unless the file is gone.
    Lasting,
    /// A directory entry never made durable: judged by its rule from the
    /// name journal at the end.
    Name,
}

/// A rule's stable id, default severity and how its exposures are judged,
/// for the catalog, `--rule` / `--skip-rule` and report counts.
#[derive(Clone, Copy, Debug)]
pub struct RuleInfo {
    pub id: &'static str,
    pub severity: Severity,
    /// One line on what it catches.
    pub title: &'static str,
    pub kind: Kind,
}

impl RuleInfo {
    /// A finding of this rule at its default severity, with no evidence
    /// yet; the rule adds its facts.
    pub fn finding(
        &self,
        path: impl Into<String>,
        inode: Option<FileId>,
        process: ProcessRef,
        summary: impl Into<String>,
    ) -> Finding {
        Finding::new(self.id, self.severity, path, inode, process, summary)
    }
}
