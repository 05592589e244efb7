//! Handlers for file contents: writes, truncation, syncs of every kind,
//! shared mappings. Durability closes exposures; a truncation replaces
//! content (what was exposed of the old content is moot).

use std::sync::Arc;

use auditor_common::linux::misc::MS_SYNC;

use crate::calls::Call;
use crate::event::{Event, EventKind, FileId, FileInfo, FileType, Syscall};
use crate::exposure::{Closer, Moot};
use crate::finding::{Finding, ProcessRef};
use crate::rules::Moment;
use crate::track::fds::flags;
use crate::track::inodes::Writer;
use crate::track::processes::{Mapping, WriteRec};

use super::Analyzer;

impl Analyzer {
    pub(super) fn on_write(&mut self, ev: &Event, raised: &mut Vec<Finding>) {
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
        let call = self.call_of(ev);
        if *ret > 0 {
            self.tell(
                &Moment::Output {
                    id: t.id,
                    pid: ev.pid,
                    path: &t.path,
                    bytes: *ret as u64,
                    call: &call,
                },
                raised,
            );
        }
        if !t.judged {
            return;
        }
        let key = self.procs.get(ev.pid).map_or(0, |p| p.key);
        let epoch = self.epoch;
        let append = t.flags & flags::O_APPEND != 0;
        let size_before = file
            .as_ref()
            .map(|f| f.size)
            .or_else(|| self.inodes.get(&t.id).and_then(|s| s.size));
        if let Some(st) = self.inodes.get_mut(&t.id) {
            st.remember(call.clone());
            st.changed = true;
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
        let at_end = append || size_before_u == Some(off);
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
                    || Writer {
                        key,
                        tid: ev.tid,
                        process: procs.get(ev.pid).map_or_else(
                            || ProcessRef {
                                pid: ev.pid,
                                comm: ev.comm.as_str().into(),
                                exe: None,
                                argv: Default::default(),
                            },
                            |p| p.to_ref(),
                        ),
                    },
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
        self.tell(
            &Moment::Wrote {
                id: t.id,
                at_end,
                pid: ev.pid,
                tid: ev.tid,
                call: &call,
            },
            raised,
        );
    }

    /// The content of judged `id`, which had some, was truncated away by
    /// `pid`: what was exposed of the old content is moot, and the rules
    /// hear of it.
    pub(super) fn truncated(
        &mut self,
        id: FileId,
        size_before: Option<i64>,
        pid: u32,
        call: &Call,
        raised: &mut Vec<Finding>,
    ) {
        if let Some(st) = self.inodes.get_mut(&id) {
            st.dirty = None;
        }
        self.exposures.moot(id, Moot::Replaced);
        self.tell(
            &Moment::Truncated {
                id,
                size_before,
                pid,
                call,
            },
            raised,
        );
    }

    pub(super) fn on_truncate(&mut self, ev: &Event, raised: &mut Vec<Finding>) {
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
        let call = self.call_of(ev);
        let Some(st) = self.inodes.get_mut(&id) else {
            return;
        };
        st.remember(call.clone());
        st.changed = true;
        let size_before = file.as_ref().map(|f| f.size).or(st.size);
        st.size = Some(*length);
        if *length == 0 && judged && size_before.is_some_and(|s| s > 0) {
            self.truncated(id, size_before, ev.pid, &call, raised);
        }
    }

    pub(super) fn on_fallocate(&mut self, ev: &Event, fd: i32, file: Option<&FileInfo>) {
        let call = self.call_of(ev);
        if let Some(t) = self.target(ev, fd, file)
            && let Some(st) = self.inodes.get_mut(&t.id)
        {
            st.remember(call);
            st.changed = true;
        }
    }

    pub(super) fn on_sync(&mut self, ev: &Event, raised: &mut Vec<Finding>) {
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
        let closer = Arc::new(Closer {
            process: self.who(ev).1,
            call: call.to_ref(),
        });
        match name {
            Syscall::Sync => {
                if *ret >= 0 {
                    self.sync_all(None, &call, &closer);
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
                    self.sync_all(Some(dev), &call, &closer);
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
                    self.file_synced(id, &call, None, &closer);
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
                        d.sync_file_range = Some(Box::new(call));
                    }
                }
            }
            _ => {
                let Some(fd) = fd else { return };
                let Some(t) = self.target(ev, *fd, file.as_ref()) else {
                    return;
                };
                if let Some(st) = self.inodes.get_mut(&t.id) {
                    st.remember(call.clone());
                }
                if *ret >= 0 {
                    self.file_synced(t.id, &call, Some(&t.path), &closer);
                }
                if t.judged {
                    self.tell(
                        &Moment::Synced {
                            id: t.id,
                            ret: *ret,
                            pid: ev.pid,
                            call: &call,
                        },
                        raised,
                    );
                }
            }
        }
    }

    /// `id` is durable now: its data, and for a directory its entries;
    /// what was exposed on it closes.
    fn file_synced(&mut self, id: FileId, call: &Call, fd_path: Option<&str>, by: &Arc<Closer>) {
        let Some(st) = self.inodes.get_mut(&id) else {
            return;
        };
        st.make_durable(call);
        let mut paths: Vec<String> = st.current_names.iter().cloned().collect();
        paths.extend(fd_path.map(str::to_string));
        let fs = st.fs.clone();
        if st.file_type == FileType::Directory {
            self.dirs.dir_synced(id, &paths, by);
        }
        self.dirs.data_synced(id, &fs, &paths);
        self.exposures.close(id, by);
    }

    /// sync() (dev None) or syncfs(dev): everything on it is durable.
    fn sync_all(&mut self, dev: Option<u64>, call: &Call, by: &Arc<Closer>) {
        for st in self.inodes.values_mut() {
            if dev.is_none_or(|d| st.id.dev == d) && st.dirty.is_some() {
                st.make_durable(call);
            }
        }
        self.dirs.synced_fs(dev, by);
        self.exposures.close_all(dev, by);
    }

    pub(super) fn on_mmap(&mut self, ev: &Event) {
        let EventKind::Mmap {
            fd,
            addr,
            len,
            prot,
            flags,
            file,
            ..
        } = &ev.kind
        else {
            return;
        };
        // Executable mappings are reported for stacks; only shared writable
        // ones carry data to the file.
        use auditor_common::linux::misc::{MAP_SHARED, MAP_SHARED_VALIDATE, MAP_TYPE, PROT_WRITE};
        let shared = matches!(
            u64::from(*flags) & MAP_TYPE,
            MAP_SHARED | MAP_SHARED_VALIDATE
        );
        if u64::from(*prot) & PROT_WRITE == 0 || !shared {
            return;
        }
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
}
