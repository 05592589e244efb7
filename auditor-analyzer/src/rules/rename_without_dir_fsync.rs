//! `rename-without-dir-fsync`: a rename (or link) whose destination
//! directory was never fsynced before its process ended: after a crash the
//! old name (or no name) can come back. Another process may fsync the
//! directory later (a parent that syncs what its helpers made): the
//! verdict is then low, with who did it and when.

use crate::finding::{Finding, Severity};
use crate::track::dirs::{NameOp, PendingName};

use super::{Kind, RuleInfo, name_finding};

pub const INFO: RuleInfo = RuleInfo {
    id: "rename-without-dir-fsync",
    severity: Severity::Medium,
    title: "rename never made durable by an fsync of the destination directory",
    kind: Kind::Name,
};

/// The verdict for a pending rename or link.
pub fn check(p: &PendingName) -> Option<Finding> {
    if !matches!(p.op, NameOp::Rename | NameOp::Link) || !p.persistent() {
        return None;
    }
    let summary = format!(
        "{} to {:?} was never made durable: directory {:?} was not fsynced afterwards, so a crash can bring back the old name",
        p.op.as_str(),
        p.path,
        p.dir
    );
    Some(
        name_finding(
            &INFO,
            p,
            summary,
            "open the directory and fsync it after the rename",
        )
        .with("source", p.old_path.clone())
        .with("destination", &*p.path)
        .with("data_synced", p.data_synced),
    )
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    fn replaced_without_dir_fsync() -> Vec<crate::Event> {
        trace![
            start(100, "/d"),
            create_synced(100, "/d/a.tmp", 3, 10, 10),
            rename(100, "/d/a.tmp", "/d/a"),
        ]
    }

    #[test]
    fn rename_never_followed_by_dir_fsync() {
        let f = name_flagged_at_exit(
            replaced_without_dir_fsync(),
            "rename-without-dir-fsync",
            "/d/a",
            crate::Severity::Medium,
        );
        assert_eq!(f.evidence["source"], "/d/a.tmp");
        assert_eq!(f.evidence["data_synced"], true);
    }

    #[test]
    fn dir_fsync_through_a_relative_name_matches_by_identity() {
        let mut events = replaced_without_dir_fsync();
        // The directory is known by identity from an earlier open.
        events.insert(1, open_dir(100, "/d", 9, dir(2)));
        events.insert(2, close(100, 9));
        events.extend([open_dir(100, ".", 4, dir(2)), fsync(100, 4), exit(100, 0)]);
        assert_clean(&run(events));
    }

    #[test]
    fn dir_fsync_after_rename_is_clean() {
        clean_once_dir_fsynced(replaced_without_dir_fsync());
    }
}
