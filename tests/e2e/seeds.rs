//! The incidents in the project's seed list, each reproduced by a fixture
//! in `fixtures/seeds/` with the same pattern of calls, and the findings
//! the auditor must give for it (and none for the fixed version).

use std::path::{Path, PathBuf};

use auditor_e2e::*;
use serde_json::Value;

fn audit(name: &str, cmd: &[String]) -> (PathBuf, Run) {
    let dir = scratch(&format!("seed_{name}"));
    let run = run_report(&dir, &["--fail-on", "low"], &argv(cmd));
    assert_eq!(run.report["complete"], true, "no event may be lost");
    (dir, run)
}

fn seed(fixture: &str, args: &[&str]) -> Vec<String> {
    let mut cmd = py(&format!("seeds/{fixture}"));
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd
}

/// The word the fixture printed as `name=word` (a digest, where
/// `printed_pid` reads numbers).
fn printed<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("fixture did not print {name}=...; stdout: {stdout:?}"))
}

fn path_of(f: &Value) -> &str {
    f["path"].as_str().unwrap()
}

fn is(f: &Value, path: &Path) -> bool {
    path_of(f) == path.to_str().unwrap()
}

/// 000: buildkitd ignores SIGTERM (a handler that keeps going), is
/// SIGKILLed by a separate supervisor 2 s later with BoltDB writes unsynced.
#[test]
fn s000_buildkitd_killed_after_shutdown_timeout() {
    let (dir, run) = audit("000_bug", &seed("buildkitd_shutdown.py", &["bug", "2"]));
    let f = the_only_finding(&run.report, "killed-while-dirty");
    let daemon = printed_pid(&run.stdout, "buildkitd");
    let supervisor = printed_pid(&run.stdout, "supervisor");
    assert!(is(f, &dir.join("history.db")), "{f:#}");
    assert_eq!(f["severity"], "high");
    assert_eq!(f["process"]["pid"].as_u64(), Some(daemon));
    assert_eq!(f["process"]["comm"], "buildkitd");
    let ev = &f["evidence"];
    assert_eq!(ev["unsynced_bytes"], 8 * 4096);
    assert_eq!(ev["signal"], "SIGKILL");
    assert_eq!(ev["sender"]["pid"].as_u64(), Some(supervisor));
    assert_eq!(ev["sender"]["comm"], "supervisor");
    let signals = ev["signals"].as_array().unwrap();
    assert_eq!(signals.len(), 2, "{ev:#}");
    assert_eq!(signals[0]["signal"], "SIGTERM");
    assert_eq!(signals[0]["handling"], "caught by a handler");
    assert_eq!(signals[0]["sender_pid"].as_u64(), Some(supervisor));
    assert_eq!(signals[1]["signal"], "SIGKILL");
    let gap = ev["escalation_gap_ns"].as_u64().unwrap();
    assert!(
        (2_000_000_000..10_000_000_000).contains(&gap),
        "the grace period, measured: {gap} ns"
    );
    assert!(
        ev["escalation"]
            .as_str()
            .unwrap()
            .starts_with("SIGTERM (caught by a handler), then SIGKILL 2."),
        "{ev:#}"
    );
}

#[test]
fn s000_buildkitd_fixed_syncs_on_sigterm() {
    let (_, run) = audit("000_fixed", &seed("buildkitd_shutdown.py", &["fixed", "2"]));
    assert_no_finding(&run, "the fixed version must be clean");
}

/// 001: Shake's metadata log: worker threads append entries in turn under
/// a lock, and the build is killed while one of them is mid-entry.
#[test]
fn s001_shake_log_torn_by_a_kill() {
    let (dir, run) = audit("001", &seed("shake_metadata_log.py", &[]));
    assert_eq!(
        rule_ids(&run.report),
        [
            "interleaved-writers",
            "killed-mid-write",
            "killed-while-dirty"
        ]
    );
    let build = printed_pid(&run.stdout, "build");
    let writer = printed_pid(&run.stdout, "writer");
    let driver = printed_pid(&run.stdout, "driver");
    let log = dir.join(".shake.database");
    for f in all_findings(&run.report) {
        assert!(is(f, &log), "{f:#}");
        assert_eq!(f["severity"], "high", "{f:#}");
        assert_eq!(f["process"]["pid"].as_u64(), Some(build), "{f:#}");
    }
    let torn = the_finding(&run.report, "killed-mid-write");
    assert_eq!(torn["evidence"]["kind"], "in_flight");
    assert_eq!(torn["evidence"]["tid"].as_u64(), Some(writer));
    assert_eq!(torn["evidence"]["sender"]["pid"].as_u64(), Some(driver));
    assert_eq!(torn["evidence"]["written"], 4096);
    let inter = the_finding(&run.report, "interleaved-writers");
    let tids: Vec<u64> = inter["evidence"]["writers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["tid"].as_u64().unwrap())
        .collect();
    assert_eq!(tids.len(), 3, "w1, w2 and the torn w3: {tids:?}");
    assert_eq!(tids[2], writer);
    assert_eq!(inter["evidence"]["killed_writer"]["signal"], "SIGKILL");
}

/// 002: a thin qcow2 overlay archived with tar while its backing file is
/// a machine-local absolute path: the archive is durable (or not: tar and
/// qemu-img leave it and the base image unsynced) but not self-contained.
/// Restored elsewhere, the overlay reads whatever that path holds there.
fn s002(args: &[&str]) -> (PathBuf, Run) {
    let dir = scratch(&format!("seed_002{}", args.join("_")));
    let mut cmd = vec![
        "/bin/sh".to_string(),
        fixture("seeds/qcow2_archive.sh").to_str().unwrap().into(),
    ];
    cmd.extend(args.iter().map(|a| a.to_string()));
    let run = run_report(&dir, &["--fail-on", "low"], &argv(&cmd));
    assert_eq!(run.report["complete"], true, "no event may be lost");
    (dir, run)
}

#[test]
fn s002_qcow2_overlay_archived() {
    let (dir, run) = s002(&[]);
    assert_eq!(
        rule_ids(&run.report),
        [
            "archive-not-self-contained",
            "create-without-dir-fsync",
            "unsynced-at-exit",
            "unsynced-at-exit"
        ],
        "{:#}",
        run.report["findings"]
    );
    let by = |rule: &str, name: &str| -> Value {
        findings(&run.report, rule)
            .into_iter()
            .find(|f| is(f, &dir.join(name)))
            .unwrap_or_else(|| panic!("{rule} on {name}: {:#}", run.report["findings"]))
            .clone()
    };
    let portable = by("archive-not-self-contained", "overlay.qcow2");
    assert_eq!(portable["process"]["comm"], "tar");
    assert_eq!(portable["severity"], "medium");
    let ev = &portable["evidence"];
    let base = dir.join("base.raw");
    assert_eq!(ev["backing_file"], base.to_str().unwrap());
    assert_eq!(ev["backing_naming"], "absolute");
    assert_eq!(
        ev["destinations"][0]["path"],
        dir.join("overlay.tar").to_str().unwrap()
    );
    assert!(
        ev["fix"]
            .as_str()
            .unwrap()
            .contains("qemu-img rebase -b \"\"")
    );
    let tar = by("unsynced-at-exit", "overlay.tar");
    assert_eq!(tar["process"]["comm"], "tar");
    assert_eq!(
        tar["evidence"]["unsynced_bytes"].as_u64(),
        Some(std::fs::metadata(dir.join("overlay.tar")).unwrap().len()),
        "the whole archive"
    );
    let base = by("unsynced-at-exit", "base.raw");
    assert_eq!(base["process"]["comm"], "qemu-img");
    // qemu-img flushes the overlay it creates, but not its directory.
    let overlay = by("create-without-dir-fsync", "overlay.qcow2");
    assert_eq!(overlay["process"]["comm"], "qemu-img");
    assert_eq!(overlay["severity"], "low");
}

/// Flattened before tar, the overlay carries its base's data: portable.
/// (Its durability is another matter, judged by the other rules.)
#[test]
fn s002_qcow2_overlay_flattened_before_archiving() {
    let (_, run) = s002(&["fixed"]);
    assert!(
        findings(&run.report, "archive-not-self-contained").is_empty(),
        "{:#}",
        run.report["findings"]
    );
}

/// 003: docker load (2017): the layer's content unpacked by a re-exec of
/// the daemon chrooted into the layer directory; the image config saved
/// with a temp file + rename and no fsync; layer metadata written into a
/// write-set directory renamed into place, nothing fsynced.
#[test]
fn s003_docker_load() {
    let (dir, run) = audit("003_bug", &seed("docker_load_layer.py", &["bug"]));
    assert_eq!(
        rule_ids(&run.report),
        [
            "rename-without-dir-fsync",
            "rename-without-dir-fsync",
            "rename-without-fsync",
            "unsynced-at-exit",
            "unsynced-at-exit",
            "unsynced-at-exit",
            "unsynced-at-exit",
            "unsynced-at-exit"
        ],
        "{:#}",
        run.report["findings"]
    );
    let pid = printed_pid(&run.stdout, "pid");
    let image = printed(&run.stdout, "image");
    let config = dir.join("imagedb/content/sha256").join(image);
    let f = the_finding(&run.report, "rename-without-fsync");
    assert!(is(f, &config), "the final path: {f:#}");
    assert_eq!(f["process"]["pid"].as_u64(), Some(pid));
    assert_eq!(f["severity"], "high");
    assert_eq!(
        f["evidence"]["unsynced_bytes"].as_u64(),
        Some(std::fs::metadata(&config).unwrap().len())
    );
    // The layer files moved with their directory: their data is reported
    // unsynced at exit (a directory rename is not a rename of the files),
    // named where they are now, in the layer's final directory.
    let chain = printed(&run.stdout, "chain");
    let layer_dir = dir.join("layerdb/sha256").join(chain);
    let mut layer: Vec<&str> = findings(&run.report, "unsynced-at-exit")
        .iter()
        .filter(|f| f["process"]["pid"].as_u64() == Some(pid))
        .map(|f| path_of(f))
        .collect();
    layer.sort();
    let expected: Vec<PathBuf> = ["cache-id", "diff", "size"]
        .iter()
        .map(|n| layer_dir.join(n))
        .collect();
    assert_eq!(
        layer,
        expected
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect::<Vec<_>>()
    );
    assert!(expected.iter().all(|p| p.exists()), "the named files exist");
    assert_layer_content(&dir, &run);
}

/// The layer's own files, written by the chrooted re-exec, are named where
/// they are on the host, with the path the re-exec used beside it, and by
/// the binary it really ran with its argv[0].
fn assert_layer_content(dir: &Path, run: &Run) {
    let untar = printed_pid(&run.stdout, "untar");
    let diff = dir.join("overlay2").join("c".repeat(64)).join("diff");
    let mut content: Vec<(String, String)> = findings(&run.report, "unsynced-at-exit")
        .iter()
        .filter(|f| f["process"]["pid"].as_u64() == Some(untar))
        .map(|f| {
            assert_eq!(f["process"]["argv"][0], "docker-untar", "{f:#}");
            assert_eq!(f["process"]["exe"], PYTHON, "the binary it re-ran: {f:#}");
            (
                path_of(f).to_owned(),
                f["path_in_process"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    content.sort();
    let host = |p: &str| diff.join(p).to_str().unwrap().to_owned();
    assert_eq!(
        content,
        [
            (host("bin/blob"), "/bin/blob".to_owned()),
            (host("etc/motd"), "/etc/motd".to_owned())
        ]
    );
    assert!(content.iter().all(|(p, _)| Path::new(p).exists()));
}

#[test]
fn s003_docker_load_fixed() {
    let (_, run) = audit("003_fixed", &seed("docker_load_layer.py", &["fixed"]));
    assert_no_finding(&run, "the fixed version must be clean");
}

/// 003 as dockerd 20.10 does it: the metadata fsynced and renamed into
/// place, the layer's content never fsynced. The record is durable before
/// the data it describes.
#[test]
fn s003_docker_load_metadata_before_layer_data() {
    let (dir, run) = audit("003_metadata", &seed("docker_load_layer.py", &["metadata"]));
    assert_eq!(
        rule_ids(&run.report),
        ["commit-before-data", "unsynced-at-exit", "unsynced-at-exit"],
        "{:#}",
        run.report["findings"]
    );
    assert_layer_content(&dir, &run);
    let chain = printed(&run.stdout, "chain");
    let f = the_finding(&run.report, "commit-before-data");
    assert!(is(f, &dir.join("layerdb/sha256").join(chain)), "{f:#}");
    assert_eq!(f["severity"], "medium");
    assert_eq!(
        f["process"]["pid"].as_u64(),
        Some(printed_pid(&run.stdout, "pid"))
    );
    let ev = &f["evidence"];
    assert_eq!(ev["data_files"], 2);
    let diff = dir.join("overlay2").join("c".repeat(64)).join("diff");
    assert_eq!(ev["data_directory"], diff.to_str().unwrap());
    assert_eq!(
        ev["writers"][0]["pid"].as_u64(),
        Some(printed_pid(&run.stdout, "untar"))
    );
    assert_eq!(ev["writers"][0]["argv0"], "docker-untar");
}

/// 004: Harbor satellite's SaveState: temp file + rename, no fsync, on
/// every save. Each save replaces the file the one before wrote, so at the
/// end one is at risk: the last.
#[test]
fn s004_satellite_state() {
    let (dir, run) = audit("004_bug", &seed("satellite_state.py", &["bug"]));
    let pid = printed_pid(&run.stdout, "pid");
    let state = dir.join("state.json");
    let renames = findings(&run.report, "rename-without-fsync");
    assert_eq!(
        renames.len(),
        1,
        "the last save: {:#}",
        run.report["findings"]
    );
    assert_eq!(
        run.report["stats"]["moot"]["deleted"], 2,
        "the two saves it replaced"
    );
    for f in &renames {
        assert!(is(f, &state), "{f:#}");
        assert_eq!(f["process"]["pid"].as_u64(), Some(pid));
        assert_eq!(f["severity"], "high");
    }
    let last = printed_pid(&run.stdout, "last");
    assert!(
        renames
            .iter()
            .any(|f| f["evidence"]["unsynced_bytes"].as_u64() == Some(last)),
        "the last save's {last} bytes"
    );
    assert_eq!(
        rule_ids(&run.report),
        ["rename-without-dir-fsync", "rename-without-fsync"]
    );
}

#[test]
fn s004_satellite_state_fixed() {
    let (_, run) = audit("004_fixed", &seed("satellite_state.py", &["fixed"]));
    assert_no_finding(&run, "the fixed version must be clean");
}
