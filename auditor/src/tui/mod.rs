//! `--tui`: a live terminal view for incident debugging. Elm style: [`app`]
//! holds the state and its update function, [`view`] draws it, [`live`]
//! wires capture, analysis and drawing together, [`terminal`] owns and
//! restores the terminal.

mod app;
mod live;
mod terminal;
mod view;

pub use live::{Capture, Live, Stop, command_log, run_live};
pub use terminal::require_terminal;

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use anyhow::Result;
use auditor_analyzer::{Analyzer, EventKind, ExitStatusInfo};

use crate::{
    capture::{enrich, launch, probes::Probes},
    cli::RunArgs,
    commands::{analyzer_config, rfc3339, run::ring_bytes, run_info},
    error::UserError,
    output::Output,
};

/// `auditor run --tui -- CMD`: the command runs traced with its output in a
/// log (or discarded) while the UI shows the live state; quitting while it
/// runs sends it SIGTERM.
pub fn run_command(args: RunArgs) -> Result<i32> {
    require_terminal()?;
    let mut analyzer = Analyzer::new(analyzer_config(&args.report)?)
        .map_err(|e| UserError::new(format!("{e:#}")))?;
    analyzer.set_enricher(Box::new(enrich::enrich));
    launch::resolve_program(&args.command[0])?;
    let out = Output::open(args.report.output.as_deref())?;
    let mut probes = Probes::load(ring_bytes(args.capture.ring_mb)?)?;
    let (command_log, _) = command_log(args.report.output.as_deref());

    let mut info = run_info("run", &args.command);
    info.started_at = rfc3339(std::time::SystemTime::now());
    let child = Arc::new(AtomicU32::new(0));
    let command = args.command.clone();
    let capture: Capture = {
        let child = child.clone();
        let mut info = info.clone();
        Box::new(move |sink| {
            let outcome = launch::trace_command(&mut probes, &command, |ev| {
                if let EventKind::ProcessStart { launched: true, .. } = ev.kind {
                    child.store(ev.pid, Ordering::SeqCst);
                }
                sink(ev)
            })?;
            info.exit_status = outcome.exit.map(|e| match e {
                launch::CommandExit::Code(c) => ExitStatusInfo::Code(c),
                launch::CommandExit::Signal(s) => ExitStatusInfo::Signal(s),
            });
            info.started_at = rfc3339(outcome.started);
            info.ended_at = rfc3339(outcome.ended);
            info.dropped = outcome.kernel.dropped;
            info.events = outcome.decode.records;
            Ok(info)
        })
    };
    let stop: Stop = Box::new(move || {
        let pid = child.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    });
    let live = Live {
        target: args.command.join(" "),
        info,
        report: args.report,
        out,
        command_log,
    };
    run_live(analyzer, live, capture, stop)
}
