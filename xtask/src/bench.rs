//! `cargo xtask bench`: the same write-heavy workload untraced, under
//! `auditor run` and under `strace -f`, side by side in one run; prints the
//! ratios and the events the kernel dropped.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{root, sh};

#[derive(Clone, Copy)]
struct Sample {
    /// The workload's own loop time.
    loop_ns: u64,
    /// The whole command, tracer start-up included.
    wall_ns: u64,
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

pub fn run(
    auditor: &Path,
    writes: u64,
    every: u64,
    rounds: usize,
    strace_rounds: usize,
) -> Result<()> {
    sh(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--quiet",
        "--package",
        "xtask",
        "--bin",
        "write_workload",
    ]))?;
    let workload = root().join("target/release/write_workload");
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("workload.dat");
    let report = dir.join("report.json");
    let args = |every: u64| {
        [
            data.to_str().unwrap().to_owned(),
            writes.to_string(),
            every.to_string(),
        ]
    };

    let time = |cmd: &mut Command| -> Result<Sample> {
        // Every run starts from a clean page cache: dirty data left by the
        // previous one (the writes-alone runs never fsync) would be written
        // back during the next and bill it for the disk's work.
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        let start = Instant::now();
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("{cmd:?}"))?;
        let wall_ns = start.elapsed().as_nanos() as u64;
        if !matches!(out.status.code(), Some(0) | Some(1)) {
            bail!("{cmd:?} failed: {}", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let loop_ns = text
            .lines()
            .find_map(|l| l.trim().parse().ok())
            .context("workload printed no timing")?;
        Ok(Sample { loop_ns, wall_ns })
    };
    let mut dropped = 0u64;
    let mut events = 0u64;
    // `empty`: the syscall probes attached but returning at once, which is
    // what having them attached costs by itself: the floor of this design.
    let mut audited = |every: u64, empty: bool| -> Result<Sample> {
        let mut cmd = Command::new(auditor);
        if empty {
            cmd.env("AUDITOR_BENCH_EMPTY_PROBES", "1");
        }
        let s = time(
            cmd.args(["run", "--format", "json", "--output"])
                .arg(&report)
                .arg("--")
                .arg(&workload)
                .args(args(every)),
        )?;
        if empty {
            return Ok(s);
        }
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
        dropped = dropped.max(
            doc["stats"]["dropped"]
                .as_u64()
                .context("report has no stats.dropped")?,
        );
        events = doc["stats"]["events"].as_u64().unwrap_or(0);
        Ok(s)
    };

    // The same two configurations twice: with fsyncs (the target), then
    // writes alone, which shows the cost per write without the noise of
    // the disk's flush latency.
    let mut base = Vec::new();
    let mut traced = Vec::new();
    let mut straced = Vec::new();
    let mut base_w = Vec::new();
    let mut traced_w = Vec::new();
    let mut floor = Vec::new();
    let mut floor_w = Vec::new();
    println!(
        "workload: {writes} writes of 64 bytes, fsync every {every}; {rounds} rounds, interleaved \
         (strace -f in the first {strace_rounds})"
    );
    for round in 0..rounds {
        base.push(time(Command::new(&workload).args(args(every)))?);
        traced.push(audited(every, false)?);
        floor.push(audited(every, true)?);
        base_w.push(time(Command::new(&workload).args(args(0)))?);
        traced_w.push(audited(0, false)?);
        floor_w.push(audited(0, true)?);
        let strace = if round < strace_rounds {
            let s = time(
                Command::new("strace")
                    .args(["-f", "-qq", "-o", "/dev/null"])
                    .arg(&workload)
                    .args(args(every)),
            )?;
            straced.push(s);
            format!("  strace {:.3}s", s.loop_ns as f64 / 1e9)
        } else {
            String::new()
        };
        let secs = |v: &[Sample]| v[round].loop_ns as f64 / 1e9;
        println!(
            "  round {}: untraced {:.3}s  auditor {:.3}s  empty probes {:.3}s{strace}  | writes alone: \
             {:.3}s  {:.3}s  {:.3}s",
            round + 1,
            secs(&base),
            secs(&traced),
            secs(&floor),
            secs(&base_w),
            secs(&traced_w),
            secs(&floor_w),
        );
    }
    let m = |v: &[Sample], f: fn(&Sample) -> u64| median(v.iter().map(f).collect());
    let loop_of = |x: &Sample| x.loop_ns;
    let (b, a) = (m(&base, loop_of), m(&traced, loop_of));
    let (bw, aw) = (m(&base, |x| x.wall_ns), m(&traced, |x| x.wall_ns));
    let ratio = a as f64 / b as f64;
    println!(
        "median workload loop: untraced {:.3}s, auditor {:.3}s",
        b as f64 / 1e9,
        a as f64 / 1e9,
    );
    print!("ratio (workload loop): auditor {ratio:.3}x untraced");
    if !straced.is_empty() {
        let s = m(&straced, loop_of);
        print!(", strace -f {:.3}x untraced", s as f64 / b as f64);
    }
    println!();
    println!(
        "ratio (whole command, start-up included): auditor {:.3}x",
        aw as f64 / bw as f64
    );
    let f = m(&floor, loop_of);
    println!(
        "floor (syscall probes attached, returning at once): {:.3}s = {:.3}x untraced",
        f as f64 / 1e9,
        f as f64 / b as f64
    );
    let (b0, a0, f0) = (
        m(&base_w, loop_of),
        m(&traced_w, loop_of),
        m(&floor_w, loop_of),
    );
    let per_write = |t: u64| (t as f64 - b0 as f64) / writes as f64;
    println!(
        "writes alone: untraced {:.3}s, auditor {:.3}s = {:.3}x ({:.0} ns added per write), \
         floor {:.3}s ({:.0} ns per write)",
        b0 as f64 / 1e9,
        a0 as f64 / 1e9,
        a0 as f64 / b0 as f64,
        per_write(a0),
        f0 as f64 / 1e9,
        per_write(f0),
    );
    println!("events captured per audited run (last): {events}; dropped (worst run): {dropped}");
    println!(
        "target: auditor <= 1.10x untraced with 0 dropped -> {}",
        if ratio <= 1.10 && dropped == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
