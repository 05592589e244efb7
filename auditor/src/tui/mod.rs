//! `--tui`: a live terminal view for incident debugging. Elm style: [`app`]
//! holds the state and its update function, [`view`] draws it, [`live`]
//! runs the pipeline's capture in its own thread while it draws, and
//! [`terminal`] owns and restores the terminal.

mod app;
mod live;
mod terminal;
mod view;

pub use terminal::require_terminal;

use anyhow::{Context, Result};
use auditor_analyzer::{Config, report::groups::shell_quote};

use crate::{
    capture::launch,
    cli::{ReportOptions, RunArgs},
    output::Output,
    pipeline::{AttachPlan, Pipeline, Target, options::run_info, sinks::Quiet},
};
use live::{Live, Stop};

/// `auditor run --tui -- CMD`: the command runs traced with its output in a
/// log (or discarded) while the UI shows the live state; quitting while it
/// runs sends every traced process SIGTERM, then SIGKILL after a grace.
pub fn run_command(args: RunArgs, config: Config) -> Result<i32> {
    require_terminal()?;
    launch::resolve_program(&args.command[0])?;
    let out = Output::open(args.report.output.as_deref())?;
    let pipeline = Pipeline::live(config, &args.capture)?;
    // Our own handle on the traced map: quitting signals what it names
    // while the capture (which owns the probes) may be ending.
    let traced = pipeline
        .traced_map()
        .context("a live pipeline has a traced map")?
        .try_clone_to_owned()
        .context("duplicating the traced map's fd")?;
    let live = Live {
        target: shell_quote(&args.command),
        info: run_info("run", &args.command),
        command_log: live::command_log(args.report.output.as_deref()),
        report: args.report,
        out,
    };
    live::run(
        pipeline,
        Target::Launch(args.command),
        Box::new(Quiet),
        live,
        Stop::Workload(traced),
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
        Box::new(Quiet),
        live,
        Stop::Detach,
    )
}
