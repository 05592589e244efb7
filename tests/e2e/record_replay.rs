//! `auditor record` then `auditor report` gives the findings a live
//! `auditor run` gives; a recording cut short still reports what it holds
//! and says where it stops; JSON Lines output is one finding per line then
//! a summary.

use std::path::Path;

use auditor_e2e::*;
use serde_json::Value;

/// (rule, path, severity, pid) of every finding, sorted.
fn verdicts(report: &Value) -> Vec<(String, String, String, u64)> {
    let mut v: Vec<_> = all_findings(report)
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_owned(),
                f["path"].as_str().unwrap().to_owned(),
                f["severity"].as_str().unwrap().to_owned(),
                f["process"]["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The deterministic fixture: unsynced data renamed into place (the
/// directory is fsynced), so exactly one high finding.
fn fixture_cmd() -> Vec<String> {
    let mut cmd = py("rules/rename_without_fsync.py");
    cmd.push("bug".into());
    cmd
}

/// Records the fixture in `dir`; the pid it printed.
fn record(dir: &Path) -> u64 {
    let out = record_run(dir, &argv(&fixture_cmd()));
    printed_pid(&String::from_utf8_lossy(&out.stdout), "pid")
}

fn replay(dir: &Path, rec: &str, format: &str) -> (i32, String, String) {
    let out = auditor(dir, &["report", rec, "--format", format]);
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The same program, so the same verdicts, each naming its own pid.
fn with_pid(v: &[(String, String, String, u64)], pid: u64) -> Vec<(String, String, String, u64)> {
    v.iter()
        .map(|(r, p, s, _)| (r.clone(), p.clone(), s.clone(), pid))
        .collect()
}

#[test]
fn report_of_a_recording_equals_the_live_run() {
    let dir = scratch("record_replay_same");
    let live = run_report(&dir, &[], &argv(&fixture_cmd()));
    let live_pid = printed_pid(&live.stdout, "pid");
    let live_v = verdicts(&live.report);
    assert_eq!(
        live_v,
        [(
            "rename-without-fsync".to_string(),
            dir.join("state.json").to_str().unwrap().to_string(),
            "high".to_string(),
            live_pid
        )]
    );
    std::fs::remove_file(dir.join("state.json")).unwrap();

    let rec_pid = record(&dir);
    let (code, stdout, stderr) = replay(&dir, "run.rec", "json");
    assert_eq!(code, live.code, "same exit code: {stderr}");
    assert!(stderr.is_empty(), "a complete recording: {stderr}");
    let replayed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(replayed["mode"], "report");
    assert_eq!(verdicts(&replayed), with_pid(&live_v, rec_pid));
    let f = the_finding(&replayed, "rename-without-fsync");
    let l = the_finding(&live.report, "rename-without-fsync");
    for key in [
        "unsynced_bytes",
        "unsynced_ranges",
        "writes",
        "source",
        "fs",
    ] {
        assert_eq!(f["evidence"][key], l["evidence"][key], "{key}");
    }
    assert_eq!(replayed["exit_status"], live.report["exit_status"]);
}

/// Cuts the recording in the middle of the first line that mentions
/// `needle`, or of the line after it.
fn cut(dir: &Path, needle: &str, after: bool) -> (String, usize) {
    let text = std::fs::read_to_string(dir.join("run.rec")).unwrap();
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n').enumerate();
    let (mut n, mut line) = lines
        .by_ref()
        .find(|(_, l)| {
            let hit = l.contains(needle);
            if !hit {
                offset += l.len();
            }
            hit
        })
        .unwrap_or_else(|| panic!("{needle} not in the recording"));
    if after {
        offset += line.len();
        (n, line) = lines.next().unwrap();
    }
    let at = offset + line.len() / 2;
    let name = format!("cut-{}.rec", if after { "after" } else { "before" });
    std::fs::write(dir.join(&name), &text.as_bytes()[..at]).unwrap();
    (name, n + 1)
}

#[test]
fn a_truncated_recording_reports_what_it_holds() {
    let dir = scratch("record_replay_truncated");
    record(&dir);
    let rename = "\"type\":\"rename\"";

    // Cut just after the rename: its verdict is still there.
    let (name, line) = cut(&dir, rename, true);
    let (code, stdout, stderr) = replay(&dir, &name, "json");
    assert!(
        stderr.contains("ends early") && stderr.contains(&format!("line {line}")),
        "says where it stopped: {stderr}"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        findings(&report, "rename-without-fsync").len(),
        1,
        "{report:#}"
    );
    assert_eq!(code, 1, "a high finding fails");

    // Cut inside the rename: the data is left unsynced by a process whose
    // end was not seen: a low verdict, which does not fail by default.
    let (name, line) = cut(&dir, rename, false);
    let (code, stdout, stderr) = replay(&dir, &name, "json");
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert!(findings(&report, "rename-without-fsync").is_empty());
    let f = the_finding(&report, "unsynced-at-exit");
    assert_eq!(f["severity"], "low", "{f:#}");
    // Below --fail-on medium, but the recording is cut: not a clean run.
    assert_eq!(code, 2, "a truncated recording never exits 0");
}

/// What was put at risk as it happened (`at_risk`), every verdict at the
/// end (`finding`), then the summary.
#[test]
fn jsonl_is_one_finding_per_line_then_a_summary() {
    let dir = scratch("record_replay_jsonl");
    record(&dir);
    let (code, stdout, _) = replay(&dir, "run.rec", "jsonl");
    assert_eq!(code, 1);
    let lines = jsonl_report(&stdout);
    let (summary, found) = lines.split_last().unwrap();
    assert!(summary.get("findings").is_none());
    assert_eq!(summary["schema"], "auditor.report/v1");
    assert!(!found.is_empty());
    let first_verdict = found
        .iter()
        .position(|f| f["type"] == "finding")
        .expect("verdicts");
    let (at_risk, verdicts) = found.split_at(first_verdict);
    assert!(at_risk.iter().all(|f| f["type"] == "at_risk"), "{found:#?}");
    assert!(
        verdicts.iter().all(|f| f["type"] == "finding"),
        "{found:#?}"
    );
    assert_eq!(at_risk[0]["rule"], "rename-without-fsync");
    assert_eq!(verdicts[0]["rule"], "rename-without-fsync");
}
