//! What the command line asks of a run, turned into the analyzer's config,
//! the ring size and the run facts reports start from.

use auditor_analyzer::{Config, RunInfo};

use crate::{
    cli::{CaptureOptions, ReportOptions},
    error::UserError,
};

/// The analyzer configuration the report options ask for; a bad glob, an
/// unknown rule id, an unreadable baseline or config file is the user's to
/// fix, and fails before any capture.
pub fn analyzer_config(o: &ReportOptions) -> Result<Config, UserError> {
    let config = Config {
        fail_on: o
            .fail_on
            .parse()
            .map_err(|e: anyhow::Error| UserError::new(e.to_string()))?,
        ignore: o.ignore.clone(),
        only_rules: o.rules.clone(),
        skip_rules: o.skip_rules.clone(),
        judge_caches: o.judge_caches,
        baseline: o
            .baseline
            .as_deref()
            .map(crate::baseline::load)
            .transpose()?,
        allow: crate::config_file::load(o)?,
        ..Config::default()
    };
    config
        .check()
        .map_err(|e| UserError::new(format!("{e:#}")))?;
    Ok(config)
}

/// Ring buffer size in bytes: the kernel wants a power-of-two number of pages.
pub fn ring_bytes(o: &CaptureOptions) -> Result<u32, UserError> {
    let mb = o.ring_mb;
    if mb == 0 || !mb.is_power_of_two() || mb > 1024 {
        return Err(UserError::new(format!(
            "--ring-mb {mb}: must be a power of two between 1 and 1024"
        )));
    }
    Ok(mb << 20)
}

/// RFC 3339 UTC for report timestamps.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    auditor_analyzer::time::rfc3339(t)
}

/// The run facts known before capture: who we are, the mode, the target.
pub fn run_info(mode: &str, command: &[String]) -> RunInfo {
    RunInfo {
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: mode.to_owned(),
        command: command.to_vec(),
        ..RunInfo::default()
    }
}
