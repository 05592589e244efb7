//! Handlers for calls on file contents and fds: open, write, truncate,
//! sync, close, dup, fcntl, mmap, and fds open before tracing.

use auditor_common::linux::fcntl::{F_SETFD, F_SETFL, FD_CLOEXEC};
use auditor_common::linux::misc::{CLOSE_RANGE_CLOEXEC, MS_SYNC};

use crate::calls::Call;
use crate::event::{Event, EventKind, FileId, FileInfo, FileType, Syscall};
use crate::rules::{fsync_error_ignored, truncate_in_place};
use crate::track::fds::{Description, flags};
use crate::track::inodes::{Truncation, Writer, judged};
use crate::track::processes::{Mapping, ProcessTable, WriteRec};

use super::Analyzer;

/// Appends remembered per inode for the interleaving evidence.
const APPEND_CALLS: usize = 6;

/// The file an fd call acts on.
pub(super) struct Target {
    pub id: FileId,
    pub path: String,
    pub flags: u32,
    pub pos: Option<u64>,
    /// The file is judged, and not reached through a description the
    /// command's caller opened (whose output is the caller's to keep).
    pub judged: bool,
    /// Reached through a description the command's caller opened.
    pub from_caller: bool,
}

impl Analyzer {
    /// Finds the file behind `fd` for the event's thread. When the table
    /// does not know the fd but the kernel gave the file, that identity is
    /// adopted (it is authoritative); with neither, the fd is unknown.
    pub(super) fn target(
        &mut self,
        ev: &Event,
        fd: i32,
        file: Option<&FileInfo>,
    ) -> Option<Target> {
        let table = self.table_of(ev)?;
        let desc = self.fds.get(table, fd).cloned();
        let from_caller = desc.as_ref().is_some_and(|d| d.from_caller);
        if let Some(info) = file {
            self.observe(info, None);
        }
        let (id, path, fl, pos) = match (desc, file) {
            (Some(d), Some(info)) => {
                if d.file != Some(info.id)
                    && let Some(slot) = self.fds.get_mut(table, fd)
                {
                    slot.file = Some(info.id);
                }
                (info.id, d.path, info.flags, d.pos)
            }
            (Some(d), None) => {
                let id = d
                    .file
                    .or_else(|| d.path.as_deref().and_then(|p| self.names.get(p)));
                let Some(id) = id else {
                    self.stats.unknown_fds += 1;
                    return None;
                };
                (id, d.path, d.flags, d.pos)
            }
            (None, Some(info)) => {
                self.stats.adopted_fds += 1;
                let path = self
                    .inodes
                    .get(&info.id)
                    .and_then(|s| s.names.back().cloned());
                let desc = Description {
                    file: Some(info.id),
                    path: path.clone(),
                    flags: info.flags,
                    pos: None,
                    from_caller: false,
                };
                self.fds.install(table, fd, desc, false);
                (info.id, path, info.flags, None)
            }
            (None, None) => {
                self.stats.unknown_fds += 1;
                return None;
            }
        };
        let path = path
            .or_else(|| self.inodes.get(&id).map(|s| s.path()))
            .unwrap_or_else(|| format!("<fd {fd}>"));
        Some(Target {
            id,
            path,
            flags: fl,
            pos,
            judged: !from_caller && self.is_judged(&id),
            from_caller,
        })
    }

    pub(super) fn on_open(&mut self, ev: &Event) {
        let EventKind::Open {
            path,
            flags: open_flags,
            ret,
            file,
            ..
        } = &ev.kind
        else {
            return;
        };
        if *ret < 0 {
            return;
        }
        let Some(table) = self.table_of(ev) else {
            return;
        };
        let fd = *ret as i32;
        let call = self.call_of(ev);
        let (key, process) = self.who(ev);
        let mut id = self.names.get(path);
        let mut desc_flags = *open_flags;
        if let Some(info) = file {
            id = Some(info.id);
            desc_flags = info.flags | (open_flags & flags::O_ACCMODE);
            if info.created {
                self.inodes.forget(&info.id);
            }
            let size_before = self.inodes.get(&info.id).and_then(|s| s.size);
            let judged = self.observe(info, Some(path));
            let truncating = open_flags & flags::O_TRUNC != 0
                && flags::writable(*open_flags)
                && info.file_type == FileType::Regular;
            let epoch = self.epoch;
            if let Some(st) = self.inodes.get_mut(&info.id) {
                st.remember(call.clone());
                if info.created {
                    st.created_in_trace = true;
                }
                if truncating && !info.created && judged && size_before != Some(0) {
                    st.truncation = Some(Truncation {
                        key,
                        size_before,
                        call: call.clone(),
                        since_epoch: epoch,
                    });
                }
                if truncating {
                    st.dirty = None;
                }
                st.size = Some(if truncating || info.created {
                    0
                } else {
                    info.size
                });
            }
            if info.created && judged {
                self.record_name(
                    crate::track::dirs::NameOp::Create,
                    path,
                    None,
                    Some(info),
                    key,
                    process,
                    call,
                );
            }
        }
        let desc = Description {
            file: id,
            path: Some(path.clone()),
            flags: desc_flags,
            pos: Some(0),
            from_caller: false,
        };
        self.fds
            .install(table, fd, desc, open_flags & flags::O_CLOEXEC != 0);
    }

    pub(super) fn on_write(&mut self, ev: &Event) {
        let EventKind::Write {
            fd,
            requested,
            ret,
            offset,
            file,
            enter_ns,
            ..
        } = &ev.kind
        else {
            return;
        };
        let Some(t) = self.target(ev, *fd, file.as_ref()) else {
            return;
        };
        if t.from_caller && *ret > 0 && self.is_judged(&t.id) {
            // Keeping the caller's output (`cmd > out.log`) is the caller's
            // job: no program fsyncs its stdout. Counted, not judged.
            self.stats
                .caller_files
                .add(&mut self.caller_seen, t.id, &t.path, *ret as u64);
        }
        if !t.judged {
            return;
        }
        let call = self.call_of(ev);
        // The process record is copied out only for what keeps it (a new
        // writer, a finding): most writes need just its key.
        let key = self.procs.get(ev.pid).map_or(0, |p| p.key);
        let epoch = self.epoch;
        let append = t.flags & flags::O_APPEND != 0;
        let size_before = file
            .as_ref()
            .map(|f| f.size)
            .or_else(|| self.inodes.get(&t.id).and_then(|s| s.size));
        if let Some(st) = self.inodes.get_mut(&t.id) {
            st.remember(call.clone());
        }
        if *ret < 0 {
            return;
        }
        let rec = WriteRec {
            fd: *fd,
            file: Some(t.id),
            path: t.path,
            requested: *requested,
            ret: *ret,
            enter_ns: *enter_ns,
            call: call.clone(),
        };
        if let Some(p) = self.procs.get_mut(ev.pid) {
            if (*ret as u64) < *requested {
                p.short_writes.insert((ev.tid, *fd), rec.clone());
            } else {
                p.short_writes.remove(&(ev.tid, *fd));
            }
            p.last_writes.insert(ev.tid, rec);
        }
        if *ret == 0 {
            return;
        }
        let bytes = *ret as u64;
        let size_before_u = size_before.map(|s| s.max(0) as u64);
        let off = match offset {
            Some(o) => (*o).max(0) as u64,
            None if append => size_before_u.unwrap_or(0),
            None => t.pos.or(size_before_u).unwrap_or(0),
        };
        let pending = self.inodes.get(&t.id).is_some_and(|st| {
            st.truncation.is_some() || st.failed_sync.as_ref().is_some_and(|f| f.key == key)
        });
        if pending {
            let (_, process) = self.who(ev);
            self.answer_failed_fsync(t.id, key, "write", &call, &process);
            let truncation = self
                .inodes
                .get_mut(&t.id)
                .and_then(|st| st.truncation.take());
            if let Some(tr) = truncation
                && let Some(st) = self.inodes.get(&t.id)
            {
                let f = truncate_in_place::finding(st, &tr, &call, process);
                self.emit(f, tr.since_epoch);
            }
        }
        let at_end = append || size_before_u == Some(off);
        self.track_append(t.id, at_end, &call, ev, key);
        let sync_write = flags::is_sync(t.flags);
        if let Some(st) = self.inodes.get_mut(&t.id) {
            let dirtied = !sync_write && !st.unlinked;
            if dirtied && let Some(p) = self.procs.get_mut(ev.pid) {
                p.written.insert(t.id);
            }
            if dirtied {
                let procs = &self.procs;
                st.add_dirty_by(
                    bytes,
                    off,
                    &call,
                    key,
                    ev.tid,
                    || writer_of(procs, ev, key),
                    epoch,
                );
            }
            st.size = Some(size_before.unwrap_or(0).max((off + bytes) as i64));
        }
        if sync_write {
            let fs = self
                .inodes
                .get(&t.id)
                .map(|s| s.fs.clone())
                .unwrap_or_default();
            self.dirs.data_synced(t.id, &fs, &[]);
        }
        if offset.is_none()
            && let Some(table) = self.table_of(ev)
            && let Some(d) = self.fds.get_mut(table, *fd)
        {
            d.pos = Some(off + bytes);
        }
    }

    /// Follows who appends to an inode, to spot A, B, A interleaving by
    /// writers that hold the file open at the same time.
    fn track_append(&mut self, id: FileId, at_end: bool, call: &Call, ev: &Event, key: u64) {
        let epoch = self.epoch;
        let tid = ev.tid;
        let Some(st) = self.inodes.get_mut(&id) else {
            return;
        };
        let a = &mut st.appends;
        if !at_end {
            a.not_append_only = true;
        }
        if a.not_append_only || a.reported {
            return;
        }
        if a.writers.is_empty() {
            a.since_epoch = epoch;
        }
        if !a.writers.iter().any(|w| w.tid == tid) && a.writers.len() < 8 {
            a.writers.push(writer_of(&self.procs, ev, key));
        }
        if a.recent.len() == APPEND_CALLS {
            a.recent.pop_front();
        }
        a.recent.push_back(call.clone());
        if a.last_tid == Some(tid) {
            return;
        }
        let returning = a.before_last_tid == Some(tid);
        let other = a.last_tid;
        a.before_last_tid = a.last_tid;
        a.last_tid = Some(tid);
        if !returning || a.interleaved.is_some() {
            return;
        }
        let other_key = a
            .writers
            .iter()
            .find(|w| Some(w.tid) == other)
            .map(|w| w.key);
        let pattern: Vec<Call> = a.recent.iter().cloned().collect();
        // Writers that take turns but never hold the file open together
        // (a shell appending around a child) are not concurrent writers.
        let concurrent = other_key.is_some_and(|k| {
            self.procs
                .iter()
                .any(|p| p.key == k && p.tables().any(|t| self.fds.holds(t, id)))
        });
        if concurrent && let Some(st) = self.inodes.get_mut(&id) {
            st.appends.interleaved = Some(pattern);
            self.interleaved_ids.insert(id);
        }
    }

    /// fsync-error-ignored: the process that saw fsync fail on `id` now
    /// goes on (`follow_up`) as if its data were safe.
    pub(super) fn answer_failed_fsync(
        &mut self,
        id: FileId,
        key: u64,
        follow_up: &str,
        call: &Call,
        process: &crate::finding::ProcessRef,
    ) {
        let Some(st) = self.inodes.get_mut(&id) else {
            return;
        };
        let Some(failed) = st.failed_sync.take_if(|f| f.key == key) else {
            return;
        };
        let Some(st) = self.inodes.get(&id) else {
            return;
        };
        let f = fsync_error_ignored::finding(st, &failed, follow_up, call, process.clone());
        self.emit(f, failed.since_epoch);
    }

    pub(super) fn on_truncate(&mut self, ev: &Event) {
        let EventKind::Truncate {
            fd,
            path,
            length,
            ret,
            file,
            ..
        } = &ev.kind
        else {
            return;
        };
        if *ret < 0 {
            return;
        }
        let target = match (fd, path) {
            (Some(fd), _) => self
                .target(ev, *fd, file.as_ref())
                .map(|t| (t.id, t.judged)),
            (None, Some(p)) => {
                if let Some(info) = file {
                    self.observe(info, Some(p));
                }
                let id = file.as_ref().map(|f| f.id).or_else(|| self.names.get(p));
                id.map(|id| (id, self.is_judged(&id)))
            }
            (None, None) => None,
        };
        let Some((id, judged)) = target else { return };
        let (key, _) = self.who(ev);
        let call = self.call_of(ev);
        let epoch = self.epoch;
        let Some(st) = self.inodes.get_mut(&id) else {
            return;
        };
        st.remember(call.clone());
        let size_before = file.as_ref().map(|f| f.size).or(st.size);
        if *length == 0 && judged && size_before.is_some_and(|s| s > 0) {
            st.truncation = Some(Truncation {
                key,
                size_before,
                call,
                since_epoch: epoch,
            });
            st.dirty = None;
        }
        st.size = Some(*length);
    }

    pub(super) fn on_fallocate(&mut self, ev: &Event, fd: i32, file: Option<&FileInfo>) {
        let call = self.call_of(ev);
        if let Some(t) = self.target(ev, fd, file)
            && let Some(st) = self.inodes.get_mut(&t.id)
        {
            st.remember(call);
        }
    }

    pub(super) fn on_sync(&mut self, ev: &Event) {
        let EventKind::Sync {
            call: name,
            fd,
            ret,
            file,
            range,
            ..
        } = &ev.kind
        else {
            return;
        };
        let call = self.call_of(ev);
        match name {
            Syscall::Sync => {
                if *ret >= 0 {
                    self.sync_all(None, &call);
                }
            }
            Syscall::Syncfs => {
                let dev = match fd {
                    Some(fd) => self.target(ev, *fd, file.as_ref()).map(|t| t.id.dev),
                    None => file.as_ref().map(|f| f.id.dev),
                };
                if *ret >= 0
                    && let Some(dev) = dev
                {
                    self.sync_all(Some(dev), &call);
                }
            }
            Syscall::Msync => {
                let Some((addr, len, fl)) = range else { return };
                if *ret < 0 || fl & MS_SYNC == 0 {
                    return;
                }
                let mut ids: Vec<FileId> = file.iter().map(|f| f.id).collect();
                if ids.is_empty() {
                    ids = self
                        .procs
                        .get(ev.pid)
                        .map(|p| p.mapped_files(*addr, *len))
                        .unwrap_or_default();
                }
                for id in ids {
                    self.file_synced(id, &call, None);
                }
            }
            Syscall::SyncFileRange => {
                let Some(fd) = fd else { return };
                let Some(t) = self.target(ev, *fd, file.as_ref()) else {
                    return;
                };
                if let Some(st) = self.inodes.get_mut(&t.id) {
                    st.remember(call.clone());
                    if *ret >= 0
                        && let Some(d) = st.dirty.as_mut()
                    {
                        d.sync_file_range = Some(call);
                    }
                }
            }
            _ => {
                let Some(fd) = fd else { return };
                let Some(t) = self.target(ev, *fd, file.as_ref()) else {
                    return;
                };
                let (key, process) = self.who(ev);
                if let Some(st) = self.inodes.get_mut(&t.id) {
                    st.remember(call.clone());
                }
                let had_failed = self
                    .inodes
                    .get(&t.id)
                    .is_some_and(|s| s.failed_sync.as_ref().is_some_and(|f| f.key == key));
                self.answer_failed_fsync(t.id, key, "fsync retry", &call, &process);
                if *ret >= 0 {
                    self.file_synced(t.id, &call, Some(&t.path));
                } else if !had_failed && let Some(st) = self.inodes.get_mut(&t.id) {
                    st.failed_sync = Some(crate::track::inodes::FailedSync {
                        key,
                        ret: *ret,
                        call,
                        since_epoch: self.epoch,
                    });
                }
            }
        }
    }

    /// `id` is durable now: its data, and for a directory its entries.
    fn file_synced(&mut self, id: FileId, call: &Call, fd_path: Option<&str>) {
        let Some(st) = self.inodes.get_mut(&id) else {
            return;
        };
        st.make_durable(call);
        let mut paths: Vec<String> = st.current_names.iter().cloned().collect();
        paths.extend(fd_path.map(str::to_string));
        let fs = st.fs.clone();
        if st.file_type == FileType::Directory {
            self.dirs.dir_synced(id, &paths);
        }
        self.dirs.data_synced(id, &fs, &paths);
    }

    /// sync() (dev None) or syncfs(dev): everything on it is durable.
    fn sync_all(&mut self, dev: Option<u64>, call: &Call) {
        for st in self.inodes.values_mut() {
            if dev.is_none_or(|d| st.id.dev == d) && st.dirty.is_some() {
                st.make_durable(call);
            }
        }
        self.dirs.synced_fs(dev);
    }

    pub(super) fn on_close(&mut self, ev: &Event, fd: i32, _ret: i64) {
        // close() releases the fd even when it reports an error.
        let Some(table) = self.table_of(ev) else {
            return;
        };
        let id = self.fds.get(table, fd).and_then(|d| d.file);
        self.fds.close(table, fd);
        if let Some(id) = id
            && self.inodes.get(&id).is_some_and(|s| !s.deferred.is_empty())
        {
            self.resolve_deferred(id);
        }
    }

    pub(super) fn on_close_range(&mut self, ev: &Event, first: u32, last: u32, fl: u32, ret: i64) {
        if ret < 0 {
            return;
        }
        if let Some(table) = self.table_of(ev) {
            self.fds
                .close_range(table, first, last, fl & CLOSE_RANGE_CLOEXEC != 0);
        }
    }

    pub(super) fn on_dup(
        &mut self,
        ev: &Event,
        old_fd: i32,
        cloexec: bool,
        ret: i64,
        file: Option<&FileInfo>,
    ) {
        if ret < 0 {
            return;
        }
        let Some(table) = self.table_of(ev) else {
            return;
        };
        if self.fds.get(table, old_fd).is_none() && file.is_some() {
            self.target(ev, old_fd, file);
        }
        if !self.fds.dup(table, old_fd, ret as i32, cloexec) {
            self.stats.unknown_fds += 1;
        }
    }

    pub(super) fn on_fcntl(&mut self, ev: &Event) {
        let EventKind::Fcntl {
            fd, cmd, arg, ret, ..
        } = &ev.kind
        else {
            return;
        };
        if *ret < 0 {
            return;
        }
        let Some(table) = self.table_of(ev) else {
            return;
        };
        // The dups (F_DUPFD, F_DUPFD_CLOEXEC) arrive as `Dup` events.
        match u64::from(*cmd as u32) {
            F_SETFD => self.fds.set_cloexec(table, *fd, arg & FD_CLOEXEC != 0),
            F_SETFL => {
                if let Some(d) = self.fds.get_mut(table, *fd) {
                    d.flags = (d.flags & !flags::SETFL_MASK) | (*arg as u32 & flags::SETFL_MASK);
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_mmap(&mut self, ev: &Event) {
        let EventKind::Mmap {
            fd,
            addr,
            len,
            file,
            ..
        } = &ev.kind
        else {
            return;
        };
        let Some(t) = self.target(ev, *fd, file.as_ref()) else {
            return;
        };
        if let Some(p) = self.procs.get_mut(ev.pid) {
            p.push_mapping(Mapping {
                addr: *addr,
                len: *len,
                file: t.id,
            });
        }
    }

    pub(super) fn on_fd_at_start(&mut self, ev: &Event) {
        let EventKind::FdAtStart {
            fd,
            path,
            file,
            cloexec,
            from_caller,
        } = &ev.kind
        else {
            return;
        };
        let Some(table) = self.table_of(ev) else {
            return;
        };
        let known_path = path.starts_with('/').then_some(path.as_str());
        // The caller's terminal or pipe is of no interest unless written.
        let file = file
            .as_ref()
            .filter(|f| !from_caller || judged(f.file_type, &f.fs).is_ok());
        if let Some(info) = file {
            self.observe(info, known_path);
            if let Some(st) = self.inodes.get_mut(&info.id) {
                st.size = Some(info.size);
            }
        }
        let id = file
            .as_ref()
            .map(|f| f.id)
            .or_else(|| known_path.and_then(|p| self.names.get(p)));
        let flags = file.as_ref().map_or(0, |f| f.flags);
        if flags::writable(flags)
            && !from_caller
            && let Some(id) = id
            && let Some(st) = self.inodes.get_mut(&id)
            && st.judged()
        {
            st.unknown_past = true;
            if let Some(p) = self.procs.get_mut(ev.pid) {
                p.held_at_start.insert(id);
            }
        }
        let desc = Description {
            file: id,
            path: known_path.map(str::to_string),
            flags,
            pos: None,
            from_caller: *from_caller,
        };
        self.fds.install(table, *fd, desc, *cloexec);
    }
}

/// The writer record of the event's task (as [`Analyzer::who`] names it).
fn writer_of(procs: &ProcessTable, ev: &Event, key: u64) -> Writer {
    let process = match procs.get(ev.pid) {
        Some(p) => p.to_ref(),
        None => crate::finding::ProcessRef {
            pid: ev.pid,
            comm: ev.comm.clone(),
            exe: None,
        },
    };
    Writer {
        key,
        tid: ev.tid,
        process,
    }
}
