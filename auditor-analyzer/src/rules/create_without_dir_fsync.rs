//! `create-without-dir-fsync`: the program fsynced a new file's data (so it
//! cares about it) but never its directory: a crash can lose the name and
//! with it the file.

use crate::finding::{Finding, Severity};
use crate::track::dirs::{NameOp, PendingName};

use super::RuleInfo;

pub const INFO: RuleInfo = RuleInfo {
    id: "create-without-dir-fsync",
    severity: Severity::Low,
    title: "new file fsynced but its directory entry never was",
};

/// The verdict for a pending create when its process ends.
pub fn check(p: &PendingName) -> Option<Finding> {
    if !matches!(p.op, NameOp::Create | NameOp::Mkdir) || !p.data_synced {
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
    Some(
        Finding::new(
            INFO.id,
            INFO.severity,
            p.path.clone(),
            p.file,
            p.process.clone(),
            summary,
        )
        .with("operation", p.op.as_str())
        .with("directory", p.dir.clone())
        .with("fs", p.fs.clone())
        .with("fix", "fsync the parent directory after creating the file")
        .with_calls(vec![p.call.clone()]),
    )
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    fn created_and_synced() -> Vec<crate::Event> {
        vec![
            start(100, "/d"),
            open_new(100, "/d/new", 3, reg(12)),
            write(100, 3, 10),
            fsync(100, 3),
            close(100, 3),
        ]
    }

    #[test]
    fn fsynced_file_in_unsynced_directory() {
        let mut events = created_and_synced();
        events.push(exit(100, 0));
        let findings = run(events);
        assert_eq!(rules(&findings), vec!["create-without-dir-fsync"]);
        let f = &findings[0];
        assert_eq!(
            (f.path.as_str(), f.process.pid, f.severity),
            ("/d/new", 100, crate::Severity::Low)
        );
        assert_eq!(f.evidence["directory"], "/d");
    }

    #[test]
    fn directory_fsynced_too_is_clean() {
        let mut events = created_and_synced();
        events.extend(fsync_dir(100, "/d", 4, 2));
        events.push(exit(100, 0));
        assert_clean(&run(events));
    }
}
