//! Where a process's paths lie on the host. A process in a chroot, in a
//! container's mount namespace or in a re-exec that pivoted into a layer
//! directory names files by paths that mean something else on the host:
//! its view is its mount table as it sees it (mount point -> the host
//! directory shown there), read from /proc by the live side or changed
//! here by the process's own chroot, pivot_root, mount and umount2 calls.
//! A process without a view sees what the host sees.

use std::sync::Arc;

use crate::event::{Container, ViewMount};

use super::paths::normalize;

/// A process's mounts, oldest first; the first is its root (`/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    mounts: Vec<ViewMount>,
    /// Its mount namespace is its own: its mount calls move its paths
    /// (in the host's namespace they are the host's mounts, and the path
    /// it gave is a host path).
    pub private: bool,
    pub container: Option<Arc<Container>>,
}

/// Where an in-process path is on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    At(String),
    /// No host name is known; the reason says why.
    Unknown(String),
}

/// Leads a path, inside the analyzer, that the host has no name for: no
/// path from the kernel holds a NUL, so it is never taken for the host path
/// of the same spelling (see `analyzer::hosts`).
pub(crate) const UNKNOWN: char = '\0';

/// The process's own path behind an analyzer path (the marker dropped).
pub(crate) fn outside(path: &str) -> &str {
    path.strip_prefix(UNKNOWN).unwrap_or(path)
}

/// Mounts remembered per view: a container has a few dozen; past this a
/// process mounting in a loop keeps its newest.
const MAX_MOUNTS: usize = 256;

/// Whether `path` is `dir` or lies under it (both absolute, normalised).
pub fn under(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `path` relative to `dir` (which holds it), as an absolute path.
pub fn rebase(path: &str, dir: &str) -> String {
    if dir == "/" {
        return path.to_string();
    }
    match path.strip_prefix(dir) {
        Some("") | None => "/".to_string(),
        Some(rest) => rest.to_string(),
    }
}

/// `rel` (absolute) placed under `dir`.
fn place(dir: &str, rel: &str) -> String {
    normalize(&format!("{dir}/{rel}"))
}

fn mount(at: String, host: Host) -> ViewMount {
    match host {
        Host::At(h) => ViewMount {
            at,
            host: Some(h),
            unknown: None,
        },
        Host::Unknown(why) => ViewMount {
            at,
            host: None,
            unknown: Some(why),
        },
    }
}

impl View {
    /// The host's own view, before any change.
    pub fn host() -> View {
        View {
            mounts: vec![mount("/".into(), Host::At("/".into()))],
            private: false,
            container: None,
        }
    }

    /// A view as /proc showed it: mounts in mount order. A table without
    /// a root (the process's root is not a mount point in a namespace
    /// that is not the host's) leaves the root unknown.
    pub fn from_mounts(
        mounts: Vec<ViewMount>,
        private: bool,
        container: Option<Container>,
    ) -> View {
        let mut mounts: Vec<ViewMount> = mounts
            .into_iter()
            .filter(|m| m.at.starts_with('/'))
            .map(|mut m| {
                m.at = normalize(&m.at);
                if m.host.is_none() && m.unknown.is_none() {
                    m.unknown = Some("not known".into());
                }
                m
            })
            .collect();
        if mounts.first().is_none_or(|m| m.at != "/") {
            mounts.insert(
                0,
                mount(
                    "/".into(),
                    Host::Unknown("its root is not a mount of its namespace".into()),
                ),
            );
        }
        let mut v = View {
            mounts,
            private,
            container: container.map(Arc::new),
        };
        v.bound();
        v
    }

    /// Whether this is the host's own view (every path is the host's).
    pub fn is_host(&self) -> bool {
        !self.private
            && self.container.is_none()
            && self.mounts.len() == 1
            && self.mounts[0].host.as_deref() == Some("/")
    }

    /// The host path of `path` (absolute, normalised, as the process
    /// named it): under the mount it lies in that was mounted last.
    pub fn translate(&self, path: &str) -> Host {
        let Some(m) = self.mounts.iter().rev().find(|m| under(path, &m.at)) else {
            return Host::Unknown("outside its mounts".into());
        };
        match &m.host {
            Some(h) => Host::At(place(h, &rebase(path, &m.at))),
            None => Host::Unknown(m.unknown.clone().unwrap_or_default()),
        }
    }

    /// The mounts the process can still reach: a later mount over a
    /// mount's point, or over a directory above it, hides it.
    fn visible(&self) -> impl Iterator<Item = &ViewMount> {
        self.mounts.iter().enumerate().filter_map(|(i, m)| {
            let hidden = self.mounts[i + 1..]
                .iter()
                .any(|later| under(&m.at, &later.at));
            (!hidden).then_some(m)
        })
    }

    /// After `chroot(root)` (`root` as the process named it before).
    pub fn chroot(&self, root: &str) -> View {
        let mut mounts = vec![mount("/".into(), self.translate(root))];
        mounts.extend(
            self.visible()
                .filter(|m| m.at != root && under(&m.at, root))
                .map(|m| ViewMount {
                    at: rebase(&m.at, root),
                    ..m.clone()
                }),
        );
        View {
            mounts,
            ..self.clone()
        }
    }

    /// After `pivot_root(new_root, put_old)`: what was under `new_root` is
    /// now under `/`, and the old root and its other mounts under
    /// `put_old` (named, like `new_root`, as before the call).
    pub fn pivot_root(&self, new_root: &str, put_old: &str) -> View {
        let old_at = rebase(put_old, new_root);
        let mut mounts = vec![mount("/".into(), self.translate(new_root))];
        let mut inside = Vec::new();
        let mut outside = Vec::new();
        for m in self.visible() {
            if m.at == new_root {
                continue;
            }
            if under(&m.at, new_root) {
                inside.push(ViewMount {
                    at: rebase(&m.at, new_root),
                    ..m.clone()
                });
            } else {
                outside.push(ViewMount {
                    at: place(&old_at, &m.at),
                    ..m.clone()
                });
            }
        }
        mounts.extend(inside);
        mounts.extend(outside);
        let mut v = View {
            mounts,
            ..self.clone()
        };
        v.bound();
        v
    }

    /// After a bind mount of `source` on `target` (`recursive`: with the
    /// mounts under `source`), or a move of the mount at `source`.
    pub fn bind(&self, source: &str, target: &str, recursive: bool, moved: bool) -> View {
        let mut v = self.clone();
        let subs: Vec<ViewMount> = if recursive || moved {
            self.visible()
                .filter(|m| m.at != source && under(&m.at, source))
                .map(|m| ViewMount {
                    at: place(target, &rebase(&m.at, source)),
                    ..m.clone()
                })
                .collect()
        } else {
            Vec::new()
        };
        if moved {
            v.mounts.retain(|m| !under(&m.at, source) || m.at == "/");
        }
        v.mounts
            .push(mount(target.to_string(), self.translate(source)));
        v.mounts.extend(subs);
        v.bound();
        v
    }

    /// After a new filesystem was mounted on `target`: nothing on the host
    /// names what it holds.
    pub fn mounted(&self, target: &str, source: &str) -> View {
        let mut v = self.clone();
        v.mounts.push(mount(
            target.to_string(),
            Host::Unknown(format!(
                "{source:?} is mounted there inside the process's own mount namespace"
            )),
        ));
        v.bound();
        v
    }

    /// After `umount2(target)`: its mount (the last one there) and the
    /// mounts under it are gone.
    pub fn umount(&self, target: &str) -> View {
        let mut v = self.clone();
        if target == "/" {
            return v;
        }
        v.mounts.retain(|m| m.at == target || !under(&m.at, target));
        if let Some(i) = v.mounts.iter().rposition(|m| m.at == target) {
            v.mounts.remove(i);
        }
        v
    }

    /// After `unshare(CLONE_NEWNS)`: a copy of the namespace it was in,
    /// the same paths, now its own.
    pub fn unshared(&self) -> View {
        View {
            private: true,
            ..self.clone()
        }
    }

    /// After it joined another mount namespace: nothing is known of it
    /// until /proc is read again.
    pub fn unknown(&self, why: &str) -> View {
        View {
            mounts: vec![mount("/".into(), Host::Unknown(why.to_string()))],
            private: true,
            container: self.container.clone(),
        }
    }

    /// Keeps the newest mounts past [`MAX_MOUNTS`] (the root stays).
    fn bound(&mut self) {
        if self.mounts.len() > MAX_MOUNTS {
            let cut = self.mounts.len() - MAX_MOUNTS;
            self.mounts.drain(1..=cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: &str) -> Host {
        Host::At(h.to_string())
    }

    fn m(at: &str, host: Option<&str>) -> ViewMount {
        ViewMount {
            at: at.into(),
            host: host.map(str::to_string),
            unknown: None,
        }
    }

    /// The view of a table of `(mount point, host directory)`.
    fn table(mounts: &[(&str, &str)], private: bool) -> View {
        let mounts = mounts.iter().map(|&(at, host)| m(at, Some(host)));
        View::from_mounts(mounts.collect(), private, None)
    }

    /// dockerd's docker-untar: a private namespace, the layer directory
    /// bound on itself, pivot_root into it, the old root unmounted.
    #[test]
    fn a_pivot_into_a_layer_directory_lands_there() {
        let diff = "/var/lib/docker/overlay2/abc/diff";
        let old = format!("{diff}/.pivot_root1");
        let v = View::host().unshared();
        let v = v.bind(diff, diff, true, false);
        assert_eq!(v.translate(&old), at(&old));
        let v = v.pivot_root(diff, &old);
        assert_eq!(v.translate("/etc/motd"), at(&format!("{diff}/etc/motd")));
        assert_eq!(v.translate("/.pivot_root1/etc"), at("/etc"), "the old root");
        let v = v.umount("/.pivot_root1");
        assert_eq!(
            v.translate("/.pivot_root1"),
            at(&format!("{diff}/.pivot_root1"))
        );
        assert_eq!(
            v.chroot("/").translate("/bin/blob"),
            v.translate("/bin/blob")
        );
    }

    #[test]
    fn chroot_keeps_the_mounts_inside_and_drops_the_rest() {
        let v = View::from_mounts(
            vec![
                m("/", Some("/")),
                m("/srv/jail/data", Some("/vol")),
                m("/proc", None),
            ],
            false,
            None,
        );
        let j = v.chroot("/srv/jail");
        assert_eq!(j.translate("/etc/passwd"), at("/srv/jail/etc/passwd"));
        assert_eq!(j.translate("/data/x"), at("/vol/x"));
        assert_eq!(j.translate("/proc/1"), at("/srv/jail/proc/1"));
        assert_eq!(j.chroot("/sub").translate("/a"), at("/srv/jail/sub/a"));
        assert!(!j.is_host() && View::host().is_host());
    }

    #[test]
    fn container_mounts_volumes_and_the_unknown() {
        let upper = "/var/lib/docker/overlay2/abc/diff";
        let v = View::from_mounts(
            vec![
                m("/", Some(upper)),
                m("/data", Some("/srv/vol")),
                ViewMount {
                    at: "/dev/shm".into(),
                    host: None,
                    unknown: Some("tmpfs".into()),
                },
            ],
            true,
            None,
        );
        assert_eq!(v.translate("/etc/x"), at(&format!("{upper}/etc/x")));
        assert_eq!(v.translate("/data"), at("/srv/vol"));
        assert_eq!(v.translate("/data/a/b"), at("/srv/vol/a/b"));
        assert_eq!(v.translate("/database"), at(&format!("{upper}/database")));
        assert_eq!(v.translate("/dev/shm/q"), Host::Unknown("tmpfs".into()));
        // A later mount over a parent hides the earlier one below it.
        let over = v.bind("/data", "/", false, false);
        assert_eq!(over.translate("/dev/shm/q"), at("/srv/vol/dev/shm/q"));
        let fresh = v.mounted("/data", "/dev/sdb1");
        assert!(matches!(fresh.translate("/data/x"), Host::Unknown(_)));
        assert_eq!(fresh.umount("/data").translate("/data/x"), at("/srv/vol/x"));
    }

    #[test]
    fn a_table_without_its_root_and_malformed_points() {
        let v = table(&[("/data", "/vol"), ("relative", "/x")], true);
        assert!(matches!(v.translate("/etc"), Host::Unknown(_)));
        assert_eq!(v.translate("/data/f"), at("/vol/f"));
        assert!(matches!(
            v.unknown("joined").translate("/data/f"),
            Host::Unknown(w) if w == "joined"
        ));
    }

    #[test]
    fn a_move_takes_the_mounts_under_it() {
        let v = table(&[("/", "/r"), ("/a", "/A"), ("/a/b", "/B")], true);
        let moved = v.bind("/a", "/z", false, true);
        assert_eq!(moved.translate("/z/b/f"), at("/B/f"));
        assert_eq!(moved.translate("/z/f"), at("/A/f"));
        assert_eq!(moved.translate("/a/f"), at("/r/a/f"));
    }
}
