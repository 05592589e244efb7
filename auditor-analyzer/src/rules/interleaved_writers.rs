//! `interleaved-writers`: several threads or processes append to one file in
//! turn. A crash or a kill mid-record leaves a torn entry with another
//! writer's record after it: the Shake metadata corruption.

use serde_json::json;

use crate::calls::{Call, signal_name};
use crate::finding::{Finding, ProcessRef, Severity};
use crate::track::inodes::InodeState;

use super::RuleInfo;

pub const INFO: RuleInfo = RuleInfo {
    id: "interleaved-writers",
    severity: Severity::Medium,
    title: "several threads or processes append to one file, interleaved",
};

/// Reports an inode whose appends interleaved (A, B, A), once. `killed` is
/// a participant that died by a signal while still appending: then high.
pub fn check(inode: &InodeState, killed: Option<(&ProcessRef, i32)>) -> Option<Finding> {
    let a = &inode.appends;
    if a.reported || a.not_append_only {
        return None;
    }
    let pattern = a.interleaved.as_ref()?;
    let first = a.writers.first()?;
    let tids: Vec<u32> = a.writers.iter().map(|w| w.tid).collect();
    let mut summary = format!(
        "{} threads/processes appended to {:?} in turn (tids {:?}): a crash or kill mid-record leaves a torn entry followed by other writers' records",
        a.writers.len(),
        inode.path(),
        tids
    );
    let (severity, process) = match killed {
        Some((p, sig)) => {
            summary.push_str(&format!(
                "; {} ({}) was killed by {} while appending",
                p.comm,
                p.pid,
                signal_name(sig)
            ));
            (Severity::High, p.clone())
        }
        None => (INFO.severity, first.process.clone()),
    };
    let writers: Vec<_> = a
        .writers
        .iter()
        .map(|w| json!({"pid": w.process.pid, "tid": w.tid, "comm": w.process.comm}))
        .collect();
    let mut f = Finding::new(INFO.id, severity, inode.path(), Some(inode.id), process, summary)
        .with("writers", writers)
        .with("fs", inode.fs.clone())
        .with("fix", "give each writer its own file, or serialise whole records under a lock with a length/checksum per record");
    if let Some((p, sig)) = killed {
        f = f.with(
            "killed_writer",
            json!({"pid": p.pid, "comm": p.comm, "signal": signal_name(sig)}),
        );
    }
    let mut calls: Vec<_> = pattern.iter().map(Call::to_ref).collect();
    calls.extend(a.recent.iter().map(Call::to_ref));
    Some(f.with_calls(calls))
}

#[cfg(test)]
mod tests {
    use crate::event::FileInfo;
    use crate::test_support::*;
    use crate::track::fds::flags::O_APPEND;
    use crate::track::paths::AT_FDCWD;

    fn open_append(pid: u32, fd: i64) -> crate::Event {
        let info = FileInfo {
            flags: O_WRONLY | O_APPEND,
            ..sized(reg(20), 100)
        };
        open_with(
            pid,
            "/d/meta",
            AT_FDCWD,
            O_WRONLY | O_APPEND,
            fd,
            Some(info),
        )
    }

    fn threads_appending(order: &[u32]) -> Vec<crate::Event> {
        let mut events = vec![
            start(100, "/d"),
            open_append(100, 3),
            spawn_thread(100, 101),
            spawn_thread(100, 102),
        ];
        events.extend(order.iter().map(|&tid| on_tid(write(100, 3, 64), tid)));
        events.push(fsync(100, 3));
        events
    }

    #[test]
    fn threads_taking_turns_on_an_append_only_file() {
        let mut events = threads_appending(&[101, 102, 101]);
        events.push(exit(100, 0));
        let findings = run(events);
        assert_eq!(rules(&findings), vec!["interleaved-writers"]);
        let f = &findings[0];
        assert_eq!(
            (f.path.as_str(), f.process.pid, f.severity),
            ("/d/meta", 100, crate::Severity::Medium)
        );
        let tids: Vec<u64> = f.evidence["writers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["tid"].as_u64().unwrap())
            .collect();
        assert_eq!(tids, vec![101, 102]);
    }

    #[test]
    fn killed_appender_raises_it_to_high() {
        let mut events = threads_appending(&[101, 102, 101, 102]);
        events.push(killed(100, SIGKILL));
        let findings = run(events);
        let f = one(&findings, "interleaved-writers");
        assert_eq!(f.severity, crate::Severity::High);
        assert_eq!(f.evidence["killed_writer"]["signal"], "SIGKILL");
    }

    #[test]
    fn a_single_appender_is_clean() {
        let mut events = threads_appending(&[101, 101, 101]);
        events.push(exit(100, 0));
        assert_clean(&run(events));
    }

    #[test]
    fn writers_that_never_hold_the_file_together_are_clean() {
        // A shell appends, a child appends and exits, the shell appends again.
        let events = vec![
            start(100, "/d"),
            open_append(100, 3),
            write(100, 3, 10),
            fsync(100, 3),
            close(100, 3),
            fork(100, 200),
            open_append(200, 1),
            write(200, 1, 10),
            fsync(200, 1),
            exit(200, 0),
            open_append(100, 3),
            write(100, 3, 10),
            fsync(100, 3),
            exit(100, 0),
        ];
        assert_clean(&run(events));
    }
}
