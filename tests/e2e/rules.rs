//! Every rule on a real program: each fixture in `fixtures/rules/` runs in
//! a `bug` mode, which must be flagged by exactly the expected rules with
//! the right severity, path, pid and evidence, and an `ok` mode (its
//! correct twin), which must produce no finding at all, even at `low`.

use std::path::{Path, PathBuf};
use std::process::Command;

use auditor_e2e::*;
use serde_json::Value;

/// Runs `fixtures/rules/<fixture>.py <mode> [args]` under the auditor in a
/// fresh scratch directory prepared by `prepare`. `--fail-on low` makes
/// the exit code 1 for any finding, so the twins prove a full pass.
fn audit(fixture: &str, mode: &str, args: &[&str], prepare: impl FnOnce(&Path)) -> (PathBuf, Run) {
    let dir = scratch(&format!("rules_{fixture}_{mode}"));
    prepare(&dir);
    let mut cmd = py(&format!("rules/{fixture}.py"));
    cmd.push(mode.into());
    cmd.extend(args.iter().map(|a| a.to_string()));
    let run = run_report(&dir, &["--fail-on", "low"], &argv(&cmd));
    assert_eq!(
        run.report["complete"], true,
        "events were dropped; verdicts would be inconclusive"
    );
    (dir, run)
}

/// The `bug` mode, flagged by exactly `rules` (in `rule_ids` order).
fn bug(fixture: &str, prepare: impl FnOnce(&Path), rules: &[&str]) -> (PathBuf, Run) {
    let (dir, run) = audit(fixture, "bug", &[], prepare);
    assert_eq!(rule_ids(&run.report), rules, "{:#}", run.report["findings"]);
    assert_eq!(run.code, 1, "findings make the exit code 1");
    (dir, run)
}

/// What the `bug` mode of a fixture was flagged for.
struct Flagged {
    dir: PathBuf,
    run: Run,
    /// The process the finding names.
    pid: u64,
    finding: Value,
}

/// The `bug` mode's only finding, of `rule`: it names `file` in the
/// scratch directory, `severity` and the process the fixture printed as
/// `by`.
fn flagged(
    fixture: &str,
    prepare: impl FnOnce(&Path),
    rule: &str,
    (file, severity, by): (&str, &str, &str),
) -> Flagged {
    let (dir, run) = bug(fixture, prepare, &[rule]);
    let pid = printed_pid(&run.stdout, by);
    let finding = the_finding(&run.report, rule).clone();
    assert_names(&finding, &dir.join(file), severity, pid);
    Flagged {
        dir,
        run,
        pid,
        finding,
    }
}

fn ok(fixture: &str, prepare: impl FnOnce(&Path)) {
    let (_, run) = audit(fixture, "ok", &[], prepare);
    assert_no_finding(&run, "the correct twin must be clean");
    assert_eq!(run.report["exit_status"]["code"], 0, "{}", run.stderr);
}

fn nothing(_: &Path) {}

fn existing_journal(dir: &Path) {
    std::fs::write(dir.join("journal"), "journal v1\n").unwrap();
}

fn existing_settings(dir: &Path) {
    std::fs::write(dir.join("settings.ini"), "k=1\n".repeat(150)).unwrap();
}

#[test]
fn rename_without_fsync() {
    let Flagged {
        dir, pid, finding, ..
    } = flagged(
        "rename_without_fsync",
        nothing,
        "rename-without-fsync",
        ("state.json", "high", "pid"),
    );
    let ev = &finding["evidence"];
    assert_eq!(ev["unsynced_bytes"], 1800);
    assert_eq!(ev["unsynced_ranges"], serde_json::json!([[0, 1800]]));
    assert_eq!(ev["source"].as_str(), dir.join("state.json.tmp").to_str());
    assert_eq!(ev["operation"], "rename");
    assert_eq!(ev["writer_pids"], serde_json::json!([pid]));
    assert_eq!(ev["fs"], "ext4");
    assert!(ev["last_successful_fsync"].is_null());
}

#[test]
fn rename_without_fsync_twin() {
    ok("rename_without_fsync", nothing);
}

#[test]
fn rename_without_dir_fsync() {
    let Flagged { dir, finding, .. } = flagged(
        "rename_without_dir_fsync",
        nothing,
        "rename-without-dir-fsync",
        ("config", "medium", "pid"),
    );
    let ev = &finding["evidence"];
    assert_eq!(ev["directory"].as_str(), dir.to_str());
    assert_eq!(ev["source"].as_str(), dir.join("config.tmp").to_str());
    assert_eq!(ev["data_synced"], true);
}

#[test]
fn rename_without_dir_fsync_twin() {
    ok("rename_without_dir_fsync", nothing);
}

#[test]
fn create_without_dir_fsync() {
    let Flagged { dir, finding, .. } = flagged(
        "create_without_dir_fsync",
        nothing,
        "create-without-dir-fsync",
        ("segment-0001", "low", "pid"),
    );
    assert_eq!(finding["evidence"]["operation"], "create");
    assert_eq!(finding["evidence"]["directory"].as_str(), dir.to_str());
    // Low is below the default --fail-on medium.
    let mut cmd = py("rules/create_without_dir_fsync.py");
    cmd.push("bug".into());
    let again = scratch("rules_create_default_fail_on");
    let (code, _) = report(&again, &[], &argv(&cmd));
    assert_eq!(code, 0, "a low finding alone does not fail by default");
}

#[test]
fn create_without_dir_fsync_twin() {
    ok("create_without_dir_fsync", nothing);
}

#[test]
fn unsynced_at_exit() {
    let Flagged { finding, .. } = flagged(
        "unsynced_at_exit",
        existing_journal,
        "unsynced-at-exit",
        ("journal", "medium", "pid"),
    );
    let ev = &finding["evidence"];
    assert_unsynced(
        ev,
        36,
        3,
        serde_json::json!([[11, 47]]),
        "appended after the 11 bytes that were there before",
    );
    assert_eq!(ev["exit_code"], 0);
}

#[test]
fn unsynced_at_exit_twin() {
    ok("unsynced_at_exit", existing_journal);
}

/// `auditor run -- sh -c SCRIPT > cmd.log 2>&1` in `dir`: exit code and
/// report.
fn with_output_in_a_file(dir: &Path, script: &str) -> (i32, Value) {
    require_root();
    let log = std::fs::File::create(dir.join("cmd.log")).unwrap();
    let status = Command::new(auditor_bin())
        .current_dir(dir)
        .args(["run", "--format", "json", "--output", "report.json"])
        .args(["--fail-on", "low", "--", "sh", "-c", script])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    let report = std::fs::read(dir.join("report.json")).unwrap();
    (
        status.code().unwrap(),
        serde_json::from_slice(&report).unwrap(),
    )
}

/// No program fsyncs its stdout: what the command and its children write
/// to the output its caller redirected to a file is the caller's to keep,
/// counted and not judged. The same file opened by the command itself
/// holds the command's own data, judged as any other.
#[test]
fn unsynced_at_exit_not_for_output_the_caller_redirected() {
    let dir = scratch("rules_caller_output");
    let log = dir.join("cmd.log");
    let (code, report) = with_output_in_a_file(&dir, "echo out; echo err >&2; sh -c 'echo child'");
    assert_eq!(rule_ids(&report), Vec::<String>::new(), "{report:#}");
    assert_eq!(code, 0);
    let caller = &report["stats"]["caller_files"];
    assert_eq!(
        (&caller["files"], &caller["bytes"], &caller["examples"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(14),
            &serde_json::json!([log.to_str().unwrap()])
        )
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "out\nerr\nchild\n");

    let (code, report) = with_output_in_a_file(&dir, "echo out; echo own >> cmd.log");
    assert_eq!(rule_ids(&report), ["unsynced-at-exit"]);
    assert_eq!(code, 1);
    let f = the_finding(&report, "unsynced-at-exit");
    assert_eq!(f["path"].as_str(), log.to_str());
    assert_eq!(
        f["evidence"]["unsynced_bytes"], 4,
        "only the shell's own append: {f:#}"
    );
    assert_eq!(report["stats"]["caller_files"]["bytes"], 4);
}

#[test]
fn killed_while_dirty() {
    let Flagged { run, finding, .. } = flagged(
        "killed_while_dirty",
        nothing,
        "killed-while-dirty",
        ("worker.db", "high", "worker"),
    );
    let supervisor = printed_pid(&run.stdout, "supervisor");
    let ev = &finding["evidence"];
    assert_eq!(ev["unsynced_bytes"], 8192);
    assert_eq!(ev["signal"], "SIGKILL");
    assert_eq!(ev["sender"]["pid"].as_u64(), Some(supervisor));
    assert_eq!(ev["sender"]["comm"], "python3");
    assert_eq!(ev["signals"][0]["handling"], "default action");
}

#[test]
fn killed_while_dirty_twin() {
    ok("killed_while_dirty", nothing);
}

#[test]
fn killed_mid_write() {
    // The torn write's first page is also data the kill left unsynced.
    let (dir, run) = bug(
        "killed_mid_write",
        nothing,
        &["killed-mid-write", "killed-while-dirty"],
    );
    let f = the_finding(&run.report, "killed-mid-write");
    let worker = printed_pid(&run.stdout, "worker");
    let supervisor = printed_pid(&run.stdout, "supervisor");
    assert_names(f, &dir.join("records.bin"), "high", worker);
    let ev = &f["evidence"];
    assert_eq!(ev["kind"], "in_flight");
    assert_eq!(ev["tid"].as_u64(), Some(worker), "the main thread wrote");
    assert_eq!(ev["requested"], 8192);
    assert_eq!(ev["written"], 4096, "only the page that was there");
    assert_eq!(ev["sender"]["pid"].as_u64(), Some(supervisor));
    let (entered, sent, returned) = (
        ev["write_entered_ns"].as_u64().unwrap(),
        ev["signal_sent_ns"].as_u64().unwrap(),
        ev["write_returned_ns"].as_u64().unwrap(),
    );
    assert!(entered <= sent && sent <= returned, "{ev:#}");
    let dirty = the_finding(&run.report, "killed-while-dirty");
    assert_eq!(dirty["evidence"]["unsynced_bytes"], 4096);
}

#[test]
fn killed_mid_write_twin() {
    ok("killed_mid_write", nothing);
}

#[test]
fn interleaved_writers() {
    let Flagged {
        dir,
        run,
        pid: a,
        finding,
    } = flagged(
        "interleaved_writers",
        nothing,
        "interleaved-writers",
        ("app.log", "medium", "A"),
    );
    let b = printed_pid(&run.stdout, "B");
    let writers: Vec<u64> = finding["evidence"]["writers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(writers, [a, b], "A appended first, then B");
    // The content really interleaved: A1, B1, A2.
    let log = std::fs::read_to_string(dir.join("app.log")).unwrap();
    let order: Vec<&str> = log.lines().map(|l| &l[..2]).collect();
    assert_eq!(order, ["A1", "B1", "A2"]);
}

#[test]
fn interleaved_writers_twin() {
    ok("interleaved_writers", nothing);
}

#[test]
fn truncate_in_place() {
    let Flagged { finding, .. } = flagged(
        "truncate_in_place",
        existing_settings,
        "truncate-in-place",
        ("settings.ini", "high", "pid"),
    );
    let ev = &finding["evidence"];
    assert_eq!(ev["size_before"], 600);
    assert_eq!(ev["rewrite"], "write(fd=3, 600) = 600");
    assert!(
        ev["truncated_by"].as_str().unwrap().contains("O_TRUNC"),
        "{ev:#}"
    );
}

/// Fsynced right after the rewrite: the window closed before the command
/// ended well, so the verdict is low, with how long it was exposed.
#[test]
fn truncate_in_place_made_durable_later() {
    let (dir, run) = audit("truncate_in_place", "synced", &[], existing_settings);
    assert_eq!(
        run.code, 1,
        "low fails here: these tests run with --fail-on low"
    );
    let f = the_finding(&run.report, "truncate-in-place");
    assert_names(
        f,
        &dir.join("settings.ini"),
        "low",
        printed_pid(&run.stdout, "pid"),
    );
    let ev = &f["evidence"];
    assert!(
        ev["closed_by"]["call"]
            .as_str()
            .unwrap()
            .starts_with("fsync("),
        "{ev:#}"
    );
    assert!(ev["exposed_for_ns"].as_u64().unwrap() > 0, "{ev:#}");
}

#[test]
fn truncate_in_place_twin() {
    ok("truncate_in_place", existing_settings);
}

#[test]
fn sync_file_range_only() {
    let (dir, run) = bug(
        "sync_file_range_only",
        nothing,
        &["sync-file-range-only", "unsynced-at-exit"],
    );
    let pid = printed_pid(&run.stdout, "pid");
    let path = dir.join("data.bin");
    let f = the_finding(&run.report, "sync-file-range-only");
    assert_names(f, &path, "low", pid);
    assert_eq!(f["evidence"]["moment"], "exit");
    assert_eq!(f["evidence"]["unsynced_bytes"], 65536);
    assert!(
        f["calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["call"].as_str().unwrap().starts_with("sync_file_range(")),
        "the sync_file_range call is in the evidence: {f:#}"
    );
    let exit = the_finding(&run.report, "unsynced-at-exit");
    assert_names(exit, &path, "medium", pid);
}

#[test]
fn sync_file_range_only_twin() {
    ok("sync_file_range_only", nothing);
}

/// An ext4 filesystem on a loop device whose backing file lives on a
/// 6 MiB tmpfs, though it claims 64 MiB: writes land in the page cache,
/// and writeback of more than the tmpfs holds fails, so fsync reports the
/// error - a real device failing under a real filesystem.
struct FailingDevice {
    back: PathBuf,
    mnt: PathBuf,
}

impl FailingDevice {
    fn new(dir: &Path) -> Self {
        let (back, mnt) = (dir.join("back"), dir.join("mnt"));
        std::fs::create_dir_all(&back).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let img = back.join("img");
        succeed(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
                .arg(&back),
        );
        let dev = FailingDevice { back, mnt };
        succeed(Command::new("truncate").args(["-s", "64M"]).arg(&img));
        succeed(
            Command::new("mkfs.ext4")
                .args([
                    "-q",
                    "-F",
                    "-O",
                    "^has_journal",
                    "-E",
                    "lazy_itable_init=1,nodiscard",
                ])
                .arg(&img),
        );
        succeed(
            Command::new("mount")
                .args(["-o", "loop,errors=continue"])
                .arg(&img)
                .arg(&dev.mnt),
        );
        dev
    }
}

impl Drop for FailingDevice {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("umount").arg(&self.back).status();
    }
}

/// Leftover mounts from an interrupted run would make `scratch` fail.
fn unmount_leftovers(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/e2e")
        .join(name);
    for m in ["mnt", "back"] {
        let _ = Command::new("umount")
            .arg(dir.join(m))
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn failing_fsync(mode: &str) -> (PathBuf, Run) {
    let name = format!("rules_fsync_error_ignored_{mode}");
    unmount_leftovers(&name);
    let dir = scratch(&name);
    let dev = FailingDevice::new(&dir);
    let mut cmd = py("rules/fsync_error_ignored.py");
    cmd.push(mode.into());
    cmd.push(dev.mnt.to_str().unwrap().into());
    let run = run_report(&dir, &["--fail-on", "low"], &argv(&cmd));
    assert_eq!(
        printed_pid(&run.stdout, "errno"),
        28,
        "fsync failed with ENOSPC: {}",
        run.stdout
    );
    let mnt = dev.mnt.clone();
    drop(dev);
    (mnt, run)
}

#[test]
fn fsync_error_ignored() {
    let (mnt, run) = failing_fsync("bug");
    // The rename after the failed fsync also moves undurable data into
    // place, and the directory was never fsynced: both true, both reported.
    assert_eq!(
        rule_ids(&run.report),
        [
            "fsync-error-ignored",
            "rename-without-dir-fsync",
            "rename-without-fsync"
        ]
    );
    let f = the_finding(&run.report, "fsync-error-ignored");
    let pid = printed_pid(&run.stdout, "pid");
    // The device is unmounted by now: check the identity fields directly.
    assert_eq!(f["path"].as_str(), mnt.join("blob").to_str());
    assert_eq!(f["severity"], "high");
    assert_eq!(f["process"]["pid"].as_u64(), Some(pid));
    let ev = &f["evidence"];
    assert_eq!(ev["errno"], "ENOSPC");
    assert_eq!(ev["failed_call"], "fsync(fd=3) = -28 (ENOSPC)");
    assert_eq!(ev["follow_up"], "rename");
    assert_eq!(ev["fs"], "ext4");
    assert_eq!(run.code, 1);
}

#[test]
fn fsync_error_ignored_twin() {
    let (_, run) = failing_fsync("ok");
    assert!(
        all_findings(&run.report).is_empty(),
        "giving up on the data after a failed fsync is correct: {:#}",
        run.report["findings"]
    );
    assert_eq!(run.report["exit_status"]["code"], 1, "the program exits 1");
    assert_eq!(run.code, 1, "and its failure is passed on");
}
