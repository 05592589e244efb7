//! Linking what each crash destroyed to the findings that predicted it, and
//! the report: the usual one with `confirmed` on every finding, plus the
//! crashes.

use std::fmt::Write;

use anyhow::Result;
use auditor_analyzer::{
    Finding,
    report::{Report, plural::count},
};
use serde_json::{Value, json};

use super::{
    Point,
    files::{FileState, Outcome},
};
use crate::{
    cli::{CrashtestArgs, Format},
    error::UserError,
    output::Output,
    pipeline::sinks::text_options,
};

/// How the crash test was set up, for the report.
pub struct Plan {
    pub fs: &'static str,
    pub size: u64,
    pub at: String,
    pub seed: Option<u64>,
    /// Successful renames and fsyncs of the complete (reference) run.
    pub renames: u64,
    pub fsyncs: u64,
}

/// The call the process was frozen at.
pub struct Where {
    pub call: String,
    pub path: Option<String>,
    pub pid: u32,
    pub tid: u32,
    pub seq: u64,
}

/// One believed file against what recovery brought back.
pub struct Compared {
    pub path: String,
    pub believed: FileState,
    pub after: Option<FileState>,
    pub outcome: Outcome,
}

impl Compared {
    /// The name did not survive: no file, or another inode under it (a
    /// rename that was undone brings the older file back).
    pub fn name_lost(&self) -> bool {
        self.after
            .as_ref()
            .is_none_or(|a| a.id.ino != self.believed.id.ino)
    }
}

/// Why a file lost data, as far as the analysis can tell.
#[derive(Clone, Debug, PartialEq)]
pub enum Link {
    /// Findings of the complete run predicted it (indexes into its
    /// findings, the best explanation first).
    Confirmed(Vec<usize>),
    /// Only the analysis up to the crash point called the data not yet
    /// durable; the complete run went on to make it durable, so this is the
    /// program's protocol caught half-way, not a defect.
    InFlight { rule: String, path: String },
    /// No finding predicted it: a blind spot of the analyzer.
    Unpredicted,
}

pub struct Crash {
    pub point: Point,
    /// False when the command made fewer such calls than in the first run.
    pub reached: bool,
    pub at: Option<Where>,
    pub files: Vec<Compared>,
    /// The findings of the analysis cut at the crash point.
    pub predictions: Vec<Finding>,
    /// One per file, None for intact files.
    pub links: Vec<Option<Link>>,
}

impl Crash {
    pub fn not_reached(point: Point) -> Crash {
        Crash {
            point,
            reached: false,
            at: None,
            files: Vec::new(),
            predictions: Vec::new(),
            links: Vec::new(),
        }
    }
}

/// Which rule explains lost data best when several name the file: the
/// specific before the general.
const DATA_RULES: &[&str] = &[
    "rename-without-fsync",
    "truncate-in-place",
    "killed-mid-write",
    "killed-while-dirty",
    "fsync-error-ignored",
    "unsynced-at-exit",
    "sync-file-range-only",
    "interleaved-writers",
];

/// Rules about a name rather than the data: only a missing file proves them.
const NAME_RULES: &[&str] = &["rename-without-dir-fsync", "create-without-dir-fsync"];

/// Rank of a rule for a lost file; None when the loss cannot confirm it.
fn rank(rule: &str, name_lost: bool) -> Option<usize> {
    let name = NAME_RULES.iter().position(|r| *r == rule);
    let data = DATA_RULES.iter().position(|r| *r == rule);
    if name_lost {
        // The name is gone or points at an older file: the name rules say
        // exactly that, and the data went with it.
        name.or(data.map(|d| d + NAME_RULES.len()))
    } else {
        data
    }
}

/// Links one lost file: the analysis up to the crash point must have named
/// it (same inode or path); those findings are confirmed when the complete
/// run raised the same rule on the same path, at the same call.
pub fn link(c: &Compared, predictions: &[Finding], reference: &[Finding]) -> Link {
    let mut local: Vec<(usize, usize, &Finding)> = predictions
        .iter()
        .enumerate()
        .filter(|(_, f)| f.path == c.path || f.inode == Some(c.believed.id))
        .filter_map(|(i, f)| rank(&f.rule, c.name_lost()).map(|r| (r, i, f)))
        .collect();
    // The best rule first; of one rule only the latest finding: its call
    // put in place what the crash found lost (what earlier calls put
    // there was replaced anyway).
    local.sort_by_key(|(r, i, _)| (*r, std::cmp::Reverse(*i)));
    local.dedup_by_key(|(r, _, _)| *r);
    let mut confirmed: Vec<usize> = Vec::new();
    for &(_, i, f) in &local {
        if let Some(r) = same_finding(f, ordinal(predictions, i), reference)
            && !confirmed.contains(&r)
        {
            confirmed.push(r);
        }
    }
    if !confirmed.is_empty() {
        return Link::Confirmed(confirmed);
    }
    match local.first() {
        Some((_, _, f)) => Link::InFlight {
            rule: f.rule.clone(),
            path: f.path.clone(),
        },
        None => Link::Unpredicted,
    }
}

/// How many findings of the same rule on the same path come before
/// `findings[i]`.
fn ordinal(findings: &[Finding], i: usize) -> usize {
    let f = &findings[i];
    findings[..i]
        .iter()
        .filter(|o| o.rule == f.rule && o.path == f.path)
        .count()
}

/// The complete run's finding that is `f` of the cut run: same rule and
/// path, and of those the one at the same call (same process name and
/// call text), else the one at the same place in their order, else the
/// last. A program run twice makes the same calls in the same order, so a
/// file renamed into place five times confirms the finding about the
/// rename the crash undid, not the first of the five.
fn same_finding(f: &Finding, nth: usize, reference: &[Finding]) -> Option<usize> {
    let alike: Vec<usize> = reference
        .iter()
        .enumerate()
        .filter(|(_, r)| r.rule == f.rule && r.path == f.path)
        .map(|(i, _)| i)
        .collect();
    let last_call = |x: &Finding| x.calls.last().map(|c| (c.comm.clone(), c.call.clone()));
    let at_call: Vec<usize> = alike
        .iter()
        .copied()
        .filter(|&i| last_call(&reference[i]) == last_call(f))
        .collect();
    let pool = if at_call.is_empty() { &alike } else { &at_call };
    let from_alike = alike.get(nth).filter(|i| pool.contains(i));
    from_alike.or(pool.last()).copied()
}

/// Totals the exit code and summary rest on.
struct Tally {
    /// Per finding: the crashes (1-based) that confirmed it.
    confirmed_by: Vec<Vec<usize>>,
    losses: usize,
    unpredicted: usize,
    in_flight: usize,
}

fn tally(reference: &Report, crashes: &mut [Crash]) -> Tally {
    let mut t = Tally {
        confirmed_by: vec![Vec::new(); reference.findings.len()],
        losses: 0,
        unpredicted: 0,
        in_flight: 0,
    };
    for (ci, c) in crashes.iter_mut().enumerate() {
        c.links = c
            .files
            .iter()
            .map(|f| {
                f.outcome
                    .is_loss()
                    .then(|| link(f, &c.predictions, &reference.findings))
            })
            .collect();
        for l in c.links.iter().flatten() {
            match l {
                Link::Confirmed(ids) => {
                    t.losses += 1;
                    for &i in ids {
                        if !t.confirmed_by[i].contains(&(ci + 1)) {
                            t.confirmed_by[i].push(ci + 1);
                        }
                    }
                }
                Link::InFlight { .. } => t.in_flight += 1,
                Link::Unpredicted => {
                    t.losses += 1;
                    t.unpredicted += 1;
                }
            }
        }
    }
    t
}

fn state_json(s: &FileState) -> Value {
    json!({"size": s.size, "hash": s.hash})
}

fn link_json(l: &Link, reference: &Report) -> Value {
    match l {
        Link::Confirmed(ids) => json!({
            "kind": "confirmed",
            "finding_id": ids[0] + 1,
            "rule": reference.findings[ids[0]].rule,
            "finding_path": reference.findings[ids[0]].path,
            "finding_ids": ids.iter().map(|i| i + 1).collect::<Vec<_>>(),
        }),
        Link::InFlight { rule, path } => json!({
            "kind": "in_flight",
            "finding_id": null,
            "rule": rule,
            "finding_path": path,
            "finding_ids": [],
        }),
        Link::Unpredicted => json!({
            "kind": "unpredicted",
            "finding_id": null,
            "rule": null,
            "finding_path": null,
            "finding_ids": [],
        }),
    }
}

fn crash_json(i: usize, c: &Crash, reference: &Report) -> Value {
    let (call, ordinal) = match c.point {
        Point::Exit => ("exit", None),
        Point::After(class, n) => (class.name(), Some(n)),
    };
    json!({
        "index": i + 1,
        "point": c.point.describe(),
        "call_class": call,
        "ordinal": ordinal,
        "reached": c.reached,
        "where": c.at.as_ref().map(|w| json!({
            "call": w.call, "path": w.path, "pid": w.pid, "tid": w.tid, "seq": w.seq,
        })),
        "files": c.files.iter().zip(&c.links).map(|(f, l)| json!({
            "path": f.path,
            "outcome": f.outcome.as_str(),
            "name_lost": f.outcome.is_loss() && f.name_lost(),
            "believed": state_json(&f.believed),
            "after": f.after.as_ref().map(state_json),
            "link": l.as_ref().map(|l| link_json(l, reference)),
        })).collect::<Vec<_>>(),
    })
}

fn plan_json(plan: &Plan, t: &Tally, crashes: &[Crash]) -> Value {
    json!({
        "fs": plan.fs,
        "image_bytes": plan.size,
        "at": plan.at,
        "seed": plan.seed,
        "points_available": {"renames": plan.renames, "fsyncs": plan.fsyncs},
        "crashes": crashes.len(),
        "losses": t.losses,
        "unpredicted_losses": t.unpredicted,
        "in_flight": t.in_flight,
        "confirmed_findings": t.confirmed_by.iter().filter(|c| !c.is_empty()).count(),
        "unconfirmed_findings": t.confirmed_by.iter().filter(|c| c.is_empty()).count(),
    })
}

fn finding_json(i: usize, f: &Finding, t: &Tally) -> Value {
    let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("id".into(), (i + 1).into());
        m.insert("confirmed".into(), (!t.confirmed_by[i].is_empty()).into());
        m.insert("confirmed_by".into(), json!(t.confirmed_by[i]));
    }
    v
}

pub fn finish(
    mut out: Output,
    args: &CrashtestArgs,
    reference: Report,
    mut crashes: Vec<Crash>,
    plan: Plan,
) -> Result<i32> {
    let t = tally(&reference, &mut crashes);
    match args.report.format() {
        Format::Json => {
            let mut doc = reference.to_json();
            doc["findings"] = reference
                .findings
                .iter()
                .enumerate()
                .map(|(i, f)| finding_json(i, f, &t))
                .collect();
            doc["crashtest"] = plan_json(&plan, &t, &crashes);
            doc["crashes"] = crashes
                .iter()
                .enumerate()
                .map(|(i, c)| crash_json(i, c, &reference))
                .collect();
            let mut text = serde_json::to_vec_pretty(&doc)?;
            text.push(b'\n');
            out.write_chunk(&text)?;
        }
        Format::Jsonl => {
            for (i, f) in reference.findings.iter().enumerate() {
                let mut v = finding_json(i, f, &t);
                v["type"] = "finding".into();
                out.write_chunk(format!("{v}\n").as_bytes())?;
            }
            for (i, c) in crashes.iter().enumerate() {
                let mut v = crash_json(i, c, &reference);
                v["type"] = "crash".into();
                out.write_chunk(format!("{v}\n").as_bytes())?;
            }
            let mut v: Value =
                serde_json::from_str(&auditor_analyzer::jsonl_summary_line(&reference))?;
            v["crashtest"] = plan_json(&plan, &t, &crashes);
            out.write_chunk(format!("{v}\n").as_bytes())?;
        }
        Format::Sarif => {
            let mut doc = reference.to_sarif();
            if let Some(results) = doc["runs"][0]["results"].as_array_mut() {
                for (i, r) in results.iter_mut().enumerate() {
                    r["properties"]["confirmed"] = (!t.confirmed_by[i].is_empty()).into();
                }
            }
            doc["runs"][0]["properties"]["crashtest"] = plan_json(&plan, &t, &crashes);
            let mut text = serde_json::to_vec_pretty(&doc)?;
            text.push(b'\n');
            out.write_chunk(&text)?;
        }
        Format::Text => {
            let o = text_options(&args.report, &out);
            let mut text = reference.render_text(&o);
            text.push_str(&render_text(&reference, &crashes, &plan, &t, o.color));
            out.write_chunk(text.as_bytes())?;
        }
    }
    out.commit()
        .map_err(|e| UserError::new(format!("cannot write the report: {e}")))?;
    let fail_on = crate::pipeline::options::analyzer_config(&args.report)?.fail_on;
    Ok(match reference.command_failure() {
        Some(code) => code,
        None => i32::from(reference.exit_code(fail_on) == 1 || t.losses > 0),
    })
}

fn render_text(
    reference: &Report,
    crashes: &[Crash],
    plan: &Plan,
    t: &Tally,
    color: bool,
) -> String {
    let paint = |style: &str, s: &str| {
        if color {
            format!("{style}{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    let mut o = String::new();
    let seed = plan.seed.map(|s| format!(", seed {s}")).unwrap_or_default();
    let _ = writeln!(
        o,
        "\ncrash test: {} image of {}M, --at {}{seed}; the complete run made {} renames and {} fsyncs",
        plan.fs,
        plan.size >> 20,
        plan.at,
        plan.renames,
        plan.fsyncs
    );
    for (i, c) in crashes.iter().enumerate() {
        let place = match (&c.at, c.point) {
            (_, Point::Exit) => "after the command's last process exited".to_owned(),
            (Some(w), _) => format!(
                "right after {}{} (pid {}, seq {})",
                w.call,
                w.path
                    .as_deref()
                    .filter(|_| !w.call.starts_with("rename"))
                    .map(|p| format!(" on {p}"))
                    .unwrap_or_default(),
                w.pid,
                w.seq
            ),
            (None, p) => format!("at {}: not reached in this run", p.describe()),
        };
        let _ = writeln!(
            o,
            "  crash {} ({}): power cut {place}",
            i + 1,
            c.point.describe()
        );
        for (f, l) in c.files.iter().zip(&c.links) {
            let found = f
                .after
                .as_ref()
                .map_or("no file".to_owned(), |a| format!("{} bytes", a.size));
            let why = match l {
                None => String::new(),
                Some(Link::Confirmed(ids)) => {
                    let names: Vec<String> = ids
                        .iter()
                        .map(|i| format!("#{} {}", i + 1, reference.findings[*i].rule))
                        .collect();
                    format!("  -> confirms finding {}", names.join(", "))
                }
                Some(Link::InFlight { rule, .. }) => format!(
                    "  -> not yet durable at this point ({rule} so far), made durable later: expected"
                ),
                Some(Link::Unpredicted) => paint(
                    "\x1b[1;31m",
                    "  -> LOST WITH NO FINDING PREDICTING IT (analyzer false negative)",
                ),
            };
            let outcome = if f.outcome.is_loss() && !matches!(l, Some(Link::InFlight { .. })) {
                paint("\x1b[1;31m", f.outcome.as_str())
            } else {
                f.outcome.as_str().to_owned()
            };
            let _ = writeln!(
                o,
                "      {:<9} {} (believed {} bytes, found {found}){why}",
                outcome, f.path, f.believed.size
            );
        }
        if c.reached && c.files.is_empty() {
            let _ = writeln!(o, "      (no files on the scratch filesystem)");
        }
    }
    for (i, f) in reference.findings.iter().enumerate() {
        let by = &t.confirmed_by[i];
        let verdict = if by.is_empty() {
            "unconfirmed: no crash point lost this data".to_owned()
        } else {
            let list: Vec<String> = by.iter().map(|c| c.to_string()).collect();
            paint(
                "\x1b[1m",
                &format!("CONFIRMED by crash {}", list.join(", ")),
            )
        };
        let _ = writeln!(o, "  finding #{} {} {}: {verdict}", i + 1, f.rule, f.path);
    }
    let _ = writeln!(
        o,
        "crash test: {}, {} lost data, {} of them predicted by no finding; {} of {} confirmed",
        count(crashes.len() as u64, "crash point", "crash points"),
        count(t.losses as u64, "file", "files"),
        t.unpredicted,
        t.confirmed_by.iter().filter(|c| !c.is_empty()).count(),
        count(reference.findings.len() as u64, "finding", "findings")
    );
    if t.unpredicted > 0 {
        let _ = writeln!(
            o,
            "{}",
            paint(
                "\x1b[1;31m",
                "warning: data was lost where the analyzer reported nothing: please report this as an auditor bug"
            )
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use auditor_analyzer::{
        event::FileId,
        finding::{CallRef, ProcessRef, Severity},
    };

    use super::*;

    fn finding(rule: &str, path: &str, comm: &str, call: &str) -> Finding {
        let mut f = Finding::new(
            rule,
            Severity::High,
            path,
            None,
            ProcessRef {
                pid: 1,
                comm: comm.into(),
                exe: None,
                argv: Default::default(),
            },
            "",
        );
        f.calls.push(CallRef {
            seq: 1,
            ts_ns: 1,
            pid: 1,
            tid: 1,
            comm: comm.into(),
            call: call.into(),
            stack: None,
        });
        f
    }

    fn lost(path: &str) -> Compared {
        let state = |ino| FileState {
            size: 10,
            hash: "h".into(),
            id: FileId { dev: 1, ino },
        };
        Compared {
            path: path.into(),
            believed: state(7),
            after: Some(FileState {
                size: 0,
                ..state(7)
            }),
            outcome: Outcome::Empty,
        }
    }

    fn rename(n: u32) -> String {
        format!("rename(\"/m/s.tmp{n}\", \"/m/s\") = 0")
    }

    /// The reference renamed /m/s into place three times; a crash right
    /// after the second rename confirms the finding about that rename.
    #[test]
    fn a_loss_confirms_the_finding_about_its_own_call() {
        let reference: Vec<Finding> = (1..=3)
            .map(|n| finding("rename-without-fsync", "/m/s", "app", &rename(n)))
            .collect();
        let cut: Vec<Finding> = (1..=2)
            .map(|n| finding("rename-without-fsync", "/m/s", "app", &rename(n)))
            .collect();
        assert_eq!(
            link(&lost("/m/s"), &cut, &reference),
            Link::Confirmed(vec![1])
        );
        assert_eq!(
            link(&lost("/m/s"), &cut[..1], &reference),
            Link::Confirmed(vec![0])
        );
    }

    /// Calls that read the same in every iteration: the order decides.
    #[test]
    fn identical_calls_are_matched_by_their_order() {
        let same = || finding("unsynced-at-exit", "/m/log", "app", "write(fd=3, 4) = 4");
        let reference = vec![same(), same(), same()];
        assert_eq!(
            link(&lost("/m/log"), &[same(), same()], &reference),
            Link::Confirmed(vec![1])
        );
    }

    /// Other files' findings are never confirmed by this file's loss, and
    /// a cut-run finding the complete run did not keep is in flight.
    #[test]
    fn other_files_and_unkept_findings_are_not_confirmed() {
        let reference = vec![
            finding("rename-without-fsync", "/m/a", "app", &rename(1)),
            finding("rename-without-fsync", "/m/b", "app", &rename(2)),
        ];
        let cut = vec![finding("rename-without-fsync", "/m/b", "app", &rename(2))];
        assert_eq!(
            link(&lost("/m/b"), &cut, &reference),
            Link::Confirmed(vec![1])
        );
        let cut = vec![finding(
            "unsynced-at-exit",
            "/m/b",
            "app",
            "write(fd=3, 1) = 1",
        )];
        assert!(matches!(
            link(&lost("/m/b"), &cut, &reference),
            Link::InFlight { .. }
        ));
        assert_eq!(link(&lost("/m/c"), &cut, &reference), Link::Unpredicted);
    }
}
