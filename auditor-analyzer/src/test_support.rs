//! Small constructors for synthetic event sequences, so rule tests read
//! like the syscall traces they stand for.

use crate::event::{Event, EventKind, FileId, FileInfo, FileType, Syscall};
use crate::finding::{Finding, Severity};
use crate::track::fds::flags;
use crate::track::paths::AT_FDCWD;
use crate::{Analyzer, Config};

pub const DEV: u64 = 2049;
pub const O_WRONLY: u32 = 1;
pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;

/// The traced call of that name (test events name calls as traces do).
pub fn sys(name: &str) -> Syscall {
    Syscall::from_name(name).unwrap_or_else(|| panic!("no traced syscall {name}"))
}

/// A regular file on ext4, as the kernel would describe it.
pub fn reg(ino: u64) -> FileInfo {
    FileInfo {
        id: FileId { dev: DEV, ino },
        file_type: FileType::Regular,
        fs: "ext4".into(),
        size: 0,
        flags: O_WRONLY,
        created: false,
    }
}

/// A directory on ext4.
pub fn dir(ino: u64) -> FileInfo {
    FileInfo {
        file_type: FileType::Directory,
        flags: flags::O_DIRECTORY,
        ..reg(ino)
    }
}

/// `info` with another size.
pub fn sized(info: FileInfo, size: i64) -> FileInfo {
    FileInfo { size, ..info }
}

/// `info` on another filesystem.
pub fn on_fs(info: FileInfo, fs: &str) -> FileInfo {
    FileInfo {
        fs: fs.into(),
        ..info
    }
}

/// An event of `pid`'s main thread; seq and time are filled by [`run`].
pub fn ev(pid: u32, kind: EventKind) -> Event {
    Event {
        seq: 0,
        ts_ns: 0,
        pid,
        tid: pid,
        comm: "app".into(),
        stack: None,
        kind,
        in_process: Default::default(),
    }
}

/// The same event from thread `tid`.
pub fn on_tid(mut e: Event, tid: u32) -> Event {
    e.tid = tid;
    e
}

/// The same event at time `ts_ns`.
pub fn at(mut e: Event, ts_ns: u64) -> Event {
    e.ts_ns = ts_ns;
    e
}

pub fn start(pid: u32, cwd: &str) -> Event {
    ev(
        pid,
        EventKind::ProcessStart {
            cwd: cwd.into(),
            exe: "/usr/bin/app".into(),
            argv: vec!["app".into()],
            ppid: 1,
            launched: true,
        },
    )
}

pub fn open_with(
    pid: u32,
    path: &str,
    dirfd: i32,
    fl: u32,
    fd: i64,
    file: Option<FileInfo>,
) -> Event {
    ev(
        pid,
        EventKind::Open {
            call: sys("openat"),
            path: path.into(),
            dirfd,
            flags: fl,
            mode: 0o644,
            ret: fd,
            file,
            image: None,
        },
    )
}

/// open(path, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC) creating the file.
pub fn open_new(pid: u32, path: &str, fd: i64, info: FileInfo) -> Event {
    let fl = O_WRONLY | flags::O_CREAT | flags::O_TRUNC | flags::O_CLOEXEC;
    open_with(
        pid,
        path,
        AT_FDCWD,
        fl,
        fd,
        Some(FileInfo {
            created: true,
            flags: O_WRONLY,
            ..info
        }),
    )
}

/// open(path, O_WRONLY) of an existing file.
pub fn open_existing(pid: u32, path: &str, fd: i64, info: FileInfo) -> Event {
    open_with(pid, path, AT_FDCWD, O_WRONLY, fd, Some(info))
}

/// open(path, O_RDONLY|O_DIRECTORY) of a directory.
pub fn open_dir(pid: u32, path: &str, fd: i64, info: FileInfo) -> Event {
    open_with(pid, path, AT_FDCWD, flags::O_DIRECTORY, fd, Some(info))
}

pub fn write_full(
    pid: u32,
    fd: i32,
    requested: u64,
    ret: i64,
    offset: Option<i64>,
    file: Option<FileInfo>,
) -> Event {
    let call = if offset.is_some() {
        "pwrite64"
    } else {
        "write"
    };
    ev(
        pid,
        EventKind::Write {
            call: sys(call),
            fd,
            requested,
            ret,
            offset,
            file,
            enter_ns: 0,
            calls: 1,
        },
    )
}

/// write(fd, n) = n.
pub fn write(pid: u32, fd: i32, n: u64) -> Event {
    write_full(pid, fd, n, n as i64, None, None)
}

pub fn sync_call(
    pid: u32,
    call: &str,
    fd: Option<i32>,
    ret: i64,
    range: Option<(u64, u64, u32)>,
) -> Event {
    ev(
        pid,
        EventKind::Sync {
            call: sys(call),
            fd,
            ret,
            file: None,
            range,
            enter_ns: 0,
        },
    )
}

pub fn fsync(pid: u32, fd: i32) -> Event {
    sync_call(pid, "fsync", Some(fd), 0, None)
}

pub fn fsync_ret(pid: u32, fd: i32, ret: i64) -> Event {
    sync_call(pid, "fsync", Some(fd), ret, None)
}

pub fn rename(pid: u32, old: &str, new: &str) -> Event {
    rename_full(pid, "rename", old, new, AT_FDCWD, None)
}

pub fn rename_full(
    pid: u32,
    call: &str,
    old: &str,
    new: &str,
    dirfd: i32,
    file: Option<FileInfo>,
) -> Event {
    ev(
        pid,
        EventKind::Rename {
            call: sys(call),
            old_dirfd: dirfd,
            old_path: old.into(),
            new_dirfd: dirfd,
            new_path: new.into(),
            flags: 0,
            ret: 0,
            file,
        },
    )
}

/// rename(old, new) of the file the trace reports as `file`.
pub fn rename_known(pid: u32, old: &str, new: &str, file: FileInfo) -> Event {
    rename_full(pid, "rename", old, new, AT_FDCWD, Some(file))
}

pub fn close(pid: u32, fd: i32) -> Event {
    ev(
        pid,
        EventKind::Close {
            fd,
            ret: 0,
            file: None,
            calls: 1,
            reopens: None,
        },
    )
}

pub fn exit(pid: u32, code: i32) -> Event {
    ev(
        pid,
        EventKind::Exit {
            group_dead: true,
            code: Some(code),
            signal: None,
            core_dumped: false,
        },
    )
}

pub fn killed(pid: u32, signal: i32) -> Event {
    ev(
        pid,
        EventKind::Exit {
            group_dead: true,
            code: None,
            signal: Some(signal),
            core_dumped: false,
        },
    )
}

pub fn fork(pid: u32, child: u32) -> Event {
    clone_process(pid, child, false, false)
}

/// A new process that may share its parent's fd table (CLONE_FILES) or
/// get a mount namespace of its own (CLONE_NEWNS).
pub fn clone_process(pid: u32, child: u32, shares_files: bool, new_mount_ns: bool) -> Event {
    ev(
        pid,
        EventKind::Fork {
            child_pid: child,
            child_tid: child,
            thread: false,
            shares_files,
            new_mount_ns,
        },
    )
}

pub fn spawn_thread(pid: u32, tid: u32) -> Event {
    ev(
        pid,
        EventKind::Fork {
            child_pid: pid,
            child_tid: tid,
            thread: true,
            shares_files: true,
            new_mount_ns: false,
        },
    )
}

pub fn signal(from: u32, to: u32, sig: i32) -> Event {
    ev(
        from,
        EventKind::SignalSent {
            signal: sig,
            target_pid: to,
            target_tid: to,
            target_comm: "app".into(),
            code: 0,
            group: true,
            result: 0,
            target_syscall: None,
        },
    )
}

pub fn lost(count: u64) -> Event {
    ev(0, EventKind::Lost { count })
}

pub fn unlink_call(pid: u32, call: &str, path: &str) -> Event {
    ev(
        pid,
        EventKind::Unlink {
            call: sys(call),
            dirfd: AT_FDCWD,
            path: path.into(),
            flags: 0,
            ret: 0,
        },
    )
}

pub fn unlink(pid: u32, path: &str) -> Event {
    unlink_call(pid, "unlink", path)
}

pub fn mkdir_call(pid: u32, call: &str, path: &str, mode: u32) -> Event {
    ev(
        pid,
        EventKind::Mkdir {
            call: sys(call),
            dirfd: AT_FDCWD,
            path: path.into(),
            mode,
            ret: 0,
        },
    )
}

pub fn mkdir(pid: u32, path: &str) -> Event {
    mkdir_call(pid, "mkdir", path, 0o755)
}

pub fn chdir(pid: u32, path: &str) -> Event {
    ev(
        pid,
        EventKind::Chdir {
            path: path.into(),
            ret: 0,
        },
    )
}

pub fn exec(pid: u32, filename: &str, argv: &[&str]) -> Event {
    ev(
        pid,
        EventKind::Exec {
            filename: filename.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            stamp: None,
        },
    )
}

/// link(old, new): the file gets a second name.
pub fn link(pid: u32, old: &str, new: &str) -> Event {
    link_call(pid, "link", old, new)
}

/// A link by `call` (link, linkat) relative to the cwd.
pub fn link_call(pid: u32, call: &str, old: &str, new: &str) -> Event {
    rename_full(pid, call, old, new, AT_FDCWD, None)
}

/// `from` kills `to` with `sig`: the signal sent, then the exit it caused.
pub fn kill(from: u32, to: u32, sig: i32) -> Vec<Event> {
    vec![signal(from, to, sig), killed(to, sig)]
}

/// open_new, write `bytes`: a new file written, still open on `fd`.
pub fn write_new(pid: u32, path: &str, fd: i32, ino: u64, bytes: u64) -> Vec<Event> {
    vec![
        open_new(pid, path, fd as i64, reg(ino)),
        write(pid, fd, bytes),
    ]
}

/// The same, closed: a new file whose data is not durable.
pub fn create_unsynced(pid: u32, path: &str, fd: i32, ino: u64, bytes: u64) -> Vec<Event> {
    trace![write_new(pid, path, fd, ino, bytes), close(pid, fd)]
}

/// The same with an fsync before the close: the data is durable, the
/// new name is not until its directory is fsynced.
pub fn create_synced(pid: u32, path: &str, fd: i32, ino: u64, bytes: u64) -> Vec<Event> {
    trace![
        write_new(pid, path, fd, ino, bytes),
        fsync(pid, fd),
        close(pid, fd),
    ]
}

/// What [`trace!`] accepts: one event or a run of them.
pub trait Steps {
    fn append_to(self, events: &mut Vec<Event>);
}

impl Steps for Event {
    fn append_to(self, events: &mut Vec<Event>) {
        events.push(self);
    }
}

impl Steps for Vec<Event> {
    fn append_to(self, events: &mut Vec<Event>) {
        events.extend(self);
    }
}

/// One event sequence from single events and runs of them, in order, so a
/// test reads as the trace it stands for:
/// `trace![start(..), create_synced(..), rename(..), fsync_dir(..), exit(..)]`.
macro_rules! trace {
    ($($step:expr),* $(,)?) => {{
        let mut events: Vec<$crate::Event> = Vec::new();
        $($crate::test_support::Steps::append_to($step, &mut events);)*
        events
    }};
}
pub(crate) use trace;

/// Gives events increasing seq numbers and 1 ms steps where no time was
/// set, writes entering 100 µs before they return.
pub fn number(events: Vec<Event>) -> Vec<Event> {
    let mut last_ts = 0;
    events
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.seq = i as u64 + 1;
            if e.ts_ns == 0 {
                e.ts_ns = last_ts + 1_000_000;
            }
            last_ts = e.ts_ns;
            if let EventKind::Write { enter_ns, .. } | EventKind::Sync { enter_ns, .. } =
                &mut e.kind
                && *enter_ns == 0
            {
                *enter_ns = e.ts_ns - 100_000;
            }
            e
        })
        .collect()
}

/// Runs the events through a default analyzer, then finishes it.
pub fn run(events: Vec<Event>) -> Vec<Finding> {
    run_with(Config::default(), events).1
}

/// Runs with `config`; returns the analyzer (for stats) and all findings.
pub fn run_with(config: Config, events: Vec<Event>) -> (Analyzer, Vec<Finding>) {
    let mut a = Analyzer::new(config).expect("valid config");
    for mut e in number(events) {
        a.process(&mut e);
    }
    a.finish();
    let findings = a.findings().to_vec();
    (a, findings)
}

/// Feeds the events to a default analyzer without finishing it; returns it
/// and the findings raised along the way.
pub fn process_all(events: Vec<Event>) -> (Analyzer, Vec<Finding>) {
    let mut a = Analyzer::new(Config::default()).expect("valid config");
    let mut raised = Vec::new();
    for mut e in number(events) {
        raised.extend(a.process(&mut e));
    }
    (a, raised)
}

/// Rule ids of `findings`, in order.
pub fn rules(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.rule.as_str()).collect()
}

/// The one finding of `rule` (fails with the full list otherwise).
pub fn one<'a>(findings: &'a [Finding], rule: &str) -> &'a Finding {
    let matching: Vec<&Finding> = findings.iter().filter(|f| f.rule == rule).collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one {rule}, got {:#?}",
        rules(findings)
    );
    matching[0]
}

/// The only finding, which is of `rule` (fails with the full list otherwise).
pub fn sole<'a>(findings: &'a [Finding], rule: &str) -> &'a Finding {
    assert_eq!(rules(findings), vec![rule]);
    &findings[0]
}

/// Fails, listing them, when any finding is of `rule`.
pub fn assert_none_of(findings: &[Finding], rule: &str) {
    assert!(
        findings.iter().all(|f| f.rule != rule),
        "expected no {rule}, got {findings:#?}"
    );
}

/// `f` is about `path`, raised for `pid`, at `severity`.
pub fn assert_finding(f: &Finding, path: &str, pid: u32, severity: Severity) {
    assert_eq!(
        (f.path.as_str(), f.process.pid, f.severity),
        (path, pid, severity)
    );
}

/// Fails, listing them, when there are any findings.
pub fn assert_clean(findings: &[Finding]) {
    assert!(
        findings.is_empty(),
        "expected no findings, got {:#?}",
        findings
            .iter()
            .map(|f| (&f.rule, &f.summary))
            .collect::<Vec<_>>()
    );
}

/// open the directory, fsync it, close it: what makes new names durable.
pub fn fsync_dir(pid: u32, path: &str, fd: i32, ino: u64) -> Vec<Event> {
    vec![
        open_dir(pid, path, fd as i64, dir(ino)),
        fsync(pid, fd),
        close(pid, fd),
    ]
}

/// The sole finding of a name rule once process 100 exits after `before`:
/// it is about `path` in /d, at `severity`, and names /d as the directory
/// to fsync. Returned for the rule's own evidence.
pub fn name_flagged_at_exit(
    before: Vec<Event>,
    rule: &str,
    path: &str,
    severity: Severity,
) -> Finding {
    let findings = run(trace![before, exit(100, 0)]);
    let f = sole(&findings, rule);
    assert_finding(f, path, 100, severity);
    assert_eq!(f.evidence["directory"], "/d");
    f.clone()
}

/// What `before` did to names in /d is durable, and clean, once process
/// 100 fsyncs /d before it exits.
pub fn clean_once_dir_fsynced(before: Vec<Event>) {
    assert_clean(&run(trace![
        before,
        fsync_dir(100, "/d", 4, 2),
        exit(100, 0),
    ]));
}

/// The canonical safe replace of `path` through `path.tmp` (dir inode 2).
pub fn atomic_replace(pid: u32, path: &str, fd: i32, ino: u64) -> Vec<Event> {
    let tmp = format!("{path}.tmp");
    trace![
        create_synced(pid, &tmp, fd, ino, 4096),
        rename(pid, &tmp, path),
        fsync_dir(pid, &crate::track::paths::parent(path), fd, 2),
    ]
}
