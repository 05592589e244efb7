//! `auditor crashtest` cuts the power for real (XFS/ext4 shutdown without a
//! log flush on a loop-mounted image) and checks which findings lose data:
//! careless programs lose what their findings say, careful twins lose
//! nothing, every requested crash point is visited, and nothing is left
//! mounted or attached, whatever way the run ends.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use auditor_e2e::*;
use serde_json::Value;

/// `auditor crashtest --format json [extra] -- python3 -B fixture`: exit
/// code and the parsed report.
fn crashtest(name: &str, extra: &[&str]) -> (i32, Value) {
    let dir = scratch(&format!("crashtest-{name}"));
    let cmd = py(&format!("crash/{name}.py"));
    let run = json_report(&dir, "crashtest", extra, &argv(&cmd), &[]);
    assert_eq!(
        run.code,
        expected_code(&run.report, run.code),
        "auditor error {}: {}",
        run.code,
        run.stderr
    );
    assert_nothing_left();
    (run.code, run.report)
}

/// What crashtest must exit with: the command's failure, else 0 or 1.
fn expected_code(doc: &Value, got: i32) -> i32 {
    match doc["exit_status"]["code"].as_i64() {
        Some(c) if c != 0 => c as i32,
        _ if got == 0 || got == 1 => got,
        _ => -1,
    }
}

/// No scratch mount and no loop device of ours survives a run.
fn assert_nothing_left() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains("auditor-crashtest"),
        "scratch filesystem left mounted:\n{mounts}"
    );
    let loops = loop_devices();
    assert!(
        !loops.contains("auditor-crashtest"),
        "loop device left attached:\n{loops}"
    );
    let leftovers = crashtest_scratch_dirs();
    assert!(leftovers.is_empty(), "scratch files left: {leftovers:?}");
}

fn crashes(doc: &Value) -> &Vec<Value> {
    doc["crashes"].as_array().unwrap()
}

/// Files of all crashes that lost data, with their crash.
fn losses(doc: &Value) -> Vec<(&Value, &Value)> {
    crashes(doc)
        .iter()
        .flat_map(|c| c["files"].as_array().unwrap().iter().map(move |f| (c, f)))
        .filter(|(_, f)| f["outcome"] != "intact")
        .collect()
}

fn finding_by_id(doc: &Value, id: &Value) -> Value {
    all_findings(doc)
        .into_iter()
        .find(|f| &f["id"] == id)
        .unwrap_or_else(|| panic!("no finding with id {id}"))
        .clone()
}

/// A careless fixture loses `file` at a crash of kind `point` and that loss
/// confirms its `rule` finding.
fn assert_confirmed(doc: &Value, file: &str, point: &str, rule: &str) {
    let lost: Vec<_> = losses(doc)
        .into_iter()
        .filter(|(c, f)| c["call_class"] == point && f["path"].as_str().unwrap().ends_with(file))
        .collect();
    assert!(
        !lost.is_empty(),
        "{file} lost nothing at {point}: {:#}",
        doc["crashes"]
    );
    for (_, f) in &lost {
        assert_ne!(f["after"], f["believed"]);
        let link = &f["link"];
        assert_eq!(link["kind"], "confirmed", "{f:#}");
        let linked: Vec<Value> = link["finding_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| finding_by_id(doc, id))
            .collect();
        let finding = linked
            .iter()
            .find(|f| f["rule"] == rule)
            .unwrap_or_else(|| panic!("loss not linked to {rule}: {link:#}"));
        assert_eq!(finding["confirmed"], true);
        assert!(finding["path"].as_str().unwrap().ends_with(file));
        assert_eq!(finding_by_id(doc, &link["finding_id"])["confirmed"], true);
    }
    assert_eq!(doc["crashtest"]["unpredicted_losses"], 0, "{doc:#}");
}

#[test]
fn rename_without_fsync_loses_the_target_after_the_rename() {
    let (code, doc) = crashtest("rename_without_fsync", &["--at", "renames"]);
    assert_eq!(code, 1);
    assert_eq!(doc["mode"], "crashtest");
    assert_eq!(doc["crashtest"]["fs"], "xfs");
    assert_eq!(crashes(&doc).len(), 1);
    let w = &crashes(&doc)[0]["where"];
    assert!(w["call"].as_str().unwrap().starts_with("rename("), "{w}");
    assert!(w["path"].as_str().unwrap().ends_with("/state"), "{w}");
    assert_confirmed(&doc, "/state", "rename", "rename-without-fsync");
}

#[test]
fn rename_without_fsync_loses_the_target_at_exit() {
    let (code, doc) = crashtest("rename_without_fsync", &["--at", "exit"]);
    assert_eq!(code, 1);
    assert_confirmed(&doc, "/state", "exit", "rename-without-fsync");
}

#[test]
fn rename_without_fsync_loses_on_ext4_too() {
    let (_, doc) = crashtest("rename_without_fsync", &["--fs", "ext4", "--at", "renames"]);
    assert_eq!(doc["crashtest"]["fs"], "ext4");
    assert_confirmed(&doc, "/state", "rename", "rename-without-fsync");
}

#[test]
fn truncate_in_place_loses_the_new_content_at_exit() {
    let (code, doc) = crashtest("truncate_in_place", &["--at", "exit"]);
    assert_eq!(code, 1);
    assert_confirmed(&doc, "/config", "exit", "truncate-in-place");
}

#[test]
fn unsynced_at_exit_loses_the_journal() {
    let (code, doc) = crashtest("unsynced_at_exit", &[]);
    assert_eq!(code, 1);
    assert_eq!(doc["crashtest"]["at"], "exit");
    assert_confirmed(&doc, "/journal", "exit", "unsynced-at-exit");
}

#[test]
fn careful_twins_lose_nothing_at_any_crash_point() {
    for name in [
        "rename_without_fsync_ok",
        "truncate_in_place_ok",
        "unsynced_at_exit_ok",
    ] {
        let mut visited = 0;
        for at in ["exit", "renames", "fsyncs"] {
            let (code, doc) = crashtest(name, &["--at", at]);
            assert_eq!(code, 0, "{name} --at {at}: {doc:#}");
            assert!(all_findings(&doc).is_empty(), "{name}: {doc:#}");
            let planned = match at {
                "exit" => 1,
                "renames" => doc["crashtest"]["points_available"]["renames"]
                    .as_u64()
                    .unwrap(),
                _ => doc["crashtest"]["points_available"]["fsyncs"]
                    .as_u64()
                    .unwrap(),
            };
            visited += planned;
            assert_eq!(crashes(&doc).len() as u64, planned, "{name} --at {at}");
            assert!(crashes(&doc).iter().all(|c| c["reached"] == true));
            assert_eq!(doc["crashtest"]["losses"], 0, "{name} --at {at}: {doc:#}");
            // A crash between a rename and the directory fsync that follows
            // can lose the new name: the program had not claimed it durable
            // yet, and the analysis at that point said so.
            for (_, f) in losses(&doc) {
                assert_eq!(f["link"]["kind"], "in_flight", "{name} --at {at}: {f:#}");
            }
        }
        assert!(visited >= 3, "{name}: only {visited} crash points");
    }
}

#[test]
fn every_rename_is_a_crash_point() {
    let (_, doc) = crashtest("many_renames", &["--at", "renames"]);
    let cs = crashes(&doc);
    assert_eq!(doc["crashtest"]["points_available"]["renames"], 9);
    assert_eq!(cs.len(), 9);
    let order = ["a", "b", "c"];
    for (i, c) in cs.iter().enumerate() {
        assert_eq!(c["reached"], true);
        assert_eq!(c["ordinal"], i as u64 + 1);
        let w = &c["where"];
        let want = format!("/{}", order[i % 3]);
        assert!(
            w["path"].as_str().unwrap().ends_with(&want),
            "crash {} froze at {w}, want a rename to {want}",
            i + 1
        );
        // Frozen right after that rename: later files do not exist yet.
        let files: Vec<&str> = c["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().rsplit('/').next().unwrap())
            .collect();
        let expect: Vec<&str> = order[..(i + 1).min(3)].to_vec();
        assert_eq!(files, expect, "crash {}", i + 1);
    }
    assert_confirmed(&doc, "/a", "rename", "rename-without-fsync");
    // Each loss confirms the findings about its own file, never another's.
    let mut confirmed_paths = std::collections::BTreeSet::new();
    for (c, f) in losses(&doc) {
        for id in f["link"]["finding_ids"].as_array().unwrap() {
            let found = finding_by_id(&doc, id);
            assert_eq!(
                found["path"], f["path"],
                "crash {}: the loss of {} confirms a finding about another file: {found:#}",
                c["index"], f["path"]
            );
            confirmed_paths.insert(found["path"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(confirmed_paths.len(), 3, "a, b and c: {confirmed_paths:?}");
}

/// What a crash test tells while it works: which point it is at, and the
/// two ways of asking for nothing (a command that writes only outside the
/// scratch filesystem; `--at fsyncs` for a command that never fsyncs).
#[test]
fn progress_and_warnings_go_to_stderr() {
    let dir = scratch("crashtest-progress");
    let out_file = dir.join("report.json");
    let run = |at: &str, cmd: &[&str]| {
        let mut args = vec!["crashtest", "--format", "json", "--output"];
        args.push(out_file.to_str().unwrap());
        args.extend(["--at", at, "--"]);
        args.extend_from_slice(cmd);
        let out = auditor(&dir, &args);
        assert_nothing_left();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cmd = py("crash/many_renames.py");
    let stderr = run("renames", &argv(&cmd));
    for i in 1..=9 {
        assert!(
            stderr.contains(&format!("crash point {i}/9: after rename #{i}")),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("warning"), "{stderr}");

    let outside = dir.join("outside.txt");
    let script = format!("echo data > {}", outside.display());
    let stderr = run("fsyncs", &["/bin/sh", "-c", &script]);
    assert!(
        stderr.contains("left no file on the scratch filesystem")
            && stderr.contains(outside.to_str().unwrap()),
        "{stderr}"
    );
    assert!(
        stderr.contains("--at fsyncs: the command made no successful fsync"),
        "{stderr}"
    );
}

#[test]
fn random_points_are_seeded() {
    let dir = scratch("crashtest-random");
    let cmd = py("crash/many_renames.py");
    let mut args = vec![
        "crashtest",
        "--format",
        "json",
        "--at",
        "3",
        "--seed",
        "11",
        "--",
    ];
    args.extend(argv(&cmd));
    let a = auditor(&dir, &args);
    let b = auditor(&dir, &args);
    let doc_a: Value = serde_json::from_slice(&a.stdout).unwrap();
    let doc_b: Value = serde_json::from_slice(&b.stdout).unwrap();
    assert!(String::from_utf8_lossy(&a.stderr).contains("--seed 11"));
    assert_eq!(doc_a["crashtest"]["seed"], 11);
    let points =
        |d: &Value| -> Vec<Value> { crashes(d).iter().map(|c| c["point"].clone()).collect() };
    assert_eq!(points(&doc_a).len(), 3);
    assert_eq!(points(&doc_a), points(&doc_b));
    assert_nothing_left();
}

#[test]
fn failing_command_still_cleans_up() {
    let (code, doc) = crashtest("fails", &[]);
    assert_eq!(doc["exit_status"]["code"], 3);
    assert_eq!(code, 3, "the command's failure is passed on");
    assert_eq!(crashes(&doc).len(), 1);
}

#[test]
fn interrupted_run_cleans_up() {
    require_root();
    let dir = scratch("crashtest-interrupt");
    let child = spawn_crashtest_at_renames(&dir, "crash/slow.py", Stdio::piped());
    // Wait until the scratch filesystem is mounted and the command runs.
    let start = Instant::now();
    while !std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains("auditor-crashtest")
    {
        assert!(start.elapsed() < Duration::from_secs(20), "never mounted");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let waited = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        waited.elapsed() < Duration::from_secs(20),
        "took {:?} to stop",
        waited.elapsed()
    );
    assert_eq!(out.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    assert_nothing_left();
}
