//! `--tui`: a live terminal view for incident debugging. Elm style: [`app`]
//! holds the state and its update function, [`view`] draws it, [`live`]
//! runs the pipeline's capture in its own thread while it draws, and
//! [`terminal`] owns and restores the terminal.

mod app;
mod live;
mod terminal;
mod view;

pub use terminal::require_terminal;

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use anyhow::Result;
use auditor_analyzer::{Config, Event, EventKind, Finding};

use crate::{
    capture::launch,
    cli::{ReportOptions, RunArgs},
    output::Output,
    pipeline::{AttachPlan, Pipeline, Sink, Target, options::run_info, signals},
};
use live::Live;

/// `auditor run --tui -- CMD`: the command runs traced with its output in a
/// log (or discarded) while the UI shows the live state; quitting while it
/// runs sends it SIGTERM.
pub fn run_command(args: RunArgs, config: Config) -> Result<i32> {
    require_terminal()?;
    launch::resolve_program(&args.command[0])?;
    let out = Output::open(args.report.output.as_deref())?;
    let pipeline = Pipeline::live(config, &args.capture)?;
    let child = Arc::new(AtomicU32::new(0));
    let stop = {
        let child = child.clone();
        Box::new(move || {
            let pid = child.load(Ordering::SeqCst);
            if pid > 0 {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        })
    };
    let live = Live {
        target: args.command.join(" "),
        info: run_info("run", &args.command),
        command_log: live::command_log(args.report.output.as_deref()),
        report: args.report,
        out,
    };
    live::run(
        pipeline,
        Target::Launch(args.command),
        Box::new(Launched { child }),
        live,
        stop,
    )
}

/// `attach --tui`: the same capture as `attach`, with the live view
/// drawing while it runs. Quitting (or SIGINT, SIGTERM, `--duration`) ends
/// the capture; attached processes are not ours to stop.
pub fn run_attach(
    pipeline: Pipeline,
    plan: AttachPlan,
    report: ReportOptions,
    out: Output,
) -> Result<i32> {
    let target = if plan.follows_new() {
        format!("{} (and new ones)", plan.describe.join(" "))
    } else {
        plan.describe.join(" ")
    };
    let live = Live {
        target,
        info: run_info("attach", &plan.describe),
        report,
        out,
        command_log: live::command_log(None),
    };
    live::run(
        pipeline,
        Target::Attach(plan),
        Box::new(crate::pipeline::sinks::Quiet),
        live,
        Box::new(signals::request_stop),
    )
}

/// Remembers the launched command's pid, for quitting while it runs.
struct Launched {
    child: Arc<AtomicU32>,
}

impl Sink for Launched {
    fn event(&mut self, ev: &Event, _found: &[Finding]) -> Result<()> {
        if let EventKind::ProcessStart { launched: true, .. } = ev.kind {
            self.child.store(ev.pid, Ordering::SeqCst);
        }
        Ok(())
    }

    fn note(&mut self, _line: &str) {}
}
