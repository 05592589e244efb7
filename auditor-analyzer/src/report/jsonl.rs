//! JSON Lines output: what is put at risk, one line each as it happens (so
//! a live run streams), then every verdict at the end, then a summary line.

use serde_json::Value;

use super::Report;
use crate::finding::Finding;

/// `{"type":"finding", ...}` for one verdict, without a trailing newline.
pub fn jsonl_finding_line(f: &Finding) -> String {
    typed_line(f, "finding")
}

/// `{"type":"at_risk", ...}`: a finding as it stands the moment it is
/// found; the verdict (which may be lower, or none if the file is gone by
/// then) comes at the end as a `finding` line.
pub fn jsonl_at_risk_line(f: &Finding) -> String {
    typed_line(f, "at_risk")
}

fn typed_line(f: &Finding, ty: &str) -> String {
    let line = super::sorted::Sorted {
        finding: f,
        kind: Some(ty),
    };
    serde_json::to_string(&line).unwrap_or_else(|_| "null".into())
}

/// `{"type":"summary", ...}`: run facts, counts and stats, no findings.
pub fn jsonl_summary_line(report: &Report) -> String {
    let mut map = report.header_json();
    map.insert("type".into(), "summary".into());
    Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn one_finding_per_line_then_a_summary() {
        let r = sample_report();
        let mut lines: Vec<String> = r.findings.iter().map(jsonl_finding_line).collect();
        lines.push(jsonl_summary_line(&r));
        assert_eq!(lines.len(), 4);
        for line in &lines[..3] {
            assert!(!line.contains('\n'));
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["type"], "finding");
            assert!(v["rule"].is_string() && v["evidence"].is_object());
            let back: Finding = serde_json::from_str(line).unwrap();
            assert!(r.findings.contains(&back));
        }
        let summary: Value = serde_json::from_str(&lines[3]).unwrap();
        assert_eq!(summary["type"], "summary");
        assert_eq!(summary["schema"], "auditor.report/v1");
        assert_eq!(summary["counts"]["total"], 3);
        assert!(summary.get("findings").is_none());
    }
}
