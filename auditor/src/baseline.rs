//! Baselines: the fingerprints of the findings a project already knows
//! about, so `--baseline` can report only what is new. The file is JSON
//! (`auditor.baseline/v1`), sorted, with each fingerprint's rule and path
//! for the people who review it; only the fingerprints count.
//!
//! Both a baseline and the report it is made from are user input: every
//! problem with them is one line naming the file, never a panic.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    path::Path,
};

use auditor_analyzer::report::{REPORT_SCHEMA, groups::relative};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{error::UserError, output::Output};

pub const BASELINE_SCHEMA: &str = "auditor.baseline/v1";

/// Largest baseline read (about 300,000 findings).
const MAX_BASELINE_BYTES: u64 = 64 << 20;
/// Largest report read.
const MAX_REPORT_BYTES: u64 = 1 << 30;

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    fingerprint: String,
    rule: String,
    path: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct BaselineFile {
    schema: String,
    findings: Vec<Entry>,
}

/// The bytes of `path`, at most `limit` of them.
fn read_capped(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, UserError> {
    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| UserError::new(format!("{what} {shown}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| UserError::new(format!("{what} {shown}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(UserError::new(format!(
            "{what} {shown}: larger than {} MiB; is it the right file?",
            limit >> 20
        )));
    }
    Ok(bytes)
}

/// 16 lowercase hex digits, as reports write them.
fn is_fingerprint(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The fingerprints of the baseline at `path`.
pub fn load(path: &Path) -> Result<BTreeSet<String>, UserError> {
    let bytes = read_capped(path, MAX_BASELINE_BYTES, "--baseline")?;
    parse(&bytes).map_err(|e| UserError::new(format!("--baseline {}: {e}", path.display())))
}

fn parse(bytes: &[u8]) -> Result<BTreeSet<String>, String> {
    let file: BaselineFile = serde_json::from_slice(bytes).map_err(|e| {
        format!("not a baseline ({e}); make one with `auditor baseline -o FILE REPORT.json`")
    })?;
    if file.schema != BASELINE_SCHEMA {
        return Err(format!(
            "schema {:?}, expected {BASELINE_SCHEMA:?}",
            file.schema
        ));
    }
    file.findings
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            if is_fingerprint(&e.fingerprint) {
                Ok(e.fingerprint)
            } else {
                Err(format!(
                    "findings[{i}]: fingerprint {:?} is not 16 hex digits",
                    e.fingerprint
                ))
            }
        })
        .collect()
}

/// The baseline of a JSON report: each distinct fingerprint with the rule
/// and path (relative to the report's base) of its first finding, sorted
/// by rule and path so changes to it read well in a review.
fn from_report(bytes: &[u8]) -> Result<BaselineFile, String> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a JSON report ({e}); write one with --format json"))?;
    if doc.get("schema").and_then(Value::as_str) != Some(REPORT_SCHEMA) {
        return Err(format!(
            "not a JSON report (no \"schema\": {REPORT_SCHEMA:?}); write one with --format json"
        ));
    }
    let base = doc.get("base").and_then(Value::as_str);
    let findings = doc
        .get("findings")
        .and_then(Value::as_array)
        .ok_or("the report has no findings array")?;
    let mut by_fingerprint = BTreeMap::new();
    for (i, f) in findings.iter().enumerate() {
        let field = |key: &str| {
            f.get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("findings[{i}] has no {key}"))
        };
        let fingerprint = field("fingerprint")
            .map_err(|e| format!("{e}: the report predates fingerprints; make it again"))?;
        if !is_fingerprint(fingerprint) {
            return Err(format!(
                "findings[{i}]: fingerprint {fingerprint:?} is not 16 hex digits"
            ));
        }
        let entry = Entry {
            fingerprint: fingerprint.to_string(),
            rule: field("rule")?.to_string(),
            path: relative(field("path")?, base).to_string(),
        };
        by_fingerprint
            .entry(entry.fingerprint.clone())
            .or_insert(entry);
    }
    let mut findings: Vec<Entry> = by_fingerprint.into_values().collect();
    findings.sort_by(|a, b| (&a.rule, &a.path).cmp(&(&b.rule, &b.path)));
    Ok(BaselineFile {
        schema: BASELINE_SCHEMA.to_string(),
        findings,
    })
}

/// `auditor baseline -o FILE REPORT`: writes the baseline of a JSON report
/// (atomically, 0600, like every file we write); returns how many
/// fingerprints it holds.
pub fn write(report: &Path, output: &Path) -> Result<usize, UserError> {
    let bytes = read_capped(report, MAX_REPORT_BYTES, "report")?;
    let baseline =
        from_report(&bytes).map_err(|e| UserError::new(format!("{}: {e}", report.display())))?;
    let mut text = serde_json::to_vec_pretty(&baseline)
        .map_err(|e| UserError::new(format!("cannot encode the baseline: {e}")))?;
    text.push(b'\n');
    let mut out = Output::open(Some(output))?;
    let cannot =
        |e: std::io::Error| UserError::new(format!("cannot write {}: {e}", output.display()));
    out.write_chunk(&text).map_err(cannot)?;
    out.commit().map_err(cannot)?;
    Ok(baseline.findings.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(findings: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schema": REPORT_SCHEMA,
            "base": "/src/proj",
            "findings": findings,
        }))
        .unwrap()
    }

    fn finding(fp: &str, rule: &str, path: &str) -> Value {
        serde_json::json!({"fingerprint": fp, "rule": rule, "path": path, "severity": "high"})
    }

    #[test]
    fn a_report_becomes_sorted_distinct_fingerprints_with_relative_paths() {
        let bytes = report(serde_json::json!([
            finding("00000000000000bb", "unsynced-at-exit", "/src/proj/out.log"),
            finding("00000000000000aa", "rename-without-fsync", "/src/proj/db"),
            finding("00000000000000aa", "rename-without-fsync", "/src/proj/db"),
            finding("00000000000000cc", "unsynced-at-exit", "/var/log/x"),
        ]));
        let b = from_report(&bytes).unwrap();
        let got: Vec<(&str, &str)> = b
            .findings
            .iter()
            .map(|e| (e.fingerprint.as_str(), e.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("00000000000000aa", "db"),
                ("00000000000000cc", "/var/log/x"),
                ("00000000000000bb", "out.log")
            ]
        );
        let text = serde_json::to_vec(&b).unwrap();
        let back = parse(&text).unwrap();
        assert_eq!(back.len(), 3);
        assert!(back.contains("00000000000000cc"));
    }

    #[test]
    fn hostile_or_wrong_files_are_one_line_errors() {
        for (bytes, want) in [
            (&b"not json"[..], "not a baseline"),
            (br#"{"schema":"auditor.baseline/v9","findings":[]}"#, "expected"),
            (
                br#"{"schema":"auditor.baseline/v1","findings":[{"fingerprint":"../../x","rule":"r","path":"p"}]}"#,
                "not 16 hex digits",
            ),
            (br#"{"schema":"auditor.baseline/v1"}"#, "missing field"),
        ] {
            let e = parse(bytes).unwrap_err();
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
        for (bytes, want) in [
            (b"[]".to_vec(), "not a JSON report"),
            (
                report(serde_json::json!([{"rule": "r", "path": "/p"}])),
                "predates fingerprints",
            ),
            (
                report(serde_json::json!([finding("xyz", "r", "/p")])),
                "not 16 hex digits",
            ),
            (
                br#"{"schema":"auditor.report/v1"}"#.to_vec(),
                "no findings array",
            ),
        ] {
            let e = from_report(&bytes).unwrap_err();
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let d = std::env::temp_dir().join(format!("auditor-baseline-{}", std::process::id()));
        std::fs::write(&d, vec![b' '; 100]).unwrap();
        let e = read_capped(&d, 10, "--baseline").unwrap_err().to_string();
        let _ = std::fs::remove_file(&d);
        assert!(e.contains("larger than"), "{e}");
    }
}
