//! Host paths through the whole analyzer: chroots, a re-exec that pivots
//! into a layer directory, a container's view, paths the host cannot name,
//! and recordings that replay to the same names.

use crate::event::{Container, EventKind, ViewMount};
use crate::test_support::*;
use crate::{Analyzer, Config, Event};

fn chroot(pid: u32, path: &str) -> Event {
    ev(
        pid,
        EventKind::Chroot {
            path: path.into(),
            ret: 0,
        },
    )
}

fn mount(pid: u32, source: &str, target: &str, flags: u64) -> Event {
    ev(
        pid,
        EventKind::Mount {
            source: source.into(),
            target: target.into(),
            flags,
            ret: 0,
        },
    )
}

fn view(pid: u32, mounts: &[(&str, Option<&str>)], container: Option<&str>) -> Event {
    ev(
        pid,
        EventKind::View {
            mounts: mounts
                .iter()
                .map(|(at, host)| ViewMount {
                    at: at.to_string(),
                    host: host.map(str::to_string),
                    unknown: host.is_none().then(|| "tmpfs inside it".to_string()),
                })
                .collect(),
            private: true,
            container: container.map(|id| Container {
                id: id.into(),
                name: Some("web".into()),
            }),
        },
    )
}

/// A careless rename inside a chroot, the way `chroot JAIL sh -c 'mv'` does it.
fn careless_rename(pid: u32) -> Vec<Event> {
    trace![
        create_unsynced(pid, "etc/passwd.tmp", 3, 30, 100),
        rename(pid, "/etc/passwd.tmp", "/etc/passwd"),
        exit(pid, 0),
    ]
}

/// Pid 100 in /srv chroots into `jail` and renames carelessly there.
fn jailed_rename(jail: &str) -> Vec<Event> {
    trace![
        start(100, "/srv"),
        chroot(100, jail),
        chdir(100, "/"),
        careless_rename(100),
    ]
}

#[test]
fn a_rename_inside_a_chroot_is_reported_where_it_is_on_the_host() {
    let findings = run(jailed_rename("jail"));
    let f = one(&findings, "rename-without-fsync");
    assert_eq!(f.path, "/srv/jail/etc/passwd");
    assert_eq!(f.path_in_process.as_deref(), Some("/etc/passwd"));
    assert_eq!(f.host_path_unknown, None);
    assert!(f.summary.contains("/srv/jail/etc/passwd"), "{}", f.summary);
}

/// dockerd's docker-untar: a re-exec of /proc/self/exe in a private mount
/// namespace that binds the layer directory on itself, pivots into it,
/// drops the old root and writes the layer's files with absolute paths.
#[test]
fn docker_untar_writes_land_in_the_layer_directory() {
    use auditor_common::linux::ns::{CLONE_NEWNS, MS_BIND, MS_PRIVATE_REC, MS_REC};
    let diff = "/var/lib/docker/overlay2/abc/diff";
    let old = format!("{diff}/.pivot_root1");
    let mut dockerd = start(10, "/");
    if let EventKind::ProcessStart { exe, .. } = &mut dockerd.kind {
        *exe = "/usr/sbin/dockerd".into();
    }
    let events = trace![
        dockerd,
        fork(10, 20),
        exec(20, "/proc/self/exe", &["docker-untar", "/", diff]),
        ev(
            20,
            EventKind::Unshare {
                flags: CLONE_NEWNS,
                ret: 0,
            },
        ),
        mount(20, "", "/", MS_PRIVATE_REC),
        mount(20, diff, diff, MS_BIND | MS_REC),
        ev(
            20,
            EventKind::PivotRoot {
                new_root: diff.into(),
                put_old: old.clone(),
                ret: 0,
            },
        ),
        chdir(20, "/"),
        ev(
            20,
            EventKind::Umount {
                target: "/.pivot_root1".into(),
                flags: 2,
                ret: 0,
            },
        ),
        chroot(20, "/"),
        create_unsynced(20, "/etc/motd", 8, 40, 6),
        exit(20, 0),
    ];
    let findings = run(events);
    let f = one(&findings, "unsynced-at-exit");
    assert_eq!(f.path, format!("{diff}/etc/motd"));
    assert_eq!(f.path_in_process.as_deref(), Some("/etc/motd"));
    assert_eq!(f.process.exe.as_deref(), Some("/usr/sbin/dockerd"));
    assert_eq!(f.process.argv[0], "docker-untar");
}

#[test]
fn a_container_view_names_the_volume_and_the_container() {
    let upper = "/var/lib/docker/overlay2/abc/diff";
    let events = trace![
        start(100, "/"),
        view(
            100,
            &[
                ("/", Some(upper)),
                ("/data", Some("/srv/vol")),
                ("/dev/shm", None),
            ],
            Some("c0ffee"),
        ),
        write_new(100, "/data/db", 3, 50, 10),
        write_new(100, "/rootfile", 4, 51, 10),
        exit(100, 0),
    ];
    let findings = run(events);
    let mut paths: Vec<(&str, Option<&str>)> = findings
        .iter()
        .map(|f| (f.path.as_str(), f.path_in_process.as_deref()))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            ("/srv/vol/db", Some("/data/db")),
            (
                "/var/lib/docker/overlay2/abc/diff/rootfile",
                Some("/rootfile")
            ),
        ]
    );
    for f in &findings {
        let c = f.container.as_ref().expect("the container");
        assert_eq!((c.id.as_str(), c.name.as_deref()), ("c0ffee", Some("web")));
    }
}

/// A path the host has no name for is reported as the process's own with
/// the reason, and never mixed up with the host file of that spelling.
#[test]
fn an_unknown_host_path_says_so_and_stays_apart_from_the_host() {
    let events = trace![
        start(1, "/"),
        open_existing(1, "/dev/shm/x", 3, reg(60)),
        close(1, 3),
        start(100, "/"),
        view(100, &[("/", Some("/up")), ("/dev/shm", None)], None),
        create_unsynced(100, "/dev/shm/x.tmp", 3, 61, 10),
        rename(100, "/dev/shm/x.tmp", "/dev/shm/x"),
        exit(100, 0),
        exit(1, 0),
    ];
    let findings = run(events);
    let f = one(&findings, "rename-without-fsync");
    assert_eq!(f.path, "/dev/shm/x");
    assert_eq!(f.host_path_unknown.as_deref(), Some("tmpfs inside it"));
    assert_eq!(
        f.inode.map(|i| i.ino),
        Some(61),
        "not the host's /dev/shm/x"
    );
    assert!(!f.summary.contains("\\0"), "{}", f.summary);
}

/// What a live run hands its sink (paths made host paths, the process's
/// own beside them) replays to the same findings.
#[test]
fn translated_events_replay_to_the_same_findings() {
    let mut live = Analyzer::new(Config::default()).unwrap();
    let mut recorded = Vec::new();
    for mut e in number(jailed_rename("/srv/jail")) {
        live.process(&mut e);
        let line = serde_json::to_string(&e).unwrap();
        recorded.push(serde_json::from_str::<Event>(&line).unwrap());
    }
    live.finish();
    let rename = recorded
        .iter()
        .find(|e| matches!(e.kind, EventKind::Rename { .. }))
        .unwrap();
    assert_eq!(
        rename.in_process.path2_in_process.as_deref(),
        Some("/etc/passwd")
    );
    let mut replay = Analyzer::new(Config::default()).unwrap();
    for mut e in recorded {
        replay.process(&mut e);
    }
    replay.finish();
    assert_eq!(live.findings(), replay.findings());
    assert_eq!(live.findings()[0].path, "/srv/jail/etc/passwd");
}

/// A child cloned into a mount namespace of its own binds a directory:
/// its writes there land in the source, its parent's paths are unmoved.
#[test]
fn a_bind_mount_in_a_cloned_namespace_moves_only_the_childs_paths() {
    use auditor_common::linux::ns::MS_BIND;
    let events = trace![
        start(10, "/"),
        clone_process(10, 20, false, true),
        mount(20, "/srv/data", "/mnt", MS_BIND),
        write_new(20, "/mnt/a", 3, 80, 1),
        exit(20, 0),
        write_new(10, "/mnt/b", 3, 81, 1),
        exit(10, 0),
    ];
    let findings = run(events);
    let mut paths: Vec<&str> = findings.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/mnt/b", "/srv/data/a"]);
}

/// A name a jailed process renamed away is not its any more: a host file
/// made there later carries no path of the jail's.
#[test]
fn a_name_renamed_away_forgets_how_the_jail_named_it() {
    let findings = run(trace![
        jailed_rename("/srv/jail"),
        start(200, "/"),
        write_new(200, "/srv/jail/etc/passwd.tmp", 3, 90, 5),
        exit(200, 0),
    ]);
    let f = findings
        .iter()
        .find(|f| f.process.pid == 200)
        .expect("the host process's file");
    assert_eq!(f.path, "/srv/jail/etc/passwd.tmp");
    assert_eq!(f.path_in_process, None);
}

/// A private namespace whose mount table /proc showed empty (its root is
/// no mount there) is not the host's view: its paths are unknown, never
/// passed off as host paths.
#[test]
fn an_empty_private_table_leaves_paths_unknown() {
    let findings = run(trace![
        start(100, "/"),
        view(100, &[], None),
        careless_rename(100),
    ]);
    let f = one(&findings, "rename-without-fsync");
    assert_eq!(f.path, "/etc/passwd");
    assert!(f.host_path_unknown.is_some(), "{f:#?}");
}
