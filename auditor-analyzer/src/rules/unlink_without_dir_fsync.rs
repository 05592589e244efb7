//! `unlink-without-dir-fsync`: a file the program had made durable was
//! removed (its last name), and the directory was never fsynced after: a
//! crash can bring the file back. When the removal is a commit point (a
//! rollback journal deleted to commit a transaction, as SQLite does in
//! DELETE mode), the committed work is undone by the crash. Temporary
//! files never fsynced, and names removed after another was linked to the
//! same file (a move), are not flagged: their return loses nothing.

use crate::finding::{Finding, Severity};
use crate::track::dirs::{NameOp, PendingName};

use super::{Kind, RuleInfo, name_finding};

pub const INFO: RuleInfo = RuleInfo {
    id: "unlink-without-dir-fsync",
    severity: Severity::Low,
    title: "durable file removed but its directory never fsynced: a crash can bring it back",
    kind: Kind::Name,
};

/// The verdict for a pending removal of a file that had been made durable.
pub fn check(p: &PendingName) -> Option<Finding> {
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
    use crate::test_support::*;

    /// A journal written, made durable, then deleted to commit.
    fn journal_committed() -> Vec<crate::Event> {
        trace![
            start(100, "/d"),
            create_synced(100, "/d/db-journal", 3, 12, 512),
            fsync_dir(100, "/d", 4, 2),
            unlink(100, "/d/db-journal"),
        ]
    }

    #[test]
    fn a_durable_journal_deleted_without_a_directory_fsync_is_flagged() {
        name_flagged_at_exit(
            journal_committed(),
            "unlink-without-dir-fsync",
            "/d/db-journal",
            crate::Severity::Low,
        );
    }

    #[test]
    fn the_directory_fsynced_after_the_removal_is_clean() {
        clean_once_dir_fsynced(journal_committed());
    }

    #[test]
    fn temporary_files_never_made_durable_are_not_flagged() {
        assert_clean(&run(trace![
            start(100, "/d"),
            create_unsynced(100, "/d/scratch", 3, 12, 512),
            unlink(100, "/d/scratch"),
            exit(100, 0),
        ]));
    }

    #[test]
    fn a_name_removed_after_a_link_moved_the_file_is_not_flagged() {
        // git's batch mode: write a temporary object, fsync it, link it to
        // its name, remove the temporary name. The data keeps a name.
        clean_once_dir_fsynced(trace![
            start(100, "/d"),
            create_synced(100, "/d/tmp_obj", 3, 12, 512),
            fsync_dir(100, "/d", 4, 2),
            link(100, "/d/tmp_obj", "/d/obj"),
            unlink(100, "/d/tmp_obj"),
        ]);
    }
}
