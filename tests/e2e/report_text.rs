//! The text report people read: alike findings are one entry with their
//! count, nothing a traced program chose reaches the terminal raw, and the
//! JSON report keeps every finding with a stable fingerprint and its group.

use std::collections::BTreeSet;

use auditor_e2e::*;
use serde_json::Value;

/// `auditor run ARGS -- CMD` in `dir` with stdout captured (the text
/// report, as a pipe gets it): (exit code, stdout, stderr).
fn text_run(dir: &std::path::Path, extra: &[&str], cmd: &[&str]) -> (i32, String, String) {
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(cmd);
    let out = auditor(dir, &args);
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).expect("the report is UTF-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_hundred_renames_from_one_place_are_one_entry() {
    let dir = scratch("report_many_renames");
    let fixture = fixture("report/many_renames.py");
    let (code, text, err) = text_run(&dir, &[], &[PYTHON, "-B", fixture.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let entries: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("rename-without-fsync"))
        .collect();
    assert_eq!(entries.len(), 1, "one entry:\n{text}");
    assert!(
        entries[0].contains("x200"),
        "with its count: {}",
        entries[0]
    );
    assert!(entries[0].contains("out/item*.json"), "{}", entries[0]);
    assert!(
        text.contains("(+196 more)"),
        "a few examples, then a count:\n{text}"
    );
    assert!(
        !text.contains("evidence:"),
        "evidence is behind -v:\n{text}"
    );
    assert!(
        text.lines().count() < 30,
        "terse: {} lines:\n{text}",
        text.lines().count()
    );
    // -v lists each one in full.
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
    let (_, verbose, _) = text_run(&dir, &["-v"], &[PYTHON, "-B", fixture.to_str().unwrap()]);
    assert_eq!(
        verbose.matches("HIGH   rename-without-fsync").count(),
        200,
        "every finding with -v"
    );
}

#[test]
fn json_keeps_every_finding_with_its_group_and_a_stable_fingerprint() {
    let fixture = fixture("report/many_renames.py");
    // Two checkouts of one project at different places (as CI gives): the
    // paths are taken relative to the repository.
    let run_in = |name: &str| -> Value {
        let dir = scratch(name);
        let status = std::process::Command::new("/usr/bin/git")
            .args(["init", "-q"])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        run_report(&dir, &[], &[PYTHON, "-B", fixture.to_str().unwrap()]).report
    };
    let a = run_in("report_fingerprint_a");
    let b = run_in("report_fingerprint_b");
    let renames = |r: &Value| -> Vec<Value> {
        findings(r, "rename-without-fsync")
            .into_iter()
            .cloned()
            .collect()
    };
    let (ra, rb) = (renames(&a), renames(&b));
    assert_eq!(ra.len(), 200);
    let groups: BTreeSet<&str> = ra.iter().map(|f| f["group"].as_str().unwrap()).collect();
    assert_eq!(groups.len(), 1, "one group");
    let prints = |v: &[Value]| -> BTreeSet<String> {
        v.iter()
            .map(|f| f["fingerprint"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(prints(&ra).len(), 200, "one fingerprint per file");
    assert_eq!(
        prints(&ra),
        prints(&rb),
        "the same findings in another checkout, another run: the same fingerprints"
    );
}

#[test]
fn a_file_named_with_escape_sequences_never_reaches_the_terminal_raw() {
    let dir = scratch("report_escapes");
    // ESC [2J (clear screen), an OSC title sequence ended by BEL, and a
    // right-to-left override, in one file name.
    let script = "printf x > \"$(printf 'a\\033[2J\\033]0;pwned\\007\\342\\200\\256b')\"";
    let (code, text, err) = text_run(&dir, &["-v"], &["/bin/sh", "-c", script]);
    assert_eq!(code, 1, "{err}");
    for bad in ['\x1b', '\x07', '\u{202e}'] {
        assert!(!text.contains(bad), "{bad:?} in the text report:\n{text:?}");
        assert!(!err.contains(bad), "{bad:?} on stderr:\n{err:?}");
    }
    assert!(
        text.contains("a\\x1b[2J\\x1b]0;pwned\\x07\\u{202e}b"),
        "{text}"
    );
    // JSON keeps the name as it is (JSON escapes it itself).
    let run = run_report(&dir, &[], &["/bin/sh", "-c", script]);
    let names: Vec<String> = all_findings(&run.report)
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("a\x1b[2J\x1b]0;pwned\x07\u{202e}b")),
        "{names:?}"
    );
}
