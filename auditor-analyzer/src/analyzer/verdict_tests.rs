//! Verdicts over the whole observation: exposures closed later by another
//! process (or a sync), made moot by a deletion or a move, followed through
//! link()+unlink(), and names judged on what every process did.

use crate::test_support::*;
use crate::track::paths::AT_FDCWD;
use crate::{Config, Severity};

/// A helper (pid 200, forked by 100) writes /d/out/f{0,1} and renames a
/// temporary into /d/out/manifest, all without fsync, and exits.
fn helper_writes() -> Vec<crate::Event> {
    let mut v = vec![
        start(100, "/d"),
        open_dir(100, "/d/out", 9, dir(5)),
        close(100, 9),
        fork(100, 200),
    ];
    for (i, ino) in [(0, 20), (1, 21)] {
        v.extend(create_unsynced(200, &format!("/d/out/f{i}"), 3, ino, 100));
    }
    trace![
        v,
        create_unsynced(200, "/d/out/manifest.tmp", 3, 22, 10),
        rename(200, "/d/out/manifest.tmp", "/d/out/manifest"),
        exit(200, 0),
    ]
}

#[test]
fn a_parent_that_syncs_what_its_helper_wrote_closes_every_exposure() {
    let mut events = helper_writes();
    // The parent opens each file again, fsyncs it, then the directory.
    for (i, path) in ["/d/out/f0", "/d/out/f1", "/d/out/manifest"]
        .into_iter()
        .enumerate()
    {
        events.extend([
            open_existing(100, path, 4, sized(reg(20 + i as u64), 100)),
            fsync(100, 4),
            close(100, 4),
        ]);
    }
    events.extend(fsync_dir(100, "/d/out", 5, 5));
    events.push(exit(100, 0));
    let findings = run(events);
    assert!(!findings.is_empty());
    assert!(
        findings.iter().all(|f| f.severity == Severity::Low),
        "every window closed: {findings:#?}"
    );
    for f in &findings {
        assert_eq!(f.evidence["closed_by"]["pid"], 100, "{f:#?}");
        assert_eq!(f.process.pid, 200, "attributed to the helper");
    }
    let mut rules = rules(&findings);
    rules.sort_unstable();
    assert_eq!(
        rules,
        vec![
            "rename-without-dir-fsync",
            "rename-without-fsync",
            "unsynced-at-exit",
            "unsynced-at-exit",
        ]
    );
}

#[test]
fn without_the_parent_the_helpers_exposures_stay_open() {
    let findings = run(trace![helper_writes(), exit(100, 0)]);
    assert_eq!(
        findings
            .iter()
            .filter(|f| f.severity >= Severity::Medium)
            .count(),
        4,
        "{findings:#?}"
    );
}

#[test]
fn sync_after_the_command_closes_data_and_names() {
    for call in ["sync", "syncfs"] {
        let mut events = helper_writes();
        let fd = (call == "syncfs").then_some(9);
        if fd.is_some() {
            events.push(open_dir(100, "/d/out", 9, dir(5)));
        }
        events.extend([sync_call(100, call, fd, 0, None), exit(100, 0)]);
        let findings = run(events);
        assert!(
            findings.iter().all(|f| f.severity == Severity::Low
                && f.evidence["closed_by"]["call"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(call))),
            "{call}: {findings:#?}"
        );
    }
}

#[test]
fn temporary_files_removed_before_the_end_are_moot() {
    let events = trace![
        helper_writes(),
        unlink(100, "/d/out/f0"),
        unlink(100, "/d/out/f1"),
        unlink(100, "/d/out/manifest"),
        exit(100, 0),
    ];
    let (a, findings) = run_with(Config::default(), events);
    assert_clean(&findings);
    let moot = a.stats().moot;
    assert_eq!(moot.deleted, 3, "{moot:?}");
    assert_eq!(moot.moved, 3, "their names are gone too");
}

#[test]
fn a_name_renamed_again_is_judged_where_it_ends() {
    let events = trace![
        start(100, "/d"),
        create_synced(100, "/d/.tmp-1-pack", 3, 30, 100),
        rename(100, "/d/.tmp-1-pack", "/d/.tmp-pack-x"),
        rename(100, "/d/.tmp-pack-x", "/d/pack-x.pack"),
        exit(100, 0),
    ];
    let (a, findings) = run_with(Config::default(), events);
    let f = one(&findings, "rename-without-dir-fsync");
    assert_eq!(f.path, "/d/pack-x.pack");
    assert_eq!(f.evidence["source"], "/d/.tmp-pack-x");
    assert_eq!(a.stats().moot.moved, 0, "its process had not ended yet");
}

#[test]
fn a_move_done_by_link_and_unlink_is_followed() {
    // git's batch fsync mode: an object written under a temporary name
    // (unsynced), linked to its name, the temporary name removed.
    let events = trace![
        start(100, "/d"),
        create_unsynced(100, "/d/objects/tmp_obj_1", 3, 40, 100),
        link(100, "/d/objects/tmp_obj_1", "/d/objects/ab/cdef"),
        unlink(100, "/d/objects/tmp_obj_1"),
        exit(100, 0),
    ];
    let findings = run(events);
    assert!(!findings.is_empty());
    for f in &findings {
        assert_eq!(f.path, "/d/objects/ab/cdef", "{f:#?}");
    }
    one(&findings, "rename-without-fsync");
    one(&findings, "rename-without-dir-fsync");
}

#[test]
fn a_directory_one_process_made_and_another_fsynced_is_judged_on_both() {
    // A makes /d/new; B opens it and fsyncs it (itself), never /d.
    let events = vec![
        start(100, "/d"),
        open_dir(100, "/d", 9, dir(2)),
        close(100, 9),
        mkdir(100, "/d/new"),
        exit(100, 0),
        start(300, "/"),
        open_dir(300, "/d/new", 4, dir(50)),
        fsync(300, 4),
        close(300, 4),
        exit(300, 0),
    ];
    let findings = run(events);
    let f = one(&findings, "create-without-dir-fsync");
    assert_eq!((f.path.as_str(), f.process.pid), ("/d/new", 100));
    assert_eq!(f.evidence["directory"], "/d");
}

#[test]
fn rename_then_fsync_by_the_same_process_is_low_in_a_successful_run() {
    let events = trace![
        start(100, "/d"),
        write_new(100, "/d/a.tmp", 3, 10, 10),
        rename(100, "/d/a.tmp", "/d/a"),
        fsync(100, 3),
        fsync_dir(100, "/d", 4, 2),
    ];
    let ok = run(trace![events.clone(), exit(100, 0)]);
    let f = one(&ok, "rename-without-fsync");
    assert_eq!(f.severity, Severity::Low);
    assert_eq!(f.evidence["exposed_for_ns"], 1_000_000);
    // A failed command: the window is the rule's severity.
    let failed = run(trace![events, exit(100, 1)]);
    assert_eq!(
        one(&failed, "rename-without-fsync").severity,
        Severity::High
    );
}

#[test]
fn a_kill_then_sync_shows_the_fix_working() {
    // Seed 000: the daemon is killed with unsynced data; a `sync` after it
    // (the fix) makes the data durable.
    let events = trace![
        start(1, "/"),
        fork(1, 50),
        start(100, "/var/lib/bk"),
        open_existing(100, "/var/lib/bk/meta.db", 3, sized(reg(40), 4096)),
        write(100, 3, 8192),
        kill(50, 100, SIGKILL),
        sync_call(50, "sync", None, 0, None),
        exit(1, 0),
    ];
    let findings = run(events);
    let f = one(&findings, "killed-while-dirty");
    assert_eq!(f.severity, Severity::Low);
    assert_eq!(f.evidence["closed_by"]["pid"], 50);
    assert!(f.summary.contains("made durable"), "{}", f.summary);
}

#[test]
fn content_replaced_by_another_process_is_moot() {
    let events = vec![
        start(100, "/d"),
        open_existing(100, "/d/state", 3, sized(reg(60), 10)),
        write(100, 3, 10),
        exit(100, 0),
        start(300, "/d"),
        open_with(
            300,
            "/d/state",
            AT_FDCWD,
            O_WRONLY | crate::track::fds::flags::O_TRUNC,
            3,
            Some(sized(reg(60), 20)),
        ),
        write(300, 3, 5),
        fsync(300, 3),
        exit(300, 0),
    ];
    let (a, findings) = run_with(Config::default(), events);
    assert_none_of(&findings, "unsynced-at-exit");
    assert_eq!(a.stats().moot.replaced, 1);
}

#[test]
fn the_last_words_of_a_killed_process_do_not_bring_it_back_to_life() {
    // A killed worker's SIGCHLD to its parent comes after its exit record:
    // a process record made for it then holds nothing, and does not make
    // the kill's verdict "still running".
    let events = trace![
        start(100, "/d"),
        fork(100, 200),
        write_new(200, "/d/worker.db", 3, 70, 8192),
        kill(100, 200, SIGKILL),
        signal(200, 100, 17),
        exit(100, 0),
    ];
    let f = one(&run(events), "killed-while-dirty").clone();
    assert_eq!(f.severity, Severity::High, "{f:#?}");
    assert!(f.evidence.get("still_running_pids").is_none());
}

#[test]
fn writes_after_the_rename_are_their_writers_own_at_exit() {
    // PostgreSQL's WAL segment: zero-filled under a temporary name, renamed
    // into place unsynced, then written to before the process exits.
    let placed = trace![
        start(100, "/d"),
        write_new(100, "/d/xlogtemp", 3, 80, 4096),
        rename(100, "/d/xlogtemp", "/d/000001"),
        fsync_dir(100, "/d", 4, 2),
    ];
    let findings = run(trace![placed.clone(), write(100, 3, 100), exit(100, 0)]);
    one(&findings, "rename-without-fsync");
    let f = one(&findings, "unsynced-at-exit");
    assert_eq!(f.path, "/d/000001");
    // Without the later write, the end adds nothing to the rename.
    sole(&run(trace![placed, exit(100, 0)]), "rename-without-fsync");
}

#[test]
fn letting_each_files_state_go_after_its_last_verdict_changes_no_verdict() {
    // Several exposures on one inode (the manifest: its data, its rename,
    // its directory entry), some closed later by another process, some
    // left open.
    let mut events = helper_writes();
    events.extend([
        open_existing(100, "/d/out/f0", 4, sized(reg(20), 100)),
        fsync(100, 4),
        close(100, 4),
        exit(100, 0),
    ]);
    let judged = |last: bool| {
        let mut a = crate::Analyzer::new(Config::default()).expect("valid config");
        for mut e in number(events.clone()) {
            a.process(&mut e);
        }
        if last {
            a.conclude_last();
        } else {
            a.conclude();
        }
        let findings = serde_json::to_string(a.findings()).unwrap();
        let held = a.inodes.len() as u64;
        (findings, a.stats().tracked_inodes, a.findings().len(), held)
    };
    let (kept, tracked, n, held) = judged(false);
    assert!(n >= 4, "{kept}");
    assert_eq!(held, tracked);
    let (released, tracked_last, n_last, held_last) = judged(true);
    assert_eq!((released, tracked_last, n_last), (kept, tracked, n));
    assert!(
        held_last + 3 <= held,
        "the judged files' states went: {held_last} of {held} left"
    );
}
