//! Owning the terminal: raw mode, the alternate screen, and the process's
//! stdio moved out of the way so nothing (our own messages, the traced
//! command's output) writes over the UI. Restored on drop, and by a panic
//! hook before the panic message is printed, so a crash leaves a usable
//! shell with the message on it.

use std::{
    fs::File,
    io::{self, BufWriter, IsTerminal},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        Once,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor::Show,
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
};

use crate::error::UserError;

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Duplicates of the original stdin, stdout and stderr, put back on restore.
static SAVED: [AtomicI32; 3] = [AtomicI32::new(-1), AtomicI32::new(-1), AtomicI32::new(-1)];
static HOOK: Once = Once::new();

pub type Tty = Terminal<CrosstermBackend<BufWriter<File>>>;

/// Refuses early, with one line, when there is no terminal to draw on.
pub fn require_terminal() -> Result<(), UserError> {
    if !io::stdout().is_terminal() {
        return Err(UserError::new(
            "--tui needs a terminal, but stdout is not one; drop --tui (use --output FILE for a report)",
        ));
    }
    Ok(())
}

/// The terminal while the UI owns it.
pub struct Guard {
    pub terminal: Tty,
}

impl Guard {
    /// Takes the terminal. From here until drop, fds 0/1/2 are /dev/null,
    /// `log` and `log` (children inherit them), and the UI draws on
    /// /dev/tty.
    pub fn enter(log: &Path) -> anyhow::Result<Guard> {
        require_terminal()?;
        let tty = File::options()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|e| UserError::new(format!("--tui: cannot open /dev/tty: {e}")))?;
        let sink = crate::private::open_append(log)
            .map_err(|e| UserError::new(format!("--tui: cannot open {}: {e}", log.display())))?;
        let null = File::options().read(true).open("/dev/null")?;
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        for (fd, with) in [
            (0, null.as_raw_fd()),
            (1, sink.as_raw_fd()),
            (2, sink.as_raw_fd()),
        ] {
            // Close-on-exec: the command launched under the view must not
            // inherit our saved terminal.
            // SAFETY: plain fd duplication; the saved copies are closed on restore.
            let saved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            SAVED[fd as usize].store(saved, Ordering::SeqCst);
            // SAFETY: both fds are open; `fd` now refers to `with`'s file.
            unsafe { libc::dup2(with, fd) };
        }
        let mut out = BufWriter::new(tty);
        if let Err(e) = execute!(out, EnterAlternateScreen) {
            restore();
            return Err(e.into());
        }
        match Terminal::new(CrosstermBackend::new(out)) {
            Ok(mut terminal) => {
                let _ = terminal.clear();
                Ok(Guard { terminal })
            }
            Err(e) => {
                restore();
                Err(e.into())
            }
        }
    }

    /// False once a panic elsewhere gave the terminal back: stop drawing.
    pub fn active(&self) -> bool {
        ACTIVE.load(Ordering::SeqCst)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Gives the terminal and stdio back, once, whoever calls first (the guard
/// or the panic hook of any thread).
fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = disable_raw_mode();
    if let Ok(mut tty) = File::options().write(true).open("/dev/tty") {
        let _ = execute!(tty, LeaveAlternateScreen, Show);
    }
    for (fd, saved) in SAVED.iter().enumerate() {
        let saved = saved.swap(-1, Ordering::SeqCst);
        if saved >= 0 {
            // SAFETY: `saved` is our duplicate of the original fd.
            unsafe {
                libc::dup2(saved, fd as i32);
                libc::close(saved);
            }
        }
    }
}
