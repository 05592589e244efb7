//! One run pipeline under every command: the analyzer (with what only the
//! live system can add to events), the probes, one capture loop over a
//! launched command, attached processes or a recording, and one outcome
//! every sink reads. Commands parse their arguments, call this, and choose
//! where events and the report go; the live view and crashtest drive the
//! same loop.

mod attached;
pub mod options;
pub mod signals;
pub mod sinks;

pub use attached::AttachPlan;
pub use sinks::{Pulse, Sink};

use std::{
    os::fd::BorrowedFd,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use auditor_analyzer::{
    Analyzer, Config, Event, RunInfo,
    calls::plural,
    recording::{RecordingReader, TruncatedAt},
};

use crate::{
    attach::{lives::Lives, release_freed_memory},
    capture::{
        decode::DecodeStats,
        enrich,
        launch::Launched,
        probes::{KernelStats, Needs, Probes},
        procfs::ProcFs,
        pump::{self, Pump, wait_readable},
        stacks::Stacks,
        views::Views,
    },
    cli::CaptureOptions,
    error::UserError,
    timings,
};
use options::{rfc3339, ring_bytes, run_info};

/// The analyzer as the capture and a live view share it: the capture holds
/// the lock for one event at a time, the view for one snapshot.
pub type Shared = Arc<Mutex<Analyzer>>;

/// The shared analyzer, even if a panicking holder poisoned the lock (its
/// state is still the best account of the run there is).
pub fn lock(a: &Shared) -> MutexGuard<'_, Analyzer> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a run captures.
pub enum Target {
    /// Launch this command and follow it and all its descendants.
    Launch(Vec<String>),
    /// Follow processes already running (and, with `--follow-new`, those
    /// that start later).
    Attach(AttachPlan),
    /// Replay a recording made by `auditor record`.
    /// Read as it is analyzed: a recording of 50,000 files holds some
    /// 150,000 events, which need not all be in memory at once.
    Recording(Box<RecordingReader<std::io::BufReader<std::fs::File>>>),
}

/// What a finished run produced besides its findings: the run facts the
/// report starts with, and under attach the lives of the processes seen.
pub struct Outcome {
    pub run: RunInfo,
    pub lives: Option<Lives>,
    /// A second interrupt ended the run before the launched command did:
    /// the report covers what was seen until then.
    pub left_running: bool,
    /// Where a replayed recording was cut short, once it was read.
    pub truncated_at: Option<TruncatedAt>,
}

/// The exit code of a run reported before its command ended (a second
/// Ctrl-C): 128 + SIGINT, as a shell reports an interrupted command.
pub const INTERRUPTED: i32 = 128 + libc::SIGINT;

/// The analyzer and, for live runs, the probes.
pub struct Pipeline {
    analyzer: Shared,
    probes: Option<Probes>,
}

impl Pipeline {
    /// Loads the probes and builds the analyzer with the live enricher.
    pub fn live(config: Config, capture: &CaptureOptions) -> Result<Pipeline> {
        Pipeline::live_with(config, capture, Needs::default())
    }

    /// [`Pipeline::live`] with what a mode needs beyond the common probes.
    pub fn live_with(config: Config, capture: &CaptureOptions, needs: Needs) -> Result<Pipeline> {
        let ring = ring_bytes(capture)?;
        let needs = Needs {
            stacks: !capture.no_stacks,
            ..needs
        };
        Ok(Pipeline {
            analyzer: Arc::new(Mutex::new(new_analyzer(config, true)?)),
            probes: Some(Probes::load(ring, needs)?),
        })
    }

    /// An analyzer without probes, for recordings (they already carry what
    /// the enricher would add).
    pub fn replay(config: Config) -> Result<Pipeline> {
        Ok(Pipeline {
            analyzer: Arc::new(Mutex::new(new_analyzer(config, false)?)),
            probes: None,
        })
    }

    /// The analyzer, to share with a live view or read once the run ended.
    pub fn analyzer(&self) -> &Shared {
        &self.analyzer
    }

    /// Starts over with a fresh analyzer (crashtest runs a command many
    /// times under the same probes).
    pub fn reset(&mut self, config: Config) -> Result<()> {
        *lock(&self.analyzer) = new_analyzer(config, self.probes.is_some())?;
        Ok(())
    }

    /// The probes of a live pipeline (crashtest arms its crash points
    /// through them).
    pub fn probes_mut(&mut self) -> Option<&mut Probes> {
        self.probes.as_mut()
    }

    /// The probes' map of traced tgids, while the probes are loaded.
    pub fn traced_map(&self) -> Option<BorrowedFd<'_>> {
        self.probes.as_ref().map(|p| {
            // SAFETY: the fd belongs to the probes, which the borrow keeps
            // alive.
            unsafe { BorrowedFd::borrow_raw(p.traced_map_fd()) }
        })
    }

    /// Detaches the probes (dropping them detaches everything), so the
    /// report is written with nothing of ours left in the kernel.
    pub fn take_probes(&mut self) -> Option<Probes> {
        self.probes.take()
    }

    /// Captures `target` to its end, handing every event to the analyzer
    /// and then to `sink`.
    pub fn run(&mut self, target: Target, sink: &mut dyn Sink) -> Result<Outcome> {
        match target {
            Target::Recording(rec) => self.replay_recording(rec, sink),
            Target::Launch(argv) => self.launch(&argv, sink),
            Target::Attach(plan) => self.attach(plan, sink),
        }
    }

    fn launch(&mut self, argv: &[String], sink: &mut dyn Sink) -> Result<Outcome> {
        let probes = self.probes.as_mut().expect("a live pipeline has probes");
        let started = SystemTime::now();
        signals::install(signals::Policy::Launch);
        let t = Instant::now();
        let (launched, at_start) = Launched::spawn(probes, argv)?;
        let views = Views::new(ProcFs::default());
        let mut feed = Feed::new(&self.analyzer, sink, None, Some(views));
        for ev in at_start {
            feed.event(ev)?;
        }
        let t = timings::since("launch", t);
        let (kernel, decode) = capture(probes, &mut feed, Some(launched.done_fd()), |_| {
            launched.finished() || signals::interrupted_again()
        })?;
        timings::since("command and capture", t);
        let mut run = captured(run_info("run", argv), started, &kernel, &decode);
        let left_running = !launched.finished();
        run.exit_status = if left_running {
            launched.leave()
        } else {
            launched.wait()
        };
        Ok(Outcome {
            run,
            lives: None,
            left_running,
            truncated_at: None,
        })
    }

    fn attach(&mut self, plan: AttachPlan, sink: &mut dyn Sink) -> Result<Outcome> {
        let probes = self.probes.as_mut().expect("a live pipeline has probes");
        let started = SystemTime::now();
        let t0 = Instant::now();
        signals::install(signals::Policy::Attach);
        let mut lives = Lives::new(plan.proc.clone());
        let mut views = Views::new(plan.proc.clone());
        let at_start = plan.seed(probes, &mut lives, &mut views)?;
        let mut feed = Feed::new(&self.analyzer, sink, Some(lives), Some(views));
        let seeded = at_start.processes;
        for ev in at_start.events {
            feed.event(ev)?;
        }
        feed.sink.note(&if seeded > 0 {
            format!(
                "attached to {}; stop with Ctrl-C or SIGTERM",
                plural(seeded as u64, "process")
            )
        } else {
            format!(
                "no process matches {} yet; waiting for one to start (--follow-new)",
                plan.describe.join(" ")
            )
        });
        let (kernel, decode) = capture(probes, &mut feed, None, |feed| {
            signals::stop_requested()
                || plan.deadline.is_some_and(|d| t0.elapsed() >= d)
                // Nothing left to watch.
                || (!plan.follow_new && feed.lives.as_ref().is_some_and(|l| l.live_count() == 0))
        })?;
        let run = captured(
            run_info("attach", &plan.describe),
            started,
            &kernel,
            &decode,
        );
        Ok(Outcome {
            run,
            lives: feed.lives,
            left_running: false,
            truncated_at: None,
        })
    }

    fn replay_recording(
        &mut self,
        mut rec: Box<RecordingReader<std::io::BufReader<std::fs::File>>>,
        sink: &mut dyn Sink,
    ) -> Result<Outcome> {
        let mut run = run_info("report", &rec.header().command);
        run.started_at = rec.header().started_at.clone();
        let mut feed = Feed::new(&self.analyzer, sink, None, None);
        while let Some(ev) = rec
            .next_event()
            .map_err(|e| UserError::new(format!("{e:#}")))?
        {
            feed.event(ev)?;
        }
        // Known once the reading reached the end.
        let truncated_at = rec.truncated_at();
        run.truncated_at_byte = truncated_at.map(|t| t.byte_offset);
        if let Some(tr) = rec.trailer() {
            run.ended_at = tr.ended_at.clone();
            run.exit_status = tr.exit_status;
            run.dropped = tr.dropped;
            run.events = tr.events;
        }
        Ok(Outcome {
            run,
            lives: None,
            left_running: false,
            truncated_at,
        })
    }
}

/// The analyzer with the enricher: a `live` one also reads what only the
/// live system can (disk image headers).
/// A live capture's run facts: when it ran, what it got and lost.
fn captured(
    mut run: RunInfo,
    started: SystemTime,
    kernel: &KernelStats,
    decode: &DecodeStats,
) -> RunInfo {
    run.started_at = rfc3339(started);
    run.ended_at = rfc3339(SystemTime::now());
    run.dropped = pump::dropped(kernel, decode);
    run.stacks_lost = kernel.stacks_lost;
    run.stacks_reused = kernel.stacks_reused;
    run.events = decode.records;
    run
}

fn new_analyzer(config: Config, live: bool) -> Result<Analyzer> {
    let mut analyzer = Analyzer::new(config)?;
    let mut enricher = if live {
        enrich::Enricher::live()
    } else {
        enrich::Enricher::replay()
    };
    analyzer.set_enricher(Box::new(move |ev| enricher.enrich(ev)));
    Ok(analyzer)
}

/// The one capture loop: rounds of the pump until `finished` says the
/// target is done and the ring is empty; the sink's pulse after each round.
fn capture(
    probes: &mut Probes,
    feed: &mut Feed<'_>,
    wake: Option<std::os::fd::RawFd>,
    mut finished: impl FnMut(&Feed<'_>) -> bool,
) -> Result<(KernelStats, DecodeStats)> {
    let mut pump = Pump::default();
    if probes.stacks() {
        let mut stacks = Stacks::new(Some(probes.stack_sigs_fd()));
        for pid in feed.lives.iter().flat_map(|l| l.live_pids()) {
            stacks.prime(pid);
        }
        pump.decoder.stacks = Some(stacks);
    }
    let mut sweeps = lock(feed.analyzer).sweeps();
    let t0 = Instant::now();
    let mut ended: Option<Instant> = None;
    loop {
        let done = finished(feed);
        if done && ended.is_none() {
            ended = Some(Instant::now());
        }
        let more = pump.round(probes, &mut |ev| feed.event(ev), done)?;
        {
            let analyzer = lock(feed.analyzer);
            if analyzer.sweeps() != sweeps {
                // Long attaches make and drop file states by the thousand:
                // hand what an eviction pass freed back to the system.
                sweeps = analyzer.sweeps();
                release_freed_memory();
            }
            feed.sink.pulse(&Pulse {
                analyzer: &analyzer,
                kernel: probes.kernel_stats(),
                lives: feed.lives.as_ref(),
                uptime: t0.elapsed(),
            })?;
        }
        if more {
            continue;
        }
        if done {
            break;
        }
        wait_readable(&probes.ring, wake, Duration::from_millis(50));
    }
    if let Some(t) = ended {
        // What the report waits for once the traced processes are gone.
        timings::since("drain after the end", t);
    }
    Ok((probes.kernel_stats(), pump.decoder.stats))
}

/// Events on their way: the lives of attached processes first (a process
/// first seen at exec is introduced before its exec), then where live
/// processes' paths lie on the host (views read from /proc around execs
/// and setns), then the analyzer, then the sink.
struct Feed<'a> {
    analyzer: &'a Shared,
    sink: &'a mut dyn Sink,
    lives: Option<Lives>,
    views: Option<Views>,
}

impl<'a> Feed<'a> {
    fn new(
        analyzer: &'a Shared,
        sink: &'a mut dyn Sink,
        lives: Option<Lives>,
        views: Option<Views>,
    ) -> Self {
        lock(analyzer).set_at_risk(sink.at_risk());
        Feed {
            analyzer,
            sink,
            lives,
            views,
        }
    }

    fn event(&mut self, ev: Event) -> Result<()> {
        if let Some(intro) = self.lives.as_mut().and_then(|l| l.observe(&ev)) {
            self.analyze(intro)?;
        }
        let (before, after) = match self.views.as_mut() {
            Some(v) => v.around(&ev),
            None => (None, None),
        };
        for e in before.into_iter().chain(Some(ev)).chain(after) {
            self.analyze(e)?;
        }
        Ok(())
    }

    fn analyze(&mut self, mut ev: Event) -> Result<()> {
        if !self.sink.admit(&ev) {
            return Ok(());
        }
        let found = lock(self.analyzer).process(&mut ev);
        if let Some(l) = self.lives.as_mut() {
            l.record(&ev);
        }
        self.sink.event(&ev, &found)
    }
}
