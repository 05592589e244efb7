//! `auditor crashtest`: run a command on a scratch filesystem, cut the power
//! at chosen points (its exit, or right after a rename or fsync with the
//! process frozen there by the probes), recover, and check which files lost
//! what the program believed it had written. Each loss is linked to the
//! finding that predicted it, so findings are proven by a real crash, and
//! losses no finding predicted show where the analyzer is blind.

mod files;
mod freeze;
mod guardian;
mod leftovers;
mod scratch;
mod verdict;

use std::{os::fd::RawFd, path::Path};

use anyhow::{Context, Result};
use auditor_analyzer::{Config, Event, EventKind, Finding, calls, report::Report};

use crate::{
    capture::{launch, maps, probes::Needs, pump::monotonic_ns},
    cli::CrashtestArgs,
    error::UserError,
    output::Output,
    pipeline::{
        Outcome, Pipeline, Sink, Target, lock, options::analyzer_config, sinks::report_base,
    },
};
use files::Snapshot;
use scratch::Scratch;
use verdict::{Crash, Where};

/// The calls a crash point can follow; the numbers are the probes' codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Rename = 1,
    Fsync = 2,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Rename => "rename",
            Class::Fsync => "fsync",
        }
    }

    /// Whether the event is a successful call of this class, counted the
    /// way the probes count.
    fn matches(self, ev: &Event) -> bool {
        match (&ev.kind, self) {
            (EventKind::Rename { call, ret, .. }, Class::Rename) => *ret == 0 && call.is_rename(),
            (EventKind::Sync { call, ret, .. }, Class::Fsync) => *ret == 0 && call.is_fsync(),
            _ => false,
        }
    }
}

/// Where the power goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Point {
    /// Right after the last process of the command ended.
    Exit,
    /// Right after the `ordinal`-th (1-based) successful call of a class.
    After(Class, u64),
}

impl Point {
    pub fn describe(self) -> String {
        match self {
            Point::Exit => "exit".into(),
            Point::After(c, n) => format!("{} #{n}", c.name()),
        }
    }
}

/// What `--at` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Exit,
    Every(Class),
    Random(usize),
}

/// Most random crash points: each is a whole run of the command.
const MAX_POINTS: u64 = 100_000;

fn parse_at(s: &str) -> Result<At, UserError> {
    match s {
        "exit" => Ok(At::Exit),
        "renames" => Ok(At::Every(Class::Rename)),
        "fsyncs" => Ok(At::Every(Class::Fsync)),
        n if n.starts_with(|c: char| c.is_ascii_digit()) => crate::parse::count(n, MAX_POINTS)
            .map(|n| At::Random(n as usize))
            .map_err(|e| UserError::new(format!("--at {s}: {e}"))),
        _ => Err(UserError::new(format!(
            "--at {s}: expected exit, renames, fsyncs or a number of random points"
        ))),
    }
}

/// splitmix64: a seeded, reproducible choice of points needs no crate.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` distinct points among every rename and fsync, in run order per class.
fn choose(n: usize, renames: u64, fsyncs: u64, seed: u64) -> Vec<Point> {
    let mut all: Vec<Point> = (1..=renames)
        .map(|i| Point::After(Class::Rename, i))
        .chain((1..=fsyncs).map(|i| Point::After(Class::Fsync, i)))
        .collect();
    let mut state = seed;
    // Partial Fisher-Yates: the first n slots end up a uniform sample.
    let n = n.min(all.len());
    for i in 0..n {
        let j = i + (splitmix(&mut state) % (all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(n);
    all.sort();
    all
}

pub fn run(mut args: CrashtestArgs) -> Result<i32> {
    if args.report.baseline.is_some() || args.report.config.is_some() {
        return Err(UserError::new(
            "crashtest judges every finding: --baseline and --config apply to run, report and attach",
        )
        .into());
    }
    // Nor does the allow-list of the working directory.
    args.report.no_config = true;
    // Before any thread exists: the guardian is forked (and dropped last,
    // after the scratch state), then the mask every thread inherits.
    let guardian = guardian::Guardian::start()?;
    freeze::watch_interrupts();
    let at = parse_at(&args.at)?;
    let size = args.size;
    scratch::preflight(args.fs, size)?;
    let config = analyzer_config(&args.report)?;
    launch::resolve_program(&args.command[0])?;
    let out = Output::open(args.report.output.as_deref())?;
    // A crash at exit needs no crash point in the probes.
    let needs = Needs {
        crash_points: !matches!(at, At::Exit),
        ..Needs::default()
    };
    let mut pipeline = Pipeline::live_with(config.clone(), &args.capture, needs)?;
    if let Some(probes) = pipeline.probes_mut() {
        guardian.watch_traced(probes.traced_map_fd())?;
    }
    let mut scratch = Scratch::new(args.fs, size, args.keep)?;
    guardian.watch_dir(&scratch.dir, args.keep)?;
    // SAFETY: set while only the signal watcher runs, which reads no
    // environment; the traced command inherits it.
    unsafe { std::env::set_var("AUDITOR_CRASH_DIR", &scratch.mnt) };

    let result = run_points(&args, &config, at, &mut pipeline, &mut scratch);
    freeze::set_current_run(None);
    scratch.leave();
    if freeze::interrupted() {
        drop(scratch);
        eprintln!("auditor: interrupted; the scratch filesystem was unmounted and removed");
        return Ok(130);
    }
    let (reference, crashes, plan) = result?;
    drop(pipeline);
    if args.keep {
        for img in &scratch.kept {
            eprintln!("auditor: kept image {}", img.display());
        }
    }
    drop(scratch);
    verdict::finish(out, &args, reference, crashes, plan)
}

/// The reference analysis (a complete run) and every crash.
type Results = (Report, Vec<Crash>, verdict::Plan);

fn run_points(
    args: &CrashtestArgs,
    config: &Config,
    at: At,
    pipeline: &mut Pipeline,
    scratch: &mut Scratch,
) -> Result<Results> {
    let mut plan = verdict::Plan {
        fs: args.fs.name(),
        size: scratch.size,
        at: args.at.clone(),
        seed: None,
        renames: 0,
        fsyncs: 0,
    };
    let mut crashes = Vec::new();
    eprintln!("auditor: crashtest: the command runs once whole, to count its crash points");
    let mut reference = {
        scratch.fresh(0)?;
        let run = traced_run(args, config, pipeline, scratch, None)?;
        let findings = finish(pipeline);
        plan.renames = run.renames;
        plan.fsyncs = run.fsyncs;
        if !files::any_file(&scratch.mnt) {
            warn_nothing_on_scratch(&scratch.mnt, &findings);
        }
        if at == At::Exit {
            eprintln!("auditor: crash point 1/1: after the command's last process exited");
            let believed = files::snapshot(&scratch.mnt);
            scratch.power_cut()?;
            crashes.push(recover(scratch, Point::Exit, None, believed, findings)?);
        }
        run.report(pipeline)
    };
    let points: Vec<Point> = match at {
        At::Exit => Vec::new(),
        At::Every(Class::Rename) => (1..=plan.renames)
            .map(|i| Point::After(Class::Rename, i))
            .collect(),
        At::Every(Class::Fsync) => (1..=plan.fsyncs)
            .map(|i| Point::After(Class::Fsync, i))
            .collect(),
        At::Random(n) => {
            let seed = args.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
            eprintln!("auditor: crash points chosen with --seed {seed}");
            plan.seed = Some(seed);
            choose(n, plan.renames, plan.fsyncs, seed)
        }
    };
    if let At::Every(class) = at
        && points.is_empty()
    {
        eprintln!(
            "auditor: warning: --at {}s: the command made no successful {}, so there is no crash point (try --at exit)",
            class.name(),
            class.name()
        );
    }
    let total = points.len();
    for (i, point) in points.into_iter().enumerate() {
        if freeze::interrupted() {
            break;
        }
        let Point::After(class, ordinal) = point else {
            continue;
        };
        eprintln!(
            "auditor: crash point {}/{total}: after {} #{ordinal}",
            i + 1,
            class.name()
        );
        scratch.fresh(i + 1)?;
        let mut run = traced_run(args, config, pipeline, scratch, Some((class, ordinal)))?;
        if freeze::interrupted() {
            break;
        }
        let crash = match run.crash.take() {
            Some(c) => {
                if let Some(e) = c.error {
                    return Err(e);
                }
                let findings = finish(pipeline);
                recover(scratch, point, Some(c.at), c.believed, findings)?
            }
            // The command did fewer such calls this time: nothing to cut.
            None => Crash::not_reached(point),
        };
        crashes.push(crash);
    }
    reference.run.mode = "crashtest".into();
    Ok((reference, crashes, plan))
}

/// The command left no file on the scratch filesystem: what it wrote (if
/// anything) went elsewhere, where no crash is simulated.
fn warn_nothing_on_scratch(mnt: &Path, findings: &[Finding]) {
    let mut outside: Vec<&str> = findings
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| !Path::new(p).starts_with(mnt))
        .collect();
    outside.sort_unstable();
    outside.dedup();
    let examples = if outside.is_empty() {
        String::new()
    } else {
        let shown: Vec<String> = outside
            .iter()
            .take(3)
            .map(|p| auditor_analyzer::report::groups::escape(p).into_owned())
            .collect();
        format!(" (it wrote {} outside it)", shown.join(", "))
    };
    eprintln!(
        "auditor: warning: the command left no file on the scratch filesystem{examples}: only files under $AUDITOR_CRASH_DIR ({}) are crash-tested; write there, with relative paths from it or paths built from the variable",
        mnt.display()
    );
}

/// Unmounts the cut filesystem, mounts it again (log recovery) and judges
/// every believed file.
fn recover(
    scratch: &mut Scratch,
    point: Point,
    at: Option<Where>,
    believed: Snapshot,
    predictions: Vec<Finding>,
) -> Result<Crash> {
    scratch.unmount()?;
    scratch.mount()?;
    let compared = believed
        .into_iter()
        .map(|(path, b)| {
            let after = files::recovered(&path);
            let outcome = files::judge(&b, after.as_ref());
            verdict::Compared {
                path: path.display().to_string(),
                believed: b,
                after,
                outcome,
            }
        })
        .collect();
    scratch.unmount()?;
    Ok(Crash {
        point,
        reached: true,
        at,
        files: compared,
        predictions,
        links: Vec::new(),
    })
}

/// What happened at a crash point inside a traced run.
struct CutState {
    at: Where,
    believed: Snapshot,
    /// Events from before this moment still belong to the analysis.
    cut_ns: u64,
    error: Option<anyhow::Error>,
}

struct TracedRun {
    outcome: Outcome,
    renames: u64,
    fsyncs: u64,
    crash: Option<CutState>,
}

impl TracedRun {
    fn report(self, pipeline: &Pipeline) -> Report {
        let mut info = self.outcome.run;
        info.mode = "crashtest".into();
        let analyzer = lock(pipeline.analyzer());
        info.base = analyzer.launched_cwd().map(report_base);
        Report::new(&analyzer, info)
    }
}

/// The end-of-run verdicts of the last traced run, and all its findings.
fn finish(pipeline: &Pipeline) -> Vec<Finding> {
    let mut analyzer = lock(pipeline.analyzer());
    analyzer.finish();
    analyzer.findings().to_vec()
}

/// Counts the calls a crash point can follow and, at the armed one, cuts
/// the power; what happened after the cut is not analyzed.
struct Cutter<'a> {
    arm: Option<(Class, u64)>,
    crash_fd: RawFd,
    traced_fd: RawFd,
    scratch: &'a Scratch,
    renames: u64,
    fsyncs: u64,
    crash: Option<CutState>,
}

impl Sink for Cutter<'_> {
    fn at_risk(&self) -> bool {
        false
    }

    fn admit(&mut self, ev: &Event) -> bool {
        self.crash.as_ref().is_none_or(|c| ev.ts_ns < c.cut_ns)
    }

    fn event(&mut self, ev: &Event, _found: &[Finding]) -> Result<()> {
        if self.crash.is_some() {
            return Ok(());
        }
        self.renames += u64::from(Class::Rename.matches(ev));
        self.fsyncs += u64::from(Class::Fsync.matches(ev));
        if let Some((c, _)) = self.arm
            && c.matches(ev)
            && maps::read_slot(self.crash_fd, 3) == Some(ev.seq + 1)
        {
            self.crash = Some(cut(ev, self.scratch, self.traced_fd));
        }
        Ok(())
    }
}

/// Runs the command once on the mounted scratch filesystem, with a fresh
/// analyzer. With a crash point armed, the probes freeze the process at
/// that call; then every other traced process is stopped, the live files
/// are read (what the program believes it wrote), the power is cut and
/// everything is killed.
fn traced_run(
    args: &CrashtestArgs,
    config: &Config,
    pipeline: &mut Pipeline,
    scratch: &Scratch,
    arm: Option<(Class, u64)>,
) -> Result<TracedRun> {
    pipeline.reset(config.clone())?;
    let probes = pipeline
        .probes_mut()
        .context("crashtest needs the probes")?;
    let (class, ordinal) = arm.map_or((0, 0), |(c, n)| (c as u64, n));
    let crash_fd = probes.arm_crash(class, ordinal)?;
    let traced_fd = probes.traced_map_fd();
    freeze::set_current_run(Some(traced_fd));
    scratch.enter()?;
    let mut sink = Cutter {
        arm,
        crash_fd,
        traced_fd,
        scratch,
        renames: 0,
        fsyncs: 0,
        crash: None,
    };
    let outcome = pipeline.run(Target::Launch(args.command.clone()), &mut sink);
    scratch.leave();
    freeze::set_current_run(None);
    // Disarm, so a later run cannot stop at a stale point.
    if let Some(probes) = pipeline.probes_mut() {
        probes.arm_crash(0, 0)?;
    }
    Ok(TracedRun {
        outcome: outcome?,
        renames: sink.renames,
        fsyncs: sink.fsyncs,
        crash: sink.crash,
    })
}

/// The crash itself, at the record of the frozen call. Never fails the
/// capture: a traced run must always be able to end, so an error is kept
/// for later and the processes are killed regardless.
fn cut(ev: &Event, scratch: &Scratch, traced_fd: RawFd) -> CutState {
    freeze::stop_all(traced_fd);
    let path = match &ev.kind {
        EventKind::Rename { new_path, .. } => Some(absolute(new_path, &scratch.mnt)),
        EventKind::Sync { fd: Some(fd), .. } => {
            std::fs::read_link(format!("/proc/{}/fd/{fd}", ev.pid))
                .ok()
                .map(|p| p.display().to_string())
        }
        _ => None,
    };
    let at = Where {
        call: calls::describe(ev),
        path,
        pid: ev.pid,
        tid: ev.tid,
        seq: ev.seq,
    };
    let believed = files::snapshot(&scratch.mnt);
    let cut_ns = monotonic_ns();
    let error = scratch.power_cut().err();
    freeze::kill_all(traced_fd);
    CutState {
        at,
        believed,
        cut_ns,
        error,
    }
}

fn absolute(p: &str, base: &Path) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        base.join(p).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_parses_modes_and_counts() {
        assert_eq!(parse_at("exit").unwrap(), At::Exit);
        assert_eq!(parse_at("renames").unwrap(), At::Every(Class::Rename));
        assert_eq!(parse_at("fsyncs").unwrap(), At::Every(Class::Fsync));
        assert_eq!(parse_at("3").unwrap(), At::Random(3));
        assert!(parse_at("0").is_err());
        assert!(parse_at("99999999999999999999999").is_err());
        assert!(parse_at("sometimes").is_err());
    }

    #[test]
    fn random_points_are_distinct_seeded_and_bounded() {
        let a = choose(3, 4, 5, 42);
        assert_eq!(a, choose(3, 4, 5, 42), "same seed, same points");
        assert_eq!(a.len(), 3);
        let mut d = a.clone();
        d.dedup();
        assert_eq!(d.len(), 3, "distinct: {a:?}");
        assert!(a.iter().all(|p| match p {
            Point::After(Class::Rename, n) => (1..=4).contains(n),
            Point::After(Class::Fsync, n) => (1..=5).contains(n),
            Point::Exit => false,
        }));
        assert_eq!(choose(50, 2, 1, 7).len(), 3, "never more than exist");
        let seeds: std::collections::BTreeSet<Vec<Point>> =
            (0..20).map(|s| choose(2, 4, 5, s)).collect();
        assert!(seeds.len() > 1, "the seed matters");
    }
}
