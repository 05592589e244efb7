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
