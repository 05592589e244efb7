//! Which running processes `attach` watches: those named by pid, those whose
//! name or cgroup matches, and every descendant of those (children of a
//! traced process are always traced).

use std::collections::{BTreeMap, BTreeSet};

use super::cgroup::Cgroup;
use crate::{
    capture::procfs::{ProcFs, ProcInfo},
    error::UserError,
};

/// Longest comm the kernel keeps (TASK_COMM_LEN - 1).
const COMM_MAX: usize = 15;

/// What the command line asked to watch.
#[derive(Clone, Debug, Default)]
pub struct Selectors {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub cgroups: Vec<Cgroup>,
}

/// `name` as the kernel stores a comm: cut to 15 bytes, zero-padded.
pub fn comm_key(name: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    let b = name.as_bytes();
    let n = b.len().min(COMM_MAX);
    k[..n].copy_from_slice(&b[..n]);
    k
}

fn comm_matches(want: &str, comm: &str) -> bool {
    comm_key(want) == comm_key(comm)
}

impl Selectors {
    /// Whether `p` matches a name or a cgroup (pids are matched by caller).
    pub fn matches(&self, p: &ProcInfo) -> bool {
        self.comms.iter().any(|c| comm_matches(c, &p.comm))
            || p.cgroup
                .as_deref()
                .is_some_and(|cg| self.cgroups.iter().any(|c| c.contains(cg)))
    }

    /// The processes to watch now, parents before children. Fails when a
    /// `--pid` names no process, the auditor itself (`exclude`) or a kernel
    /// thread, each of which would otherwise vanish from the set unsaid; an
    /// empty result is for the caller to judge (it may wait for
    /// `--follow-new`).
    pub fn discover(&self, proc: &ProcFs, exclude: u32) -> Result<Vec<ProcInfo>, UserError> {
        for &pid in &self.pids {
            if !proc.exists(pid) {
                return Err(UserError::new(format!(
                    "--pid {pid}: no such process (see `ps -e`)"
                )));
            }
            if pid == exclude {
                return Err(UserError::new(format!(
                    "--pid {pid} is the auditor itself: give the pid of the program to watch"
                )));
            }
            if let Ok(info) = proc.info(pid)
                && is_kernel_thread(&info)
            {
                return Err(UserError::new(format!(
                    "--pid {pid} is a kernel thread ({}): kernel threads do no file I/O of their own to audit",
                    info.comm
                )));
            }
        }
        let all = proc
            .pids()
            .map_err(|e| UserError::new(format!("cannot list /proc: {e}")))?;
        let infos: BTreeMap<u32, ProcInfo> = all
            .into_iter()
            // A process may end while we read: skip it.
            .filter_map(|pid| proc.info(pid).ok().map(|i| (pid, i)))
            .filter(|(pid, i)| *pid != exclude && !is_kernel_thread(i))
            .collect();
        let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for i in infos.values() {
            children.entry(i.ppid).or_default().push(i.pid);
        }
        let mut chosen = BTreeSet::new();
        let mut stack: Vec<u32> = infos
            .values()
            .filter(|i| self.pids.contains(&i.pid) || self.matches(i))
            .map(|i| i.pid)
            .collect();
        while let Some(pid) = stack.pop() {
            if chosen.insert(pid) {
                stack.extend(children.get(&pid).into_iter().flatten().copied());
            }
        }
        let mut out: Vec<ProcInfo> = chosen.iter().map(|p| infos[p].clone()).collect();
        out.sort_by_key(|i| (i.start_ticks, i.pid));
        Ok(out)
    }
}

/// Kernel threads (children of kthreadd, or kthreadd itself) do no file I/O
/// of their own worth auditing and cannot exec.
fn is_kernel_thread(i: &ProcInfo) -> bool {
    i.pid == 2 || i.ppid == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_keys_are_cut_like_the_kernel() {
        assert_eq!(&comm_key("redis-server")[..13], b"redis-server\0");
        assert!(comm_matches("a-very-long-daemon-name", "a-very-long-dae"));
        assert!(!comm_matches("redis", "redis-server"));
    }

    /// A real process tree: a shell we start with a child; selecting the
    /// shell by pid brings the child too; a name that matches nothing gives
    /// an empty set, and a dead pid an error naming it.
    #[test]
    fn discovers_descendants_of_a_selected_process() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let pid = sh.id();
        let proc = ProcFs::default();
        let mut found = Vec::new();
        for _ in 0..100 {
            let sel = Selectors {
                pids: vec![pid],
                ..Default::default()
            };
            found = sel.discover(&proc, std::process::id()).unwrap();
            if found.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let names: Vec<&str> = found.iter().map(|i| i.comm.as_str()).collect();
        assert_eq!(names, ["sh", "sleep"]);
        assert_eq!(found[1].ppid, pid);
        let none = Selectors {
            comms: vec!["no-such-name-xyz".into()],
            ..Default::default()
        };
        assert!(none.discover(&proc, 0).unwrap().is_empty());
        // SAFETY: plain kill of our own child's process group member.
        unsafe { libc::kill(found[1].pid as i32, libc::SIGKILL) };
        sh.wait().unwrap();
        let gone = Selectors {
            pids: vec![pid],
            ..Default::default()
        };
        let e = gone.discover(&proc, 0).unwrap_err().to_string();
        assert!(e.contains(&format!("--pid {pid}: no such process")), "{e}");
    }
}
