//! Freezing and killing the traced processes, through the probes' maps by
//! raw fd (the map objects stay owned by the running capture), and turning
//! Ctrl-C into a prompt, clean stop.

use std::{
    os::fd::RawFd,
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
    time::{Duration, Instant},
};

use crate::capture::maps::{signal_all, traced_pids};

/// Stops every traced process and waits until each of its threads is
/// stopped (or gone), so nothing more reaches the page cache while the
/// believed state is read.
pub fn stop_all(traced_fd: RawFd) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids = traced_pids(traced_fd);
        for &pid in &pids {
            // SAFETY: kill with a pid we trace.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
        if pids.iter().all(|&p| all_threads_stopped(p)) || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // State follows the parenthesised comm, which may hold spaces.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        matches!(state, None | Some('T' | 't' | 'Z' | 'X'))
    })
}

/// SIGKILL to every traced process; the exit probe takes them off the map.
pub fn kill_all(traced_fd: RawFd) {
    signal_all(traced_fd, libc::SIGKILL);
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The traced map of the run in progress (-1 between runs).
static TRACED_FD: AtomicI32 = AtomicI32::new(-1);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Acquire)
}

/// Publishes the traced map of the run in progress, for the interrupt
/// watcher to kill.
pub fn set_current_run(traced_fd: Option<RawFd>) {
    TRACED_FD.store(traced_fd.unwrap_or(-1), Ordering::Release);
}

/// Takes SIGINT and SIGTERM away from signal handlers: they are blocked in
/// every thread (threads inherit the mask; spawned commands get a clean
/// one) and a watcher thread takes them with sigwait, kills the traced
/// processes so the run in progress ends now, and leaves the rest to the
/// normal cleanup path. Call before any other thread exists.
pub fn watch_interrupts() {
    // SAFETY: plain sigset manipulation on locals.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        loop {
            let mut sig = 0;
            // SAFETY: valid set and out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            INTERRUPTED.store(true, Ordering::Release);
            let fd = TRACED_FD.load(Ordering::Acquire);
            if fd >= 0 {
                // Twice: a process forking while the first pass ran.
                kill_all(fd);
                std::thread::sleep(Duration::from_millis(20));
                kill_all(fd);
            }
        }
    });
}
