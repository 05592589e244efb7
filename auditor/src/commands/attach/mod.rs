//! `auditor attach`: watch processes that are already running (by pid, name
//! or cgroup), and those that start later under a watched name or cgroup
//! with `--follow-new`, until `--duration` ends or SIGINT/SIGTERM; then
//! detach and report.
//!
//! What a process wrote before the attach is unknown: its open files are
//! read from /proc (identity, flags, position) so later calls on them are
//! understood, but no verdict rests on data the trace did not see written.

use anyhow::Result;
use watch::Watch;

mod watch;

use crate::{
    attach::metrics::Server,
    cli::{AttachArgs, Format},
    output::Output,
    pipeline::{AttachPlan, Pipeline, Target, options::analyzer_config, sinks::conclude},
    tui::{self, require_terminal},
};

pub fn run(args: AttachArgs) -> Result<i32> {
    if args.tui {
        require_terminal()?;
    }
    let mut config = analyzer_config(&args.report)?;
    config.max_files = args.max_files;
    config.max_processes = args.max_processes;
    let deadline = args.duration;
    let metrics = match (&args.metrics_addr, args.tui) {
        (Some(addr), false) => Some(Server::bind(addr)?),
        _ => None,
    };
    let plan = AttachPlan::new(
        &args.pid,
        &args.comm,
        &args.cgroup,
        args.follow_new,
        deadline,
    )?;
    let format = args.report.format();
    // A jsonl file is a log that pipelines follow while it grows; every
    // other output appears whole when the attach ends.
    let mut out = match (&args.report.output, format) {
        (Some(path), Format::Jsonl) if !args.tui => Output::open_log(path)?,
        (path, _) => Output::open(path.as_deref())?,
    };
    if let Some(m) = &metrics {
        eprintln!("auditor: metrics at http://{}/metrics", m.addr);
    }
    let mut pipeline = Pipeline::live(config, &args.capture)?;
    if args.tui {
        return tui::run_attach(pipeline, plan, args.report, out);
    }
    let mut sink = Watch::new(&mut out, format, metrics);
    let outcome = pipeline.run(Target::Attach(plan), &mut sink)?;
    drop(sink);
    // The probes are detached before the report is written.
    drop(pipeline.take_probes());
    conclude(pipeline.analyzer(), outcome, out, &args.report)
}
