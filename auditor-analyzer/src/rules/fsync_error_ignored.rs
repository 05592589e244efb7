//! `fsync-error-ignored`: fsync failed, and the process carried on as if the
//! data were safe. On Linux a failed fsync may have dropped the dirty pages:
//! a retry can succeed while the data is gone ("fsyncgate").

use crate::calls::{Call, errno_name};
use crate::event::FileId;
use crate::exposure::Subject;
use crate::fast_hash::FastMap;
use crate::finding::{Finding, ProcessRef, Severity};
use crate::track::inodes::InodeState;
use crate::track::processes::{ProcKey, Process};

use super::{Cx, Kind, Moment, Rule, RuleInfo, file_finding};

pub const INFO: RuleInfo = RuleInfo {
    id: "fsync-error-ignored",
    severity: Severity::High,
    title: "fsync failed and the process went on (renamed, wrote more, or retried)",
    kind: Kind::Lasting,
};

/// An fsync that failed and whose failure its process has not answered yet.
struct Failed {
    key: ProcKey,
    ret: i64,
    call: Call,
    since_epoch: u32,
}

#[derive(Default)]
pub struct FsyncErrorIgnored {
    failed: FastMap<FileId, Failed>,
}

impl Rule for FsyncErrorIgnored {
    fn observe(&mut self, m: &Moment<'_>, cx: &mut Cx<'_>) {
        let (id, pid, call, follow_up) = match m {
            Moment::Synced { id, pid, call, .. } => (id, pid, call, "fsync retry"),
            Moment::Wrote { id, pid, call, .. } => (id, pid, call, "write"),
            Moment::Renamed { id, pid, call, .. } => (id, pid, call, "rename"),
            _ => return,
        };
        let waiting = self.failed.contains_key(id);
        let failed_now = matches!(m, Moment::Synced { ret, .. } if *ret < 0);
        if !waiting && !failed_now {
            return;
        }
        let Some((inode, process)) = cx.lookup(id, *pid) else {
            return;
        };
        let answered = self.answer(cx, inode, process, follow_up, call);
        if let Moment::Synced { ret, .. } = m
            && *ret < 0
            && !answered
        {
            self.failed.insert(
                *id,
                Failed {
                    key: process.key,
                    ret: *ret,
                    call: (*call).clone(),
                    since_epoch: cx.epoch,
                },
            );
        }
    }

    fn holds(&self, id: &FileId) -> bool {
        self.failed.contains_key(id)
    }

    fn forget(&mut self, id: &FileId) {
        self.failed.remove(id);
    }
}

impl FsyncErrorIgnored {
    /// The process that saw fsync fail on `inode` now goes on
    /// (`follow_up`) as if its data were safe. Returns whether it had.
    fn answer(
        &mut self,
        cx: &mut Cx<'_>,
        inode: &InodeState,
        process: &Process,
        follow_up: &str,
        call: &Call,
    ) -> bool {
        if self
            .failed
            .get(&inode.id)
            .is_none_or(|f| f.key != process.key)
        {
            return false;
        }
        let Some(failed) = self.failed.remove(&inode.id) else {
            return false;
        };
        let f = finding(inode, &failed, follow_up, call, process.to_ref());
        cx.expose_since(
            &INFO,
            Subject::Lasting(Some(inode.id)),
            f,
            failed.since_epoch,
        );
        true
    }
}

/// A failed fsync followed by `follow_up` ("rename", "write", "fsync retry").
fn finding(
    inode: &InodeState,
    failed: &Failed,
    follow_up: &str,
    call: &Call,
    process: ProcessRef,
) -> Finding {
    let errno = errno_name(-failed.ret).map_or_else(|| failed.ret.to_string(), str::to_string);
    let summary = format!(
        "fsync of {:?} failed with {errno}, then the process went on with a {follow_up} as if the data were safe; the failed data may already be lost",
        inode.path()
    );
    let mut calls = inode.calls();
    calls.push(failed.call.to_ref());
    calls.push(call.to_ref());
    file_finding(&INFO, inode, process, summary)
        .with("errno", errno)
        .with("failed_call", failed.call.text())
        .with("failed_seq", failed.call.seq)
        .with("follow_up", follow_up)
        .with("follow_up_call", call.text())
        .with("fs", &*inode.fs)
        .with(
            "fix",
            "treat an fsync error as data loss: rewrite the data from a safe copy or stop",
        )
        .with_calls(calls)
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    fn failed_fsync() -> Vec<crate::Event> {
        trace![
            start(100, "/d"),
            write_new(100, "/d/a.tmp", 3, 10, 10),
            fsync_ret(100, 3, -5),
        ]
    }

    #[test]
    fn rename_after_failed_fsync() {
        let findings = run(trace![failed_fsync(), rename(100, "/d/a.tmp", "/d/a")]);
        let f = one(&findings, "fsync-error-ignored");
        assert_eq!((f.path.as_str(), f.process.pid), ("/d/a", 100));
        assert_eq!(f.evidence["errno"], "EIO");
        assert_eq!(f.evidence["follow_up"], "rename");
        assert!(
            findings.iter().any(|f| f.rule == "rename-without-fsync"),
            "the data is still not durable"
        );
    }

    /// What the finding names as the call that followed the failure.
    fn follow_up(next: crate::Event) -> serde_json::Value {
        let findings = run(trace![failed_fsync(), next]);
        one(&findings, "fsync-error-ignored").evidence["follow_up"].clone()
    }

    #[test]
    fn retry_after_failed_fsync() {
        assert_eq!(follow_up(fsync(100, 3)), "fsync retry");
    }

    #[test]
    fn writing_on_after_failed_fsync() {
        assert_eq!(follow_up(write(100, 3, 10)), "write");
    }

    #[test]
    fn giving_up_on_the_file_is_clean() {
        assert_clean(&run(trace![
            failed_fsync(),
            close(100, 3),
            unlink(100, "/d/a.tmp"),
            exit(100, 1),
        ]));
    }
}
