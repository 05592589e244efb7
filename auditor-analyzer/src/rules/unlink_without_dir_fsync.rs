//! `unlink-without-dir-fsync`: a file the program had made durable was
//! removed (its last name), and the directory was never fsynced after: a
//! crash can bring the file back. When the removal is a commit point (a
//! rollback journal deleted to commit a transaction, as SQLite does in
//! DELETE mode), the committed work is undone by the crash. Temporary
//! files never fsynced, and names removed after another was linked to the
//! same file (a move), are not flagged: their return loses nothing.

use crate::finding::{Finding, Severity};
use crate::track::dirs::{NameOp, PendingName};

use super::{Cx, Kind, Moment, Rule, RuleInfo, name_finding, observe_names};

pub const INFO: RuleInfo = RuleInfo {
    id: "unlink-without-dir-fsync",
    severity: Severity::Low,
    title: "durable file removed but its directory never fsynced: a crash can bring it back",
    kind: Kind::Name,
};

pub struct UnlinkWithoutDirFsync;

impl Rule for UnlinkWithoutDirFsync {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn observe(&mut self, m: &Moment<'_>, cx: &mut Cx<'_>) {
        observe_names(m, cx, &INFO, check);
    }
}

/// The verdict for a pending removal of a file that had been made durable.
fn check(p: &PendingName) -> Option<Finding> {
    if p.op != NameOp::Unlink || !p.cared || !p.persistent() {
        return None;
    }
    let summary = format!(
        "{:?} was removed after its data was made durable, but directory {:?} was never fsynced afterwards: a crash can bring the file back (undoing whatever its removal committed)",
        p.path, p.dir
    );
    Some(name_finding(
        &INFO,
        p,
        summary,
        "fsync the directory after removing the file",
    ))
}

#[cfg(test)]
mod tests {
    use crate::event::EventKind;
    use crate::test_support::*;

    fn unlink(pid: u32, path: &str) -> crate::Event {
        ev(
            pid,
            EventKind::Unlink {
                call: sys("unlink"),
                dirfd: -100,
                path: path.into(),
                flags: 0,
                ret: 0,
            },
        )
    }

    /// A journal written, made durable, then deleted to commit.
    fn journal_committed() -> Vec<crate::Event> {
        let mut events = vec![
            start(100, "/d"),
            open_new(100, "/d/db-journal", 3, reg(12)),
            write(100, 3, 512),
            fsync(100, 3),
            close(100, 3),
        ];
        events.extend(fsync_dir(100, "/d", 4, 2));
        events.push(unlink(100, "/d/db-journal"));
        events
    }

    #[test]
    fn a_durable_journal_deleted_without_a_directory_fsync_is_flagged() {
        let mut events = journal_committed();
        events.push(exit(100, 0));
        let findings = run(events);
        let f = one(&findings, "unlink-without-dir-fsync");
        assert_eq!(
            (f.path.as_str(), f.process.pid, f.severity),
            ("/d/db-journal", 100, crate::Severity::Low)
        );
        assert_eq!(f.evidence["directory"], "/d");
        assert_eq!(rules(&findings), vec!["unlink-without-dir-fsync"]);
    }

    #[test]
    fn the_directory_fsynced_after_the_removal_is_clean() {
        let mut events = journal_committed();
        events.extend(fsync_dir(100, "/d", 4, 2));
        events.push(exit(100, 0));
        assert_clean(&run(events));
    }

    #[test]
    fn temporary_files_never_made_durable_are_not_flagged() {
        let events = vec![
            start(100, "/d"),
            open_new(100, "/d/scratch", 3, reg(12)),
            write(100, 3, 512),
            close(100, 3),
            unlink(100, "/d/scratch"),
            exit(100, 0),
        ];
        assert_clean(&run(events));
    }

    #[test]
    fn a_name_removed_after_a_link_moved_the_file_is_not_flagged() {
        // git's batch mode: write a temporary object, fsync it, link it to
        // its name, remove the temporary name. The data keeps a name.
        let mut events = vec![
            start(100, "/d"),
            open_new(100, "/d/tmp_obj", 3, reg(12)),
            write(100, 3, 512),
            fsync(100, 3),
            close(100, 3),
        ];
        events.extend(fsync_dir(100, "/d", 4, 2));
        events.extend([
            rename_full(100, "link", "/d/tmp_obj", "/d/obj", -100, None),
            unlink(100, "/d/tmp_obj"),
        ]);
        events.extend(fsync_dir(100, "/d", 4, 2));
        events.push(exit(100, 0));
        assert_clean(&run(events));
    }
}
