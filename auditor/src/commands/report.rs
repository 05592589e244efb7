//! `auditor report FILE`: the findings of a recording, as the live run gave.

use anyhow::Result;
use auditor_analyzer::{Analyzer, recording::read_recording, report::Report};

use super::{analyzer_config, finish_report, run_info, stream_findings};
use crate::{
    cli::{Format, ReportArgs},
    error::UserError,
    output::Output,
};

pub fn run(args: ReportArgs) -> Result<i32> {
    let mut analyzer = Analyzer::new(analyzer_config(&args.report)?)
        .map_err(|e| UserError::new(format!("{e:#}")))?;
    let rec = read_recording(&args.recording).map_err(|e| UserError::new(format!("{e:#}")))?;
    let format = args.report.format();
    let mut out = Output::open(args.report.output.as_deref())?;
    for mut ev in rec.events {
        let found = analyzer.process(&mut ev);
        if format == Format::Jsonl {
            stream_findings(&mut out, &found)?;
        }
    }
    let tail = analyzer.finish();
    if format == Format::Jsonl {
        stream_findings(&mut out, &tail)?;
    }
    if let Some(t) = &rec.truncated_at {
        eprintln!(
            "auditor: {} ends early ({t}): findings cover the events up to there",
            args.recording.display()
        );
    }
    let mut info = run_info("report", &rec.header.command);
    info.started_at = rec.header.started_at.clone();
    info.truncated_at_byte = rec.truncated_at.map(|t| t.byte_offset);
    if let Some(tr) = &rec.trailer {
        info.ended_at = tr.ended_at.clone();
        info.exit_status = tr.exit_status;
        info.dropped = tr.dropped;
        info.events = tr.events;
    }
    let report = Report::new(&analyzer, info);
    finish_report(out, format, &report, &args.report)
}
