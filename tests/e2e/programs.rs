//! Real programs no one here wrote (Debian's sqlite3, git, redis-server,
//! etcd and containerd), each run in a durable and, where the program has one, a
//! non-durable configuration.
//! The findings observed are checked in as expectations in
//! `tests/expectations/<config>.txt`, with why each one is (or is not) a
//! true finding; every run must give exactly those, and a durable
//! configuration nothing at or above medium that its expectation does not
//! document as a true finding of the program.
//!
//! Expectation files: `#` comments, one `config durable|not-durable` line,
//! then one line per group of findings:
//! `finding|true-finding RULE SEVERITY COMM COUNT PATH` where PATH is
//! relative to the scratch directory and may hold `*` and `?` (not
//! crossing `/`). `true-finding` marks a finding at or above medium that a
//! durable configuration really has; it must follow a comment saying why.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auditor_e2e::*;
use serde_json::Value;

const SQLITE3: &str = "/usr/bin/sqlite3";
const GIT: &str = "/usr/bin/git";
const REDIS_SERVER: &str = "/usr/bin/redis-server";
const REDIS_CLI: &str = "/usr/bin/redis-cli";
const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";
const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";

#[derive(Debug)]
struct Entry {
    rule: String,
    severity: String,
    comm: String,
    count: usize,
    pattern: String,
    /// A finding at or above medium that the durable configuration really
    /// has (documented in the file).
    true_finding: bool,
}

#[derive(Debug)]
struct Expectation {
    name: String,
    durable: bool,
    entries: Vec<Entry>,
}

fn expectation(name: &str) -> Expectation {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("expectations")
        .join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut durable = None;
    let mut entries = Vec::new();
    let mut commented = false;
    for (n, line) in text.lines().enumerate() {
        let at = format!("{}:{}", file.display(), n + 1);
        let line = line.trim();
        if line.is_empty() {
            commented = false;
            continue;
        }
        if line.starts_with('#') {
            commented = true;
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["config", "durable"] => durable = Some(true),
            ["config", "not-durable"] => durable = Some(false),
            [
                kind @ ("finding" | "true-finding"),
                rule,
                severity,
                comm,
                count,
                pattern,
            ] => {
                let true_finding = *kind == "true-finding";
                assert!(
                    !true_finding || commented,
                    "{at}: a true-finding needs a comment saying why"
                );
                assert!(
                    ["low", "medium", "high"].contains(severity),
                    "{at}: severity {severity}"
                );
                entries.push(Entry {
                    rule: rule.to_string(),
                    severity: severity.to_string(),
                    comm: comm.to_string(),
                    count: count.parse().unwrap_or_else(|_| panic!("{at}: count")),
                    pattern: pattern.to_string(),
                    true_finding,
                });
            }
            _ => panic!("{at}: cannot parse {line:?}"),
        }
    }
    Expectation {
        name: name.to_string(),
        durable: durable.unwrap_or_else(|| panic!("{}: no config line", file.display())),
        entries,
    }
}

/// `*` is any run of characters but `/`, `?` one of them.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text)
                || (!text.is_empty() && text[0] != b'/' && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(&c)) => c != b'/' && glob(&pattern[1..], &text[1..]),
        (Some(p), Some(c)) => p == c && glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

fn rank(severity: &str) -> u8 {
    match severity {
        "low" => 0,
        "medium" => 1,
        "high" => 2,
        other => panic!("severity {other}"),
    }
}

/// One finding as the expectations see it: no pids, sizes or times.
fn shape(dir: &Path, f: &Value) -> (String, String, String, String) {
    let path = f["path"].as_str().unwrap();
    let rel = path
        .strip_prefix(dir.to_str().unwrap())
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or(path);
    (
        f["rule"].as_str().unwrap().to_owned(),
        f["severity"].as_str().unwrap().to_owned(),
        f["process"]["comm"].as_str().unwrap().to_owned(),
        rel.to_owned(),
    )
}

/// The report's findings equal the expectation: each finding matches
/// exactly one entry, each entry is matched `count` times, and a durable
/// configuration has nothing at or above medium that is not a documented
/// true finding.
fn check(dir: &Path, report: &Value, want: &Expectation) {
    assert_eq!(
        report["complete"], true,
        "{}: events were dropped, verdicts would be inconclusive",
        want.name
    );
    let shown = || serde_json::to_string_pretty(&report["findings"]).unwrap();
    let mut seen = vec![0usize; want.entries.len()];
    let mut unexpected = Vec::new();
    for f in all_findings(report) {
        assert_eq!(f["inconclusive"], false, "{}: {f:#}", want.name);
        let (rule, severity, comm, path) = shape(dir, f);
        let hits: Vec<usize> = want
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.rule == rule
                    && e.severity == severity
                    && e.comm == comm
                    && glob(e.pattern.as_bytes(), path.as_bytes())
            })
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => {
                seen[*i] += 1;
                let e = &want.entries[*i];
                assert!(
                    !want.durable || rank(&severity) < 1 || e.true_finding,
                    "{}: durable configuration, {rule} {severity} on {path} is not a documented true finding",
                    want.name
                );
            }
            [] => unexpected.push(format!("{rule} {severity} {comm} {path}")),
            _ => panic!("{}: {rule} on {path} matches several entries", want.name),
        }
    }
    let missing: Vec<String> = want
        .entries
        .iter()
        .zip(&seen)
        .filter(|(e, n)| e.count != **n)
        .map(|(e, n)| {
            format!(
                "{} {} {} {} (want {}, saw {n})",
                e.rule, e.severity, e.comm, e.pattern, e.count
            )
        })
        .collect();
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "{}: findings differ from tests/expectations/{}.txt\nunexpected: {unexpected:#?}\ncounts: {missing:#?}\nreport: {}",
        want.name,
        want.name,
        shown()
    );
    let serious = all_findings(report)
        .iter()
        .filter(|f| rank(f["severity"].as_str().unwrap()) >= 1)
        .count();
    assert_eq!(
        report["counts"]["total"].as_u64(),
        Some(all_findings(report).len() as u64)
    );
    if want.durable {
        let documented: usize = want
            .entries
            .iter()
            .filter(|e| e.true_finding)
            .map(|e| e.count)
            .sum();
        assert_eq!(serious, documented, "{}: {}", want.name, shown());
    }
}

/// At least one finding at or above medium: what a non-durable
/// configuration must show.
fn assert_flagged(report: &Value) {
    assert!(
        all_findings(report)
            .iter()
            .any(|f| rank(f["severity"].as_str().unwrap()) >= 1),
        "a non-durable configuration must be flagged"
    );
}

fn untraced(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&succeed(cmd).stdout).into_owned()
}

// ---------------------------------------------------------------- sqlite3

/// `sqlite3 test.db` with `PRAGMA journal_mode=<journal>` and
/// `PRAGMA synchronous=<synchronous>`, then the shared work.
fn sqlite(name: &str, journal: &str, synchronous: &str) -> (PathBuf, Run) {
    let dir = scratch(&format!("programs_{name}"));
    let work = fixture("programs/sqlite_work.sql");
    let read = format!(".read {}", work.to_str().unwrap());
    let journal = format!("PRAGMA journal_mode={journal}");
    let synchronous = format!("PRAGMA synchronous={synchronous}");
    let cmd = [
        SQLITE3,
        "-cmd",
        &journal,
        "-cmd",
        &synchronous,
        "test.db",
        &read,
    ];
    let run = run_report(&dir, &["--fail-on", "low"], &cmd);
    assert_eq!(run.report["exit_status"]["code"], 0, "{}", run.stderr);
    // The work really happened: 3 rows, doubled.
    let rows = untraced(
        Command::new(SQLITE3)
            .arg(dir.join("test.db"))
            .arg("SELECT count(*), sum(balance) FROM accounts;"),
    );
    assert_eq!(rows.trim(), "6|300");
    check(&dir, &run.report, &expectation(name));
    (dir, run)
}

#[test]
fn sqlite_delete_extra() {
    let (_, run) = sqlite("sqlite_delete_extra", "DELETE", "EXTRA");
    assert_eq!(run.code, 0);
}

#[test]
fn sqlite_delete_full() {
    let (_, run) = sqlite("sqlite_delete_full", "DELETE", "FULL");
    // Its low unlink-without-dir-fsync fails under --fail-on low.
    assert_eq!(run.code, 1);
}

#[test]
fn sqlite_wal_full() {
    let (_, run) = sqlite("sqlite_wal_full", "WAL", "FULL");
    // Its low unlink-without-dir-fsync fails under --fail-on low.
    assert_eq!(run.code, 1);
}

#[test]
fn sqlite_off() {
    let (dir, run) = sqlite("sqlite_off", "DELETE", "OFF");
    assert_flagged(&run.report);
    assert_eq!(run.code, 1);
    let f = the_finding(&run.report, "unsynced-at-exit");
    // Every page of the database it wrote, none of it synced.
    let size = std::fs::metadata(dir.join("test.db")).unwrap().len();
    let unsynced = f["evidence"]["unsynced_bytes"].as_u64().unwrap();
    assert!(unsynced >= size, "{unsynced} < {size}: {f:#}");
    assert!(f["evidence"]["last_successful_fsync"].is_null(), "{f:#}");
}

// -------------------------------------------------------------------- git

/// An untraced `git init` (with the files to commit already in place),
/// then `git add` + `git commit` traced, with `git_options`.
fn git(name: &str, git_options: &[&str]) -> (PathBuf, Run) {
    let dir = scratch(&format!("programs_{name}"));
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    std::fs::write(repo.join("a.txt"), "hello\n").unwrap();
    std::fs::write(repo.join("sub/b.txt"), "world\n").unwrap();
    // No user or system configuration, fixed identity and dates: the same
    // objects on every run.
    let env = [
        ("HOME", dir.to_str().unwrap()),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_AUTHOR_NAME", "A U Thor"),
        ("GIT_AUTHOR_EMAIL", "author@example.com"),
        ("GIT_COMMITTER_NAME", "C O Mitter"),
        ("GIT_COMMITTER_EMAIL", "committer@example.com"),
        ("GIT_AUTHOR_DATE", "2024-07-01T12:00:00Z"),
        ("GIT_COMMITTER_DATE", "2024-07-01T12:00:00Z"),
    ];
    untraced(
        Command::new(GIT)
            .args(["init", "-q", "-b", "main"])
            .arg(&repo)
            .envs(env),
    );
    // The setup's own writes are not what is judged.
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let script = fixture("programs/git_commit.sh");
    let mut args = vec!["run", "--format", "json", "--output"];
    let out_file = dir.join("auditor-report.json");
    args.push(out_file.to_str().unwrap());
    args.extend([
        "--fail-on",
        "low",
        "--",
        "/bin/sh",
        script.to_str().unwrap(),
    ]);
    args.extend(git_options);
    let out = Command::new(auditor_bin())
        .current_dir(&repo)
        .envs(env)
        .args(&args)
        .output()
        .expect("running auditor");
    let code = out.status.code().expect("auditor killed by a signal");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(code == 0 || code == 1, "auditor error {code}: {stderr}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&out_file).unwrap()).expect("report is JSON");
    std::fs::remove_file(&out_file).unwrap();
    assert_eq!(report["exit_status"]["code"], 0, "{stderr}");
    let log = untraced(Command::new(GIT).current_dir(&repo).envs(env).args([
        "log",
        "--format=%s",
        "--name-only",
    ]));
    assert_eq!(log.trim(), "first commit\n\na.txt\nsub/b.txt", "{log}");
    check(&dir, &report, &expectation(name));
    let run = Run {
        code,
        report,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    };
    (dir, run)
}

#[test]
fn git_fsync_all() {
    let (_, run) = git(
        "git_fsync_all",
        &["-c", "core.fsync=all", "-c", "core.fsyncMethod=fsync"],
    );
    // Every file git wrote through a lock or temp file had its data synced.
    assert!(findings(&run.report, "rename-without-fsync").is_empty());
}

#[test]
fn git_fsync_none() {
    let (dir, run) = git("git_fsync_none", &["-c", "core.fsync=none"]);
    assert_flagged(&run.report);
    let main = findings(&run.report, "rename-without-fsync")
        .into_iter()
        .find(|f| f["path"].as_str() == dir.join("repo/.git/refs/heads/main").to_str())
        .expect("the branch update");
    assert_eq!(
        main["evidence"]["unsynced_bytes"], 41,
        "a sha1 and a newline"
    );
    assert_eq!(
        main["evidence"]["source"].as_str(),
        dir.join("repo/.git/refs/heads/main.lock").to_str()
    );
}

// ------------------------------------------------------------------ redis

/// How the traced server ends.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// `redis-cli shutdown`.
    Shutdown,
    /// SIGKILL from outside: what a crash looks like to the server.
    Kill,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new(REDIS_CLI)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `auditor run -- redis-server` with the AOF on and `appendfsync`, driven
/// (untraced) by redis-cli: SET x3, SAVE, SET x2, then `end`.
fn redis(name: &str, appendfsync: &str, end: End) -> (PathBuf, Value) {
    let dir = scratch(&format!("programs_{name}"));
    let port = free_port().to_string();
    let out_file = dir.join("auditor-report.json");
    require_root();
    let mut auditor = Command::new(auditor_bin())
        .current_dir(&dir)
        .args(["run", "--format", "json", "--fail-on", "low", "--output"])
        .arg(&out_file)
        .args(["--", REDIS_SERVER, "--port", &port, "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(&dir)
        .args(["--save", "", "--appendonly", "yes", "--appendfsync"])
        .arg(appendfsync)
        .args(["--daemonize", "no", "--logfile", ""])
        // The server logs to stdout: a character device, not judged.
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running auditor");
    let port: u16 = port.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli(port, &["ping"]).as_deref() != Some("PONG") {
        if Instant::now() > deadline || auditor.try_wait().unwrap().is_some() {
            let _ = auditor.kill();
            let out = auditor.wait_with_output().unwrap();
            panic!(
                "redis-server did not answer on port {port}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for k in 1..=3 {
        assert_eq!(
            cli(port, &["set", &format!("key{k}"), &format!("value{k}")]).as_deref(),
            Some("OK")
        );
    }
    assert_eq!(cli(port, &["save"]).as_deref(), Some("OK"));
    for k in 4..=5 {
        assert_eq!(
            cli(port, &["set", &format!("key{k}"), &format!("value{k}")]).as_deref(),
            Some("OK")
        );
    }
    match end {
        End::Shutdown => {
            // The connection closes as the server exits: no reply to wait for.
            let _ = cli(port, &["shutdown"]);
        }
        End::Kill => {
            let info = cli(port, &["info", "server"]).unwrap();
            let pid: i32 = info
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no process_id in {info}"));
            // SAFETY: kill has no memory preconditions; pid is the server's.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while auditor.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = auditor.kill();
            panic!("the auditor did not end after the server was stopped");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = auditor.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().expect("auditor killed by a signal");
    let report: Value = serde_json::from_slice(
        &std::fs::read(&out_file)
            .unwrap_or_else(|e| panic!("no report ({e}), auditor exit {code}: {stderr}")),
    )
    .expect("report is JSON");
    assert_run_code(code, &report, &stderr);
    match end {
        End::Shutdown => assert_eq!(report["exit_status"]["code"], 0, "{stderr}"),
        End::Kill => assert_eq!(report["exit_status"]["signal_name"], "SIGKILL"),
    }
    // What the server wrote: the snapshot and the multi-part AOF.
    assert!(dir.join("dump.rdb").exists());
    let mut aof: Vec<String> = std::fs::read_dir(dir.join("appendonlydir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    aof.sort();
    assert_eq!(
        aof,
        [
            "appendonly.aof.1.base.rdb",
            "appendonly.aof.1.incr.aof",
            "appendonly.aof.manifest"
        ]
    );
    check(&dir, &report, &expectation(name));
    (dir, report)
}

#[test]
fn redis_always_shutdown() {
    redis("redis_always_shutdown", "always", End::Shutdown);
}

#[test]
fn redis_always_killed() {
    redis("redis_always_killed", "always", End::Kill);
}

#[test]
fn redis_no_killed() {
    let (dir, report) = redis("redis_no_killed", "no", End::Kill);
    assert_flagged(&report);
    let f = the_finding(&report, "killed-while-dirty");
    // The SET commands after the last AOF sync, nothing of the snapshot.
    let aof = dir.join("appendonlydir/appendonly.aof.1.incr.aof");
    assert_eq!(
        f["evidence"]["unsynced_bytes"].as_u64(),
        Some(std::fs::metadata(&aof).unwrap().len()),
        "{f:#}"
    );
    assert_eq!(f["evidence"]["signal"], "SIGKILL");
}

#[test]
fn redis_no_shutdown() {
    let (_, report) = redis("redis_no_shutdown", "no", End::Shutdown);
    // A clean shutdown fsyncs the AOF even with appendfsync no.
    assert!(all_findings(&report).is_empty());
}

// ------------------------------------------------ servers: etcd, containerd

/// A server run by `auditor run --format json --fail-on low`, with its
/// output in a log file (the caller's: counted, not judged; a pipe would
/// also hold the test up on a failure that leaves the server running).
struct Served {
    auditor: std::process::Child,
    report: PathBuf,
    log: PathBuf,
}

impl Served {
    fn start(dir: &Path, server: &[&str]) -> Served {
        require_root();
        let report = dir.join("auditor-report.json");
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let auditor = Command::new(auditor_bin())
            .current_dir(dir)
            .args(["run", "--format", "json", "--fail-on", "low", "--output"])
            .arg(&report)
            .arg("--")
            .args(server)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("running auditor");
        Served {
            auditor,
            report,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `ready` until it holds; fails with the server's log when the
    /// auditor ends first or 20 s pass.
    fn wait_ready(&mut self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready() {
            if Instant::now() > deadline || self.auditor.try_wait().unwrap().is_some() {
                let _ = self.auditor.kill();
                panic!("the server never answered: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to the server (the `program` whose arguments hold
    /// `needle`), waits for the auditor to end, and checks that the report
    /// records that end and counts the log as the caller's.
    fn stop(mut self, program: &str, needle: &str, signal: i32) -> Value {
        let pid = pid_of(program, needle).expect("the server's pid");
        // SAFETY: kill has no memory preconditions; pid is the server's.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.auditor.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.auditor.kill();
                panic!("the auditor did not end after the server was stopped");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let code = self.auditor.wait().unwrap().code();
        let log = self.log();
        let code = code.expect("auditor killed by a signal");
        let report: Value = serde_json::from_slice(
            &std::fs::read(&self.report)
                .unwrap_or_else(|e| panic!("no report ({e}), auditor exit {code}: {log}")),
        )
        .expect("report is JSON");
        // A server killed (or stopped by a signal it raises again) is the
        // command's failure, passed on.
        assert_run_code(code, &report, &log);
        match signal {
            // Both servers handle SIGTERM and exit by themselves (etcd
            // raises it again once it has shut down).
            libc::SIGTERM => assert!(
                report["exit_status"]["code"] == 0 || report["exit_status"]["signal"] == signal,
                "{log}"
            ),
            _ => assert_eq!(report["exit_status"]["signal"], signal, "{log}"),
        }
        assert_eq!(
            report["stats"]["caller_files"]["examples"],
            serde_json::json!([self.log.to_str().unwrap()]),
            "the server's log is the caller's file"
        );
        report
    }
}

/// The pid of the `program` whose arguments hold `needle` (the auditor
/// running it has both in its own command line, but not first).
fn pid_of(program: &str, needle: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let mut args = cmdline.split(|b| *b == 0);
        (args.next()? == program.as_bytes() && args.any(|a| a == needle.as_bytes())).then_some(pid)
    })
}

/// stdout of `cmd` when it succeeds.
fn answer(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn etcdctl(port: u16, args: &[&str]) -> Option<String> {
    answer(
        Command::new(ETCDCTL)
            .arg(format!("--endpoints=127.0.0.1:{port}"))
            .arg("--command-timeout=2s")
            .args(args)
            .env("ETCDCTL_API", "3"),
    )
}

/// `auditor run -- etcd`, one member with its data in the scratch
/// directory and default (durable) settings, driven (untraced) by
/// etcdctl: PUT x3, then `signal` from outside (SIGTERM: etcd's own
/// shutdown; SIGKILL: what a crash looks like to it).
fn etcd(name: &str, signal: i32) -> (PathBuf, Value) {
    let dir = scratch(&format!("programs_{name}"));
    let (client, peer) = (free_port(), free_port());
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let cluster = format!("--initial-cluster=m={peer_url}");
    let mut served = Served::start(
        &dir,
        &[
            ETCD,
            "--name",
            "m",
            "--data-dir",
            &data_arg,
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            &cluster,
        ],
    );
    served.wait_ready(|| etcdctl(client, &["put", "probe", "0"]).as_deref() == Some("OK"));
    for k in 1..=3 {
        let key = format!("key{k}");
        let value = format!("value{k}");
        assert_eq!(
            etcdctl(client, &["put", &key, &value]).as_deref(),
            Some("OK")
        );
    }
    assert_eq!(
        etcdctl(client, &["get", "key2", "--print-value-only"]).as_deref(),
        Some("value2")
    );
    // The backend commits its batch every 100 ms: let it settle, so the
    // kill never lands inside a commit.
    std::thread::sleep(Duration::from_millis(500));
    let report = served.stop(ETCD, &data_arg, signal);
    assert!(data.join("member/wal").is_dir() && data.join("member/snap/db").is_file());
    check(&dir, &report, &expectation(name));
    (dir, report)
}

#[test]
fn etcd_shutdown() {
    etcd("etcd_shutdown", libc::SIGTERM);
}

#[test]
fn etcd_killed() {
    etcd("etcd_killed", libc::SIGKILL);
}

fn ctr(sock: &Path, args: &[&str]) -> Option<String> {
    answer(
        Command::new(CTR)
            .arg("--address")
            .arg(sock)
            .args(["--timeout", "2s"])
            .args(args),
    )
}

/// `auditor run -- containerd` with its root, state and socket in the
/// scratch directory (the CRI plugin off: no images here), driven
/// (untraced) by ctr: a namespace created and labelled and a lease taken,
/// all metadata in its bbolt database; then `signal` from outside.
fn containerd(name: &str, signal: i32) -> (PathBuf, Value) {
    let dir = scratch(&format!("programs_{name}"));
    let sock = dir.join("containerd.sock");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {:?}\n",
            dir.join("root"),
            dir.join("state"),
            sock
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    let mut served = Served::start(&dir, &[CONTAINERD, "--config", &config_arg]);
    served.wait_ready(|| ctr(&sock, &["namespaces", "ls"]).is_some());
    assert!(ctr(&sock, &["namespaces", "create", "audited"]).is_some());
    assert!(ctr(&sock, &["namespaces", "label", "audited", "team=storage"]).is_some());
    assert!(ctr(&sock, &["-n", "audited", "leases", "create"]).is_some());
    assert!(
        ctr(&sock, &["namespaces", "ls"])
            .unwrap()
            .contains("team=storage")
    );
    let report = served.stop(CONTAINERD, &config_arg, signal);
    check(&dir, &report, &expectation(name));
    (dir, report)
}

#[test]
fn containerd_shutdown() {
    containerd("containerd_shutdown", libc::SIGTERM);
}

#[test]
fn containerd_killed() {
    containerd("containerd_killed", libc::SIGKILL);
}

#[test]
fn expectations_parse_and_globs_match() {
    let mut counts = BTreeMap::new();
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("expectations")).unwrap()
    {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let name = name.strip_suffix(".txt").expect("expectations are .txt");
        let e = expectation(name);
        counts.insert(name.to_owned(), e.entries.len());
    }
    assert!(counts.len() >= 6, "{counts:?}");
    assert!(glob(b"repo/.git/objects/*/*", b"repo/.git/objects/ab/cdef"));
    assert!(!glob(b"repo/.git/objects/*", b"repo/.git/objects/ab/cdef"));
    assert!(glob(b"a?c", b"abc") && !glob(b"a?c", b"a/c"));
}

// ---------------------------------------------------------------- python3

/// CPython caches a compiled module in `__pycache__` with a temp file and a
/// rename, no fsync. It checks the cache and rebuilds it from the source
/// when it is damaged, so nothing is reported by default (the findings are
/// counted); `--judge-caches` shows them.
#[test]
fn python_bytecode_cache_is_counted_not_reported() {
    let dir = scratch("programs_python_pycache");
    std::fs::write(dir.join("mymod.py"), "X = 1\n").unwrap();
    // Overrides PYTHONDONTWRITEBYTECODE, whatever the environment says.
    let script = "import sys; sys.dont_write_bytecode = False; import mymod";
    let cache = dir.join("__pycache__");
    let audit = |extra: &[&str]| {
        let _ = std::fs::remove_dir_all(&cache);
        let run = run_report(&dir, extra, &["python3", "-c", script]);
        let pyc: Vec<PathBuf> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(pyc.len(), 1, "{pyc:?}");
        (run, pyc[0].clone())
    };
    let (run, _) = audit(&[]);
    assert!(all_findings(&run.report).is_empty(), "{:#}", run.report);
    assert_eq!(run.code, 0);
    assert_eq!(run.report["stats"]["cache_findings"], 2);

    let (run, pyc) = audit(&["--judge-caches"]);
    assert_eq!(
        rule_ids(&run.report),
        ["rename-without-dir-fsync", "rename-without-fsync"]
    );
    let f = the_finding(&run.report, "rename-without-fsync");
    assert_eq!(f["path"].as_str(), pyc.to_str());
    assert_eq!(run.report["stats"]["cache_findings"], 0);
}
