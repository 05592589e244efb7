//! `auditor run -- CMD`: trace a command and report.

use anyhow::Result;
use auditor_analyzer::ExitStatusInfo;

use crate::{
    capture::launch,
    cli::RunArgs,
    error::UserError,
    output::Output,
    pipeline::{
        INTERRUPTED, Pipeline, Target,
        options::analyzer_config,
        sinks::{EventFormat, Events, Findings, conclude},
    },
    tui,
};

pub fn run(args: RunArgs) -> Result<i32> {
    let config = analyzer_config(&args.report)?;
    if args.tui {
        return tui::run_command(args, config);
    }
    let format = args.report.format();
    let event_format = args.events.then(|| EventFormat::of(format)).transpose()?;
    launch::resolve_program(&args.command[0])?;
    let mut out = Output::open(args.report.output.as_deref())?;
    let mut pipeline = Pipeline::live(config, &args.capture)?;
    let target = Target::Launch(args.command.clone());
    if let Some(format) = event_format {
        let mut sink = Events {
            out: &mut out,
            format,
            first: true,
        };
        let outcome = pipeline.run(target, &mut sink)?;
        sink.finish()?;
        out.commit()
            .map_err(|e| UserError::new(format!("cannot write the output: {e}")))?;
        if outcome.run.dropped > 0 {
            eprintln!(
                "auditor: {} events were lost (buffers full): try a larger --ring-mb",
                outcome.run.dropped
            );
        }
        // The command's failure is never masked, even when only its events
        // were asked for.
        return Ok(
            match outcome.run.exit_status.and_then(ExitStatusInfo::failure) {
                Some(code) => code,
                None if outcome.left_running => INTERRUPTED,
                None => 0,
            },
        );
    }
    let outcome = pipeline.run(
        target,
        &mut Findings {
            out: &mut out,
            format,
        },
    )?;
    conclude(pipeline.analyzer(), outcome, out, &args.report)
}
