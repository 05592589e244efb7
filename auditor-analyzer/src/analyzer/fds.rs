//! Handlers for file descriptors: open, close, dup, fcntl, and the fds a
//! process already had when tracing began; and the lookup every fd call
//! starts with.

use auditor_common::linux::fcntl::{F_SETFD, F_SETFL, FD_CLOEXEC};
use auditor_common::linux::misc::CLOSE_RANGE_CLOEXEC;

use crate::event::{Event, EventKind, FileId, FileInfo, FileType};
use crate::exposure::Moot;
use crate::finding::Finding;
use crate::rules::Moment;
use crate::track::fds::{Description, flags};
use crate::track::inodes::judged;

use super::Analyzer;

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

/// Whether an open gives read access to an existing regular file (not an
/// O_PATH handle, not a file it creates): what the rules hear of as read.
fn opened_to_read(open_flags: u32, info: &FileInfo) -> bool {
    info.file_type == FileType::Regular
        && !info.created
        && open_flags & flags::O_ACCMODE != flags::O_WRONLY
        && open_flags & flags::O_PATH == 0
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

    pub(super) fn on_open(&mut self, ev: &Event, raised: &mut Vec<Finding>) {
        let EventKind::Open {
            path,
            flags: open_flags,
            ret,
            file,
            image,
            ..
        } = &ev.kind
        else {
            return;
        };
        let Some(table) = self.table_changed_by(ev, *ret) else {
            return;
        };
        let fd = *ret as i32;
        let call = self.call_of(ev);
        let read = file
            .as_ref()
            .filter(|info| opened_to_read(*open_flags, info));
        let read_call = read.map(|_| call.clone());
        let (key, process) = self.who(ev);
        let mut id = self.names.get(path);
        let mut desc_flags = *open_flags;
        if let Some(info) = file {
            id = Some(info.id);
            desc_flags = info.flags | (open_flags & flags::O_ACCMODE);
            if info.created {
                // The number was freed and reused: whatever rested on the
                // old file went with it.
                self.exposures.moot(info.id, Moot::Deleted);
                self.forget_inode(&info.id);
                self.inodes.forget(&info.id);
            }
            let size_before = self.inodes.get(&info.id).and_then(|s| s.size);
            let judged = self.observe(info, Some(path));
            let truncating = open_flags & flags::O_TRUNC != 0
                && flags::writable(*open_flags)
                && info.file_type == FileType::Regular;
            if let Some(st) = self.inodes.get_mut(&info.id) {
                st.remember(call.clone());
                st.changed |= info.created || flags::writable(*open_flags);
                if info.created {
                    st.created_in_trace = true;
                }
                st.size = Some(if truncating || info.created {
                    0
                } else {
                    info.size
                });
            }
            if truncating && !info.created && judged && size_before != Some(0) {
                self.truncated(info.id, size_before, ev.pid, &call, raised);
            } else if truncating && let Some(st) = self.inodes.get_mut(&info.id) {
                st.dirty = None;
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
            path: Some(Self::seen(path, &ev.in_process.path_in_process)),
            flags: desc_flags,
            pos: Some(0),
            from_caller: false,
        };
        self.fds
            .install(table, fd, desc, open_flags & flags::O_CLOEXEC != 0);
        if let (Some(info), Some(call)) = (read, read_call) {
            self.tell(
                &Moment::Opened {
                    id: info.id,
                    pid: ev.pid,
                    path,
                    writable: flags::writable(*open_flags),
                    image: image.as_ref(),
                    call: &call,
                },
                raised,
            );
        }
    }

    pub(super) fn on_close(&mut self, ev: &Event, raised: &mut Vec<Finding>) {
        let EventKind::Close {
            fd,
            calls,
            reopens,
            file,
            ..
        } = &ev.kind
        else {
            return;
        };
        let Some(table) = self.table_of(ev) else {
            return;
        };
        let before = self.fds.get(table, *fd).cloned();
        // close() releases the fd even when it reports an error.
        self.fds.close(table, *fd);
        let Some(r) = reopens.filter(|r| r.count > 0) else {
            return;
        };
        // A run of visits: the closes and reopens alternate, starting with
        // a close of what the fd held. Repeating an identical reopen and
        // close changes nothing once the first pair is seen, so one of each
        // stands for them all; the fd ends open when the last call was a
        // reopen.
        let ends_open = r.count + u32::from(before.is_some()) > *calls;
        let path = before
            .and_then(|d| d.path)
            .or_else(|| {
                file.as_ref()
                    .and_then(|f| self.inodes.get(&f.id))
                    .map(|s| s.path())
            })
            .unwrap_or_else(|| format!("<fd {fd}>"));
        let reopen = Event {
            kind: EventKind::Open {
                call: r.call,
                path,
                // The path is absolute already.
                dirfd: crate::track::paths::AT_FDCWD,
                flags: r.flags,
                mode: r.mode,
                ret: i64::from(*fd),
                file: file.clone(),
                // Read once per inode, at the first open.
                image: None,
            },
            ..ev.clone()
        };
        self.on_open(&reopen, raised);
        if !ends_open {
            self.fds.close(table, *fd);
        }
    }

    pub(super) fn on_close_range(&mut self, ev: &Event, first: u32, last: u32, fl: u32, ret: i64) {
        if let Some(table) = self.table_changed_by(ev, ret) {
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
        let Some(table) = self.table_changed_by(ev, ret) else {
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
        let Some(table) = self.table_changed_by(ev, *ret) else {
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
            path: known_path.map(|p| Self::seen(p, &ev.in_process.path_in_process)),
            flags,
            pos: None,
            from_caller: *from_caller,
        };
        self.fds.install(table, *fd, desc, *cloexec);
    }
}
