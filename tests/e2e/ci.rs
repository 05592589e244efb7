//! What CI gets: a SARIF log the published schema accepts, baselines that
//! make a run fail only on what is new, an allow-list whose every entry
//! says why, and the shell completions and manual pages of the same CLI.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use auditor_e2e::*;
use serde_json::Value;

/// `auditor ARGS` in `dir`: (exit code, stdout, stderr).
fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = auditor(dir, args);
    (
        out.status.code().expect("auditor killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `auditor run --format FORMAT -o FILE [extra] -- careless_save.py NAMES`.
fn save(dir: &Path, format: &str, file: &str, extra: &[&str], names: &[&str]) -> (i32, String) {
    let fixture = fixture("ci/careless_save.py");
    let mut args = vec!["run", "--format", format, "-o", file];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", PYTHON, "-B", fixture.to_str().unwrap()]);
    args.extend_from_slice(names);
    let (code, _, err) = run(dir, &args);
    (code, err)
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn sarif_of_a_real_run_is_valid_and_points_at_the_files() {
    let dir = scratch("ci_sarif");
    let (code, err) = save(&dir, "sarif", "out.sarif", &[], &["state.json"]);
    assert_eq!(code, 1, "{err}");
    let file = dir.join("out.sarif");
    assert_eq!(mode(&file), 0o600);
    let python = repo_root().join("target/sarif-venv/bin/python3");
    let check = Command::new(&python)
        .arg(repo_root().join("tests/validate_sarif.py"))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask setup`", python.display()));
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let doc = json(&file);
    let run = &doc["runs"][0];
    let results = run["results"].as_array().unwrap();
    let rules: Vec<&str> = results
        .iter()
        .map(|r| r["ruleId"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        ["rename-without-fsync", "rename-without-dir-fsync"],
        "{doc:#}"
    );
    assert_eq!(results[0]["level"], "error");
    assert_eq!(results[1]["level"], "warning");
    let loc = &results[0]["locations"][0]["physicalLocation"]["artifactLocation"];
    let base = run["originalUriBaseIds"]["SRCROOT"]["uri"]
        .as_str()
        .unwrap();
    let uri = loc["uri"].as_str().unwrap();
    assert_eq!(loc["uriBaseId"], "SRCROOT");
    assert!(
        uri.ends_with("ci_sarif/state.json") && !uri.starts_with('/'),
        "{uri}"
    );
    assert_eq!(
        format!("{base}{uri}"),
        format!("file://{}", dir.join("state.json").display()),
        "the base and the relative URI name the file"
    );
    assert_eq!(
        results[0]["partialFingerprints"]["auditorFingerprint/v1"]
            .as_str()
            .unwrap()
            .len(),
        16
    );
    assert!(results[0]["properties"]["group"].is_string());
}

#[test]
fn a_baseline_fails_the_run_only_on_what_is_new() {
    let dir = scratch("ci_baseline");
    let (code, err) = save(&dir, "json", "first.json", &[], &["state.json"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run(&dir, &["baseline", "-o", "baseline.json", "first.json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("wrote 2 fingerprints"), "{err}");
    let baseline = dir.join("baseline.json");
    assert_eq!(mode(&baseline), 0o600);
    let b = json(&baseline);
    assert_eq!(b["schema"], "auditor.baseline/v1");
    assert_eq!(b["findings"].as_array().unwrap().len(), 2);
    assert!(
        b["findings"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("ci_baseline/state.json"),
        "{b:#}"
    );

    // The same run again: all known, nothing fails.
    let (code, err) = save(
        &dir,
        "json",
        "again.json",
        &["--baseline", "baseline.json"],
        &["state.json"],
    );
    assert_eq!(code, 0, "{err}");
    let again = json(&dir.join("again.json"));
    assert_eq!(again["counts"]["total"], 0);
    assert_eq!(again["stats"]["baseline_findings"], 2);
    assert!(
        again["summary"]
            .as_str()
            .unwrap()
            .ends_with("; 2 in the baseline"),
        "{}",
        again["summary"]
    );

    // A new file saved the same way: only its findings count.
    let (code, err) = save(
        &dir,
        "json",
        "new.json",
        &["--baseline", "baseline.json"],
        &["state.json", "other.json"],
    );
    assert_eq!(code, 1, "{err}");
    let new = json(&dir.join("new.json"));
    let paths: Vec<&str> = new["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(
        paths.iter().all(|p| p.ends_with("/other.json")),
        "{paths:?}"
    );

    // -v lists what the baseline left out.
    let fixture = fixture("ci/careless_save.py");
    let f = fixture.to_str().unwrap();
    let (code, text, err) = run(
        &dir,
        &[
            "run",
            "-v",
            "--baseline",
            "baseline.json",
            "--",
            PYTHON,
            "-B",
            f,
            "state.json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("in the baseline (2):"), "{text}");

    // A damaged baseline is one line and exit 2, before anything runs.
    std::fs::write(
        &baseline,
        b"{\"schema\": \"auditor.baseline/v1\", \"findings\": [{]}",
    )
    .unwrap();
    let (code, _, err) = run(&dir, &["run", "--baseline", "baseline.json", "--", "true"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("auditor: --baseline baseline.json: not a baseline")
            && err.lines().count() == 1,
        "{err}"
    );
    let (code, _, err) = run(&dir, &["baseline", "-o", "b2.json", "baseline.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a JSON report"), "{err}");
}

#[test]
fn allowed_findings_need_a_reason_and_are_listed_with_it() {
    let dir = scratch("ci_allow");
    std::fs::write(
        dir.join("auditor.toml"),
        "[[allow]]\nrule = \"rename-without-dir-fsync\"\npath = \"**/state.json\"\nreason = \"a cache, rebuilt at start\"\n",
    )
    .unwrap();
    let (code, err) = save(&dir, "json", "r.json", &[], &["state.json"]);
    assert_eq!(code, 1, "the other rule still fails: {err}");
    let r = json(&dir.join("r.json"));
    assert_eq!(r["counts"]["total"], 1);
    assert_eq!(r["findings"][0]["rule"], "rename-without-fsync");
    assert_eq!(r["stats"]["allowed_findings"], 1);

    let fixture = fixture("ci/careless_save.py");
    let f = fixture.to_str().unwrap();
    let (_, text, _) = run(&dir, &["run", "-v", "--", PYTHON, "-B", f, "state.json"]);
    assert!(text.contains("allowed (1):"), "{text}");
    assert!(
        text.contains("reason (auditor.toml:1): a cache, rebuilt at start"),
        "{text}"
    );
    // --no-config ignores it; --config reads another file.
    let (_, err) = save(&dir, "json", "all.json", &["--no-config"], &["state.json"]);
    assert_eq!(json(&dir.join("all.json"))["counts"]["total"], 2, "{err}");

    std::fs::write(
        dir.join("bad.toml"),
        "[[allow]]\nrule = \"rename-without-fsync\"\npath = \"*\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&dir, &["run", "--config", "bad.toml", "--", "true"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim_end(),
        "auditor: bad.toml:1: [[allow]] needs reason: say why these findings are accepted"
    );
}

#[test]
fn completions_and_man_pages_come_from_the_cli() {
    let dir = scratch("ci_docs");
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(&dir, &["completions", shell]);
        assert_eq!(code, 0, "{err}");
        for word in ["crashtest", "baseline", "follow-new"] {
            assert!(out.contains(word), "{shell} lacks {word}");
        }
    }
    let (code, page, _) = run(&dir, &["man"]);
    assert_eq!(code, 0);
    assert!(page.contains(".TH auditor 1"), "{page}");
    assert!(page.contains("auditor\\-attach(1)"), "{page}");
    let (code, _, err) = run(&dir, &["man", "--dir", "."]);
    assert_eq!(code, 0, "{err}");
    let run_page = dir.join("auditor-run.1");
    assert!(
        std::fs::read_to_string(&run_page)
            .unwrap()
            .contains("\\-\\-baseline")
    );
    assert_eq!(mode(&run_page), 0o600);
}

#[test]
fn attach_to_what_cannot_be_watched_says_why() {
    let dir = scratch("ci_attach_why");
    let (code, _, err) = run(&dir, &["attach", "-p", "2", "--follow-new"]);
    assert_eq!(code, 2);
    assert!(err.contains("--pid 2 is a kernel thread"), "{err}");
    assert!(!err.contains("add --follow-new"), "{err}");
    // The auditor's own pid: a shell execs it with its own.
    let bin = auditor_bin();
    let out = Command::new("sh")
        .current_dir(&dir)
        .args(["-c", "exec \"$0\" attach -p $$", bin.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is the auditor itself"), "{err}");
}
