//! The rules: one module each, pure functions from tracked state to
//! findings. The analyzer decides when each is asked (at a rename, a write,
//! an exit...); the rule decides whether it is a problem and says why.

pub mod create_without_dir_fsync;
pub mod fsync_error_ignored;
pub mod interleaved_writers;
pub mod killed_mid_write;
pub mod killed_while_dirty;
pub mod rename_without_dir_fsync;
pub mod rename_without_fsync;
pub mod sync_file_range_only;
pub mod truncate_in_place;
pub mod unsynced_at_exit;

use serde_json::{Map, Value, json};

use crate::calls::human_duration;
use crate::finding::{CallRef, Finding, ProcessRef, Severity};
use crate::track::inodes::{Dirty, InodeState};

/// A rule's stable id and default severity, for the catalog, `--only` /
/// `--skip` validation and report counts.
#[derive(Clone, Copy, Debug)]
pub struct RuleInfo {
    pub id: &'static str,
    pub severity: Severity,
    /// One line on what it catches.
    pub title: &'static str,
}

/// Every rule, in the order reports list their counts.
pub const RULES: &[RuleInfo] = &[
    rename_without_fsync::INFO,
    killed_while_dirty::INFO,
    killed_mid_write::INFO,
    truncate_in_place::INFO,
    fsync_error_ignored::INFO,
    unsynced_at_exit::INFO,
    rename_without_dir_fsync::INFO,
    interleaved_writers::INFO,
    create_without_dir_fsync::INFO,
    sync_file_range_only::INFO,
];

/// The finding a process's end raises for one file it left dirty
/// (killed-while-dirty, unsynced-at-exit): the exit or kill facts in
/// `context`, the dirty-data evidence, and the file's calls followed by the
/// ones that ended the process.
pub(crate) struct EndOfLife<'a> {
    pub info: RuleInfo,
    pub inode: &'a InodeState,
    pub dirty: &'a Dirty,
    pub process: ProcessRef,
    pub summary: String,
    pub context: &'a Map<String, Value>,
    pub calls: &'a [CallRef],
    pub fix: &'static str,
}

impl EndOfLife<'_> {
    pub(crate) fn finding(self) -> Finding {
        let end = self
            .calls
            .last()
            .map_or(self.dirty.last_write_ns, |c| c.ts_ns);
        let mut f = Finding::new(
            self.info.id,
            self.info.severity,
            self.inode.path(),
            Some(self.inode.id),
            self.process,
            self.summary,
        );
        for (k, v) in self.context {
            f = f.with(k, v.clone());
        }
        let mut all = self.inode.calls();
        all.extend(self.calls.iter().cloned());
        with_dirty_evidence(f, self.inode, self.dirty, end)
            .with("fix", self.fix)
            .with_calls(all)
    }
}

/// Adds the facts every "data not durable" finding shows: bytes, ranges,
/// writes, age, writers, filesystem.
pub(crate) fn with_dirty_evidence(
    f: Finding,
    inode: &InodeState,
    dirty: &Dirty,
    now_ns: u64,
) -> Finding {
    let age = now_ns.saturating_sub(dirty.first_write.ts_ns);
    f.with("unsynced_bytes", dirty.bytes)
        .with("unsynced_ranges", dirty.ranges.to_json())
        .with("writes", dirty.writes)
        .with("first_unsynced_write_ns", dirty.first_write.ts_ns)
        .with("unsynced_age_ns", age)
        .with("unsynced_age", human_duration(age))
        .with("writer_pids", dirty.writer_pids())
        .with("fs", inode.fs.clone())
        .with(
            "last_successful_fsync",
            inode
                .last_sync
                .as_ref()
                .map(|c| json!({"seq": c.seq, "ts_ns": c.ts_ns})),
        )
}
