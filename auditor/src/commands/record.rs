//! `auditor record -o FILE -- CMD`: save the event stream for later analysis.

use anyhow::Result;
use auditor_analyzer::{Analyzer, Config, recording::RecordingWriter};

use super::{rfc3339, run::ring_bytes};
use crate::{
    capture::{enrich, launch, probes::Probes},
    cli::RecordArgs,
    error::UserError,
    output::Output,
};

pub fn run(args: RecordArgs) -> Result<i32> {
    launch::resolve_program(&args.command[0])?;
    let file = Output::open(Some(&args.output))?;
    let mut probes = Probes::load(ring_bytes(args.capture.ring_mb)?)?;
    // The recording holds events with paths already made absolute, so a
    // replay needs no knowledge of the traced processes' cwd or fds.
    let mut resolver = Analyzer::new(Config::default())?;
    resolver.set_enricher(Box::new(enrich::enrich));
    let started = std::time::SystemTime::now();
    let mut writer = RecordingWriter::new(file, &args.command, &rfc3339(started))?;
    let outcome = launch::trace_command(&mut probes, &args.command, |mut ev| {
        resolver.process(&mut ev);
        writer.write_event(&ev)?;
        Ok(())
    })?;
    let exit = outcome.exit.map(|e| match e {
        launch::CommandExit::Code(c) => auditor_analyzer::ExitStatusInfo::Code(c),
        launch::CommandExit::Signal(s) => auditor_analyzer::ExitStatusInfo::Signal(s),
    });
    let file = writer.finish(
        &rfc3339(outcome.ended),
        exit,
        outcome.kernel.lost() + outcome.decode.undecodable(),
        outcome.decode.records,
    )?;
    file.commit()
        .map_err(|e| UserError::new(format!("cannot write {}: {e}", args.output.display())))?;
    eprintln!(
        "auditor: recorded {} events to {}{}",
        outcome.decode.records,
        args.output.display(),
        if outcome.kernel.lost() > 0 {
            format!(" ({} dropped)", outcome.kernel.lost())
        } else {
            String::new()
        }
    );
    Ok(0)
}
