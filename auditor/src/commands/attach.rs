//! `auditor attach`: watch processes that are already running (by pid, name
//! or cgroup), and those that start later under a watched name or cgroup
//! with `--follow-new`, until `--duration` ends or SIGINT/SIGTERM; then
//! detach and report.
//!
//! What a process wrote before the attach is unknown: its open files are
//! read from /proc (identity, flags, position) so later calls on them are
//! understood, but no verdict rests on data the trace did not see written.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicI32, Ordering},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use auditor_analyzer::{
    Analyzer,
    event::{Event, EventKind},
    finding::Finding,
    report::{Report, jsonl_finding_line, jsonl_summary_line},
    snapshot::ProcessState,
};
use serde_json::{Value, json};

use super::{analyzer_config, rfc3339, run_info, use_color};
use crate::{
    attach::{
        cgroup,
        lives::Lives,
        metrics::{self, Sample, Server},
        procfs::{ProcFs, ProcInfo},
        release_freed_memory,
        targets::{Selectors, comm_key},
    },
    capture::{
        enrich,
        launch::{Pump, monotonic_ns, wait_readable},
        probes::Probes,
    },
    cli::{AttachArgs, Format},
    commands::run::ring_bytes,
    error::UserError,
    output::Output,
    tui::{self, Capture, Live, Stop, require_terminal},
};

/// How often the metrics page is re-rendered.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// How often `--format jsonl` writes a stats line.
const STATS_EVERY: Duration = Duration::from_secs(10);

static INTERRUPTS: AtomicI32 = AtomicI32::new(0);

/// The first SIGINT/SIGTERM asks for a clean stop (detach, report); a
/// second one exits at once. Exiting closes every probe link fd, so the
/// kernel detaches the probes either way.
extern "C" fn on_signal(_sig: libc::c_int) {
    if INTERRUPTS.fetch_add(1, Ordering::Relaxed) >= 1 {
        let msg = b"auditor: interrupted again: stopped without a report (probes detached)\n";
        crate::output::remove_temp_files();
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(2);
        }
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic, write and _exit.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn run(args: AttachArgs) -> Result<i32> {
    if args.tui {
        require_terminal()?;
    }
    let mut config = analyzer_config(&args.report)?;
    config.max_files = args.max_files;
    config.max_processes = args.max_processes;
    let mut analyzer = Analyzer::new(config).map_err(|e| UserError::new(format!("{e:#}")))?;
    analyzer.set_enricher(Box::new(enrich::enrich));
    if args.tui {
        return run_tui(args, analyzer);
    }
    let format = args.report.format();
    let deadline = args.duration;
    let metrics = args.metrics_addr.as_deref().map(Server::bind).transpose()?;
    let Targets {
        selectors,
        proc,
        me,
        found,
    } = targets(&args)?;
    // A jsonl file is a log that pipelines follow while it grows; every
    // other output appears whole when the attach ends.
    let mut out = match (&args.report.output, format) {
        (Some(path), Format::Jsonl) => Output::open_log(path)?,
        (path, _) => Output::open(path.as_deref())?,
    };
    if let Some(m) = &metrics {
        eprintln!("auditor: metrics at http://{}/metrics", m.addr);
    }
    let mut probes = Probes::load(ring_bytes(args.capture.ring_mb)?)?;
    install_signal_handlers();
    let started = SystemTime::now();
    let t0 = Instant::now();
    if args.follow_new {
        for c in &selectors.comms {
            probes.watch_comm(comm_key(c))?;
        }
        for c in &selectors.cgroups {
            probes.watch_cgroup(c.id)?;
        }
    }

    let mut lives = Lives::new(proc.clone());
    let mut counts = Counts::default();

    // Trace first, then read /proc: a call made in between is seen twice at
    // worst (once as state found, once as an event), never missed. A second
    // pass picks up children forked before their parent was traced.
    let mut seeded = std::collections::BTreeSet::new();
    for pass in [found, selectors.discover(&proc, me).unwrap_or_default()] {
        let fresh: Vec<ProcInfo> = pass.into_iter().filter(|i| seeded.insert(i.pid)).collect();
        for info in &fresh {
            probes.trace_pid(info.pid)?;
        }
        for info in &fresh {
            lives.attached(info);
            for ev in state_at_attach(&proc, info) {
                analyze(ev, &mut analyzer, &mut counts, &mut out, format)?;
            }
        }
    }
    if !seeded.is_empty() {
        eprintln!(
            "auditor: attached to {} processes; stop with Ctrl-C or SIGTERM",
            seeded.len()
        );
    } else {
        eprintln!(
            "auditor: no process matches {} yet; waiting for one to start (--follow-new)",
            describe(&args).join(" ")
        );
    }

    let mut pump = Pump::new();
    let mut last_metrics = Instant::now() - METRICS_EVERY;
    let mut last_stats = Instant::now();
    let mut trimmed_after = analyzer.sweeps();
    loop {
        let mut sink = |ev: Event| -> Result<()> {
            if let Some(intro) = lives.observe(&ev) {
                analyze(intro, &mut analyzer, &mut counts, &mut out, format)?;
            }
            analyze(ev, &mut analyzer, &mut counts, &mut out, format)
        };
        pump.flush_runs(&probes, false)?;
        let more = pump.drain(&mut probes, &mut sink)?;
        pump.check_drops(&probes, &mut sink, false)?;
        if analyzer.sweeps() != trimmed_after {
            trimmed_after = analyzer.sweeps();
            release_freed_memory();
        }
        if metrics.is_some() && last_metrics.elapsed() >= METRICS_EVERY {
            last_metrics = Instant::now();
            let s = sample(&analyzer, &probes, &counts, &lives, t0);
            if let Some(m) = &metrics {
                m.publish(metrics::render(&s));
            }
        }
        if format == Format::Jsonl && last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            let s = sample(&analyzer, &probes, &counts, &lives, t0);
            out.write_chunk(format!("{}\n", stats_line(&s)).as_bytes())?;
            out.checkpoint()?;
        }
        if more {
            continue;
        }
        let stop = INTERRUPTS.load(Ordering::Relaxed) > 0
            || deadline.is_some_and(|d| t0.elapsed() >= d)
            || (!args.follow_new && lives.live_count() == 0);
        if stop {
            break;
        }
        wait_readable(&probes.ring, Duration::from_millis(50));
    }
    // What is still in the ring happened before the stop: take it, then
    // detach before the report is written.
    {
        let mut sink = |ev: Event| -> Result<()> {
            if let Some(intro) = lives.observe(&ev) {
                analyze(intro, &mut analyzer, &mut counts, &mut out, format)?;
            }
            analyze(ev, &mut analyzer, &mut counts, &mut out, format)
        };
        pump.flush_runs(&probes, true)?;
        while pump.drain(&mut probes, &mut sink)? {}
        pump.check_drops(&probes, &mut sink, true)?;
    }
    let kernel = probes.kernel_stats();
    let records = pump.decoder.stats.records;
    drop(probes);

    let tail = analyzer.finish();
    emit(&mut out, &mut counts, format, tail)?;
    let mut info = run_info("attach", &describe(&args));
    info.started_at = rfc3339(started);
    info.ended_at = rfc3339(SystemTime::now());
    info.dropped = kernel.lost();
    info.events = records;
    let report = Report::new(&analyzer, info);
    let color = use_color(&out);
    match format {
        Format::Text => {
            let mut text = report.render_text(color);
            text.push_str(&lives.render_text());
            out.write_chunk(text.as_bytes())?
        }
        Format::Json => {
            let mut doc = report.to_json();
            if let Some(m) = doc.as_object_mut() {
                m.insert("processes".into(), lives.to_json());
            }
            let mut bytes = serde_json::to_vec_pretty(&doc)?;
            bytes.push(b'\n');
            out.write_chunk(&bytes)?
        }
        Format::Jsonl => {
            let mut v: Value = serde_json::from_str(&jsonl_summary_line(&report))?;
            if let Some(m) = v.as_object_mut() {
                m.insert("processes".into(), lives.to_json());
            }
            out.write_chunk(format!("{v}\n").as_bytes())?
        }
    }
    out.commit()
        .map_err(|e| UserError::new(format!("cannot write the report: {e}")))?;
    Ok(report.exit_code(analyzer.config().fail_on))
}

/// `attach --tui`: the same discovery, seeding and capture loop, with the
/// live view of `run --tui` drawing while it runs. Quitting (or SIGINT,
/// SIGTERM, `--duration`) stops the capture; the report goes to --output.
fn run_tui(args: AttachArgs, analyzer: Analyzer) -> Result<i32> {
    let deadline = args.duration;
    let Targets {
        selectors,
        proc,
        me,
        found,
    } = targets(&args)?;
    let out = Output::open(args.report.output.as_deref())?;
    let mut probes = Probes::load(ring_bytes(args.capture.ring_mb)?)?;
    install_signal_handlers();
    if args.follow_new {
        for c in &selectors.comms {
            probes.watch_comm(comm_key(c))?;
        }
        for c in &selectors.cgroups {
            probes.watch_cgroup(c.id)?;
        }
    }
    let mut info = run_info("attach", &describe(&args));
    info.started_at = rfc3339(SystemTime::now());
    let follow_new = args.follow_new;
    let capture: Capture = {
        let mut info = info.clone();
        Box::new(move |sink| {
            let t0 = Instant::now();
            let mut lives = Lives::new(proc.clone());
            let mut seeded = std::collections::BTreeSet::new();
            for pass in [found, selectors.discover(&proc, me).unwrap_or_default()] {
                let fresh: Vec<ProcInfo> =
                    pass.into_iter().filter(|i| seeded.insert(i.pid)).collect();
                for i in &fresh {
                    probes.trace_pid(i.pid)?;
                }
                for i in &fresh {
                    lives.attached(i);
                    for ev in state_at_attach(&proc, i) {
                        sink(ev)?;
                    }
                }
            }
            let mut pump = Pump::new();
            let mut feed = |ev: Event| -> Result<()> {
                if let Some(intro) = lives.observe(&ev) {
                    sink(intro)?;
                }
                sink(ev)
            };
            loop {
                pump.flush_runs(&probes, false)?;
                let more = pump.drain(&mut probes, &mut feed)?;
                pump.check_drops(&probes, &mut feed, false)?;
                if more {
                    continue;
                }
                if INTERRUPTS.load(Ordering::Relaxed) > 0
                    || deadline.is_some_and(|d| t0.elapsed() >= d)
                {
                    break;
                }
                wait_readable(&probes.ring, Duration::from_millis(50));
            }
            pump.flush_runs(&probes, true)?;
            while pump.drain(&mut probes, &mut feed)? {}
            pump.check_drops(&probes, &mut feed, true)?;
            info.ended_at = rfc3339(SystemTime::now());
            info.dropped = probes.kernel_stats().lost();
            info.events = pump.decoder.stats.records;
            Ok(info)
        })
    };
    // Attached processes are not ours to stop: quitting only ends the capture.
    let stop: Stop = Box::new(|| {
        INTERRUPTS.fetch_max(1, Ordering::Relaxed);
    });
    let (command_log, _) = tui::command_log(None);
    let live = Live {
        target: if follow_new {
            format!("{} (and new ones)", describe(&args).join(" "))
        } else {
            describe(&args).join(" ")
        },
        info,
        report: args.report,
        out,
        command_log,
    };
    tui::run_live(analyzer, live, capture, stop)
}

/// `--pid`, `--comm` and `--cgroup` as given, for messages and the report.
fn describe(args: &AttachArgs) -> Vec<String> {
    let mut v = Vec::new();
    for p in &args.pid {
        v.push(format!("--pid {p}"));
    }
    for c in &args.comm {
        v.push(format!("--comm {c}"));
    }
    for c in &args.cgroup {
        v.push(format!("--cgroup {c}"));
    }
    v
}

/// What to attach to, and what matched it now.
struct Targets {
    selectors: Selectors,
    proc: ProcFs,
    /// Our own pid, never a target.
    me: u32,
    found: Vec<ProcInfo>,
}

/// Discovers the targets; nothing matching is an error unless
/// `--follow-new` can wait for a name or cgroup to appear.
fn targets(args: &AttachArgs) -> Result<Targets, UserError> {
    let selectors = selectors(args)?;
    let proc = ProcFs::default();
    let me = std::process::id();
    let found = selectors.discover(&proc, me)?;
    let can_wait = args.follow_new && !(selectors.comms.is_empty() && selectors.cgroups.is_empty());
    if found.is_empty() && !can_wait {
        return Err(UserError::new(format!(
            "no running process matches {} (add --follow-new to wait for one)",
            describe(args).join(" ")
        )));
    }
    Ok(Targets {
        selectors,
        proc,
        me,
        found,
    })
}

fn selectors(args: &AttachArgs) -> Result<Selectors, UserError> {
    let mut cgroups = Vec::new();
    if !args.cgroup.is_empty() {
        let root = cgroup::unified_root().ok_or_else(|| {
            UserError::new("--cgroup needs the cgroup v2 hierarchy, and none is mounted")
        })?;
        for c in &args.cgroup {
            cgroups.push(cgroup::resolve(c, &root)?);
        }
    }
    for c in &args.comm {
        if c.is_empty() || c.contains('/') {
            return Err(UserError::new(format!(
                "--comm {c:?}: give a process name as `ps -o comm` shows it"
            )));
        }
    }
    Ok(Selectors {
        pids: args.pid.clone(),
        comms: args.comm.clone(),
        cgroups,
    })
}

/// The synthetic events that tell the analyzer what a process already was
/// and held when the attach found it. An unreadable fd table is one line on
/// stderr: later calls on those fds are still judged from the kernel's file
/// identity.
fn state_at_attach(proc: &ProcFs, info: &ProcInfo) -> Vec<Event> {
    let (cwd, exe, argv) = proc.cwd_exe_argv(info.pid);
    let base = |kind| Event {
        seq: 0,
        ts_ns: monotonic_ns(),
        pid: info.pid,
        tid: info.pid,
        comm: info.comm.clone(),
        kind,
    };
    let mut evs = vec![base(EventKind::ProcessStart {
        cwd,
        exe,
        argv,
        ppid: info.ppid,
        launched: false,
    })];
    match proc.open_files(info.pid) {
        Ok(fds) => evs.extend(fds.into_iter().map(|o| {
            base(EventKind::FdAtStart {
                fd: o.fd,
                path: o.path,
                cloexec: o.flags & libc::O_CLOEXEC as u32 != 0,
                file: o.info,
                // Standard output and error at attach are the process's
                // log, set up by whoever started it: not its data.
                from_caller: o.fd == 1 || o.fd == 2,
            })
        })),
        Err(e) => eprintln!(
            "auditor: cannot read /proc/{}/fd ({e}): files {} had open before the attach are unknown",
            info.pid, info.pid
        ),
    }
    evs
}

/// Counters kept as the stream passes, for metrics and stats lines.
/// Counts an event and feeds it to the analyzer, writing what it finds.
fn analyze(
    mut ev: Event,
    analyzer: &mut Analyzer,
    counts: &mut Counts,
    out: &mut Output,
    format: Format,
) -> Result<()> {
    counts.kind(&ev.kind);
    let found = analyzer.process(&mut ev);
    emit(out, counts, format, found)?;
    Ok(())
}

/// Counts findings; in JSON Lines they are written as they come.
fn emit(
    out: &mut Output,
    counts: &mut Counts,
    format: Format,
    found: Vec<Finding>,
) -> std::io::Result<()> {
    counts.add(&found);
    if format == Format::Jsonl {
        for f in &found {
            out.write_chunk(format!("{}\n", jsonl_finding_line(f)).as_bytes())?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    events: BTreeMap<&'static str, u64>,
    findings: BTreeMap<(String, String), u64>,
    inconclusive: u64,
}

impl Counts {
    fn kind(&mut self, k: &EventKind) {
        *self.events.entry(metrics::kind_name(k)).or_default() += 1;
    }

    fn add(&mut self, found: &[Finding]) {
        for f in found {
            *self
                .findings
                .entry((f.rule.clone(), f.severity.to_string()))
                .or_default() += 1;
            self.inconclusive += f.inconclusive as u64;
        }
    }
}

fn sample(analyzer: &Analyzer, probes: &Probes, c: &Counts, lives: &Lives, t0: Instant) -> Sample {
    let snap = analyzer.snapshot(monotonic_ns());
    let k = probes.kernel_stats();
    Sample {
        events_by_kind: c.events.clone(),
        dropped_ring_full: k.dropped,
        dropped_args_table_full: k.args_full,
        untraced_table_full: k.traced_full,
        findings: c.findings.clone(),
        inconclusive_findings: c.inconclusive,
        processes_live: lives.live_count(),
        files_tracked: snap.stats.files_tracked,
        evicted_inodes: snap.stats.evicted_inodes,
        evicted_dirty: snap.stats.evicted_dirty,
        tracked_inodes: snap.stats.tracked_inodes,
        unsynced: snap
            .processes
            .iter()
            .filter(|p| p.state == ProcessState::Running && p.unsynced_bytes > 0)
            .map(|p| (p.pid, p.comm.clone(), p.unsynced_bytes))
            .collect(),
        oldest_unsynced_age_s: snap
            .files
            .iter()
            .filter_map(|f| f.unsynced_age_ns)
            .max()
            .map(|ns| ns as f64 / 1e9),
        uptime_s: t0.elapsed().as_secs_f64(),
    }
}

/// The periodic `{"type":"stats"}` line of `--format jsonl`.
fn stats_line(s: &Sample) -> Value {
    json!({
        "type": "stats",
        "at": auditor_analyzer::now_rfc3339(),
        "uptime_s": (s.uptime_s * 10.0).round() / 10.0,
        "events": s.events_by_kind.values().sum::<u64>(),
        "dropped": s.dropped_ring_full + s.dropped_args_table_full,
        "findings": s.findings.values().sum::<u64>(),
        "processes_live": s.processes_live,
        "files_tracked": s.files_tracked,
        "evicted_inodes": s.evicted_inodes,
        "evicted_dirty": s.evicted_dirty,
        "tracked_inodes": s.tracked_inodes,
        "unsynced_bytes": s.unsynced.iter().map(|u| u.2).sum::<u64>(),
    })
}
