//! Every mode runs the same pipeline, so one workload gives the same
//! numbers whichever way it is watched: `run`, `run --tui` (in a real
//! terminal), `record` then `report`, and `attach`. The workload is a
//! static C program that waits on fd 3 before it does anything traced, so
//! an attach at the gate misses nothing but the exec that came before it.

use std::{
    io::Write,
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use auditor_e2e::{tmux::*, *};
use serde_json::Value;

/// The workload, built static in `dir`.
fn build_workload(dir: &Path) -> PathBuf {
    let bin = dir.join("gated_workload");
    succeed(
        Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&bin)
            .arg(fixture("pipeline/gated_workload.c")),
    );
    bin
}

/// A fresh directory for one mode, with the gate (a FIFO) in it.
fn workdir(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let fifo = dir.join("gate");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    (dir, fifo)
}

/// Opens the gate (blocks until the workload's side is open) and lets the
/// workload go.
fn release(fifo: &Path) {
    let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
    w.write_all(b"g").unwrap();
}

/// `sh -c 'exec ARGS 3<>gate'` in `dir`: the workload's fd 3 is the gate (opened
/// read-write, so opening it blocks nobody).
fn with_gate(dir: &Path, args: &str) -> Command {
    let mut c = Command::new("sh");
    c.current_dir(dir)
        .args(["-c", &format!("exec {args} 3<>gate")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("report written")).expect("report is JSON")
}

/// The numbers that must agree, and the findings by rule. Stack copies are
/// left out of the events: how many a loop sends depends on how soon the
/// signature of its first one is back in the kernel, which is timing, not
/// the mode.
fn numbers(report: &Value) -> (u64, u64, Vec<String>) {
    let stats = &report["stats"];
    (
        stats["events_captured"].as_u64().unwrap() - stats["stacks"].as_u64().unwrap(),
        stats["dropped"].as_u64().unwrap(),
        rule_ids(report),
    )
}

/// `auditor ARGS -- bin` behind the gate in a fresh directory for one
/// mode, the gate released at once: the directory, and how the auditor
/// ended.
fn gated_auditor(name: &str, args: &str, bin: &Path) -> (PathBuf, Output) {
    let (dir, fifo) = workdir(name);
    let cmd = format!("{} {args} -- {}", auditor_bin().display(), bin.display());
    let child = with_gate(&dir, &cmd).spawn().unwrap();
    release(&fifo);
    (dir, child.wait_with_output().unwrap())
}

fn run_mode(bin: &Path) -> Value {
    let (dir, out) = gated_auditor(
        "pipeline_run",
        "run --format json --output report.json",
        bin,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the workload has a high finding: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_json(&dir.join("report.json"))
}

fn record_mode(bin: &Path) -> Value {
    let (dir, out) = gated_auditor("pipeline_record", "record --output run.rec", bin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = auditor(
        &dir,
        &[
            "report",
            "--format",
            "json",
            "--output",
            "report.json",
            "run.rec",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    read_json(&dir.join("report.json"))
}

fn tui_mode(bin: &Path) -> Value {
    require_root();
    let (dir, fifo) = workdir("pipeline_tui");
    let cmd = format!(
        "{} run --tui --output report.json -- {} 3<>gate; echo $? > exit.code; sleep 60",
        auditor_bin().display(),
        bin.display()
    );
    let tmux = Tmux::start(&dir, &cmd);
    tmux.wait_for("the live view", |s| s.contains("Findings"));
    release(&fifo);
    tmux.wait_for("the command's end", |s| {
        s.contains("command exited with code 0")
    });
    tmux.keys(&["q"]);
    assert_eq!(exit_code(&dir), 1);
    read_json(&dir.join("report.json"))
}

fn attach_mode(bin: &Path) -> Value {
    require_root();
    let (dir, fifo) = workdir("pipeline_attach");
    let mut workload = with_gate(&dir, &bin.display().to_string()).spawn().unwrap();
    let pid = workload.id();
    // Wait until the shell has become the workload, blocked at the gate.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .as_deref()
        != Some(bin)
    {
        assert!(Instant::now() < deadline, "the workload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut attach = Command::new(auditor_bin())
        .current_dir(&dir)
        .args(["attach", "--pid", &pid.to_string()])
        .args(["--format", "json", "--output", "report.json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The auditor says so once the workload is traced.
    let mut stderr = attach.stderr.take().unwrap();
    let mut said = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&said).contains("attached to 1 process") {
        let n = std::io::Read::read(&mut stderr, &mut buf).unwrap();
        assert!(
            n > 0,
            "attach ended early: {}",
            String::from_utf8_lossy(&said)
        );
        said.extend_from_slice(&buf[..n]);
    }
    release(&fifo);
    assert!(workload.wait().unwrap().success());
    // With the only watched process gone, the attach ends by itself.
    let status = attach.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    read_json(&dir.join("report.json"))
}

#[test]
fn one_workload_gives_the_same_numbers_in_every_mode() {
    let build = scratch("pipeline_build");
    let bin = build_workload(&build);
    let run = numbers(&run_mode(&bin));
    let (events, dropped, ref rules) = run;
    assert_eq!(dropped, 0);
    assert!(
        rules.iter().any(|r| r == "rename-without-fsync"),
        "the unsynced renames are found: {rules:?}"
    );
    assert_eq!(numbers(&record_mode(&bin)), run, "record + report");
    assert_eq!(numbers(&tui_mode(&bin)), run, "run --tui");
    // The attach comes after the exec: one record fewer, nothing else.
    assert_eq!(
        numbers(&attach_mode(&bin)),
        (events - 1, dropped, rules.clone()),
        "attach"
    );
}
