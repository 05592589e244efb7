//! Helpers for the end-to-end tests: run the real `auditor` binary (built by
//! `cargo xtask build`) on real programs and read what it printed.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use serde_json::Value;

pub mod tmux;

/// Runs `cmd` (untraced) to its end: it must succeed, or the test fails
/// with what it printed. Its output.
pub fn succeed(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The binary under test: `$AUDITOR_BIN`, else the release build.
pub fn auditor_bin() -> PathBuf {
    let p = std::env::var_os("AUDITOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/auditor"));
    assert!(
        p.exists(),
        "{} missing: run `cargo xtask build` (or `cargo xtask test`)",
        p.display()
    );
    p
}

/// These tests load probes: they need root. Failing loudly beats skipping
/// silently, which would let a broken capture pass.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "end-to-end tests load eBPF probes: run them as root"
    );
}

/// A fresh directory on a persistent filesystem (not tmpfs: files there are
/// not judged).
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/e2e")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.canonicalize().unwrap()
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Runs `auditor <args>` in `dir`.
pub fn auditor(dir: &Path, args: &[&str]) -> Output {
    auditor_with_env(dir, args, &[])
}

/// Runs `auditor <args>` in `dir` with extra environment variables.
pub fn auditor_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    auditor_command(dir, args)
        .envs(env.iter().copied())
        .output()
        .expect("running auditor")
}

/// `auditor <args>` in `dir`, for tests that spawn it and act while it runs.
pub fn auditor_command(dir: &Path, args: &[&str]) -> Command {
    require_root();
    let mut c = Command::new(auditor_bin());
    c.current_dir(dir).args(args);
    c
}

/// Runs `auditor <args>` in `dir`, which must exit 0; fails with its
/// stderr otherwise.
pub fn auditor_ok(dir: &Path, args: &[&str]) -> Output {
    let out = auditor(dir, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "auditor {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `auditor record -o run.rec -- cmd` in `dir`, which exits 0 whatever it
/// saw.
pub fn record_run(dir: &Path, cmd: &[&str]) -> Output {
    let mut args = vec!["record", "-o", "run.rec", "--"];
    args.extend_from_slice(cmd);
    auditor_ok(dir, &args)
}

/// `auditor report run.rec --format json` in `dir`: the report of what
/// [`record_run`] recorded.
pub fn replay_run(dir: &Path) -> Value {
    let out = auditor(dir, &["report", "run.rec", "--format", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Crashtest's scratch directories in /var/tmp (`auditor-crashtest-...`),
/// with their owner.
pub fn crashtest_scratch_dirs() -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/var/tmp")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("auditor-crashtest-")
        })
        .filter_map(|e| {
            let m = std::fs::symlink_metadata(e.path()).ok()?;
            Some((e.path(), m.uid()))
        })
        .collect()
}

/// `losetup -a`: the attached loop devices and their backing files.
pub fn loop_devices() -> String {
    let out = Command::new("losetup").arg("-a").output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `auditor crashtest --at renames -- python3 -B fixtures/<fixture>`
/// started in `dir`, its stdout discarded: for tests that stop it mid-run.
pub fn spawn_crashtest_at_renames(dir: &Path, fixture: &str, stderr: Stdio) -> Child {
    auditor_command(dir, &["crashtest", "--at", "renames", "--"])
        .args(py(fixture))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// `auditor run --events --format jsonl -- cmd` in `dir`, which must exit
/// 0: the parsed events and what the auditor printed.
pub fn event_stream(dir: &Path, cmd: &[&str]) -> (Vec<Value>, Output) {
    let out_file = dir.join("events.jsonl");
    let out_str = out_file.to_str().unwrap().to_owned();
    let mut args = vec![
        "run", "--events", "--format", "jsonl", "--output", &out_str, "--",
    ];
    args.extend_from_slice(cmd);
    let out = auditor_ok(dir, &args);
    let text = std::fs::read_to_string(&out_file).unwrap();
    std::fs::remove_file(&out_file).unwrap();
    (json_lines(&text), out)
}

/// Each line of `text` parsed as JSON.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// A JSON Lines report: its lines, the last one the summary, whose total
/// counts the verdicts (`finding` lines).
pub fn jsonl_report(text: &str) -> Vec<Value> {
    let lines = json_lines(text);
    let summary = lines.last().expect("a summary line");
    assert_eq!(summary["type"], "summary", "{text}");
    let verdicts = lines.iter().filter(|l| l["type"] == "finding").count();
    assert_eq!(
        summary["counts"]["total"].as_u64(),
        Some(verdicts as u64),
        "{text}"
    );
    lines
}

/// `auditor run --events --format jsonl -- cmd` in `dir`; the parsed events.
pub fn events(dir: &Path, cmd: &[&str]) -> Vec<Value> {
    event_stream(dir, cmd).0
}

/// `auditor run --format json --output report.json [extra] -- cmd`: exit
/// code and the parsed report.
pub fn report(dir: &Path, extra: &[&str], cmd: &[&str]) -> (i32, Value) {
    let run = run_report(dir, extra, cmd);
    (run.code, run.report)
}

/// `auditor run`'s exit code is the command's failure when it failed
/// (128 + the signal when killed), else 0 or 1 (findings): never an error.
pub fn assert_run_code(code: i32, report: &Value, stderr: &str) {
    let status = &report["exit_status"];
    let failed = match (status["code"].as_i64(), status["signal"].as_i64()) {
        (Some(c), _) if c != 0 => Some(c as i32),
        (_, Some(s)) => Some(128 + s as i32),
        _ => None,
    };
    match failed {
        Some(want) => assert_eq!(code, want, "the command's failure is passed on: {stderr}"),
        None => assert!(code == 0 || code == 1, "auditor error {code}: {stderr}"),
    }
}

/// Events of one type.
pub fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// (dev, ino) as `stat` sees the file.
pub fn identity(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.dev(), m.ino())
}

/// (dev, ino) of an event's `file`.
pub fn event_identity(ev: &Value) -> (u64, u64) {
    let id = &ev["file"]["id"];
    (id["dev"].as_u64().unwrap(), id["ino"].as_u64().unwrap())
}

/// Findings of a report for one rule.
pub fn findings<'a>(report: &'a Value, rule: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == rule)
        .collect()
}

/// Findings at or above `low` — every one of them, for correct twins.
pub fn all_findings(report: &Value) -> Vec<&Value> {
    report["findings"].as_array().unwrap().iter().collect()
}

/// Debian's interpreter, run without writing bytecode caches so fixtures
/// do only what their source says.
pub const PYTHON: &str = "/usr/bin/python3";

/// `[PYTHON, -B, fixture]` as owned strings.
pub fn py(name: &str) -> Vec<String> {
    vec![
        PYTHON.into(),
        "-B".into(),
        fixture(name).to_str().unwrap().into(),
    ]
}

/// Borrowed view of an owned argv.
pub fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What one `auditor run --format json` printed and decided.
pub struct Run {
    pub code: i32,
    pub report: Value,
    /// The traced program's stdout (it inherits the auditor's): fixtures
    /// print the pids the findings must name.
    pub stdout: String,
    pub stderr: String,
}

/// `auditor run --format json --output report.json [extra] -- cmd` in
/// `dir`, keeping the traced program's output.
pub fn run_report(dir: &Path, extra: &[&str], cmd: &[&str]) -> Run {
    run_report_with_env(dir, extra, cmd, &[])
}

/// [`run_report`] with extra environment variables for the auditor.
pub fn run_report_with_env(dir: &Path, extra: &[&str], cmd: &[&str], env: &[(&str, &str)]) -> Run {
    let run = json_report(dir, "run", extra, cmd, env);
    assert_run_code(run.code, &run.report, &run.stderr);
    run
}

/// `auditor <subcommand> --format json --output report.json [extra] --
/// cmd` in `dir` with extra environment variables, whatever its exit code
/// (the caller judges it).
pub fn json_report(
    dir: &Path,
    subcommand: &str,
    extra: &[&str],
    cmd: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let out_file = dir.join("auditor-report.json");
    let out_str = out_file.to_str().unwrap().to_owned();
    let mut args = vec![subcommand, "--format", "json", "--output", &out_str];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(cmd);
    let out = auditor_with_env(dir, &args, env);
    let code = out.status.code().expect("auditor killed by a signal");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(
        &std::fs::read(&out_file)
            .unwrap_or_else(|e| panic!("no report ({e}), auditor exit {code}: {stderr}")),
    )
    .expect("report is JSON");
    std::fs::remove_file(&out_file).unwrap();
    Run {
        code,
        report,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    }
}

/// `name=pid` pairs a fixture printed. Lines from forked processes may
/// run together, so this scans for `letters=digits` anywhere.
pub fn printed_pids(stdout: &str) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let b = stdout.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            let mut s = i;
            while s > 0 && b[s - 1].is_ascii_alphabetic() {
                s -= 1;
            }
            let mut e = i + 1;
            while e < b.len() && b[e].is_ascii_digit() {
                e += 1;
            }
            if s < i && e > i + 1 {
                out.insert(stdout[s..i].to_owned(), stdout[i + 1..e].parse().unwrap());
            }
        }
        i += 1;
    }
    out
}

/// The pid a fixture printed as `name=pid`.
pub fn printed_pid(stdout: &str, name: &str) -> u64 {
    *printed_pids(stdout)
        .get(name)
        .unwrap_or_else(|| panic!("fixture did not print {name}=PID; stdout: {stdout:?}"))
}

/// The rule ids of a report's findings, sorted (duplicates kept), so a
/// test can demand exactly the expected verdicts and nothing else.
pub fn rule_ids(report: &Value) -> Vec<String> {
    let mut ids: Vec<String> = all_findings(report)
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The one finding of `rule`; fails with the whole report otherwise.
pub fn the_finding<'a>(report: &'a Value, rule: &str) -> &'a Value {
    let found = findings(report, rule);
    assert_eq!(
        found.len(),
        1,
        "want exactly one {rule} finding in {}",
        serde_json::to_string_pretty(report).unwrap()
    );
    found[0]
}

/// The report's only finding, which must be of `rule`.
pub fn the_only_finding<'a>(report: &'a Value, rule: &str) -> &'a Value {
    assert_eq!(rule_ids(report), [rule], "want only a {rule} finding");
    the_finding(report, rule)
}

/// Nothing found, so exit 0 (under `--fail-on low`, a full pass); `why`
/// says what a clean run means for this program.
pub fn assert_no_finding(run: &Run, why: &str) {
    assert!(
        all_findings(&run.report).is_empty(),
        "{why}: {}",
        serde_json::to_string_pretty(&run.report["findings"]).unwrap()
    );
    assert_eq!(run.code, 0, "no finding, exit 0");
}

/// The finding names this file, this severity and this process,
/// conclusively, and the inode `stat` sees at `path`.
pub fn assert_names(f: &Value, path: &Path, severity: &str, pid: u64) {
    assert_eq!(f["path"].as_str(), Some(path.to_str().unwrap()), "{f:#}");
    assert_eq!(f["severity"], severity, "{f:#}");
    assert_eq!(f["process"]["pid"].as_u64(), Some(pid), "{f:#}");
    assert_eq!(f["inconclusive"], false, "{f:#}");
    let (dev, ino) = identity(path);
    assert_eq!(
        (f["inode"]["dev"].as_u64(), f["inode"]["ino"].as_u64()),
        (Some(dev), Some(ino)),
        "the inode is the file's, as stat sees it"
    );
}

/// What a finding's evidence says is unsynced: `bytes` in `ranges`, left
/// by `writes` write calls.
pub fn assert_unsynced(ev: &Value, bytes: u64, writes: u64, ranges: Value, why: &str) {
    assert_eq!(
        (ev["unsynced_bytes"].as_u64(), ev["writes"].as_u64()),
        (Some(bytes), Some(writes)),
        "{why}: {ev:#}"
    );
    assert_eq!(ev["unsynced_ranges"], ranges, "{why}: {ev:#}");
}

/// Bad input: exit code 2 and exactly one line, prefixed with our name,
/// that mentions `needle`; never a panic.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code 2 for: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line: {err}");
    assert!(
        lines[0].starts_with("auditor: "),
        "prefixed with our name: {err}"
    );
    assert!(lines[0].contains(needle), "mentions {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
