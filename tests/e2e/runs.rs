//! Runs of writes, end to end. The probes report consecutive complete
//! writes of one thread to one regular file as one event (`calls` = how
//! many, `requested` and `ret` their total, `enter_ns` the first one's
//! entry, `file.size` the size before the first), and flush every run in
//! flight before any other record of any traced task. Real programs under
//! the real binary show that:
//! - a run's counts, identity and sizes are exact, and the report counts
//!   its calls as writes;
//! - a run stays before whatever another process or thread did next, so an
//!   fsync from elsewhere after it covers it (no `unsynced-at-exit`), and
//!   writes after that fsync are a second run that is still unsynced;
//! - an fd number that changes meaning (close then open, dup2) starts a run
//!   on the new file;
//! - writers taking turns on one file stay separate events in turn order,
//!   even with no other traced call between the turns, and
//!   `interleaved-writers` still fires;
//! - positioned writes (pwrite64, pwritev) run when each starts where the
//!   last ended, the event saying the first one's offset; others, and
//!   pipe, `/dev/null`, failed and short writes, stay one event per call,
//!   each with its own size before.
//!
//! The periodic flush (every 100 ms, so a thread that only writes is still
//! seen) can cut a run into parts at any moment. [`runs`] joins the parts
//! of one run again (adjacent events of one thread on one fd and file, each
//! starting where the previous one ended) and counts them in `parts`; runs
//! here take well under 100 ms, so more than 2 parts is a failure.

use std::path::{Path, PathBuf};

use auditor_e2e::*;
use serde_json::{Value, json};

/// `fixtures/runs/<fixture>.py args...`.
fn fixture_cmd(fixture: &str, args: &[&str]) -> Vec<String> {
    let mut cmd = py(&format!("runs/{fixture}.py"));
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd
}

fn scratch_for(fixture: &str, args: &[&str], what: &str) -> PathBuf {
    let mut name = format!("runs_{fixture}");
    for a in args {
        name.push('_');
        name.push_str(a);
    }
    name.push('_');
    name.push_str(what);
    scratch(&name)
}

/// What a traced fixture did.
struct Trace {
    dir: PathBuf,
    /// The event stream as printed.
    raw: Vec<Value>,
    /// The same with the parts of each run joined (see [`runs`]).
    events: Vec<Value>,
    /// The fixture's output (it prints the pids, tids and fds to expect).
    stdout: String,
}

/// `auditor run --events --format jsonl -- fixture` in a fresh scratch
/// directory. The fixture's own checks must pass: its process exits 0.
fn trace(fixture: &str, args: &[&str]) -> Trace {
    let dir = scratch_for(fixture, args, "events");
    let (raw, out) = event_stream(&dir, &argv(&fixture_cmd(fixture, args)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        raw[0]["type"], "process_start",
        "the stream starts with the fixture"
    );
    let main = raw[0]["pid"].as_u64();
    assert!(
        raw.iter().any(|e| e["type"] == "exit"
            && e["pid"].as_u64() == main
            && e["group_dead"] == true
            && e["code"] == 0),
        "the fixture exits 0 (its own checks passed): {stderr}"
    );
    let events = runs(&raw);
    Trace {
        dir,
        raw,
        events,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// `auditor run --format json --fail-on low -- fixture`: every finding
/// makes exit code 1, so a clean run proves a full pass.
fn audit(fixture: &str, args: &[&str]) -> (PathBuf, Run) {
    let dir = scratch_for(fixture, args, "report");
    let run = run_report(
        &dir,
        &["--fail-on", "low"],
        &argv(&fixture_cmd(fixture, args)),
    );
    assert_eq!(
        run.report["complete"], true,
        "events were dropped; verdicts would be inconclusive"
    );
    assert_eq!(
        run.report["exit_status"]["code"], 0,
        "the fixture exits 0 (its own checks passed): {}",
        run.stderr
    );
    (dir, run)
}

/// A complete write to a regular file: what a run (or a part of one)
/// looks like.
fn is_run_part(e: &Value) -> bool {
    e["type"] == "write"
        && e["file"]["file_type"] == "regular"
        && e["ret"].as_i64().is_some_and(|r| r > 0)
        && e["ret"].as_i64().map(|r| r as u64) == e["requested"].as_u64()
}

/// `next` continues the run `last`: same thread, call, fd and file, and it
/// starts where `last` ended.
fn continues(last: &Value, next: &Value) -> bool {
    let ret = last["ret"].as_i64().unwrap();
    let size = last["file"]["size"].as_i64().unwrap();
    let starts_at_its_end = match (last["offset"].as_i64(), next["offset"].as_i64()) {
        (None, None) => next["file"]["size"].as_i64() == Some(size + ret),
        (Some(off), Some(next_off)) => {
            next_off == off + ret && next["file"]["size"].as_i64() == Some(size.max(off + ret))
        }
        _ => false,
    };
    ["pid", "tid", "call", "fd"]
        .iter()
        .all(|k| last[k] == next[k])
        && last["file"]["id"] == next["file"]["id"]
        && starts_at_its_end
}

/// The stream with the parts of each run joined: the joined event keeps the
/// first part's `enter_ns` and `file`, sums `calls`, `requested` and `ret`,
/// takes the last part's `seq` and `ts_ns` (where the run ends in the
/// stream) and counts its events in `parts`.
fn runs(raw: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut last_is_run = false;
    for e in raw {
        let part = is_run_part(e);
        if part && last_is_run {
            let last = out.last_mut().unwrap();
            if continues(last, e) {
                for k in ["calls", "requested", "ret", "parts"] {
                    let sum = last[k].as_u64().unwrap() + e[k].as_u64().unwrap_or(1);
                    last[k] = json!(sum);
                }
                last["seq"] = e["seq"].clone();
                last["ts_ns"] = e["ts_ns"].clone();
                continue;
            }
        }
        let mut e = e.clone();
        if e["type"] == "write" {
            e["parts"] = json!(1);
        }
        out.push(e);
        last_is_run = part;
    }
    out
}

fn seq(e: &Value) -> u64 {
    e["seq"].as_u64().unwrap()
}

fn enter_ns(e: &Value) -> u64 {
    e["enter_ns"].as_u64().unwrap()
}

fn ts_ns(e: &Value) -> u64 {
    e["ts_ns"].as_u64().unwrap()
}

/// Events whose `file` is `path`'s inode as `stat` sees it.
fn on_file<'a>(events: &'a [Value], path: &Path) -> Vec<&'a Value> {
    let id = identity(path);
    events
        .iter()
        .filter(|e| e["file"]["id"].is_object() && event_identity(e) == id)
        .collect()
}

/// The write events among `events`; each run in at most 2 parts.
fn writes<'a>(events: &[&'a Value]) -> Vec<&'a Value> {
    let w: Vec<&Value> = events
        .iter()
        .copied()
        .filter(|e| e["type"] == "write")
        .collect();
    for e in &w {
        assert!(
            e["parts"].as_u64().unwrap() <= 2,
            "a run of well under 100 ms is cut at most once by the periodic flush: {e}"
        );
    }
    w
}

/// (pid, tid, fd, calls, requested, ret, file.size) of a write event.
type Shape = (u64, u64, i64, u64, u64, i64, i64);

fn shape(w: &Value) -> Shape {
    (
        w["pid"].as_u64().unwrap(),
        w["tid"].as_u64().unwrap(),
        w["fd"].as_i64().unwrap(),
        w["calls"].as_u64().unwrap(),
        w["requested"].as_u64().unwrap(),
        w["ret"].as_i64().unwrap(),
        w["file"]["size"].as_i64().unwrap(),
    )
}

fn shapes(w: &[&Value]) -> Vec<Shape> {
    w.iter().map(|e| shape(e)).collect()
}

/// (pid, call or type) of each event: who did what, in order.
fn who_did(events: &[&Value]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|e| {
            let what = e["call"].as_str().unwrap_or(e["type"].as_str().unwrap());
            (e["pid"].as_u64().unwrap(), what.to_owned())
        })
        .collect()
}

fn did(pid: u64, what: &str) -> (u64, String) {
    (pid, what.to_owned())
}

/// The fd the open of `path` by `pid` returned (its last one).
fn opened_fd(on: &[&Value], pid: u64) -> i64 {
    on.iter()
        .rev()
        .find(|e| e["type"] == "open" && e["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|| panic!("no open by {pid} in {on:#?}"))["ret"]
        .as_i64()
        .unwrap()
}

#[test]
fn run_is_one_event_with_its_calls_bytes_and_size_before() {
    let t = trace("run_fsync_run", &[]);
    let pid = printed_pid(&t.stdout, "pid");
    let path = t.dir.join("data.log");
    let on = on_file(&t.events, &path);
    assert_eq!(
        who_did(&on),
        [
            did(pid, "openat"),
            did(pid, "write"),
            did(pid, "fsync"),
            did(pid, "write"),
            did(pid, "close")
        ],
        "50 writes, fsync, 3 writes, close: two runs around the fsync"
    );
    let (open, first, fsync, second, close) = (on[0], on[1], on[2], on[3], on[4]);
    let fd = open["ret"].as_i64().unwrap();
    assert_eq!(
        open["file"]["created"], true,
        "the fixture creates the file"
    );
    assert_eq!(
        shapes(&writes(&on)),
        [
            (pid, pid, fd, 50, 500, 500, 0),
            (pid, pid, fd, 3, 30, 30, 500)
        ],
        "50 records of 10 bytes to the new file, then 3 starting at 500"
    );
    assert_eq!(
        event_identity(first),
        identity(&path),
        "the run's identity is the file's, as stat sees it"
    );
    assert_eq!(first["call"], "write");
    assert!(first["offset"].is_null(), "not positioned: {first}");
    assert_eq!(
        (
            first["file"]["file_type"].as_str(),
            first["file"]["fs"].as_str(),
            first["file"]["created"].as_bool()
        ),
        (Some("regular"), Some("ext4"), Some(true))
    );
    assert!(
        ts_ns(open) <= enter_ns(first) && enter_ns(first) < enter_ns(fsync),
        "the first run was entered with its first write: after the open returned, before the fsync"
    );
    assert!(
        ts_ns(fsync) <= enter_ns(second),
        "the second run was entered with its first write, after the fsync returned"
    );
    assert_eq!(
        (
            fsync["fd"].as_i64(),
            fsync["ret"].as_i64(),
            fsync["file"]["size"].as_i64()
        ),
        (Some(fd), Some(0), Some(500)),
        "the fsync saw all 500 bytes of the first run"
    );
    assert_eq!(
        (close["fd"].as_i64(), close["file"]["size"].as_i64()),
        (Some(fd), Some(530))
    );
    let id = identity(&path);
    let calls: u64 = t
        .raw
        .iter()
        .filter(|e| e["type"] == "write" && event_identity(e) == id)
        .map(|e| e["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(calls, 53, "every write(2) is counted exactly once");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 530);
}

/// The report's `unsynced-at-exit` finding: it names `path`, medium, and
/// `pid`, and its evidence says `bytes` in `ranges` are unsynced, left by
/// `writes` write calls (see [`assert_unsynced`]). Returns the evidence.
fn unsynced_at_exit<'a>(
    run: &'a Run,
    path: &Path,
    pid: u64,
    (bytes, writes, ranges, why): (u64, u64, Value, &str),
) -> &'a Value {
    let f = the_finding(&run.report, "unsynced-at-exit");
    assert_names(f, path, "medium", pid);
    let ev = &f["evidence"];
    assert_unsynced(ev, bytes, writes, ranges, why);
    ev
}

#[test]
fn run_left_unsynced_at_exit_counts_its_calls_as_writes() {
    let (dir, run) = audit("run_fsync_run", &[]);
    assert_eq!(
        rule_ids(&run.report),
        ["create-without-dir-fsync", "unsynced-at-exit"],
        "the 3 writes after the fsync and the new name are not durable"
    );
    let path = dir.join("data.log");
    let pid = printed_pid(&run.stdout, "pid");
    let ev = unsynced_at_exit(
        &run,
        &path,
        pid,
        (
            30,
            3,
            json!([[500, 530]]),
            "one event of 3 calls is 3 writes",
        ),
    );
    assert_eq!(ev["writer_pids"], json!([pid]));
    assert!(ev["last_successful_fsync"].is_object(), "{ev:#}");
}

/// `fsync_by_other_process <mode>` traced: on `shared.dat` the writer
/// opens, fsyncs and writes; the syncer it spawned opens, fsyncs and
/// closes; the writer then does `then` and closes. Returns the trace and
/// the writer's and the syncer's pids.
fn another_process_fsyncs(mode: &str, then: &[&str], why: &str) -> (Trace, u64, u64) {
    let t = trace("fsync_by_other_process", &[mode]);
    let writer = printed_pid(&t.stdout, "writer");
    let syncer = printed_pid(&t.stdout, "syncer");
    let mut want = vec![
        did(writer, "openat"),
        did(writer, "fsync"),
        did(writer, "write"),
        did(syncer, "openat"),
        did(syncer, "fsync"),
        did(syncer, "close"),
    ];
    want.extend(then.iter().map(|what| did(writer, what)));
    want.push(did(writer, "close"));
    let on = on_file(&t.events, &t.dir.join("shared.dat"));
    assert_eq!(who_did(&on), want, "{why}");
    (t, writer, syncer)
}

#[test]
fn run_is_reported_before_another_processs_fsync() {
    let (t, writer, syncer) = another_process_fsyncs(
        "ok",
        &[],
        "the writer's run comes before the other process's fsync",
    );
    let on = on_file(&t.events, &t.dir.join("shared.dat"));
    let fd = opened_fd(&on, writer);
    let w = writes(&on);
    assert_eq!(
        shapes(&w),
        [(writer, writer, fd, 100, 1000, 1000, 0)],
        "100 records of 10 bytes: one run"
    );
    let fsync = on[4];
    assert_eq!(
        (fsync["ret"].as_i64(), fsync["file"]["size"].as_i64()),
        (Some(0), Some(1000)),
        "the syncer's fsync saw the 1000 bytes"
    );
    let forks: Vec<&Value> = of_type(&t.events, "fork")
        .into_iter()
        .filter(|f| f["child_pid"].as_u64() == Some(syncer))
        .collect();
    assert_eq!(forks.len(), 1, "the writer spawned the syncer once");
    assert!(
        seq(w[0]) < seq(forks[0]) && seq(forks[0]) < seq(fsync),
        "run (seq {}) < fork (seq {}) < fsync (seq {}): the fork flushed the run",
        seq(w[0]),
        seq(forks[0]),
        seq(fsync)
    );
}

#[test]
fn fsync_by_another_process_after_the_run_leaves_nothing_unsynced() {
    let (_, run) = audit("fsync_by_other_process", &["ok"]);
    assert_no_finding(&run, "nothing is left undurable");
}

#[test]
fn writes_after_another_processs_fsync_are_a_second_run() {
    let (t, writer, _) = another_process_fsyncs(
        "bug",
        &["write"],
        "50 writes, the other process's fsync, 50 writes",
    );
    let on = on_file(&t.events, &t.dir.join("shared.dat"));
    let fd = opened_fd(&on, writer);
    assert_eq!(
        shapes(&writes(&on)),
        [
            (writer, writer, fd, 50, 500, 500, 0),
            (writer, writer, fd, 50, 500, 500, 500)
        ]
    );
    assert_eq!(
        on[4]["file"]["size"].as_i64(),
        Some(500),
        "the syncer's fsync saw only the first 500 bytes"
    );
}

#[test]
fn writes_after_another_processs_fsync_are_unsynced_at_exit() {
    let (dir, run) = audit("fsync_by_other_process", &["bug"]);
    let writer = printed_pid(&run.stdout, "writer");
    assert_eq!(rule_ids(&run.report), ["unsynced-at-exit"]);
    let ev = unsynced_at_exit(
        &run,
        &dir.join("shared.dat"),
        writer,
        (
            500,
            50,
            json!([[500, 1000]]),
            "the 50 writes after the fsync, one event of 50 calls",
        ),
    );
    assert_eq!(ev["writer_pids"], json!([writer]));
    assert!(
        ev["last_successful_fsync"].is_object(),
        "the other process's fsync is known: {ev:#}"
    );
}

#[test]
fn run_is_reported_before_another_threads_fsync() {
    let t = trace("fsync_by_other_thread", &[]);
    let pid = printed_pid(&t.stdout, "pid");
    let a = printed_pid(&t.stdout, "A");
    let b = printed_pid(&t.stdout, "B");
    let on = on_file(&t.events, &t.dir.join("threads.dat"));
    let tids: Vec<(u64, String)> = on
        .iter()
        .map(|e| {
            let what = e["call"].as_str().unwrap_or(e["type"].as_str().unwrap());
            (e["tid"].as_u64().unwrap(), what.to_owned())
        })
        .collect();
    assert_eq!(
        tids,
        [
            did(pid, "openat"),
            did(a, "write"),
            did(b, "fsync"),
            did(pid, "close")
        ],
        "(tid, call): thread A's run, then thread B's fsync"
    );
    let fd = opened_fd(&on, pid);
    assert_eq!(
        shapes(&writes(&on)),
        [(pid, a, fd, 100, 1000, 1000, 0)],
        "100 records of 10 bytes by thread A: one run"
    );
    assert_eq!(
        (
            on[2]["fd"].as_i64(),
            on[2]["ret"].as_i64(),
            on[2]["file"]["size"].as_i64()
        ),
        (Some(fd), Some(0), Some(1000)),
        "B fsynced the shared fd after all 1000 bytes"
    );
}

#[test]
fn fsync_by_another_thread_after_the_run_leaves_nothing_unsynced() {
    let (_, run) = audit("fsync_by_other_thread", &[]);
    assert_no_finding(&run, "nothing is left undurable");
}

/// The two runs `fd_reuse` writes to regular files through one fd number:
/// shaped `(pid, pid, fd, calls, requested, ret, 0)` each, the first
/// `a.dat`'s and the second `b.dat`'s.
fn runs_on_a_then_b<'a>(t: &'a Trace, shape: Shape, why: &str) -> Vec<&'a Value> {
    let w: Vec<&Value> = t
        .events
        .iter()
        .filter(|e| e["type"] == "write" && e["file"]["file_type"] == "regular")
        .collect();
    let w = writes(&w);
    assert_eq!(shapes(&w), [shape, shape], "{why}");
    assert_eq!(
        (event_identity(w[0]), event_identity(w[1])),
        (
            identity(&t.dir.join("a.dat")),
            identity(&t.dir.join("b.dat"))
        ),
        "the first run is a.dat's, the second b.dat's"
    );
    w
}

#[test]
fn fd_number_reused_after_close_starts_a_run_on_the_new_file() {
    let t = trace("fd_reuse", &["close"]);
    let pid = printed_pid(&t.stdout, "pid");
    let fd = printed_pid(&t.stdout, "fda") as i64;
    assert_eq!(
        printed_pid(&t.stdout, "fdb") as i64,
        fd,
        "b.dat got the fd number a.dat had"
    );
    let on_a = on_file(&t.events, &t.dir.join("a.dat"));
    let on_b = on_file(&t.events, &t.dir.join("b.dat"));
    assert_eq!(opened_fd(&on_b, pid), fd);
    let w = runs_on_a_then_b(
        &t,
        (pid, pid, fd, 5, 50, 50, 0),
        "5 records to each new file through the same fd number",
    );
    let close_a = on_a
        .iter()
        .find(|e| e["type"] == "close")
        .expect("a.dat closed");
    assert!(seq(w[0]) < seq(close_a) && seq(close_a) < seq(w[1]));
}

#[test]
fn fd_number_redirected_by_dup2_starts_a_run_on_the_new_file() {
    let t = trace("fd_reuse", &["dup2"]);
    let pid = printed_pid(&t.stdout, "pid");
    let fda = printed_pid(&t.stdout, "fda") as i64;
    let fdb = printed_pid(&t.stdout, "fdb") as i64;
    // After dup2(b, a) the fd number writes b.dat.
    let w = runs_on_a_then_b(
        &t,
        (pid, pid, fda, 3, 30, 30, 0),
        "3 records through a.dat's fd number before dup2 and 3 after",
    );
    let dups = of_type(&t.events, "dup");
    assert_eq!(dups.len(), 1, "one dup2: {dups:#?}");
    let dup = dups[0];
    assert_eq!(
        (
            dup["call"].as_str(),
            dup["old_fd"].as_i64(),
            dup["new_fd"].as_i64(),
            dup["ret"].as_i64()
        ),
        (Some("dup2"), Some(fdb), Some(fda), Some(fda))
    );
    assert!(seq(w[0]) < seq(dup) && seq(dup) < seq(w[1]));
}

/// The two writers of `turns.py <mode>` as (pid, tid): A then B.
fn turn_takers(mode: &str, stdout: &str) -> [(u64, u64); 2] {
    let (a, b) = (printed_pid(stdout, "A"), printed_pid(stdout, "B"));
    if mode == "processes" {
        [(a, a), (b, b)]
    } else {
        let pid = printed_pid(stdout, "pid");
        [(pid, a), (pid, b)]
    }
}

/// Writers taking turns A, B, A, B (2 records of 10 bytes a turn) on one
/// file both hold open: four events in turn order, and the records really
/// interleaved in the file.
fn turns_stay_separate(mode: &str) -> Trace {
    let t = trace("turns", &[mode]);
    let [(pa, ta), (pb, tb)] = turn_takers(mode, &t.stdout);
    let on = on_file(&t.events, &t.dir.join("app.log"));
    let (fa, fb) = (opened_fd(&on, pa), opened_fd(&on, pb));
    let turns: Vec<(u64, u64, i64, u64, u64, i64)> = shapes(&writes(&on))
        .into_iter()
        .map(|(pid, tid, fd, calls, requested, ret, _)| (pid, tid, fd, calls, requested, ret))
        .collect();
    assert_eq!(
        turns,
        [
            (pa, ta, fa, 2, 20, 20),
            (pb, tb, fb, 2, 20, 20),
            (pa, ta, fa, 2, 20, 20),
            (pb, tb, fb, 2, 20, 20)
        ],
        "each turn is its own event of 2 calls, in turn order"
    );
    let log = std::fs::read_to_string(t.dir.join("app.log")).unwrap();
    let order: Vec<&str> = log.lines().map(|l| &l[..2]).collect();
    assert_eq!(
        order,
        ["A0", "A0", "B0", "B0", "A1", "A1", "B1", "B1"],
        "the records really interleaved"
    );
    t
}

#[test]
fn processes_taking_turns_stay_separate_events() {
    turns_stay_separate("processes");
}

#[test]
fn threads_taking_turns_stay_separate_events() {
    let t = turns_stay_separate("threads");
    // The turns pass through futexes, which are not traced: only the
    // hand-over (a thread starting on a file another one has a run on)
    // can have ended A's first run and B's first run. Stack copies are not
    // calls: each thread's first run sends its own.
    let calls: Vec<&Value> = t.events.iter().filter(|e| e["type"] != "stack").collect();
    let at: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "write")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        (at[1] - at[0], at[2] - at[1]),
        (1, 1),
        "no other event between A0, B0 and A1: {:#?}",
        &calls[at[0]..=at[2]]
    );
}

/// Each turn's `file.size` is the size before its first write: the other
/// writer's appends in between count.
fn turns_carry_the_size_before_them(mode: &str) {
    let t = trace("turns", &[mode]);
    let on = on_file(&t.events, &t.dir.join("app.log"));
    let sizes: Vec<i64> = shapes(&writes(&on)).iter().map(|s| s.6).collect();
    assert_eq!(
        sizes,
        [0, 20, 40, 60],
        "file.size of the turns A0, B0, A1, B1: each starts where the other \
         writer's turn ended (A's second turn at 40, not at 20 = its own \
         first turn's start + its own bytes)"
    );
}

#[test]
fn processes_taking_turns_carry_the_size_before_each_turn() {
    turns_carry_the_size_before_them("processes");
}

#[test]
fn threads_taking_turns_carry_the_size_before_each_turn() {
    turns_carry_the_size_before_them("threads");
}

fn turns_are_interleaved(mode: &str) {
    let (dir, run) = audit("turns", &[mode]);
    assert_eq!(rule_ids(&run.report), ["interleaved-writers"]);
    let takers = turn_takers(mode, &run.stdout);
    let f = the_finding(&run.report, "interleaved-writers");
    assert_names(f, &dir.join("app.log"), "medium", takers[0].0);
    let writers: Vec<(u64, u64)> = f["evidence"]["writers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["pid"].as_u64().unwrap(), w["tid"].as_u64().unwrap()))
        .collect();
    assert_eq!(writers, takers, "A appended first, then B");
}

#[test]
fn processes_taking_turns_are_interleaved_writers() {
    turns_are_interleaved("processes");
}

#[test]
fn threads_taking_turns_are_interleaved_writers() {
    turns_are_interleaved("threads");
}

#[test]
fn threads_taking_turns_leave_every_turn_unsynced() {
    let (dir, run) = audit("turns", &["threads", "nosync"]);
    assert_eq!(
        rule_ids(&run.report),
        ["interleaved-writers", "unsynced-at-exit"],
        "nothing fsynced the 8 appends"
    );
    let path = dir.join("app.log");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 80);
    unsynced_at_exit(
        &run,
        &path,
        printed_pid(&run.stdout, "pid"),
        (
            80,
            8,
            json!([[0, 80]]),
            "4 events of 2 calls, appends that cover the whole 80-byte file",
        ),
    );
}

#[test]
fn positioned_writes_run_where_each_starts_at_the_last_ones_end() {
    let t = trace("one_per_call", &[]);
    let pid = printed_pid(&t.stdout, "pid");
    let fd = printed_pid(&t.stdout, "pwrite") as i64;
    let on = on_file(&t.events, &t.dir.join("pwrite.dat"));
    let pwrites: Vec<(i64, u64, i64, i64, i64)> = writes(&on)
        .iter()
        .filter(|e| e["call"] == "pwrite64")
        .map(|e| {
            assert_eq!(
                (e["pid"].as_u64(), e["fd"].as_i64()),
                (Some(pid), Some(fd)),
                "{e}"
            );
            (
                e["offset"].as_i64().unwrap(),
                e["requested"].as_u64().unwrap(),
                e["ret"].as_i64().unwrap(),
                e["file"]["size"].as_i64().unwrap(),
                e["calls"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pwrites,
        [(0, 40, 40, 0, 4), (100, 10, 10, 40, 1), (5, 10, 10, 110, 1)],
        "(offset, requested, ret, size, calls): the 4 contiguous pwrites one \
         event at the first one's offset, the two that start elsewhere each \
         their own"
    );
}

#[test]
fn a_run_of_positioned_writes_is_unsynced_where_it_landed() {
    let (dir, run) = audit("pwrites", &["nosync"]);
    assert_eq!(rule_ids(&run.report), ["unsynced-at-exit"]);
    unsynced_at_exit(
        &run,
        &dir.join("db.dat"),
        printed_pid(&run.stdout, "pid"),
        (
            3000 + 200,
            300 + 10,
            json!([[4096, 7096], [10000, 10200]]),
            "pwrite64 from 4096 and pwritev from 10000, each run where it landed",
        ),
    );
    let (_, run) = audit("pwrites", &["sync"]);
    assert!(
        all_findings(&run.report).is_empty(),
        "{:#}",
        run.report["findings"]
    );
}

#[test]
fn pipe_null_and_failed_writes_are_one_event_per_call() {
    let t = trace("one_per_call", &[]);
    let fd_of = |name: &str| printed_pid(&t.stdout, name) as i64;
    let pid = printed_pid(&t.stdout, "pid");
    let path = t.dir.join("pwrite.dat");
    let on = on_file(&t.raw, &path);
    let ro = fd_of("ro");
    let failed: Vec<Shape> = on
        .iter()
        .filter(|e| e["call"] == "write")
        .map(|e| shape(e))
        .collect();
    assert_eq!(
        failed,
        [(pid, pid, ro, 1, 10, -9, 110); 3],
        "writes to a read-only fd fail (EBADF), each its own event"
    );

    let pipe = fd_of("pipe");
    let pipe_ino = printed_pid(&t.stdout, "pipeino");
    let to_pipe: Vec<&Value> = t
        .raw
        .iter()
        .filter(|e| {
            e["type"] == "write"
                && e["pid"].as_u64() == Some(pid)
                && e["file"]["file_type"] == "fifo"
                && e["fd"].as_i64() == Some(pipe)
        })
        .collect();
    assert_eq!(
        shapes(&to_pipe),
        [(pid, pid, pipe, 1, 10, 10, 0); 3],
        "3 writes to a pipe, not merged"
    );
    assert!(
        to_pipe
            .iter()
            .all(|e| e["file"]["id"]["ino"].as_u64() == Some(pipe_ino)),
        "the pipe's inode: {to_pipe:#?}"
    );

    let null = fd_of("null");
    let dev_null = identity(Path::new("/dev/null"));
    let to_null: Vec<&Value> = t
        .raw
        .iter()
        .filter(|e| {
            e["type"] == "write"
                && e["pid"].as_u64() == Some(pid)
                && e["file"]["file_type"] == "char_device"
                && event_identity(e) == dev_null
        })
        .collect();
    assert_eq!(
        shapes(&to_null),
        [(pid, pid, null, 1, 10, 10, 0); 3],
        "3 writes to /dev/null, not merged"
    );
}

#[test]
fn short_write_after_a_run_carries_the_size_before_it() {
    let t = trace("short_after_run", &[]);
    let pid = printed_pid(&t.stdout, "pid");
    let on = on_file(&t.events, &t.dir.join("limited.dat"));
    let fd = opened_fd(&on, pid);
    assert_eq!(
        shapes(&writes(&on)),
        [
            (pid, pid, fd, 2, 20, 20, 0),
            (pid, pid, fd, 1, 10, 5, 20),
            (pid, pid, fd, 1, 10, -27, 25)
        ],
        "a run of 2, then the short write (5 of 10, into a 20-byte file) and \
         the failed one (EFBIG, at 25), each its own event with the size \
         before it"
    );
}

#[test]
fn short_append_after_a_run_is_unsynced_where_it_landed() {
    let (dir, run) = audit("short_after_run", &[]);
    let path = dir.join("limited.dat");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 25);
    assert_eq!(rule_ids(&run.report), ["unsynced-at-exit"]);
    unsynced_at_exit(
        &run,
        &path,
        printed_pid(&run.stdout, "pid"),
        (
            25,
            3,
            json!([[0, 25]]),
            "the 25 bytes of the file, appended: 20 by the run, 5 by the short write",
        ),
    );
}

/// `audit` with the probes' per-thread array cut to two entries
/// (`AUDITOR_THREAD_SLOTS`), so nearly every thread shares its entry with
/// another live one and lives in the kernel's fallback hash map, as on a
/// machine whose pid_max exceeds the array.
fn audit_in_two_slots(fixture: &str, args: &[&str]) -> (PathBuf, Value) {
    let dir = scratch_for(fixture, args, "two_slots");
    let run = run_report_with_env(
        &dir,
        &["--fail-on", "low"],
        &argv(&fixture_cmd(fixture, args)),
        &[("AUDITOR_THREAD_SLOTS", "2")],
    );
    assert_eq!(run.report["complete"], true, "nothing dropped");
    assert_eq!(
        run.report["exit_status"]["code"], 0,
        "the fixture's checks pass: {}",
        run.stderr
    );
    (dir, run.report)
}

#[test]
fn threads_sharing_a_kernel_slot_keep_their_runs_apart() {
    // The clean twin stays clean: B's fsync still follows A's run.
    let (_, report) = audit_in_two_slots("fsync_by_other_thread", &[]);
    assert!(
        all_findings(&report).is_empty(),
        "nothing to report: {:#}",
        report["findings"]
    );
    // Turns of two threads: same findings and evidence as with a slot each.
    let (dir, report) = audit_in_two_slots("turns", &["threads", "nosync"]);
    assert_eq!(
        rule_ids(&report),
        ["interleaved-writers", "unsynced-at-exit"]
    );
    let f = the_finding(&report, "unsynced-at-exit");
    assert_eq!(f["path"].as_str(), dir.join("app.log").to_str());
    assert_unsynced(
        &f["evidence"],
        80,
        8,
        json!([[0, 80]]),
        "same as with a slot each",
    );
}

/// Careful writers in parallel (each fdatasyncs every 100 writes and after
/// the last): a run of writes flushed by another CPU must still reach the
/// analyzer before the sync its own thread made next. Before the probes
/// reserved a run's place in the ring before taking its counts (and kept
/// listings apart by number), some rounds reported megabytes unsynced at
/// exit. It is a race, so it runs several rounds.
#[test]
fn careful_writers_in_parallel_are_never_unsynced() {
    let dir = scratch("runs_careful_writers");
    let fixture = fixture("verdicts/careful_writers.py");
    for round in 0..6 {
        for e in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        let run = run_report(
            &dir,
            &[],
            &[PYTHON, "-B", fixture.to_str().unwrap(), "100000", "4"],
        );
        assert_eq!(run.report["stats"]["dropped"], 0, "round {round}");
        assert!(
            all_findings(&run.report).is_empty(),
            "round {round}: {:#}",
            run.report["findings"]
        );
    }
}

/// What a report says that does not depend on when, or as which pid, it
/// ran: each finding's rule, severity, path in `dir`, inconclusiveness,
/// and the evidence that counts bytes and calls.
fn verdicts(report: &Value, dir: &Path) -> Vec<Value> {
    let base = format!("{}/", dir.display());
    let mut v: Vec<Value> = all_findings(report)
        .iter()
        .map(|f| {
            let ev = &f["evidence"];
            json!({
                "rule": f["rule"],
                "severity": f["severity"],
                "path": f["path"].as_str().unwrap().trim_start_matches(&base),
                "inconclusive": f["inconclusive"],
                "unsynced_bytes": ev["unsynced_bytes"],
                "writes": ev["writes"],
                "unsynced_ranges": ev["unsynced_ranges"],
            })
        })
        .collect();
    v.sort_by_key(|f| f.to_string());
    v
}

/// The fixture audited with visits and runs of positioned writes counted
/// in the kernel (the default), or reported call by call
/// (`AUDITOR_AGGREGATE=0`): (verdicts, events).
fn audit_counted(fixture: &str, args: &[&str], counted: bool) -> (Vec<Value>, u64) {
    let what = if counted { "counted" } else { "one_by_one" };
    let dir = scratch_for(fixture, args, what);
    let run = run_report_with_env(
        &dir,
        &[],
        &argv(&fixture_cmd(fixture, args)),
        &[("AUDITOR_AGGREGATE", if counted { "1" } else { "0" })],
    );
    assert_eq!(run.report["complete"], true, "nothing dropped");
    assert_eq!(
        run.report["exit_status"]["code"], 0,
        "the fixture's checks pass: {}",
        run.stderr
    );
    let events = run.report["stats"]["events"].as_u64().unwrap();
    (verdicts(&run.report, &dir), events)
}

#[test]
fn counted_in_the_kernel_or_call_by_call_the_verdicts_are_the_same() {
    for (fixture, args) in [
        ("poller", &[][..]),
        ("pwrites", &["nosync"][..]),
        ("pwrites", &["sync"][..]),
        ("one_per_call", &[][..]),
    ] {
        let (counted, fewer) = audit_counted(fixture, args, true);
        let (one_by_one, more) = audit_counted(fixture, args, false);
        assert_eq!(counted, one_by_one, "{fixture} {args:?}");
        assert!(
            fewer < more,
            "{fixture} {args:?}: {fewer} events, not fewer than {more}"
        );
    }
    // The poller's reopens of its config, counted: a handful of events
    // for its 400 polls.
    let (v, events) = audit_counted("poller", &[], true);
    let mut rules: Vec<&str> = v.iter().map(|f| f["rule"].as_str().unwrap()).collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        [
            "rename-without-dir-fsync",
            "rename-without-fsync",
            "unsynced-at-exit"
        ]
    );
    assert!(events < 300, "{events} events");
}

#[test]
fn a_polled_file_is_one_open_then_one_close_per_run_of_visits() {
    let t = trace("poller", &[]);
    let pid = printed_pid(&t.stdout, "pid");
    // Both configs: the first one's inode is gone by now.
    let config = t.dir.join("config.json");
    let ids: Vec<&Value> = t
        .raw
        .iter()
        .filter(|e| e["type"] == "open" && e["path"].as_str() == config.to_str())
        .map(|e| &e["file"]["id"])
        .collect();
    let on: Vec<&Value> = t
        .raw
        .iter()
        .filter(|e| ids.contains(&&e["file"]["id"]))
        .collect();
    let closes: Vec<(u64, u64)> = on
        .iter()
        .filter(|e| e["type"] == "close" && e["pid"].as_u64() == Some(pid))
        .map(|e| {
            (
                e["calls"].as_u64().unwrap_or(1),
                e["reopens"]["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let (calls, reopens): (u64, u64) = closes
        .iter()
        .fold((0, 0), |(c, r), (ci, ri)| (c + ci, r + ri));
    let opens = on
        .iter()
        .filter(|e| {
            e["type"] == "open"
                && e["pid"].as_u64() == Some(pid)
                && e["path"].as_str() == config.to_str()
        })
        .count() as u64;
    // The first config's creation, its 300 polls, the one held open at
    // the end and the second config's 100 polls are 402 opens, in any
    // split between reported opens and counted reopens; the closes are
    // those of the creation, the polls, and of config.json.tmp (the second
    // config's inode). A log line every 50 polls is a write, which ends
    // the run of visits it falls in.
    assert_eq!(opens + reopens, 402, "{closes:?}");
    assert_eq!(calls, 402, "{closes:?}");
    assert!(reopens >= 380, "nearly all reopens counted: {closes:?}");
}
