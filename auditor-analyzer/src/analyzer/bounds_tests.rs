//! Memory bounds through the façade: the `max_files` and `max_processes`
//! caps hold on long streams, and a verdict that rests on evicted state is
//! never given as certain.

use crate::event::{Event, FileInfo};
use crate::test_support::*;
use crate::{Analyzer, Config, Finding};

fn capped(max_files: usize, max_processes: usize) -> Config {
    Config {
        max_files,
        max_processes,
        ..Config::default()
    }
}

/// open + write (the kernel names the file on each call) + close of a
/// new file `/d/f<ino>`, never fsynced.
fn dirty_file(pid: u32, ino: u64) -> Vec<Event> {
    let path = format!("/d/f{ino}");
    vec![
        open_new(pid, &path, 3, reg(ino)),
        write_full(pid, 3, 10, 10, None, Some(file(ino))),
        close(pid, 3),
    ]
}

fn file(ino: u64) -> FileInfo {
    reg(ino)
}

fn on<'a>(findings: &'a [Finding], path: &str) -> Vec<&'a Finding> {
    findings.iter().filter(|f| f.path == path).collect()
}

#[test]
fn the_file_cap_holds_and_keeps_the_most_recent_files() {
    let mut a = Analyzer::new(capped(100, 64)).unwrap();
    let mut events = vec![start(100, "/d")];
    for ino in 1..=1000 {
        events.extend(dirty_file(100, ino));
    }
    events.push(exit(100, 0));
    let mut peak = 0;
    for mut e in number(events) {
        a.process(&mut e);
        peak = peak.max(a.stats().tracked_inodes);
    }
    a.finish();
    let s = a.stats();
    assert!(peak <= 100, "peak {peak} states");
    assert_eq!(s.max_files, 100);
    assert_eq!(s.evicted_inodes + s.tracked_inodes, 1000, "{s:?}");
    assert_eq!(s.evicted_dirty, s.evicted_inodes, "all were dirty");
    assert_eq!(s.files_tracked, 1000, "no state was dropped and rebuilt");
    let f = a.findings();
    assert_eq!(on(f, "/d/f1000").len(), 1, "the newest is still judged");
    assert!(on(f, "/d/f1").is_empty(), "the oldest was evicted");
    assert!(f.len() <= 100, "{} findings", f.len());
    assert!(f.iter().all(|f| !f.inconclusive), "kept states are whole");
}

#[test]
fn a_verdict_on_an_evicted_dirty_inode_is_inconclusive() {
    let mut events = vec![
        start(100, "/d"),
        open_new(100, "/d/keep", 4, reg(1)),
        write_full(100, 4, 10, 10, None, Some(file(1))),
    ];
    for ino in 2..=25 {
        events.extend(dirty_file(100, ino));
    }
    // Back to the first file, whose state (10 unsynced bytes) is gone.
    events.push(write_full(100, 4, 5, 5, None, Some(file(1))));
    events.push(exit(100, 0));
    let (a, findings) = crate::test_support::run_with(capped(10, 64), events);
    assert!(a.stats().evicted_dirty > 0);
    let keep: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.inode == Some(reg(1).id))
        .collect();
    assert_eq!(keep.len(), 1, "{findings:#?}");
    assert_eq!(keep[0].rule, "unsynced-at-exit");
    assert!(keep[0].inconclusive);
    let why = keep[0].inconclusive_reason.as_deref().unwrap();
    assert!(why.contains("state evicted (limit 10 files"), "{why}");
    // The files still held are judged with certainty.
    assert!(!on(&findings, "/d/f25")[0].inconclusive);
}

#[test]
fn a_created_file_reusing_an_evicted_inode_starts_clean() {
    let mut events = vec![start(100, "/d")];
    events.extend(dirty_file(100, 1));
    for ino in 2..=40 {
        events.extend(dirty_file(100, ino));
    }
    // Inode 1 is freed and reused by a brand-new file: nothing carries over.
    events.extend(dirty_file(100, 1));
    events.push(exit(100, 0));
    let (_, findings) = crate::test_support::run_with(capped(10, 64), events);
    let f = on(&findings, "/d/f1");
    assert_eq!(f.len(), 1, "{findings:#?}");
    assert!(!f[0].inconclusive, "{:?}", f[0].inconclusive_reason);
}

#[test]
fn the_process_cap_holds_and_taints_what_evicted_records_wrote() {
    let mut a = Analyzer::new(capped(1000, 10)).unwrap();
    let mut events = Vec::new();
    for pid in 1..=30 {
        events.push(start(pid, "/d"));
        events.extend(dirty_file(pid, pid as u64));
    }
    let mut peak = 0;
    for mut e in number(events) {
        a.process(&mut e);
        peak = peak.max(a.live_pids().len());
    }
    a.finish();
    assert!(peak <= 10, "peak {peak} records");
    assert!(a.stats().evicted_processes >= 20);
    let f = a.findings();
    let first = on(f, "/d/f1");
    assert_eq!(first.len(), 1, "the file outlives its writer's record");
    assert!(first[0].inconclusive, "no exit was seen: {:?}", first[0]);
    let last = on(f, "/d/f30");
    assert!(!last[0].inconclusive, "{:?}", last[0]);
}

#[test]
fn pending_names_are_capped_oldest_first() {
    let mut events = vec![start(100, "/d")];
    for ino in 1..=50 {
        let path = format!("/d/f{ino}");
        events.extend([
            open_new(100, &path, 3, reg(ino)),
            write_full(100, 3, 10, 10, None, Some(file(ino))),
            fsync(100, 3),
            close(100, 3),
        ]);
    }
    events.push(exit(100, 0));
    let (a, findings) = crate::test_support::run_with(capped(10, 64), events);
    assert_eq!(a.stats().evicted_names, 40, "{:?}", a.stats());
    let created: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.rule == "create-without-dir-fsync")
        .collect();
    assert_eq!(created.len(), 10);
    assert_eq!(
        on(&findings, "/d/f50").len(),
        1,
        "the newest is still judged"
    );
    assert!(
        on(&findings, "/d/f40").is_empty(),
        "the oldest were dropped"
    );
}
