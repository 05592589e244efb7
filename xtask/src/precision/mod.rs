//! `cargo xtask precision`: how often the auditor is right, on real
//! programs nobody here wrote.
//!
//! Each program runs once under `auditor run`, as
//! `auditor run -- strace -f ... -- CMD`: the auditor watches strace and
//! everything below it, and strace, an independent witness, writes every
//! call of the same run to a file on tmpfs (which the auditor does not
//! judge). A model of Linux durability semantics fed by that trace gives
//! the ground truth, and the auditor's medium and high findings are counted
//! against it. Low precision is a measurement, not a failure: the task
//! fails only when the harness itself could not measure.

mod compare;
mod disk;
mod model;
mod programs;
mod strace;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use compare::{Finding, Outcome};
use model::{Before, Expected, Setup};
use programs::Program;

/// What `cargo xtask precision` was asked.
pub struct Options {
    /// A program name (all its forms) or `name/form`.
    pub only: Option<String>,
    /// Keep the scratch directories and traces for a look afterwards.
    pub keep: bool,
    /// Where to write the numbers as JSON.
    pub json: Option<PathBuf>,
    /// Also list the low verdicts, the undecided ones and the true ones.
    pub verbose: bool,
}

/// The calls the model reads. Only these are traced: a trace of every
/// read would be several times larger and say nothing about durability.
const TRACED: &str = "open,openat,openat2,creat,close,close_range,dup,dup2,dup3,fcntl,\
write,pwrite64,writev,pwritev,pwritev2,copy_file_range,sendfile,splice,\
fsync,fdatasync,sync,syncfs,msync,mmap,munmap,sync_file_range,truncate,ftruncate,\
rename,renameat,renameat2,link,linkat,symlink,symlinkat,unlink,unlinkat,rmdir,\
mkdir,mkdirat,chdir,fchdir,execve,execveat,clone,clone3,fork,vfork";

/// A run that takes longer than this is stuck (the longest takes ~15 s).
const TIMEOUT: Duration = Duration::from_secs(300);

/// The result of one program in one form.
struct Measured {
    name: String,
    form: String,
    seconds: f64,
    result: Result<Judged, String>,
}

struct Judged {
    outcome: Outcome,
    /// False when the auditor dropped events: its verdicts may be off.
    complete: bool,
    root: String,
    adopted: usize,
    auditor_low: usize,
}

/// Runs every selected program and prints the table; an error only when
/// the harness could not do its job.
pub fn run(auditor: &Path, opts: &Options) -> Result<()> {
    let all = programs::all();
    let chosen: Vec<&Program> = all
        .iter()
        .filter(|p| match &opts.only {
            None => true,
            Some(o) => *o == p.name || *o == format!("{}/{}", p.name, p.form),
        })
        .collect();
    if chosen.is_empty() {
        let names: Vec<String> = all
            .iter()
            .map(|p| format!("{}/{}", p.name, p.form))
            .collect();
        bail!(
            "no program matches {:?}; there are: {}",
            opts.only,
            names.join(" ")
        );
    }
    let base = crate::root().join("target/precision");
    std::fs::create_dir_all(&base)?;
    if disk::Disk::volatile(&disk::HostDisk, base.to_str().context("path")?) {
        bail!(
            "{} is on a volatile filesystem: the auditor would judge nothing there",
            base.display()
        );
    }
    let started = Instant::now();
    let mut results = Vec::new();
    for p in chosen {
        eprintln!("== precision: {}/{}", p.name, p.form);
        let t = Instant::now();
        let result = measure(auditor, &base, p, opts.keep).map_err(|e| format!("{e:#}"));
        if let Err(e) = &result {
            eprintln!("   harness failed: {e}");
        }
        results.push(Measured {
            name: p.name.to_owned(),
            form: p.form.to_owned(),
            seconds: t.elapsed().as_secs_f64(),
            result,
        });
    }
    print!("{}", table(&results, opts.verbose));
    println!("total time: {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = &opts.json {
        let doc = numbers(&results);
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.result.is_err())
        .map(|r| format!("{}/{}", r.name, r.form))
        .collect();
    if !failed.is_empty() {
        bail!("the harness could not measure {}", failed.join(", "));
    }
    Ok(())
}

/// One program in one form: set up, run under the auditor and strace,
/// model, compare.
fn measure(auditor: &Path, base: &Path, p: &Program, keep: bool) -> Result<Judged> {
    let dir = base.join(format!("{}-{}", p.name, p.form));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let work = dir.join("work");
    std::fs::create_dir_all(work.join("tmp"))?;
    (p.setup)(&work).context("setting up the inputs")?;
    let root = work
        .canonicalize()?
        .to_str()
        .context("non-UTF-8 scratch path")?
        .to_owned();
    let before = snapshot(Path::new(&root))?;
    let trace_path = format!(
        "/dev/shm/auditor-precision-{}-{}-{}.strace",
        p.name,
        p.form,
        std::process::id()
    );
    let report_path = dir.join("report.json");
    let log = std::fs::File::create(dir.join("output.log"))?;
    let mut cmd = Command::new(auditor);
    cmd.args(["run", "--format", "json", "--output"])
        .arg(&report_path)
        .args([
            "--",
            "strace",
            "-f",
            "-q",
            "-o",
            &trace_path,
            "-s",
            "4096",
            "-yy",
        ])
        .args(["-e", &format!("trace={TRACED}"), "--"])
        .args(["/bin/sh", "-c", p.script])
        .current_dir(&work)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", &root)
        .env("TMPDIR", format!("{root}/tmp"))
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let status = wait(cmd.spawn().context("starting the auditor")?)?;
    let text = std::fs::read(&trace_path).with_context(|| format!("reading {trace_path}"));
    if keep {
        let _ = std::fs::copy(&trace_path, dir.join("trace.strace"));
    }
    let _ = std::fs::remove_file(&trace_path);
    // 1 means findings; anything else, the auditor could not do its job.
    if !matches!(status.code(), Some(0 | 1)) {
        bail!(
            "the auditor failed ({status}): see {}",
            dir.join("output.log").display()
        );
    }
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path)?)
        .with_context(|| format!("reading {}", report_path.display()))?;
    if report["exit_status"]["code"] != 0 {
        bail!(
            "the program did not succeed ({}): see {}",
            report["exit_status"]["description"],
            dir.join("output.log").display()
        );
    }
    let found = compare::findings(&report).context("the report is not auditor.report/v1")?;
    let trace = strace::parse(&String::from_utf8_lossy(&text?));
    let setup = Setup {
        root: root.clone(),
        cwd: root.clone(),
        before,
        never_judged: vec![trace_path.clone()],
    };
    let truth = model::truth(&trace, &setup, &disk::HostDisk);
    let outcome = compare::compare(&found, &truth, &canonical);
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Judged {
        outcome,
        complete: report["complete"] != false,
        root,
        adopted: truth.adopted,
        auditor_low: found.iter().filter(|f| f.severity == "low").count(),
    })
}

fn wait(mut child: std::process::Child) -> Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if start.elapsed() > TIMEOUT {
            // SIGINT: the auditor stops its command and detaches its probes.
            // SAFETY: kill has no memory preconditions; the pid is our child's.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {} s", TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every path under the scratch tree before the run, so the model knows a
/// name it meets for the first time did not exist yet.
fn snapshot(root: &Path) -> Result<BTreeMap<String, Before>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
            let kind = if m.is_dir() {
                todo.push(e.path());
                Before::Dir
            } else if m.is_file() {
                Before::File { size: m.size() }
            } else {
                Before::Other
            };
            out.insert(e.path().to_string_lossy().into_owned(), kind);
        }
    }
    Ok(out)
}

/// Both sides' paths in one form: lexically normal, with the directory
/// resolved through symlinks when it still exists.
fn canonical(path: &str) -> String {
    let p = model::normalise(path);
    let (dir, base) = match p.rfind('/') {
        Some(i) => (&p[..i.max(1)], &p[i + 1..]),
        None => return p,
    };
    match std::fs::canonicalize(dir) {
        Ok(d) => format!("{}/{base}", d.display()).replace("//", "/"),
        Err(_) => p,
    }
}

/// The counts of one outcome: true, false, missed, wrong path.
fn counts(o: &Outcome) -> [usize; 4] {
    [
        o.true_.len(),
        o.false_.len(),
        o.missed.len(),
        o.wrong_path.len(),
    ]
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn rel<'a>(root: &str, path: &'a str) -> &'a str {
    path.strip_prefix(root)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or(path)
}

fn shown(root: &str, e: &Expected) -> String {
    rel(root, e.paths.first().map_or("", String::as_str)).to_owned()
}

/// The table people read: one line per program and form, then what was
/// false or missed, then the totals.
fn table(results: &[Measured], verbose: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<12} {:<10} {:>5} {:>6} {:>7} {:>6} {:>6} {:>10} {:>6}",
        "program", "form", "true", "false", "missed", "wrong", "false", "undecided", "time"
    );
    let _ = writeln!(
        s,
        "{:<12} {:<10} {:>5} {:>6} {:>7} {:>6} {:>6} {:>10} {:>6}",
        "", "", "", "", "", "path", "high", "", ""
    );
    let mut total = [0usize; 4];
    let mut false_high = 0;
    for r in results {
        match &r.result {
            Ok(j) => {
                let c = counts(&j.outcome);
                for (t, v) in total.iter_mut().zip(c) {
                    *t += v;
                }
                false_high += j.outcome.false_high();
                let _ = writeln!(
                    s,
                    "{:<12} {:<10} {:>5} {:>6} {:>7} {:>6} {:>6} {:>10} {:>5.1}s",
                    r.name,
                    r.form,
                    c[0],
                    c[1],
                    c[2],
                    c[3],
                    j.outcome.false_high(),
                    j.outcome.undecided.len(),
                    r.seconds
                );
            }
            Err(e) => {
                let _ = writeln!(s, "{:<12} {:<10} harness failed: {e}", r.name, r.form);
            }
        }
    }
    let _ = writeln!(
        s,
        "{:<23} {:>5} {:>6} {:>7} {:>6} {:>6}",
        "total", total[0], total[1], total[2], total[3], false_high
    );
    let [t, f, m, w] = total;
    let _ = writeln!(
        s,
        "\nprecision = true/(true+false+wrong path) = {t}/{} = {}",
        t + f + w,
        percent(ratio(t, t + f + w))
    );
    let _ = writeln!(
        s,
        "recall    = true/(true+missed+wrong path) = {t}/{} = {}",
        t + m + w,
        percent(ratio(t, t + m + w))
    );
    let _ = writeln!(
        s,
        "precision per run, mean over the runs with findings = {}",
        percent(mean_precision(results))
    );
    for r in results {
        let Ok(j) = &r.result else { continue };
        let lines = listing(j, verbose);
        if !lines.is_empty() {
            let _ = writeln!(s, "\n{}/{}:", r.name, r.form);
            for l in lines {
                let _ = writeln!(s, "  {l}");
            }
        }
    }
    s
}

/// The mean of the runs' own precisions: one program with hundreds of
/// files can carry the totals, this weighs each program and form alike.
fn mean_precision(results: &[Measured]) -> Option<f64> {
    let per_run: Vec<f64> = results
        .iter()
        .filter_map(|r| r.result.as_ref().ok())
        .filter_map(|j| {
            let [t, f, _, w] = counts(&j.outcome);
            ratio(t, t + f + w)
        })
        .collect();
    (!per_run.is_empty()).then(|| per_run.iter().sum::<f64>() / per_run.len() as f64)
}

/// One line of the listing under the table.
#[derive(Clone)]
struct Item {
    kind: &'static str,
    severity: String,
    rule: String,
    path: String,
    who: String,
    why: String,
}

impl Item {
    /// An item about the auditor's finding `f`.
    fn finding(kind: &'static str, f: &Finding, root: &str, why: String) -> Self {
        Item {
            kind,
            severity: f.severity.clone(),
            rule: f.rule.clone(),
            path: rel(root, &f.path).to_owned(),
            who: f.comm.clone(),
            why,
        }
    }

    /// An item about the model's verdict `e`.
    fn expected(
        kind: &'static str,
        e: &Expected,
        root: &str,
        severity: String,
        why: String,
    ) -> Self {
        Item {
            kind,
            severity,
            rule: e.rule.into(),
            path: shown(root, e),
            who: e.comm.clone(),
            why,
        }
    }
}

/// What one run got wrong (and with `verbose`, everything else): one line
/// each with `verbose`, otherwise alike lines folded into one with a count
/// and an example, so a run with hundreds stays readable.
fn listing(j: &Judged, verbose: bool) -> Vec<String> {
    let o = &j.outcome;
    let root = j.root.as_str();
    let mut items = Vec::new();
    for (f, note) in &o.false_ {
        let why = note
            .clone()
            .unwrap_or_else(|| "no exposure in the trace".into());
        items.push(Item::finding("false", f, root, why));
    }
    for e in &o.missed {
        let severity = e.severity.name().into();
        items.push(Item::expected("missed", e, root, severity, String::new()));
    }
    for (f, e) in &o.wrong_path {
        let why = format!("truth: {}", shown(root, e));
        items.push(Item::finding("wrong", f, root, why));
    }
    if verbose {
        for (f, _) in &o.true_ {
            items.push(Item::finding("true", f, root, String::new()));
        }
        for e in &o.low {
            items.push(Item::expected("low", e, root, String::new(), e.why.clone()));
        }
        for u in &o.undecided {
            items.push(Item {
                kind: "undecided",
                severity: String::new(),
                rule: u.rule.unwrap_or("-").into(),
                path: u.paths.first().map_or("", |p| rel(root, p)).to_owned(),
                who: String::new(),
                why: u.why.clone(),
            });
        }
        for f in &o.undecided_findings {
            let why = "an auditor finding on that undecided verdict".into();
            items.push(Item::finding("undecided", f, root, why));
        }
    }
    let line = |i: &Item, path: &str| {
        let why = if i.why.is_empty() {
            String::new()
        } else {
            format!(": {}", i.why)
        };
        format!(
            "{:<7} {:<6} {:<24} {path} ({}){why}",
            i.kind, i.severity, i.rule, i.who
        )
    };
    let mut out = Vec::new();
    if !j.complete {
        out.push("(the auditor dropped events in this run: its report is incomplete)".to_owned());
    }
    if verbose {
        out.extend(items.iter().map(|i| line(i, &i.path)));
        out.push(format!(
            "({} low auditor findings not counted; {} fds identified by strace's annotation)",
            j.auditor_low, j.adopted
        ));
        return out;
    }
    let mut groups: Vec<(String, Vec<&Item>)> = Vec::new();
    for i in &items {
        let key = format!(
            "{} {} {} {} {}",
            i.kind,
            i.severity,
            i.rule,
            i.who,
            without_lines(&i.why)
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    for (_, g) in groups {
        let first = g[0];
        if g.len() <= 3 {
            out.extend(g.iter().map(|i| line(i, &i.path)));
        } else {
            let folded = Item {
                why: without_lines(&first.why),
                ..first.clone()
            };
            out.push(line(
                &folded,
                &format!("{} files, e.g. {}", g.len(), first.path),
            ));
        }
    }
    out
}

/// `... at line 42552` -> `...`: what makes alike lines differ.
fn without_lines(why: &str) -> String {
    let mut out = String::new();
    let mut rest = why;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        rest = rest[i + " at line ".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// The same numbers for machines: `--json FILE`.
fn numbers(results: &[Measured]) -> Value {
    let mut total = [0usize; 4];
    let mut runs = Vec::new();
    for r in results {
        let entry = match &r.result {
            Ok(j) => {
                let o = &j.outcome;
                let c = counts(o);
                for (t, v) in total.iter_mut().zip(c) {
                    *t += v;
                }
                let finding = |f: &Finding| json!({"rule": f.rule, "severity": f.severity, "path": rel(&j.root, &f.path), "pid": f.pid, "comm": f.comm});
                let expected = |e: &Expected| json!({"rule": e.rule, "severity": e.severity.name(), "path": shown(&j.root, e), "pid": e.pid, "comm": e.comm});
                json!({
                    "program": r.name, "form": r.form, "seconds": r.seconds,
                    "auditor_complete": j.complete,
                    "true": c[0], "false": c[1], "missed": c[2], "wrong_path": c[3],
                    "false_high": o.false_high(), "undecided": o.undecided.len(),
                    "false_findings": o.false_.iter().map(|(f, note)| {
                        let mut v = finding(f);
                        v["truth"] = json!(note);
                        v
                    }).collect::<Vec<_>>(),
                    "missed_findings": o.missed.iter().map(expected).collect::<Vec<_>>(),
                    "wrong_path_findings": o.wrong_path.iter().map(|(f, e)| {
                        let mut v = finding(f);
                        v["truth_path"] = json!(shown(&j.root, e));
                        v
                    }).collect::<Vec<_>>(),
                })
            }
            Err(e) => json!({"program": r.name, "form": r.form, "seconds": r.seconds, "error": e}),
        };
        runs.push(entry);
    }
    let [t, f, m, w] = total;
    json!({
        "runs": runs,
        "total": {"true": t, "false": f, "missed": m, "wrong_path": w},
        "precision": ratio(t, t + f + w),
        "recall": ratio(t, t + m + w),
        "precision_mean_per_run": mean_precision(results),
    })
}
