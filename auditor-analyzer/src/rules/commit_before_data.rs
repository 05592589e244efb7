//! `commit-before-data`: a process made a record durable (fsynced, then
//! renamed into place) while data written before it for the same
//! operation, by helpers it started, was never made durable. After a crash
//! the record survives and points at data that is gone: dockerd's image
//! metadata without the layer files its `docker-untar` wrote (moby#32170,
//! the project's seed 003).
//!
//! "The same operation" is kept narrow, so careful programs and unrelated
//! files stay quiet: the data is still not durable at the end and still
//! has a name; every writer of it is a descendant of the committing
//! process that had exited by the commit (the helper did its part, then
//! the record was written); its unsynced writes all came before the commit
//! and after that process's previous commit; and a file is counted for the
//! first such commit after its last write only. The committing process's
//! own unsynced files are left to the other rules: the trace cannot tell
//! which of them a record describes (git fsyncs a ref while its reflog and
//! commit message never are, and the ref does not stand for them). So are
//! the files a helper renamed into place itself: it placed its own record
//! (`git gc`'s repack renames `info/refs` into place beside the packs it
//! had fsynced), and rename-without-fsync speaks of them.

use serde_json::{Value, json};

use crate::calls::plural;
use crate::event::{FileId, FileType};
use crate::fast_hash::FastMap;
use crate::finding::{CallRef, Finding, ProcessRef, Severity};
use crate::track::processes::ProcKey;
use crate::track::views::under;

use super::{Cx, Kind, Moment, Rule, RuleInfo};

pub const INFO: RuleInfo = RuleInfo {
    id: "commit-before-data",
    severity: Severity::Medium,
    title: "a record made durable before the data it was written with",
    kind: Kind::Ordering,
};

/// Commits remembered (the newest are kept).
const MAX_COMMITS: usize = 4096;
/// Process parents remembered, for the descendant test.
const MAX_PARENTS: usize = 65_536;
/// Data files named in one finding's evidence.
const MAX_LISTED: usize = 20;
/// Generations walked up from a writer to its committing ancestor.
const MAX_DEPTH: usize = 16;

/// A durable record renamed into place.
#[derive(Clone, Debug)]
struct Commit {
    key: ProcKey,
    process: ProcessRef,
    id: FileId,
    path: String,
    call: CallRef,
    /// When the same process made its previous commit (0: none seen).
    previous_ns: u64,
}

/// An ended process: its parent and when it ended.
#[derive(Clone, Copy, Debug)]
struct Ended {
    parent: Option<ProcKey>,
    at_ns: u64,
}

#[derive(Default)]
pub struct CommitBeforeData {
    commits: Vec<Commit>,
    ended: FastMap<ProcKey, Ended>,
    /// Who last renamed each file into place.
    placed_by: FastMap<FileId, ProcKey>,
}

impl Rule for CommitBeforeData {
    fn observe(&mut self, m: &Moment<'_>, cx: &mut Cx<'_>) {
        match m {
            Moment::Renamed {
                id,
                rename,
                pid,
                call,
            } if !rename.link && durable_record(cx, *id, rename.destination) => {
                let Some(p) = cx.procs.get(*pid) else { return };
                self.placed(*id, p.key);
                let previous_ns = self
                    .commits
                    .iter()
                    .rev()
                    .find(|c| c.key == p.key)
                    .map_or(0, |c| c.call.ts_ns);
                if self.commits.len() == MAX_COMMITS {
                    self.commits.remove(0);
                }
                self.commits.push(Commit {
                    key: p.key,
                    process: p.to_ref(),
                    id: *id,
                    path: rename.destination.to_string(),
                    call: call.to_ref(),
                    previous_ns,
                });
            }
            Moment::Renamed {
                id, rename, pid, ..
            } if !rename.link => {
                if let Some(p) = cx.procs.get(*pid) {
                    self.placed(*id, p.key);
                }
            }
            Moment::Ended { process, call, .. } => {
                if self.ended.len() >= MAX_PARENTS {
                    self.ended.clear();
                }
                let parent = cx.procs.get(process.ppid).map(|p| p.key);
                self.ended.insert(
                    process.key,
                    Ended {
                        parent,
                        at_ns: call.ts_ns,
                    },
                );
            }
            Moment::End { .. } => self.judge(cx),
            _ => {}
        }
    }
}

/// Whether what was renamed to `dest` is a record made durable: a regular
/// file fsynced since its last write, or a directory whose files (one at
/// least) all are.
fn durable_record(cx: &Cx<'_>, id: FileId, dest: &str) -> bool {
    let clean = |s: &crate::track::inodes::InodeState| s.dirty.is_none() && s.last_sync.is_some();
    let Some(st) = cx.inodes.get(&id) else {
        return false;
    };
    match st.file_type {
        FileType::Regular => clean(st),
        FileType::Directory => {
            let files = cx.inodes.ids_where(|s| {
                s.file_type == FileType::Regular
                    && !s.unlinked
                    && s.current_names.iter().any(|n| under(n, dest))
            });
            !files.is_empty() && files.iter().all(|f| cx.inodes.get(f).is_some_and(clean))
        }
        _ => false,
    }
}

impl CommitBeforeData {
    fn placed(&mut self, id: FileId, by: ProcKey) {
        if self.placed_by.len() >= MAX_PARENTS && !self.placed_by.contains_key(&id) {
            self.placed_by.clear();
        }
        self.placed_by.insert(id, by);
    }

    /// The parent record of `key`: from its end, or from the live table.
    fn parent(&self, cx: &Cx<'_>, key: ProcKey) -> Option<ProcKey> {
        if let Some(e) = self.ended.get(&key) {
            return e.parent;
        }
        let p = cx.procs.iter().find(|p| p.key == key)?;
        cx.procs.get(p.ppid).map(|pp| pp.key)
    }

    /// Whether `writer` is a descendant of `committer` that had ended by
    /// `at_ns`.
    fn belongs(&self, cx: &Cx<'_>, writer: ProcKey, committer: ProcKey, at_ns: u64) -> bool {
        if writer == committer || self.ended.get(&writer).is_none_or(|e| e.at_ns > at_ns) {
            return false;
        }
        let mut k = writer;
        for _ in 0..MAX_DEPTH {
            match self.parent(cx, k) {
                Some(p) if p == committer => return true,
                Some(p) => k = p,
                None => return false,
            }
        }
        false
    }

    fn judge(&mut self, cx: &mut Cx<'_>) {
        if self.commits.is_empty() {
            return;
        }
        // Each file still not durable goes to the first commit after its
        // last write that it belongs to.
        let mut by_commit: FastMap<usize, Vec<FileId>> = FastMap::default();
        let dirty = cx
            .inodes
            .ids_where(|s| s.judged() && !s.unlinked && s.dirty.is_some() && !s.evicted);
        for id in dirty {
            let Some(st) = cx.inodes.get(&id) else {
                continue;
            };
            let Some(d) = st.dirty.as_ref() else { continue };
            if self
                .placed_by
                .get(&id)
                .is_some_and(|k| d.writers.iter().any(|w| w.key == *k))
            {
                continue;
            }
            let found = self.commits.iter().position(|c| {
                c.id != id
                    && c.call.ts_ns >= d.last_write_ns
                    && d.first_write.ts_ns > c.previous_ns
                    && !st.current_names.iter().any(|n| under(n, &c.path))
                    && d.writers
                        .iter()
                        .all(|w| self.belongs(cx, w.key, c.key, c.call.ts_ns))
            });
            if let Some(i) = found {
                by_commit.entry(i).or_default().push(id);
            }
        }
        let mut found: Vec<(usize, Vec<FileId>)> = by_commit.into_iter().collect();
        found.sort_by_key(|(i, _)| *i);
        for (i, mut files) in found {
            files.sort();
            let c = self.commits[i].clone();
            if let Some((f, since)) = finding(cx, &c, &files) {
                cx.settle(&INFO, f, None, since);
            }
        }
    }
}

/// The finding for one commit and the files it went ahead of.
fn finding(cx: &Cx<'_>, c: &Commit, files: &[FileId]) -> Option<(Finding, u32)> {
    let states: Vec<_> = files.iter().filter_map(|id| cx.inodes.get(id)).collect();
    let dirties: Vec<_> = states.iter().filter_map(|s| s.dirty.as_ref()).collect();
    let first = states.first()?;
    let paths: Vec<String> = states.iter().map(|s| s.path()).collect();
    let dir = common_dir(&paths);
    let bytes: u64 = dirties.iter().map(|d| d.bytes).sum();
    let since = dirties
        .iter()
        .map(|d| d.since_epoch)
        .min()
        .unwrap_or(cx.epoch);
    let mut writers: Vec<&ProcessRef> = dirties
        .iter()
        .flat_map(|d| d.writers.iter().map(|w| &w.process))
        .collect();
    writers.sort_by_key(|w| w.pid);
    writers.dedup_by_key(|w| w.pid);
    let who = writers
        .iter()
        .map(|w| {
            format!(
                "{} ({})",
                w.argv.first().map_or(&*w.comm, String::as_str),
                w.pid
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let summary = format!(
        "{:?} was made durable while {} under {:?} written before it by {who} {} never fsynced: a crash can keep the record and lose the data it stands for",
        c.path,
        plural(files.len() as u64, "file"),
        dir,
        if files.len() == 1 { "was" } else { "were" },
    );
    let mut calls = vec![first.dirty.as_ref()?.first_write.to_ref()];
    calls.push(c.call.clone());
    let listed: Vec<Value> = states
        .iter()
        .take(MAX_LISTED)
        .map(|s| {
            json!({
                "path": s.path(),
                "unsynced_bytes": s.dirty.as_ref().map_or(0, |d| d.bytes),
            })
        })
        .collect();
    let f = INFO
        .finding(c.path.clone(), Some(c.id), c.process.clone(), summary)
        .with("record", c.path.clone())
    .with("data_files", files.len())
    .with("data_directory", dir)
    .with("data", listed)
    .with("unsynced_bytes", bytes)
    .with(
        "writers",
        writers
            .iter()
            .map(|w| json!({"pid": w.pid, "comm": w.comm, "argv0": w.argv.first()}))
            .collect::<Vec<_>>(),
    )
    .with(
        "fix",
        "fsync the data (each file, or syncfs on its filesystem) before making the record that refers to it durable",
    )
    .with_calls(calls);
    Some((f, since))
}

/// The deepest directory holding every path.
fn common_dir(paths: &[String]) -> String {
    let mut common: Option<Vec<&str>> = None;
    for p in paths {
        let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        let dir = &parts[..parts.len().saturating_sub(1)];
        common = Some(match common {
            None => dir.to_vec(),
            Some(c) => c
                .iter()
                .zip(dir)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    format!("/{}", common.unwrap_or_default().join("/"))
}

#[cfg(test)]
mod tests {
    use super::common_dir;
    use crate::event::Event;
    use crate::test_support::*;

    /// A helper child writes the layer; the parent writes the metadata
    /// with fsync into a write-set directory and renames it into place.
    fn load(helper_syncs: bool) -> Vec<Event> {
        let mut v = trace![
            start(10, "/d"),
            fork(10, 20),
            write_new(20, "/d/layers/abc/diff/etc/motd", 3, 40, 6),
            write_new(20, "/d/layers/abc/diff/bin/blob", 4, 41, 100),
        ];
        if helper_syncs {
            v.extend([fsync(20, 3), fsync(20, 4)]);
        }
        trace![
            v,
            exit(20, 0),
            create_synced(10, "/d/layerdb/tmp/ws/diff", 5, 50, 71),
            // The inode the live side finds at the new name.
            rename_known(10, "/d/layerdb/tmp/ws", "/d/layerdb/sha256/abc", dir(55)),
        ]
    }

    /// Where the helper's exit stands in `v`.
    fn helper_exit(v: &[Event]) -> usize {
        v.iter()
            .position(|e| matches!(e.kind, crate::EventKind::Exit { .. }))
            .unwrap()
    }

    #[test]
    fn a_record_made_durable_before_its_layer_data_is_flagged() {
        let findings = run(load(false));
        let f = one(&findings, "commit-before-data");
        assert_finding(f, "/d/layerdb/sha256/abc", 10, crate::Severity::Medium);
        assert_eq!(f.evidence["data_files"], 2);
        assert_eq!(f.evidence["data_directory"], "/d/layers/abc/diff");
        assert_eq!(f.evidence["unsynced_bytes"], 106);
        assert!(f.summary.contains("2 files under"), "{}", f.summary);
        assert_eq!(
            f.calls.last().unwrap().call,
            "rename(\"/d/layerdb/tmp/ws\", \"/d/layerdb/sha256/abc\") = 0"
        );
    }

    #[test]
    fn careful_twin_and_unrelated_files_stay_quiet() {
        // The helper fsynced its data.
        assert_none_of(&run(load(true)), "commit-before-data");
        // A file of its own written before its previous commit, and one
        // written after the commit, are not the commit's.
        let v = trace![
            start(10, "/d"),
            write_new(10, "/d/log", 7, 60, 5),
            atomic_replace(10, "/d/state", 8, 61),
            atomic_replace(10, "/d/state2", 8, 62),
            write(10, 7, 5),
        ];
        assert_none_of(&run(v), "commit-before-data");
        // A record renamed without its own fsync is another rule's.
        let mut v = load(false);
        v.retain(|e| !matches!(e.kind, crate::EventKind::Sync { .. }));
        assert_none_of(&run(v), "commit-before-data");
    }

    /// git with core.fsync=all: the ref is fsynced and renamed while the
    /// reflog and COMMIT_EDITMSG it wrote itself never are; the ref does
    /// not stand for them.
    #[test]
    fn its_own_side_files_are_not_the_records_data() {
        let v = trace![
            start(10, "/d"),
            create_unsynced(10, "/d/COMMIT_EDITMSG", 3, 70, 10),
            atomic_replace(10, "/d/refs/heads/main", 4, 71),
        ];
        assert_none_of(&run(v), "commit-before-data");
    }

    /// git gc: its repack helper writes `info/refs` to a temp name and
    /// renames it into place itself (no fsync); the commit-graph git gc
    /// then commits does not stand for that file.
    #[test]
    fn a_file_its_helper_placed_itself_is_not_the_records() {
        let mut v = load(false);
        let exit_at = helper_exit(&v);
        let placed = trace![
            create_unsynced(20, "/d/info/refs_x", 6, 42, 9),
            rename(20, "/d/info/refs_x", "/d/info/refs"),
        ];
        // Without the layer files, only the placed file is left.
        v.retain(|e| e.pid != 20 || matches!(e.kind, crate::EventKind::Exit { .. }));
        for (i, e) in placed.into_iter().enumerate() {
            v.insert(exit_at - 4 + i, e);
        }
        let findings = run(v);
        assert_none_of(&findings, "commit-before-data");
        assert!(
            findings.iter().any(|f| f.rule == "rename-without-fsync"),
            "the helper's own rename is still flagged: {findings:#?}"
        );
    }

    /// A helper still running at the commit has not finished its part:
    /// its data is not counted against the record.
    #[test]
    fn a_helper_still_writing_is_not_the_records() {
        let mut v = load(false);
        let exit = v.remove(helper_exit(&v));
        v.push(exit);
        assert_none_of(&run(v), "commit-before-data");
    }

    #[test]
    fn common_directory_of_paths() {
        let p = |v: &[&str]| common_dir(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&["/a/b/c", "/a/b/d/e"]), "/a/b");
        assert_eq!(p(&["/x"]), "/");
        assert_eq!(p(&["/a/b/c"]), "/a/b");
    }
}
