//! Running a command under the probes and following it and every descendant
//! until the last one exits.

use std::{
    ffi::OsString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
};

use anyhow::Result;
use auditor_analyzer::{
    ExitStatusInfo,
    event::{Event, EventKind},
};

use super::{
    probes::{Probes, trace_self_before_exec},
    pump::monotonic_ns,
};
use crate::capture::procfs::{OpenFd, ProcFs};
use crate::error::UserError;

/// Finds `program` the way execvp would, so "command not found" is one clear
/// line before any probe is loaded.
pub fn resolve_program(program: &str) -> Result<PathBuf, UserError> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if is_exec(&p) {
            Ok(p)
        } else if p.exists() {
            Err(UserError::new(format!(
                "{program} is not an executable file"
            )))
        } else {
            Err(UserError::new(format!("command not found: {program}")))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_exec(p))
        .ok_or_else(|| UserError::new(format!("command not found: {program} (not in PATH)")))
}

static CHILD: AtomicI32 = AtomicI32::new(0);

/// Passes a SIGTERM meant for us (a supervisor stopping us) on to the
/// command; a terminal's SIGINT already reached the whole foreground
/// group, the command included. The stop itself is the pipeline's.
pub fn forward_sigterm() {
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, libc::SIGTERM) };
    }
}

/// The fds a command we launch inherits: ours that are not close-on-exec,
/// which whoever started us opened (a shell's `> out.log`), or the live
/// view's command log.
fn inherited_fds() -> Vec<OpenFd> {
    match ProcFs::default().open_files(std::process::id()) {
        Ok(fds) => fds
            .into_iter()
            .filter(|o| o.flags & libc::O_CLOEXEC as u32 == 0)
            .collect(),
        Err(e) => {
            eprintln!(
                "auditor: cannot read /proc/self/fd ({e}): the command's redirected output is judged as its own data"
            );
            Vec::new()
        }
    }
}

/// The events that tell the analyzer what a process already was and held
/// when tracing began: who it is, then each fd it had open (`from_caller`
/// says which of them its caller set up as its output). Launching and
/// attaching describe processes the same way.
pub fn start_events(
    pid: u32,
    comm: &str,
    start: EventKind,
    fds: Vec<OpenFd>,
    from_caller: impl Fn(&OpenFd) -> bool,
) -> Vec<Event> {
    let at_start = |kind| Event {
        seq: 0,
        ts_ns: monotonic_ns(),
        pid,
        tid: pid,
        comm: comm.to_owned(),
        stack: None,
        kind,
        in_process: Default::default(),
    };
    let mut evs = vec![at_start(start)];
    evs.extend(fds.into_iter().map(|o| {
        at_start(EventKind::FdAtStart {
            fd: o.fd,
            cloexec: o.flags & libc::O_CLOEXEC as u32 != 0,
            from_caller: from_caller(&o),
            path: o.path,
            file: o.info,
        })
    }));
    evs
}

/// A command launched under the probes, traced from its first
/// instruction, and the thread that reaps it and every descendant.
pub struct Launched {
    done: Arc<AtomicBool>,
    /// Readable once `done` is set, so the capture loop wakes at the end
    /// instead of at its next poll timeout.
    done_fd: Arc<OwnedFd>,
    exit: Arc<Mutex<Option<ExitStatusInfo>>>,
    reaper: Option<std::thread::JoinHandle<()>>,
}

impl Launched {
    /// Starts `argv`; returns it with the events describing it at launch.
    pub fn spawn(probes: &Probes, argv: &[String]) -> Result<(Launched, Vec<Event>)> {
        let program = resolve_program(&argv[0])?;
        // Orphaned descendants are reparented to us, so "the last one
        // exited" is simply waitpid(-1) reporting ECHILD.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let inherited = inherited_fds();
        let map_fd = probes.traced_map_fd();
        let mut cmd = std::process::Command::new(&program);
        cmd.arg0(&argv[0]).args(&argv[1..]);
        // SAFETY: the hook only makes raw syscalls (getpid, bpf).
        unsafe {
            cmd.pre_exec(move || trace_self_before_exec(map_fd));
        }
        let child = cmd
            .spawn()
            .map_err(|e| UserError::new(format!("cannot run {}: {e}", argv[0])))?;
        let child_pid = child.id() as i32;
        CHILD.store(child_pid, Ordering::Relaxed);
        drop(child);

        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let comm: String = argv[0]
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .take(15)
            .collect();
        let start = EventKind::ProcessStart {
            cwd,
            exe: program.display().to_string(),
            argv: argv.to_vec(),
            // SAFETY: getpid has no preconditions.
            ppid: unsafe { libc::getpid() } as u32,
            launched: true,
        };
        // Inherited fds were opened by whoever started us: the command's
        // output, not its data.
        let events = start_events(child_pid as u32, &comm, start, inherited, |_| true);

        let done = Arc::new(AtomicBool::new(false));
        let exit = Arc::new(Mutex::new(None));
        // SAFETY: eventfd with flags only; the fd is owned at once.
        let done_fd = Arc::new(unsafe {
            let fd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            if fd < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            OwnedFd::from_raw_fd(fd)
        });
        let reaper = {
            let done = done.clone();
            let exit = exit.clone();
            let done_fd = done_fd.clone();
            std::thread::spawn(move || {
                reap(child_pid, &exit, &done);
                let one: u64 = 1;
                // SAFETY: an 8-byte write to our eventfd.
                unsafe { libc::write(done_fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            })
        };
        Ok((
            Launched {
                done,
                done_fd,
                exit,
                reaper: Some(reaper),
            },
            events,
        ))
    }

    /// An fd that turns readable when the command and all its descendants
    /// have exited.
    pub fn done_fd(&self) -> RawFd {
        self.done_fd.as_raw_fd()
    }

    /// The command and all its descendants have exited.
    pub fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// How the command ended if it did, without waiting for the rest (the
    /// reaper goes on reaping until we exit).
    pub fn leave(self) -> Option<ExitStatusInfo> {
        CHILD.store(0, Ordering::Relaxed);
        *self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the reaper; how the command ended.
    pub fn wait(mut self) -> Option<ExitStatusInfo> {
        if let Some(r) = self.reaper.take() {
            let _ = r.join();
        }
        CHILD.store(0, Ordering::Relaxed);
        *self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reaps every child until none is left, keeping how the command ended.
fn reap(child_pid: i32, exit: &Mutex<Option<ExitStatusInfo>>, done: &AtomicBool) {
    loop {
        let mut status = 0;
        // SAFETY: valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if pid == child_pid {
            let e = if libc::WIFSIGNALED(status) {
                ExitStatusInfo::Signal(libc::WTERMSIG(status))
            } else {
                ExitStatusInfo::Code(libc::WEXITSTATUS(status))
            };
            *exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
    }
    done.store(true, Ordering::Release);
}
