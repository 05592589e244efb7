//! `sync-file-range-only`: the program "synced" with sync_file_range, which
//! starts writeback of data pages only: no metadata, no disk cache flush, no
//! durability guarantee.

use crate::calls::Call;
use crate::exposure::Subject;
use crate::finding::{Finding, ProcessRef, Severity};
use crate::track::inodes::InodeState;

use super::{Cx, Kind, Moment, RuleInfo, file_finding, with_dirty_evidence};

pub const INFO: RuleInfo = RuleInfo {
    id: "sync-file-range-only",
    severity: Severity::Low,
    title: "data made \"durable\" only with sync_file_range before a rename or exit",
    kind: Kind::EndOfLife,
};

/// At a rename, or the end of a writer, of data only sync_file_range'd.
pub fn observe(m: &Moment<'_>, cx: &mut Cx<'_>) {
    match m {
        Moment::Renamed { id, pid, call, .. } => {
            if let Some((inode, process)) = cx.lookup(id, *pid) {
                judge(cx, inode, "rename", call, process.to_ref());
            }
        }
        Moment::Ended { process, call, .. } => {
            let trigger = Call::from(*call);
            let inodes = cx.inodes;
            for id in cx.left_dirty(process) {
                if let Some(st) = inodes.get(&id) {
                    judge(cx, st, "exit", &trigger, process.to_ref());
                }
            }
        }
        _ => {}
    }
}

/// Once per dirty spell.
fn judge(cx: &mut Cx<'_>, inode: &InodeState, moment: &str, trigger: &Call, process: ProcessRef) {
    if cx.is_open(inode.id, &INFO) {
        return;
    }
    if let Some(f) = check(inode, moment, trigger, process) {
        cx.expose(&INFO, Subject::Data(inode.id), f);
    }
}

/// Flags dirty data whose only sync was sync_file_range, at `moment`
/// ("rename" or "exit").
fn check(inode: &InodeState, moment: &str, trigger: &Call, process: ProcessRef) -> Option<Finding> {
    let dirty = inode.dirty.as_ref()?;
    let sfr = dirty.sync_file_range.as_ref()?;
    let summary = format!(
        "{:?} was only sync_file_range'd before {moment}: {} bytes are still not durable (sync_file_range flushes no metadata and no disk cache)",
        inode.path(),
        dirty.bytes
    );
    let f = file_finding(&INFO, inode, process, summary)
        .with("moment", moment)
        .with("sync_file_range_seq", sfr.seq);
    let mut calls = inode.calls();
    calls.push(sfr.to_ref());
    calls.push(trigger.to_ref());
    Some(
        with_dirty_evidence(f, inode, dirty, trigger.ts_ns)
            .with("fix", "use fdatasync or fsync")
            .with_calls(calls),
    )
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    fn written() -> Vec<crate::Event> {
        trace![
            start(100, "/d"),
            write_new(100, "/d/a.tmp", 3, 10, 4096),
            sync_call(100, "sync_file_range", Some(3), 0, Some((0, 4096, 2))),
        ]
    }

    #[test]
    fn sync_file_range_is_not_durability() {
        let findings = run(trace![written(), rename(100, "/d/a.tmp", "/d/a")]);
        let f = one(&findings, "sync-file-range-only");
        assert_finding(f, "/d/a", 100, crate::Severity::Low);
        assert_eq!(f.evidence["moment"], "rename");
        one(&findings, "rename-without-fsync");
    }

    #[test]
    fn at_exit_too() {
        let findings = run(trace![written(), exit(100, 0)]);
        assert_eq!(
            one(&findings, "sync-file-range-only").evidence["moment"],
            "exit"
        );
        one(&findings, "unsynced-at-exit");
    }

    #[test]
    fn followed_by_fdatasync_is_clean() {
        clean_once_dir_fsynced(trace![
            written(),
            sync_call(100, "fdatasync", Some(3), 0, None),
            close(100, 3),
            rename(100, "/d/a.tmp", "/d/a"),
        ]);
    }
}
