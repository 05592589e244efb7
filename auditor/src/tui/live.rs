//! The live loop: capture and analysis in their own thread, the UI drawing
//! at a fixed rate from bounded snapshots, and the normal report at the end.
//!
//! The capture thread holds the analyzer's lock only for one event at a
//! time; the UI takes it ten times a second for a bounded snapshot. A burst
//! of events therefore neither waits for drawing nor grows the UI's memory.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use auditor_analyzer::{RunInfo, calls::plural, report::Report};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyEventKind};

use super::{
    app::{App, Effect, Msg},
    terminal::Guard,
    view,
};
use crate::{
    capture::{maps, pump::monotonic_ns},
    cli::ReportOptions,
    error::UserError,
    output::{AtomicFile, Output},
    pipeline::{
        Outcome, Pipeline, Shared, Sink, Target, lock, options::rfc3339, signals, sinks::conclude,
    },
};

/// Drawing rate.
const TICK: Duration = Duration::from_millis(100);
/// How long a launched workload has between SIGTERM and SIGKILL once the
/// user quits.
const GRACE: Duration = Duration::from_secs(2);
/// How long quitting then waits for the capture to end (the last events
/// drained, an attach detached) before writing the report from what was
/// seen.
const DRAIN: Duration = Duration::from_secs(3);

/// How quitting ends a capture that is still running.
pub enum Stop {
    /// A launched workload is ours: SIGTERM to every traced process, SIGKILL
    /// to what is left after [`GRACE`]. Holds its own handle on the
    /// probes' traced map, so the map outlives nothing it should not.
    Workload(OwnedFd),
    /// Attached processes are not ours: the capture is asked to detach.
    Detach,
}

/// What the live view needs besides the capture itself.
pub struct Live {
    /// Shown in the header (`python3 app.py`, `pids 12, 34`).
    pub target: String,
    /// The run as known before capture ends; used for exports and when
    /// the capture does not end in time after quit.
    pub info: RunInfo,
    pub report: ReportOptions,
    /// Opened before the UI starts, so a bad --output fails first.
    pub out: Output,
    /// Where stdout/stderr go while the UI runs (inherited by a launched
    /// command).
    pub command_log: PathBuf,
}

/// Where a launched command's output goes under the UI: beside --output
/// (`report.json` -> `report.cmd.log`), else nowhere.
pub fn command_log(output: Option<&Path>) -> PathBuf {
    match output {
        Some(p) => p.with_extension("cmd.log"),
        None => PathBuf::from(DISCARDED),
    }
}

const DISCARDED: &str = "/dev/null";

/// Runs the pipeline's capture of `target` in its own thread (events go to
/// the analyzer, then `sink`) and the UI over it until the user quits, then
/// writes the report where --output says. Returns the findings' exit code.
pub fn run(
    mut pipeline: Pipeline,
    target: Target,
    mut sink: Box<dyn Sink + Send>,
    live: Live,
    stop: Stop,
) -> Result<i32> {
    let shared = pipeline.analyzer().clone();
    let mut guard = Guard::enter(&live.command_log)?;
    let note = if live.command_log == Path::new(DISCARDED) {
        "discarded (--output keeps it beside the report)".to_string()
    } else {
        live.command_log.display().to_string()
    };
    let mut app = App::new(live.target.clone(), note);
    let (tx, rx) = mpsc::channel::<Result<Outcome>>();
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let result = pipeline.run(target, &mut *sink);
            if result.is_ok() {
                // End-of-trace verdicts show while the UI stays up.
                lock(pipeline.analyzer()).finish();
            }
            let _ = tx.send(result);
        })?;

    let ended = ui_loop(&mut guard, &mut app, &shared, &rx, &live)?;
    let ended = match ended {
        Some(outcome) => Some(outcome),
        None => {
            let ended = stop_capture(&stop, &rx, &mut |notice| {
                app.update(Msg::Notice(notice));
                guard.terminal.draw(|f| view::render(f, &app)).map(drop)
            })?;
            ended.transpose()?
        }
    };
    drop(guard);
    if ended.is_none() {
        eprintln!(
            "auditor: the capture did not end within {}s of quitting; the report covers what was seen until then",
            (GRACE + DRAIN).as_secs()
        );
    }
    let outcome = match ended {
        Some(o) => o,
        None => Outcome {
            run: run_info(&live.info, None, &shared),
            lives: None,
            left_running: true,
            truncated_at: None,
        },
    };
    conclude(&shared, outcome, live.out, &live.report)
}

/// Ends a capture still running after quit, telling the user each step;
/// what the capture thread sent, or None when it did not end in time.
fn stop_capture(
    stop: &Stop,
    rx: &mpsc::Receiver<Result<Outcome>>,
    tell: &mut dyn FnMut(String) -> std::io::Result<()>,
) -> Result<Option<Result<Outcome>>> {
    let wait = |d: Duration| rx.recv_timeout(d).ok();
    match stop {
        Stop::Workload(traced) => {
            let fd = traced.as_raw_fd();
            let n = maps::signal_all(fd, libc::SIGTERM);
            tell(format!(
                "sent SIGTERM to {}; SIGKILL in {}s…",
                plural(n as u64, "process"),
                GRACE.as_secs()
            ))?;
            if let Some(r) = wait(GRACE) {
                return Ok(Some(r));
            }
            // Twice: a process forking while the first pass ran.
            let n = maps::signal_all(fd, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(20));
            maps::signal_all(fd, libc::SIGKILL);
            tell(format!("sent SIGKILL to {}…", plural(n as u64, "process")))?;
        }
        Stop::Detach => {
            tell("detaching…".into())?;
            signals::request_stop();
            if let Some(r) = wait(GRACE) {
                return Ok(Some(r));
            }
        }
    }
    Ok(wait(DRAIN))
}

/// Draws and handles keys until quit; returns the capture's run info when
/// it ended first.
fn ui_loop(
    guard: &mut Guard,
    app: &mut App,
    shared: &Shared,
    rx: &mpsc::Receiver<Result<Outcome>>,
    live: &Live,
) -> Result<Option<Outcome>> {
    let started = Instant::now();
    let mut ended: Option<Outcome> = None;
    let mut next = Instant::now();
    loop {
        if !guard.active() {
            bail!("the terminal UI stopped after a panic (see above)");
        }
        if Instant::now() >= next {
            next += TICK;
            if next < Instant::now() {
                next = Instant::now() + TICK;
            }
            if ended.is_none() {
                match rx.try_recv() {
                    Ok(Ok(outcome)) => {
                        let how = outcome
                            .run
                            .exit_status
                            .map(|e| format!("command {}", e.describe()))
                            .unwrap_or_else(|| "capture ended".into());
                        app.update(Msg::CaptureEnded(format!("{how}; q writes the report")));
                        ended = Some(outcome);
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(mpsc::TryRecvError::Disconnected) => bail!("the capture thread failed"),
                    Err(mpsc::TryRecvError::Empty) => {}
                }
            }
            app.update(Msg::Tick(started.elapsed()));
            let snap = lock(shared).snapshot(monotonic_ns());
            app.update(Msg::Snapshot(Box::new(snap)));
            guard.terminal.draw(|f| view::render(f, app))?;
        }
        if !event::poll(next.saturating_duration_since(Instant::now()))? {
            continue;
        }
        match event::read()? {
            TermEvent::Key(k) if k.kind != KeyEventKind::Release => match app.update(Msg::Key(k)) {
                Effect::Quit => return Ok(ended),
                Effect::Export => {
                    let notice = match export(shared, live, ended.as_ref().map(|o| &o.run)) {
                        Ok(p) => format!("exported the report to {}", p.display()),
                        Err(e) => format!("export failed: {e:#}"),
                    };
                    app.update(Msg::Notice(notice));
                }
                Effect::None => {}
            },
            TermEvent::Resize(..) => {}
            _ => continue,
        }
        guard.terminal.draw(|f| view::render(f, app))?;
    }
}

/// The run as far as it is known: the capture's own account once it ended,
/// else the start info with the analyzer's counters and the time now.
fn run_info(start: &RunInfo, ended: Option<&RunInfo>, a: &Shared) -> RunInfo {
    if let Some(info) = ended {
        return info.clone();
    }
    let stats = lock(a).stats();
    RunInfo {
        ended_at: rfc3339(std::time::SystemTime::now()),
        events: stats.events,
        dropped: stats.lost_events,
        ..start.clone()
    }
}

/// Writes the current report as JSON beside --output (or in the current
/// directory), atomically, under a name that does not replace the final one.
fn export(shared: &Shared, live: &Live, ended: Option<&RunInfo>) -> Result<PathBuf> {
    let info = run_info(&live.info, ended, shared);
    let report = Report::new(&lock(shared), info);
    let dir = live
        .report
        .output
        .as_deref()
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = dir.join(format!("auditor-export-{secs}.json"));
    let mut file = AtomicFile::create(&path)?;
    let mut doc = auditor_analyzer::report::layout::to_vec(&report.to_json())?;
    doc.push(b'\n');
    std::io::Write::write_all(&mut file, &doc)?;
    file.commit()
        .map_err(|e| UserError::new(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}
