//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

const RUN_EXAMPLES: &str = "\
Examples:
  auditor run -- python3 save_state.py
      Run a program traced and print its durability findings.
  auditor run --format json --output report.json -- make test
      Audit a whole test suite; exit code 1 when a finding reaches --fail-on.
  auditor run --format sarif -o auditor.sarif --baseline auditor-baseline.json -- make test
      For code scanning, failing only on findings new since the baseline.
  auditor run --events --format jsonl -- git commit -m wip
      Print every traced call as JSON Lines instead of findings.
  auditor run --tui -- ./load_test.sh
      Watch live in a terminal UI.

Exit codes: the traced command's own code when it failed (128 + the signal
when it was killed), findings or not; else 0 when no finding reaches
--fail-on, 1 when one does; 2 when the auditor could not do its job.";

/// The top-level help: the examples, exit codes and the environment.
const MAIN_AFTER_HELP: &str = "\
Examples:
  auditor run -- python3 save_state.py
      Run a program traced and print its durability findings.
  auditor run --format sarif --output auditor.sarif -- make test
      Audit a test suite for code scanning; exit code 1 on findings.
  auditor baseline -o auditor-baseline.json report.json
  auditor run --baseline auditor-baseline.json -- make test
      Fail only on findings that are new since the baseline.
  auditor attach -p 1234
      Watch a running process until Ctrl-C.

Each command has its own examples: auditor help <command>.

Exit codes: the traced command's own code when it failed (128 + the signal
when it was killed), findings or not; else 0 when no finding reaches
--fail-on, 1 when one does; 2 when the auditor could not do its job.

Environment:
  NO_COLOR           set and not empty: no colour (--color always overrides)
  CLICOLOR_FORCE     set and not 0: colour even into a file or pipe, unless
                     NO_COLOR is set
  COLUMNS            the width the text report is wrapped to (else the
                     terminal's; files and pipes get long lines)
  PATH               searched for the command to run
  TMPDIR             where crashtest makes its private scratch directory
                     (default /var/tmp)
  AUDITOR_CRASH_DIR  set by crashtest for the command it runs: the mount
                     point of the scratch filesystem";

const RECORD_EXAMPLES: &str = "\
Examples:
  auditor record -o build.rec -- ./build.sh
      Save the event stream of a build (mode 0600: it holds every path).
  auditor report build.rec
      Its findings, as `auditor run` would have given them.";

const REPORT_EXAMPLES: &str = "\
Examples:
  auditor report build.rec
  auditor report --format sarif -o build.sarif build.rec
  auditor report --baseline auditor-baseline.json -v build.rec
      Only new findings; -v also lists those the baseline left out.";

const ATTACH_EXAMPLES: &str = "\
Examples:
  auditor attach -p 1234
      Until Ctrl-C or SIGTERM, then the report.
  auditor attach --comm redis-server --follow-new --duration 2h -o r.json
  auditor attach --cgroup /system.slice/etcd.service --metrics-addr 127.0.0.1:9464
  auditor attach --comm dockerd --tui";

const CRASHTEST_EXAMPLES: &str = "\
Examples:
  auditor crashtest -- python3 save_state.py
      One power cut when the command has exited.
  auditor crashtest --at renames -- python3 save_state.py
      A power cut after every rename.
  auditor crashtest --fs ext4 --at 20 --seed 7 -- ./db_bench
      20 random points among renames and fsyncs, reproducibly.

Baselines and allow rules do not apply: a crash test judges every finding.";

const BASELINE_EXAMPLES: &str = "\
Examples:
  auditor run --format json -o report.json -- make test
  auditor baseline -o auditor-baseline.json report.json
  auditor run --baseline auditor-baseline.json -- make test
      Exit code 1 only for findings that are not in the baseline.

A finding's fingerprint is its rule, its path relative to the repository
(or working directory) and where in the program it comes from: the same in
every checkout, so the baseline can be committed.";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  auditor completions bash > /etc/bash_completion.d/auditor
  auditor completions zsh > \"${fpath[1]}/_auditor\"
  auditor completions fish > ~/.config/fish/completions/auditor.fish";

const MAN_EXAMPLES: &str = "\
Examples:
  auditor man | man -l -
  auditor man --dir /usr/local/share/man/man1
      auditor.1 and one page per command (mode 0600: chmod 644 to share).";

#[derive(Parser)]
#[command(
    name = "auditor",
    version,
    about = "Finds where a crash or power loss would lose or corrupt a program's data, by watching it through eBPF.",
    after_help = MAIN_AFTER_HELP,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a command traced (with all its descendants) and report durability findings.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Run a command traced and save its event stream for `auditor report`.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
    /// Analyze a recording made by `auditor record`.
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Attach to running processes (by pid, name or cgroup) and report until stopped.
    #[command(after_help = ATTACH_EXAMPLES)]
    Attach(AttachArgs),
    /// Run a command on a scratch filesystem, cut the power at chosen points,
    /// and check which findings really lose data.
    #[command(after_help = CRASHTEST_EXAMPLES)]
    Crashtest(CrashtestArgs),
    /// Write the fingerprints of a JSON report's findings, for --baseline.
    #[command(after_help = BASELINE_EXAMPLES)]
    Baseline(BaselineArgs),
    /// Print a completion script for a shell.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
    /// Print the manual page, or write one per command into a directory.
    #[command(after_help = MAN_EXAMPLES)]
    Man(ManArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable, grouped by file, worst first.
    Text,
    /// One JSON document (schema auditor.report/v1).
    Json,
    /// One JSON object per line: findings as they are found, then a summary.
    Jsonl,
    /// SARIF 2.1.0, for code scanning: the rules and one result per finding.
    Sarif,
}

/// When the text report is coloured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set (CLICOLOR_FORCE forces it).
    Auto,
    Always,
    Never,
}

/// Options shared by everything that produces a report.
#[derive(Args, Clone)]
#[command(next_help_heading = "Report")]
pub struct ReportOptions {
    /// Output format [default: text; json, jsonl or sarif when --output
    /// ends in .json, .jsonl or .sarif]
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
    /// Colour the text report: auto (a terminal, NO_COLOR unset), always, never.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub color: ColorChoice,
    /// Leave out findings whose fingerprint is in FILE (made by `auditor
    /// baseline`): counted, listed with -v, and not failing the run.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Read allow rules from FILE [default: ./auditor.toml when there is one].
    #[arg(long, value_name = "FILE", conflicts_with = "no_config")]
    pub config: Option<PathBuf>,
    /// Read no auditor.toml.
    #[arg(long)]
    pub no_config: bool,
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
                Some("sarif") => Format::Sarif,
                _ => Format::Text,
            }
        })
    }
}

#[derive(Args, Clone)]
#[command(next_help_heading = "Capture")]
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
    /// Do not take the user stacks that point each finding at a function and
    /// source line.
    #[arg(long)]
    pub no_stacks: bool,
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

/// Targets come first in the help: they are what an attach is about.
#[derive(Args)]
pub struct AttachArgs {
    /// Attach to this process (repeatable).
    #[arg(long, short = 'p', value_name = "PID", help_heading = "Targets",
          required_unless_present_any = ["comm", "cgroup"])]
    pub pid: Vec<u32>,
    /// Attach to processes with this name (repeatable).
    #[arg(long, value_name = "NAME", help_heading = "Targets")]
    pub comm: Vec<String>,
    /// Attach to the processes of this cgroup v2 path or container id (repeatable).
    #[arg(long, value_name = "PATH", help_heading = "Targets")]
    pub cgroup: Vec<String>,
    /// Also attach to processes that start later under a matching name or cgroup.
    #[arg(long, help_heading = "Targets")]
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
          value_parser = crate::parse::max_records, help_heading = "Limits")]
    pub max_files: usize,
    /// Most process records kept at once (least recently active forgotten first).
    #[arg(long, value_name = "N", default_value_t = auditor_analyzer::config::DEFAULT_MAX_PROCESSES,
          value_parser = crate::parse::max_records, help_heading = "Limits")]
    pub max_processes: usize,
    #[command(flatten)]
    pub report: ReportOptions,
    #[command(flatten)]
    pub capture: CaptureOptions,
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
    #[arg(long, value_enum, default_value = "xfs", help_heading = "Crash test")]
    pub fs: CrashFs,
    /// Size of the scratch image (e.g. 300M, 1G; XFS needs at least 300M).
    #[arg(long, default_value = "300M", value_parser = crate::parse::size,
          help_heading = "Crash test")]
    pub size: u64,
    /// Crash points: exit, renames, fsyncs, or a number N of random points among them.
    #[arg(long, default_value = "exit", help_heading = "Crash test")]
    pub at: String,
    /// Seed for `--at N` (printed when chosen at random).
    #[arg(long, help_heading = "Crash test")]
    pub seed: Option<u64>,
    /// Keep the image files for inspection.
    #[arg(long, help_heading = "Crash test")]
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

#[derive(Args)]
pub struct BaselineArgs {
    /// Baseline file to write (atomically, mode 0600).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    /// A JSON report (`--format json`) whose findings make the baseline.
    #[arg(value_name = "REPORT")]
    pub report: PathBuf,
}

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Write auditor.1 and a page per command (auditor-run.1, ...) into DIR
    /// instead of printing auditor.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl Command {
    /// Whether `--timings` was given.
    pub fn timings(&self) -> bool {
        match self {
            Command::Run(a) => a.capture.timings,
            Command::Record(a) => a.capture.timings,
            Command::Attach(a) => a.capture.timings,
            Command::Crashtest(a) => a.capture.timings,
            Command::Report(_)
            | Command::Baseline(_)
            | Command::Completions(_)
            | Command::Man(_) => false,
        }
    }
}
