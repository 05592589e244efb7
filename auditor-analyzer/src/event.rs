//! The decoded event stream: what the probes saw, in kernel order, with paths
//! made absolute. Live capture, recordings and the analyzer all speak this
//! type, so a recording replays to exactly the findings of the live run.

pub use auditor_common::Syscall;
use serde::{Deserialize, Serialize};

pub use crate::file_id::FileId;
use crate::image::ImageInfo;
use crate::stack::Stack;

/// One thing a traced task did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Kernel sequence number; synthetic events (made in userspace) reuse the
    /// previous kernel number.
    pub seq: u64,
    /// Monotonic nanoseconds since boot (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// Process (thread group) id, as the host sees it.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub comm: String,
    /// The user stack the call was made from: the id of an earlier
    /// [`EventKind::Stack`] event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<u32>,
    #[serde(flatten)]
    pub kind: EventKind,
    /// The paths as the process gave them, where the host's differ (a
    /// chroot, a container's mount namespace): the kind's paths above are
    /// the host's.
    #[serde(flatten)]
    pub in_process: InProcess,
}

/// The paths of an event as its process saw them, beside the host's. The
/// first path is the kind's `path` (`old_path` of a rename, `filename` of
/// an exec, `new_root` of pivot_root, `source` of a mount), the second its
/// `new_path` (`put_old`, a mount's `target`). A path the host's equals is
/// not repeated here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProcess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_in_process: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path2_in_process: Option<String>,
    /// Why the first path's place on the host cannot be known: the path
    /// given is the process's own, and nothing on the host is named by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path_unknown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path2_unknown: Option<String>,
}

impl InProcess {
    /// Nothing differs from the host.
    pub fn is_empty(&self) -> bool {
        *self == InProcess::default()
    }
}

/// Where a task stood after an exec or a setns, as the kernel said: its
/// mount namespace (the inode number `/proc/PID/ns/mnt` shows) and its root
/// directory. /proc is read later; these tell whether it still shows that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewStamp {
    pub mnt_ns: u64,
    pub root: FileId,
}

/// One mount as a process sees it, and the host directory behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewMount {
    /// Where it is mounted, as the process names it (absolute).
    pub at: String,
    /// The host directory it shows (for an overlay, its upper directory,
    /// where writes land); None when the host has no name for it.
    pub host: Option<String>,
    /// Why `host` is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// The container a process runs in, as its cgroup and its runtime's state
/// name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// The name the runtime gave it (dockerd's `Name`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What the kernel said about an open file when the call was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub id: FileId,
    pub file_type: FileType,
    /// Filesystem name from the superblock magic ("xfs", "ext4", "tmpfs", ...).
    pub fs: String,
    /// Inode size at the time of the call (before a write or truncate).
    pub size: i64,
    /// Open flags of the file description (`f_flags`).
    pub flags: u32,
    /// The open that produced this description created the file.
    pub created: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

fn one_call() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The identical reopens of a run of visits (see `EventKind::Close`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reopens {
    pub call: Syscall,
    pub dirfd: i32,
    pub flags: u32,
    pub mode: u32,
    pub count: u32,
}

/// What happened. Return values are the raw syscall return: >= 0 success,
/// negative errno on failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// open, openat, openat2, creat.
    Open {
        call: Syscall,
        /// As the program gave it; made absolute (against `dirfd` or the
        /// cwd) by the tracker before anything else reads it.
        path: String,
        /// `AT_FDCWD` (-100) or a directory fd.
        dirfd: i32,
        flags: u32,
        mode: u32,
        ret: i64,
        /// The opened file (when `ret` is an fd).
        file: Option<FileInfo>,
        /// What the live system read of the file's header when it is a
        /// disk image opened for reading (see [`crate::image`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<ImageInfo>,
    },
    /// write, pwrite64, writev, pwritev, pwritev2, copy_file_range, sendfile.
    Write {
        call: Syscall,
        fd: i32,
        /// Bytes asked for (for vectored writes: unknown, 0).
        requested: u64,
        ret: i64,
        /// Explicit offset, for positioned writes.
        offset: Option<i64>,
        file: Option<FileInfo>,
        /// Time the call was entered; `ts_ns` is when it returned.
        enter_ns: u64,
        /// How many calls this event stands for. Consecutive complete writes
        /// of one thread to one regular file are reported together, as one
        /// write of their total (`requested` and `ret`) that was entered when
        /// the first was.
        #[serde(default = "one_call")]
        calls: u32,
    },
    /// ftruncate, truncate.
    Truncate {
        call: Syscall,
        fd: Option<i32>,
        path: Option<String>,
        length: i64,
        ret: i64,
        /// File state before the call (size is the size before truncation).
        file: Option<FileInfo>,
    },
    Fallocate {
        fd: i32,
        mode: i32,
        offset: i64,
        len: i64,
        ret: i64,
        file: Option<FileInfo>,
    },
    /// fsync, fdatasync, sync_file_range, syncfs, sync, msync.
    Sync {
        call: Syscall,
        fd: Option<i32>,
        ret: i64,
        file: Option<FileInfo>,
        /// sync_file_range: (offset, nbytes, flags); msync: (addr, len, flags).
        range: Option<(u64, u64, u32)>,
        enter_ns: u64,
    },
    /// rename, renameat, renameat2, link, linkat.
    Rename {
        call: Syscall,
        old_dirfd: i32,
        old_path: String,
        new_dirfd: i32,
        new_path: String,
        /// renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE) / linkat flags.
        flags: u32,
        ret: i64,
        /// The inode now at `new_path`, from a stat right after the call was
        /// seen (the kernel record has no inode for path-based calls).
        file: Option<FileInfo>,
    },
    /// unlink, unlinkat (flags may carry AT_REMOVEDIR).
    Unlink {
        call: Syscall,
        dirfd: i32,
        path: String,
        flags: u32,
        ret: i64,
    },
    /// mkdir, mkdirat.
    Mkdir {
        call: Syscall,
        dirfd: i32,
        path: String,
        mode: u32,
        ret: i64,
    },
    Close {
        fd: i32,
        ret: i64,
        file: Option<FileInfo>,
        /// How many closes this event stands for. More than one: a run of
        /// visits, where the fd was closed, opened again just as before
        /// (`reopens`), closed again, and so on.
        #[serde(default = "one_call", skip_serializing_if = "is_one")]
        calls: u32,
        /// A run of visits: the read-only reopens between the closes, each
        /// of the path the fd had, with the same call, flags, mode and
        /// dirfd, onto this fd, of the same unchanged file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reopens: Option<Reopens>,
    },
    CloseRange {
        first: u32,
        last: u32,
        flags: u32,
        ret: i64,
    },
    /// dup, dup2, dup3, fcntl(F_DUPFD), fcntl(F_DUPFD_CLOEXEC).
    Dup {
        call: Syscall,
        old_fd: i32,
        /// Requested new fd (dup2/dup3) or lowest acceptable (F_DUPFD).
        new_fd: Option<i32>,
        cloexec: bool,
        ret: i64,
        file: Option<FileInfo>,
    },
    /// fcntl other than F_DUPFD*: F_SETFD (close-on-exec), F_SETFL (O_APPEND...).
    Fcntl {
        fd: i32,
        cmd: i32,
        arg: u64,
        ret: i64,
        file: Option<FileInfo>,
    },
    /// mmap of a file with MAP_SHARED and PROT_WRITE.
    Mmap {
        fd: i32,
        addr: u64,
        len: u64,
        prot: u32,
        flags: u32,
        offset: u64,
        file: Option<FileInfo>,
    },
    Chdir {
        path: String,
        ret: i64,
    },
    Fchdir {
        fd: i32,
        ret: i64,
    },
    /// A new task. `thread` when it joined the same process.
    Fork {
        child_pid: u32,
        child_tid: u32,
        thread: bool,
        shares_files: bool,
        /// The child got a mount namespace of its own (CLONE_NEWNS): its
        /// mount calls move its paths, not the host's.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        new_mount_ns: bool,
    },
    /// The process replaced its image.
    Exec {
        filename: String,
        /// The new program's arguments (argv[0] is how a re-exec such as
        /// dockerd's `docker-untar` is known), cut at 512 bytes.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<ViewStamp>,
    },
    /// chroot: absolute paths now resolve under `path`.
    Chroot {
        path: String,
        ret: i64,
    },
    /// pivot_root: `new_root` becomes `/`, the old root moves to `put_old`.
    PivotRoot {
        new_root: String,
        put_old: String,
        ret: i64,
    },
    /// mount. `source` is a path only for bind mounts and moves
    /// (`MS_BIND`, `MS_MOVE`); otherwise a device or a name (`proc`).
    Mount {
        source: String,
        target: String,
        flags: u64,
        ret: i64,
    },
    /// umount2.
    Umount {
        target: String,
        flags: u32,
        ret: i64,
    },
    /// unshare: the namespaces in `flags` (`CLONE_NEWNS`, ...) are now the
    /// task's own copies.
    Unshare {
        flags: u64,
        ret: i64,
    },
    /// setns: the task joined the namespace behind `fd` (`nstype` 0 says
    /// any type).
    Setns {
        fd: i32,
        nstype: i64,
        ret: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<ViewStamp>,
    },
    /// Synthetic: where the process's paths lie on the host, read from
    /// /proc (its root and mount table, matched against the host's); it
    /// replaces what was known. No mounts: the host's own view.
    View {
        mounts: Vec<ViewMount>,
        /// Its mount namespace is not the host's: its own mount calls move
        /// its paths.
        private: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<Container>,
    },
    /// A user stack, unwound and symbolized: later events of the same run
    /// name it by `id` (in their `stack`, hence the other name here).
    Stack {
        id: u32,
        user_stack: Stack,
    },
    /// A task ended; `group_dead` when it was the last of its process.
    Exit {
        group_dead: bool,
        /// Exit status when it exited normally.
        code: Option<i32>,
        /// Terminating signal when it was killed.
        signal: Option<i32>,
        core_dumped: bool,
    },
    /// The event's task sent `signal` to `target_pid`/`target_tid`.
    SignalSent {
        signal: i32,
        target_pid: u32,
        target_tid: u32,
        target_comm: String,
        /// si_code (0 = kill/SI_USER, 0x80 = kernel, negative = queued/tkill).
        code: i32,
        group: bool,
        /// 0 delivered, 1 ignored, 2 already pending, 3 lost (TRACE_SIGNAL_*).
        result: i32,
        /// Syscall name the target thread was inside when the signal was sent.
        target_syscall: Option<Syscall>,
    },
    /// A signal reached the event's task; `handler` 0 = default action, 1 = ignored.
    SignalDelivered {
        signal: i32,
        code: i32,
        handler: u64,
    },
    /// Synthetic: a process the auditor started or attached to, with what it
    /// knew about it at that moment.
    ProcessStart {
        /// Working directory, the base of its relative paths.
        cwd: String,
        exe: String,
        argv: Vec<String>,
        /// Parent pid (0 when unknown).
        ppid: u32,
        /// The auditor launched it (as opposed to attaching to it).
        launched: bool,
    },
    /// Synthetic: an fd that was already open when tracing started.
    FdAtStart {
        fd: i32,
        path: String,
        file: Option<FileInfo>,
        cloexec: bool,
        /// Opened by whoever started the command, which inherited it
        /// (`auditor run -- cmd > out.log`; under attach, stdout and
        /// stderr): what is written through it is the caller's output, not
        /// the command's data.
        #[serde(default)]
        from_caller: bool,
    },
    /// Synthetic: records the kernel could not deliver (ring buffer full).
    Lost {
        count: u64,
    },
}

impl Event {
    /// The file this event acts on through an fd or path, if any.
    pub fn file(&self) -> Option<&FileInfo> {
        match &self.kind {
            EventKind::Open { file, .. }
            | EventKind::Write { file, .. }
            | EventKind::Truncate { file, .. }
            | EventKind::Fallocate { file, .. }
            | EventKind::Sync { file, .. }
            | EventKind::Close { file, .. }
            | EventKind::Dup { file, .. }
            | EventKind::Fcntl { file, .. }
            | EventKind::Mmap { file, .. }
            | EventKind::FdAtStart { file, .. }
            | EventKind::Rename { file, .. } => file.as_ref(),
            _ => None,
        }
    }
}

/// Filesystems whose data does not survive a reboot (or is not data at all):
/// the analyzer does not judge files on them.
pub fn is_volatile_fs(fs: &str) -> bool {
    matches!(
        fs,
        "tmpfs"
            | "ramfs"
            | "proc"
            | "sysfs"
            | "devtmpfs"
            | "devpts"
            | "cgroup"
            | "cgroup2"
            | "pipefs"
            | "sockfs"
            | "anon_inodefs"
            | "debugfs"
            | "tracefs"
            | "securityfs"
            | "bpf"
            | "mqueue"
            | "hugetlbfs"
            | "nsfs"
            | "configfs"
            | "efivarfs"
            | "pstore"
            | "binfmt_misc"
            | "autofs"
            | "fusectl"
    )
}
