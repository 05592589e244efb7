//! The traced syscalls as a type: the decoder names a record's call once,
//! and the analyzer matches on variants instead of strings.

use crate::nr;

/// Declares the traced syscalls from one line each (variant, x86_64
/// number, name): the enum, and the table its conversions look in.
macro_rules! syscalls {
    (
        $(#[$meta:meta])*
        pub enum Syscall {
            $($(#[$attr:meta])* $call:ident => $nr:ident, $name:literal;)*
        }
    ) => {
        $(#[$meta])*
        pub enum Syscall {
            $($(#[$attr])* $call,)*
        }

        /// Every traced syscall with its x86_64 number and its name.
        const TABLE: &[(Syscall, u32, &str)] = &[$((Syscall::$call, nr::$nr, $name)),*];
    };
}

syscalls! {
    /// One of the syscalls the probes report.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    #[cfg_attr(
        feature = "serde",
        derive(serde::Serialize, serde::Deserialize),
        serde(rename_all = "snake_case")
    )]
    pub enum Syscall {
        Write => WRITE, "write";
        Pwrite64 => PWRITE64, "pwrite64";
        Writev => WRITEV, "writev";
        Pwritev => PWRITEV, "pwritev";
        Pwritev2 => PWRITEV2, "pwritev2";
        CopyFileRange => COPY_FILE_RANGE, "copy_file_range";
        Sendfile => SENDFILE, "sendfile";
        Truncate => TRUNCATE, "truncate";
        Ftruncate => FTRUNCATE, "ftruncate";
        Fallocate => FALLOCATE, "fallocate";
        Fsync => FSYNC, "fsync";
        Fdatasync => FDATASYNC, "fdatasync";
        SyncFileRange => SYNC_FILE_RANGE, "sync_file_range";
        Syncfs => SYNCFS, "syncfs";
        Sync => SYNC, "sync";
        Msync => MSYNC, "msync";
        Rename => RENAME, "rename";
        Renameat => RENAMEAT, "renameat";
        Renameat2 => RENAMEAT2, "renameat2";
        Link => LINK, "link";
        Linkat => LINKAT, "linkat";
        Unlink => UNLINK, "unlink";
        Unlinkat => UNLINKAT, "unlinkat";
        Mkdir => MKDIR, "mkdir";
        Mkdirat => MKDIRAT, "mkdirat";
        Open => OPEN, "open";
        Openat => OPENAT, "openat";
        Openat2 => OPENAT2, "openat2";
        Creat => CREAT, "creat";
        Close => CLOSE, "close";
        CloseRange => CLOSE_RANGE, "close_range";
        Dup => DUP, "dup";
        Dup2 => DUP2, "dup2";
        Dup3 => DUP3, "dup3";
        /// Recordings made before the call was typed named fcntl's dups by
        /// their command.
        #[cfg_attr(
            feature = "serde",
            serde(alias = "fcntl(F_DUPFD)", alias = "fcntl(F_DUPFD_CLOEXEC)")
        )]
        Fcntl => FCNTL, "fcntl";
        Mmap => MMAP, "mmap";
        Chdir => CHDIR, "chdir";
        Fchdir => FCHDIR, "fchdir";
        Chroot => CHROOT, "chroot";
        PivotRoot => PIVOT_ROOT, "pivot_root";
        Mount => MOUNT, "mount";
        Umount2 => UMOUNT2, "umount2";
        Unshare => UNSHARE, "unshare";
        Setns => SETNS, "setns";
    }
}

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
