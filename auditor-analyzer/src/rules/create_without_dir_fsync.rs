//! `create-without-dir-fsync`: the program fsynced a new file's data (so it
//! cares about it) but never its directory: a crash can lose the name and
//! with it the file. Judged at the end, so a directory made by one process
//! and fsynced (itself) by another is judged on what both did.

use crate::finding::{Finding, Severity};
use crate::track::dirs::{NameOp, PendingName};

use super::{Kind, RuleInfo, name_finding};

pub const INFO: RuleInfo = RuleInfo {
    id: "create-without-dir-fsync",
    severity: Severity::Low,
    title: "new file fsynced but its directory entry never was",
    kind: Kind::Name,
};

/// The verdict for a pending create or mkdir whose data was made durable
/// and whose directory never was (a directory fsynced by anyone later made
/// the name durable too: nothing is left to say).
pub fn check(p: &PendingName) -> Option<Finding> {
    if !matches!(p.op, NameOp::Create | NameOp::Mkdir)
        || !p.data_synced
        || p.closed.is_some()
        || !p.persistent()
    {
        return None;
    }
    let what = if p.op == NameOp::Mkdir {
        "directory"
    } else {
        "file"
    };
    let summary = format!(
        "new {what} {:?} was fsynced but directory {:?} never was: a crash can lose its name",
        p.path, p.dir
    );
    Some(name_finding(
        &INFO,
        p,
        summary,
        "fsync the parent directory after creating the file",
    ))
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    fn created_and_synced() -> Vec<crate::Event> {
        trace![start(100, "/d"), create_synced(100, "/d/new", 3, 12, 10)]
    }

    #[test]
    fn fsynced_file_in_unsynced_directory() {
        name_flagged_at_exit(
            created_and_synced(),
            "create-without-dir-fsync",
            "/d/new",
            crate::Severity::Low,
        );
    }

    #[test]
    fn directory_fsynced_too_is_clean() {
        clean_once_dir_fsynced(created_and_synced());
    }
}
