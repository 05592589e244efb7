//! Judging the auditor's findings against the ground truth of one run.
//!
//! A match is the same rule on the same final path (either side's path
//! normalised). An auditor finding whose rule and process match a truth
//! verdict left unmatched, on another path, is one "wrong path" (not both a
//! false finding and a missed one). Only medium and high count.

use serde_json::Value;

use super::model::{Expected, Severity, Truth, Undecided};

/// One auditor finding, as the report gives it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: String,
    pub severity: String,
    pub path: String,
    pub pid: u32,
    pub comm: String,
}

/// The findings of an `auditor.report/v1` document (see
/// docs/report-schema.md); None when it is not one.
pub fn findings(report: &Value) -> Option<Vec<Finding>> {
    if report["schema"] != "auditor.report/v1" {
        return None;
    }
    let list = report["findings"].as_array()?;
    Some(
        list.iter()
            .map(|f| Finding {
                rule: f["rule"].as_str().unwrap_or("").to_owned(),
                severity: f["severity"].as_str().unwrap_or("").to_owned(),
                path: f["path"].as_str().unwrap_or("").to_owned(),
                pid: f["process"]["pid"].as_u64().unwrap_or(0) as u32,
                comm: f["process"]["comm"].as_str().unwrap_or("").to_owned(),
            })
            .collect(),
    )
}

/// The verdict on every counted finding of one run.
#[derive(Debug, Default)]
pub struct Outcome {
    pub true_: Vec<(Finding, Expected)>,
    /// With what the ground truth says there instead (a low note), if anything.
    pub false_: Vec<(Finding, Option<String>)>,
    pub missed: Vec<Expected>,
    pub wrong_path: Vec<(Finding, Expected)>,
    /// The model's open questions, and the auditor findings that rest on one.
    pub undecided: Vec<Undecided>,
    pub undecided_findings: Vec<Finding>,
    /// Low verdicts of the ground truth: listed, not counted.
    pub low: Vec<Expected>,
}

impl Outcome {
    /// False findings at high severity: the ones that cost most trust.
    pub fn false_high(&self) -> usize {
        self.false_
            .iter()
            .filter(|(f, _)| f.severity == "high")
            .count()
            + self
                .wrong_path
                .iter()
                .filter(|(f, _)| f.severity == "high")
                .count()
    }
}

fn counted(f: &Finding) -> bool {
    f.severity == "medium" || f.severity == "high"
}

/// Compares one run. `canon` puts a path in the form both sides are
/// compared in.
pub fn compare(auditor: &[Finding], truth: &Truth, canon: &dyn Fn(&str) -> String) -> Outcome {
    let mut out = Outcome {
        undecided: truth.undecided.clone(),
        ..Outcome::default()
    };
    let canon_all = |paths: &[String]| paths.iter().map(|p| canon(p)).collect::<Vec<_>>();
    let mut want: Vec<(Expected, Vec<String>, bool)> = Vec::new();
    for e in &truth.expected {
        if e.severity >= Severity::Medium {
            want.push((e.clone(), canon_all(&e.paths), false));
        } else {
            out.low.push(e.clone());
        }
    }
    let low: Vec<(Expected, Vec<String>)> = out
        .low
        .iter()
        .map(|e| (e.clone(), canon_all(&e.paths)))
        .collect();
    let open: Vec<(Option<&str>, Vec<String>)> = truth
        .undecided
        .iter()
        .filter(|u| u.rule.is_some())
        .map(|u| (u.rule, canon_all(&u.paths)))
        .collect();
    let mut rest: Vec<(&Finding, String)> = auditor
        .iter()
        .filter(|f| counted(f))
        .map(|f| (f, canon(&f.path)))
        .collect();
    // Same rule and path by the same process first, so that a finding of
    // another process on that path cannot take a verdict that is not its own.
    for same_pid in [true, false] {
        let mut left = Vec::new();
        for (f, path) in rest {
            let hit = want.iter().position(|(e, paths, used)| {
                !used && e.rule == f.rule && paths.contains(&path) && (!same_pid || e.pid == f.pid)
            });
            match hit {
                Some(i) => {
                    want[i].2 = true;
                    out.true_.push((f.clone(), want[i].0.clone()));
                }
                None => left.push((f, path)),
            }
        }
        rest = left;
    }
    let mut unmatched = Vec::new();
    for (f, path) in rest {
        if open
            .iter()
            .any(|(rule, paths)| *rule == Some(f.rule.as_str()) && paths.contains(&path))
        {
            out.undecided_findings.push(f.clone());
        } else {
            unmatched.push((f, path));
        }
    }
    for (f, path) in unmatched {
        // Of the verdicts this could have meant, the one whose path ends
        // most like it (`.idx` with `.idx`).
        let other = want
            .iter()
            .enumerate()
            .filter(|(_, (e, _, used))| !used && e.rule == f.rule && e.pid == f.pid)
            .max_by_key(|(_, (_, paths, _))| {
                paths
                    .iter()
                    .map(|p| common_suffix(p, &path))
                    .max()
                    .unwrap_or(0)
            })
            .map(|(i, _)| i);
        if let Some(i) = other {
            want[i].2 = true;
            out.wrong_path.push((f.clone(), want[i].0.clone()));
            continue;
        }
        let note = low
            .iter()
            .find(|(e, paths)| e.rule == f.rule && e.pid == f.pid && paths.contains(&path))
            .or_else(|| {
                low.iter()
                    .find(|(e, paths)| e.rule == f.rule && paths.contains(&path))
            })
            .or_else(|| low.iter().find(|(_, paths)| paths.contains(&path)))
            .map(|(e, _)| {
                if e.rule == f.rule {
                    e.why.clone()
                } else {
                    format!("{} ({})", e.rule, e.why)
                }
            });
        out.false_.push((f.clone(), note));
    }
    out.missed = want
        .into_iter()
        .filter(|(_, _, used)| !used)
        .map(|(e, _, _)| e)
        .collect();
    out
}

fn common_suffix(a: &str, b: &str) -> usize {
    a.bytes()
        .rev()
        .zip(b.bytes().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(rule: &str, sev: &str, path: &str, pid: u32) -> Finding {
        Finding {
            rule: rule.into(),
            severity: sev.into(),
            path: path.into(),
            pid,
            comm: "x".into(),
        }
    }

    fn e(rule: &'static str, severity: Severity, path: &str, pid: u32, why: &str) -> Expected {
        Expected {
            rule,
            severity,
            paths: vec![path.into()],
            pid,
            comm: "x".into(),
            why: why.into(),
        }
    }

    #[test]
    fn true_false_missed_and_wrong_path() {
        let truth = Truth {
            expected: vec![
                e("unsynced-at-exit", Severity::Medium, "/d/a", 1, ""),
                e("rename-without-fsync", Severity::High, "/d/b", 2, ""),
                e("rename-without-dir-fsync", Severity::Medium, "/d/c", 3, ""),
                e(
                    "unsynced-at-exit",
                    Severity::Low,
                    "/d/e",
                    4,
                    "closed: fsync",
                ),
            ],
            undecided: vec![Undecided {
                rule: Some("truncate-in-place"),
                paths: vec!["/d/t".into()],
                why: "size unknown".into(),
            }],
            adopted: 0,
        };
        let auditor = vec![
            f("unsynced-at-exit", "medium", "/d/./a", 1),
            f("rename-without-fsync", "high", "/d/b.tmp", 2),
            f("unsynced-at-exit", "medium", "/d/e", 4),
            f("truncate-in-place", "high", "/d/t", 5),
            f("create-without-dir-fsync", "low", "/d/z", 6),
        ];
        let canon = |p: &str| super::super::model::normalise(p);
        let o = compare(&auditor, &truth, &canon);
        assert_eq!(o.true_.len(), 1);
        assert_eq!(o.wrong_path.len(), 1);
        assert_eq!(o.wrong_path[0].1.paths, ["/d/b"]);
        assert_eq!(o.false_.len(), 1);
        assert_eq!(o.false_[0].1.as_deref(), Some("closed: fsync"));
        assert_eq!(o.missed.len(), 1);
        assert_eq!(o.missed[0].rule, "rename-without-dir-fsync");
        assert_eq!(o.undecided_findings.len(), 1);
        assert_eq!(o.low.len(), 1);
        assert_eq!(o.false_high(), 1);
    }
}
