//! SIGINT and SIGTERM while capturing: one count of stop requests, read by
//! the capture loop. A launched command ends the run itself (a terminal's
//! SIGINT reaches it directly; a SIGTERM meant for us is passed on), and a
//! second signal reports at once what was seen; under attach the first
//! signal stops cleanly and a second exits at once.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::capture::launch;

static STOPS: AtomicI32 = AtomicI32::new(0);

/// What the signals mean for the run being captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// A launched command: SIGTERM goes on to it; the run ends with it.
    Launch,
    /// Attached processes are not ours: stop, detach, report; a second
    /// signal exits at once (closing every probe link, which detaches).
    Attach,
}

extern "C" fn on_launch_signal(sig: libc::c_int) {
    if sig == libc::SIGTERM {
        launch::forward_sigterm();
    }
    if STOPS.fetch_add(1, Ordering::Relaxed) == 1 {
        let msg = b"auditor: interrupted again: reporting what was seen so far (the command is left running)\n";
        // SAFETY: write is async-signal-safe.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
}

extern "C" fn on_attach_signal(_sig: libc::c_int) {
    if STOPS.fetch_add(1, Ordering::Relaxed) >= 1 {
        let msg = b"auditor: interrupted again: stopped without a report (probes detached)\n";
        crate::output::remove_temp_files();
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(2);
        }
    }
}

/// Installs the handlers for `policy`.
pub fn install(policy: Policy) {
    let handler = match policy {
        Policy::Launch => on_launch_signal as *const (),
        Policy::Attach => on_attach_signal as *const (),
    };
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handlers only touch an atomic and call kill, write
        // and _exit. A handler (not SIG_IGN) resets to the default in an
        // exec'd command.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

/// Whether a stop was asked for (a signal, or [`request_stop`]).
pub fn stop_requested() -> bool {
    STOPS.load(Ordering::Relaxed) > 0
}

/// Whether a second stop came (`run`: report now, without waiting for
/// the command to end).
pub fn interrupted_again() -> bool {
    STOPS.load(Ordering::Relaxed) >= 2
}

/// Asks the capture to stop, as a first signal would (the live view's quit).
pub fn request_stop() {
    STOPS.fetch_max(1, Ordering::Relaxed);
}
