//! Bad input gets one clear line naming the fix and exit code 2; never a
//! panic, never a partial report.

use std::process::Command;

use auditor_e2e::*;

#[test]
fn command_not_found() {
    let dir = scratch("bad_cmd");
    assert_one_line_error(
        &auditor(&dir, &["run", "--", "no-such-program-xyz"]),
        "command not found: no-such-program-xyz",
    );
    assert_one_line_error(
        &auditor(&dir, &["run", "--", "./missing.sh"]),
        "command not found: ./missing.sh",
    );
}

#[test]
fn unwritable_output() {
    let dir = scratch("bad_output");
    assert_one_line_error(
        &auditor(
            &dir,
            &["run", "--output", "/nonexistent-dir/r.json", "--", "true"],
        ),
        "cannot write --output /nonexistent-dir/r.json",
    );
}

#[test]
fn not_root() {
    require_root();
    let dir = scratch("not_root");
    // setpriv (util-linux) drops to nobody with no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(auditor_bin())
        .args(["run", "--", "true"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_one_line_error(&out, "needs root");
}

#[test]
fn unknown_rule_and_bad_glob() {
    let dir = scratch("bad_rule");
    assert_one_line_error(
        &auditor(&dir, &["run", "--rule", "no-such-rule", "--", "true"]),
        "unknown rule id",
    );
}

#[test]
fn not_a_recording() {
    let dir = scratch("bad_recording");
    std::fs::write(dir.join("junk.rec"), "hello\n").unwrap();
    assert_one_line_error(
        &auditor(&dir, &["report", "junk.rec"]),
        "not an auditor recording",
    );
    assert_one_line_error(&auditor(&dir, &["report", "missing.rec"]), "missing.rec");
}

#[test]
fn tracefs_unmounted_is_mounted_again() {
    require_root();
    let dir = scratch("tracefs");
    // Leave tracefs unmounted, as on a fresh host; the auditor mounts it.
    let _ = Command::new("umount").arg("/sys/kernel/tracing").output();
    assert!(
        !std::path::Path::new("/sys/kernel/tracing/events").exists(),
        "precondition: tracefs unmounted"
    );
    let evs = events(&dir, &["true"]);
    assert!(std::path::Path::new("/sys/kernel/tracing/events").is_dir());
    assert!(evs.iter().any(|e| e["type"] == "exec"));
}

#[test]
fn huge_numbers_are_one_line_errors_not_panics() {
    let dir = scratch("bad_numbers");
    for (args, needle) in [
        (
            &[
                "attach",
                "--pid",
                "1",
                "--duration",
                "99999999999999999999h",
            ][..],
            "too long",
        ),
        (
            &[
                "attach",
                "--pid",
                "1",
                "--duration",
                "18446744073709551615s",
            ],
            "too long",
        ),
        (
            &["attach", "--pid", "1", "--duration", "0s"],
            "longer than zero",
        ),
        (
            &[
                "attach",
                "--pid",
                "1",
                "--max-files",
                "99999999999999999999999",
            ],
            "too large",
        ),
        (
            &["run", "--ring-mb", "99999999999", "--", "true"],
            "power of two",
        ),
        (
            &["crashtest", "--size", "99999999999999999999G", "--", "true"],
            "too large",
        ),
        (
            &["crashtest", "--at", "99999999999999999999999", "--", "true"],
            "too large",
        ),
    ] {
        assert_one_line_error(&auditor(&dir, args), needle);
    }
}

#[test]
fn a_bad_choice_lists_the_choices_on_one_line() {
    let dir = scratch("bad_choice");
    assert_one_line_error(
        &auditor(&dir, &["crashtest", "--fs", "zfs", "--", "true"]),
        "[possible values: xfs, ext4]",
    );
}
