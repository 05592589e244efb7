//! Project tasks: `cargo xtask setup | build | demo | test | bench | bench-attach | precision`.
//!
//! One set-up path serves the README, the tests and CI: it installs what a
//! fresh machine lacks (rust-src for nightly, bpf-linker built against
//! rustc's own LLVM, the Debian packages the tests drive) and does nothing
//! when everything is already there.

mod bench;
mod bench_attach;
mod precision;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "auditor project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain pieces and packages the build and tests need.
    Setup,
    /// Build the probes (nightly, bpfel) and the release binary embedding them.
    Build,
    /// Set up, build, and audit the bundled demo program.
    Demo,
    /// Set up, build, and run every test: formatting, lints, unit and end-to-end.
    Test {
        /// Extra arguments for the end-to-end test binaries (a test name filter).
        filter: Vec<String>,
    },
    /// Measure the auditor against untraced runs, its own floor, bpftrace
    /// and strace -f: writers, a flood, start-up, memory. One table.
    Bench(bench::Options),
    /// Attach to a process that writes many distinct files; check that
    /// memory and tracked files stay bounded.
    BenchAttach {
        /// Distinct files the workload creates, writes and closes.
        #[arg(long, default_value_t = 1_000_000)]
        files: u64,
        /// The auditor's --max-files.
        #[arg(long, default_value_t = 10_000)]
        max_files: u64,
    },
    /// Judge the auditor's findings on real programs against a ground truth
    /// built from an strace of the same run; print precision and recall.
    Precision {
        /// Only this program (all its forms) or `program/form`.
        #[arg(long)]
        only: Option<String>,
        /// Keep the scratch directories and traces under target/precision.
        #[arg(long)]
        keep: bool,
        /// Also write the numbers to this file as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also list the true, low and undecided verdicts.
        #[arg(short, long)]
        verbose: bool,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::Setup => setup::all(),
        Task::Build => build(),
        Task::Demo => {
            setup::all()?;
            build()?;
            demo()
        }
        Task::Test { filter } => {
            setup::all()?;
            build()?;
            test(&filter)
        }
        Task::Bench(opts) => {
            setup::all()?;
            build()?;
            bench::run(&auditor_bin(), &opts)
        }
        Task::BenchAttach { files, max_files } => {
            setup::all()?;
            build()?;
            bench_attach::run(&auditor_bin(), files, max_files)
        }
        Task::Precision {
            only,
            keep,
            json,
            verbose,
        } => {
            setup::all()?;
            build()?;
            precision::run(
                &auditor_bin(),
                &precision::Options {
                    only,
                    keep,
                    json,
                    verbose,
                },
            )
        }
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn auditor_bin() -> PathBuf {
    root().join("target/release/auditor")
}

fn probe_object() -> PathBuf {
    root().join("target/bpfel-unknown-none/release/auditor-ebpf")
}

/// Builds one of this crate's workload binaries (release); its path.
pub fn build_workload(name: &str) -> Result<PathBuf> {
    sh(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--quiet",
        "--package",
        "xtask",
        "--bin",
        name,
    ]))?;
    Ok(root().join("target/release").join(name))
}

/// Runs a command, failing with its name when it fails.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn build() -> Result<()> {
    sh(Command::new("cargo")
        .current_dir(root().join("auditor-ebpf"))
        .args([
            "+nightly",
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core"])
        // Debug info for every crate of this build, core's helpers
        // (memset, memcpy) included: the linker's BTF then describes every
        // function, which the kernel requires of a program that passes a
        // callback (bpf_loop), and a program with BTF is verified function
        // by function instead of inlined path by path.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "2")
        // The host build's flags do not apply to the BPF target.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS"))?;
    sh(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "--package", "auditor"])
        .env("AUDITOR_EBPF_OBJECT", probe_object()))
}

fn demo() -> Result<()> {
    let dir = root().join("target/demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    println!(
        "== auditor run -- python3 demo/careless_saver.py   (in {})",
        dir.display()
    );
    let status = Command::new(auditor_bin())
        .current_dir(&dir)
        .args(["run", "--", "python3"])
        .arg(root().join("demo/careless_saver.py"))
        .status()
        .context("running auditor")?;
    // Exit code 1 means findings: that is the point of the demo.
    match status.code() {
        Some(0) | Some(1) => Ok(()),
        _ => bail!("auditor failed on the demo ({status})"),
    }
}

fn test(filter: &[String]) -> Result<()> {
    let r = root();
    sh(Command::new("cargo")
        .current_dir(&r)
        .args(["fmt", "--all", "--", "--check"]))?;
    sh(Command::new("cargo")
        .current_dir(&r)
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "auditor-ebpf",
            "--all-targets",
        ])
        .args(["--", "-D", "warnings"])
        .env("AUDITOR_EBPF_OBJECT", probe_object()))?;
    sh(Command::new("cargo")
        .current_dir(r.join("auditor-ebpf"))
        .args([
            "+nightly",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--", "-D", "warnings"])
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS"))?;
    // Two modules that import each other want a layer below them.
    sh(Command::new("/usr/bin/python3")
        .current_dir(&r)
        .arg("xtask/module_cycles.py")
        .args(["auditor/src", "auditor-ebpf/src", "auditor-analyzer/src"])
        .args(["auditor-common/src", "tests/src", "xtask/src"]))?;
    let mut total = Tally::default();
    total.add(counted(
        Command::new("cargo")
            .current_dir(&r)
            .args(["test", "--workspace", "--exclude", "auditor-ebpf"])
            .args(["--exclude", "auditor-e2e", "--lib", "--bins", "--tests"])
            .env("AUDITOR_EBPF_OBJECT", probe_object()),
    )?);
    // End-to-end tests load probes (root) and share kernel state: one at a time.
    total.add(counted(
        Command::new("cargo")
            .current_dir(&r)
            .args([
                "test",
                "--release",
                "--package",
                "auditor-e2e",
                "--tests",
                "--",
            ])
            .arg("--test-threads=1")
            .args(filter)
            .env("AUDITOR_BIN", auditor_bin())
            .env("AUDITOR_EBPF_OBJECT", probe_object()),
    )?);
    println!("\ntests: {} passed, {} failed", total.passed, total.failed);
    if total.failed > 0 || total.passed == 0 {
        bail!("{} tests failed, {} passed", total.failed, total.passed);
    }
    Ok(())
}

/// Tests counted over several `cargo test` runs.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Runs `cargo test`, passing its output through, and adds up the
/// `test result:` lines so the suite ends with one total.
fn counted(cmd: &mut Command) -> Result<Tally> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let mut tally = Tally::default();
    for line in BufReader::new(child.stdout.take().context("no stdout")?).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            tally.passed += num("passed");
            tally.failed += num("failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(tally)
}
