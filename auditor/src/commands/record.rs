//! `auditor record -o FILE -- CMD`: save the event stream for later analysis.

use anyhow::Result;
use auditor_analyzer::{Config, Event, ExitStatusInfo, Finding, recording::RecordingWriter};

use crate::{
    capture::launch,
    cli::RecordArgs,
    error::UserError,
    output::Output,
    pipeline::{Pipeline, Sink, Target, options::rfc3339},
};

/// Writes each event as the analyzer left it: paths made absolute, so a
/// replay needs no knowledge of the traced processes' cwd or fds.
struct Recorder {
    writer: RecordingWriter<Output>,
}

impl Sink for Recorder {
    fn at_risk(&self) -> bool {
        false
    }

    fn event(&mut self, ev: &Event, _found: &[Finding]) -> Result<()> {
        self.writer.write_event(ev)?;
        Ok(())
    }
}

pub fn run(args: RecordArgs) -> Result<i32> {
    launch::resolve_program(&args.command[0])?;
    let file = Output::open(Some(&args.output))?;
    let mut pipeline = Pipeline::live(Config::default(), &args.capture)?;
    let started = std::time::SystemTime::now();
    let mut sink = Recorder {
        writer: RecordingWriter::new(file, &args.command, &rfc3339(started))?,
    };
    let outcome = pipeline.run(Target::Launch(args.command.clone()), &mut sink)?;
    let run = &outcome.run;
    let file = sink
        .writer
        .finish(&run.ended_at, run.exit_status, run.dropped, run.events)?;
    file.commit()
        .map_err(|e| UserError::new(format!("cannot write {}: {e}", args.output.display())))?;
    eprintln!(
        "auditor: recorded {} to {}{}",
        auditor_analyzer::report::plural::count(run.events, "event", "events"),
        args.output.display(),
        if run.dropped > 0 {
            format!(" ({} dropped)", run.dropped)
        } else {
            String::new()
        }
    );
    // The command's failure is never masked: its code, 128 + the signal.
    Ok(run
        .exit_status
        .and_then(ExitStatusInfo::failure)
        .unwrap_or(0))
}
