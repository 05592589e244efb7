//! Renders events as the calls people recognise (`write(fd=3, 4096) = 4096`),
//! with errno and signal names, for the evidence chain of findings.

use std::sync::Arc;

use crate::event::{Event, EventKind, Syscall};
use crate::finding::CallRef;
use crate::stack::Stack;
use crate::track::fds::flags;

/// Name of a signal number (Linux x86-64/arm64 numbering).
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        20 => "SIGTSTP",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// Name of an errno value (positive), for failed calls.
pub fn errno_name(errno: i64) -> Option<&'static str> {
    Some(match errno {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        39 => "ENOTEMPTY",
        122 => "EDQUOT",
        _ => return None,
    })
}

/// ` = 3` or ` = -5 (EIO)`.
fn ret_str(ret: i64) -> String {
    match (ret < 0).then(|| errno_name(-ret)).flatten() {
        Some(name) => format!(" = {ret} ({name})"),
        None => format!(" = {ret}"),
    }
}

/// `O_WRONLY|O_CREAT|O_TRUNC` for open flags.
pub fn open_flags(f: u32) -> String {
    let mut parts = vec![match f & flags::O_ACCMODE {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        _ => "O_RDWR",
    }];
    let named = [
        (flags::O_CREAT, "O_CREAT"),
        (flags::O_EXCL, "O_EXCL"),
        (flags::O_TRUNC, "O_TRUNC"),
        (flags::O_APPEND, "O_APPEND"),
        (flags::O_DIRECTORY, "O_DIRECTORY"),
        (flags::O_CLOEXEC, "O_CLOEXEC"),
    ];
    parts.extend(
        named
            .iter()
            .filter(|(bit, _)| f & bit != 0)
            .map(|&(_, n)| n),
    );
    if f & flags::O_SYNC == flags::O_SYNC {
        parts.push("O_SYNC");
    } else if f & flags::O_DSYNC != 0 {
        parts.push("O_DSYNC");
    }
    parts.join("|")
}

fn opt_fd(fd: Option<i32>) -> String {
    fd.map_or_else(String::new, |fd| format!("fd={fd}"))
}

/// The human form of one event, as a call.
pub fn describe(ev: &Event) -> String {
    match &ev.kind {
        EventKind::Open {
            call,
            path,
            flags,
            ret,
            ..
        } => {
            format!("{call}({path:?}, {}){}", open_flags(*flags), ret_str(*ret))
        }
        // Rendered from the arguments a kept call holds, so both read alike.
        EventKind::Write { .. } | EventKind::Sync { .. } | EventKind::Close { .. } => {
            What::of(ev).text()
        }
        EventKind::Truncate {
            call,
            fd,
            path,
            length,
            ret,
            ..
        } => {
            let target = path
                .as_ref()
                .map_or_else(|| opt_fd(*fd), |p| format!("{p:?}"));
            format!("{call}({target}, {length}){}", ret_str(*ret))
        }
        EventKind::Fallocate {
            fd,
            mode,
            offset,
            len,
            ret,
            ..
        } => {
            format!(
                "fallocate(fd={fd}, mode={mode}, {offset}, {len}){}",
                ret_str(*ret)
            )
        }
        EventKind::Rename {
            call,
            old_path,
            new_path,
            flags,
            ret,
            ..
        } => {
            let extra = if *flags != 0 {
                format!(", flags={flags}")
            } else {
                String::new()
            };
            format!("{call}({old_path:?}, {new_path:?}{extra}){}", ret_str(*ret))
        }
        EventKind::Unlink {
            call, path, ret, ..
        } => format!("{call}({path:?}){}", ret_str(*ret)),
        EventKind::Mkdir {
            call,
            path,
            mode,
            ret,
            ..
        } => format!("{call}({path:?}, {mode:#o}){}", ret_str(*ret)),
        EventKind::CloseRange {
            first,
            last,
            flags,
            ret,
        } => {
            format!("close_range({first}, {last}, {flags}){}", ret_str(*ret))
        }
        EventKind::Dup {
            call,
            old_fd,
            new_fd,
            ret,
            cloexec,
            ..
        } => match (call, new_fd) {
            (Syscall::Fcntl, Some(n)) => {
                let cmd = if *cloexec {
                    "F_DUPFD_CLOEXEC"
                } else {
                    "F_DUPFD"
                };
                format!("fcntl(fd={old_fd}, {cmd}, {n}){}", ret_str(*ret))
            }
            (_, Some(n)) => format!("{call}(fd={old_fd}, {n}){}", ret_str(*ret)),
            (_, None) => format!("{call}(fd={old_fd}){}", ret_str(*ret)),
        },
        EventKind::Fcntl {
            fd, cmd, arg, ret, ..
        } => format!("fcntl(fd={fd}, {cmd}, {arg:#x}){}", ret_str(*ret)),
        EventKind::Mmap { fd, addr, len, .. } => {
            format!("mmap({addr:#x}, {len}, MAP_SHARED, fd={fd})")
        }
        EventKind::Chdir { path, ret } => format!("chdir({path:?}){}", ret_str(*ret)),
        EventKind::Fchdir { fd, ret } => format!("fchdir(fd={fd}){}", ret_str(*ret)),
        EventKind::Fork {
            child_pid,
            child_tid,
            thread,
            ..
        } => {
            if *thread {
                format!("clone(thread) = {child_tid}")
            } else {
                format!("fork() = {child_pid}")
            }
        }
        EventKind::Exec { filename, argv, .. } => match argv.first() {
            Some(arg0) if !filename.ends_with(&format!("/{arg0}")) && filename != arg0 => {
                format!("execve({filename:?}, argv[0]={arg0:?})")
            }
            _ => format!("execve({filename:?})"),
        },
        EventKind::Chroot { path, ret } => format!("chroot({path:?}){}", ret_str(*ret)),
        EventKind::PivotRoot {
            new_root,
            put_old,
            ret,
        } => format!("pivot_root({new_root:?}, {put_old:?}){}", ret_str(*ret)),
        EventKind::Mount {
            source,
            target,
            flags,
            ret,
        } => format!("mount({source:?}, {target:?}, {flags:#x}){}", ret_str(*ret)),
        EventKind::Umount { target, flags, ret } => {
            format!("umount2({target:?}, {flags}){}", ret_str(*ret))
        }
        EventKind::Unshare { flags, ret } => format!("unshare({flags:#x}){}", ret_str(*ret)),
        EventKind::Setns {
            fd, nstype, ret, ..
        } => format!("setns(fd={fd}, {nstype:#x}){}", ret_str(*ret)),
        EventKind::View { mounts, .. } => format!("mounts as seen ({} mounts)", mounts.len()),
        EventKind::Stack { id, user_stack } => {
            format!("stack #{id} ({} frames)", user_stack.frames.len())
        }
        EventKind::Exit {
            group_dead,
            code,
            signal,
            ..
        } => {
            let scope = if *group_dead { "exit_group" } else { "exit" };
            match (signal, code) {
                (Some(s), _) => format!("{scope}: killed by {}", signal_name(*s)),
                (None, Some(c)) => format!("{scope}({c})"),
                (None, None) => format!("{scope}()"),
            }
        }
        EventKind::SignalSent {
            signal,
            target_pid,
            target_tid,
            target_comm,
            ..
        } => {
            let who = if target_tid != target_pid && *target_tid != 0 {
                format!("pid={target_pid} tid={target_tid}")
            } else {
                format!("pid={target_pid}")
            };
            format!("kill({who} {target_comm}, {})", signal_name(*signal))
        }
        EventKind::SignalDelivered {
            signal, handler, ..
        } => {
            let how = match handler {
                0 => "default action",
                1 => "ignored",
                _ => "handler",
            };
            format!("{} delivered ({how})", signal_name(*signal))
        }
        EventKind::ProcessStart { exe, .. } => format!("process start ({exe})"),
        EventKind::FdAtStart { fd, path, .. } => format!("fd {fd} open at start: {path:?}"),
        EventKind::Lost { count } => format!("{count} events lost"),
    }
}

fn write_text(
    call: Syscall,
    fd: i32,
    requested: u64,
    ret: i64,
    offset: Option<i64>,
    calls: u32,
) -> String {
    let text = match offset {
        Some(off) => format!("{call}(fd={fd}, {requested}, off={off}){}", ret_str(ret)),
        None => format!("{call}(fd={fd}, {requested}){}", ret_str(ret)),
    };
    if calls > 1 {
        format!("{text} ({calls} calls)")
    } else {
        text
    }
}

fn sync_text(call: Syscall, fd: Option<i32>, ret: i64, range: Option<(u64, u64, u32)>) -> String {
    let mut args = opt_fd(fd);
    if let Some((a, b, f)) = range {
        if !args.is_empty() {
            args.push_str(", ");
        }
        args.push_str(&format!("{a:#x}, {b}, flags={f}"));
    }
    format!("{call}({args}){}", ret_str(ret))
}

fn close_text(fd: i32, ret: i64, calls: u32, reopens: u32) -> String {
    let text = format!("close(fd={fd}){}", ret_str(ret));
    if calls > 1 || reopens > 0 {
        format!("{text} ({calls} calls, reopened {reopens} times between them)")
    } else {
        text
    }
}

/// A call the analyzer keeps (per-inode history, first unsynced write, last
/// sync, ...). Most kept calls never reach a finding or a view, and the
/// frequent ones (writes, syncs, closes) keep only their arguments: the
/// text is rendered by [`Call::text`] when a finding or snapshot needs it,
/// identical to [`describe`] of the event. Cloning never allocates.
#[derive(Clone, Debug)]
pub struct Call {
    pub seq: u64,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    comm: Arc<str>,
    what: What,
    /// Where in the program the call was made, when the probes took it.
    stack: Option<Arc<Stack>>,
}

#[derive(Clone, Debug)]
enum What {
    /// Rendered when kept (rarer calls, whose text needs paths anyway).
    Text(Arc<str>),
    Write {
        name: Syscall,
        fd: i32,
        requested: u64,
        ret: i64,
        offset: Option<i64>,
        calls: u32,
    },
    Sync {
        name: Syscall,
        fd: Option<i32>,
        ret: i64,
        range: Option<(u64, u64, u32)>,
    },
    Close {
        fd: i32,
        ret: i64,
        calls: u32,
        reopens: u32,
    },
}

impl What {
    /// What a call keeps of `ev`: the arguments of a write, sync or close
    /// (the frequent ones, rendered when needed), the text of any other.
    fn of(ev: &Event) -> What {
        match &ev.kind {
            EventKind::Write {
                call,
                fd,
                requested,
                ret,
                offset,
                calls,
                ..
            } => What::Write {
                name: *call,
                fd: *fd,
                requested: *requested,
                ret: *ret,
                offset: *offset,
                calls: *calls,
            },
            EventKind::Sync {
                call,
                fd,
                ret,
                range,
                ..
            } => What::Sync {
                name: *call,
                fd: *fd,
                ret: *ret,
                range: *range,
            },
            EventKind::Close {
                fd,
                ret,
                calls,
                reopens,
                ..
            } => What::Close {
                fd: *fd,
                ret: *ret,
                calls: *calls,
                reopens: reopens.map_or(0, |r| r.count),
            },
            _ => What::Text(describe(ev).into()),
        }
    }

    /// The call as people read it.
    fn text(&self) -> String {
        match self {
            What::Text(t) => t.to_string(),
            What::Write {
                name,
                fd,
                requested,
                ret,
                offset,
                calls,
            } => write_text(*name, *fd, *requested, *ret, *offset, *calls),
            What::Sync {
                name,
                fd,
                ret,
                range,
            } => sync_text(*name, *fd, *ret, *range),
            What::Close {
                fd,
                ret,
                calls,
                reopens,
            } => close_text(*fd, *ret, *calls, *reopens),
        }
    }
}

impl Call {
    /// How many system calls this one stands for (a reported run of writes
    /// stands for several).
    pub fn calls(&self) -> u32 {
        match self.what {
            What::Write { calls, .. } => calls.max(1),
            What::Close { calls, reopens, .. } => calls.max(1).saturating_add(reopens),
            _ => 1,
        }
    }

    /// Keeps `ev` as a call; `comm` is the event's comm, shared.
    pub fn new(ev: &Event, comm: Arc<str>) -> Call {
        Call {
            seq: ev.seq,
            ts_ns: ev.ts_ns,
            pid: ev.pid,
            tid: ev.tid,
            comm,
            what: What::of(ev),
            stack: None,
        }
    }

    /// The call with the stack it was made from.
    pub fn with_stack(mut self, stack: Option<Arc<Stack>>) -> Call {
        self.stack = stack;
        self
    }

    /// The human form (`write(fd=3, 4096) = 4096`).
    pub fn text(&self) -> String {
        self.what.text()
    }

    /// The rendered reference findings carry.
    pub fn to_ref(&self) -> CallRef {
        CallRef {
            seq: self.seq,
            ts_ns: self.ts_ns,
            pid: self.pid,
            tid: self.tid,
            comm: self.comm.to_string(),
            call: self.text(),
            stack: self.stack.clone(),
        }
    }
}

impl From<&CallRef> for Call {
    fn from(c: &CallRef) -> Call {
        Call {
            seq: c.seq,
            ts_ns: c.ts_ns,
            pid: c.pid,
            tid: c.tid,
            comm: c.comm.as_str().into(),
            what: What::Text(c.call.as_str().into()),
            stack: c.stack.clone(),
        }
    }
}

impl From<&Call> for Call {
    fn from(c: &Call) -> Call {
        c.clone()
    }
}

/// Shares one allocation of a comm across the calls of a stream: events
/// come in runs from the same task, so the last comm is almost always the
/// next one.
#[derive(Debug, Default)]
pub struct CommCache {
    last: Option<Arc<str>>,
}

impl CommCache {
    pub fn get(&mut self, comm: &str) -> Arc<str> {
        match &self.last {
            Some(c) if &**c == comm => c.clone(),
            _ => {
                let c: Arc<str> = comm.into();
                self.last = Some(c.clone());
                c
            }
        }
    }
}

/// The call reference of an event, for evidence chains.
pub fn call_ref(ev: &Event) -> CallRef {
    CallRef {
        seq: ev.seq,
        ts_ns: ev.ts_ns,
        pid: ev.pid,
        tid: ev.tid,
        comm: ev.comm.clone(),
        call: describe(ev),
        stack: None,
    }
}

/// `1 write` / `2 writes`, `1 process` / `2 processes`: a regular plural
/// (see [`crate::report::plural::count`] for the others).
pub fn plural(n: u64, word: &str) -> String {
    let many = if word.ends_with('s') || word.ends_with('x') || word.ends_with("sh") {
        format!("{word}es")
    } else {
        format!("{word}s")
    };
    crate::report::plural::count(n, word, &many)
}

/// `1.234s` style durations for summaries.
pub fn human_duration(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.1}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}µs", ns as f64 / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn calls_read_like_strace() {
        assert_eq!(describe(&write(1, 3, 4096)), "write(fd=3, 4096) = 4096");
        assert_eq!(
            describe(&rename(1, "/d/a.tmp", "/d/a")),
            "rename(\"/d/a.tmp\", \"/d/a\") = 0"
        );
        assert_eq!(describe(&fsync_ret(1, 3, -5)), "fsync(fd=3) = -5 (EIO)");
        let mut run = write(1, 3, 640);
        if let EventKind::Write { calls, .. } = &mut run.kind {
            *calls = 10;
        }
        assert_eq!(describe(&run), "write(fd=3, 640) = 640 (10 calls)");
        assert_eq!(Call::new(&run, "w".into()).text(), describe(&run));
        assert_eq!(Call::new(&run, "w".into()).calls(), 10);
        assert_eq!(
            describe(&open_new(1, "/d/a", 3, reg(1))),
            "openat(\"/d/a\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC) = 3"
        );
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(human_duration(2_500_000_000), "2.5s");
    }

    #[test]
    fn kept_calls_render_as_described() {
        let mut pwrite = write(1, 3, 100);
        if let EventKind::Write { offset, ret, .. } = &mut pwrite.kind {
            *offset = Some(4096);
            *ret = -28;
        }
        let mut copy = write(1, 3, 10);
        if let EventKind::Write { call, .. } = &mut copy.kind {
            *call = Syscall::CopyFileRange;
        }
        let events = [
            write(1, 3, 4096),
            pwrite,
            copy,
            fsync_ret(1, 3, -5),
            sync_call(2, "sync_file_range", Some(3), 0, Some((0, 4096, 2))),
            sync_call(2, "sync", None, 0, None),
            close(1, 3),
            rename(1, "/d/a.tmp", "/d/a"),
        ];
        let mut comms = CommCache::default();
        for ev in &events {
            let call = Call::new(ev, comms.get(&ev.comm));
            assert_eq!(call.to_ref(), call_ref(ev));
            assert_eq!(call.text(), describe(ev));
            assert_eq!(Call::from(&call_ref(ev)).to_ref(), call_ref(ev));
        }
    }
}
