//! The rules: one module each, holding its whole decision. The analyzer's
//! core tracks processes, fds, inodes and names, tells every rule what
//! happened ([`Moment`]) and keeps the exposures the rules open ([`Cx`]);
//! a rule decides whether a moment is a problem, says why, and keeps
//! whatever it must remember between moments (a rule that keeps nothing is
//! just its module's `observe` function; a rule about pending names, its
//! `check`). Adding a rule touches its own file, [`RULES`] and
//! [`registry`].

pub mod archive_not_self_contained;
pub mod commit_before_data;
pub mod create_without_dir_fsync;
pub mod fsync_error_ignored;
pub mod interleaved_writers;
pub mod killed_mid_write;
pub mod killed_while_dirty;
pub mod rename_without_dir_fsync;
pub mod rename_without_fsync;
pub mod sync_file_range_only;
pub mod truncate_in_place;
pub mod unlink_without_dir_fsync;
pub mod unsynced_at_exit;

use serde_json::Value;

use crate::calls::Call;
use crate::event::FileId;
use crate::exposure::{Exposure, Exposures, State, Subject, Told};
use crate::finding::{CallRef, Finding, ProcessRef, Severity};
use crate::image::ImageInfo;
use crate::track::dirs::{DirJournal, PendingName};
use crate::track::fds::FdSpace;
use crate::track::inodes::{Dirty, InodeState, Inodes};
use crate::track::processes::{Process, ProcessTable};

pub mod end_of_life;
pub mod info;
pub use info::{Kind, RuleInfo};

/// What just happened, as the rules are told it (after the core updated
/// its own state for it). Files and processes are named by identity and
/// pid: [`Cx::lookup`] gives their state.
pub enum Moment<'a> {
    /// The non-empty content of a judged file was truncated away (an
    /// O_TRUNC open for writing, or truncate to 0); `size_before` when known.
    Truncated {
        id: FileId,
        size_before: Option<i64>,
        pid: u32,
        call: &'a Call,
    },
    /// A write of at least one byte to a judged file; `at_end` when it
    /// appended (O_APPEND, or at the size the file had).
    Wrote {
        id: FileId,
        at_end: bool,
        pid: u32,
        tid: u32,
        call: &'a Call,
    },
    /// An existing regular file was opened with read access (not an
    /// O_PATH handle); `image` is what the live system read of its header
    /// when it is a disk image opened read-only.
    Opened {
        id: FileId,
        pid: u32,
        path: &'a str,
        writable: bool,
        image: Option<&'a ImageInfo>,
        call: &'a Call,
    },
    /// A write put `bytes` (at least one) into `id`, whatever it is: a
    /// judged file, a file on tmpfs, a pipe, a socket, a device, the
    /// caller's output. What leaves a process.
    Output {
        id: FileId,
        pid: u32,
        path: &'a str,
        bytes: u64,
        call: &'a Call,
    },
    /// fsync or fdatasync of a judged file returned; `ret` < 0 failed.
    Synced {
        id: FileId,
        ret: i64,
        pid: u32,
        call: &'a Call,
    },
    /// A judged inode was renamed or linked into place (names already
    /// updated: its path is the destination).
    Renamed {
        id: FileId,
        rename: &'a Rename<'a>,
        pid: u32,
        call: &'a Call,
    },
    /// A process ended (it has left the process table); `signal` when it
    /// was killed.
    Ended {
        process: &'a Process,
        code: Option<i32>,
        signal: Option<i32>,
        core_dumped: bool,
        call: &'a CallRef,
    },
    /// The observation ends; `last` is its last event.
    End { last: Option<&'a CallRef> },
}

/// A rename or link as the rules need it.
pub struct Rename<'a> {
    pub link: bool,
    pub source: &'a str,
    pub destination: &'a str,
    /// Another inode was known at the destination (it was replaced).
    pub replaced: bool,
}

/// What a rule sees of the analyzer, and where its exposures go.
pub struct Cx<'a> {
    pub inodes: &'a Inodes,
    pub procs: &'a ProcessTable,
    pub fds: &'a FdSpace,
    pub dirs: &'a DirJournal,
    /// Lost-event epoch now.
    pub epoch: u32,
    pub(crate) exposures: &'a mut Exposures,
    /// Findings raised by this moment, for live views.
    pub(crate) raised: &'a mut Vec<Finding>,
    /// Whether anyone reads `raised` (a copy of each finding as it is
    /// raised: at an exit with 50,000 dirty files, 50,000 copies).
    pub(crate) raise: bool,
}

impl<'a> Cx<'a> {
    /// The state of inode `id` and of process `pid` (borrowed from the
    /// analyzer, not from `self`, so exposures can be opened meanwhile).
    pub fn lookup(&self, id: &FileId, pid: u32) -> Option<(&'a InodeState, &'a Process)> {
        let (inodes, procs): (&'a Inodes, &'a ProcessTable) = (self.inodes, self.procs);
        Some((inodes.get(id)?, procs.get(pid)?))
    }

    /// Opens an exposure on `subject` with the finding that tells it.
    pub fn expose(&mut self, rule: &'static RuleInfo, subject: Subject, finding: Finding) {
        let since_epoch = self.epoch_of(&subject);
        self.expose_since(rule, subject, finding, since_epoch);
    }

    /// The lost-event epoch an exposure on `subject` rests on: since its
    /// data became dirty.
    fn epoch_of(&self, subject: &Subject) -> u32 {
        match subject {
            Subject::Data(id) => self
                .inodes
                .get(id)
                .and_then(|s| s.dirty.as_ref())
                .map_or(self.epoch, |d| d.since_epoch),
            _ => self.epoch,
        }
    }

    /// [`Cx::expose`] with the epoch its facts rest on given.
    pub fn expose_since(
        &mut self,
        rule: &'static RuleInfo,
        subject: Subject,
        finding: Finding,
        since_epoch: u32,
    ) {
        let opened_ns = finding.calls.last().map_or(0, |c| c.ts_ns);
        self.open_built(rule, subject, finding, opened_ns, since_epoch, State::Open);
    }

    /// Opens the exposure a process's end leaves on one dirty file, its
    /// finding kept as a draft until it is read.
    pub(crate) fn expose_end_of_life(
        &mut self,
        rule: &'static RuleInfo,
        subject: Subject,
        draft: end_of_life::EndOfLife,
    ) {
        let since_epoch = self.epoch_of(&subject);
        let (pid, opened_ns) = (draft.pid(), draft.opened_ns());
        self.open(Exposure {
            rule,
            subject,
            told: Told::Draft(Box::new(draft)),
            pid,
            opened_ns,
            since_epoch,
            state: State::Open,
        });
    }

    /// Opens an exposure told by a finding built already, pointed at the
    /// call it is about.
    fn open_built(
        &mut self,
        rule: &'static RuleInfo,
        subject: Subject,
        mut finding: Finding,
        opened_ns: u64,
        since_epoch: u32,
        state: State,
    ) {
        crate::locate::locate(&mut finding);
        let pid = finding.process.pid;
        self.open(Exposure {
            rule,
            subject,
            told: Told::Built(Box::new(finding)),
            pid,
            opened_ns,
            since_epoch,
            state,
        });
    }

    fn open(&mut self, e: Exposure) {
        let told = self.exposures.open(e);
        if self.raise {
            self.raised.push(told.finding());
        }
    }

    /// A verdict settled as it is given (at the end), `closed` by a later
    /// call or not.
    pub fn settle(
        &mut self,
        rule: &'static RuleInfo,
        finding: Finding,
        closed: Option<std::sync::Arc<crate::exposure::Closer>>,
        since_epoch: u32,
    ) {
        let opened_ns = finding.calls.first().map_or(0, |c| c.ts_ns);
        let state = closed.map_or(State::Open, State::Closed);
        self.open_built(
            rule,
            Subject::Settled,
            finding,
            opened_ns,
            since_epoch,
            state,
        );
    }

    /// A finding for live views only, judged again at the end (a name left
    /// pending by a process that ended: its directory may be fsynced later).
    pub fn at_risk(&mut self, mut finding: Finding) {
        if self.raise {
            crate::locate::locate(&mut finding);
            self.raised.push(finding);
        }
    }

    /// Whether `rule` has an open exposure on `id`.
    pub fn is_open(&self, id: FileId, rule: &RuleInfo) -> bool {
        self.exposures.is_open(id, rule.id)
    }

    /// Whether `process`'s unsynced data in `id` is an ordering exposure it
    /// opened already: data it renamed into place (written before that
    /// rename), or a rewrite over its own truncation. Its end then adds
    /// nothing for the same data.
    pub fn exposed_by_its_order(&self, id: FileId, process: &Process) -> bool {
        let last = self
            .inodes
            .get(&id)
            .and_then(|s| s.dirty.as_ref())
            .and_then(|d| d.last_write_of(process.key))
            .unwrap_or(0);
        self.exposures.any_open_where(id, |e| {
            e.pid == process.pid
                && (e.rule.id == truncate_in_place::INFO.id
                    || (e.rule.id == rename_without_fsync::INFO.id && e.opened_ns >= last))
        })
    }

    /// Whether the inode is judged (persistent, regular or directory) and
    /// still has a name.
    pub fn is_judged(&self, id: &FileId) -> bool {
        self.inodes
            .get(id)
            .is_some_and(|s| s.judged() && !s.unlinked)
    }

    /// The judged files `process` wrote that still hold unsynced data it
    /// wrote, by identity.
    pub fn left_dirty(&self, process: &Process) -> Vec<FileId> {
        process
            .written
            .iter()
            .filter(|id| {
                self.is_judged(id)
                    && self.inodes.get(id).is_some_and(|s| {
                        s.dirty.as_ref().is_some_and(|d| d.written_by(process.key))
                    })
            })
            .copied()
            .collect()
    }
}

/// What every rule implements. A rule's catalog entry is its module's
/// `INFO`, named in [`RULES`]; the exposures it opens name it too.
pub trait Rule: Send {
    /// Reacts to a moment: opens exposures through `cx`, keeps its state.
    fn observe(&mut self, m: &Moment<'_>, cx: &mut Cx<'_>);

    /// Whether the rule still waits on something about `id` (so the core
    /// keeps that inode's state).
    fn holds(&self, _id: &FileId) -> bool {
        false
    }

    /// The inode `id` is gone, or its state was dropped: what the rule
    /// kept about it no longer applies.
    fn forget(&mut self, _id: &FileId) {}
}

/// A rule that keeps nothing between moments: its module's `observe`.
struct Stateless(fn(&Moment<'_>, &mut Cx<'_>));

impl Rule for Stateless {
    fn observe(&mut self, m: &Moment<'_>, cx: &mut Cx<'_>) {
        (self.0)(m, cx)
    }
}

/// Every rule's catalog entry, in the order reports list their counts.
pub const RULES: &[RuleInfo] = &[
    rename_without_fsync::INFO,
    killed_while_dirty::INFO,
    killed_mid_write::INFO,
    truncate_in_place::INFO,
    fsync_error_ignored::INFO,
    unsynced_at_exit::INFO,
    rename_without_dir_fsync::INFO,
    interleaved_writers::INFO,
    create_without_dir_fsync::INFO,
    unlink_without_dir_fsync::INFO,
    sync_file_range_only::INFO,
    archive_not_self_contained::INFO,
    commit_before_data::INFO,
];

/// A fresh instance of every rule.
pub fn registry() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(Stateless(rename_without_fsync::observe)),
        Box::new(Stateless(killed_while_dirty::observe)),
        Box::new(Stateless(killed_mid_write::observe)),
        Box::new(truncate_in_place::TruncateInPlace::default()),
        Box::new(fsync_error_ignored::FsyncErrorIgnored::default()),
        Box::new(Stateless(unsynced_at_exit::observe)),
        Box::new(Names(
            &rename_without_dir_fsync::INFO,
            rename_without_dir_fsync::check,
        )),
        Box::new(interleaved_writers::InterleavedWriters::default()),
        Box::new(Names(
            &create_without_dir_fsync::INFO,
            create_without_dir_fsync::check,
        )),
        Box::new(Names(
            &unlink_without_dir_fsync::INFO,
            unlink_without_dir_fsync::check,
        )),
        Box::new(Stateless(sync_file_range_only::observe)),
        Box::new(archive_not_self_contained::ArchiveNotSelfContained::default()),
        Box::new(commit_before_data::CommitBeforeData::default()),
    ]
}

/// A finding of `info` about `inode`, named by its path and identity; the
/// rule adds its facts.
pub(crate) fn file_finding(
    info: &RuleInfo,
    inode: &InodeState,
    process: ProcessRef,
    summary: String,
) -> Finding {
    info.finding(inode.path(), Some(inode.id), process, summary)
}

/// Adds the facts every "data not durable" finding shows: bytes, ranges,
/// writes, age, writers, filesystem.
pub(crate) fn with_dirty_evidence(
    f: Finding,
    inode: &InodeState,
    dirty: &Dirty,
    now_ns: u64,
) -> Finding {
    end_of_life::DirtyFacts::of(inode, dirty).add_to(f, now_ns)
}

/// The finding of a name whose directory was never fsynced after it was
/// made (rename, link, create, unlink), for the name rules.
pub(crate) fn name_finding(
    info: &RuleInfo,
    p: &PendingName,
    summary: String,
    fix: &'static str,
) -> Finding {
    info.finding(&*p.path, p.file, p.process.clone(), summary)
        .with("operation", p.op.as_str())
        .with("directory", &*p.dir)
        .with("fs", p.fs.as_deref())
        .with("fix", fix)
        .with_calls(p.calls())
}

/// At the end, a pending name's verdict: given when `wanted`, closed when
/// an fsync of its directory came after its process ended, and lowered
/// while that process still runs. Names its process made durable itself
/// never reach here.
pub(crate) fn settle_name(
    cx: &mut Cx<'_>,
    info: &'static RuleInfo,
    p: &PendingName,
    finding: Finding,
) {
    let mut f = finding;
    if p.closed.is_none() && cx.procs.is_live(p.key) {
        f = still_running(f, &[p.process.pid]);
    }
    cx.settle(info, f, p.closed.clone(), p.since_epoch);
}

/// A rule about pending names: its catalog entry and the check that finds
/// a pending name wanting (its module's `check`). Every such rule follows
/// the run alike: what a process leaves pending when it ends is at risk
/// (for live views); at the end, each name found wanting gets its verdict.
struct Names(&'static RuleInfo, fn(&PendingName) -> Option<Finding>);

impl Rule for Names {
    fn observe(&mut self, m: &Moment<'_>, cx: &mut Cx<'_>) {
        let Names(info, check) = *self;
        match m {
            Moment::Ended { process, .. } => {
                let left: Vec<Finding> =
                    cx.dirs.of_process(process.key).filter_map(check).collect();
                for f in left {
                    cx.at_risk(f);
                }
            }
            Moment::End { .. } => {
                // The journal is borrowed from the analyzer, not from `cx`:
                // walked in place while verdicts are settled, not copied
                // (50,000 pending names are some 15 MiB).
                let dirs: &DirJournal = cx.dirs;
                for p in dirs.iter() {
                    if let Some(f) = check(p) {
                        settle_name(cx, info, p, f);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Lowers a verdict about a process that may still act.
pub(crate) fn still_running(mut f: Finding, pids: &[u32]) -> Finding {
    f.severity = Severity::Low;
    f.summary
        .push_str(" (still running or open when the trace ended: it may still be made durable)");
    f.evidence
        .insert("still_running_pids".into(), Value::from(pids.to_vec()));
    f
}
