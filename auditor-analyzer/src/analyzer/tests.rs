//! Tracking edge cases, end to end through the façade: fd tables, process
//! lifecycles, identity, paths, lost events, configuration.

use crate::event::{EventKind, FileInfo, FileType};
use crate::test_support::*;
use crate::track::fds::flags::{O_CLOEXEC, O_CREAT, O_SYNC};
use crate::track::paths::AT_FDCWD;
use crate::{Analyzer, Config, Severity};

/// A process that wrote 10 bytes to /d/f (inode 11) through fd 3.
fn wrote(pid: u32) -> Vec<crate::Event> {
    vec![
        start(pid, "/d"),
        open_existing(pid, "/d/f", 3, sized(reg(11), 5)),
        write(pid, 3, 10),
    ]
}

fn dup(pid: u32, call: &str, old_fd: i32, new_fd: Option<i32>, ret: i64) -> crate::Event {
    ev(
        pid,
        EventKind::Dup {
            call: sys(call),
            old_fd,
            new_fd,
            cloexec: false,
            ret,
            file: None,
        },
    )
}

fn thread_exit(pid: u32, tid: u32) -> crate::Event {
    on_tid(
        ev(
            pid,
            EventKind::Exit {
                group_dead: false,
                code: Some(0),
                signal: None,
                core_dumped: false,
            },
        ),
        tid,
    )
}

/// An exec of /usr/bin/next.
fn exec_next(pid: u32) -> crate::Event {
    exec(pid, "/usr/bin/next", &["next"])
}

/// A RENAME_EXCHANGE of `a` and `b`; `file` is what `b` was.
fn exchange(a: &str, b: &str, file: FileInfo) -> crate::Event {
    let mut e = rename_full(100, "renameat2", a, b, AT_FDCWD, Some(file));
    if let EventKind::Rename { flags, .. } = &mut e.kind {
        *flags = 2;
    }
    e
}

#[test]
fn fd_reuse_does_not_confuse_files() {
    let events = vec![
        start(100, "/d"),
        open_existing(100, "/d/a", 3, reg(20)),
        write(100, 3, 10),
        close(100, 3),
        open_existing(100, "/d/b", 3, reg(21)),
        fsync(100, 3),
        exit(100, 0),
    ];
    let findings = run(events);
    let f = one(&findings, "unsynced-at-exit");
    assert_eq!(
        f.path, "/d/a",
        "the fsync through the reused fd 3 was for /d/b"
    );
}

#[test]
fn fsync_through_a_dup_is_clean() {
    assert_clean(&run(trace![
        wrote(100),
        dup(100, "dup", 3, None, 4),
        close(100, 3),
        fsync(100, 4),
        exit(100, 0),
    ]));
}

#[test]
fn dup2_onto_an_open_fd_closes_it_first() {
    let findings = run(trace![
        wrote(100),
        open_existing(100, "/d/other", 4, reg(30)),
        write(100, 4, 10),
        dup(100, "dup2", 3, Some(4), 4),
        fsync(100, 4),
        exit(100, 0),
    ]);
    assert_eq!(one(&findings, "unsynced-at-exit").path, "/d/other");
}

#[test]
fn threads_share_the_fd_table() {
    let events = vec![
        start(100, "/d"),
        spawn_thread(100, 101),
        on_tid(open_existing(100, "/d/f", 3, reg(11)), 101),
        on_tid(write(100, 3, 10), 101),
        fsync(100, 3),
        thread_exit(100, 101),
        exit(100, 0),
    ];
    assert_clean(&run(events));
}

#[test]
fn clone_files_shares_the_table_and_fork_copies_it() {
    let child_opens = |shares_files: bool| {
        vec![
            start(100, "/d"),
            clone_process(100, 200, shares_files, false),
            open_existing(200, "/d/f", 5, reg(11)),
            write(200, 5, 10),
            fsync(100, 5),
            exit(200, 0),
            exit(100, 0),
        ]
    };
    assert_clean(&run(child_opens(true)));
    let (a, findings) = run_with(Config::default(), child_opens(false));
    assert_eq!(one(&findings, "unsynced-at-exit").process.pid, 200);
    assert_eq!(
        a.stats().unknown_fds,
        1,
        "the parent's fd 5 was never opened"
    );
}

#[test]
fn exec_closes_cloexec_fds_only() {
    let opened = |fl: u32| {
        vec![
            start(100, "/d"),
            open_with(100, "/d/f", AT_FDCWD, O_WRONLY | fl, 3, Some(reg(11))),
            write(100, 3, 10),
            exec_next(100),
            fsync(100, 3),
            exit(100, 0),
        ]
    };
    assert_clean(&run(opened(0)));
    let (a, findings) = run_with(Config::default(), opened(O_CLOEXEC));
    assert_eq!(
        one(&findings, "unsynced-at-exit").process.exe.as_deref(),
        Some("/usr/bin/next"),
        "exe after exec"
    );
    assert_eq!(a.stats().unknown_fds, 1);
}

#[test]
fn f_setfd_and_close_range_cloexec_mark_fds() {
    let fcntl = ev(
        100,
        EventKind::Fcntl {
            fd: 3,
            cmd: 2,
            arg: 1,
            ret: 0,
            file: None,
        },
    );
    one(
        &run(trace![
            wrote(100),
            fcntl,
            exec_next(100),
            fsync(100, 3),
            exit(100, 0)
        ]),
        "unsynced-at-exit",
    );
    let range = ev(
        100,
        EventKind::CloseRange {
            first: 3,
            last: u32::MAX,
            flags: 4,
            ret: 0,
        },
    );
    assert_clean(&run(trace![wrote(100), range, fsync(100, 3), exit(100, 0)]));
}

#[test]
fn o_sync_writes_are_durable_at_once() {
    let fl = O_WRONLY | O_SYNC;
    assert_clean(&run(trace![
        start(100, "/d"),
        open_with(
            100,
            "/d/f",
            AT_FDCWD,
            fl | O_CREAT,
            3,
            Some(FileInfo {
                flags: fl,
                created: true,
                ..reg(11)
            }),
        ),
        write(100, 3, 10),
        close(100, 3),
        fsync_dir(100, "/d", 4, 2),
        exit(100, 0),
    ]));
}

#[test]
fn syncfs_and_sync_make_everything_durable() {
    assert_clean(&run(trace![
        wrote(100),
        sync_call(100, "syncfs", Some(3), 0, None),
        exit(100, 0),
    ]));
    let findings = run(trace![
        wrote(100),
        write_new(100, "/d/n.tmp", 4, 12, 10),
        rename(100, "/d/n.tmp", "/d/n"),
        sync_call(100, "sync", None, 0, None),
        exit(100, 0),
    ]);
    assert_eq!(
        rules(&findings),
        vec!["rename-without-fsync"],
        "sync comes too late for the rename, but covers the rest"
    );
}

#[test]
fn syncfs_of_another_filesystem_does_not_help() {
    let other = FileInfo {
        id: crate::FileId { dev: 7, ino: 1 },
        ..reg(1)
    };
    let events = trace![
        wrote(100),
        open_existing(100, "/mnt/x", 4, other),
        sync_call(100, "syncfs", Some(4), 0, None),
        exit(100, 0),
    ];
    one(&run(events), "unsynced-at-exit");
}

#[test]
fn msync_ms_sync_of_a_mapping_is_durable() {
    let mapped = |flags: u32| {
        trace![
            wrote(100),
            ev(
                100,
                EventKind::Mmap {
                    fd: 3,
                    addr: 0x7000_0000,
                    len: 8192,
                    prot: 3,
                    flags: 1,
                    offset: 0,
                    file: None,
                },
            ),
            sync_call(100, "msync", None, 0, Some((0x7000_1000, 4096, flags))),
            exit(100, 0),
        ]
    };
    assert_clean(&run(mapped(4)));
    one(&run(mapped(1)), "unsynced-at-exit");
}

#[test]
fn volatile_files_pipes_and_devices_are_not_judged() {
    let pipe = FileInfo {
        file_type: FileType::Fifo,
        fs: "pipefs".into(),
        ..reg(2)
    };
    let events = vec![
        start(100, "/d"),
        open_new(100, "/dev/shm/x", 3, on_fs(reg(1), "tmpfs")),
        write(100, 3, 10),
        rename(100, "/dev/shm/x", "/dev/shm/y"),
        write_full(100, 1, 10, 10, None, Some(pipe)),
        exit(100, 0),
    ];
    let (a, findings) = run_with(Config::default(), events);
    assert_clean(&findings);
    let ignored = a.stats().ignored_files;
    assert_eq!(ignored.count, 2);
    assert_eq!(ignored.by_reason["volatile filesystem (tmpfs)"], 1);
    assert_eq!(ignored.by_reason["pipe"], 1);
    assert!(
        ignored.examples[0].starts_with("/dev/shm/x"),
        "{:?}",
        ignored.examples
    );
}

#[test]
fn lost_events_make_older_verdicts_inconclusive() {
    let (a, findings) = run_with(
        Config::default(),
        trace![wrote(100), lost(12), exit(100, 0)],
    );
    let f = one(&findings, "unsynced-at-exit");
    assert!(f.inconclusive);
    assert!(
        f.inconclusive_reason
            .as_ref()
            .unwrap()
            .contains("12 events were lost")
    );
    assert_eq!(a.stats().lost_events, 12);
}

#[test]
fn state_that_began_after_a_loss_stays_conclusive_until_the_end() {
    let events = trace![
        start(100, "/d"),
        lost(3),
        write_new(100, "/d/a.tmp", 3, 10, 10),
        rename(100, "/d/a.tmp", "/d/a"),
    ];
    let findings = run(events);
    assert!(!one(&findings, "rename-without-fsync").inconclusive);
    // Every verdict is given at the end; a loss taints those whose state
    // began before it, and the rename came after.
    let f = one(&findings, "rename-without-dir-fsync");
    assert!(!f.inconclusive, "{f:#?}");
    // A loss after the rename could have hidden the directory's fsync.
    let findings = run(trace![
        start(100, "/d"),
        write_new(100, "/d/a.tmp", 3, 10, 10),
        rename(100, "/d/a.tmp", "/d/a"),
        lost(2),
        exit(100, 0),
    ]);
    assert!(one(&findings, "rename-without-dir-fsync").inconclusive);
}

#[test]
fn pid_reuse_starts_a_fresh_process() {
    let events = trace![
        wrote(100),
        exit(100, 0),
        start(1, "/"),
        fork(1, 100),
        fsync(100, 3),
        exit(100, 0),
    ];
    let (a, findings) = run_with(Config::default(), events);
    assert_eq!(one(&findings, "unsynced-at-exit").process.pid, 100);
    assert_eq!(
        a.stats().unknown_fds,
        1,
        "the new pid 100 does not inherit the dead one's fds"
    );
    assert_eq!(a.stats().processes, 3);
}

/// Feeds the events to a default analyzer; returns it and the events as
/// it left them, their paths resolved in place.
fn resolved(events: Vec<crate::Event>) -> (Analyzer, Vec<crate::Event>) {
    let mut a = Analyzer::new(Config::default()).unwrap();
    let mut events = number(events);
    for e in &mut events {
        a.process(e);
    }
    (a, events)
}

/// The path (or the two of a rename) an event names.
fn path_of(e: &crate::Event) -> String {
    match &e.kind {
        EventKind::Open { path, .. } => path.clone(),
        EventKind::Rename {
            old_path, new_path, ..
        } => format!("{old_path} -> {new_path}"),
        EventKind::Chdir { path, .. } => path.clone(),
        _ => String::new(),
    }
}

#[test]
fn relative_paths_resolve_against_cwd_and_dirfd_in_place() {
    let create = |path: &str, dirfd: i32, fd: i64, ino: u64| {
        let info = FileInfo {
            created: true,
            ..reg(ino)
        };
        open_with(100, path, dirfd, O_WRONLY | O_CREAT, fd, Some(info))
    };
    let (a, events) = resolved(vec![
        start(100, "/home/u"),
        create("data/../db/a.tmp", AT_FDCWD, 3, 10),
        open_dir(100, "/srv/db", 5, dir(3)),
        create("x.tmp", 5, 6, 11),
        rename_full(100, "renameat", "x.tmp", "x", 5, None),
        chdir(100, "../v"),
        ev(100, EventKind::Fchdir { fd: 5, ret: 0 }),
    ]);
    assert_eq!(path_of(&events[1]), "/home/u/db/a.tmp");
    assert_eq!(path_of(&events[3]), "/srv/db/x.tmp");
    assert_eq!(path_of(&events[4]), "/srv/db/x.tmp -> /srv/db/x");
    assert_eq!(path_of(&events[5]), "/home/v");
    assert_eq!(
        a.cwd_of(100).as_deref(),
        Some("/srv/db"),
        "fchdir to the dirfd"
    );
    assert_eq!(a.live_pids(), vec![100]);
}

#[test]
fn unlinked_temp_files_do_not_matter() {
    let events = trace![
        start(100, "/d"),
        write_new(100, "/d/scratch", 3, 10, 10),
        unlink_call(100, "unlinkat", "scratch"),
        write(100, 3, 10),
        exit(100, 0),
    ];
    assert_clean(&run(events));
}

#[test]
fn process_streams_findings_as_they_are_raised_and_finish_once() {
    let mut a = Analyzer::new(Config::default()).unwrap();
    let mut out = Vec::new();
    for mut e in number(trace![
        start(100, "/d"),
        write_new(100, "/d/a.tmp", 3, 10, 1),
        rename(100, "/d/a.tmp", "/d/a"),
    ]) {
        out.push(a.process(&mut e).len());
    }
    assert_eq!(out, vec![0, 0, 0, 1], "the rename is at risk at once");
    // Every verdict comes at the end: the rename, and its directory never
    // fsynced; the unsynced data is the rename's exposure already.
    let end = a.finish();
    assert_eq!(
        rules(&end),
        vec!["rename-without-fsync", "rename-without-dir-fsync"]
    );
    assert!(a.finish().is_empty());
    assert_eq!(a.findings().len(), 2);
}

#[test]
fn ignore_globs_and_rule_selection() {
    let events = || {
        trace![
            wrote(100),
            write_new(100, "/d/a.tmp", 4, 10, 1),
            rename(100, "/d/a.tmp", "/d/a"),
            exit(100, 0),
        ]
    };
    let all = run(events());
    assert_eq!(
        rules(&all),
        vec![
            "rename-without-fsync",
            "unsynced-at-exit",
            "rename-without-dir-fsync"
        ]
    );
    let config = Config {
        ignore: vec!["/d/f".into()],
        ..Config::default()
    };
    let (a, findings) = run_with(config, events());
    assert_eq!(
        rules(&findings),
        vec!["rename-without-fsync", "rename-without-dir-fsync"]
    );
    assert_eq!(a.stats().suppressed_findings, 1);
    let config = Config {
        only_rules: vec!["rename-without-fsync".into()],
        ..Config::default()
    };
    assert_eq!(
        rules(&run_with(config, events()).1),
        vec!["rename-without-fsync"]
    );
    let config = Config {
        skip_rules: vec!["rename-without-fsync".into()],
        ..Config::default()
    };
    assert_eq!(
        rules(&run_with(config, events()).1),
        vec!["unsynced-at-exit", "rename-without-dir-fsync"]
    );
    assert!(
        Analyzer::new(Config {
            only_rules: vec!["nope".into()],
            ..Config::default()
        })
        .is_err()
    );
    assert_eq!(Config::default().fail_on, Severity::Medium);
}

#[test]
fn unlinking_one_of_two_names_keeps_the_data_relevant() {
    let findings = run(trace![
        wrote(100),
        rename_full(100, "link", "/d/f", "/d/g", AT_FDCWD, Some(reg(11))),
        unlink(100, "/d/f"),
        exit(100, 0),
    ]);
    assert_eq!(one(&findings, "rename-without-fsync").path, "/d/g");
    // Already reported at the link.
    assert_none_of(&findings, "unsynced-at-exit");
    assert_clean(&run(trace![wrote(100), unlink(100, "/d/f"), exit(100, 0)]));
}

#[test]
fn rename_exchange_swaps_names() {
    let events = trace![
        start(100, "/d"),
        open_existing(100, "/d/b", 4, reg(12)),
        fsync(100, 4),
        close(100, 4),
        wrote(100).into_iter().skip(1).collect::<Vec<_>>(),
        exchange("/d/f", "/d/b", reg(11)),
        sync_call(100, "fdatasync", Some(3), 0, None),
        fsync_dir(100, "/d", 5, 2),
    ];
    let (mut a, all) = process_all(events);
    let f = one(&all, "rename-without-fsync");
    assert_eq!(f.path, "/d/b");
    assert_eq!(f.evidence["destination_existed"], true);
    // The other inode now answers to the old name.
    let mut unlink = unlink(100, "/d/f");
    unlink.seq = 100;
    a.process(&mut unlink);
    let mut done = exit(100, 0);
    done.seq = 101;
    a.process(&mut done);
    // The fdatasync after the exchange made the renamed data durable; the
    // durable file removed under the old name (inode 12) is a removal its
    // directory never made durable.
    let end = a.finish();
    assert_eq!(
        rules(&end),
        vec!["rename-without-fsync", "unlink-without-dir-fsync"]
    );
    assert_eq!(end[0].severity, Severity::Low);
    assert_eq!(end[0].evidence["closed_by"]["call"], "fdatasync(fd=3) = 0");
    assert_eq!(
        (end[1].path.as_str(), end[1].inode.unwrap().ino),
        ("/d/f", 12)
    );
}

#[test]
fn long_runs_stay_bounded() {
    let mut a = Analyzer::new(Config::default()).unwrap();
    let mut seq = 0;
    let mut feed = |a: &mut Analyzer, e: crate::Event| {
        seq += 1;
        let mut e = crate::Event {
            seq,
            ts_ns: seq * 1000,
            ..e
        };
        a.process(&mut e)
    };
    feed(&mut a, start(100, "/d"));
    for i in 0..60_000u64 {
        feed(
            &mut a,
            open_existing(100, &format!("/d/f{i}"), 3, reg(100 + i)),
        );
        feed(&mut a, write(100, 3, 10));
        feed(&mut a, fsync(100, 3));
        feed(&mut a, close(100, 3));
    }
    feed(&mut a, exit(100, 0));
    assert!(a.finish().is_empty());
    let stats = a.stats();
    assert!(stats.evicted_inodes >= 50_000, "{stats:?}");
    assert_eq!(stats.files_tracked, 60_000);
}

/// Files written into a temporary directory that is then renamed into
/// place (moby's layer write-set): fsyncing the directory by its new name
/// makes the names created inside it durable.
fn write_set_renamed(fsync_files: bool) -> Vec<crate::Event> {
    let mut events = trace![
        start(100, "/d"),
        mkdir(100, "/d/ws"),
        write_new(100, "/d/ws/diff", 3, 21, 71),
    ];
    if fsync_files {
        events.push(fsync(100, 3));
    }
    trace![
        events,
        close(100, 3),
        rename_known(100, "/d/ws", "/d/final", dir(20)),
        fsync_dir(100, "/d/final", 4, 20),
        fsync_dir(100, "/d", 4, 2),
        exit(100, 0),
    ]
}

#[test]
fn names_inside_a_renamed_directory_follow_it() {
    assert_clean(&run(write_set_renamed(true)));
    let findings = run(write_set_renamed(false));
    assert_eq!(rules(&findings), vec!["unsynced-at-exit"], "only the data");
    assert_eq!(
        findings[0].path, "/d/final/diff",
        "the file is named where it is now, not where it was written"
    );
}

/// Paths relative to an fd or a cwd inside a directory that moved resolve
/// where the directory is now.
#[test]
fn relative_paths_follow_a_renamed_directory() {
    let (a, events) = resolved(vec![
        start(100, "/d"),
        open_dir(100, "/d/ws", 5, dir(20)),
        chdir(100, "ws/sub"),
        rename_known(100, "/d/ws", "/d/final", dir(20)),
        open_with(100, "x", 5, O_WRONLY | O_CREAT, 6, Some(reg(21))),
        open_with(100, "y", AT_FDCWD, O_WRONLY | O_CREAT, 7, Some(reg(22))),
    ]);
    assert_eq!(path_of(&events[4]), "/d/final/x");
    assert_eq!(path_of(&events[5]), "/d/final/sub/y");
    assert_eq!(a.cwd_of(100).as_deref(), Some("/d/final/sub"));
}

/// RENAME_EXCHANGE of two directories swaps what is under them.
#[test]
fn exchanged_directories_swap_the_names_under_them() {
    let events = trace![
        start(100, "/d"),
        open_dir(100, "/d/a", 4, dir(30)),
        close(100, 4),
        open_dir(100, "/d/b", 4, dir(31)),
        close(100, 4),
        create_unsynced(100, "/d/a/one", 3, 40, 10),
        create_unsynced(100, "/d/b/two", 3, 41, 10),
        exchange("/d/a", "/d/b", dir(31)),
        exit(100, 0),
    ];
    let findings = run(events);
    let mut paths: Vec<&str> = findings
        .iter()
        .filter(|f| f.rule == "unsynced-at-exit")
        .map(|f| f.path.as_str())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/d/a/two", "/d/b/one"]);
}

/// The inode a rename reports may come from an lstat of the new name made
/// after a later rename replaced it; the trace's own knowledge of the
/// source wins, so each unsynced save is judged on its own data.
#[test]
fn rename_trusts_the_traced_source_over_a_late_lookup() {
    let events = trace![
        start(100, "/d"),
        create_unsynced(100, "/d/s1.tmp", 3, 10, 100),
        rename_known(100, "/d/s1.tmp", "/d/state", reg(10)),
        create_unsynced(100, "/d/s2.tmp", 3, 11, 200),
        // Looked up after a third save had already put inode 12 there.
        rename_known(100, "/d/s2.tmp", "/d/state", reg(12)),
    ];
    let (mut a, at_risk) = process_all(events);
    let renames = |findings: &[crate::Finding]| -> Vec<(u64, u64)> {
        findings
            .iter()
            .filter(|f| f.rule == "rename-without-fsync")
            .map(|f| {
                (
                    f.inode.unwrap().ino,
                    f.evidence["unsynced_bytes"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(renames(&at_risk), vec![(10, 100), (11, 200)]);
    // The second save replaced the first file: its exposure is moot.
    assert_eq!(renames(&a.finish()), vec![(11, 200)]);
    assert_eq!(a.stats().moot.deleted, 1);
}

/// git replaces its index (fsynced, renamed over the old one, whose inode is
/// freed) and then creates COMMIT_EDITMSG, which ext4 gives the freed inode
/// number. The new file never saw an fsync: it is unsynced at exit, not a
/// "fsynced file whose directory entry was not".
#[test]
fn a_created_file_starts_fresh_on_a_reused_inode_number() {
    let findings = run(trace![
        start(100, "/d"),
        atomic_replace(100, "/d/index", 3, 10),
        atomic_replace(100, "/d/index", 3, 11),
        create_unsynced(100, "/d/COMMIT_EDITMSG", 3, 10, 6),
        exit(100, 0),
    ]);
    let f = sole(&findings, "unsynced-at-exit");
    assert_eq!(f.path, "/d/COMMIT_EDITMSG");
    assert_eq!(f.evidence["unsynced_bytes"], 6);
    assert!(f.evidence["last_successful_fsync"].is_null(), "{f:?}");
}

/// An fd the command's caller opened and the command inherited.
fn from_caller(pid: u32, fd: i32, path: &str, ino: u64) -> crate::Event {
    ev(
        pid,
        EventKind::FdAtStart {
            fd,
            path: path.into(),
            file: Some(FileInfo {
                flags: O_WRONLY,
                ..reg(ino)
            }),
            cloexec: false,
            from_caller: true,
        },
    )
}

/// `auditor run -- cmd > /d/out.log 2>&1`: what the command and its
/// children write to the output their caller opened is counted, not
/// judged; the same file opened by the command itself is its own data.
#[test]
fn output_the_caller_redirected_is_counted_not_judged() {
    let inherited = vec![
        start(100, "/d"),
        from_caller(100, 1, "/d/out.log", 50),
        from_caller(100, 2, "/d/out.log", 50),
        write(100, 1, 3),
        write(100, 2, 4),
        fork(100, 101),
        write(101, 1, 5),
        exit(101, 0),
    ];
    let (a, findings) = run_with(Config::default(), trace![inherited.clone(), exit(100, 0)]);
    assert_clean(&findings);
    let c = a.stats().caller_files;
    assert_eq!(
        (c.files, c.bytes, c.examples),
        (1, 12, vec!["/d/out.log".to_string()])
    );

    let findings = run(trace![
        inherited,
        open_existing(100, "/d/out.log", 3, reg(50)),
        write(100, 3, 6),
        exit(100, 0),
    ]);
    let f = sole(&findings, "unsynced-at-exit");
    assert_eq!(f.path, "/d/out.log");
    assert_eq!(
        f.evidence["unsynced_bytes"], 6,
        "only the command's own write"
    );
}

/// etcd checks a directory is writable with a `.touch` file it creates and
/// unlinks, and the next mkdir gets the freed inode number: the directory
/// must not inherit the regular file's state, or its fsync is not seen as
/// a directory's.
#[test]
fn a_directory_reusing_a_files_inode_number_is_a_directory() {
    assert_clean(&run(trace![
        start(100, "/d"),
        open_new(100, "/d/.touch", 3, reg(30)),
        close(100, 3),
        unlink_call(100, "unlinkat", "/d/.touch"),
        mkdir_call(100, "mkdirat", "/d/m", 0o700),
        fsync_dir(100, "/d", 4, 2),
        create_synced(100, "/d/m/f", 3, 40, 10),
        fsync_dir(100, "/d/m", 4, 30),
        exit(100, 0),
    ]));
}

/// Python writes its bytecode cache with a temp file and a rename, no
/// fsync; a damaged .pyc is rebuilt from the source. Such findings are
/// counted and left out unless caches are asked for.
#[test]
fn findings_on_caches_are_counted_not_reported_unless_asked() {
    let events = trace![
        start(100, "/app"),
        create_unsynced(100, "/app/__pycache__/m.cpython-311.pyc.140", 3, 60, 300),
        rename(
            100,
            "/app/__pycache__/m.cpython-311.pyc.140",
            "/app/__pycache__/m.cpython-311.pyc",
        ),
        exit(100, 0),
    ];
    let (a, findings) = run_with(Config::default(), events.clone());
    assert_clean(&findings);
    assert_eq!(a.stats().cache_findings, 2);
    let judge = Config {
        judge_caches: true,
        ..Config::default()
    };
    let (a, findings) = run_with(judge, events);
    assert_eq!(
        rules(&findings),
        vec!["rename-without-fsync", "rename-without-dir-fsync"]
    );
    assert_eq!(a.stats().cache_findings, 0);
}

/// Read-only opens of /d/db (inode 11) by pid 200 through fd 5, closed
/// after each but the last when `ends_open`, as the calls came one by one,
/// or as the probes count them: the first open, then one close standing
/// for the closes and the reopens between them.
fn visits(counted: bool, pairs: u32, ends_open: bool) -> Vec<crate::Event> {
    let ro = || {
        open_with(
            200,
            "/d/db",
            AT_FDCWD,
            O_CLOEXEC,
            5,
            Some(sized(reg(11), 10)),
        )
    };
    let mut evs = vec![start(200, "/d"), ro()];
    let closes = if ends_open { pairs - 1 } else { pairs };
    if counted {
        let mut c = close(200, 5);
        if let EventKind::Close {
            calls,
            reopens,
            file,
            ..
        } = &mut c.kind
        {
            *calls = closes;
            *file = Some(sized(reg(11), 10));
            *reopens = Some(crate::event::Reopens {
                call: sys("openat"),
                dirfd: AT_FDCWD,
                flags: O_CLOEXEC,
                mode: 0o644,
                count: pairs - 1,
            });
        }
        evs.push(c);
    } else {
        for i in 0..closes {
            evs.push(close(200, 5));
            if i + 1 < pairs {
                evs.push(ro());
            }
        }
    }
    evs
}

#[test]
fn a_run_of_visits_leaves_the_verdicts_the_calls_one_by_one_left() {
    for ends_open in [false, true] {
        let verdicts = |counted: bool| {
            let mut evs = wrote(100);
            evs.extend(visits(counted, 4, ends_open));
            // The same moment either way (a counted run is fewer events).
            evs.push(at(exit(100, 0), 1_000_000_000));
            let findings = run(evs);
            // Evidence calls differ by design (one close stands for many).
            findings
                .into_iter()
                .map(|mut f| {
                    f.calls.clear();
                    f
                })
                .collect::<Vec<_>>()
        };
        let one_by_one = verdicts(false);
        assert_eq!(rules(&one_by_one), ["unsynced-at-exit"]);
        assert_eq!(
            one_by_one[0].severity,
            if ends_open {
                Severity::Low
            } else {
                Severity::Medium
            },
            "a live reader still holding the file may yet fsync it"
        );
        assert_eq!(verdicts(true), one_by_one, "ends open: {ends_open}");
    }
}
