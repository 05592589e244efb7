//! `auditor attach` on running processes: a real Debian daemon (redis)
//! driven through operations that save state, fixture daemons with files
//! dirtied before the attach, forked workers, a restart, a pid namespace;
//! metrics; and the one-line errors of bad input.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use auditor_e2e::{tmux::wait_for_file, *};
use serde_json::Value;

/// A running `auditor attach` whose stderr is watched line by line.
struct Attached {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Attached {
    /// Starts it and waits until it says it is attached (or waiting).
    fn start(dir: &Path, args: &[&str]) -> Attached {
        require_root();
        let mut child = Command::new(auditor_bin())
            .current_dir(dir)
            .arg("attach")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut a = Attached {
            child,
            lines,
            stderr: Vec::new(),
        };
        a.wait_line(|l| l.contains("attached to") || l.contains("waiting for one"));
        a
    }

    /// [`Attached::start`] on the processes `targets` names, writing its
    /// report to `report.json` in `dir` (see [`report_in`]).
    fn reporting(dir: &Path, targets: &[&str]) -> Attached {
        let report = dir.join("report.json");
        let mut args = targets.to_vec();
        args.extend(["--output", report.to_str().unwrap()]);
        Attached::start(dir, &args)
    }

    fn wait_line(&mut self, pred: impl Fn(&str) -> bool) {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    let hit = pred(&l);
                    self.stderr.push(l);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(_) => {}
            }
        }
        panic!("auditor never got there; stderr: {:?}", self.stderr);
    }

    /// SIGINT (a clean stop), then its exit code and stdout.
    fn stop(mut self) -> (i32, String, Vec<String>) {
        // SAFETY: kill of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        self.stderr.extend(self.lines.try_iter());
        (code, out, self.stderr)
    }
}

/// A python3 whose process name (comm) is `name`: exec through a symlink.
fn named_python(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    symlink("/usr/bin/python3", &p).unwrap();
    p
}

/// The report an [`Attached::reporting`] in `dir` wrote.
fn report_in(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report written");
    serde_json::from_str(&text).unwrap()
}

/// Lets the fixture daemon in `dir` go on past its pre-attach work.
fn go(dir: &Path) {
    std::fs::write(dir.join("go"), b"").unwrap();
}

fn on_path<'a>(report: &'a Value, path: &Path) -> Vec<&'a Value> {
    all_findings(report)
        .into_iter()
        .filter(|f| f["path"].as_str() == Some(path.to_str().unwrap()))
        .collect()
}

fn fixture_daemon(dir: &Path, name: &str, mode: &str) -> Command {
    let mut c = Command::new(named_python(dir, name));
    c.arg(fixture("attach/daemon.py")).arg(dir).arg(mode);
    c
}

/// Starts the fixture daemon and waits until its pre-attach work is done.
fn start_daemon(dir: &Path, name: &str, mode: &str) -> Child {
    let d = fixture_daemon(dir, name, mode).spawn().unwrap();
    wait_for_file(&dir.join("ready"));
    d
}

/// Files dirtied before the attach are not judged with certainty: the
/// untouched one yields nothing, the one written again after the attach is
/// reported for exactly the bytes the trace saw, the one fsynced after the
/// attach is clean. Stopping with SIGINT writes the report atomically.
#[test]
fn state_from_before_the_attach_is_never_a_certain_finding() {
    let dir = scratch("attach_dirty");
    let mut d = start_daemon(&dir, "attfix-dirty", "dirty");
    let a = Attached::reporting(&dir, &["--comm", "attfix-dirty"]);
    go(&dir);
    assert!(d.wait().unwrap().success());
    let (code, _, err) = a.stop();
    let r = report_in(&dir);
    assert!(
        on_path(&r, &dir.join("a.dat")).is_empty(),
        "a.dat was only written before the attach: {r:#}"
    );
    let b = on_path(&r, &dir.join("b.dat"));
    assert_eq!(b.len(), 1, "{r:#}");
    assert_eq!(b[0]["rule"], "unsynced-at-exit");
    assert_eq!(b[0]["evidence"]["unsynced_bytes"], 10, "only what was seen");
    assert!(
        on_path(&r, &dir.join("c.dat")).is_empty(),
        "fsynced after attach"
    );
    assert_eq!(code, 1, "a medium finding fails the run; stderr {err:?}");
    let procs = r["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0]["pid"], d.id());
    assert_eq!(procs[0]["how"], "attached");
    assert_eq!(procs[0]["state"], "exited with code 0");
}

/// A process killed while holding a file it opened for writing before the
/// attach: whether that file lost data is unknown, and the report says so
/// (inconclusive) instead of staying silent; a file dirtied under the
/// trace's eyes gets the certain verdict.
#[test]
fn kill_with_state_from_before_the_attach_is_inconclusive() {
    let dir = scratch("attach_killed");
    let mut d = start_daemon(&dir, "attfix-killed", "killed");
    let a = Attached::reporting(&dir, &["--pid", &d.id().to_string()]);
    go(&dir);
    wait_for_file(&dir.join("worked"));
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGKILL) };
    let _ = d.wait();
    let (code, _, err) = a.stop();
    let r = report_in(&dir);
    let a_dat = on_path(&r, &dir.join("a.dat"));
    assert_eq!(a_dat.len(), 1, "{r:#}");
    assert_eq!(a_dat[0]["rule"], "killed-while-dirty");
    assert_eq!(a_dat[0]["inconclusive"], true, "{r:#}");
    let b_dat = on_path(&r, &dir.join("b.dat"));
    assert_eq!(b_dat.len(), 1, "{r:#}");
    assert_eq!(b_dat[0]["rule"], "killed-while-dirty");
    assert_eq!(b_dat[0]["inconclusive"], false, "{r:#}");
    assert_eq!(
        b_dat[0]["evidence"]["unsynced_bytes"], 10,
        "only what was seen"
    );
    assert_eq!(code, 1, "stderr {err:?}");
}

/// Workers forked after the attach are followed, and their findings carry
/// their own pid.
#[test]
fn forked_workers_are_followed() {
    let dir = scratch("attach_fork");
    let mut d = start_daemon(&dir, "attfix-fork", "fork");
    let a = Attached::reporting(&dir, &["--pid", &d.id().to_string()]);
    go(&dir);
    assert!(d.wait().unwrap().success());
    // The last watched process is gone: attach ends by itself.
    let (code, _, _) = a.stop();
    assert_eq!(code, 1);
    let r = report_in(&dir);
    let w = on_path(&r, &dir.join("worker.dat"));
    assert_eq!(w.len(), 1, "{r:#}");
    let worker_pid = w[0]["process"]["pid"].as_u64().unwrap();
    assert_ne!(worker_pid, d.id() as u64);
    // The parent fsynced its data (never its directory: that is a finding
    // of its own, about the name).
    assert!(
        on_path(&r, &dir.join("parent.dat"))
            .iter()
            .all(|f| f["rule"] == "create-without-dir-fsync"),
        "{r:#}"
    );
    let procs = r["processes"].as_array().unwrap();
    let child = procs
        .iter()
        .find(|p| p["pid"] == worker_pid)
        .expect("worker listed");
    assert_eq!(child["how"], "forked by a watched process");
    assert_eq!(child["ppid"], d.id());
}

/// A daemon restarted under the same name (new pid) while attached with
/// --follow-new: two lives, reported apart.
#[test]
fn a_restarted_daemon_is_two_lives() {
    let dir = scratch("attach_restart");
    go(&dir);
    let a = Attached::reporting(&dir, &["--comm", "attfix-restart", "--follow-new"]);
    let mut pids = Vec::new();
    for _ in 0..2 {
        let mut d = fixture_daemon(&dir, "attfix-restart", "once")
            .spawn()
            .unwrap();
        pids.push(d.id());
        assert!(d.wait().unwrap().success());
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = a.stop();
    assert_eq!(code, 1, "{err:?}");
    let r = report_in(&dir);
    for pid in &pids {
        let f = on_path(&r, &dir.join(format!("life-{pid}.dat")));
        assert_eq!(f.len(), 1, "life {pid}: {r:#}");
        assert_eq!(f[0]["process"]["pid"], *pid);
        assert_eq!(f[0]["evidence"]["unsynced_bytes"], 33);
    }
    let lives: Vec<&Value> = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["comm"] == "attfix-restart")
        .collect();
    assert_eq!(lives.len(), 2, "{r:#}");
    for l in lives {
        assert_eq!(l["how"], "followed at exec");
        assert_eq!(l["state"], "exited with code 0");
    }
}

/// A process in its own pid namespace is shown with both pids.
#[test]
fn pid_namespace_pids_are_shown_both_ways() {
    let dir = scratch("attach_pidns");
    let py = named_python(&dir, "attfix-ns");
    let mut d = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(&py)
        .arg(fixture("attach/daemon.py"))
        .arg(&dir)
        .arg("dirty")
        .spawn()
        .unwrap();
    wait_for_file(&dir.join("ready"));
    let a = Attached::reporting(&dir, &["--comm", "attfix-ns"]);
    go(&dir);
    assert!(d.wait().unwrap().success());
    let (_, _, _) = a.stop();
    let r = report_in(&dir);
    let procs = r["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{r:#}");
    assert_eq!(procs[0]["pid_in_namespace"], 1);
    assert_ne!(procs[0]["pid"], 1);
    let b = on_path(&r, &dir.join("b.dat"));
    assert_eq!(
        b[0]["process"]["pid"], procs[0]["pid"],
        "host pid in findings"
    );
}

fn redis_cli(sock: &Path, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "redis-cli {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Prometheus's own linter on the page (`promtool check metrics` reads the
/// exposition from stdin and exits non-zero on format errors or lint
/// problems).
fn promtool_check(page: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by `cargo xtask setup`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Prometheus text format, checked strictly: HELP and TYPE once per
/// family and before its samples, valid names and label syntax, counters
/// named `_total`, numeric values, no duplicate series.
fn check_exposition(text: &str) -> Result<(), String> {
    use std::collections::{HashMap, HashSet};
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    if !text.ends_with('\n') {
        return Err("no final newline".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped = HashSet::new();
    let mut series = HashSet::new();
    let mut current = String::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let n = rest.split(' ').next().unwrap();
            if !name_ok(n) || !helped.insert(n.to_owned()) {
                return Err(format!("bad or repeated HELP: {l}"));
            }
        } else if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (n, t) = (it.next().unwrap(), it.next().unwrap_or(""));
            if !["counter", "gauge"].contains(&t) || types.contains_key(n) {
                return Err(format!("bad TYPE: {l}"));
            }
            if t == "counter" && !n.ends_with("_total") {
                return Err(format!("counter without _total: {n}"));
            }
            types.insert(n.to_owned(), t.to_owned());
            current = n.to_owned();
        } else if l.starts_with('#') || l.is_empty() {
            return Err(format!("unexpected line: {l:?}"));
        } else {
            let (name_labels, value) = l.rsplit_once(' ').ok_or(format!("no value: {l}"))?;
            value
                .parse::<f64>()
                .map_err(|_| format!("bad value: {l}"))?;
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}').ok_or(format!("unclosed: {l}"))?),
                None => (name_labels, ""),
            };
            if name != current {
                return Err(format!("sample outside its family: {l}"));
            }
            let mut rest = labels;
            while !rest.is_empty() {
                let (k, v) = rest.split_once("=\"").ok_or(format!("bad label: {l}"))?;
                if !name_ok(k) {
                    return Err(format!("bad label name: {l}"));
                }
                let mut end = None;
                let mut esc = false;
                for (i, c) in v.char_indices() {
                    match (esc, c) {
                        (true, '\\' | '"' | 'n') => esc = false,
                        (true, _) => return Err(format!("bad escape: {l}")),
                        (false, '\\') => esc = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let e = end.ok_or(format!("unterminated label: {l}"))?;
                rest = v[e + 1..].strip_prefix(',').unwrap_or(&v[e + 1..]);
            }
            if !series.insert(name_labels.to_owned()) {
                return Err(format!("duplicate series: {l}"));
            }
        }
    }
    Ok(())
}

#[test]
fn the_exposition_checker_rejects_bad_pages() {
    assert!(
        check_exposition("# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n").is_ok()
    );
    for bad in [
        "a_total 1\n",
        "# HELP a x\n# TYPE a counter\na 1\n",
        "# HELP a x\n# TYPE a gauge\na{k=\"v} 1\n",
        "# HELP a x\n# TYPE a gauge\na one\n",
        "# HELP a x\n# TYPE a gauge\na 1\na 2\n",
        "# HELP a x\n# TYPE a gauge\na 1",
    ] {
        assert!(check_exposition(bad).is_err(), "{bad:?}");
    }
}

fn scrape(addr: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let (head, body) = s.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// redis-server, attached by name and driven through SET + SAVE, BGSAVE
/// and an append-only file with `appendfsync always`. From redis 7.0's
/// source: rdbSave writes temp-<pid>.rdb, fflush + fsync, renames it over
/// dump.rdb and fsyncs the directory (fsyncFileDir); BGSAVE does the same
/// in a forked child; with appendfsync always the AOF is fsynced
/// (fdatasync) before the reply. Its log is the stdout its launcher
/// redirected to a file, written with fprintf + fflush and never fsynced:
/// the launcher's to keep, counted and not judged. So: no finding on
/// dump.rdb, no data finding on the AOF, none on the log, the BGSAVE child
/// followed.
/// Metrics are served while attached and pass a strict format check.
#[test]
fn redis_saves_are_durable_and_its_log_is_not() {
    let dir = scratch("attach_redis");
    let sock = dir.join("redis.sock");
    let log = dir.join("redis.log");
    // Its own name, so other redis servers on the host are not watched.
    let bin = dir.join("redis-attfix");
    symlink("/usr/bin/redis-server", &bin).unwrap();
    let mut redis = Command::new(&bin)
        .current_dir(&dir)
        .args(["--port", "0", "--unixsocket"])
        .arg(&sock)
        .args(["--dir"])
        .arg(&dir)
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--appendfsync",
            "always",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&sock);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let a = Attached::reporting(&dir, &["--comm", "redis-attfix", "--metrics-addr", &addr]);
    assert_eq!(redis_cli(&sock, &["SET", "k1", "v1"]), "OK");
    assert_eq!(redis_cli(&sock, &["SAVE"]), "OK");
    redis_cli(&sock, &["BGSAVE"]);
    let end = Instant::now() + Duration::from_secs(20);
    while redis_cli(&sock, &["INFO", "persistence"]).contains("rdb_bgsave_in_progress:1") {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        redis_cli(&sock, &["CONFIG", "SET", "appendonly", "yes"]),
        "OK"
    );
    let end = Instant::now() + Duration::from_secs(20);
    while !redis_cli(&sock, &["INFO", "persistence"]).contains("aof_rewrite_in_progress:0\r")
        && !redis_cli(&sock, &["INFO", "persistence"]).contains("aof_rewrite_in_progress:0")
    {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..20 {
        assert_eq!(redis_cli(&sock, &["SET", &format!("k{i}"), "v"]), "OK");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let page = scrape(&addr);
    if let Err(e) = check_exposition(&page) {
        panic!("{e}\n{page}");
    }
    promtool_check(&page);
    assert!(page.contains("auditor_tracked_processes 1\n"), "{page}");
    assert!(
        page.contains("auditor_events_total{kind=\"rename\"}"),
        "{page}"
    );
    let (code, _, err) = a.stop();
    let _ = redis.kill();
    let _ = redis.wait();
    assert!(code == 0 || code == 1, "stderr {err:?}");
    let r = report_in(&dir);

    assert!(dir.join("dump.rdb").exists());
    assert!(on_path(&r, &dir.join("dump.rdb")).is_empty(), "{r:#}");
    let aof_findings: Vec<&Value> = all_findings(&r)
        .into_iter()
        .filter(|f| f["path"].as_str().unwrap_or("").contains("appendonly"))
        .filter(|f| {
            [
                "unsynced-at-exit",
                "killed-while-dirty",
                "rename-without-fsync",
            ]
            .contains(&f["rule"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(aof_findings.is_empty(), "AOF findings: {aof_findings:#?}");
    // The server and each child that inherited its stdout wrote to it.
    assert!(on_path(&r, &log).is_empty(), "{r:#}");
    let caller = &r["stats"]["caller_files"];
    assert_eq!(
        caller["examples"],
        serde_json::json!([log.to_str().unwrap()]),
        "{r:#}"
    );
    assert!(caller["bytes"].as_u64().unwrap() > 0, "{r:#}");
    let procs = r["processes"].as_array().unwrap();
    assert_eq!(procs[0]["pid"], redis.id());
    assert!(
        procs
            .iter()
            .filter(|p| p["how"] == "forked by a watched process")
            .count()
            >= 2,
        "the BGSAVE and AOF rewrite children: {procs:#?}"
    );
    assert!(r["stats"]["files_tracked"].as_u64().unwrap() >= 3);
}

/// `--format jsonl` streams to stdout: findings as found, the summary with
/// the processes at the end.
#[test]
fn jsonl_streams_findings_then_a_summary() {
    let dir = scratch("attach_jsonl");
    let mut d = start_daemon(&dir, "attfix-jsonl", "dirty");
    let a = Attached::start(&dir, &["--comm", "attfix-jsonl", "--format", "jsonl"]);
    go(&dir);
    assert!(d.wait().unwrap().success());
    let (code, out, _) = a.stop();
    assert_eq!(code, 1);
    let lines = json_lines(&out);
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["processes"][0]["pid"], d.id());
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "finding" && l["rule"] == "unsynced-at-exit")
    );
}

/// `--format jsonl --output FILE` is a log a pipeline follows: the finding
/// is in the file while the attach still runs, and the summary ends it.
#[test]
fn jsonl_output_file_grows_while_attached() {
    let dir = scratch("attach_jsonl_file");
    let mut d = start_daemon(&dir, "attfix-log", "rename");
    let log = dir.join("findings.jsonl");
    let a = Attached::start(
        &dir,
        &[
            "--pid",
            &d.id().to_string(),
            "--format",
            "jsonl",
            "--output",
            log.to_str().unwrap(),
        ],
    );
    go(&dir);
    wait_for_file(&dir.join("worked"));
    let end = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break serde_json::from_str::<Value>(line).unwrap();
        }
        assert!(Instant::now() < end, "no finding line while attached");
        std::thread::sleep(Duration::from_millis(50));
    };
    // While attached, what is put at risk; the verdicts come at the end.
    assert_eq!(first["type"], "at_risk");
    assert_eq!(first["rule"], "rename-without-fsync");
    std::fs::write(dir.join("stop"), b"").unwrap();
    assert!(d.wait().unwrap().success());
    let (code, _, err) = a.stop();
    assert_eq!(code, 1, "stderr {err:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        jsonl_report(&text)
            .iter()
            .any(|l| l["type"] == "finding" && l["rule"] == "rename-without-fsync"),
        "{text}"
    );
}

fn one_error_line(args: &[&str]) -> String {
    let out = auditor(Path::new("/"), args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn bad_input_is_one_clear_line() {
    let e = one_error_line(&["attach", "--pid", "4194300"]);
    assert!(e.contains("--pid 4194300: no such process"), "{e}");
    let e = one_error_line(&["attach", "--comm", "no-such-daemon"]);
    assert!(
        e.contains("no running process matches --comm no-such-daemon"),
        "{e}"
    );
    assert!(e.contains("--follow-new"), "{e}");
    let e = one_error_line(&["attach", "--cgroup", "/no/such/cgroup"]);
    assert!(e.contains("no such cgroup"), "{e}");
    let e = one_error_line(&["attach", "--pid", "1", "--duration", "soon"]);
    assert!(e.contains("--duration"), "{e}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let e = one_error_line(&["attach", "--pid", "1", "--metrics-addr", &addr]);
    assert!(e.contains("cannot listen there"), "{e}");
}

/// --duration ends the attach by itself; a name that matches nothing yet
/// waits with --follow-new instead of failing.
#[test]
fn duration_ends_a_wait_for_new_processes() {
    let dir = scratch("attach_duration");
    let t = Instant::now();
    let out = auditor(
        &dir,
        &[
            "attach",
            "--comm",
            "attfix-never",
            "--follow-new",
            "--duration",
            "1s",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(15));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["processes"], Value::Array(vec![]));
}

/// `attach --tui` draws only on a terminal: without one it refuses at once,
/// in one line, before touching the kernel.
#[test]
fn tui_refuses_without_a_terminal() {
    let e = one_error_line(&["attach", "--tui", "--pid", "1"]);
    assert!(e.contains("--tui needs a terminal"), "{e}");
}

/// A cgroup v2 directory of our own under the mounted hierarchy, removed
/// (after its processes) on drop.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    fn create(name: &str) -> TestCgroup {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = mi
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.split_whitespace().next() == Some("cgroup2"))
                    .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
                    .flatten()
            })
            .expect("a cgroup2 hierarchy is mounted");
        let dir = root.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).expect("create the cgroup");
        TestCgroup { dir }
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
    }

    /// As /proc/PID/cgroup names it.
    fn name(&self) -> String {
        format!("/{}", self.dir.file_name().unwrap().to_str().unwrap())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `--cgroup PATH` attaches to the processes already in a real cgroup v2
/// directory, attributes their findings to them with the cgroup in the
/// report, and with `--follow-new` traces a process that starts there
/// after the attach.
#[test]
fn cgroup_processes_are_attached_and_new_ones_followed() {
    let dir = scratch("attach_cgroup");
    let cg = TestCgroup::create("auditor-e2e");
    let mut d = fixture_daemon(&dir, "attfix-cg", "dirty").spawn().unwrap();
    cg.add(d.id());
    wait_for_file(&dir.join("ready"));
    let a = Attached::reporting(
        &dir,
        &["--cgroup", cg.dir.to_str().unwrap(), "--follow-new"],
    );
    go(&dir);
    assert!(d.wait().unwrap().success());
    // Moves itself into the cgroup, then execs: started after the attach.
    // It waits for "go" again, so it is still running when the auditor
    // reads its exec and looks it up in /proc.
    std::fs::remove_file(dir.join("go")).unwrap();
    let py = named_python(&dir, "attfix-cgnew");
    let mut late = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {} {} {} once",
            cg.dir.display(),
            py.display(),
            fixture("attach/daemon.py").display(),
            dir.display()
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    go(&dir);
    assert!(late.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = a.stop();
    assert_eq!(code, 1, "{err:?}");
    let r = report_in(&dir);
    let b = on_path(&r, &dir.join("b.dat"));
    assert_eq!(b.len(), 1, "{r:#}");
    assert_eq!(b[0]["process"]["pid"], d.id());
    let l = on_path(&r, &dir.join(format!("life-{}.dat", late.id())));
    assert_eq!(l.len(), 1, "the process started later is traced: {r:#}");
    assert_eq!(l[0]["process"]["pid"], late.id());
    let procs = r["processes"].as_array().unwrap();
    let first = procs.iter().find(|p| p["pid"] == d.id()).expect("listed");
    assert_eq!(first["how"], "attached");
    assert_eq!(first["cgroup"], cg.name());
    let second = procs
        .iter()
        .find(|p| p["pid"] == late.id())
        .expect("listed");
    assert_eq!(second["how"], "followed at exec");
    assert_eq!(second["cgroup"], cg.name());
}
