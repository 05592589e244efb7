//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  auditor run -- python3 save_state.py
      Run a program traced and print its durability findings.
  auditor run --format json --output report.json -- make test
      Audit a whole test suite; exit code 1 when a finding reaches --fail-on.
  auditor run --events --format jsonl -- git commit -m wip
      Print every traced call as JSON Lines instead of findings.
  auditor record -o build.rec -- ./build.sh
  auditor report build.rec
      Save the event stream once, analyze it later (same findings).
  auditor attach --comm redis-server --duration 1h --output r.json
      Watch a running daemon; Ctrl-C (or the duration) writes the report.
  auditor run --tui -- ./load_test.sh
      Watch live in a terminal UI.
  auditor crashtest --at renames -- python3 save_state.py
      Cut the power after each rename on a scratch XFS and see what is lost.

Exit codes: the traced command's own code when it failed (128 + the signal
when it was killed), findings or not; else 0 when no finding reaches
--fail-on, 1 when one does; 2 when the auditor could not do its job.";

#[derive(Parser)]
#[command(
    name = "auditor",
    version,
    about = "Finds where a crash or power loss would lose or corrupt a program's data, by watching it through eBPF.",
    after_help = EXAMPLES,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a command traced (with all its descendants) and report durability findings.
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
    /// Run a command traced and save its event stream for `auditor report`.
    Record(RecordArgs),
    /// Analyze a recording made by `auditor record`.
    Report(ReportArgs),
    /// Attach to running processes (by pid, name or cgroup) and report until stopped.
    Attach(AttachArgs),
    /// Run a command on a scratch filesystem, cut the power at chosen points,
    /// and check which findings really lose data.
    Crashtest(CrashtestArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable, grouped by file, worst first.
    Text,
    /// One JSON document (schema auditor.report/v1).
    Json,
    /// One JSON object per line: findings as they are found, then a summary.
    Jsonl,
}

/// Options shared by everything that produces a report.
#[derive(Args, Clone)]
pub struct ReportOptions {
    /// Output format [default: text; json or jsonl when --output ends in .json/.jsonl]
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write the report to FILE (atomically) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Lowest severity that makes the exit code 1.
    #[arg(long, value_name = "SEVERITY", default_value = "medium",
          value_parser = ["low", "medium", "high"])]
    pub fail_on: String,
    /// Leave out findings whose path matches GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub ignore: Vec<String>,
    /// Run only rule ID (repeatable).
    #[arg(long = "rule", value_name = "ID")]
    pub rules: Vec<String>,
    /// Do not run rule ID (repeatable).
    #[arg(long = "skip-rule", value_name = "ID")]
    pub skip_rules: Vec<String>,
    /// Also report findings on caches their programs rebuild (files in
    /// __pycache__, .pytest_cache, .mypy_cache, .cache), left out by default.
    #[arg(long)]
    pub judge_caches: bool,
    /// Text report: every finding in full, with its evidence and the calls
    /// that led to it (by default alike findings are one entry).
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Text report: at most N entries (the JSON report keeps them all).
    #[arg(long, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_findings: Option<usize>,
}

impl ReportOptions {
    pub fn format(&self) -> Format {
        self.format.unwrap_or_else(|| {
            match self
                .output
                .as_ref()
                .and_then(|p| p.extension())
                .and_then(|e| e.to_str())
            {
                Some("json") => Format::Json,
                Some("jsonl") => Format::Jsonl,
                _ => Format::Text,
            }
        })
    }
}

#[derive(Args, Clone)]
pub struct CaptureOptions {
    /// Kernel ring buffer size in MiB (a power of two); larger loses fewer
    /// events under bursts.
    #[arg(long, value_name = "MIB", default_value = "16", value_parser = crate::parse::ring_mb)]
    pub ring_mb: u32,
    /// Print where the time went (kernel BTF, the verifier for each probe,
    /// attach, the command, the report, detach) on stderr at exit, one
    /// line per phase.
    #[arg(long)]
    pub timings: bool,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub report: ReportOptions,
    #[command(flatten)]
    pub capture: CaptureOptions,
    /// Print the decoded event stream instead of findings.
    #[arg(long)]
    pub events: bool,
    /// Watch live in a terminal UI (the report is still written on quit).
    #[arg(long, conflicts_with = "events")]
    pub tui: bool,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct AttachArgs {
    #[command(flatten)]
    pub report: ReportOptions,
    #[command(flatten)]
    pub capture: CaptureOptions,
    /// Attach to this process (repeatable).
    #[arg(long, value_name = "PID", required_unless_present_any = ["comm", "cgroup"])]
    pub pid: Vec<u32>,
    /// Attach to processes with this name (repeatable).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Attach to the processes of this cgroup v2 path or container id (repeatable).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<String>,
    /// Also attach to processes that start later under a matching name or cgroup.
    #[arg(long)]
    pub follow_new: bool,
    /// Stop after this long (e.g. 30s, 10m, 2h); else at SIGINT or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse::duration)]
    pub duration: Option<Duration>,
    /// Serve Prometheus metrics at ADDR (e.g. 127.0.0.1:9464), path /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Watch live in a terminal UI (the report is still written on quit).
    #[arg(long)]
    pub tui: bool,
    /// Most files whose state is kept at once; past it the least recently
    /// used are forgotten (counted in stats, later verdicts on them marked
    /// inconclusive). About 1 to 3 KiB each.
    #[arg(long, value_name = "N", default_value_t = auditor_analyzer::config::DEFAULT_MAX_FILES,
          value_parser = crate::parse::max_records)]
    pub max_files: usize,
    /// Most process records kept at once (least recently active forgotten first).
    #[arg(long, value_name = "N", default_value_t = auditor_analyzer::config::DEFAULT_MAX_PROCESSES,
          value_parser = crate::parse::max_records)]
    pub max_processes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CrashFs {
    Xfs,
    Ext4,
}

#[derive(Args)]
pub struct CrashtestArgs {
    #[command(flatten)]
    pub report: ReportOptions,
    #[command(flatten)]
    pub capture: CaptureOptions,
    /// Filesystem of the scratch image.
    #[arg(long, value_enum, default_value = "xfs")]
    pub fs: CrashFs,
    /// Size of the scratch image (e.g. 300M, 1G; XFS needs at least 300M).
    #[arg(long, default_value = "300M", value_parser = crate::parse::size)]
    pub size: u64,
    /// Crash points: exit, renames, fsyncs, or a number N of random points among them.
    #[arg(long, default_value = "exit")]
    pub at: String,
    /// Seed for `--at N` (printed when chosen at random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the image files for inspection.
    #[arg(long)]
    pub keep: bool,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct RecordArgs {
    /// Recording file to write (atomically, when the command has finished).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub capture: CaptureOptions,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub report: ReportOptions,
    /// A recording made by `auditor record`.
    pub recording: PathBuf,
}

impl Command {
    /// Whether `--timings` was given.
    pub fn timings(&self) -> bool {
        match self {
            Command::Run(a) => a.capture.timings,
            Command::Record(a) => a.capture.timings,
            Command::Attach(a) => a.capture.timings,
            Command::Crashtest(a) => a.capture.timings,
            Command::Report(_) => false,
        }
    }
}
