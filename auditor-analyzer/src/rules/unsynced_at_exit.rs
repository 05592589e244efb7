//! `unsynced-at-exit`: a process ended normally while files it wrote still
//! held data that was not durable. A crash soon after loses it, though the
//! program believed its work was done. Another process may still make it
//! durable (a parent that fsyncs what a helper wrote, a `sync` after the
//! command): then the verdict is low, with who did it and how much later.

use std::sync::Arc;

use serde_json::Map;

use crate::calls::plural;
use crate::event::FileId;
use crate::exposure::Subject;
use crate::finding::{ProcessRef, Severity};
use crate::track::inodes::InodeState;

use super::end_of_life::{EndOfLife, Ending};
use super::{Cx, Kind, Moment, RuleInfo};

pub const INFO: RuleInfo = RuleInfo {
    id: "unsynced-at-exit",
    severity: Severity::Medium,
    title: "process exited with written data not yet durable",
    kind: Kind::EndOfLife,
};

/// At a normal exit: the files the process left dirty. At the end: the
/// unsynced data of writers whose end was not seen.
pub fn observe(m: &Moment<'_>, cx: &mut Cx<'_>) {
    match m {
        Moment::Ended {
            process,
            code,
            signal: None,
            call,
            ..
        } => {
            let mut context = Map::new();
            context.insert("exit_code".into(), (*code).into());
            let ending = Ending::new(&INFO, context, vec![(*call).clone()], FIX);
            for id in cx.left_dirty(process) {
                if cx.exposed_by_its_order(id, process) {
                    continue;
                }
                expose(cx, id, process.to_ref(), &ending, None);
            }
        }
        Moment::End { last } => {
            // Writers whose end the trace did not see: still running
            // (attach, or a daemon the command left behind) or gone
            // unseen. Lowered at the end when they may still fsync.
            let calls: Vec<_> = last.iter().map(|c| (*c).clone()).collect();
            // Shared by every file of the writers alike.
            let ending = |ended_by: &str| {
                let mut context = Map::new();
                context.insert("ended_by".into(), ended_by.into());
                Ending::new(&INFO, context, calls.clone(), FIX)
            };
            let [gone, alive] = [ending("exit not seen"), ending("end of trace")];
            let ids = cx
                .inodes
                .ids_where(|s| s.judged() && !s.unlinked && s.dirty.is_some());
            for id in ids {
                let Some(d) = cx.inodes.get(&id).and_then(|s| s.dirty.as_ref()) else {
                    continue;
                };
                let unseen = d
                    .writers
                    .iter()
                    .find(|w| !cx.exposures.any_open_where(id, |e| e.pid == w.process.pid));
                let Some(w) = unseen.cloned() else {
                    continue;
                };
                let live = cx.procs.is_live(w.key).then_some(w.process.pid);
                let ending = if live.is_some() { &alive } else { &gone };
                expose(cx, id, w.process, ending, live);
            }
        }
        _ => {}
    }
}

const FIX: &str = "fsync (or fdatasync) the file before exiting";

/// Opens the exposure of `process`'s unsynced data in `id`; `live` when
/// that process still runs (it may yet fsync: the verdict is lowered).
fn expose(
    cx: &mut Cx<'_>,
    id: FileId,
    process: ProcessRef,
    ending: &Arc<Ending>,
    live: Option<u32>,
) {
    let Some(st) = cx.inodes.get(&id) else {
        return;
    };
    if let Some(draft) = check(st, process, ending, live) {
        cx.expose_end_of_life(&INFO, Subject::Data(id), draft);
    }
}

/// The verdict for one file at its writer's end; `ending` carries the exit
/// facts (`exit_code`, ...) and the exit call.
fn check(
    inode: &InodeState,
    process: ProcessRef,
    ending: &Arc<Ending>,
    live: Option<u32>,
) -> Option<EndOfLife> {
    EndOfLife::of_dirty(inode, process, ending, live, |s| {
        format!(
            "{:?} still held {} unsynced bytes ({}) when {} ({}) exited",
            s.path,
            s.bytes,
            plural(s.writes, "write"),
            s.process.comm,
            s.process.pid
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    fn created_and_written(pid: u32) -> Vec<crate::Event> {
        trace![start(pid, "/d"), write_new(pid, "/d/log", 3, 11, 10),]
    }

    #[test]
    fn exit_with_unsynced_data_is_flagged() {
        let findings = run(trace![created_and_written(100), exit(100, 0)]);
        let f = sole(&findings, "unsynced-at-exit");
        assert_finding(f, "/d/log", 100, crate::Severity::Medium);
        assert_eq!(f.evidence["unsynced_bytes"], 10);
        assert_eq!(f.evidence["exit_code"], 0);
        assert_eq!(f.calls.last().unwrap().call, "exit_group(0)");
    }

    #[test]
    fn fsync_file_and_dir_before_exit_is_clean() {
        clean_once_dir_fsynced(trace![
            created_and_written(100),
            fsync(100, 3),
            close(100, 3)
        ]);
    }

    #[test]
    fn made_durable_later_by_another_process_is_low_and_says_who() {
        // The child writes through the inherited fd and exits; the parent
        // still holds the file and fsyncs it later: the window closed.
        let base = vec![
            start(100, "/d"),
            open_existing(100, "/d/log", 3, reg(11)),
            fork(100, 200),
            write(200, 3, 10),
            exit(200, 0),
        ];
        let findings = run(trace![base.clone(), fsync(100, 3), exit(100, 0)]);
        let f = one(&findings, "unsynced-at-exit");
        assert_finding(f, "/d/log", 200, crate::Severity::Low);
        assert_eq!(f.evidence["closed_by"]["pid"], 100);
        assert_eq!(f.evidence["closed_by"]["call"], "fsync(fd=3) = 0");
        assert!(
            f.summary.contains("made durable 1.0ms later by app (100)"),
            "{}",
            f.summary
        );
        // The parent exits without fsync: the child's data is still at risk.
        let findings = run(trace![base, exit(100, 0)]);
        let f = one(&findings, "unsynced-at-exit");
        assert_eq!(f.process.pid, 200, "attributed to the writer");
        assert_eq!(f.calls.last().unwrap().pid, 200);
    }

    #[test]
    fn fsync_by_another_process_through_its_own_fd_is_clean() {
        let events = vec![
            start(100, "/d"),
            open_existing(100, "/d/log", 3, reg(11)),
            write(100, 3, 10),
            start(300, "/"),
            open_existing(300, "/d/log", 5, reg(11)),
            fsync(300, 5),
            exit(100, 0),
            exit(300, 0),
        ];
        assert_clean(&run(events));
    }

    #[test]
    fn still_running_at_end_of_trace_is_low() {
        let findings = run(created_and_written(100));
        let f = one(&findings, "unsynced-at-exit");
        assert_eq!(f.severity, crate::Severity::Low);
        assert_eq!(f.evidence["ended_by"], "end of trace");
        assert_eq!(f.evidence["still_running_pids"][0], 100);
    }
}
