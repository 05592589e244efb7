//! The public façade: feed events, get findings. Event handlers live in
//! submodules by concern (fds, data, names, lifecycle); this module holds
//! the state, the dispatch to the rules, and the end of the observation,
//! where every exposure gets its verdict ([`verdicts`]).

mod data;
mod fds;
mod hosts;
mod lifecycle;
mod names;
mod verdicts;

use std::collections::BTreeSet;

use anyhow::Result;

use crate::calls::{Call, CommCache};
use crate::config::{Config, Filter};
use crate::event::{Event, EventKind, FileId, FileInfo};
use crate::exposure::Exposures;
use crate::fast_hash::{FastMap, FastSet};
use crate::finding::{Finding, ProcessRef};
use crate::rules::{Cx, Moment, Rule, registry};
use crate::snapshot::{self, Recent, Snapshot};
use crate::stats::AnalyzerStats;
use crate::track::dirs::DirJournal;
use crate::track::fds::{FdSpace, TableId};
use crate::track::inodes::{Inodes, judged};
use crate::track::paths::NameTable;
use crate::track::processes::{ProcKey, ProcessTable};

/// Inode states kept before idle ones are evicted (doubles as needed, up
/// to the `max_files` cap).
const GC_START: usize = 50_000;
/// Distinct ignored files remembered (to count each once).
const IGNORED_SEEN_MAX: usize = 100_000;

/// Completes an event once its paths are absolute, before any rule sees it.
pub type Enricher = Box<dyn FnMut(&mut Event) + Send>;

/// How the observation relates to its processes, which says how long a
/// window of exposure matters (see `rules::Kind::Ordering`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Processes found running (attach): a daemon serves during a window.
    #[default]
    Attached,
    /// A command the auditor launched (run, record, crashtest).
    Launched {
        key: ProcKey,
        /// Its exit status once it ended (0 = success).
        code: Option<i32>,
        killed: bool,
    },
}

/// Follows an event stream and raises durability findings.
pub struct Analyzer {
    config: Config,
    enricher: Option<Enricher>,
    filter: Filter,
    rules: Vec<Box<dyn Rule>>,
    fds: FdSpace,
    procs: ProcessTable,
    inodes: Inodes,
    names: NameTable,
    dirs: DirJournal,
    exposures: Exposures,
    mode: Mode,
    /// The launched command's cwd (from its start event).
    launched_cwd: Option<String>,
    /// Number of `lost` records so far: state older than the current epoch
    /// may have missed events.
    epoch: u32,
    /// The final verdicts, once the observation ended.
    verdicts: Option<Vec<Finding>>,
    /// Files tracked when the observation ended, for a [`Analyzer::conclude_last`]
    /// that let their states go since.
    tracked_at_end: Option<u64>,
    stats: AnalyzerStats,
    ignored_seen: FastSet<FileId>,
    /// Files counted in `stats.caller_files`.
    caller_seen: FastSet<FileId>,
    gc_at: usize,
    /// Eviction passes that let something go (see [`Analyzer::sweeps`]).
    sweeps: u64,
    last_event: Option<(u64, u64)>,
    /// Ended processes and signals, for live views.
    recent: Recent,
    /// Shared comm strings for kept calls.
    comms: CommCache,
    /// [`Analyzer::process`] returns what each event put at risk.
    raise: bool,
    /// Host paths some process names otherwise (a chroot, a container):
    /// what findings on them add (see `hosts`).
    aliases: FastMap<String, hosts::Alias>,
    /// Stacks the events named so far.
    stacks: crate::track::stacks::Stacks,
}

impl Analyzer {
    /// Checks the config (globs, rule ids) once, so a typo fails before any
    /// capture starts.
    pub fn new(config: Config) -> Result<Self> {
        let filter = Filter::new(&config)?;
        Ok(Analyzer {
            config,
            enricher: None,
            filter,
            rules: registry(),
            fds: FdSpace::default(),
            procs: ProcessTable::default(),
            inodes: Inodes::default(),
            names: NameTable::default(),
            dirs: DirJournal::default(),
            exposures: Exposures::default(),
            mode: Mode::default(),
            launched_cwd: None,
            epoch: 0,
            verdicts: None,
            tracked_at_end: None,
            stats: AnalyzerStats::default(),
            ignored_seen: FastSet::default(),
            caller_seen: FastSet::default(),
            gc_at: GC_START,
            sweeps: 0,
            last_event: None,
            recent: Recent::default(),
            comms: CommCache::default(),
            raise: true,
            aliases: FastMap::default(),
            stacks: Default::default(),
        })
    }

    /// Live capture fills in here what only the live system can tell (the
    /// inode a rename moved, by a stat of its now-absolute new path).
    /// Recordings already carry it, so replays need none.
    pub fn set_enricher(&mut self, enricher: Enricher) {
        self.enricher = Some(enricher);
    }

    /// Whether [`Analyzer::process`] returns what each event put at risk
    /// (on by default). Off, it returns nothing and copies nothing, for
    /// callers that only want the verdicts at the end.
    pub fn set_at_risk(&mut self, on: bool) {
        self.raise = on;
    }

    /// The working directory of the command the auditor launched, when it
    /// launched one.
    pub fn launched_cwd(&self) -> Option<&str> {
        match self.mode {
            Mode::Launched { key, .. } => self.launched_cwd.as_deref().filter(|_| key != 0),
            Mode::Attached => None,
        }
    }

    /// The config this analyzer runs with (the report needs `fail_on`).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Resolves relative paths in `ev` IN PLACE (against the dirfd's path or
    /// the process cwd), then updates state and tells the rules. Returns
    /// what this event put at risk (findings as they would read if the
    /// observation ended now), for live views and streams; the verdicts
    /// come from [`Analyzer::finish`].
    pub fn process(&mut self, ev: &mut Event) -> Vec<Finding> {
        let mut raised = Vec::new();
        self.stats.events += 1;
        self.last_event = Some((ev.seq, ev.ts_ns));
        if let EventKind::Lost { count } = ev.kind {
            self.epoch += 1;
            self.stats.lost_events += count;
            self.stats.loss_records += 1;
            return raised;
        }
        if let EventKind::Stack { id, user_stack } = &ev.kind {
            let stack = user_stack;
            self.stats.stacks += 1;
            if stack.unwind == crate::stack::Unwind::FramePointers {
                self.stats.stacks_by_frame_pointers += 1;
            }
            self.stacks.insert(*id, stack.clone());
            return raised;
        }
        self.ensure_process(ev);
        self.resolve_paths(ev);
        if let Some(enrich) = self.enricher.as_mut() {
            enrich(ev);
        }
        self.recent
            .observe(ev, &self.procs, &self.inodes, &self.fds);
        self.dispatch(ev, &mut raised);
        Self::leave_host(ev);
        let cap = self.config.max_files.max(1);
        self.stats.evicted_exposures += self.exposures.bound(cap) as u64;
        raised.retain(|f| self.shown(f));
        for f in &mut raised {
            self.locate(f);
        }
        raised
    }

    /// Hands the event to its handler.
    fn dispatch(&mut self, ev: &Event, raised: &mut Vec<Finding>) {
        match &ev.kind {
            EventKind::Open { .. } => self.on_open(ev, raised),
            EventKind::Write { .. } => self.on_write(ev, raised),
            EventKind::Truncate { .. } => self.on_truncate(ev, raised),
            EventKind::Fallocate { fd, file, .. } => self.on_fallocate(ev, *fd, file.as_ref()),
            EventKind::Sync { .. } => self.on_sync(ev, raised),
            EventKind::Rename { .. } => self.on_rename(ev, raised),
            EventKind::Unlink { .. } => self.on_unlink(ev),
            EventKind::Mkdir { .. } => self.on_mkdir(ev),
            EventKind::Close { .. } => self.on_close(ev, raised),
            EventKind::CloseRange {
                first,
                last,
                flags,
                ret,
            } => self.on_close_range(ev, *first, *last, *flags, *ret),
            EventKind::Dup {
                old_fd,
                cloexec,
                ret,
                file,
                ..
            } => self.on_dup(ev, *old_fd, *cloexec, *ret, file.as_ref()),
            EventKind::Fcntl { .. } => self.on_fcntl(ev),
            EventKind::Mmap { .. } => self.on_mmap(ev),
            EventKind::Chdir { path, ret } => self.on_chdir(ev, path, *ret),
            EventKind::Fchdir { fd, ret } => self.on_fchdir(ev, *fd, *ret),
            EventKind::Fork { .. } => self.on_fork(ev),
            EventKind::Exec { filename, argv, .. } => self.on_exec(ev, filename, argv),
            EventKind::Chroot { .. }
            | EventKind::PivotRoot { .. }
            | EventKind::Mount { .. }
            | EventKind::Umount { .. }
            | EventKind::Unshare { .. }
            | EventKind::Setns { .. }
            | EventKind::View { .. } => self.on_view_change(ev),
            EventKind::Exit { .. } => self.on_exit(ev, raised),
            EventKind::SignalSent { .. } => self.on_signal_sent(ev),
            EventKind::SignalDelivered {
                signal, handler, ..
            } => self.on_signal_delivered(ev, *signal, *handler),
            EventKind::ProcessStart { .. } => self.on_process_start(ev),
            EventKind::FdAtStart { .. } => self.on_fd_at_start(ev),
            EventKind::Lost { .. } | EventKind::Stack { .. } => {}
        }
    }

    /// End of the observation: every exposure gets its verdict (still
    /// open, closed later by someone, or moot). Returns them all; later
    /// calls return nothing.
    pub fn finish(&mut self) -> Vec<Finding> {
        if self.verdicts.is_some() {
            return Vec::new();
        }
        self.conclude();
        self.findings().to_vec()
    }

    /// End of the observation, as [`Analyzer::finish`], keeping the
    /// verdicts here (see [`Analyzer::findings`]) instead of returning a
    /// copy: a run can end with a finding on each of 100,000 files.
    pub fn conclude(&mut self) {
        self.conclude_with(false);
    }

    /// [`Analyzer::conclude`] for a caller that only takes the verdicts
    /// afterwards (a report, not a view of the end): each file's state
    /// goes as soon as its last verdict is built, so the end's peak is
    /// the state at the end or the findings, not both.
    pub fn conclude_last(&mut self) {
        self.conclude_with(true);
    }

    fn conclude_with(&mut self, release: bool) {
        if self.verdicts.is_some() {
            return;
        }
        let end_call = self.last_event.map(|(seq, ts_ns)| crate::finding::CallRef {
            seq,
            ts_ns,
            pid: 0,
            tid: 0,
            comm: String::new(),
            call: "end of trace".into(),
            stack: None,
        });
        let mut raised = Vec::new();
        self.tell(
            &Moment::End {
                last: end_call.as_ref(),
            },
            &mut raised,
        );
        // The rules have said all they will, and the names still pending
        // are verdicts now: what only they kept (per-file state of every
        // file written) goes before the findings are built, so the end's
        // peak is the findings, not the findings and all that as well.
        self.rules = registry();
        self.dirs = DirJournal::default();
        self.tracked_at_end = Some(self.inodes.len() as u64);
        let verdicts = self.verdicts(release);
        self.verdicts = Some(verdicts);
    }

    /// Moves the verdicts out once the observation ended (a report made
    /// from them needs no second copy); [`Analyzer::findings`] is empty
    /// afterwards.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        self.verdicts
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The verdicts once [`Analyzer::finish`] ran; before that, what is at
    /// risk now (as live views show it).
    pub fn findings(&self) -> &[Finding] {
        self.verdicts.as_deref().unwrap_or(&[])
    }

    /// Coverage counters for reports.
    pub fn stats(&self) -> AnalyzerStats {
        let mut stats = self.stats.clone();
        stats.processes = self.procs.seen;
        stats.tracked_inodes = self.tracked_at_end.unwrap_or(self.inodes.len() as u64);
        stats.max_files = self.config.max_files as u64;
        stats
    }

    /// Eviction passes so far that dropped file states. A long-running
    /// caller can hand freed memory back to the system after each one.
    pub fn sweeps(&self) -> u64 {
        self.sweeps
    }

    /// A bounded picture of the live state (processes, files, signals, the
    /// newest findings as they stand) for views that refresh during
    /// capture; ages are measured against `now_ns` (the events' clock).
    pub fn snapshot(&self, now_ns: u64) -> Snapshot {
        let findings = match &self.verdicts {
            Some(v) => v.clone(),
            None => self.standing(snapshot::FINDINGS),
        };
        snapshot::build(
            snapshot::Parts {
                procs: &self.procs,
                inodes: &self.inodes,
                fds: &self.fds,
                recent: &self.recent,
                findings: &findings,
                findings_total: self
                    .verdicts
                    .as_ref()
                    .map_or(self.standing_count(), Vec::len),
                stats: self.stats(),
            },
            now_ns,
        )
    }

    /// Tells every rule about `m`; what they put at risk goes to `raised`.
    /// Disabled rules run too (their findings are left out at the end):
    /// what one rule exposed can make another's verdict redundant, and
    /// leaving a rule out must not change the others'.
    fn tell(&mut self, m: &Moment<'_>, raised: &mut Vec<Finding>) {
        let mut cx = Cx {
            inodes: &self.inodes,
            procs: &self.procs,
            fds: &self.fds,
            dirs: &self.dirs,
            epoch: self.epoch,
            exposures: &mut self.exposures,
            raised,
            raise: self.raise,
        };
        for rule in self.rules.iter_mut() {
            rule.observe(m, &mut cx);
        }
    }

    /// Whether a finding is reported: its rule enabled, its path not
    /// ignored by a glob, not on a cache unless asked.
    fn shown(&self, f: &Finding) -> bool {
        self.filter.rule_enabled(&f.rule)
            && !self.filter.path_ignored(&f.path)
            && !self.filter.path_is_skipped_cache(&f.path)
    }

    /// The inode's state is gone (evicted, or a new file took its number):
    /// the rules forget what they kept about it.
    fn forget_inode(&mut self, id: &FileId) {
        for r in self.rules.iter_mut() {
            r.forget(id);
        }
    }

    /// Makes sure the event's process has a record (processes attached
    /// mid-flight appear implicitly) and knows the thread.
    fn ensure_process(&mut self, ev: &Event) {
        let new = self.procs.get(ev.pid).is_none();
        // An exiting process still signals its parent (SIGCHLD) after its
        // exit event: those last words belong to the life that ended, not
        // to a new one (a reused pid would first appear at its fork).
        if new
            && matches!(ev.kind, EventKind::SignalSent { .. })
            && self.recent.ended_recently(ev.pid)
        {
            return;
        }
        if new {
            let table = self.fds.new_table();
            self.procs.start(ev.pid, &ev.comm, table, self.epoch);
        }
        let tick = self.stats.events;
        if let Some(p) = self.procs.get_mut(ev.pid) {
            p.last_active = tick;
            p.threads.insert(ev.tid);
            if ev.tid == ev.pid && !ev.comm.is_empty() && *p.comm != *ev.comm {
                p.comm = ev.comm.as_str().into();
            }
        }
        if new {
            self.bound_processes();
        }
    }

    /// The fd table the event's thread uses.
    fn table_of(&self, ev: &Event) -> Option<TableId> {
        self.procs.get(ev.pid).map(|p| p.table_of(ev.tid))
    }

    /// The fd table a call returning `ret` changed: none when it failed.
    fn table_changed_by(&self, ev: &Event, ret: i64) -> Option<TableId> {
        if ret < 0 {
            return None;
        }
        self.table_of(ev)
    }

    /// (key, ref) of the event's process.
    fn who(&self, ev: &Event) -> (ProcKey, ProcessRef) {
        match self.procs.get(ev.pid) {
            Some(p) => (p.key, p.to_ref()),
            None => (
                0,
                ProcessRef {
                    pid: ev.pid,
                    comm: ev.comm.as_str().into(),
                    exe: None,
                    argv: Default::default(),
                },
            ),
        }
    }

    /// Records kernel facts about a file (and a name for it); returns
    /// whether the file is judged. First sight counts it in stats.
    fn observe(&mut self, info: &FileInfo, path: Option<&str>) -> bool {
        let (st, new) = self.inodes.observe(info);
        if let Some(path) = path {
            st.add_name(path);
        }
        let verdict = judged(st.file_type, &st.fs);
        // Named only for the ignored-files count: the common (judged) case
        // needs no copy of the path.
        let shown = if verdict.is_err() {
            st.path()
        } else {
            String::new()
        };
        if let Some(path) = path {
            self.names.set(path, info.id);
        }
        if new {
            self.maybe_gc(info.id);
        }
        match verdict {
            Ok(()) => {
                if new {
                    self.stats.files_tracked += 1;
                }
                true
            }
            Err(reason) => {
                if self.ignored_seen.len() < IGNORED_SEEN_MAX && self.ignored_seen.insert(info.id) {
                    self.stats.ignored_files.add(&shown, &reason);
                }
                false
            }
        }
    }

    /// Whether the inode `id` is judged (known, persistent, not unlinked).
    fn is_judged(&self, id: &FileId) -> bool {
        self.inodes
            .get(id)
            .is_some_and(|s| s.judged() && !s.unlinked)
    }

    /// Bounds memory on long runs: drops idle inode states nothing refers
    /// to once the table grows past a threshold, and past `max_files` the
    /// least recently used ones whatever they hold (a tenth of the cap at
    /// once, so the sort is paid rarely). `current` is the inode the call
    /// being handled just brought in: its fd may not be installed yet.
    fn maybe_gc(&mut self, current: FileId) {
        let cap = self.config.max_files.max(1);
        if self.inodes.len() <= self.gc_at.min(cap) {
            return;
        }
        let mut open: BTreeSet<FileId> = self.fds.open_files().collect();
        open.insert(current);
        let keep = if self.inodes.len() > cap {
            cap - cap / 10
        } else {
            usize::MAX
        };
        let before: Vec<FileId> = self.inodes.ids_where(|_| true);
        let (rules, exposures) = (&self.rules, &self.exposures);
        let busy = |id: &FileId| exposures.any_open(id) || rules.iter().any(|r| r.holds(id));
        let out = self.inodes.evict(&open, keep, busy);
        self.stats.evicted_inodes += out.total as u64;
        self.stats.evicted_dirty += out.pending as u64;
        if out.total > 0 {
            self.sweeps += 1;
            for id in before.iter().filter(|id| !self.inodes.contains(id)) {
                self.exposures.untrack(id);
                for r in self.rules.iter_mut() {
                    r.forget(id);
                }
            }
        }
        let inodes = &self.inodes;
        self.names.retain_ids(|id| inodes.contains(id));
        for p in self.procs.iter_mut() {
            p.written
                .retain(|id| inodes.get(id).is_some_and(|s| s.dirty.is_some()));
        }
        self.gc_at = (self.inodes.len() * 2).max(GC_START);
    }

    /// Past `max_processes`, drops the least recently active records (a
    /// tenth of the cap at once). Their fd tables go; the files they left
    /// unsynced keep their state, but no exit will be seen for them, so
    /// verdicts on those files are marked inconclusive.
    pub(super) fn bound_processes(&mut self) {
        let cap = self.config.max_processes.max(1);
        if self.procs.len() <= cap {
            return;
        }
        for p in self.procs.evict_lru(cap - cap / 10) {
            p.tables().for_each(|t| self.fds.release(t));
            for id in &p.written {
                self.inodes.taint(id);
            }
            self.stats.evicted_processes += 1;
        }
    }

    /// The call reference of the event (for evidence chains).
    fn call_of(&mut self, ev: &Event) -> Call {
        let comm = self.comms.get(&ev.comm);
        Call::new(ev, comm).with_stack(self.stacks.get(ev.stack))
    }
}

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod hosts_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod verdict_tests;
