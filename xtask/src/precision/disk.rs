//! What the ground truth asks the filesystem once the run is over: which
//! paths live on a volatile filesystem, and which filesystem holds a path.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The model's questions about the host's filesystems, answered after the
/// run (a trait so the model's tests answer them without a disk).
pub trait Disk {
    /// True when data there does not survive a power cut by design (tmpfs,
    /// proc, sysfs, ...), so no durability finding applies.
    fn volatile(&self, path: &str) -> bool;
    /// The device of the filesystem holding `path` (or its nearest existing
    /// ancestor): what `syncfs` covers.
    fn device(&self, path: &str) -> Option<u64>;
}

/// Paths that are never durable storage, whatever is mounted there.
const VOLATILE_TREES: &[&str] = &["/dev", "/proc", "/sys", "/run"];

/// `statfs` magic numbers of filesystems that hold nothing across a reboot.
const VOLATILE_MAGICS: &[i64] = &[
    0x0102_1994, // tmpfs
    0x8584_58f6, // ramfs
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x1cd1,      // devpts
    0x6367_7270, // cgroup2
    0x0027_e0eb, // cgroup
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0xcafe_4a11, // bpf
];

/// The real filesystems, asked with `statfs` and `stat`.
pub struct HostDisk;

impl Disk for HostDisk {
    fn volatile(&self, path: &str) -> bool {
        if VOLATILE_TREES
            .iter()
            .any(|t| path == *t || path.starts_with(&format!("{t}/")))
        {
            return true;
        }
        existing_ancestor(path)
            .and_then(|p| statfs_magic(&p))
            .is_some_and(|m| VOLATILE_MAGICS.contains(&m))
    }

    fn device(&self, path: &str) -> Option<u64> {
        let p = existing_ancestor(path)?;
        std::fs::metadata(p).ok().map(|m| m.dev())
    }
}

/// The path itself or the closest ancestor that exists now: files a
/// program deleted are judged by the filesystem they were on.
fn existing_ancestor(path: &str) -> Option<String> {
    let mut p = Path::new(path);
    loop {
        if p.symlink_metadata().is_ok() {
            return p.to_str().map(str::to_owned);
        }
        p = p.parent()?;
    }
}

fn statfs_magic(path: &str) -> Option<i64> {
    let c = CString::new(path).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a writable statfs.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    (rc == 0).then_some(buf.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_and_dev_shm_are_volatile_and_the_repository_is_not() {
        let d = HostDisk;
        assert!(d.volatile("/proc/self/status"));
        assert!(d.volatile("/dev/shm/trace"));
        assert!(!d.volatile(env!("CARGO_MANIFEST_DIR")));
        // A file that does not exist is judged by its nearest ancestor.
        let gone = format!("{}/no/such/file", env!("CARGO_MANIFEST_DIR"));
        assert!(!d.volatile(&gone));
        assert_eq!(d.device(&gone), d.device(env!("CARGO_MANIFEST_DIR")));
    }
}
