//! x86_64 syscall numbers the probes handle, and which tracepoint each uses.

pub const WRITE: u32 = 1;
pub const OPEN: u32 = 2;
pub const CLOSE: u32 = 3;
pub const MMAP: u32 = 9;
pub const PWRITE64: u32 = 18;
pub const WRITEV: u32 = 20;
pub const MSYNC: u32 = 26;
pub const DUP: u32 = 32;
pub const DUP2: u32 = 33;
pub const SENDFILE: u32 = 40;
pub const FCNTL: u32 = 72;
pub const FSYNC: u32 = 74;
pub const FDATASYNC: u32 = 75;
pub const TRUNCATE: u32 = 76;
pub const FTRUNCATE: u32 = 77;
pub const CHDIR: u32 = 80;
pub const FCHDIR: u32 = 81;
pub const RENAME: u32 = 82;
pub const MKDIR: u32 = 83;
pub const CREAT: u32 = 85;
pub const LINK: u32 = 86;
pub const UNLINK: u32 = 87;
pub const PIVOT_ROOT: u32 = 155;
pub const CHROOT: u32 = 161;
pub const SYNC: u32 = 162;
pub const MOUNT: u32 = 165;
pub const UMOUNT2: u32 = 166;
/// Followed at entry only (it does not return): where the program exits.
pub const EXIT_GROUP: u32 = 231;
pub const OPENAT: u32 = 257;
pub const MKDIRAT: u32 = 258;
pub const UNLINKAT: u32 = 263;
pub const RENAMEAT: u32 = 264;
pub const LINKAT: u32 = 265;
pub const UNSHARE: u32 = 272;
pub const SYNC_FILE_RANGE: u32 = 277;
pub const FALLOCATE: u32 = 285;
pub const DUP3: u32 = 292;
pub const PWRITEV: u32 = 296;
pub const SYNCFS: u32 = 306;
pub const SETNS: u32 = 308;
pub const RENAMEAT2: u32 = 316;
pub const COPY_FILE_RANGE: u32 = 326;
pub const PWRITEV2: u32 = 328;
pub const CLOSE_RANGE: u32 = 436;
pub const OPENAT2: u32 = 437;

/// Whether the probes follow this syscall.
pub const fn is_traced_syscall(nr: u32) -> bool {
    matches!(
        nr,
        WRITE
            | OPEN
            | CLOSE
            | MMAP
            | PWRITE64
            | WRITEV
            | MSYNC
            | DUP
            | DUP2
            | SENDFILE
            | FCNTL
            | FSYNC
            | FDATASYNC
            | TRUNCATE
            | FTRUNCATE
            | CHDIR
            | FCHDIR
            | RENAME
            | MKDIR
            | CREAT
            | LINK
            | UNLINK
            | SYNC
            | OPENAT
            | MKDIRAT
            | UNLINKAT
            | RENAMEAT
            | LINKAT
            | SYNC_FILE_RANGE
            | FALLOCATE
            | DUP3
            | PWRITEV
            | SYNCFS
            | RENAMEAT2
            | COPY_FILE_RANGE
            | PWRITEV2
            | CLOSE_RANGE
            | OPENAT2
            | PIVOT_ROOT
            | CHROOT
            | MOUNT
            | UMOUNT2
            | UNSHARE
            | SETNS
            | EXIT_GROUP
    )
}

/// Argument indexes holding user-space path pointers, if any.
pub const fn path_args(nr: u32) -> (Option<usize>, Option<usize>) {
    match nr {
        OPEN | CREAT | MKDIR | UNLINK | TRUNCATE | CHDIR | CHROOT | UMOUNT2 => (Some(0), None),
        OPENAT | OPENAT2 | MKDIRAT | UNLINKAT => (Some(1), None),
        RENAME | LINK | PIVOT_ROOT | MOUNT => (Some(0), Some(1)),
        RENAMEAT | RENAMEAT2 | LINKAT => (Some(1), Some(3)),
        _ => (None, None),
    }
}

/// Argument indexes of the fds whose files are resolved at entry:
/// (main file, second file).
pub const fn fd_args(nr: u32) -> (Option<usize>, Option<usize>) {
    match nr {
        WRITE | PWRITE64 | WRITEV | PWRITEV | PWRITEV2 | CLOSE | FSYNC | FDATASYNC | FTRUNCATE
        | FALLOCATE | SYNC_FILE_RANGE | SYNCFS | FCNTL | DUP | DUP2 | DUP3 | FCHDIR => {
            (Some(0), None)
        }
        MMAP => (Some(4), None),
        COPY_FILE_RANGE => (Some(2), Some(0)),
        SENDFILE => (Some(0), Some(1)),
        _ => (None, None),
    }
}

/// Calls after which the probe reads where the task's root and mount
/// namespace now are (see `SyscallRecord::file`).
pub const fn stamps_view(nr: u32) -> bool {
    nr == SETNS
}

/// Syscalls whose return value is a new fd to resolve at exit.
pub const fn returns_fd(nr: u32) -> bool {
    matches!(nr, OPEN | OPENAT | OPENAT2 | CREAT)
}
