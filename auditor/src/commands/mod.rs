//! One module per subcommand; each returns the process exit code.

pub mod attach;
pub mod crashtest;
pub mod record;
pub mod report;
pub mod run;

use anyhow::Result;
use auditor_analyzer::{
    Config, RunInfo,
    finding::Severity,
    report::{Report, jsonl_finding_line, jsonl_summary_line},
};

use crate::{
    cli::{Format, ReportOptions},
    error::UserError,
    output::Output,
};

/// The analyzer configuration the report options ask for; a bad glob or an
/// unknown rule id is the user's to fix.
pub fn analyzer_config(o: &ReportOptions) -> Result<Config, UserError> {
    Ok(Config {
        fail_on: fail_on(o)?,
        ignore: o.ignore.clone(),
        only_rules: o.rules.clone(),
        skip_rules: o.skip_rules.clone(),
        judge_caches: o.judge_caches,
        ..Config::default()
    })
}

fn fail_on(o: &ReportOptions) -> Result<Severity, UserError> {
    o.fail_on
        .parse()
        .map_err(|e: anyhow::Error| UserError::new(e.to_string()))
}

/// Colour only for people: a terminal, and NO_COLOR unset.
pub fn use_color(out: &Output) -> bool {
    out.is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Writes the final report in the chosen format and commits the output.
/// Jsonl findings were already streamed; only the summary line is left.
pub fn finish_report(
    mut out: Output,
    format: Format,
    report: &Report,
    o: &ReportOptions,
) -> Result<i32> {
    let color = use_color(&out);
    match format {
        Format::Text => out.write_chunk(report.render_text(color).as_bytes())?,
        Format::Json => {
            let mut doc = serde_json::to_vec_pretty(&report.to_json())?;
            doc.push(b'\n');
            out.write_chunk(&doc)?
        }
        Format::Jsonl => out.write_chunk(format!("{}\n", jsonl_summary_line(report)).as_bytes())?,
    }
    out.commit()
        .map_err(|e| UserError::new(format!("cannot write the report: {e}")))?;
    Ok(report.exit_code(fail_on(o)?))
}

/// Streams freshly raised findings as JSON lines.
pub fn stream_findings(
    out: &mut Output,
    findings: &[auditor_analyzer::finding::Finding],
) -> std::io::Result<()> {
    for f in findings {
        out.write_chunk(format!("{}\n", jsonl_finding_line(f)).as_bytes())?;
    }
    Ok(())
}

/// RFC 3339 UTC for report timestamps.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    auditor_analyzer::time::rfc3339(t)
}

pub fn run_info(mode: &str, command: &[String]) -> RunInfo {
    RunInfo {
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: mode.to_owned(),
        command: command.to_vec(),
        ..RunInfo::default()
    }
}
