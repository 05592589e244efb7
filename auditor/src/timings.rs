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
static PHASES: Mutex<Vec<(String, Duration)>> = Mutex::new(Vec::new());
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
        PHASES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((phase.into(), d));
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
    for (phase, d) in phases {
        eprintln!("auditor: timing: {phase} {:.1} ms", d.as_secs_f64() * 1e3);
    }
    if let Some(t0) = *STARTED.lock().unwrap_or_else(|e| e.into_inner()) {
        eprintln!(
            "auditor: timing: total {:.1} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
}
