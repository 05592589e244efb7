//! Counters that say how complete and how wide the analysis was: what was
//! seen, what was left out and why, what could not be attributed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::FileId;
use crate::fast_hash::FastSet;

/// Examples of ignored files kept for the report.
const IGNORED_EXAMPLES: usize = 5;
/// Files remembered as counted in `CallerFiles` (memory bound).
const CALLER_SEEN_MAX: usize = 4096;

/// Files the analyzer saw but does not judge (volatile fs, pipes...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IgnoredFiles {
    pub count: u64,
    pub by_reason: BTreeMap<String, u64>,
    /// A few `path (reason)` examples.
    pub examples: Vec<String>,
}

impl IgnoredFiles {
    pub(crate) fn add(&mut self, path: &str, reason: &str) {
        self.count += 1;
        *self.by_reason.entry(reason.to_string()).or_default() += 1;
        if self.examples.len() < IGNORED_EXAMPLES {
            self.examples.push(format!("{path} ({reason})"));
        }
    }
}

/// Files a launched command inherited already open from its caller and
/// wrote to (`auditor run -- cmd > out.log`): keeping that output is the
/// caller's business, so it is counted here and not judged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallerFiles {
    /// Distinct files written.
    pub files: u64,
    /// Bytes written to them.
    pub bytes: u64,
    /// A few of their paths.
    pub examples: Vec<String>,
}

impl CallerFiles {
    /// Counts `bytes` written to `id`; `seen` remembers which files were
    /// counted already (bounded: past its limit a file may count twice).
    pub(crate) fn add(&mut self, seen: &mut FastSet<FileId>, id: FileId, path: &str, bytes: u64) {
        self.bytes += bytes;
        if seen.len() < CALLER_SEEN_MAX && seen.insert(id) {
            self.files += 1;
            if self.examples.len() < IGNORED_EXAMPLES {
                self.examples.push(path.to_string());
            }
        }
    }
}

/// What one analysis covered; reports show it so "no findings" can be read
/// for what it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalyzerStats {
    /// Events processed.
    pub events: u64,
    /// Events the kernel could not deliver (sum of `lost` records).
    pub lost_events: u64,
    /// `lost` records seen (each one a gap in the stream).
    pub loss_records: u64,
    /// Process records started (pid reuse counts twice).
    pub processes: u64,
    /// Distinct files judged (regular files and directories on persistent
    /// filesystems).
    pub files_tracked: u64,
    pub ignored_files: IgnoredFiles,
    #[serde(default)]
    pub caller_files: CallerFiles,
    /// Calls on fds the trace never saw opened and the kernel gave no
    /// identity for: their effect is unknown.
    pub unknown_fds: u64,
    /// fds learned from the kernel's file identity instead of an open.
    pub adopted_fds: u64,
    /// Relative paths whose base (cwd or dirfd) was unknown.
    pub unresolved_paths: u64,
    /// Renames/links of inodes the trace could not identify (not judged).
    pub unknown_renames: u64,
    /// Exposures that no longer mattered by the end (the file deleted, its
    /// content replaced, the name moved or removed): no finding.
    #[serde(default)]
    pub moot: crate::exposure::MootCounts,
    /// Exposures dropped to stay within `max_files` (closed ones first):
    /// their verdicts are unknown.
    #[serde(default)]
    pub evicted_exposures: u64,
    /// Findings left out by `--ignore` globs.
    pub suppressed_findings: u64,
    /// Findings on caches (files in `__pycache__`, `.cache`...) left out;
    /// `--judge-caches` reports them.
    #[serde(default)]
    pub cache_findings: u64,
    /// Inode states dropped to bound memory (idle ones, and past
    /// `max_files` the least recently used).
    pub evicted_inodes: u64,
    /// Of those, states that still carried unsynced data or a pending
    /// verdict: their verdicts are unknown (not raised), and any later
    /// verdict on the same inode is marked inconclusive.
    pub evicted_dirty: u64,
    /// Pending directory entries (names whose directory was not fsynced
    /// yet) dropped past `max_files`, oldest first: their verdicts are
    /// unknown (not raised).
    #[serde(default)]
    pub evicted_names: u64,
    /// Process records dropped past `max_processes` (least recently
    /// active first).
    pub evicted_processes: u64,
    /// Inode states held now (never more than `max_files`).
    pub tracked_inodes: u64,
    /// The limit on inode states held at once.
    pub max_files: u64,
    /// Distinct user stacks the probes sent (each unwound and symbolized
    /// once; later calls from the same place only name it).
    #[serde(default)]
    pub stacks: u64,
    /// Of those, stacks whose frame-pointer chain gave every frame (the
    /// rest needed the unwind tables: code built without frame pointers).
    #[serde(default)]
    pub stacks_by_frame_pointers: u64,
}
