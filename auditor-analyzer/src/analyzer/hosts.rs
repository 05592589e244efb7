//! Host paths. Every path an event gives is first made absolute as the
//! process names it (against its cwd or a dirfd, in its own root), then
//! put where it is on the host through the process's view
//! ([`crate::track::views`]). The host path is what the analyzer keeps
//! and reports; the process's own path rides beside it in the event
//! (`in_process`) and in findings (`path_in_process`). Working directories
//! and dirfd paths stay as the process names them: relative paths are
//! resolved there, where the process's mounts are.
//!
//! A path the host has no name for is kept inside the analyzer with a
//! leading NUL, which no path from the kernel can hold, so it is never
//! taken for a host path of the same spelling; it leaves the analyzer as
//! the process's path with `host_path_unknown`.

use std::sync::Arc;

use auditor_common::linux::ns::{
    CLONE_NEWNS, MS_BIND, MS_MOVE, MS_PROPAGATION, MS_REC, MS_REMOUNT,
};
use serde_json::Value;

use crate::event::{Container, Event, EventKind, InProcess};
use crate::finding::Finding;
use crate::track::views::{Host, View, rebase, under};

use super::Analyzer;

use crate::track::views::UNKNOWN;

/// What the analyzer knows about a host path a process named otherwise.
#[derive(Clone, Debug)]
pub(super) struct Alias {
    in_process: String,
    container: Option<Arc<Container>>,
    unknown: Option<String>,
}

use crate::track::views::outside;

/// The (up to two) path fields of an event, in `InProcess` order.
pub(super) fn slots(kind: &mut EventKind) -> [Option<&mut String>; 2] {
    match kind {
        EventKind::Open { path, .. }
        | EventKind::Unlink { path, .. }
        | EventKind::Mkdir { path, .. }
        | EventKind::Chdir { path, .. }
        | EventKind::Chroot { path, .. }
        | EventKind::FdAtStart { path, .. }
        | EventKind::Exec { filename: path, .. }
        | EventKind::Umount { target: path, .. }
        | EventKind::ProcessStart { exe: path, .. }
        | EventKind::Truncate {
            path: Some(path), ..
        } => [Some(path), None],
        EventKind::Rename {
            old_path, new_path, ..
        } => [Some(old_path), Some(new_path)],
        EventKind::PivotRoot {
            new_root, put_old, ..
        } => [Some(new_root), Some(put_old)],
        EventKind::Mount {
            source,
            target,
            flags,
            ..
        } => {
            // Only binds and moves name a directory as their source.
            let src = (*flags & (MS_BIND | MS_MOVE) != 0).then_some(source);
            [src, Some(target)]
        }
        _ => [None, None],
    }
}

/// The dirfds the event's paths are relative to (`AT_FDCWD` for the cwd);
/// None for a path that is never relative.
pub(super) fn bases(kind: &EventKind) -> [Option<i32>; 2] {
    use crate::track::paths::AT_FDCWD;
    match kind {
        EventKind::Open { dirfd, .. }
        | EventKind::Unlink { dirfd, .. }
        | EventKind::Mkdir { dirfd, .. } => [Some(*dirfd), None],
        EventKind::Rename {
            old_dirfd,
            new_dirfd,
            ..
        } => [Some(*old_dirfd), Some(*new_dirfd)],
        EventKind::Chdir { .. }
        | EventKind::Chroot { .. }
        | EventKind::Exec { .. }
        | EventKind::Umount { .. }
        | EventKind::Truncate { path: Some(_), .. } => [Some(AT_FDCWD), None],
        EventKind::PivotRoot { .. } | EventKind::Mount { .. } => [Some(AT_FDCWD), Some(AT_FDCWD)],
        _ => [None, None],
    }
}

impl Analyzer {
    /// Puts the event's (absolute, process-relative) paths where they are
    /// on the host. An event that already says how its paths map (a
    /// recording) is taken as it is.
    pub(super) fn place_on_host(&mut self, ev: &mut Event) {
        let view = self.procs.get(ev.pid).and_then(|p| p.view.clone());
        let replayed = !ev.in_process.is_empty();
        let Event {
            kind, in_process, ..
        } = ev;
        let [a, b] = slots(kind);
        let InProcess {
            path_in_process,
            path2_in_process,
            host_path_unknown,
            host_path2_unknown,
        } = in_process;
        for (path, seen, unknown) in [
            (a, path_in_process, host_path_unknown),
            (b, path2_in_process, host_path2_unknown),
        ] {
            let Some(path) = path else { continue };
            if replayed {
                // A recording says how its paths map already.
                let shown = seen
                    .clone()
                    .or_else(|| unknown.is_some().then(|| path.clone()));
                if unknown.is_some() {
                    path.insert(0, UNKNOWN);
                }
                if let Some(in_process) = shown {
                    let alias = Alias {
                        in_process,
                        container: view.as_ref().and_then(|v| v.container.clone()),
                        unknown: unknown.clone(),
                    };
                    self.remember_alias(path, alias);
                }
                continue;
            }
            let Some(view) = view.as_ref() else { continue };
            if !path.starts_with('/') {
                continue;
            }
            let (host, why) = match view.translate(path) {
                Host::At(h) => (h, None),
                Host::Unknown(why) => (format!("{UNKNOWN}{path}"), Some(why)),
            };
            if host != *path {
                *seen = why.is_none().then(|| path.clone());
            }
            if host != *path || view.container.is_some() {
                let alias = Alias {
                    in_process: path.clone(),
                    container: view.container.clone(),
                    unknown: why.clone(),
                };
                self.remember_alias(&host, alias);
            }
            *unknown = why;
            *path = host;
        }
    }

    /// Paths leave the analyzer as people can read them: one the host has
    /// no name for as the process's own (its event says why).
    pub(super) fn leave_host(ev: &mut Event) {
        for path in slots(&mut ev.kind).into_iter().flatten() {
            if path.starts_with(UNKNOWN) {
                path.remove(0);
            }
        }
    }

    fn remember_alias(&mut self, host: &str, alias: Alias) {
        if self.aliases.len() >= self.config.max_files.max(1) * 2 {
            // Bounded like the file states; the names kept are the ones in use.
            let names = &self.names;
            self.aliases.retain(|p, _| names.get(p).is_some());
        }
        self.aliases.insert(host.to_string(), alias);
    }

    /// An event path as its process named it (`in_process` is the
    /// matching `InProcess` field): where its relative paths resolve.
    pub(super) fn seen(path: &str, in_process: &Option<String>) -> String {
        in_process
            .clone()
            .unwrap_or_else(|| outside(path).to_string())
    }

    /// Adds to a finding where its path is for the process that named it
    /// (and its container), and makes its text readable.
    pub(super) fn locate(&self, f: &mut Finding) {
        if self.aliases.is_empty() {
            // No process had a view of its own: every path is the host's.
            return;
        }
        if let Some(a) = self.aliases.get(&f.path) {
            f.container = a.container.as_deref().cloned();
            f.host_path_unknown = a.unknown.clone();
            if a.in_process != outside(&f.path) {
                f.path_in_process = Some(a.in_process.clone());
            }
        }
        f.path = outside(&f.path).to_string();
        f.summary = f.summary.replace("\"\\0/", "\"/");
        for c in &mut f.calls {
            c.call = c.call.replace("\"\\0/", "\"/");
        }
        for v in f.evidence.values_mut() {
            scrub(v);
        }
    }

    /// chroot, pivot_root, mount, umount2, unshare, setns and the views
    /// /proc showed: what changes where a process's paths are.
    pub(super) fn on_view_change(&mut self, ev: &Event) {
        let Some(p) = self.procs.get(ev.pid) else {
            return;
        };
        let current = p.view.as_deref().cloned().unwrap_or_else(View::host);
        let cwd = p.cwd.clone();
        let first = |path: &str| Self::seen(path, &ev.in_process.path_in_process);
        let second = |path: &str| Self::seen(path, &ev.in_process.path2_in_process);
        let (view, cwd) = match &ev.kind {
            EventKind::Chroot { path, ret: 0 } => {
                let root = first(path);
                let cwd = cwd.filter(|c| under(c, &root)).map(|c| rebase(&c, &root));
                (current.chroot(&root), cwd)
            }
            EventKind::PivotRoot {
                new_root,
                put_old,
                ret: 0,
            } => {
                let (new, old) = (first(new_root), second(put_old));
                // Processes whose cwd was the old root move to the new one.
                let cwd = cwd.map(|c| {
                    if c == "/" {
                        c
                    } else if under(&c, &new) {
                        rebase(&c, &new)
                    } else {
                        crate::track::paths::join(&rebase(&old, &new), &c[1..])
                    }
                });
                (current.pivot_root(&new, &old), cwd)
            }
            EventKind::Mount {
                source,
                target,
                flags,
                ret: 0,
            } => {
                let target = second(target);
                if !current.private || flags & MS_REMOUNT != 0 {
                    return;
                }
                let view = if flags & MS_MOVE != 0 {
                    current.bind(&first(source), &target, true, true)
                } else if flags & MS_BIND != 0 {
                    current.bind(&first(source), &target, flags & MS_REC != 0, false)
                } else if flags & MS_PROPAGATION != 0 {
                    return;
                } else {
                    current.mounted(&target, source)
                };
                (view, cwd)
            }
            EventKind::Umount { target, ret: 0, .. } => {
                let target = first(target);
                if !current.private {
                    return;
                }
                (current.umount(&target), cwd)
            }
            EventKind::Unshare { flags, ret: 0 } if flags & CLONE_NEWNS != 0 => {
                // A copy of the namespace it was in: the same paths.
                (current.unshared(), cwd)
            }
            EventKind::Setns { nstype, ret: 0, .. }
                if *nstype == 0 || (*nstype as u64) & CLONE_NEWNS != 0 =>
            {
                let why = "it joined another mount namespace (setns) and was not seen there yet";
                (current.unknown(why), None)
            }
            EventKind::View {
                mounts,
                private,
                container,
            } => {
                // An empty table of a private namespace is no host view:
                // every path in it is unknown.
                let view = if mounts.is_empty() && !*private {
                    View::host()
                } else {
                    View::from_mounts(mounts.clone(), *private, container.clone())
                };
                (view, cwd)
            }
            _ => return,
        };
        if let Some(p) = self.procs.get_mut(ev.pid) {
            p.view = (!view.is_host()).then(|| Arc::new(view));
            p.cwd = cwd;
        }
    }
}

/// Evidence strings lose the marker of unknown host paths.
fn scrub(v: &mut Value) {
    match v {
        Value::String(s) if s.starts_with(UNKNOWN) => {
            s.remove(0);
        }
        Value::Array(a) => a.iter_mut().for_each(scrub),
        Value::Object(o) => o.values_mut().for_each(scrub),
        _ => {}
    }
}
