//! `auditor report FILE`: the findings of a recording, as the live run gave.

use anyhow::Result;
use auditor_analyzer::recording::RecordingReader;

use crate::{
    cli::ReportArgs,
    error::UserError,
    output::Output,
    pipeline::{
        Pipeline, Target,
        options::analyzer_config,
        sinks::{Findings, conclude},
    },
};

pub fn run(args: ReportArgs) -> Result<i32> {
    let mut pipeline = Pipeline::replay(analyzer_config(&args.report)?)?;
    let rec =
        RecordingReader::open(&args.recording).map_err(|e| UserError::new(format!("{e:#}")))?;
    let format = args.report.format();
    let mut out = Output::open(args.report.output.as_deref())?;
    let outcome = pipeline.run(
        Target::Recording(Box::new(rec)),
        &mut Findings {
            out: &mut out,
            format,
        },
    )?;
    if let Some(t) = &outcome.truncated_at {
        eprintln!(
            "auditor: {} ends early ({t}): findings cover the events up to there",
            args.recording.display()
        );
    }
    conclude(pipeline.analyzer(), outcome, out, &args.report)
}
