//! `auditor run -- CMD`: trace a command and report.

use anyhow::Result;
use auditor_analyzer::{Analyzer, ExitStatusInfo, calls, report::Report};

use super::{analyzer_config, finish_report, rfc3339, run_info, stream_findings};
use crate::{
    capture::{enrich, launch, probes::Probes},
    cli::{Format, RunArgs},
    error::UserError,
    output::Output,
};

pub fn run(args: RunArgs) -> Result<i32> {
    if args.tui {
        return crate::tui::run_command(args);
    }
    let mut analyzer = Analyzer::new(analyzer_config(&args.report)?)
        .map_err(|e| UserError::new(format!("{e:#}")))?;
    analyzer.set_enricher(Box::new(enrich::enrich));
    let format = args.report.format();
    launch::resolve_program(&args.command[0])?;
    let mut out = Output::open(args.report.output.as_deref())?;
    let mut probes = Probes::load(ring_bytes(args.capture.ring_mb)?)?;

    let events_mode = args.events;
    let mut first = true;
    if events_mode && format == Format::Json {
        out.write_chunk(b"[\n")?;
    }
    let outcome = launch::trace_command(&mut probes, &args.command, |mut ev| {
        let found = analyzer.process(&mut ev);
        if events_mode {
            let line = match format {
                Format::Text => format!(
                    "{:>6} {:>7}/{:<7} {:<15} {}\n",
                    ev.seq,
                    ev.pid,
                    ev.tid,
                    ev.comm,
                    calls::describe(&ev)
                ),
                Format::Jsonl => format!("{}\n", serde_json::to_string(&ev)?),
                Format::Json => {
                    let sep = if first { "" } else { ",\n" };
                    format!("{sep}{}", serde_json::to_string(&ev)?)
                }
            };
            first = false;
            out.write_chunk(line.as_bytes())?;
        } else if format == Format::Jsonl {
            stream_findings(&mut out, &found)?;
        }
        Ok(())
    })?;
    let tail = analyzer.finish();
    if events_mode {
        if format == Format::Json {
            out.write_chunk(b"\n]\n")?;
        }
        out.commit()
            .map_err(|e| UserError::new(format!("cannot write the output: {e}")))?;
        if outcome.kernel.lost() > 0 {
            eprintln!(
                "auditor: {} events were lost in the kernel (buffers full): try a larger --ring-mb",
                outcome.kernel.lost()
            );
        }
        return Ok(0);
    }
    if format == Format::Jsonl {
        stream_findings(&mut out, &tail)?;
    }
    let mut info = run_info("run", &args.command);
    info.exit_status = outcome.exit.map(|e| match e {
        launch::CommandExit::Code(c) => ExitStatusInfo::Code(c),
        launch::CommandExit::Signal(s) => ExitStatusInfo::Signal(s),
    });
    info.started_at = rfc3339(outcome.started);
    info.ended_at = rfc3339(outcome.ended);
    info.dropped = outcome.kernel.lost() + outcome.decode.undecodable();
    info.events = outcome.decode.records;
    let report = Report::new(&analyzer, info);
    finish_report(out, format, &report, &args.report)
}

/// Ring buffer size in bytes: the kernel wants a power-of-two number of pages.
pub fn ring_bytes(mb: u32) -> Result<u32, UserError> {
    if mb == 0 || !mb.is_power_of_two() || mb > 1024 {
        return Err(UserError::new(format!(
            "--ring-mb {mb}: must be a power of two between 1 and 1024"
        )));
    }
    Ok(mb << 20)
}
