//! Running a command under the probes and following it and every descendant
//! until the last one exits.

use std::{
    ffi::OsString,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use auditor_analyzer::event::{Event, EventKind};
use aya::maps::RingBuf;

use super::{
    decode::{DecodeStats, Decoder},
    probes::{KernelStats, Probes, trace_self_before_exec},
};
use crate::attach::procfs::{OpenFd, ProcFs};
use crate::error::UserError;

/// How the traced command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandExit {
    Code(i32),
    Signal(i32),
}

/// What a traced run produced besides its events.
#[derive(Debug)]
pub struct Outcome {
    pub exit: Option<CommandExit>,
    pub kernel: KernelStats,
    pub decode: DecodeStats,
    /// Wall-clock start and end, seconds since the epoch.
    pub started: std::time::SystemTime,
    pub ended: std::time::SystemTime,
}

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

static INTERRUPTS: AtomicI32 = AtomicI32::new(0);
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // The terminal already sent SIGINT to the whole foreground group, the
    // command included; for SIGTERM (a supervisor stopping us) pass it on.
    if sig == libc::SIGTERM {
        let child = CHILD.load(Ordering::Relaxed);
        if child > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(child, libc::SIGTERM) };
        }
    }
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches atomics and calls kill. A handler
        // (not SIG_IGN) resets to the default in the exec'd command.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Monotonic nanoseconds on the clock `bpf_ktime_get_ns` uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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

/// Launches `argv` traced from its first instruction, feeds every event to
/// `sink` in kernel order, and returns once the command and all its
/// descendants have exited and the ring buffer is drained.
pub fn trace_command(
    probes: &mut Probes,
    argv: &[String],
    mut sink: impl FnMut(Event) -> Result<()>,
) -> Result<Outcome> {
    let program = resolve_program(&argv[0])?;
    let started = std::time::SystemTime::now();
    // Orphaned descendants are reparented to us, so "the last one exited" is
    // simply waitpid(-1) reporting ECHILD.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    install_signal_handlers();

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
    // What the auditor knew of the child at launch.
    let at_start = |kind| Event {
        seq: 0,
        ts_ns: monotonic_ns(),
        pid: child_pid as u32,
        tid: child_pid as u32,
        comm: comm.clone(),
        kind,
    };
    sink(at_start(EventKind::ProcessStart {
        cwd,
        exe: program.display().to_string(),
        argv: argv.to_vec(),
        // SAFETY: getpid has no preconditions.
        ppid: unsafe { libc::getpid() } as u32,
        launched: true,
    }))?;
    for o in inherited {
        sink(at_start(EventKind::FdAtStart {
            fd: o.fd,
            path: o.path,
            file: o.info,
            cloexec: false,
            from_caller: true,
        }))?;
    }

    let done = Arc::new(AtomicBool::new(false));
    let exit = Arc::new(std::sync::Mutex::new(None));
    let reaper = {
        let done = done.clone();
        let exit = exit.clone();
        std::thread::spawn(move || {
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
                        CommandExit::Signal(libc::WTERMSIG(status))
                    } else {
                        CommandExit::Code(libc::WEXITSTATUS(status))
                    };
                    *exit.lock().unwrap() = Some(e);
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    drop(child);

    let mut pump = Pump::new();
    loop {
        let finished = done.load(Ordering::Acquire);
        pump.flush_runs(probes, finished)?;
        let more = pump.drain(probes, &mut sink)?;
        pump.check_drops(probes, &mut sink, false)?;
        if more {
            continue;
        }
        if finished {
            // Everything the last process did was committed before it
            // could be reaped, so an empty ring now means we have it all.
            pump.check_drops(probes, &mut sink, true)?;
            break;
        }
        wait_readable(&probes.ring, Duration::from_millis(50));
    }
    let _ = reaper.join();
    CHILD.store(0, Ordering::Relaxed);
    let exit = *exit.lock().unwrap();
    Ok(Outcome {
        exit,
        kernel: probes.kernel_stats(),
        decode: pump.decoder.stats,
        started,
        ended: std::time::SystemTime::now(),
    })
}

/// Moves records from the ring buffer to the sink and turns increases of
/// the kernel's drop counter into `Lost` events at the point they were seen.
pub(crate) struct Pump {
    pub(crate) decoder: Decoder,
    batch: Vec<Event>,
    dropped_seen: u64,
    last_check: Instant,
    last_flush: Instant,
    last_seq: u64,
    last_ts: u64,
}

impl Pump {
    pub(crate) fn new() -> Self {
        Pump {
            decoder: Decoder::default(),
            batch: Vec::new(),
            dropped_seen: 0,
            last_check: Instant::now(),
            last_flush: Instant::now(),
            last_seq: 0,
            last_ts: 0,
        }
    }

    /// Every 100 ms (or now, when `force`), has the kernel report the runs
    /// of writes it is counting; call before `drain`.
    pub(crate) fn flush_runs(&mut self, probes: &Probes, force: bool) -> Result<()> {
        if force || self.last_flush.elapsed() >= Duration::from_millis(100) {
            self.last_flush = Instant::now();
            probes.flush_runs()?;
        }
        Ok(())
    }

    /// Drains the ring for at most ~100 ms, so drop counters are checked
    /// regularly even under a flood. Returns whether the ring may hold more.
    pub(crate) fn drain(
        &mut self,
        probes: &mut Probes,
        sink: &mut impl FnMut(Event) -> Result<()>,
    ) -> Result<bool> {
        while let Some(item) = probes.ring.next() {
            self.decoder.decode(&item, &mut self.batch);
            drop(item);
            for ev in self.batch.drain(..) {
                self.last_seq = ev.seq;
                self.last_ts = ev.ts_ns;
                sink(ev)?;
            }
            if self.last_check.elapsed() > Duration::from_millis(100) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(crate) fn check_drops(
        &mut self,
        probes: &Probes,
        sink: &mut impl FnMut(Event) -> Result<()>,
        force: bool,
    ) -> Result<()> {
        if !force && self.last_check.elapsed() < Duration::from_millis(100) {
            return Ok(());
        }
        self.last_check = Instant::now();
        let dropped = probes.kernel_stats().lost();
        if dropped > self.dropped_seen {
            let count = dropped - self.dropped_seen;
            self.dropped_seen = dropped;
            sink(Event {
                seq: self.last_seq,
                ts_ns: self.last_ts.max(monotonic_ns()),
                pid: 0,
                tid: 0,
                comm: String::new(),
                kind: EventKind::Lost { count },
            })?;
        }
        Ok(())
    }
}

pub(crate) fn wait_readable(ring: &RingBuf<aya::maps::MapData>, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: ring.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
}
