//! `truncate-in-place`: a file with content truncated and rewritten in
//! place. Until the rewrite is durable, a crash leaves it empty or partial;
//! writing aside and renaming keeps the old content until the new is safe.
//! The exposure opens at the first write after the truncation and lasts
//! until the new content is durable.

use serde_json::Value;

use crate::calls::Call;
use crate::event::FileId;
use crate::exposure::Subject;
use crate::fast_hash::FastMap;
use crate::finding::{CallRef, Finding, ProcessRef, Severity};
use crate::track::inodes::InodeState;

use super::{Cx, Kind, Moment, Rule, RuleInfo, file_finding};

pub const INFO: RuleInfo = RuleInfo {
    id: "truncate-in-place",
    severity: Severity::High,
    title: "file with content truncated and rewritten in place",
    kind: Kind::Ordering,
};

/// A truncation of a file that had content, waiting for the rewrite.
struct Truncation {
    size_before: Option<i64>,
    call: Call,
    since_epoch: u32,
}

#[derive(Default)]
pub struct TruncateInPlace {
    pending: FastMap<FileId, Truncation>,
}

impl Rule for TruncateInPlace {
    fn observe(&mut self, m: &Moment<'_>, cx: &mut Cx<'_>) {
        match m {
            Moment::Truncated {
                id,
                size_before,
                call,
                ..
            } => {
                self.pending.insert(
                    *id,
                    Truncation {
                        size_before: *size_before,
                        call: (*call).clone(),
                        since_epoch: cx.epoch,
                    },
                );
            }
            Moment::Wrote { id, pid, call, .. } => {
                if !self.pending.contains_key(id) {
                    return;
                }
                let Some((inode, process)) = cx.lookup(id, *pid) else {
                    return;
                };
                if let Some(t) = self.pending.remove(id) {
                    let f = finding(inode, &t, call, process.to_ref());
                    cx.expose_since(&INFO, Subject::Data(inode.id), f, t.since_epoch);
                }
            }
            _ => {}
        }
    }

    fn holds(&self, id: &FileId) -> bool {
        self.pending.contains_key(id)
    }

    fn forget(&mut self, id: &FileId) {
        self.pending.remove(id);
    }
}

/// Raised at the first write after the truncation.
fn finding(inode: &InodeState, trunc: &Truncation, write: &Call, process: ProcessRef) -> Finding {
    let before = trunc
        .size_before
        .map_or_else(|| "unknown".to_string(), |s| format!("{s} bytes"));
    let summary = format!(
        "{:?} (size before: {before}) was truncated and rewritten in place: a crash before the new data is durable leaves it empty or partial",
        inode.path()
    );
    let mut calls: Vec<CallRef> = inode.history.iter().map(Call::to_ref).collect();
    calls.push(trunc.call.to_ref());
    calls.push(write.to_ref());
    file_finding(&INFO, inode, process, summary)
        .with("size_before", trunc.size_before.map_or(Value::from("unknown"), Value::from))
        .with("truncated_by", trunc.call.text())
        .with("rewrite", write.text())
        .with("fs", &*inode.fs)
        .with("fix", "write the new content to a temporary file, fsync it, rename it over the old one, fsync the directory")
        .with_calls(calls)
}

#[cfg(test)]
mod tests {
    use crate::Severity;
    use crate::event::EventKind;
    use crate::test_support::*;
    use crate::track::fds::flags::O_TRUNC;
    use crate::track::paths::AT_FDCWD;

    /// open(path, O_WRONLY|O_TRUNC) of an existing file by pid 100.
    fn open_trunc(path: &str, fd: i64, ino: u64) -> crate::Event {
        open_with(100, path, AT_FDCWD, O_WRONLY | O_TRUNC, fd, Some(reg(ino)))
    }

    /// /etc/app/state.json truncated as it is opened, then rewritten.
    fn rewritten() -> Vec<crate::Event> {
        vec![
            start(100, "/etc/app"),
            open_trunc("state.json", 3, 30),
            write(100, 3, 200),
        ]
    }

    #[test]
    fn o_trunc_of_an_existing_file_then_rewrite() {
        let events = trace![rewritten(), fsync(100, 3), close(100, 3), exit(100, 0)];
        let findings = run(events.clone());
        let f = sole(&findings, "truncate-in-place");
        // The launched command fsynced the rewrite before it ended well:
        // the window closed, low, and the verdict says for how long.
        assert_finding(f, "/etc/app/state.json", 100, Severity::Low);
        assert_eq!(f.evidence["size_before"], "unknown");
        assert_eq!(f.evidence["rewrite"], "write(fd=3, 200) = 200");
        assert_eq!(f.evidence["closed_by"]["call"], "fsync(fd=3) = 0");
        assert_eq!(f.evidence["exposed_for_ns"], 1_000_000);
        // Under attach the window is what a serving daemon is exposed
        // for: the rule's severity, with its length.
        let mut attached = events;
        if let EventKind::ProcessStart { launched, .. } = &mut attached[0].kind {
            *launched = false;
        }
        let f = one(&run(attached), "truncate-in-place").clone();
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.evidence["exposed_for"], "1.0ms");
    }

    #[test]
    fn never_made_durable_it_stays_high() {
        let events = trace![rewritten(), close(100, 3), exit(100, 0)];
        let f = one(&run(events), "truncate-in-place").clone();
        assert_eq!(f.severity, Severity::High);
        assert!(f.evidence.get("closed_by").is_none());
    }

    #[test]
    fn ftruncate_to_zero_knows_the_size_before() {
        let events = vec![
            start(100, "/d"),
            open_existing(100, "/d/state", 3, sized(reg(30), 500)),
            ev(
                100,
                EventKind::Truncate {
                    call: sys("ftruncate"),
                    fd: Some(3),
                    path: None,
                    length: 0,
                    ret: 0,
                    file: Some(sized(reg(30), 500)),
                },
            ),
            write_full(100, 3, 200, 200, Some(0), None),
            fsync(100, 3),
        ];
        let findings = run(events);
        assert_eq!(
            one(&findings, "truncate-in-place").evidence["size_before"],
            500
        );
    }

    #[test]
    fn created_or_known_empty_files_are_not_truncate_in_place() {
        assert_clean(&run(trace![
            start(100, "/d"),
            create_synced(100, "/d/new", 3, 31, 10),
            fsync_dir(100, "/d", 4, 2),
            open_existing(100, "/d/empty", 5, sized(reg(32), 0)),
            close(100, 5),
            open_trunc("/d/empty", 5, 32),
            write(100, 5, 10),
            fsync(100, 5),
            exit(100, 0),
        ]));
    }

    #[test]
    fn write_aside_and_rename_is_clean() {
        assert_clean(&run(trace![
            start(100, "/d"),
            open_existing(100, "/d/state", 5, sized(reg(30), 500)),
            close(100, 5),
            atomic_replace(100, "/d/state", 3, 33),
            exit(100, 0),
        ]));
    }
}
