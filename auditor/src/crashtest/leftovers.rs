//! Taking down a scratch directory whose owner is gone: a crashtest killed
//! outright (SIGKILL, the OOM killer) cannot clean up after itself, so its
//! guardian does it, and a later crashtest does it for a run whose
//! guardian died too (a reboot). Every step works on what is there and
//! skips what is not, so two cleaners at once do no harm.

use std::{
    ffi::CString,
    os::{fd::RawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::capture::maps;

/// Name of the mount point inside a scratch directory. A directory that
/// still has one belongs to a run that never finished cleaning up (a run
/// that kept its images with `--keep` removes it).
pub const MOUNT_POINT: &str = "mnt";

/// Ends what the run left: the traced processes still in `traced` maps
/// (frozen ones included), every process using the mount, the mount, its
/// loop device and, unless `keep`, the images and the directory. Returns
/// whether anything was left to do.
pub fn clean(dir: &Path, keep: bool, traced: &[RawFd]) -> bool {
    let mnt = dir.join(MOUNT_POINT);
    let mut found = false;
    for &fd in traced {
        for pid in maps::traced_pids(fd) {
            if is_stopped(pid) || uses(pid, &mnt) {
                found = true;
                // SAFETY: kill with a pid the run traced.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    found |= unmount(&mnt);
    found |= detach_loops_under(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let is_image = name.to_str().is_some_and(|n| n.ends_with(".img"));
            if is_image && !keep {
                found = true;
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    found |= std::fs::remove_dir(&mnt).is_ok();
    if !keep {
        found |= std::fs::remove_dir(dir).is_ok();
    }
    found
}

/// Unmounts `mnt` once every process using it is gone (killed here, and
/// waited for briefly); lazily if one still holds it. Whether it was
/// mounted.
fn unmount(mnt: &Path) -> bool {
    let Ok(c) = CString::new(mnt.as_os_str().as_bytes()) else {
        return false;
    };
    if !is_mount_point(mnt) {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        kill_users(mnt);
        // SAFETY: valid C string; NOFOLLOW: never unmount through a link.
        if unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW) } == 0 {
            return true;
        }
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW | libc::MNT_DETACH) };
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `path` is where something is mounted, from /proc/self/mountinfo
/// (the fifth field; spaces and such are octal-escaped there).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = escape_mount_path(path);
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == want))
}

fn escape_mount_path(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// SIGKILL to every process whose cwd, root or an open file is under `mnt`.
fn kill_users(mnt: &Path) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid != me && uses(pid, mnt) {
            // SAFETY: kill with a pid that holds our scratch mount.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Whether process `pid` has its cwd, root or an open file under `mnt`.
fn uses(pid: i32, mnt: &Path) -> bool {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let under = |link: PathBuf| std::fs::read_link(link).is_ok_and(|t| t.starts_with(mnt));
    if under(base.join("cwd")) || under(base.join("root")) {
        return true;
    }
    std::fs::read_dir(base.join("fd"))
        .map(|fds| fds.flatten().any(|fd| under(fd.path())))
        .unwrap_or(false)
}

/// Stopped (SIGSTOP, a crash point's freeze): the state after the comm in
/// /proc/PID/stat.
fn is_stopped(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, Some('T' | 't'))
}

/// Detaches every loop device backed by a file in `dir`. Whether there was
/// one.
fn detach_loops_under(dir: &Path) -> bool {
    let mut found = false;
    for (dev, backing) in loop_devices() {
        if backing.parent() == Some(dir) {
            found = true;
            clear_loop(&dev);
        }
    }
    found
}

/// (device, backing file) of every attached loop device.
pub fn loop_devices() -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            Some((
                PathBuf::from(format!("/dev/{name}")),
                PathBuf::from(backing.trim_end_matches('\n')),
            ))
        })
        .collect()
}

/// LOOP_CLR_FD: detaches now, or as soon as the last user closes it.
pub fn clear_loop(dev: &Path) {
    use std::os::fd::AsRawFd;
    const LOOP_CLR_FD: libc::c_ulong = 0x4c01;
    if let Ok(f) = std::fs::File::open(dev) {
        // SAFETY: ioctl without argument on an open loop device.
        unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_escaped_as_mountinfo_writes_them() {
        assert_eq!(
            escape_mount_path(Path::new("/var/tmp/a b\\c")),
            "/var/tmp/a\\040b\\134c"
        );
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
    }
}
