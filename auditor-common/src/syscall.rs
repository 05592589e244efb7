//! The traced syscalls as a type: the decoder names a record's call once,
//! and the analyzer matches on variants instead of strings.

use crate::nr;

/// One of the syscalls the probes report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Syscall {
    Write,
    Pwrite64,
    Writev,
    Pwritev,
    Pwritev2,
    CopyFileRange,
    Sendfile,
    Truncate,
    Ftruncate,
    Fallocate,
    Fsync,
    Fdatasync,
    SyncFileRange,
    Syncfs,
    Sync,
    Msync,
    Rename,
    Renameat,
    Renameat2,
    Link,
    Linkat,
    Unlink,
    Unlinkat,
    Mkdir,
    Mkdirat,
    Open,
    Openat,
    Openat2,
    Creat,
    Close,
    CloseRange,
    Dup,
    Dup2,
    Dup3,
    /// Recordings made before the call was typed named fcntl's dups by
    /// their command.
    #[cfg_attr(
        feature = "serde",
        serde(alias = "fcntl(F_DUPFD)", alias = "fcntl(F_DUPFD_CLOEXEC)")
    )]
    Fcntl,
    Mmap,
    Chdir,
    Fchdir,
    Chroot,
    PivotRoot,
    Mount,
    Umount2,
    Unshare,
    Setns,
}

/// Every traced syscall with its x86_64 number and its name.
const TABLE: &[(Syscall, u32, &str)] = &[
    (Syscall::Write, nr::WRITE, "write"),
    (Syscall::Pwrite64, nr::PWRITE64, "pwrite64"),
    (Syscall::Writev, nr::WRITEV, "writev"),
    (Syscall::Pwritev, nr::PWRITEV, "pwritev"),
    (Syscall::Pwritev2, nr::PWRITEV2, "pwritev2"),
    (
        Syscall::CopyFileRange,
        nr::COPY_FILE_RANGE,
        "copy_file_range",
    ),
    (Syscall::Sendfile, nr::SENDFILE, "sendfile"),
    (Syscall::Truncate, nr::TRUNCATE, "truncate"),
    (Syscall::Ftruncate, nr::FTRUNCATE, "ftruncate"),
    (Syscall::Fallocate, nr::FALLOCATE, "fallocate"),
    (Syscall::Fsync, nr::FSYNC, "fsync"),
    (Syscall::Fdatasync, nr::FDATASYNC, "fdatasync"),
    (
        Syscall::SyncFileRange,
        nr::SYNC_FILE_RANGE,
        "sync_file_range",
    ),
    (Syscall::Syncfs, nr::SYNCFS, "syncfs"),
    (Syscall::Sync, nr::SYNC, "sync"),
    (Syscall::Msync, nr::MSYNC, "msync"),
    (Syscall::Rename, nr::RENAME, "rename"),
    (Syscall::Renameat, nr::RENAMEAT, "renameat"),
    (Syscall::Renameat2, nr::RENAMEAT2, "renameat2"),
    (Syscall::Link, nr::LINK, "link"),
    (Syscall::Linkat, nr::LINKAT, "linkat"),
    (Syscall::Unlink, nr::UNLINK, "unlink"),
    (Syscall::Unlinkat, nr::UNLINKAT, "unlinkat"),
    (Syscall::Mkdir, nr::MKDIR, "mkdir"),
    (Syscall::Mkdirat, nr::MKDIRAT, "mkdirat"),
    (Syscall::Open, nr::OPEN, "open"),
    (Syscall::Openat, nr::OPENAT, "openat"),
    (Syscall::Openat2, nr::OPENAT2, "openat2"),
    (Syscall::Creat, nr::CREAT, "creat"),
    (Syscall::Close, nr::CLOSE, "close"),
    (Syscall::CloseRange, nr::CLOSE_RANGE, "close_range"),
    (Syscall::Dup, nr::DUP, "dup"),
    (Syscall::Dup2, nr::DUP2, "dup2"),
    (Syscall::Dup3, nr::DUP3, "dup3"),
    (Syscall::Fcntl, nr::FCNTL, "fcntl"),
    (Syscall::Mmap, nr::MMAP, "mmap"),
    (Syscall::Chdir, nr::CHDIR, "chdir"),
    (Syscall::Fchdir, nr::FCHDIR, "fchdir"),
    (Syscall::Chroot, nr::CHROOT, "chroot"),
    (Syscall::PivotRoot, nr::PIVOT_ROOT, "pivot_root"),
    (Syscall::Mount, nr::MOUNT, "mount"),
    (Syscall::Umount2, nr::UMOUNT2, "umount2"),
    (Syscall::Unshare, nr::UNSHARE, "unshare"),
    (Syscall::Setns, nr::SETNS, "setns"),
];

impl Syscall {
    /// The call behind an x86_64 syscall number, if the probes trace it.
    pub fn from_nr(number: u32) -> Option<Syscall> {
        TABLE.iter().find(|e| e.1 == number).map(|e| e.0)
    }

    /// The call of that name (`write`, `renameat2`).
    pub fn from_name(name: &str) -> Option<Syscall> {
        TABLE.iter().find(|e| e.2 == name).map(|e| e.0)
    }

    fn entry(self) -> &'static (Syscall, u32, &'static str) {
        // Every variant has its row (a unit test checks it).
        TABLE.iter().find(|e| e.0 == self).unwrap_or(&TABLE[0])
    }

    /// The x86_64 syscall number.
    pub fn nr(self) -> u32 {
        self.entry().1
    }

    /// The name people know it by (`write`, `renameat2`).
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Calls that write file data.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Syscall::Write
                | Syscall::Pwrite64
                | Syscall::Writev
                | Syscall::Pwritev
                | Syscall::Pwritev2
                | Syscall::CopyFileRange
                | Syscall::Sendfile
        )
    }

    /// rename, renameat, renameat2.
    pub fn is_rename(self) -> bool {
        matches!(
            self,
            Syscall::Rename | Syscall::Renameat | Syscall::Renameat2
        )
    }

    /// link, linkat: a second name, the first one stays.
    pub fn is_link(self) -> bool {
        matches!(self, Syscall::Link | Syscall::Linkat)
    }

    /// fsync and fdatasync: the calls that make one file's data durable.
    pub fn is_fsync(self) -> bool {
        matches!(self, Syscall::Fsync | Syscall::Fdatasync)
    }
}

impl core::fmt::Display for Syscall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_traced_number_has_one_call_and_back() {
        for &(call, number, _) in TABLE {
            assert!(nr::is_traced_syscall(number), "{call:?}");
            assert_eq!(Syscall::from_nr(number), Some(call));
            assert_eq!(call.nr(), number);
            assert_eq!(Syscall::from_name(call.name()), Some(call));
        }
        let mut numbers: [u32; 44] = [0; 44];
        assert_eq!(TABLE.len(), numbers.len());
        for (i, e) in TABLE.iter().enumerate() {
            numbers[i] = e.1;
        }
        numbers.sort_unstable();
        assert!(numbers.windows(2).all(|w| w[0] != w[1]));
        assert_eq!(Syscall::from_nr(0), None, "read is not traced");
    }
}
