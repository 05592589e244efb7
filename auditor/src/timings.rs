//! `--timings`: where a run's wall time goes (BTF, maps, the verifier for
//! each program, attach, the command, the report, detach), one line per
//! phase on stderr at exit. Start-up is what a user waits for on every run,
//! so it is measured where it is spent, not guessed.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Each phase: its name, how long it took, and the resident memory at its
/// end (KiB).
static PHASES: Mutex<Vec<(String, Duration, u64)>> = Mutex::new(Vec::new());
static STARTED: Mutex<Option<Instant>> = Mutex::new(None);

/// Turns recording on (the phases cost a lock each, so only when asked);
/// `main_started` is when `main` began, the start of the total.
pub fn enable(main_started: Instant) {
    ENABLED.store(true, Ordering::Relaxed);
    *STARTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(main_started);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Records that `phase` took `d`.
pub fn record(phase: impl Into<String>, d: Duration) {
    if enabled() {
        PHASES.lock().unwrap_or_else(|e| e.into_inner()).push((
            phase.into(),
            d,
            resident_kib("VmRSS"),
        ));
    }
}

/// Records the time since `start` as `phase`, and returns now (the start
/// of the next phase).
pub fn since(phase: &str, start: Instant) -> Instant {
    let now = Instant::now();
    record(phase, now - start);
    now
}

/// Prints every phase, then the total since `main` began, one line each:
/// `auditor: timing: verifier sys_exit 12.3 ms`.
pub fn print() {
    if !enabled() {
        return;
    }
    let phases = std::mem::take(&mut *PHASES.lock().unwrap_or_else(|e| e.into_inner()));
    for (phase, d, rss) in phases {
        eprintln!(
            "auditor: timing: {phase} {:.1} ms (resident {:.1} MiB)",
            d.as_secs_f64() * 1e3,
            rss as f64 / 1024.0
        );
    }
    if let Some(t0) = *STARTED.lock().unwrap_or_else(|e| e.into_inner()) {
        eprintln!(
            "auditor: timing: total {:.1} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
        eprintln!(
            "auditor: timing: peak resident {:.1} MiB",
            resident_kib("VmHWM") as f64 / 1024.0
        );
    }
}

/// A `kB` line of /proc/self/status (`VmRSS`, `VmHWM`), 0 if unreadable.
fn resident_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
