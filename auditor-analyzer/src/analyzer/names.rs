//! Handlers for calls on names: path resolution, rename/link, unlink,
//! mkdir, chdir. Names matter twice: for people (paths in findings) and for
//! durability (a new name needs an fsync of its directory).

use auditor_common::linux::rename::RENAME_EXCHANGE;

use crate::calls::Call;
use crate::event::{Event, EventKind, FileId, FileInfo, FileType};
use crate::exposure::Moot;
use crate::finding::{Finding, ProcessRef};
use crate::rules::{Moment, Rename};
use crate::track::dirs::{NameOp, PendingName};
use crate::track::inodes::InodeState;
use crate::track::paths::{AT_FDCWD, join, normalize, parent, rehome};
use crate::track::processes::ProcKey;

use super::Analyzer;
use super::hosts::{bases, slots};

/// Makes `path` absolute against `base` (normalised); false when it is
/// relative and there is no base to resolve it against.
fn resolve(base: Option<&str>, path: &mut String) -> bool {
    if path.starts_with('/') {
        *path = normalize(path);
    } else if let Some(base) = base.filter(|b| b.starts_with('/')) {
        *path = join(base, path);
    } else {
        return false;
    }
    true
}

impl Analyzer {
    /// The directory a relative path of `ev`'s thread resolves against.
    fn base_dir(&self, ev: &Event, dirfd: i32) -> Option<String> {
        let p = self.procs.get(ev.pid)?;
        if dirfd == AT_FDCWD {
            return p.cwd.clone();
        }
        let d = self.fds.get(p.table_of(ev.tid), dirfd)?;
        // The file's name is a host path: a base only where the process
        // names things as the host does.
        let host_names = p.view.is_none();
        d.path.clone().or_else(|| {
            d.file
                .filter(|_| host_names)
                .and_then(|id| self.inodes.get(&id))
                .map(|s| s.path())
        })
    }

    /// Makes every path of `ev` absolute, in place, before anything reads
    /// it: as the process names it (against its cwd or the dirfd's path),
    /// then where that is on the host.
    pub(super) fn resolve_paths(&mut self, ev: &mut Event) {
        let [a, b] = bases(&ev.kind);
        let bases = [
            a.map(|fd| self.base_dir(ev, fd)),
            b.map(|fd| self.base_dir(ev, fd)),
        ];
        let [pa, pb] = slots(&mut ev.kind);
        let mut unresolved = 0;
        for (path, base) in [(pa, &bases[0]), (pb, &bases[1])] {
            if let (Some(path), Some(base)) = (path, base) {
                unresolved += u64::from(!resolve(base.as_deref(), path));
            }
        }
        self.stats.unresolved_paths += unresolved;
        self.place_on_host(ev);
    }

    /// A new name now waits for its directory's fsync.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_name(
        &mut self,
        op: NameOp,
        path: &str,
        old_path: Option<&str>,
        file: Option<&FileInfo>,
        key: ProcKey,
        process: ProcessRef,
        call: Call,
    ) {
        let dir = parent(path);
        let dir_id = self.names.get(&dir);
        let fs = file.map(|f| f.fs.as_str().into()).or_else(|| {
            dir_id
                .and_then(|d| self.inodes.get(&d))
                .map(|s| s.fs.clone())
        });
        let data_synced = file
            .and_then(|f| self.inodes.get(&f.id))
            .is_some_and(|s| s.dirty.is_none() && s.last_sync.is_some());
        let cared = op == NameOp::Unlink && data_synced;
        let dropped = self.dirs.record(
            PendingName {
                op,
                path: path.into(),
                old_path: old_path.map(str::to_string),
                dir: dir.into(),
                dir_id,
                file: file.map(|f| f.id),
                fs,
                key,
                process,
                data_synced,
                cared,
                call: call.clone(),
                since_epoch: self.epoch,
                ended: None,
                closed: None,
            },
            self.config.max_files,
        );
        // Names dropped past the cap go unjudged, like evicted pending
        // inode states: counted, and the directory's state (when tracked)
        // rests on unknown history, so verdicts on it are inconclusive.
        for p in dropped {
            self.stats.evicted_names += 1;
            if let Some(d) = p.dir_id {
                self.inodes.taint(&d);
            }
        }
    }

    /// A pending name went away (renamed from, removed): when its process
    /// had ended it was a verdict, now moot.
    fn forget_name(&mut self, path: &str) {
        if self.dirs.forget(path).is_some_and(|p| p.ended.is_some()) {
            self.stats.moot.moved += 1;
        }
    }

    /// `path` no longer names `id`; when it was its last name the file is
    /// gone, and so is everything that rested on it.
    fn name_removed(&mut self, id: FileId, path: &str) -> bool {
        let gone = self
            .inodes
            .get_mut(&id)
            .is_some_and(|st| st.remove_name(path));
        if gone {
            self.exposures.moot(id, Moot::Deleted);
            self.forget_inode(&id);
        }
        gone
    }

    pub(super) fn on_rename(&mut self, ev: &Event, raised: &mut Vec<Finding>) {
        let EventKind::Rename {
            call: name,
            old_path,
            new_path,
            flags,
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
        let call = self.call_of(ev);
        let (key, process) = self.who(ev);
        let is_link = name.is_link();
        let exchange = !is_link && flags & RENAME_EXCHANGE != 0;
        // The inode behind `old_path` as this trace saw it (from the kernel's
        // identity at open) beats `file`: that one comes from an lstat of
        // the new name after the fact, which a quick later rename to the
        // same name (a state file saved twice) has already replaced.
        let known = self.names.get(old_path);
        let file = file.as_ref().filter(|f| known.is_none_or(|k| k == f.id));
        let src = known.or_else(|| file.map(|f| f.id));
        if let Some(info) = file {
            self.observe(info, None);
        }
        let Some(id) = src else {
            self.stats.unknown_renames += 1;
            self.forget_name(old_path);
            if !is_link {
                self.dirs.dir_moved(old_path, new_path);
                self.tree_moved(old_path, new_path, exchange);
            }
            self.names.remove(old_path);
            self.aliases.remove(old_path);
            return;
        };
        let prior = self.names.get(new_path).filter(|d| *d != id);
        let judged = self.is_judged(&id);
        if judged && let Some(st) = self.inodes.get_mut(&id) {
            st.remember(call.clone());
            st.changed = true;
        }
        // Update the name table first, so findings name the destination.
        let prior_source_name = if exchange {
            self.names.get(old_path)
        } else {
            None
        };
        self.names.set(new_path, id);
        if let Some(st) = self.inodes.get_mut(&id) {
            if !is_link {
                st.current_names.remove(old_path.as_str());
            }
            st.add_name(new_path);
        }
        if exchange {
            if let Some(other) = prior.or(prior_source_name.filter(|o| *o != id)) {
                self.names.set(old_path, other);
                if let Some(st) = self.inodes.get_mut(&other) {
                    st.current_names.remove(new_path.as_str());
                    st.add_name(old_path);
                }
            }
        } else {
            if !is_link {
                self.names.remove(old_path);
                self.aliases.remove(old_path);
                self.forget_name(old_path);
                self.dirs.dir_moved(old_path, new_path);
            }
            if let Some(replaced) = prior {
                self.name_removed(replaced, new_path);
            }
        }
        // Only a directory (or what this trace never saw) has names under it.
        let dir_or_unknown = |id| {
            self.inodes
                .get(&id)
                .is_none_or(|s| s.file_type == FileType::Directory)
        };
        if !is_link && (exchange || dir_or_unknown(id)) {
            self.tree_moved(old_path, new_path, exchange);
        }
        if judged {
            let rename = Rename {
                link: is_link,
                source: old_path,
                destination: new_path,
                replaced: prior.is_some(),
            };
            self.tell(
                &Moment::Renamed {
                    id,
                    rename: &rename,
                    pid: ev.pid,
                    call: &call,
                },
                raised,
            );
            let op = if is_link {
                NameOp::Link
            } else {
                NameOp::Rename
            };
            let info = self.inodes.get(&id).map(InodeState::info);
            self.record_name(
                op,
                new_path,
                Some(old_path),
                info.as_ref(),
                key,
                process,
                call,
            );
        }
    }

    /// A directory moved (or, with `exchange`, two swapped): the names known
    /// under it move with it, so findings name files where they now are, and
    /// paths relative to an fd or a cwd inside it resolve there.
    fn tree_moved(&mut self, old: &str, new: &str, exchange: bool) {
        let to = |p: &str| {
            rehome(p, old, new).or_else(|| exchange.then(|| rehome(p, new, old)).flatten())
        };
        // What processes in views of their own called the names moved is
        // no longer known: their paths in the process are dropped.
        if !self.aliases.is_empty() {
            let prefix = [format!("{old}/"), format!("{new}/")];
            self.aliases.retain(|k, _| {
                !(k.starts_with(&prefix[0]) || (exchange && k.starts_with(&prefix[1])))
            });
        }
        let mut moved = self.names.take_under(old);
        if exchange {
            moved.extend(self.names.take_under(new));
        }
        for (from, id) in moved {
            let Some(dest) = to(&from) else {
                continue;
            };
            self.names.set(&dest, id);
            if let Some(st) = self.inodes.get_mut(&id)
                && st.current_names.remove(&from)
            {
                st.add_name(&dest);
            }
        }
        self.fds.rename_paths(to);
        // A cwd is named as its process sees it: only one seen as the host
        // sees it moves with the host's names.
        for p in self.procs.iter_mut().filter(|p| p.view.is_none()) {
            if let Some(cwd) = p.cwd.as_deref().and_then(&to) {
                p.cwd = Some(cwd);
            }
        }
    }

    pub(super) fn on_unlink(&mut self, ev: &Event) {
        let EventKind::Unlink { path, ret, .. } = &ev.kind else {
            return;
        };
        if *ret < 0 {
            return;
        }
        self.forget_name(path);
        self.aliases.remove(path);
        let Some(id) = self.names.remove(path) else {
            return;
        };
        let info = self.inodes.get(&id).map(InodeState::info);
        let judged = self.is_judged(&id);
        // Made durable and then removed (its last name): the removal is
        // what must reach the disk now.
        let durable = self
            .inodes
            .get(&id)
            .is_some_and(|s| s.dirty.is_none() && s.last_sync.is_some());
        if self.name_removed(id, path) && judged && durable {
            let (key, process) = self.who(ev);
            let call = self.call_of(ev);
            self.record_name(
                NameOp::Unlink,
                path,
                None,
                info.as_ref(),
                key,
                process,
                call,
            );
        }
    }

    pub(super) fn on_mkdir(&mut self, ev: &Event) {
        let EventKind::Mkdir { path, ret, .. } = &ev.kind else {
            return;
        };
        if *ret < 0 {
            return;
        }
        let (key, process) = self.who(ev);
        let call = self.call_of(ev);
        self.record_name(NameOp::Mkdir, path, None, None, key, process, call);
    }

    pub(super) fn on_chdir(&mut self, ev: &Event, path: &str, ret: i64) {
        if ret < 0 {
            return;
        }
        let seen = Self::seen(path, &ev.in_process.path_in_process);
        if let Some(p) = self.procs.get_mut(ev.pid) {
            p.cwd = seen.starts_with('/').then_some(seen);
        }
    }

    pub(super) fn on_fchdir(&mut self, ev: &Event, fd: i32, ret: i64) {
        if ret < 0 {
            return;
        }
        let dir = self.base_dir(ev, fd);
        if let Some(p) = self.procs.get_mut(ev.pid) {
            p.cwd = dir;
        }
    }
}
