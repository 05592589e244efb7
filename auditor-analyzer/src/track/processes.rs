//! Traced processes: their threads, fd table, cwd, and the recent facts the
//! exit-time rules need (signals received, writes in flight, mappings).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use crate::calls::Call;
use crate::event::FileId;
use crate::fast_hash::FastMap;
use crate::finding::{CallRef, ProcessRef};

use super::fds::TableId;
use super::views::View;

/// Distinguishes process records across pid reuse.
pub type ProcKey = u64;

/// Signals and deliveries kept per process (the escalation pattern needs
/// only the last few).
const MAX_SIGNALS: usize = 8;
const MAX_MAPPINGS: usize = 64;

/// A signal some traced task sent to this process.
#[derive(Clone, Debug)]
pub struct SignalRec {
    pub signal: i32,
    pub sender_pid: u32,
    pub sender_comm: String,
    /// The sender's parent (pid, comm), when the sender is traced.
    pub sender_parent: Option<(u32, Arc<str>)>,
    pub target_tid: u32,
    pub target_syscall: Option<crate::event::Syscall>,
    /// TRACE_SIGNAL_* result: 0 delivered, 1 ignored, 2 already pending, 3 lost.
    pub result: i32,
    pub call: CallRef,
}

/// A signal that reached one of this process's threads.
#[derive(Clone, Debug)]
pub struct DeliveryRec {
    pub signal: i32,
    /// 0 default action, 1 ignored, else a handler address.
    pub handler: u64,
    pub ts_ns: u64,
}

/// A write call as the mid-write rules need it.
#[derive(Clone, Debug)]
pub struct WriteRec {
    pub fd: i32,
    pub file: Option<FileId>,
    pub path: String,
    pub requested: u64,
    pub ret: i64,
    pub enter_ns: u64,
    pub call: Call,
}

/// A shared writable mapping, so msync(MS_SYNC) finds its inode.
#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    pub addr: u64,
    pub len: u64,
    pub file: FileId,
}

/// One traced process (thread group).
#[derive(Debug)]
pub struct Process {
    pub key: ProcKey,
    pub pid: u32,
    pub ppid: u32,
    /// Shared with the findings and writer records that name it.
    pub comm: Arc<str>,
    pub exe: Option<std::sync::Arc<str>>,
    /// Command line from its last exec (or from /proc at attach).
    pub argv: std::sync::Arc<[String]>,
    /// Base of relative paths, as the process names it (inside its own
    /// root); None when the trace never told us.
    pub cwd: Option<String>,
    /// Where its paths lie on the host; None: the host's own view.
    pub view: Option<Arc<View>>,
    pub table: TableId,
    /// Threads created without CLONE_FILES get their own table (rare).
    pub thread_tables: FastMap<u32, TableId>,
    pub threads: BTreeSet<u32>,
    /// Lost-event epoch when the record started.
    pub since_epoch: u32,
    pub signals: VecDeque<SignalRec>,
    pub deliveries: VecDeque<DeliveryRec>,
    /// Last write per thread (killed-mid-write), kept for threads still
    /// alive or killed.
    pub last_writes: FastMap<u32, WriteRec>,
    /// Short writes not yet followed by another write on the same fd, per
    /// (tid, fd).
    pub short_writes: FastMap<(u32, i32), WriteRec>,
    pub mappings: VecDeque<Mapping>,
    /// Files this process wrote unsynced data to (index for exit verdicts).
    pub written: BTreeSet<FileId>,
    /// Files it held open for writing when tracing started (attach): their
    /// past is unknown, which a kill must not pass over in silence.
    pub held_at_start: BTreeSet<FileId>,
    /// Event count at its last event, for least-recently-active eviction.
    pub last_active: u64,
}

impl Process {
    /// The copy findings carry.
    pub fn to_ref(&self) -> ProcessRef {
        ProcessRef {
            pid: self.pid,
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            argv: self.argv.clone(),
        }
    }

    /// The fd table thread `tid` uses.
    pub fn table_of(&self, tid: u32) -> TableId {
        self.thread_tables.get(&tid).copied().unwrap_or(self.table)
    }

    /// Every table this process holds (for release at exit).
    pub fn tables(&self) -> impl Iterator<Item = TableId> + '_ {
        std::iter::once(self.table).chain(self.thread_tables.values().copied())
    }

    /// Remembers a signal sent to this process, keeping the last few.
    pub fn push_signal(&mut self, rec: SignalRec) {
        if self.signals.len() == MAX_SIGNALS {
            self.signals.pop_front();
        }
        self.signals.push_back(rec);
    }

    /// Remembers a signal delivery, keeping the last few.
    pub fn push_delivery(&mut self, rec: DeliveryRec) {
        if self.deliveries.len() == MAX_SIGNALS {
            self.deliveries.pop_front();
        }
        self.deliveries.push_back(rec);
    }

    /// Remembers a shared writable mapping, keeping the last few.
    pub fn push_mapping(&mut self, m: Mapping) {
        if self.mappings.len() == MAX_MAPPINGS {
            self.mappings.pop_front();
        }
        self.mappings.push_back(m);
    }

    /// Files mapped in `[addr, addr+len)`.
    pub fn mapped_files(&self, addr: u64, len: u64) -> Vec<FileId> {
        let end = addr.saturating_add(len.max(1));
        let mut files: Vec<FileId> = self
            .mappings
            .iter()
            .filter(|m| m.addr < end && addr < m.addr.saturating_add(m.len))
            .map(|m| m.file)
            .collect();
        files.sort();
        files.dedup();
        files
    }
}

/// The live processes by pid, plus counters for stats.
#[derive(Debug, Default)]
pub struct ProcessTable {
    live: FastMap<u32, Process>,
    next_key: ProcKey,
    /// Process records ever started (for stats).
    pub seen: u64,
}

impl ProcessTable {
    /// Starts a fresh record for `pid` (replacing any stale one, which the
    /// caller gets back to release its tables).
    pub fn start(
        &mut self,
        pid: u32,
        comm: &str,
        table: TableId,
        since_epoch: u32,
    ) -> Option<Process> {
        self.next_key += 1;
        self.seen += 1;
        let p = Process {
            key: self.next_key,
            pid,
            ppid: 0,
            comm: comm.into(),
            exe: None,
            argv: Default::default(),
            cwd: None,
            view: None,
            table,
            thread_tables: FastMap::default(),
            threads: BTreeSet::from([pid]),
            since_epoch,
            signals: VecDeque::new(),
            deliveries: VecDeque::new(),
            last_writes: FastMap::default(),
            short_writes: FastMap::default(),
            mappings: VecDeque::new(),
            written: BTreeSet::new(),
            held_at_start: BTreeSet::new(),
            last_active: 0,
        };
        self.live.insert(pid, p)
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.live.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Process> {
        self.live.get_mut(&pid)
    }

    /// The process ended (group exit): its record leaves the table.
    pub fn remove(&mut self, pid: u32) -> Option<Process> {
        self.live.remove(&pid)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Removes the least recently active records until `keep` remain and
    /// returns them (the caller releases their tables). A record whose
    /// process still runs is only idle, so this happens only past a limit
    /// far above what a machine runs at once.
    pub fn evict_lru(&mut self, keep: usize) -> Vec<Process> {
        if self.live.len() <= keep {
            return Vec::new();
        }
        let mut order: Vec<(u64, u32)> =
            self.live.values().map(|p| (p.last_active, p.pid)).collect();
        order.sort_unstable();
        let n = self.live.len() - keep;
        order
            .into_iter()
            .take(n)
            .filter_map(|(_, pid)| self.live.remove(&pid))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Process> {
        self.live.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Process> {
        self.live.values_mut()
    }

    /// Live pids, sorted (for tests that check who is still alive).
    #[cfg(test)]
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.live.keys().copied().collect();
        pids.sort_unstable();
        pids
    }

    /// Whether the record `key` is still alive.
    pub fn is_live(&self, key: ProcKey) -> bool {
        self.live.values().any(|p| p.key == key)
    }
}
