//! `cargo xtask bench`: one table, every tracer side by side in one run,
//! on the same workloads: untraced; the floor (the auditor with its
//! syscall probes attached but returning at once: what having raw syscall
//! tracepoints attached costs by itself); the auditor; bpftrace counting
//! the same calls per pid and fd on the same tracepoint (the nearest
//! equivalent a user could write in a line); and `strace -f`. The
//! workloads: one writer (fdatasync every 100 writes, and writes alone),
//! 8 writers at once, an open/close flood from an unprivileged process,
//! start-up (`run -- true`), and a program that leaves 50,000 files dirty
//! (memory and the time the report takes). Runs are interleaved, each from
//! a clean page cache, and the medians compared; nothing here asserts a
//! time (this VM's fsync latency alone varies by a quarter between runs).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{build_workload, root};

/// What the table is made of.
#[derive(clap::Args)]
pub struct Options {
    /// Writes in the one-writer workload.
    #[arg(long, default_value_t = 200_000)]
    pub writes: u64,
    /// fsync after every N writes.
    #[arg(long, default_value_t = 100)]
    pub fsync_every: u64,
    /// Repetitions of each configuration (the median is reported):
    /// fsync latency varies from one run to the next. The 8 writers
    /// and the flood run half as many.
    #[arg(long, default_value_t = 11)]
    pub rounds: usize,
    /// Of these, how many also run strace -f on the one writer (about
    /// 30 s each; once for the other workloads, none with 0).
    #[arg(long, default_value_t = 3)]
    pub strace_rounds: usize,
    /// Writer threads of the many-writers workload.
    #[arg(long, default_value_t = 8)]
    pub writers: u64,
    /// Writes of each of those threads.
    #[arg(long, default_value_t = 200_000)]
    pub writer_writes: u64,
    /// open/close pairs of the flood.
    #[arg(long, default_value_t = 1_000_000)]
    pub flood: u64,
    /// Files the memory workload creates and leaves dirty.
    #[arg(long, default_value_t = 50_000)]
    pub files: u64,
    /// Runs of `run -- true` for start-up.
    #[arg(long, default_value_t = 21)]
    pub startups: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tracer {
    Untraced,
    Floor,
    Auditor,
    /// The auditor with `--no-stacks`: what stacks cost (its own row).
    AuditorNoStacks,
    Bpftrace,
    Strace,
}

const TRACERS: [Tracer; 5] = [
    Tracer::Untraced,
    Tracer::Floor,
    Tracer::Auditor,
    Tracer::Bpftrace,
    Tracer::Strace,
];

/// One timed run.
#[derive(Clone, Copy, Default)]
struct Sample {
    /// The workload's own loop time (what it printed).
    loop_ns: u64,
    /// Its CPU time: what tracing costs the program itself, free of the
    /// time it waited for a CPU or the disk (on a shared VM, most of the
    /// noise).
    cpu_ns: u64,
    /// The auditor's report: events dropped, events captured.
    dropped: u64,
    events: u64,
}

/// The loop time and CPU time a workload printed (bpftrace prints its
/// own lines around them).
fn printed(stdout: &[u8]) -> Result<(u64, u64)> {
    let text = String::from_utf8_lossy(stdout);
    let loop_ns = text
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .context("workload printed no timing")?;
    let cpu_ns = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("cpu ")?.parse().ok())
        .context("workload printed no CPU time")?;
    Ok((loop_ns, cpu_ns))
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// A workload and how bpftrace counts its calls.
struct Workload {
    argv: Vec<String>,
    /// The syscall numbers bpftrace counts per pid and fd.
    syscalls: &'static [u32],
}

struct Bench<'a> {
    auditor: &'a Path,
    report: PathBuf,
}

impl Bench<'_> {
    /// Runs `w` under `t` once.
    fn run(&self, t: Tracer, w: &Workload) -> Result<Sample> {
        let mut cmd = match t {
            Tracer::Untraced => {
                let mut c = Command::new(&w.argv[0]);
                c.args(&w.argv[1..]);
                c
            }
            Tracer::Floor | Tracer::Auditor | Tracer::AuditorNoStacks => {
                let mut c = Command::new(self.auditor);
                c.args(["run", "--format", "json", "--output"])
                    .arg(&self.report);
                if t == Tracer::AuditorNoStacks {
                    c.arg("--no-stacks");
                }
                c.arg("--").args(&w.argv);
                if t == Tracer::Floor {
                    c.env("AUDITOR_BENCH_EMPTY_PROBES", "1");
                }
                c
            }
            Tracer::Bpftrace => {
                // The same tracepoint (the perf side of raw_syscalls), the
                // calls counted per pid and fd in a map, the command run by
                // bpftrace itself (it exits when the command does).
                let ids: Vec<String> = w
                    .syscalls
                    .iter()
                    .map(|n| format!("args->id == {n}"))
                    .collect();
                let script = format!(
                    "tracepoint:raw_syscalls:sys_enter /pid == cpid && ({})/ \
                     {{ @calls[pid, args->id, args->args[0]] = count(); }}",
                    ids.join(" || ")
                );
                let mut c = Command::new("bpftrace");
                c.args(["-e", &script, "-c", &w.argv.join(" ")]);
                c
            }
            Tracer::Strace => {
                let mut c = Command::new("strace");
                c.args(["-f", "-qq", "-o", "/dev/null"]).args(&w.argv);
                c
            }
        };
        // Every run starts from a clean page cache: dirty data left by the
        // previous one would be written back during the next and bill it
        // for the disk's work.
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        let out = cmd
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("{cmd:?}"))?;
        if !matches!(out.status.code(), Some(0) | Some(1)) {
            bail!("{cmd:?} failed: {}", out.status);
        }
        let (loop_ns, cpu_ns) = printed(&out.stdout)?;
        let mut s = Sample {
            loop_ns,
            cpu_ns,
            ..Sample::default()
        };
        if matches!(t, Tracer::Auditor | Tracer::AuditorNoStacks) {
            let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&self.report)?)?;
            s.dropped = doc["stats"]["dropped"]
                .as_u64()
                .context("report has no stats.dropped")?;
            s.events = doc["stats"]["events"].as_u64().unwrap_or(0);
        }
        Ok(s)
    }

    /// `rounds` of every tracer in `tracers`, interleaved; strace only in
    /// the first `strace_rounds`.
    fn rounds(
        &self,
        name: &str,
        w: &Workload,
        rounds: usize,
        strace_rounds: usize,
    ) -> Result<Vec<Vec<Sample>>> {
        let mut all: Vec<Vec<Sample>> = vec![Vec::new(); TRACERS.len()];
        for round in 0..rounds {
            let mut line = format!("  {name}, round {}:", round + 1);
            for (i, &t) in TRACERS.iter().enumerate() {
                if t == Tracer::Strace && round >= strace_rounds {
                    continue;
                }
                let s = self.run(t, w)?;
                line.push_str(&format!(" {t:?} {:.3}s", s.loop_ns as f64 / 1e9));
                all[i].push(s);
            }
            println!("{line}");
        }
        Ok(all)
    }
}

/// What stacks cost: the auditor with and without them, interleaved, on
/// `w` and on `run -- true` (wall), medians over `rounds`.
fn stacks_case(
    b: &Bench<'_>,
    case: &str,
    w: &Workload,
    calls: u64,
    rounds: usize,
) -> Result<String> {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let (mut start_on, mut start_off) = (Vec::new(), Vec::new());
    let wall = |extra: &[&str]| -> Result<u64> {
        let t = Instant::now();
        let st = Command::new(b.auditor)
            .arg("run")
            .args(extra)
            .args(["--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("auditor run -- true failed: {st}");
        }
        Ok(t.elapsed().as_nanos() as u64)
    };
    for round in 0..rounds {
        let a = b.run(Tracer::Auditor, w)?;
        let n = b.run(Tracer::AuditorNoStacks, w)?;
        println!(
            "  stacks, round {}: on {:.3}s off {:.3}s",
            round + 1,
            a.loop_ns as f64 / 1e9,
            n.loop_ns as f64 / 1e9
        );
        on.push(a);
        off.push(n);
        start_on.push(wall(&[])?);
        start_off.push(wall(&["--no-stacks"])?);
    }
    let ratio = |m: fn(&[Sample]) -> u64| m(&on) as f64 / m(&off).max(1) as f64;
    let (s_on, s_off) = (median(start_on), median(start_off));
    let per_call = (cpu_median(&on) as f64 - cpu_median(&off) as f64) / calls.max(1) as f64;
    Ok(format!(
        "| stacks: {case}, auditor with / `--no-stacks` | | | {} / {} | | | **{:.3}**, cpu **{:.3}**, CPU ns added per traced call {per_call:.0} (start-up `run -- true` {:.0} ms / {:.0} ms) | {} |",
        cell(&on, &off),
        cell(&off, &off),
        ratio(loop_median),
        ratio(cpu_median),
        s_on as f64 / 1e6,
        s_off as f64 / 1e6,
        worst_dropped(&on).max(worst_dropped(&off))
    ))
}

/// `0.534 s 1.12x, cpu 0.210 s 1.30x`: the median loop time and CPU
/// time, each with its ratio to untraced.
fn cell(samples: &[Sample], base: &[Sample]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    let (l, c) = (loop_median(samples), cpu_median(samples));
    format!(
        "{:.3} s {:.2}x, cpu {:.3} s {:.2}x",
        l as f64 / 1e9,
        l as f64 / loop_median(base).max(1) as f64,
        c as f64 / 1e9,
        c as f64 / cpu_median(base).max(1) as f64
    )
}

fn loop_median(samples: &[Sample]) -> u64 {
    median(samples.iter().map(|s| s.loop_ns).collect())
}

fn cpu_median(samples: &[Sample]) -> u64 {
    median(samples.iter().map(|s| s.cpu_ns).collect())
}

fn worst_dropped(samples: &[Sample]) -> u64 {
    samples.iter().map(|s| s.dropped).max().unwrap_or(0)
}

/// A row of the table from the samples of each tracer.
fn row(case: &str, all: &[Vec<Sample>]) -> String {
    let mut cells: Vec<String> = all.iter().map(|s| cell(s, &all[0])).collect();
    cells[0] = format!(
        "{:.3} s, cpu {:.3} s",
        loop_median(&all[0]) as f64 / 1e9,
        cpu_median(&all[0]) as f64 / 1e9
    );
    let ratio = |m: fn(&[Sample]) -> u64| m(&all[2]) as f64 / m(&all[1]).max(1) as f64;
    format!(
        "| {case} | {} | **{:.3}**, cpu **{:.3}** | {} |",
        cells.join(" | "),
        ratio(loop_median),
        ratio(cpu_median),
        worst_dropped(&all[2])
    )
}

/// The `auditor: timing: PHASE N ms (resident M MiB)` lines of a run.
fn timings(stderr: &str) -> Vec<(String, f64, f64)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("auditor: timing: "))
        .filter_map(|l| {
            let (phase, rest) = l.rsplit_once(" ms")?;
            let (name, ms) = phase.rsplit_once(' ')?;
            let rss = rest
                .trim()
                .strip_prefix("(resident ")
                .and_then(|r| r.strip_suffix(" MiB)"))
                .and_then(|r| r.parse().ok())
                .unwrap_or(0.0);
            Some((name.to_string(), ms.parse().ok()?, rss))
        })
        .collect()
}

fn phase(t: &[(String, f64, f64)], name: &str) -> Option<(f64, f64)> {
    t.iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, ms, rss)| (*ms, *rss))
}

/// The peak resident line of `--timings` (MiB).
fn peak(stderr: &str) -> f64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("auditor: timing: peak resident "))
        .and_then(|l| l.strip_suffix(" MiB"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Start-up: the wall time of each tracer around `true`, and the
/// auditor's phases (`--timings`), medians over `n` runs.
fn startup(auditor: &Path, n: usize) -> Result<String> {
    let wall = |cmd: &mut Command| -> Result<(u64, String)> {
        let start = Instant::now();
        let out = cmd
            .stdout(Stdio::null())
            .output()
            .with_context(|| format!("{cmd:?}"))?;
        let ns = start.elapsed().as_nanos() as u64;
        if !out.status.success() {
            bail!("{cmd:?} failed: {}", out.status);
        }
        Ok((ns, String::from_utf8_lossy(&out.stderr).into_owned()))
    };
    let mut walls: Vec<Vec<u64>> = vec![Vec::new(); TRACERS.len()];
    let mut phases: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for _ in 0..n {
        walls[0].push(wall(&mut Command::new("true"))?.0);
        walls[1].push(
            wall(
                Command::new(auditor)
                    .args(["run", "--", "true"])
                    .env("AUDITOR_BENCH_EMPTY_PROBES", "1"),
            )?
            .0,
        );
        let (ns, err) = wall(Command::new(auditor).args(["run", "--timings", "--", "true"]))?;
        walls[2].push(ns);
        for (name, ms, _) in timings(&err) {
            let key = if name.starts_with("verifier ") && name != "verifier (all programs)" {
                continue;
            } else {
                name
            };
            phases.entry(key).or_default().push(ms);
        }
        walls[3].push(
            wall(Command::new("bpftrace").args([
                "-e",
                "tracepoint:raw_syscalls:sys_enter /pid == cpid/ { @calls[pid, args->id, args->args[0]] = count(); }",
                "-c",
                "/bin/true",
            ]))?
            .0,
        );
        walls[4]
            .push(wall(Command::new("strace").args(["-f", "-qq", "-o", "/dev/null", "true"]))?.0);
    }
    let m: Vec<u64> = walls.into_iter().map(median).collect();
    let ms = |ns: u64| format!("{:.0} ms", ns as f64 / 1e6);
    let med = |name: &str| {
        phases
            .get(name)
            .map(|v| {
                let mut v = v.clone();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
            .unwrap_or(0.0)
    };
    let detail = format!(
        "verifier {:.0} + kernel BTF {:.0} + loader {:.0} + maps {:.0} + attach {:.0} + detach {:.0}",
        med("verifier (all programs)"),
        med("btf offsets"),
        med("loader (kernel BTF parsed by aya)"),
        med("object and maps"),
        med("attach"),
        med("detach"),
    );
    Ok(format!(
        "| start-up: `run -- true`, wall, median of {n} | {} | {} | **{}** ({detail}) | {} | {} | {:.2} | |",
        ms(m[0]),
        ms(m[1]),
        ms(m[2]),
        ms(m[3]),
        ms(m[4]),
        m[2] as f64 / m[1].max(1) as f64
    ))
}

/// The auditor on a program that creates and writes `files` files and
/// leaves them all dirty: every file is a finding. Peak resident memory
/// with `--format json`, the bytes per file above what the auditor held
/// once attached (the ring buffer, mapped twice, is most of that), and how
/// long the report took once the workload ended.
fn files_case(auditor: &Path, workload: &Path, files: u64, dir: &Path) -> Result<String> {
    let fresh = |name: &str| -> Result<PathBuf> {
        let d = dir.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        std::fs::File::create(d.join("go"))?;
        Ok(d)
    };
    let n = files.to_string();
    let d = fresh("files-untraced")?;
    let out = Command::new(workload)
        .arg(&d)
        .args([n.as_str(), "0"])
        .output()?;
    let (untraced, _) = printed(&out.stdout)?;
    let d = fresh("files-audited")?;
    let report = dir.join("files-report.json");
    let out = Command::new(auditor)
        .args(["run", "--timings", "--format", "json", "--output"])
        .arg(&report)
        .arg("--")
        .arg(workload)
        .arg(&d)
        .args([n.as_str(), "0"])
        .output()?;
    if !matches!(out.status.code(), Some(0) | Some(1)) {
        bail!("auditor on files_workload failed: {}", out.status);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let t = timings(&err);
    let (audited, _) = printed(&out.stdout)?;
    let after_ms = ["drain after the end", "verdicts", "report"]
        .iter()
        .filter_map(|p| phase(&t, p))
        .map(|(ms, _)| ms)
        .sum::<f64>();
    let attached = phase(&t, "launch").map_or(0.0, |(_, rss)| rss);
    let peak = peak(&err);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    let found = doc["counts"]["total"].as_u64().unwrap_or(0);
    let dropped = doc["stats"]["dropped"].as_u64().unwrap_or(0);
    let per_file = (peak - attached) * 1024.0 / files.max(1) as f64;
    for name in ["files-untraced", "files-audited"] {
        let _ = std::fs::remove_dir_all(dir.join(name));
    }
    Ok(format!(
        "| {files} files created and written, left dirty, `--format json` | {:.3} s | | {:.3} s ({:.2}x): **peak {peak:.0} MiB**, {attached:.0} MiB of it once attached, **{per_file:.1} KiB per file**; {found} findings; **report done {:.2} s after the workload** | | | | {dropped} |",
        untraced as f64 / 1e9,
        audited as f64 / 1e9,
        audited as f64 / untraced.max(1) as f64,
        after_ms / 1e3,
    ))
}

pub fn run(auditor: &Path, o: &Options) -> Result<()> {
    for bin in ["write_workload", "flood_workload", "files_workload"] {
        build_workload(bin)?;
    }
    let bin = |b: &str| root().join("target/release").join(b);
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let b = Bench {
        auditor,
        report: dir.join("report.json"),
    };
    let data = dir.join("workload.dat");
    let s = |v: &Path| v.to_str().unwrap().to_owned();
    let writes = |n: u64, every: u64, threads: Option<u64>| {
        let mut argv = vec![
            s(&bin("write_workload")),
            s(&data),
            n.to_string(),
            every.to_string(),
        ];
        argv.extend(threads.map(|t| t.to_string()));
        Workload {
            argv,
            // write, fsync, fdatasync
            syscalls: &[1, 74, 75],
        }
    };
    // The flood runs as nobody: any local user can make these calls, and
    // the file it opens is one nobody may read.
    let flood_file = dir.join("flood.txt");
    std::fs::write(&flood_file, "polled\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&flood_file, std::fs::Permissions::from_mode(0o644))?;
    }
    let flood = Workload {
        argv: vec![
            "/usr/bin/setpriv".into(),
            "--reuid=65534".into(),
            "--regid=65534".into(),
            "--clear-groups".into(),
            s(&bin("flood_workload")),
            s(&flood_file),
            o.flood.to_string(),
        ],
        // openat, close
        syscalls: &[257, 3],
    };

    println!(
        "every tracer in turn, {} rounds (strace -f in the first {}), medians of the workloads' own loop times",
        o.rounds, o.strace_rounds
    );
    let one = b.rounds(
        "1 writer",
        &writes(o.writes, o.fsync_every, None),
        o.rounds,
        o.strace_rounds,
    )?;
    let alone = b.rounds(
        "writes alone",
        &writes(o.writes, 0, None),
        o.rounds,
        o.strace_rounds.min(1),
    )?;
    let few = o.rounds.div_ceil(2);
    let many = b.rounds(
        "8 writers",
        &writes(o.writer_writes, o.fsync_every, Some(o.writers)),
        few,
        o.strace_rounds.min(1),
    )?;
    let flooded = b.rounds("flood", &flood, few, o.strace_rounds.min(1))?;
    let stacks = stacks_case(
        &b,
        &format!(
            "1 writer, {} writes, fdatasync every {}",
            o.writes, o.fsync_every
        ),
        &writes(o.writes, o.fsync_every, None),
        // The writes and their fdatasyncs.
        o.writes + o.writes.checked_div(o.fsync_every).unwrap_or(0),
        few,
    )?;
    let start = startup(auditor, o.startups)?;
    let files = files_case(auditor, &bin("files_workload"), o.files, &dir)?;

    // CPU time: the waits for a CPU on a shared VM are as large as what
    // is measured here.
    let per_write = |all: &[Vec<Sample>], i: usize| {
        let base = cpu_median(&all[0]) as f64;
        (cpu_median(&all[i]) as f64 - base) / o.writes as f64
    };
    let calls_per_s = |all: &[Vec<Sample>], i: usize| {
        let m = loop_median(&all[i]);
        if m == 0 {
            "-".to_string()
        } else {
            format!("{:.2}M", 2.0 * o.flood as f64 / (m as f64 / 1e9) / 1e6)
        }
    };
    println!();
    println!(
        "| case | untraced | floor (probes attached, returning at once) | auditor | bpftrace | strace -f | auditor / floor | dropped |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let measured = [
        (
            format!(
                "1 writer: {} writes of 64 bytes, fdatasync every {}",
                o.writes, o.fsync_every
            ),
            &one,
        ),
        (
            format!(
                "1 writer: {} writes alone (CPU ns added per write: floor {:.0}, auditor {:.0}, bpftrace {:.0})",
                o.writes,
                per_write(&alone, 1),
                per_write(&alone, 2),
                per_write(&alone, 3)
            ),
            &alone,
        ),
        (
            format!(
                "{} writer threads x {} writes, fdatasync every {}",
                o.writers, o.writer_writes, o.fsync_every
            ),
            &many,
        ),
        (
            format!(
                "open/close flood by an unprivileged process, {} pairs (syscalls/s: untraced {}, floor {}, auditor {}, bpftrace {}, strace {})",
                o.flood,
                calls_per_s(&flooded, 0),
                calls_per_s(&flooded, 1),
                calls_per_s(&flooded, 2),
                calls_per_s(&flooded, 3),
                calls_per_s(&flooded, 4),
            ),
            &flooded,
        ),
    ];
    for (case, all) in &measured {
        println!("{}", row(case, all));
    }
    println!("{start}");
    println!("{files}");
    println!("{stacks}");
    println!();
    println!(
        "events the auditor captured in its last run: 1 writer {}, 8 writers {}, flood {}",
        one[2].last().map_or(0, |s| s.events),
        many[2].last().map_or(0, |s| s.events),
        flooded[2].last().map_or(0, |s| s.events),
    );
    Ok(())
}
