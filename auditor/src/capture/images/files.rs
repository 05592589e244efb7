//! Looking at files the traced processes named without being led anywhere
//! else. A file is first taken as an O_PATH handle, which opens nothing
//! (no device side effect, no FIFO to block on): through the process's own
//! fd (`/proc/PID/fd/N`), or by name inside the process's root with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` and the last
//! component never followed. Only a regular file, on a local filesystem,
//! checked to be the file expected, is then opened for reading (O_NONBLOCK,
//! so a lease does not hold us; O_NOATIME where allowed) and read within
//! a bound.

use std::ffi::CString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

use auditor_analyzer::event::FileId;

use crate::capture::decode::fs_name;

/// Filesystems whose files are read: local ones, where a read cannot wait
/// on a server or a userspace daemon.
const LOCAL_FS: &[&str] = &[
    "ext4", "xfs", "btrfs", "f2fs", "zfs", "overlay", "vfat", "exfat", "squashfs", "isofs",
    "tmpfs", "ramfs",
];

pub fn is_local(fs: &str) -> bool {
    LOCAL_FS.contains(&fs)
}

/// A file found, as a handle that did not open it, with its status.
pub struct Found {
    handle: File,
    pub meta: Metadata,
}

/// What a name led to.
pub enum Lookup {
    Found(Found),
    Missing,
    Symlink,
    NotRegular,
    Unreadable,
}

impl Found {
    pub fn id(&self) -> FileId {
        FileId {
            dev: self.meta.dev(),
            ino: self.meta.ino(),
        }
    }

    /// Whether its filesystem is one whose files are read.
    pub fn on_local_fs(&self) -> bool {
        // SAFETY: zeroed statfs is a valid out buffer; the fd is ours and
        // open (fstatfs accepts O_PATH descriptors).
        let magic = unsafe {
            let mut s: libc::statfs = std::mem::zeroed();
            (libc::fstatfs(self.handle.as_raw_fd(), &mut s) == 0).then_some(s.f_type as u64)
        };
        magic.is_some_and(|m| is_local(fs_name(m)))
    }

    /// The file opened for reading: the handle is reopened, not the name,
    /// so it is the regular file found.
    pub fn open(&self) -> Option<File> {
        let proc_path = format!("/proc/self/fd/{}", self.handle.as_raw_fd());
        let open = |noatime: i32| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | noatime)
                .open(&proc_path)
        };
        // O_NOATIME is refused on files of other owners without
        // CAP_FOWNER: then the read may touch the access time.
        match open(libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
            r => r,
        }
        .ok()
    }
}

/// Up to `len` bytes of `f` at `at` (fewer at its end).
pub fn read_at(f: &File, at: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match f.read_at(&mut buf[n..], at.checked_add(n as u64)?) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(n);
    Some(buf)
}

/// `pid`'s open `fd`, when it is still the regular file `id`.
pub fn through_fd(pid: u32, fd: i32, id: FileId) -> Option<Found> {
    let link = format!("/proc/{pid}/fd/{fd}");
    let is_it = |m: &Metadata| m.is_file() && m.dev() == id.dev && m.ino() == id.ino;
    // A fast process has often closed the file and reused the number by
    // now: one stat tells, before a handle is taken.
    if !std::fs::metadata(&link).is_ok_and(|m| is_it(&m)) {
        return None;
    }
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&link)
        .ok()?;
    let meta = handle.metadata().ok()?;
    is_it(&meta).then_some(Found { handle, meta })
}

/// `pid`'s root directory (the host's once the process is gone), where
/// the names it uses resolve.
pub fn root_of(pid: u32) -> Option<File> {
    let dir = |p: &str| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(p)
    };
    dir(&format!("/proc/{pid}/root")).or_else(|_| dir("/")).ok()
}

/// `path` resolved inside `root`, the last component not followed.
pub fn in_root(root: &File, path: &str) -> Lookup {
    let Ok(c) = CString::new(path) else {
        return Lookup::Unreadable;
    };
    match beneath(root, &c) {
        Ok(handle) => match handle.metadata() {
            Ok(meta) if meta.is_file() => Lookup::Found(Found { handle, meta }),
            Ok(meta) if meta.file_type().is_symlink() => Lookup::Symlink,
            Ok(_) => Lookup::NotRegular,
            Err(_) => Lookup::Unreadable,
        },
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Lookup::Missing,
        Err(_) => Lookup::Unreadable,
    }
}

/// An O_PATH handle on `path` inside `root`, its last component not
/// followed. Kernels before 5.6 have no openat2: there only the host's
/// own root is looked in, by name.
fn beneath(root: &File, path: &CString) -> io::Result<File> {
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the root fd is open, the path NUL-terminated, `how` lives
    // across the call and its size is passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel returned a new fd that nothing else owns.
        return Ok(unsafe { File::from_raw_fd(fd as i32) });
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) || !is_host_root(root) {
        return Err(err);
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path.to_str().map_err(|_| io::ErrorKind::InvalidInput)?)
}

fn is_host_root(root: &File) -> bool {
    match (root.metadata(), std::fs::metadata("/")) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch;

    #[test]
    fn names_lead_to_files_links_and_nothing() {
        let d = scratch("files-lookup");
        let f = d.join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        std::os::unix::fs::symlink(&f, d.join("link")).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        let root = root_of(std::process::id()).unwrap();
        let at = |n: &str| in_root(&root, d.join(n).to_str().unwrap());
        let Lookup::Found(found) = at("f") else {
            panic!("the file")
        };
        let file = found.open().unwrap();
        assert_eq!(read_at(&file, 2, 4).unwrap(), b"2345");
        assert_eq!(read_at(&file, 8, 100).unwrap(), b"89", "cut at the end");
        assert!(matches!(at("link"), Lookup::Symlink), "not followed");
        assert!(matches!(at("sub"), Lookup::NotRegular));
        assert!(matches!(at("none"), Lookup::Missing));
        assert!(matches!(at("f/under-a-file"), Lookup::Missing));
        assert!(matches!(in_root(&root, "/a\0b"), Lookup::Unreadable));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_fd_is_taken_only_while_it_is_the_same_file() {
        let d = scratch("files-fd");
        let f = d.join("f");
        std::fs::write(&f, b"x").unwrap();
        let held = File::open(&f).unwrap();
        let id = FileId {
            dev: held.metadata().unwrap().dev(),
            ino: held.metadata().unwrap().ino(),
        };
        let me = std::process::id();
        assert!(through_fd(me, held.as_raw_fd(), id).is_some());
        let other = FileId {
            ino: id.ino + 1,
            ..id
        };
        assert!(through_fd(me, held.as_raw_fd(), other).is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
