//! Where the traced processes' paths lie on the host, as /proc shows it:
//! a process's root and mount table matched against ours, sent to the
//! analyzer as a `view` event. Read when a process is attached to, and
//! after an exec or a setns that left it somewhere else than our own root
//! and mount namespace, but only while /proc still shows where the kernel
//! said it stood at that call: a process that moved on since (or is gone)
//! keeps the view the analyzer works out from its own calls.

use std::{collections::HashSet, os::unix::fs::OpenOptionsExt};

use auditor_analyzer::event::{Container, Event, EventKind, FileId, ViewMount, ViewStamp};
use auditor_analyzer::paths::normalize;
use auditor_analyzer::views::{rebase, under};

use super::mountinfo::{self, Mount, Table};
use super::procfs::ProcFs;
use crate::attach::cgroup::container_id;

/// The runtime state read for a container's name, at most.
const MAX_CONFIG: u64 = 1 << 20;

/// What /proc showed of one process's paths.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// The `view` event to send; None when it sees what the host sees.
    pub view: Option<EventKind>,
    /// In our mount namespace but under another root: that root, as our
    /// root reaches it (its cwd and fd links then read as host paths).
    pub root: Option<String>,
}

impl Seen {
    /// A cwd or fd link from /proc, as the process names it. One outside
    /// its root has no name there: it is kept, marked, as no path.
    pub fn in_process(&self, link: &str) -> String {
        match &self.root {
            Some(root) if link.starts_with('/') => {
                if under(link, root) {
                    rebase(link, root)
                } else {
                    format!("outside its root: {link}")
                }
            }
            _ => link.to_string(),
        }
    }
}

/// Reads views from /proc and remembers which processes may not see what
/// the host sees.
pub struct Views {
    proc: ProcFs,
    me: u32,
    /// Where we stand: a process standing there names host paths.
    ours: Option<ViewStamp>,
    /// Processes whose view was sent, or changed by their own calls (and
    /// their children): their next exec says again where they are.
    marked: HashSet<u32>,
    /// Mount table lines that did not parse.
    pub malformed: u64,
}

impl Views {
    pub fn new(proc: ProcFs) -> Views {
        let me = std::process::id();
        let ours = proc.mnt_ns(me).ok().zip(proc.root_id(me).ok());
        Views {
            proc,
            me,
            ours: ours.map(|(mnt_ns, root)| ViewStamp { mnt_ns, root }),
            marked: HashSet::new(),
            malformed: 0,
        }
    }

    /// What a process found at attach sees.
    pub fn at_attach(&mut self, pid: u32) -> Seen {
        let seen = self.read(pid).unwrap_or(Seen {
            view: None,
            root: None,
        });
        if seen.view.is_some() {
            self.marked.insert(pid);
        }
        seen
    }

    /// Follows the stream: the `view` events to hand the analyzer before
    /// and after `ev`.
    pub fn around(&mut self, ev: &Event) -> (Option<Event>, Option<Event>) {
        match &ev.kind {
            EventKind::Fork {
                child_pid,
                thread: false,
                new_mount_ns,
                ..
            } if *new_mount_ns || self.marked.contains(&ev.pid) => {
                self.marked.insert(*child_pid);
            }
            EventKind::Exit {
                group_dead: true, ..
            } => {
                self.marked.remove(&ev.pid);
            }
            EventKind::Chroot { ret: 0, .. }
            | EventKind::PivotRoot { ret: 0, .. }
            | EventKind::Mount { ret: 0, .. }
            | EventKind::Umount { ret: 0, .. }
            | EventKind::Unshare { ret: 0, .. } => {
                self.marked.insert(ev.pid);
            }
            // The exec's own path is named in the view it runs in.
            EventKind::Exec { stamp, .. } => return (self.refresh(ev, *stamp), None),
            // The setns itself makes the view unknown; what /proc shows
            // of the namespace it joined comes after it.
            EventKind::Setns { stamp, ret: 0, .. } => {
                self.marked.insert(ev.pid);
                return (None, self.refresh(ev, *stamp));
            }
            _ => {}
        }
        (None, None)
    }

    /// The view to send after a call that left the process at `stamp`:
    /// None when /proc no longer shows it there, or nothing changed.
    fn refresh(&mut self, ev: &Event, stamp: Option<ViewStamp>) -> Option<Event> {
        let stamp = stamp?;
        if !self.stands_at(ev.pid, stamp) {
            return None;
        }
        let kind = if Some(stamp) == self.ours && self.container_of(ev.pid).is_none() {
            if !self.marked.remove(&ev.pid) {
                return None;
            }
            host_view()
        } else {
            let kind = self.read(ev.pid)?.view.unwrap_or_else(host_view);
            // A chroot or setns while its table was read would make this
            // the view of a later call, and that call would then be
            // applied over it again.
            if !self.stands_at(ev.pid, stamp) {
                return None;
            }
            self.marked.insert(ev.pid);
            kind
        };
        Some(Event {
            seq: ev.seq,
            ts_ns: ev.ts_ns,
            pid: ev.pid,
            tid: ev.pid,
            comm: ev.comm.clone(),
            kind,
            stack: None,
            in_process: Default::default(),
        })
    }

    /// Whether /proc shows `pid` in the mount namespace and root of `stamp`.
    fn stands_at(&self, pid: u32, stamp: ViewStamp) -> bool {
        let now = self.proc.mnt_ns(pid).ok().zip(self.proc.root_id(pid).ok());
        now == Some((stamp.mnt_ns, stamp.root))
    }

    fn container_of(&self, pid: u32) -> Option<String> {
        self.proc
            .info(pid)
            .ok()?
            .cgroup
            .as_deref()
            .and_then(container_id)
    }

    /// Reads `pid`'s view from /proc; None when it cannot be read.
    fn read(&mut self, pid: u32) -> Option<Seen> {
        let ours = self.ours?;
        let ns = self.proc.mnt_ns(pid).ok()?;
        let host = self.table(self.me)?;
        let container = self.container_of(pid);
        let (mounts, private, root) =
            if ns == ours.mnt_ns {
                let link = self.proc.root_link(pid).ok()?;
                let whole = link.starts_with('/') && !link.ends_with(" (deleted)");
                if whole && link == "/" && container.is_none() {
                    return Some(Seen {
                        view: None,
                        root: None,
                    });
                }
                let mut mounts = vec![view_mount(
                    "/".into(),
                    if whole {
                        Ok(land(&host, &link))
                    } else {
                        Err(format!("its root directory is gone ({link:?})"))
                    },
                )];
                if whole {
                    // Overlays mounted under its root: writes there land in
                    // their upper directories.
                    for m in host.mounts.iter().filter(|m| {
                        m.fstype == "overlay" && m.point != link && under(&m.point, &link)
                    }) {
                        mounts.push(view_mount(rebase(&m.point, &link), overlay_upper(m, &host)));
                    }
                }
                (mounts, false, whole.then_some(link))
            } else {
                let table = self.table(pid)?;
                let mut mounts: Vec<ViewMount> = table
                    .mounts
                    .iter()
                    .map(|m| view_mount(m.point.clone(), host_of(m, &host)))
                    .collect();
                if !mounts.iter().any(|m| m.at == "/") {
                    // Its root is no mount point of its namespace (a chroot
                    // inside it, as `unshare --mount --root` makes): the
                    // table lists only the mounts under that root, maybe
                    // none, and says nothing of where the root is.
                    let link = self.proc.root_link(pid).ok()?;
                    let id = self.proc.root_id(pid).ok()?;
                    mounts.insert(0, view_mount("/".into(), root_on_host(&link, id, &host)));
                }
                (mounts, true, None)
            };
        let container = container.map(|id| Container {
            name: name_of(&id, &mounts),
            id,
        });
        Some(Seen {
            view: Some(EventKind::View {
                mounts,
                private,
                container,
            }),
            root,
        })
    }

    fn table(&mut self, pid: u32) -> Option<Table> {
        let t = mountinfo::parse(&self.proc.mountinfo(pid).ok()?);
        self.malformed += t.malformed;
        Some(t)
    }
}

/// Where the root of a process in another mount namespace lies on the
/// host when that root is no mount point there. `link` is its /proc root
/// link, a path from its namespace's root; a namespace copied from ours
/// (unshare) still has the directory at that path, which is taken only
/// when our root reaches the very directory `id` names there.
fn root_on_host(link: &str, id: FileId, host: &Table) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let why = "its root is not a mount point of its mount namespace";
    if !link.starts_with('/') || link.ends_with(" (deleted)") {
        return Err(format!("{why} ({link:?})"));
    }
    let here = std::fs::canonicalize(link)
        .ok()
        .and_then(|p| Some((p.to_str()?.to_string(), std::fs::metadata(&p).ok()?)));
    match here {
        Some((path, m)) if m.dev() == id.dev && m.ino() == id.ino => Ok(land(host, &path)),
        _ => Err(format!(
            "{why}, and {link:?} on the host is not the directory it is"
        )),
    }
}

/// The view of a process that sees what the host sees.
fn host_view() -> EventKind {
    EventKind::View {
        mounts: Vec::new(),
        private: false,
        container: None,
    }
}

fn view_mount(at: String, host: Result<String, String>) -> ViewMount {
    match host {
        Ok(h) => ViewMount {
            at,
            host: Some(h),
            unknown: None,
        },
        Err(why) => ViewMount {
            at,
            host: None,
            unknown: Some(why),
        },
    }
}

/// `rel` (absolute) under `dir`.
fn place(dir: &str, rel: &str) -> String {
    normalize(&format!("{dir}/{rel}"))
}

/// Where a write to host path `path` lands: in the upper directory when
/// `path` is inside one of our overlay mounts.
fn land(host: &Table, path: &str) -> String {
    match host.mounts.iter().rev().find(|m| under(path, &m.point)) {
        Some(m) if m.fstype == "overlay" => match overlay_upper(m, host) {
            Ok(upper) => place(&upper, &rebase(path, &m.point)),
            Err(_) => path.to_string(),
        },
        _ => path.to_string(),
    }
}

/// The upper directory an overlay mount writes to, when the host can name
/// it: its option is a path as its mounter saw it, taken when the host
/// mounts the same overlay too (dockerd mounts it in its namespace, the
/// container gets its own mount of it).
fn overlay_upper(m: &Mount, host: &Table) -> Result<String, String> {
    let Some(upper) = m.super_opt("upperdir").filter(|u| u.starts_with('/')) else {
        return Err("a read-only overlay (no upper directory)".into());
    };
    if !host.mounts.iter().any(|h| h.dev == m.dev) {
        return Err(format!(
            "an overlay mounted only inside another mount namespace (upperdir {upper:?})"
        ));
    }
    Ok(place(&upper, &m.root))
}

/// The host directory behind a mount another namespace shows: the same
/// filesystem mounted here, through the directory of it both show.
fn host_of(m: &Mount, host: &Table) -> Result<String, String> {
    if m.fstype == "overlay" {
        return overlay_upper(m, host);
    }
    let best = host
        .mounts
        .iter()
        .filter(|h| h.dev == m.dev && under(&m.root, &h.root))
        .max_by_key(|h| (h.root.len(), std::cmp::Reverse(h.point.len())));
    match best {
        Some(h) => Ok(land(host, &place(&h.point, &rebase(&m.root, &h.root)))),
        None => Err(format!(
            "{} {:?} is not mounted on the host",
            m.fstype, m.source
        )),
    }
}

/// The name dockerd gave container `id`: its state directory is the one
/// it bind-mounts the container's `hostname` from.
fn name_of(id: &str, mounts: &[ViewMount]) -> Option<String> {
    let suffix = format!("/containers/{id}/hostname");
    let state = mounts
        .iter()
        .filter_map(|m| m.host.as_deref())
        .find_map(|h| h.strip_suffix("/hostname").filter(|_| h.ends_with(&suffix)))?;
    let config = read_small(&format!("{state}/config.v2.json"))?;
    let v: serde_json::Value = serde_json::from_slice(&config).ok()?;
    let name = v.get("Name")?.as_str()?.trim_start_matches('/');
    let plain = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    plain.then(|| name.to_string())
}

/// A regular file of at most [`MAX_CONFIG`] bytes, opened without
/// following a final symlink or blocking on a FIFO.
fn read_small(path: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_CONFIG {
        return None;
    }
    let mut out = Vec::new();
    f.take(MAX_CONFIG).read_to_end(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const HOST: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
50 46 0:40 / /d/overlay2/abc/merged rw,relatime shared:2 - overlay overlay rw,lowerdir=/d/l/A,upperdir=/d/overlay2/abc/diff,workdir=/d/overlay2/abc/work
60 27 254:16 /sub /mnt/data rw - xfs /dev/vdb rw
";

    const CONTAINER: &str = "\
77 52 0:40 / / rw,relatime master:2 - overlay overlay rw,lowerdir=/d/l/A,upperdir=/d/overlay2/abc/diff,workdir=/d/overlay2/abc/work
78 77 0:43 / /proc rw - proc proc rw
94 77 254:0 /srv/vol /data rw - ext4 /dev/vda rw
95 77 254:16 /sub/x /x rw - xfs /dev/vdb rw
96 77 254:32 / /other rw - ext4 /dev/vdc rw
97 77 0:41 / /ro rw - overlay overlay rw,lowerdir=/d/l/B
";

    #[test]
    fn a_container_table_maps_to_host_directories() {
        let host = mountinfo::parse(HOST);
        let c = mountinfo::parse(CONTAINER);
        let got: Vec<Result<String, String>> = c.mounts.iter().map(|m| host_of(m, &host)).collect();
        assert_eq!(got[0], Ok("/d/overlay2/abc/diff".into()));
        assert!(got[1].as_ref().unwrap_err().contains("proc"));
        assert_eq!(got[2], Ok("/srv/vol".into()));
        assert_eq!(got[3], Ok("/mnt/data/x".into()));
        assert!(
            got[4]
                .as_ref()
                .unwrap_err()
                .contains("not mounted on the host")
        );
        assert!(got[5].as_ref().unwrap_err().contains("read-only overlay"));
    }

    #[test]
    fn host_paths_inside_an_overlay_land_in_its_upper_directory() {
        let host = mountinfo::parse(HOST);
        assert_eq!(
            land(&host, "/d/overlay2/abc/merged/etc/x"),
            "/d/overlay2/abc/diff/etc/x"
        );
        assert_eq!(
            land(&host, "/d/overlay2/abc/mergedx"),
            "/d/overlay2/abc/mergedx"
        );
        let alone = mountinfo::parse("27 1 254:0 / / rw - ext4 /dev/vda rw\n");
        let c = mountinfo::parse(CONTAINER);
        assert!(
            overlay_upper(&c.mounts[0], &alone)
                .unwrap_err()
                .contains("only inside another mount namespace")
        );
    }

    #[test]
    fn links_read_inside_a_chroot() {
        let seen = Seen {
            view: None,
            root: Some("/srv/jail".into()),
        };
        assert_eq!(seen.in_process("/srv/jail/etc/x"), "/etc/x");
        assert_eq!(seen.in_process("/srv/jail"), "/");
        assert_eq!(
            seen.in_process("/var/log/x"),
            "outside its root: /var/log/x"
        );
        assert_eq!(seen.in_process("socket:[1]"), "socket:[1]");
    }

    #[test]
    fn our_own_process_sees_the_host() {
        let mut views = Views::new(ProcFs::default());
        let seen = views.at_attach(std::process::id());
        assert_eq!(seen.view, None, "{seen:?}");
        assert_eq!(views.at_attach(u32::MAX).view, None, "gone: nothing to say");
    }

    fn id_of(path: &Path) -> FileId {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).unwrap();
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    #[test]
    fn a_root_that_is_no_mount_point_is_found_by_its_identity() {
        let dir = std::env::temp_dir().join(format!("auditor-rooted-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("jail/etc")).unwrap();
        let jail = std::fs::canonicalize(dir.join("jail")).unwrap();
        let host = mountinfo::parse(HOST);
        let link = jail.to_str().unwrap();
        assert_eq!(
            root_on_host(link, id_of(&jail), &host),
            Ok(link.to_string())
        );
        let other = root_on_host(link, id_of(&jail.join("etc")), &host).unwrap_err();
        assert!(other.contains("not the directory it is"), "{other}");
        let gone = format!("{link} (deleted)");
        assert!(root_on_host(&gone, id_of(&jail), &host).is_err());
        assert!(root_on_host("jail", id_of(&jail), &host).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A /proc tree with us and pid 4242, which `unshare --mount --root`
    /// left in a namespace of its own under `jail`: its mount table lists
    /// nothing.
    fn unshared_under(dir: &Path, jail: &Path) -> ProcFs {
        use std::os::unix::fs::symlink;
        let proc = dir.join("proc");
        for (pid, root, table) in [(std::process::id(), Path::new("/"), HOST), (4242, jail, "")] {
            let p = proc.join(pid.to_string());
            std::fs::create_dir_all(p.join("ns")).unwrap();
            std::fs::write(p.join("ns/mnt"), "").unwrap();
            symlink(root, p.join("root")).unwrap();
            std::fs::write(p.join("mountinfo"), table).unwrap();
        }
        ProcFs::new(proc)
    }

    fn exec(pid: u32, stamp: ViewStamp) -> Event {
        Event {
            seq: 7,
            ts_ns: 1,
            pid,
            tid: pid,
            comm: "busybox".into(),
            kind: EventKind::Exec {
                filename: "/bin/busybox".into(),
                argv: Vec::new(),
                stamp: Some(stamp),
            },
            stack: None,
            in_process: Default::default(),
        }
    }

    #[test]
    fn an_exec_under_unshare_root_is_given_its_root_on_the_host() {
        let dir = std::env::temp_dir().join(format!("auditor-unshared-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("jail")).unwrap();
        let jail = std::fs::canonicalize(dir.join("jail")).unwrap();
        let proc = unshared_under(&dir, &jail);
        let mut views = Views::new(proc.clone());
        let stamp = ViewStamp {
            mnt_ns: proc.mnt_ns(4242).unwrap(),
            root: id_of(&jail),
        };
        let (before, after) = views.around(&exec(4242, stamp));
        assert_eq!(after, None);
        let want = EventKind::View {
            mounts: vec![ViewMount {
                at: "/".into(),
                host: Some(jail.to_str().unwrap().into()),
                unknown: None,
            }],
            private: true,
            container: None,
        };
        assert_eq!(before.map(|e| e.kind), Some(want));
        // Moved on since (another root): nothing from /proc.
        let moved = ViewStamp {
            root: id_of(&dir),
            ..stamp
        };
        assert_eq!(views.around(&exec(4242, moved)), (None, None));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn container_names_come_from_the_state_next_to_its_hostname() {
        let dir = std::env::temp_dir().join(format!("auditor-views-{}", std::process::id()));
        let id = "a".repeat(64);
        let state = dir.join("containers").join(&id);
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(
            state.join("config.v2.json"),
            br#"{"Name":"/web-1","ID":"x"}"#,
        )
        .unwrap();
        let mounts = vec![ViewMount {
            at: "/etc/hostname".into(),
            host: Some(format!("{}/hostname", state.display())),
            unknown: None,
        }];
        assert_eq!(name_of(&id, &mounts).as_deref(), Some("web-1"));
        std::fs::write(state.join("config.v2.json"), b"{\"Name\":\"/\\u001b[31m\"}").unwrap();
        assert_eq!(name_of(&id, &mounts), None, "no control characters");
        assert_eq!(name_of(&"b".repeat(64), &mounts), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
