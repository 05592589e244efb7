//! `run --tui` and `attach --tui` in a real terminal (tmux): the finding
//! appears on screen while the command still runs, the command's own output
//! stays off the UI, and quitting leaves the normal report and exit code.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use auditor_e2e::{tmux::*, *};
use serde_json::Value;

/// Starts `auditor run --tui` on the careless saver in tmux; the shell
/// records the exit code in `exit.code` once the auditor is gone, then
/// keeps the pane open so the restored screen can be read.
fn start(dir: &Path) -> (Tmux, PathBuf) {
    require_root();
    let report = dir.join("report.json");
    let cmd = format!(
        "{} run --tui --output {} -- {} -B {} {}; echo $? > {}; sleep 60",
        auditor_bin().display(),
        report.display(),
        PYTHON,
        fixture("tui/careless_save.py").display(),
        dir.display(),
        dir.join("exit.code").display(),
    );
    let tmux = Tmux::start(dir, &cmd);
    tmux.wait_for("the finding on screen", |s| {
        s.contains("rename-without-fsync") && s.contains(&format!("{}/state.json", dir.display()))
    });
    (tmux, report)
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("report written on quit");
    serde_json::from_str(&text).expect("the report is valid JSON")
}

#[test]
fn finding_on_screen_detail_then_quit_writes_the_report() {
    let dir = scratch("tui_quit_after_exit");
    let (tmux, report) = start(&dir);
    let screen = tmux.screen();
    assert!(
        !screen.contains("NOISE"),
        "the command's output must not scribble over the UI:\n{screen}"
    );
    let log = dir.join("report.cmd.log");
    assert!(
        screen.contains(&format!("command output: {}", log.display())),
        "the footer says where the command's output went:\n{screen}"
    );

    // Filter to the finding, open its detail: evidence and timeline.
    tmux.text("/rename-without-fsync");
    tmux.keys(&["Enter", "Enter"]);
    let screen = tmux.wait_for("the detail pane", |s| {
        s.contains("Timeline") && s.contains("rename(")
    });
    assert!(screen.contains("filter:rename-without-fsync"), "{screen}");
    assert!(screen.contains("state.json.tmp"), "{screen}");

    // The command finishes; the UI stays up and says so.
    std::fs::write(dir.join("go"), b"").unwrap();
    tmux.wait_for("the command's end", |s| {
        s.contains("command exited with code 0")
    });
    tmux.keys(&["q"]);
    assert_eq!(exit_code(&dir), 1, "a high finding fails the run");

    let report = read_report(&report);
    let found = findings(&report, "rename-without-fsync");
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(
        found[0]["path"].as_str().unwrap(),
        dir.join("state.json").to_str().unwrap()
    );
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("NOISE-ON-STDOUT") && log.contains("NOISE-ON-STDERR"),
        "the command's output is kept in the log: {log:?}"
    );
}

#[test]
fn quitting_while_the_command_runs_stops_it_and_still_reports() {
    let dir = scratch("tui_quit_while_running");
    let (tmux, report) = start(&dir);
    tmux.keys(&["q"]);
    // The command was stopped by SIGTERM: its end is the exit code.
    assert_eq!(exit_code(&dir), 128 + 15);
    let report = read_report(&report);
    assert_eq!(findings(&report, "rename-without-fsync").len(), 1);
    assert!(
        !dir.join("go").exists(),
        "the command was stopped, not released"
    );
    let screen = tmux.screen();
    assert!(
        !screen.contains("Findings "),
        "the terminal is back from the alternate screen:\n{screen}"
    );
}

/// A workload that ignores SIGTERM, with a child that inherits that: `q`
/// sends SIGTERM to every traced process and SIGKILL after the 2 s grace,
/// so nothing is left running (reparented to init) and the report follows.
#[test]
fn quit_kills_a_workload_that_ignores_sigterm_after_the_grace() {
    require_root();
    let dir = scratch("tui_quit_ignores_sigterm");
    let report = dir.join("report.json");
    let pids = dir.join("pids");
    let script = format!(
        "trap '' TERM; echo $$ > {p}.tmp; sleep 300 & echo $! >> {p}.tmp; mv {p}.tmp {p}; wait",
        p = pids.display()
    );
    let cmd = format!(
        "{} run --tui --output {} -- /bin/sh -c '{}'; echo $? > {}; sleep 60",
        auditor_bin().display(),
        report.display(),
        script.replace('\'', "'\\''"),
        dir.join("exit.code").display(),
    );
    let tmux = Tmux::start(&dir, &cmd);
    wait_for_file(&pids);
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "the shell and its sleep");
    // The shell, its sleep, and the mv that ended.
    tmux.wait_for("the workload traced", |s| s.contains("Processes 3"));
    let quit = std::time::Instant::now();
    tmux.keys(&["q"]);
    assert_eq!(exit_code(&dir), 128 + 9, "the shell ended by SIGKILL");
    let took = quit.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1900),
        "SIGKILL came only after the grace: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(8),
        "quit is prompt: {took:?}"
    );
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "traced process {pid} is still running after quit"
        );
    }
    let report = read_report(&report);
    assert_eq!(report["exit_status"]["signal"], 9, "{report:#}");
}

#[test]
fn refuses_without_a_terminal() {
    let dir = scratch("tui_no_tty");
    let out = auditor(&dir, &["run", "--tui", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one clear line: {err:?}");
    assert!(err.contains("--tui needs a terminal"), "{err}");
    assert!(out.stdout.is_empty());
}

/// `attach --tui` to a running daemon: the process shows up, the rename
/// it makes after the attach is on screen, and quitting writes the report
/// and leaves the daemon running (attached processes are not ours to stop).
#[test]
fn attach_live_view_shows_a_running_daemons_finding() {
    require_root();
    let dir = scratch("tui_attach");
    let mut daemon = Command::new(PYTHON)
        .arg("-B")
        .arg(fixture("attach/daemon.py"))
        .arg(&dir)
        .arg("rename")
        .spawn()
        .unwrap();
    wait_for_file(&dir.join("ready"));
    let report = dir.join("report.json");
    let cmd = format!(
        "{} attach --pid {} --tui --output {}; echo $? > {}; sleep 60",
        auditor_bin().display(),
        daemon.id(),
        report.display(),
        dir.join("exit.code").display(),
    );
    let tmux = Tmux::start(&dir, &cmd);
    tmux.wait_for("the daemon in the process list", |s| {
        s.contains("Processes 1")
    });
    std::fs::write(dir.join("go"), b"").unwrap();
    let state = dir.join("state");
    tmux.wait_for("the finding on screen", |s| {
        s.contains("rename-without-fsync") && s.contains(state.to_str().unwrap())
    });
    tmux.keys(&["q"]);
    assert_eq!(exit_code(&dir), 1, "a high finding fails the run");
    let report = read_report(&report);
    let found = findings(&report, "rename-without-fsync");
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(found[0]["path"].as_str(), state.to_str());
    assert_eq!(
        found[0]["process"]["pid"].as_u64(),
        Some(daemon.id() as u64)
    );
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "quitting the view leaves the daemon running"
    );
    std::fs::write(dir.join("stop"), b"").unwrap();
    assert!(daemon.wait().unwrap().success());
}
