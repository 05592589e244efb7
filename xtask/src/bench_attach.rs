//! `cargo xtask bench-attach`: `auditor attach --pid` on a process that
//! creates, writes and closes N distinct files over its life, with a low
//! `--max-files`, sampling the auditor's resident memory from /proc and the
//! number of file states it holds from its metrics. Prints the figures and
//! checks the two promises of a long attach: memory stays under 100 MiB,
//! and no more than `--max-files` file states are held at any sample (so
//! no file from before the last `max_files` is still tracked).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{build_workload, root};

/// Resident memory the attach must stay under.
const RSS_LIMIT_KIB: u64 = 100 * 1024;
/// Files the workload keeps on disk at once: more than the cap, so the
/// states the auditor lets go still hold unsynced data.
const WINDOW: u64 = 20_000;
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A `kB` field of /proc/PID/status (`VmRSS`, `RssAnon`...).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `auditor_tracked_inodes` from the metrics page, if it answers.
fn tracked_inodes(addr: &str) -> Option<u64> {
    let mut c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut page = String::new();
    c.read_to_string(&mut page).ok()?;
    page.lines()
        .find_map(|l| l.strip_prefix("auditor_tracked_inodes "))
        .and_then(|v| v.trim().parse().ok())
}

pub fn run(auditor: &Path, files: u64, max_files: u64) -> Result<()> {
    let workload = build_workload("files_workload")?;
    let dir = root().join("target/bench-attach");
    let _ = std::fs::remove_dir_all(&dir);
    let work = dir.join("files");
    std::fs::create_dir_all(&work)?;
    let report = dir.join("report.json");
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };

    let mut w = Command::new(&workload)
        .arg(&work)
        .arg(files.to_string())
        .arg(WINDOW.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the workload")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !work.join("ready").exists() {
        if Instant::now() > deadline {
            bail!("the workload never became ready");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut a = Command::new(auditor)
        .args(["attach", "--pid", &w.id().to_string()])
        .args(["--max-files", &max_files.to_string()])
        .args(["--metrics-addr", &addr, "--format", "json", "--output"])
        .arg(&report)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting auditor attach")?;
    let (tx, rx) = mpsc::channel();
    let err = a.stderr.take().context("no stderr")?;
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("  {l}");
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains("attached to") => break,
            Ok(_) => {}
            Err(_) if Instant::now() > deadline => bail!("auditor never attached"),
            Err(_) => {}
        }
    }
    println!(
        "workload: {files} distinct files created, written (100 bytes, never fsynced) and closed; \
         at most {WINDOW} on disk; auditor attach --pid --max-files {max_files}"
    );
    let t0 = Instant::now();
    std::fs::File::create(work.join("go"))?;

    let apid = a.id();
    let (mut peak_rss, mut last_rss, mut peak_tracked, mut samples) = (0u64, 0u64, 0u64, 0u64);
    // The ring buffer the kernel shares with the auditor is resident too
    // (RssFile/RssShmem); the heap is RssAnon.
    let mut peak_anon = 0u64;
    let mut next_print = Instant::now() + Duration::from_secs(10);
    while a.try_wait()?.is_none() {
        if let Some(rss) = status_kib(apid, "VmRSS") {
            peak_rss = peak_rss.max(rss);
            last_rss = rss;
        }
        peak_anon = peak_anon.max(status_kib(apid, "RssAnon").unwrap_or(0));
        if let Some(t) = tracked_inodes(&addr) {
            peak_tracked = peak_tracked.max(t);
            samples += 1;
        }
        if Instant::now() >= next_print {
            next_print += Duration::from_secs(10);
            println!(
                "  {:>5.0}s  rss {:.1} MiB  tracked files {}",
                t0.elapsed().as_secs_f64(),
                last_rss as f64 / 1024.0,
                peak_tracked
            );
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    let wall = t0.elapsed();
    let mut loop_ns = String::new();
    w.stdout
        .take()
        .context("no stdout")?
        .read_to_string(&mut loop_ns)?;
    if !w.wait()?.success() {
        bail!("the workload failed");
    }
    let status = a.wait()?;
    if !matches!(status.code(), Some(0) | Some(1)) {
        bail!("auditor attach failed ({status})");
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    let stat = |k: &str| doc["stats"][k].as_u64().unwrap_or(0);
    let loop_s = loop_ns
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e9;
    println!(
        "workload loop {loop_s:.1}s; attach ran {:.1}s",
        wall.as_secs_f64()
    );
    println!(
        "events {} (dropped {}); files seen {}; evicted {} ({} with unsynced data); \
         tracked at the end {}, at most {} over {} samples (limit {})",
        stat("events"),
        stat("dropped"),
        stat("files_tracked"),
        stat("evicted_inodes"),
        stat("evicted_dirty"),
        stat("tracked_inodes"),
        peak_tracked,
        samples,
        stat("max_files"),
    );
    println!(
        "auditor resident memory: peak {:.1} MiB, of which heap (RssAnon) {:.1} MiB (limit {} MiB)",
        peak_rss as f64 / 1024.0,
        peak_anon as f64 / 1024.0,
        RSS_LIMIT_KIB / 1024
    );
    let rss_ok = peak_rss > 0 && peak_rss < RSS_LIMIT_KIB;
    let tracked_ok =
        samples > 0 && peak_tracked <= max_files && stat("tracked_inodes") <= max_files;
    let seen_ok = stat("files_tracked") >= files;
    println!(
        "memory under {} MiB: {}; no file from before the last {max_files} tracked: {}; every file seen: {}",
        RSS_LIMIT_KIB / 1024,
        if rss_ok { "met" } else { "NOT met" },
        if tracked_ok { "met" } else { "NOT met" },
        if seen_ok { "yes" } else { "NO" },
    );
    if !(rss_ok && tracked_ok) {
        bail!("bench-attach targets not met");
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
