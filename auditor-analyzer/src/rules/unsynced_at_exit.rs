//! `unsynced-at-exit`: a process ended normally while files it wrote still
//! held data that was not durable. A crash soon after loses it, though the
//! program believed its work was done.

use serde_json::{Map, Value};

use crate::calls::plural;
use crate::finding::{CallRef, Finding, ProcessRef, Severity};
use crate::track::inodes::InodeState;

use super::{EndOfLife, RuleInfo};

pub const INFO: RuleInfo = RuleInfo {
    id: "unsynced-at-exit",
    severity: Severity::Medium,
    title: "process exited with written data not yet durable",
};

/// The verdict for one file at the writer's exit; `context` carries the exit
/// facts (`exit_code`, ...), `calls` the exit call.
pub fn check(
    inode: &InodeState,
    process: ProcessRef,
    context: &Map<String, Value>,
    calls: &[CallRef],
) -> Option<Finding> {
    let dirty = inode.dirty.as_ref().filter(|d| !d.rename_reported)?;
    let summary = format!(
        "{:?} still held {} unsynced bytes ({}) when {} ({}) exited",
        inode.path(),
        dirty.bytes,
        plural(dirty.writes, "write"),
        process.comm,
        process.pid
    );
    Some(
        EndOfLife {
            info: INFO,
            inode,
            dirty,
            process,
            summary,
            context,
            calls,
            fix: "fsync (or fdatasync) the file before exiting",
        }
        .finding(),
    )
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    fn created_and_written(pid: u32) -> Vec<crate::Event> {
        vec![
            start(pid, "/d"),
            open_new(pid, "/d/log", 3, reg(11)),
            write(pid, 3, 10),
        ]
    }

    #[test]
    fn exit_with_unsynced_data_is_flagged() {
        let mut events = created_and_written(100);
        events.push(exit(100, 0));
        let findings = run(events);
        assert_eq!(rules(&findings), vec!["unsynced-at-exit"]);
        let f = &findings[0];
        assert_eq!(
            (f.path.as_str(), f.process.pid, f.severity),
            ("/d/log", 100, crate::Severity::Medium)
        );
        assert_eq!(f.evidence["unsynced_bytes"], 10);
        assert_eq!(f.evidence["exit_code"], 0);
        assert_eq!(f.calls.last().unwrap().call, "exit_group(0)");
    }

    #[test]
    fn fsync_file_and_dir_before_exit_is_clean() {
        let mut events = created_and_written(100);
        events.extend([fsync(100, 3), close(100, 3)]);
        events.extend(fsync_dir(100, "/d", 4, 2));
        events.push(exit(100, 0));
        assert_clean(&run(events));
    }

    #[test]
    fn deferred_while_another_live_process_holds_the_file() {
        // The child writes through the inherited fd and exits; the parent
        // still holds the file and fsyncs it later: clean.
        let base = vec![
            start(100, "/d"),
            open_existing(100, "/d/log", 3, reg(11)),
            fork(100, 200),
            write(200, 3, 10),
            exit(200, 0),
        ];
        let mut events = base.clone();
        events.extend([fsync(100, 3), exit(100, 0)]);
        assert_clean(&run(events));
        // The parent exits without fsync: the child's data is reported then.
        let mut events = base;
        events.push(exit(100, 0));
        let findings = run(events);
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
