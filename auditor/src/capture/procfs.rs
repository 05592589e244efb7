//! Reading running processes from /proc: who they are (comm, parent, start
//! time, pid in their own namespace, cgroup) and the files they already
//! hold open, so tracing can start in the middle of a process's life.

use std::{io, path::PathBuf};

use auditor_analyzer::event::{FileId, FileInfo};

use super::enrich::stat_info;

/// Bytes of a mount table read at most.
const MAX_MOUNTINFO: u64 = 4 << 20;

/// A /proc tree (the real one, or a copy in tests).
#[derive(Clone, Debug)]
pub struct ProcFs {
    root: PathBuf,
}

/// What /proc says about one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// Start time in clock ticks since boot: with the pid, it names one life
    /// of a process even when the pid is reused.
    pub start_ticks: u64,
    /// The pid in each pid namespace, outermost first (`NSpid`); more than
    /// one entry when the process lives in its own pid namespace.
    pub nspid: Vec<u32>,
    /// cgroup v2 path (`0::` line of /proc/PID/cgroup).
    pub cgroup: Option<String>,
}

/// One fd found open at attach.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenFd {
    pub fd: i32,
    /// The link text: an absolute path, or `socket:[N]`, `pipe:[N]`...;
    /// a deleted file's path is prefixed with `deleted:` so it is never
    /// taken for a live name.
    pub path: String,
    pub info: Option<FileInfo>,
    /// Open flags from fdinfo (O_CLOEXEC included when set).
    pub flags: u32,
    pub pos: u64,
}

impl Default for ProcFs {
    fn default() -> Self {
        ProcFs::new("/proc")
    }
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcFs { root: root.into() }
    }

    fn path(&self, pid: u32, rest: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(rest)
    }

    /// Every process (thread group) id listed.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let mut pids: Vec<u32> = std::fs::read_dir(&self.root)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    pub fn exists(&self, pid: u32) -> bool {
        self.path(pid, "stat").exists()
    }

    /// Whether `pid` still runs: listed, and not a zombie waiting to be
    /// reaped (its exit already happened).
    pub fn running(&self, pid: u32) -> bool {
        std::fs::read_to_string(self.path(pid, "stat")).is_ok_and(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
    }

    /// comm, ppid, start time, NSpid and cgroup of `pid`.
    pub fn info(&self, pid: u32) -> io::Result<ProcInfo> {
        let stat = std::fs::read_to_string(self.path(pid, "stat"))?;
        let (comm, ppid, start_ticks) = parse_stat(&stat).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat")
        })?;
        let status = std::fs::read_to_string(self.path(pid, "status")).unwrap_or_default();
        let mut nspid = parse_nspid(&status);
        if nspid.is_empty() {
            nspid.push(pid);
        }
        let cgroup = std::fs::read_to_string(self.path(pid, "cgroup"))
            .ok()
            .and_then(|s| parse_cgroup_v2(&s));
        Ok(ProcInfo {
            pid,
            ppid,
            comm,
            start_ticks,
            nspid,
            cgroup,
        })
    }

    /// Working directory, executable and command line (empty when hidden).
    pub fn cwd_exe_argv(&self, pid: u32) -> (String, String, Vec<String>) {
        let link = |p: PathBuf| {
            std::fs::read_link(p)
                .map(|l| l.display().to_string())
                .unwrap_or_default()
        };
        let argv = std::fs::read(self.path(pid, "cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        (
            link(self.path(pid, "cwd")),
            link(self.path(pid, "exe")),
            argv,
        )
    }

    /// The inode number of `pid`'s mount namespace (as `/proc/PID/ns/mnt`
    /// names it: `mnt:[N]`).
    pub fn mnt_ns(&self, pid: u32) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(self.path(pid, "ns/mnt"))?.ino())
    }

    /// Device and inode of `pid`'s root directory.
    pub fn root_id(&self, pid: u32) -> io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.path(pid, "root"))?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Where `pid`'s root is, as our root reaches it (for a process in
    /// another mount namespace, relative to that namespace's root).
    pub fn root_link(&self, pid: u32) -> io::Result<String> {
        Ok(std::fs::read_link(self.path(pid, "root"))?
            .display()
            .to_string())
    }

    /// `pid`'s mount table, bounded (a table of a million mounts is read
    /// in part and its last line counted malformed).
    pub fn mountinfo(&self, pid: u32) -> io::Result<String> {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(self.path(pid, "mountinfo"))?
            .take(MAX_MOUNTINFO)
            .read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The fds `pid` holds open now, with what the kernel says about each
    /// file. An fd closed while we read is skipped.
    pub fn open_files(&self, pid: u32) -> io::Result<Vec<OpenFd>> {
        let dir = self.path(pid, "fd");
        let mut fds: Vec<i32> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort_unstable();
        let mut out = Vec::with_capacity(fds.len());
        for fd in fds {
            let link = dir.join(fd.to_string());
            let Ok(target) = std::fs::read_link(&link) else {
                continue;
            };
            let Ok(fdinfo) = std::fs::read_to_string(self.path(pid, &format!("fdinfo/{fd}")))
            else {
                continue;
            };
            let (flags, pos) = parse_fdinfo(&fdinfo);
            let text = target.display().to_string();
            let path = match text.strip_suffix(" (deleted)") {
                Some(p) if p.starts_with('/') => format!("deleted:{p}"),
                _ => text,
            };
            out.push(OpenFd {
                fd,
                info: stat_info(&link, true, flags),
                path,
                flags,
                pos,
            });
        }
        Ok(out)
    }
}

/// (comm, ppid, starttime) from /proc/PID/stat; comm may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(s: &str) -> Option<(String, u32, u64)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, starttime field 22.
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

fn parse_nspid(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The unified hierarchy's line is `0::/path`.
fn parse_cgroup_v2(s: &str) -> Option<String> {
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// (flags, pos); flags are octal in fdinfo.
fn parse_fdinfo(s: &str) -> (u32, u64) {
    let mut flags = 0;
    let mut pos = 0;
    for l in s.lines() {
        if let Some(v) = l.strip_prefix("flags:") {
            flags = u32::from_str_radix(v.trim(), 8).unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("pos:") {
            pos = v.trim().parse().unwrap_or(0);
        }
    }
    (flags, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_comm() {
        let s = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 1 1";
        assert_eq!(parse_stat(s), Some(("a) b (c)".into(), 7, 123456)));
        assert_eq!(parse_stat("42 (x) S"), None);
    }

    #[test]
    fn status_cgroup_fdinfo() {
        assert_eq!(parse_nspid("Name:\tx\nNSpid:\t4711\t1\n"), vec![4711, 1]);
        assert_eq!(
            parse_cgroup_v2("12:cpu:/x\n0::/system.slice/redis.service\n"),
            Some("/system.slice/redis.service".into())
        );
        assert_eq!(
            parse_fdinfo("pos:\t4096\nflags:\t02100001\nmnt_id:\t29\n"),
            (0o2100001, 4096)
        );
    }

    /// The real /proc: our own open file is found with its identity, flags
    /// and position, and our own facts match.
    #[test]
    fn reads_our_own_process() {
        use std::io::{Seek, SeekFrom, Write};
        use std::os::fd::AsRawFd;
        let p = std::env::temp_dir().join(format!("auditor-procfs-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        f.write_all(b"hello").unwrap();
        f.seek(SeekFrom::Start(5)).unwrap();
        let pid = std::process::id();
        let proc = ProcFs::default();
        let info = proc.info(pid).unwrap();
        assert_eq!(info.pid, pid);
        // SAFETY: getppid has no preconditions.
        assert_eq!(info.ppid, unsafe { libc::getppid() } as u32);
        assert_eq!(info.nspid.first(), Some(&pid));
        let fds = proc.open_files(pid).unwrap();
        let mine = fds
            .iter()
            .find(|o| o.fd == f.as_raw_fd())
            .expect("our fd is listed");
        assert_eq!(mine.path, p.display().to_string());
        assert_eq!(mine.pos, 5);
        assert_ne!(mine.flags & libc::O_APPEND as u32, 0);
        assert_ne!(mine.flags & libc::O_CLOEXEC as u32, 0, "std opens CLOEXEC");
        let id = mine.info.as_ref().unwrap().id;
        use std::os::unix::fs::MetadataExt;
        assert_eq!(id.ino, std::fs::metadata(&p).unwrap().ino());
        std::fs::remove_file(&p).unwrap();
        let fds = proc.open_files(pid).unwrap();
        let gone = fds.iter().find(|o| o.fd == f.as_raw_fd()).unwrap();
        assert_eq!(gone.path, format!("deleted:{}", p.display()));
    }

    #[test]
    fn unreadable_entries_are_errors_not_panics() {
        let proc = ProcFs::new("/nonexistent-proc");
        assert!(proc.pids().is_err());
        assert!(proc.info(1).is_err());
        assert!(proc.open_files(1).is_err());
    }
}
