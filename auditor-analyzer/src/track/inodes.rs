//! Per-inode durability state: unsynced bytes and ranges, who wrote them,
//! the names it has, the last fsync. Rules keep what only they need.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use crate::calls::Call;
use crate::event::{FileId, FileInfo, FileType, is_volatile_fs};
use crate::fast_hash::{FastMap, FastSet};
use crate::finding::{CallRef, ProcessRef};

use super::processes::ProcKey;

/// Recent relevant calls kept per inode (plus the first unsynced write).
const HISTORY: usize = 12;
/// Names remembered per inode.
const NAMES: usize = 8;
/// Distinct unsynced ranges kept before the closest ones are merged.
const RANGES: usize = 32;
/// Distinct writers remembered per inode.
const WRITERS: usize = 8;
/// Marks of evicted pending states kept per state kept: a mark is a few
/// dozen bytes against a state's kilobyte or so, and a mark that is
/// forgotten leaves the inode's past as unknown as a file open before an
/// attach (only what is seen later is judged).
const MARKS_PER_STATE: usize = 4;

/// A task that wrote to an inode.
#[derive(Clone, Debug, PartialEq)]
pub struct Writer {
    pub key: ProcKey,
    pub tid: u32,
    pub process: ProcessRef,
}

/// Sorted, merged byte ranges `[start, end)`, bounded in count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Adds `[start, end)`, merging overlaps; past the bound, the two
    /// closest ranges are merged (approximate, never loses bytes).
    pub fn add(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        // Appends and sequential writes land at or past the last range:
        // extend or add it in place, as the general merge below would.
        if let Some(last) = self.0.last_mut()
            && start >= last.0
        {
            if start <= last.1 {
                last.1 = last.1.max(end);
                return;
            }
            if self.0.len() < RANGES {
                self.0.push((start, end));
                return;
            }
        }
        self.0.push((start, end));
        self.0.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.0.len());
        for &(s, e) in &self.0 {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        while merged.len() > RANGES {
            let i = (0..merged.len() - 1)
                .min_by_key(|&i| merged[i + 1].0 - merged[i].1)
                .unwrap_or(0);
            merged[i].1 = merged[i + 1].1;
            merged.remove(i + 1);
        }
        self.0 = merged;
    }

    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.0
    }
}

/// The names an inode has now, in order: almost always one, so a sorted
/// vector (a B-tree set allocates a node of eleven for it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NameSet(Vec<String>);

impl NameSet {
    pub fn insert(&mut self, name: String) -> bool {
        match self.0.binary_search(&name) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, name);
                true
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> bool {
        match self.0.binary_search_by(|n| n.as_str().cmp(name)) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }
}

/// Data written and not yet durable.
#[derive(Clone, Debug)]
pub struct Dirty {
    /// Bytes written since the inode was last durable.
    pub bytes: u64,
    pub writes: u64,
    pub ranges: Ranges,
    pub first_write: Call,
    pub last_write_ns: u64,
    pub writers: Vec<Writer>,
    /// Lost-event epoch when the data became dirty.
    pub since_epoch: u32,
    /// sync_file_range was the only "sync" since the data became dirty.
    pub sync_file_range: Option<Box<Call>>,
    /// When each writing process (by record) last wrote (bounded like
    /// `writers`).
    pub last_write_by: Vec<(ProcKey, u64)>,
}

impl Dirty {
    /// Whether the record `key` wrote some of this data.
    pub fn written_by(&self, key: ProcKey) -> bool {
        self.writers.iter().any(|w| w.key == key)
    }

    /// When process `key` last wrote some of this data.
    pub fn last_write_of(&self, key: ProcKey) -> Option<u64> {
        self.last_write_by
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, ns)| *ns)
    }
}

/// Everything known about one inode.
#[derive(Clone, Debug)]
pub struct InodeState {
    pub id: FileId,
    pub file_type: FileType,
    /// Shared by every file on that filesystem (see [`Inodes`]).
    pub fs: Arc<str>,
    /// Names it had, oldest first (bounded).
    pub names: VecDeque<String>,
    /// Names it has now, as far as the trace showed.
    pub current_names: NameSet,
    /// Size as last seen (event `size` or our writes); None when unknown.
    pub size: Option<i64>,
    pub created_in_trace: bool,
    /// Its last known name was removed: its data no longer matters.
    pub unlinked: bool,
    /// Boxed, like the last fsync: a table of 50,000 files holds most of
    /// them clean or synced, and each slot pays for what is inline.
    pub dirty: Option<Box<Dirty>>,
    pub last_sync: Option<Box<Call>>,
    /// Times the data was made durable (shown by live views).
    pub syncs: u64,
    /// Shared with the drafts of findings made from it (copied only when
    /// the file sees another call after one): a process that exits with
    /// 50,000 files dirty must not hold every file's calls twice.
    pub history: Arc<VecDeque<Call>>,
    /// The trace saw it changed or opened to be: written, truncated,
    /// created, renamed, opened for writing (live views leave out files
    /// that were only read).
    pub changed: bool,
    /// Tick of the last access (the table's use clock), for LRU eviction.
    pub last_use: u64,
    /// An earlier state of this inode was evicted while it still carried
    /// unsynced data or a pending verdict: what happened before is unknown,
    /// so no verdict on this state is certain.
    pub evicted: bool,
    /// It was open for writing before tracing started and no fsync has been
    /// seen since: it may hold data written before the trace, which the
    /// trace cannot know about (cleared by the first fsync).
    pub unknown_past: bool,
}

impl InodeState {
    fn new(info: &FileInfo, fs: Arc<str>) -> InodeState {
        InodeState {
            id: info.id,
            file_type: info.file_type,
            fs,
            names: VecDeque::new(),
            current_names: NameSet::default(),
            size: None,
            created_in_trace: false,
            unlinked: false,
            dirty: None,
            last_sync: None,
            syncs: 0,
            history: Arc::default(),
            changed: false,
            last_use: 0,
            evicted: false,
            unknown_past: false,
        }
    }

    /// Whether the analyzer judges this file: regular files and
    /// directories on persistent filesystems.
    pub fn judged(&self) -> bool {
        judged(self.file_type, &self.fs).is_ok()
    }

    /// What the trace knows of the file, as a call would report it: no
    /// open flags, and not created by the call that names it now.
    pub fn info(&self) -> FileInfo {
        FileInfo {
            id: self.id,
            file_type: self.file_type,
            fs: self.fs.to_string(),
            size: self.size.unwrap_or(0),
            flags: 0,
            created: false,
        }
    }

    /// The name people know it by now.
    pub fn path(&self) -> String {
        self.names
            .back()
            .cloned()
            .unwrap_or_else(|| format!("<inode {}:{}>", self.id.dev, self.id.ino))
    }

    /// Records a (new) name.
    pub fn add_name(&mut self, path: &str) {
        self.unlinked = false;
        self.current_names.insert(path.to_string());
        if self.names.back().map(String::as_str) != Some(path) {
            self.names.retain(|n| n != path);
            if self.names.len() == NAMES {
                self.names.pop_front();
            }
            self.names.push_back(path.to_string());
        }
    }

    /// `path` no longer names this inode; when it was the last known name
    /// the file is gone and nothing about its data can be lost any more.
    /// Returns whether it was the last.
    pub fn remove_name(&mut self, path: &str) -> bool {
        if self.current_names.remove(path) && self.current_names.is_empty() {
            self.unlinked = true;
            self.dirty = None;
            return true;
        }
        false
    }

    /// Remembers a relevant call (bounded ring).
    pub fn remember(&mut self, call: Call) {
        let history = Arc::make_mut(&mut self.history);
        if history.len() == HISTORY {
            history.pop_front();
        }
        // Most files see one or two calls: room for one at first, not the
        // four a first push reserves (this state exists for every file).
        history.reserve_exact(1);
        history.push_back(call);
    }

    /// The evidence chain: first unsynced write, then recent calls.
    pub fn calls(&self) -> Vec<CallRef> {
        let mut calls: Vec<CallRef> = self.dirty.iter().map(|d| d.first_write.to_ref()).collect();
        calls.extend(self.history.iter().map(Call::to_ref));
        calls
    }

    /// Adds written bytes that are not durable yet.
    pub fn add_dirty(
        &mut self,
        bytes: u64,
        offset: u64,
        call: impl Into<Call>,
        writer: Writer,
        epoch: u32,
    ) {
        let (key, tid) = (writer.key, writer.tid);
        self.add_dirty_by(bytes, offset, &call.into(), key, tid, || writer, epoch);
    }

    /// [`InodeState::add_dirty`] for the per-write path: the writer record
    /// (which copies the process's names) is only built when it is new.
    #[allow(clippy::too_many_arguments)]
    pub fn add_dirty_by(
        &mut self,
        bytes: u64,
        offset: u64,
        call: &Call,
        key: ProcKey,
        tid: u32,
        writer: impl FnOnce() -> Writer,
        epoch: u32,
    ) {
        let dirty = self.dirty.get_or_insert_with(|| {
            Box::new(Dirty {
                bytes: 0,
                writes: 0,
                ranges: Ranges::default(),
                first_write: call.clone(),
                last_write_ns: call.ts_ns,
                writers: Vec::new(),
                since_epoch: epoch,
                sync_file_range: None,
                last_write_by: Vec::new(),
            })
        });
        dirty.bytes += bytes;
        dirty.writes += call.calls() as u64;
        dirty.ranges.add(offset, offset.saturating_add(bytes));
        dirty.last_write_ns = call.ts_ns;
        if !dirty.writers.iter().any(|w| w.key == key && w.tid == tid)
            && dirty.writers.len() < WRITERS
        {
            // Most files have one writer: room for one at first.
            dirty.writers.reserve_exact(1);
            dirty.writers.push(writer());
        }
        if let Some(last) = dirty.last_write_by.iter_mut().find(|(k, _)| *k == key) {
            last.1 = call.ts_ns;
        } else if dirty.last_write_by.len() < WRITERS {
            dirty.last_write_by.push((key, call.ts_ns));
        }
    }

    /// The data is durable now.
    pub fn make_durable(&mut self, call: &Call) {
        self.dirty = None;
        self.unknown_past = false;
        self.last_sync = Some(Box::new(call.clone()));
        self.syncs += 1;
    }

    /// Whether nothing this state holds could still lead to a finding (the
    /// analyzer also asks its rules and exposures before evicting it).
    pub fn idle(&self) -> bool {
        self.dirty.is_none() && !self.unknown_past
    }
}

/// Why a file is not judged, or Ok when it is.
pub fn judged(file_type: FileType, fs: &str) -> Result<(), String> {
    match file_type {
        FileType::Regular | FileType::Directory if is_volatile_fs(fs) => {
            Err(format!("volatile filesystem ({fs})"))
        }
        FileType::Regular | FileType::Directory => Ok(()),
        FileType::Fifo => Err("pipe".into()),
        FileType::Socket => Err("socket".into()),
        FileType::CharDevice => Err("character device".into()),
        FileType::BlockDevice => Err("block device".into()),
        FileType::Symlink => Err("symlink".into()),
        FileType::Unknown => Err("unknown file type".into()),
    }
}

/// What one eviction pass dropped.
#[derive(Debug, Default, PartialEq)]
pub struct Evicted {
    /// States dropped.
    pub total: usize,
    /// Of which still carried unsynced data or a pending verdict.
    pub pending: usize,
}

/// All inodes seen, by identity.
#[derive(Debug, Default)]
pub struct Inodes {
    /// Boxed: a state is about a kilobyte, and the table keeps spare
    /// buckets (and, while it grows, two tables at once); inline states
    /// would make those spares cost a kilobyte each.
    map: FastMap<FileId, Box<InodeState>>,
    /// Use clock: every access through `observe` or `get_mut` takes a tick.
    clock: u64,
    /// Inodes whose state was evicted while pending, until they are seen
    /// again (a new state then starts `evicted`) or created afresh.
    marked: FastSet<FileId>,
    /// `marked` in eviction order, so the marks stay bounded too.
    marked_order: VecDeque<FileId>,
    /// The filesystem names seen, each kept once.
    fs_names: Vec<Arc<str>>,
}

impl Inodes {
    /// The state of `info.id`, created on first sight; kernel facts (type,
    /// fs, size) refresh it. Returns whether it is new.
    pub fn observe(&mut self, info: &FileInfo) -> (&mut InodeState, bool) {
        let fs = match self.fs_names.iter().find(|f| ***f == *info.fs) {
            Some(f) => f.clone(),
            None => {
                let f: Arc<str> = info.fs.as_str().into();
                self.fs_names.push(f.clone());
                f
            }
        };
        let fresh = |marked: &mut FastSet<FileId>| {
            let mut st = Box::new(InodeState::new(info, fs.clone()));
            st.evicted = marked.remove(&info.id);
            st
        };
        let mut new = true;
        let st = match self.map.entry(info.id) {
            Entry::Vacant(v) => v.insert(fresh(&mut self.marked)),
            Entry::Occupied(o) => {
                let st = o.into_mut();
                // A live inode never changes type: another type under the
                // same number means the number was freed and reused (a file
                // unlinked, then a directory made), so what was known
                // belongs to the old one.
                if st.file_type != info.file_type
                    && st.file_type != FileType::Unknown
                    && info.file_type != FileType::Unknown
                {
                    *st = fresh(&mut self.marked);
                } else {
                    new = false;
                }
                st
            }
        };
        self.clock += 1;
        st.last_use = self.clock;
        if st.file_type == FileType::Unknown {
            st.file_type = info.file_type;
        }
        if st.fs.is_empty() {
            st.fs = fs;
        }
        (st, new)
    }

    pub fn get(&self, id: &FileId) -> Option<&InodeState> {
        self.map.get(id).map(|s| &**s)
    }

    /// Drops what is known about `id`. A create (the kernel's
    /// FMODE_CREATED) always yields a brand-new inode, so a state kept under
    /// the same identity belongs to an earlier file whose inode number the
    /// filesystem freed and reused (git's COMMIT_EDITMSG gets the number of
    /// the index it just replaced): its fsyncs, names and dirt must not
    /// carry over to the new file.
    pub fn forget(&mut self, id: &FileId) {
        self.map.remove(id);
        self.marked.remove(id);
    }

    pub fn get_mut(&mut self, id: &FileId) -> Option<&mut InodeState> {
        let st = self.map.get_mut(id)?;
        self.clock += 1;
        st.last_use = self.clock;
        Some(st)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn values(&self) -> impl Iterator<Item = &InodeState> {
        self.map.values().map(|s| &**s)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut InodeState> {
        self.map.values_mut().map(|s| &mut **s)
    }

    /// Ids sorted, so findings raised in bulk come out in a stable order.
    pub fn ids_where(&self, pred: impl Fn(&InodeState) -> bool) -> Vec<FileId> {
        let mut ids: Vec<FileId> = self
            .map
            .values()
            .filter(|s| pred(s))
            .map(|s| s.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Those of `ids` (an index kept elsewhere) that still match `pred`,
    /// sorted; avoids scanning every inode at each process exit.
    pub fn select(
        &self,
        ids: &BTreeSet<FileId>,
        pred: impl Fn(&InodeState) -> bool,
    ) -> Vec<FileId> {
        ids.iter()
            .filter(|id| self.map.get(id).is_some_and(|s| pred(s)))
            .copied()
            .collect()
    }

    /// Drops idle inodes no fd refers to (nothing rests on them), then,
    /// while more than `keep` remain, the least recently used whatever they
    /// hold (the state just created for the call being handled is the most
    /// recent, so it stays). A pending state that goes leaves a mark, so
    /// the inode's next state starts `evicted`; at most
    /// [`MARKS_PER_STATE`] x `keep` marks are kept, the oldest forgotten
    /// first.
    pub fn evict(
        &mut self,
        open: &BTreeSet<FileId>,
        keep: usize,
        busy: impl Fn(&FileId) -> bool,
    ) -> Evicted {
        let before = self.map.len();
        self.map
            .retain(|id, st| !st.idle() || open.contains(id) || busy(id));
        let mut out = Evicted {
            total: before - self.map.len(),
            pending: 0,
        };
        if self.map.len() > keep {
            let mut order: Vec<(u64, FileId)> =
                self.map.values().map(|s| (s.last_use, s.id)).collect();
            order.sort_unstable();
            for (_, id) in order.into_iter().take(before - out.total - keep) {
                let Some(st) = self.map.remove(&id) else {
                    continue;
                };
                out.total += 1;
                if !st.idle() || busy(&id) {
                    out.pending += 1;
                    self.mark(id, keep);
                }
            }
        }
        out
    }

    /// Remembers that `id` lost a pending state (bounded by `keep`).
    fn mark(&mut self, id: FileId, keep: usize) {
        if self.marked.insert(id) {
            self.marked_order.push_back(id);
        }
        while self.marked_order.len() > keep.max(1).saturating_mul(MARKS_PER_STATE) {
            if let Some(old) = self.marked_order.pop_front() {
                self.marked.remove(&old);
            }
        }
    }

    /// Marks the state of `id` as resting on unknown history (its writer's
    /// record was evicted).
    pub fn taint(&mut self, id: &FileId) {
        if let Some(st) = self.map.get_mut(id) {
            st.evicted = true;
        }
    }

    pub fn contains(&self, id: &FileId) -> bool {
        self.map.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_stay_bounded() {
        let mut r = Ranges::default();
        r.add(0, 10);
        r.add(5, 20);
        r.add(30, 40);
        assert_eq!(r.as_slice(), &[(0, 20), (30, 40)]);
        for i in 0..100u64 {
            r.add(1000 + i * 10, 1000 + i * 10 + 5);
        }
        assert!(r.as_slice().len() <= RANGES);
        assert_eq!(r.as_slice()[0], (0, 20));
        assert_eq!(r.as_slice().last().unwrap().1, 1000 + 99 * 10 + 5);
    }
}

#[cfg(test)]
mod eviction_tests {
    use super::*;
    use crate::test_support::reg;

    /// States for inodes 1 to `last`, clean and closed.
    fn observed(last: u64) -> Inodes {
        let mut inodes = Inodes::default();
        for ino in 1..=last {
            inodes.observe(&reg(ino));
        }
        inodes
    }

    /// The inode numbers still held, in order.
    fn kept(inodes: &Inodes) -> Vec<u64> {
        inodes.ids_where(|_| true).iter().map(|i| i.ino).collect()
    }

    #[test]
    fn only_idle_closed_inodes_are_evicted() {
        let mut inodes = observed(3);
        dirty(&mut inodes, 1);
        let open = BTreeSet::from([reg(2).id]);
        assert_eq!(inodes.evict(&open, usize::MAX, |_| false).total, 1);
        assert!(inodes.contains(&reg(1).id), "dirty state stays");
        assert!(inodes.contains(&reg(2).id), "open files stay");
        assert!(!inodes.contains(&reg(3).id));
    }

    fn dirty(inodes: &mut Inodes, ino: u64) {
        let call = CallRef {
            seq: ino,
            ts_ns: ino,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            call: "write".into(),
            stack: None,
        };
        let writer = Writer {
            key: 1,
            tid: 1,
            process: ProcessRef {
                pid: 1,
                comm: "t".into(),
                exe: None,
                argv: Default::default(),
            },
        };
        inodes
            .get_mut(&reg(ino).id)
            .unwrap()
            .add_dirty(1, 0, &call, writer, 0);
    }

    #[test]
    fn past_the_cap_the_least_recently_used_go_first_even_dirty() {
        let mut inodes = observed(5);
        for ino in 1..=5 {
            dirty(&mut inodes, ino);
        }
        for ino in [3, 1, 5, 2, 4] {
            inodes.get_mut(&reg(ino).id);
        }
        let out = inodes.evict(&BTreeSet::new(), 2, |_| false);
        assert_eq!(
            out,
            Evicted {
                total: 3,
                pending: 3
            }
        );
        assert_eq!(kept(&inodes), vec![2, 4], "the two used last stay");
        // An evicted pending inode comes back marked; a fresh one does not.
        assert!(inodes.observe(&reg(5)).0.evicted);
        assert!(!inodes.observe(&reg(9)).0.evicted);
        // A create forgets the mark: the new file owes nothing to the old.
        inodes.forget(&reg(1).id);
        assert!(!inodes.observe(&reg(1)).0.evicted);
    }

    #[test]
    fn idle_closed_states_go_first_then_open_and_dirty_ones_by_age() {
        let mut inodes = observed(5);
        dirty(&mut inodes, 1);
        dirty(&mut inodes, 2);
        let open = BTreeSet::from([reg(3).id, reg(4).id]);
        inodes.get_mut(&reg(5).id);
        inodes.get_mut(&reg(3).id);
        inodes.get_mut(&reg(2).id);
        // 5 is idle and closed: it goes although recent. Then by age: 1
        // (dirty) and 4 (open, idle) are the oldest.
        let out = inodes.evict(&open, 2, |_| false);
        assert_eq!(
            out,
            Evicted {
                total: 3,
                pending: 1
            }
        );
        assert_eq!(kept(&inodes), vec![2, 3]);
    }

    #[test]
    fn marks_of_evicted_states_stay_bounded() {
        let mut inodes = Inodes::default();
        for ino in 1..=100 {
            inodes.observe(&reg(ino));
            dirty(&mut inodes, ino);
            inodes.evict(&BTreeSet::new(), 3, |_| false);
        }
        assert!(inodes.len() <= 3);
        let bound = 3 * MARKS_PER_STATE;
        assert_eq!(inodes.marked_order.len(), bound);
        assert_eq!(inodes.marked.len(), bound);
        assert!(inodes.observe(&reg(97)).0.evicted, "recent marks stay");
        assert!(!inodes.observe(&reg(2)).0.evicted, "old marks went");
    }
}
