//! `rename-without-fsync`: data renamed (or linked) into place before it was
//! made durable. After a crash the new name can point to an empty or partial
//! file, replacing a good one: the `docker load` empty-layer incident. The
//! exposure lasts until the data is durable (an fsync by anyone, a sync).

use crate::calls::{human_duration, plural};
use crate::exposure::Subject;
use crate::finding::{CallRef, Finding, ProcessRef, Severity};
use crate::track::inodes::{Dirty, InodeState};

use super::{Cx, Kind, Moment, Rename, RuleInfo, with_dirty_evidence};

pub const INFO: RuleInfo = RuleInfo {
    id: "rename-without-fsync",
    severity: Severity::High,
    title: "file renamed or linked into place while its data was not durable",
    kind: Kind::Ordering,
};

/// At a rename or link of an inode holding unsynced data.
pub fn observe(m: &Moment<'_>, cx: &mut Cx<'_>) {
    let Moment::Renamed {
        id,
        rename,
        pid,
        call,
    } = m
    else {
        return;
    };
    let Some((inode, process)) = cx.lookup(id, *pid) else {
        return;
    };
    // Once per dirty spell: a second rename of the same unsynced data
    // is the same exposure.
    let Some(dirty) = inode.dirty.as_ref() else {
        return;
    };
    if cx.is_open(inode.id, &INFO) {
        return;
    }
    let f = finding(inode, dirty, rename, &call.to_ref(), process.to_ref());
    cx.expose(&INFO, Subject::Data(inode.id), f);
}

/// The finding for a rename of an inode holding unsynced data.
fn finding(
    inode: &InodeState,
    dirty: &Dirty,
    r: &Rename<'_>,
    call: &CallRef,
    process: ProcessRef,
) -> Finding {
    let op = if r.link { "link" } else { "rename" };
    let age = call.ts_ns.saturating_sub(dirty.first_write.ts_ns);
    let replace = if r.replaced {
        ", replacing the previous file"
    } else {
        ""
    };
    let summary = format!(
        "{op}d {:?} to {:?}{replace} with {} unsynced bytes ({}, first {} earlier) and no fsync: a crash can leave {:?} empty or partial",
        r.source,
        r.destination,
        dirty.bytes,
        plural(dirty.writes, "write"),
        human_duration(age),
        r.destination
    );
    let mut f = INFO
        .finding(r.destination, Some(inode.id), process, summary)
        .with("operation", op)
        .with("source", r.source)
        .with("destination", r.destination)
        .with("destination_existed", r.replaced.then_some(true));
    f = with_dirty_evidence(f, inode, dirty, call.ts_ns);
    if &*inode.fs == "ext4" && r.replaced {
        f = f.with(
            "fs_note",
            "ext4's auto_da_alloc flushes data on rename-over-existing and may hide this; XFS and btrfs do not",
        );
    }
    let mut calls = inode.calls();
    calls.push(call.clone());
    f.with(
        "fix",
        "fsync (or fdatasync) the file before renaming it, then fsync the directory",
    )
    .with_calls(calls)
}

#[cfg(test)]
mod tests {
    use crate::event::EventKind;
    use crate::test_support::*;

    /// /d/a.tmp (inode 10) written by `first` and a 96-byte write,
    /// renamed to /d/a unsynced, its directory fsynced, and the exit.
    fn renamed_unsynced(first: crate::Event) -> Vec<crate::Event> {
        trace![
            start(100, "/d"),
            open_new(100, "/d/a.tmp", 3, reg(10)),
            first,
            write(100, 3, 96),
            close(100, 3),
            rename(100, "/d/a.tmp", "/d/a"),
            fsync_dir(100, "/d", 4, 2),
            exit(100, 0),
        ]
    }

    #[test]
    fn rename_of_unsynced_tmp_is_flagged_with_evidence() {
        let findings = run(renamed_unsynced(write(100, 3, 4000)));
        // The exit adds nothing for the same data.
        let f = sole(&findings, "rename-without-fsync");
        assert_eq!(f.severity, crate::Severity::High);
        assert_eq!(f.path, "/d/a");
        assert_eq!(f.process.pid, 100);
        assert_eq!(f.inode.unwrap().ino, 10);
        assert_eq!(f.evidence["source"], "/d/a.tmp");
        assert_eq!(f.evidence["destination"], "/d/a");
        assert_eq!(f.evidence["unsynced_bytes"], 4096);
        assert_eq!(f.evidence["writes"], 2);
        assert_eq!(f.evidence["fs"], "ext4");
        assert_eq!(
            f.evidence["unsynced_age_ns"], 3_000_000,
            "first write at 3 ms, rename at 6 ms"
        );
        assert!(f.evidence["destination_existed"].is_null());
        assert!(!f.inconclusive);
        let calls: Vec<&str> = f.calls.iter().map(|c| c.call.as_str()).collect();
        assert_eq!(
            calls.first(),
            Some(&"openat(\"/d/a.tmp\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC) = 3")
        );
        assert_eq!(calls.last(), Some(&"rename(\"/d/a.tmp\", \"/d/a\") = 0"));
    }

    #[test]
    fn a_run_of_writes_counts_as_its_calls() {
        let mut run_of_40 = write(100, 3, 4000);
        if let EventKind::Write { calls, .. } = &mut run_of_40.kind {
            *calls = 40;
        }
        let findings = run(renamed_unsynced(run_of_40));
        let f = sole(&findings, "rename-without-fsync");
        assert_eq!(f.evidence["unsynced_bytes"], 4096);
        assert_eq!(f.evidence["writes"], 41, "40 calls in one event, then one");
        assert_eq!(
            f.calls[1].call, "write(fd=3, 4000) = 4000 (40 calls)",
            "the evidence shows the run as one line with its count"
        );
    }

    /// /d/a already holds 100 bytes (inode 9), opened and closed.
    fn existing() -> Vec<crate::Event> {
        vec![
            start(100, "/d"),
            open_existing(100, "/d/a", 5, sized(reg(9), 100)),
            close(100, 5),
        ]
    }

    #[test]
    fn atomic_replace_done_right_is_clean() {
        assert_clean(&run(trace![
            existing(),
            atomic_replace(100, "/d/a", 3, 10),
            exit(100, 0),
        ]));
    }

    #[test]
    fn replacing_an_existing_file_says_so() {
        let events = trace![
            existing(),
            write_new(100, "/d/a.tmp", 3, 10, 10),
            rename(100, "/d/a.tmp", "/d/a"),
        ];
        let findings = run(events);
        let f = one(&findings, "rename-without-fsync");
        assert_eq!(f.evidence["destination_existed"], true);
        assert!(
            f.evidence["fs_note"]
                .as_str()
                .unwrap()
                .contains("auto_da_alloc")
        );
    }

    #[test]
    fn file_written_before_tracing_is_found_by_fd_at_start() {
        let events = vec![
            start(100, "/d"),
            ev(
                100,
                EventKind::FdAtStart {
                    fd: 3,
                    path: "/d/a.tmp".into(),
                    file: Some(reg(10)),
                    cloexec: false,
                    from_caller: false,
                },
            ),
            write(100, 3, 100),
            rename(100, "/d/a.tmp", "/d/a"),
        ];
        let f = run(events);
        let f = one(&f, "rename-without-fsync");
        assert_eq!(
            (f.path.as_str(), f.evidence["unsynced_bytes"].as_u64()),
            ("/d/a", Some(100))
        );
    }

    #[test]
    fn file_known_only_by_kernel_identity_is_matched_by_inode() {
        // A write through fd 7, never opened in the trace, then a rename
        // of the file it names; `synced` puts an fsync between them.
        let adopted = |synced: bool| {
            let mut v = vec![
                start(100, "/d"),
                write_full(100, 7, 100, 100, None, Some(reg(10))),
            ];
            if synced {
                v.push(fsync(100, 7));
            }
            v.push(rename_full(
                100,
                "renameat",
                "/d/a.tmp",
                "/d/a",
                crate::track::paths::AT_FDCWD,
                Some(reg(10)),
            ));
            v
        };
        let (a, findings) = run_with(crate::Config::default(), adopted(false));
        let f = one(&findings, "rename-without-fsync");
        assert_eq!(f.path, "/d/a");
        assert_eq!(f.inode.unwrap().ino, 10);
        assert_eq!(a.stats().adopted_fds, 1);
        // The same with the fsync through the adopted fd: clean.
        assert_none_of(&run(adopted(true)), "rename-without-fsync");
    }

    #[test]
    fn link_of_unsynced_data_is_flagged() {
        let events = trace![
            start(100, "/d"),
            write_new(100, "/d/a.tmp", 3, 10, 10),
            link_call(100, "linkat", "/d/a.tmp", "/d/a"),
        ];
        let findings = run(events);
        assert_eq!(
            one(&findings, "rename-without-fsync").evidence["operation"],
            "link"
        );
    }
}
