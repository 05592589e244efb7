//! Where a run's events and its report go: the [`Sink`] every command
//! hands the capture loop, the common sinks (findings streamed as JSON
//! Lines, the event stream printed), and the final report written the same
//! way for every mode.

use std::{io::Write, time::Duration};

use anyhow::Result;
use auditor_analyzer::{
    Analyzer, Event, Finding, calls,
    finding::Severity,
    report::{
        Report, jsonl_at_risk_line, jsonl_finding_line, jsonl_summary_line, text::TextOptions,
    },
};
use serde_json::Value;

use crate::{
    attach::lives::Lives,
    capture::probes::KernelStats,
    cli::{ColorChoice, Format, ReportOptions},
    error::UserError,
    output::Output,
};

/// What the capture loop shows a sink after each round of the pump.
pub struct Pulse<'a> {
    pub analyzer: &'a Analyzer,
    pub kernel: KernelStats,
    /// The process lives, under attach.
    pub lives: Option<&'a Lives>,
    pub uptime: Duration,
}

/// What a command does with a run as it goes.
pub trait Sink {
    /// Whether the analyzer sees `ev` at all (crashtest leaves out what
    /// happened after its power cut).
    fn admit(&mut self, _ev: &Event) -> bool {
        true
    }

    /// `ev` once the analyzer has seen it, with the findings it raised.
    fn event(&mut self, ev: &Event, found: &[Finding]) -> Result<()>;

    /// Whether [`Sink::event`] reads what each event put at risk; when not,
    /// the analyzer makes no copy of it.
    fn at_risk(&self) -> bool {
        true
    }

    /// About every 100 ms while capturing, and once at the end.
    fn pulse(&mut self, _p: &Pulse<'_>) -> Result<()> {
        Ok(())
    }

    /// A line for the person running us (who is attached, ...).
    fn note(&mut self, line: &str) {
        eprintln!("auditor: {line}");
    }
}

/// Nothing besides the analysis (the live view reads the analyzer itself,
/// and owns the terminal, so notes are not printed either).
pub struct Quiet;

impl Sink for Quiet {
    fn event(&mut self, _ev: &Event, _found: &[Finding]) -> Result<()> {
        Ok(())
    }

    fn at_risk(&self) -> bool {
        false
    }

    fn note(&mut self, _line: &str) {}
}

/// What is put at risk, streamed as JSON Lines the moment it happens (for
/// `--format jsonl`; the verdicts follow at the end); other formats wait
/// for the report.
pub struct Findings<'a> {
    pub out: &'a mut Output,
    pub format: Format,
}

impl Sink for Findings<'_> {
    fn event(&mut self, _ev: &Event, found: &[Finding]) -> Result<()> {
        if self.format == Format::Jsonl {
            stream_at_risk(self.out, found)?;
        }
        Ok(())
    }

    fn at_risk(&self) -> bool {
        self.format == Format::Jsonl
    }
}

/// How `run --events` prints the event stream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    Text,
    Json,
    Jsonl,
}

impl EventFormat {
    /// The event format `--format` asks for; SARIF holds findings only.
    pub fn of(format: Format) -> Result<EventFormat, UserError> {
        match format {
            Format::Text => Ok(EventFormat::Text),
            Format::Json => Ok(EventFormat::Json),
            Format::Jsonl => Ok(EventFormat::Jsonl),
            Format::Sarif => Err(UserError::new(
                "--events prints events as text, json or jsonl; SARIF holds findings: drop --events or pick another --format",
            )),
        }
    }
}

/// The decoded event stream itself (`run --events`), in the chosen format.
pub struct Events<'a> {
    pub out: &'a mut Output,
    pub format: EventFormat,
    pub first: bool,
}

impl Sink for Events<'_> {
    fn at_risk(&self) -> bool {
        false
    }

    fn event(&mut self, ev: &Event, _found: &[Finding]) -> Result<()> {
        let line = match self.format {
            EventFormat::Text => format!(
                "{:>6} {:>7}/{:<7} {:<15} {}\n",
                ev.seq,
                ev.pid,
                ev.tid,
                ev.comm,
                calls::describe(ev)
            ),
            EventFormat::Jsonl => format!("{}\n", serde_json::to_string(ev)?),
            EventFormat::Json => {
                let sep = if self.first { "[\n" } else { ",\n" };
                format!("{sep}{}", serde_json::to_string(ev)?)
            }
        };
        self.first = false;
        self.out.write_chunk(line.as_bytes())?;
        Ok(())
    }
}

impl Events<'_> {
    /// Closes the JSON array (an empty one when no event came).
    pub fn finish(&mut self) -> Result<()> {
        if self.format == EventFormat::Json {
            let end: &[u8] = if self.first { b"[\n]\n" } else { b"\n]\n" };
            self.out.write_chunk(end)?;
        }
        Ok(())
    }
}

/// An [`Output`] as a plain writer, each write one chunk (so a reader that
/// went away stops the report quietly, as for every other output).
struct Chunks<'a>(&'a mut Output);

impl std::io::Write for Chunks<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_chunk(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes what was just put at risk as JSON lines.
pub fn stream_at_risk(out: &mut Output, findings: &[Finding]) -> std::io::Result<()> {
    for f in findings {
        out.write_chunk(format!("{}\n", jsonl_at_risk_line(f)).as_bytes())?;
    }
    Ok(())
}

/// Colour only for people: `--color always`, or under `auto` a terminal
/// with NO_COLOR unset (or empty); CLICOLOR_FORCE (other than 0) asks for
/// it anywhere, and NO_COLOR still wins, as the two conventions agree.
fn use_color(choice: ColorChoice, out: &Output) -> bool {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    wants_color(
        choice,
        out.is_terminal(),
        set("NO_COLOR").is_some(),
        set("CLICOLOR_FORCE").is_some_and(|v| v != "0"),
    )
}

/// [`use_color`]'s decision, from what it read.
fn wants_color(choice: ColorChoice, terminal: bool, no_color: bool, force: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => !no_color && (terminal || force),
    }
}

/// How the text report is drawn: colour and width for a terminal (or
/// `COLUMNS`), long lines for files and pipes (tools read them).
pub fn text_options(o: &ReportOptions, out: &Output) -> TextOptions {
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|c| *c >= 40);
    TextOptions {
        color: use_color(o.color, out),
        verbose: o.verbose,
        width: columns.or_else(|| out.is_terminal().then(terminal_width).flatten()),
        max_findings: o.max_findings,
    }
}

/// Columns of the terminal on stdout.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize; a zeroed one is a valid buffer.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col >= 40).then_some(usize::from(ws.ws_col))
}

/// What finding paths are shown relative to and fingerprinted from: the
/// repository the launched command ran in, else its working directory.
pub fn report_base(cwd: &str) -> String {
    let mut dir = std::path::Path::new(cwd);
    loop {
        if dir.join(".git").exists() {
            return dir.display().to_string();
        }
        match dir.parent() {
            Some(p) => dir = p,
            None => return cwd.to_string(),
        }
    }
}

/// Writes the final report in the chosen format (JSON Lines: the summary
/// line; findings were streamed) with the process lives under attach, and
/// commits the output. Returns the findings' exit code.
pub fn write_report(
    mut out: Output,
    o: &ReportOptions,
    report: &Report,
    lives: Option<&Lives>,
    fail_on: Severity,
) -> Result<i32> {
    match o.format() {
        Format::Text => {
            let options = text_options(o, &out);
            report.write_text(&options, &mut Chunks(&mut out))?;
            if let Some(l) = lives {
                out.write_chunk(l.render_text().as_bytes())?;
            }
        }
        Format::Json => {
            let mut extra = serde_json::Map::new();
            if let Some(l) = lives {
                extra.insert("processes".into(), l.to_json());
            }
            report.write_json(&mut Chunks(&mut out), extra)?;
        }
        Format::Jsonl => {
            let mut v: Value = serde_json::from_str(&jsonl_summary_line(report))?;
            if let (Some(l), Some(m)) = (lives, v.as_object_mut()) {
                m.insert("processes".into(), l.to_json());
            }
            out.write_chunk(format!("{v}\n").as_bytes())?
        }
        Format::Sarif => {
            let mut bytes = serde_json::to_vec_pretty(&report.to_sarif())?;
            bytes.push(b'\n');
            out.write_chunk(&bytes)?
        }
    }
    out.commit()
        .map_err(|e| UserError::new(format!("cannot write the report: {e}")))?;
    Ok(report.exit_code(fail_on))
}

/// The end of every run: the verdicts less what the baseline and the allow
/// rules leave out (one JSON line each under JSON Lines, worst first, with
/// fingerprint and group), then the report. Returns the run's exit code.
pub fn conclude(
    analyzer: &super::Shared,
    mut outcome: super::Outcome,
    mut out: Output,
    o: &ReportOptions,
) -> Result<i32> {
    let t = std::time::Instant::now();
    let mut analyzer = super::lock(analyzer);
    // Nothing views the analyzer after this (a live view that shows the
    // end concluded it already).
    analyzer.conclude_last();
    let t = crate::timings::since("verdicts", t);
    outcome.run.base = analyzer.launched_cwd().map(report_base);
    let mut report = Report::take(&mut analyzer, outcome.run);
    let config = analyzer.config();
    report.leave_out(config.baseline.as_ref(), &config.allow);
    let fail_on = config.fail_on;
    drop(analyzer);
    if o.format() == Format::Jsonl {
        let mut w = std::io::BufWriter::with_capacity(64 << 10, Chunks(&mut out));
        for f in &report.findings {
            writeln!(w, "{}", jsonl_finding_line(f))?;
        }
        w.flush()?;
    }
    let code = write_report(out, o, &report, outcome.lives.as_ref(), fail_on)?;
    crate::timings::since("report", t);
    // A command still running when the report was written has not
    // succeeded: its findings alone must not turn the run green.
    let code = match report.command_failure() {
        None if outcome.left_running => super::INTERRUPTED,
        _ => code,
    };
    // The process ends once the report is written: freeing 50,000
    // findings one allocation at a time kept it waiting some 100 ms for
    // what the kernel takes back at once.
    std::mem::forget(report);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_flag_then_no_color_then_clicolor_force() {
        use ColorChoice::*;
        // (choice, terminal, NO_COLOR, CLICOLOR_FORCE) -> colour
        for (choice, terminal, no_color, force, want) in [
            (Auto, true, false, false, true),
            (Auto, false, false, false, false),
            (Auto, true, true, false, false),
            (Auto, false, false, true, true),
            (Auto, false, true, true, false),
            (Always, false, true, false, true),
            (Never, true, false, true, false),
        ] {
            assert_eq!(
                wants_color(choice, terminal, no_color, force),
                want,
                "{choice:?} terminal={terminal} NO_COLOR={no_color} CLICOLOR_FORCE={force}"
            );
        }
    }
}
