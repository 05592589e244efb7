//! The Linux ABI values the probes, the decoder and the analyzer read
//! (x86_64 and the generic flag values): one definition, so the three sides
//! cannot disagree about what a bit means.

/// `open(2)` flags.
pub mod open {
    pub const O_ACCMODE: u32 = 0o3;
    pub const O_WRONLY: u32 = 0o1;
    pub const O_RDWR: u32 = 0o2;
    pub const O_CREAT: u32 = 0o100;
    pub const O_EXCL: u32 = 0o200;
    pub const O_TRUNC: u32 = 0o1000;
    pub const O_APPEND: u32 = 0o2000;
    pub const O_NONBLOCK: u32 = 0o4000;
    pub const O_DSYNC: u32 = 0o10000;
    pub const O_ASYNC: u32 = 0o20000;
    pub const O_DIRECT: u32 = 0o40000;
    pub const O_DIRECTORY: u32 = 0o200000;
    pub const O_NOATIME: u32 = 0o1000000;
    pub const O_CLOEXEC: u32 = 0o2000000;
    /// A handle on the name, not an open for reading or writing.
    pub const O_PATH: u32 = 0o10000000;
    /// `__O_SYNC | O_DSYNC`: O_SYNC includes O_DSYNC.
    pub const O_SYNC: u32 = 0o4010000;
    /// Flags `fcntl(F_SETFL)` may change on Linux.
    pub const SETFL_MASK: u32 = O_APPEND | O_ASYNC | O_DIRECT | O_NOATIME | O_NONBLOCK;
}

/// `fcntl(2)` commands.
pub mod fcntl {
    pub const F_DUPFD: u64 = 0;
    pub const F_SETFD: u64 = 2;
    pub const F_SETFL: u64 = 4;
    pub const F_DUPFD_CLOEXEC: u64 = 1030;
    /// `F_SETFD`'s only flag.
    pub const FD_CLOEXEC: u64 = 1;
}

/// `*at(2)` directory fd and flags.
pub mod at {
    /// The calling thread's working directory as a dirfd.
    pub const AT_FDCWD: i32 = -100;
    /// `unlinkat(2)`: remove a directory.
    pub const AT_REMOVEDIR: u32 = 0x200;
}

/// `renameat2(2)` flags.
pub mod rename {
    pub const RENAME_NOREPLACE: u32 = 1;
    pub const RENAME_EXCHANGE: u32 = 2;
}

/// `msync(2)`, `close_range(2)`, `pwritev2(2)` and `mmap(2)` flags.
pub mod misc {
    pub const MS_SYNC: u32 = 4;
    pub const CLOSE_RANGE_CLOEXEC: u32 = 4;
    pub const RWF_DSYNC: u64 = 0x2;
    pub const RWF_SYNC: u64 = 0x4;
    pub const PROT_WRITE: u64 = 2;
    pub const PROT_EXEC: u64 = 4;
    pub const MAP_SHARED: u64 = 1;
    pub const MAP_SHARED_VALIDATE: u64 = 3;
    pub const MAP_TYPE: u64 = 0x0f;
}

/// `mount(2)`, `umount2(2)`, `unshare(2)` and `setns(2)` values: what
/// changes the paths a process sees.
pub mod ns {
    pub const MS_REMOUNT: u64 = 32;
    pub const MS_BIND: u64 = 4096;
    pub const MS_MOVE: u64 = 8192;
    pub const MS_REC: u64 = 16384;
    /// Propagation changes (`MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE |
    /// MS_SHARED`): no path moves.
    pub const MS_PROPAGATION: u64 = (1 << 17) | (1 << 18) | (1 << 19) | (1 << 20);
    pub const CLONE_NEWNS: u64 = 0x0002_0000;
    /// `MS_REC | MS_PRIVATE`, as `mount --make-rprivate /` passes it.
    pub const MS_PRIVATE_REC: u64 = MS_REC | (1 << 18);
}

/// `st_mode` / `i_mode` file type bits.
pub mod mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFIFO: u32 = 0o010000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFBLK: u32 = 0o060000;
}

/// `file.f_mode` bit set when the open created the file (include/linux/fs.h).
pub const FMODE_CREATED: u32 = 1 << 20;

/// Signal numbers the probes act on.
pub const SIGSTOP: u32 = 19;
