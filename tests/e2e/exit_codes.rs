//! The traced command's failure is never masked: `auditor run` exits with
//! the command's code when it fails (128 + the signal when it was killed),
//! findings or not; with 1 when it succeeds and a finding reaches
//! `--fail-on`, 0 when none does; with 2 when the auditor could not do its
//! job. `record` and `crashtest` pass a failure on the same way.

use auditor_e2e::*;

/// `auditor ARGS` in a fresh directory; its exit code.
fn code(name: &str, args: &[&str]) -> i32 {
    let dir = scratch(&format!("exit_{name}"));
    let out = auditor(&dir, args);
    out.status.code().expect("auditor killed by a signal")
}

const SH: &str = "/bin/sh";

/// `auditor run [extra] -- sh -c` a command that leaves a new file with
/// unsynced data (a medium finding) and exits with `status`, in a fresh
/// directory; the exit code.
fn careless(name: &str, extra: &[&str], status: i32) -> Option<i32> {
    let dir = scratch(&format!("exit_{name}"));
    let script = format!("echo data > out.txt; exit {status}");
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.extend(["--", SH, "-c", &script]);
    auditor(&dir, &args).status.code()
}

#[test]
fn a_command_that_succeeds_with_nothing_found_is_0() {
    assert_eq!(code("true", &["run", "--", "/bin/true"]), 0);
}

#[test]
fn a_failing_command_passes_its_code_on() {
    assert_eq!(code("false", &["run", "--", "/bin/false"]), 1);
    assert_eq!(code("exit3", &["run", "--", SH, "-c", "exit 3"]), 3);
}

#[test]
fn a_killed_command_is_128_plus_the_signal() {
    assert_eq!(code("kill9", &["run", "--", SH, "-c", "kill -9 $$"]), 137);
    assert_eq!(code("kill15", &["run", "--", SH, "-c", "kill -15 $$"]), 143);
}

#[test]
fn findings_give_1_only_when_the_command_succeeded() {
    assert_eq!(careless("findings_ok", &[], 0), Some(1), "a medium finding");
    assert_eq!(
        careless("findings_failed", &[], 4),
        Some(4),
        "the command's failure first"
    );
    assert_eq!(
        careless("findings_below", &["--fail-on", "high"], 0),
        Some(0),
        "below --fail-on"
    );
}

#[test]
fn the_event_stream_and_a_recording_pass_the_failure_on_too() {
    assert_eq!(
        code("events", &["run", "--events", "--", SH, "-c", "exit 5"]),
        5
    );
    assert_eq!(
        code(
            "record",
            &["record", "--output", "r.rec", "--", SH, "-c", "exit 6"]
        ),
        6
    );
}

#[test]
fn the_auditors_own_failure_is_2() {
    assert_eq!(code("notfound", &["run", "--", "/no/such/command"]), 2);
    assert_eq!(
        code("badrule", &["run", "--rule", "nope", "--", "/bin/true"]),
        2
    );
}

/// The first SIGINT lets the command end its own way; a second one reports
/// at once what was seen, exits 130, and leaves the command running (it had
/// the terminal's SIGINT too; what it does with it is its business).
#[test]
fn a_second_interrupt_reports_what_was_seen_and_exits_130() {
    use std::{
        process::{Command, Stdio},
        time::{Duration, Instant},
    };
    require_root();
    let dir = scratch("exit_second_interrupt");
    let pid_file = dir.join("sh.pid");
    let script = format!(
        "trap '' INT; echo data > out.txt; echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 30",
        p = pid_file.display()
    );
    // Files, not pipes: the command left running holds them open.
    let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(auditor_bin())
        .current_dir(&dir)
        .args(["run", "--format", "json", "--", SH, "-c", &script])
        .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the capture see the mv before interrupting.
    std::thread::sleep(Duration::from_millis(300));
    let sh: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let asked = Instant::now();
    for _ in 0..2 {
        // SAFETY: kill with the pid of the auditor we started.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = child.wait().unwrap();
    let took = asked.elapsed();
    let stderr = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(took < Duration::from_secs(10), "reported at once: {took:?}");
    assert!(stderr.contains("interrupted again"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stdout).unwrap()).expect("a JSON report");
    let out_txt = dir.join("out.txt");
    assert!(
        all_findings(&report)
            .iter()
            .any(|f| f["path"] == out_txt.to_str().unwrap()),
        "what was seen is reported: {report:#}"
    );
    assert!(report["exit_status"].is_null(), "the command had not ended");
    assert!(
        std::path::Path::new(&format!("/proc/{sh}")).exists(),
        "the command is left running"
    );
    // SAFETY: the command we started (the shell became its sleep).
    unsafe { libc::kill(sh, libc::SIGKILL) };
}
