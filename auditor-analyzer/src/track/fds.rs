//! File descriptor tables and open file descriptions, shared the way the
//! kernel shares them: threads and CLONE_FILES children share a table, forks
//! copy it, dup'ed fds share a description (flags and position).
//!
//! Tables and descriptions live in one arena addressed by ids (with explicit
//! reference counts) so the analyzer stays `Send` and memory is released
//! when the last user goes.

use std::collections::BTreeMap;

use crate::event::FileId;
use crate::fast_hash::FastMap;

/// Open flag bits, and what they mean for durability.
pub mod flags {
    pub use auditor_common::linux::open::*;

    /// Writes through a description with these flags are durable on return.
    pub fn is_sync(f: u32) -> bool {
        f & O_DSYNC != 0
    }

    /// Whether the description may write (O_WRONLY or O_RDWR).
    pub fn writable(f: u32) -> bool {
        f & O_ACCMODE != 0
    }
}

pub type TableId = u64;
type DescId = u64;

/// An open file description: what `open` returned, shared by dups and forks.
#[derive(Clone, Debug, Default)]
pub struct Description {
    pub file: Option<FileId>,
    pub path: Option<String>,
    pub flags: u32,
    /// File position for plain writes; None when unknown (fd open before
    /// tracing, or adopted from kernel identity).
    pub pos: Option<u64>,
    /// Opened by the caller of a launched command, not by a traced process
    /// (see `EventKind::FdAtStart`).
    pub from_caller: bool,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    desc: DescId,
    cloexec: bool,
}

#[derive(Debug)]
struct Table {
    fds: BTreeMap<i32, Slot>,
    users: u32,
}

#[derive(Debug)]
struct SharedDesc {
    desc: Description,
    refs: u32,
}

/// All fd tables and descriptions of the traced processes.
#[derive(Debug, Default)]
pub struct FdSpace {
    tables: FastMap<TableId, Table>,
    descs: FastMap<DescId, SharedDesc>,
    next_id: u64,
}

impl FdSpace {
    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// An empty table with one user.
    pub fn new_table(&mut self) -> TableId {
        let id = self.fresh_id();
        self.tables.insert(
            id,
            Table {
                fds: BTreeMap::new(),
                users: 1,
            },
        );
        id
    }

    /// One more user of `table` (a thread, a CLONE_FILES child).
    pub fn share(&mut self, table: TableId) -> TableId {
        if let Some(t) = self.tables.get_mut(&table) {
            t.users += 1;
        }
        table
    }

    /// A private copy (fork, or exec unsharing); `drop_cloexec` leaves out
    /// close-on-exec fds as exec does.
    pub fn copy(&mut self, table: TableId, drop_cloexec: bool) -> TableId {
        let fds: BTreeMap<i32, Slot> = self
            .tables
            .get(&table)
            .map(|t| {
                t.fds
                    .iter()
                    .filter(|(_, s)| !(drop_cloexec && s.cloexec))
                    .map(|(&fd, &s)| (fd, s))
                    .collect()
            })
            .unwrap_or_default();
        for slot in fds.values() {
            if let Some(d) = self.descs.get_mut(&slot.desc) {
                d.refs += 1;
            }
        }
        let id = self.fresh_id();
        self.tables.insert(id, Table { fds, users: 1 });
        id
    }

    /// A user of `table` is gone; the last one closes every fd.
    pub fn release(&mut self, table: TableId) {
        let Some(t) = self.tables.get_mut(&table) else {
            return;
        };
        t.users = t.users.saturating_sub(1);
        if t.users == 0
            && let Some(t) = self.tables.remove(&table)
        {
            for slot in t.fds.values() {
                self.unref(slot.desc);
            }
        }
    }

    fn unref(&mut self, desc: DescId) {
        if let Some(d) = self.descs.get_mut(&desc) {
            d.refs = d.refs.saturating_sub(1);
            if d.refs == 0 {
                self.descs.remove(&desc);
            }
        }
    }

    /// Installs a new description at `fd`, closing what was there.
    pub fn install(&mut self, table: TableId, fd: i32, desc: Description, cloexec: bool) {
        if !self.tables.contains_key(&table) {
            return;
        }
        let id = self.fresh_id();
        self.descs.insert(id, SharedDesc { desc, refs: 1 });
        self.put(table, fd, Slot { desc: id, cloexec });
    }

    fn put(&mut self, table: TableId, fd: i32, slot: Slot) {
        let old = self
            .tables
            .get_mut(&table)
            .and_then(|t| t.fds.insert(fd, slot));
        if let Some(old) = old {
            self.unref(old.desc);
        }
    }

    /// Closes `fd`; false when it was not known.
    pub fn close(&mut self, table: TableId, fd: i32) -> bool {
        match self.tables.get_mut(&table).and_then(|t| t.fds.remove(&fd)) {
            Some(slot) => {
                self.unref(slot.desc);
                true
            }
            None => false,
        }
    }

    /// Makes `new` share `old`'s description (closing what `new` held).
    /// False when `old` is unknown (then `new` is just closed).
    pub fn dup(&mut self, table: TableId, old: i32, new: i32, cloexec: bool) -> bool {
        let Some(slot) = self
            .tables
            .get(&table)
            .and_then(|t| t.fds.get(&old))
            .copied()
        else {
            self.close(table, new);
            return false;
        };
        if old == new {
            return true;
        }
        if let Some(d) = self.descs.get_mut(&slot.desc) {
            d.refs += 1;
        }
        self.put(
            table,
            new,
            Slot {
                desc: slot.desc,
                cloexec,
            },
        );
        true
    }

    /// Sets or clears close-on-exec on `fd`.
    pub fn set_cloexec(&mut self, table: TableId, fd: i32, cloexec: bool) {
        if let Some(slot) = self.tables.get_mut(&table).and_then(|t| t.fds.get_mut(&fd)) {
            slot.cloexec = cloexec;
        }
    }

    /// close_range: closes `first..=last`, or only marks them close-on-exec.
    pub fn close_range(&mut self, table: TableId, first: u32, last: u32, cloexec_only: bool) {
        let lo = first.min(i32::MAX as u32) as i32;
        let hi = last.min(i32::MAX as u32) as i32;
        let Some(t) = self.tables.get_mut(&table) else {
            return;
        };
        if cloexec_only {
            t.fds.range_mut(lo..=hi).for_each(|(_, s)| s.cloexec = true);
            return;
        }
        let doomed: Vec<i32> = t.fds.range(lo..=hi).map(|(&fd, _)| fd).collect();
        for fd in doomed {
            self.close(table, fd);
        }
    }

    /// Renames the recorded paths of open descriptions: `to` gives a path's
    /// new name, or None when it did not move.
    pub fn rename_paths(&mut self, to: impl Fn(&str) -> Option<String>) {
        for d in self.descs.values_mut() {
            if let Some(new) = d.desc.path.as_deref().and_then(&to) {
                d.desc.path = Some(new);
            }
        }
    }

    /// The description behind `fd`.
    pub fn get(&self, table: TableId, fd: i32) -> Option<&Description> {
        let slot = self.tables.get(&table)?.fds.get(&fd)?;
        self.descs.get(&slot.desc).map(|d| &d.desc)
    }

    /// The description behind `fd`, to update position or flags.
    pub fn get_mut(&mut self, table: TableId, fd: i32) -> Option<&mut Description> {
        let slot = self.tables.get(&table)?.fds.get(&fd)?;
        self.descs.get_mut(&slot.desc).map(|d| &mut d.desc)
    }

    /// Whether `fd` is close-on-exec.
    #[cfg(test)]
    pub fn cloexec(&self, table: TableId, fd: i32) -> Option<bool> {
        self.tables.get(&table)?.fds.get(&fd).map(|s| s.cloexec)
    }

    /// Open fds in `table` (shown by live views).
    pub fn fd_count(&self, table: TableId) -> usize {
        self.tables.get(&table).map_or(0, |t| t.fds.len())
    }

    /// Whether any fd of `table` refers to `file`.
    pub fn holds(&self, table: TableId, file: FileId) -> bool {
        self.tables.get(&table).is_some_and(|t| {
            t.fds.values().any(|s| {
                self.descs
                    .get(&s.desc)
                    .is_some_and(|d| d.desc.file == Some(file))
            })
        })
    }

    /// Every file some fd refers to (for eviction of idle inode state).
    pub fn open_files(&self) -> impl Iterator<Item = FileId> + '_ {
        self.descs.values().filter_map(|d| d.desc.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(ino: u64) -> Description {
        Description {
            file: Some(FileId { dev: 1, ino }),
            ..Description::default()
        }
    }

    #[test]
    fn dup_shares_the_description() {
        let mut s = FdSpace::default();
        let t = s.new_table();
        s.install(t, 3, desc(10), false);
        assert!(s.dup(t, 3, 4, false));
        s.get_mut(t, 3).unwrap().pos = Some(42);
        assert_eq!(s.get(t, 4).unwrap().pos, Some(42));
        s.close(t, 3);
        assert_eq!(s.get(t, 4).unwrap().file.unwrap().ino, 10);
    }

    #[test]
    fn fork_copies_exec_drops_cloexec_and_release_frees() {
        let mut s = FdSpace::default();
        let t = s.new_table();
        s.install(t, 3, desc(10), true);
        s.install(t, 4, desc(11), false);
        let child = s.copy(t, false);
        s.close(child, 4);
        assert!(s.get(t, 4).is_some(), "parent keeps its fd");
        let after_exec = s.copy(t, true);
        assert!(s.get(after_exec, 3).is_none());
        assert!(s.get(after_exec, 4).is_some());
        s.release(t);
        s.release(child);
        s.release(after_exec);
        assert!(s.descs.is_empty() && s.tables.is_empty());
    }

    #[test]
    fn close_range_closes_or_marks() {
        let mut s = FdSpace::default();
        let t = s.new_table();
        for fd in 3..8 {
            s.install(t, fd, desc(fd as u64), false);
        }
        s.close_range(t, 3, 4, true);
        assert_eq!(s.cloexec(t, 3), Some(true));
        s.close_range(t, 5, u32::MAX, false);
        assert!(s.get(t, 5).is_none() && s.get(t, 7).is_none() && s.get(t, 4).is_some());
    }
}
