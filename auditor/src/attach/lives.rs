//! Every process life an attach run watched, for the report: how it came
//! under watch, its pid as the host and as its own pid namespace see it, its
//! cgroup and container, and how it ended. A pid reused by a new process
//! starts a new life, so a restarted daemon shows twice, apart.
//!
//! It also notices processes the probes started tracing on their own (an
//! exec under a watched name or cgroup) and introduces them to the analyzer
//! with what /proc knows, as the attach did for the first ones.

use std::collections::{BTreeMap, HashMap, VecDeque};

use auditor_analyzer::{
    ExitStatusInfo,
    event::{Event, EventKind},
};
use serde_json::{Value, json};

use super::cgroup::container_id;
use crate::capture::procfs::{ProcFs, ProcInfo};

/// Lives kept for the report; past it the oldest ended ones are dropped
/// (and counted), so a fork-heavy daemon watched for days stays bounded.
pub const MAX_LIVES: usize = 10_000;

/// How a process came under watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// Running when the attach began.
    Attached,
    /// Exec'd later under a watched name or cgroup (`--follow-new`).
    Exec,
    /// Forked by a watched process.
    Fork,
}

impl How {
    fn as_str(self) -> &'static str {
        match self {
            How::Attached => "attached",
            How::Exec => "followed at exec",
            How::Fork => "forked by a watched process",
        }
    }
}

/// One process life.
#[derive(Clone, Debug)]
pub struct Life {
    pub pid: u32,
    /// Pids in each pid namespace, outermost (the host's) first.
    pub nspid: Vec<u32>,
    pub comm: String,
    pub ppid: u32,
    pub cgroup: Option<String>,
    /// The binary it runs (a re-exec of `/proc/self/exe` keeps its
    /// parent's) and its command line, when known.
    pub exe: Option<String>,
    pub argv: Vec<String>,
    /// The name its container runtime gave its container.
    pub container_name: Option<String>,
    pub how: How,
    pub ended: Option<ExitStatusInfo>,
}

impl Life {
    fn from_info(i: &ProcInfo, how: How) -> Life {
        Life {
            pid: i.pid,
            nspid: i.nspid.clone(),
            comm: i.comm.clone(),
            ppid: i.ppid,
            cgroup: i.cgroup.clone(),
            exe: None,
            argv: Default::default(),
            container_name: None,
            how,
            ended: None,
        }
    }

    /// The pid inside its own namespace, when that differs from the host's.
    pub fn ns_pid(&self) -> Option<u32> {
        (self.nspid.len() > 1).then(|| *self.nspid.last().unwrap_or(&self.pid))
    }
}

/// All lives, and which pid is which live one now.
#[derive(Debug, Default)]
pub struct Lives {
    /// By order of first sight.
    all: BTreeMap<u64, Life>,
    next: u64,
    live: HashMap<u32, u64>,
    /// Ended lives, oldest end first: the first to drop.
    ended: VecDeque<u64>,
    /// Ended lives dropped from the report to stay under [`MAX_LIVES`].
    pub dropped: u64,
    proc: ProcFs,
}

impl Lives {
    pub fn new(proc: ProcFs) -> Self {
        Lives {
            proc,
            ..Default::default()
        }
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The pids of the processes alive as far as the events say.
    pub fn live_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.live.keys().copied()
    }

    /// Registers a process found at attach.
    pub fn attached(&mut self, info: &ProcInfo) {
        self.push(Life::from_info(info, How::Attached));
    }

    fn push(&mut self, life: Life) {
        if self.all.len() >= MAX_LIVES
            && let Some(old) = self.ended.pop_front()
        {
            self.all.remove(&old);
            self.dropped += 1;
        }
        self.live.insert(life.pid, self.next);
        self.all.insert(self.next, life);
        self.next += 1;
    }

    fn get_mut(&mut self, pid: u32) -> Option<&mut Life> {
        let i = *self.live.get(&pid)?;
        self.all.get_mut(&i)
    }

    /// Ends the live record of `pid`, if any.
    fn end(&mut self, pid: u32, how: Option<ExitStatusInfo>) {
        if let Some(k) = self.live.remove(&pid) {
            if let Some(l) = self.all.get_mut(&k) {
                l.ended = how;
            }
            self.ended.push_back(k);
        }
    }

    /// Follows the stream; returns the synthetic events to feed the
    /// analyzer before `ev` (a `ProcessStart` for a process first seen now).
    pub fn observe(&mut self, ev: &Event) -> Option<Event> {
        let mut intro = None;
        // Only an exec starts tracing a process nobody forked under watch;
        // other events of an unknown pid are the last words of one that
        // just ended (the SIGCHLD it sends after its exit record).
        if matches!(ev.kind, EventKind::Exec { .. }) && !self.live.contains_key(&ev.pid) {
            // The probes began tracing it at exec (a watched name or
            // cgroup): what /proc says now is the best there is.
            let info = self.proc.info(ev.pid).unwrap_or_else(|_| ProcInfo {
                pid: ev.pid,
                comm: ev.comm.clone(),
                nspid: vec![ev.pid],
                ..Default::default()
            });
            let (cwd, exe, argv) = self.proc.cwd_exe_argv(ev.pid);
            intro = Some(Event {
                seq: ev.seq,
                ts_ns: ev.ts_ns,
                pid: ev.pid,
                tid: ev.pid,
                comm: ev.comm.clone(),
                stack: None,
                kind: EventKind::ProcessStart {
                    cwd,
                    exe: exe.clone(),
                    argv: argv.clone(),
                    ppid: info.ppid,
                    launched: false,
                },
                in_process: Default::default(),
            });
            self.push(Life {
                exe: (!exe.is_empty()).then_some(exe),
                argv,
                ..Life::from_info(&info, How::Exec)
            });
        }
        match &ev.kind {
            EventKind::Fork {
                child_pid,
                thread: false,
                ..
            } => {
                let parent = self.get_mut(ev.pid).cloned();
                let info = self.proc.info(*child_pid).ok();
                let life = match (info, parent) {
                    (Some(i), _) if i.ppid == ev.pid || i.ppid == 0 => {
                        Life::from_info(&i, How::Fork)
                    }
                    // Gone already (or the pid reused): inherit what a
                    // child inherits.
                    (_, parent) => Life {
                        pid: *child_pid,
                        nspid: vec![*child_pid],
                        comm: ev.comm.clone(),
                        ppid: ev.pid,
                        cgroup: parent.as_ref().and_then(|p| p.cgroup.clone()),
                        exe: None,
                        argv: Default::default(),
                        container_name: None,
                        how: How::Fork,
                        ended: None,
                    },
                };
                // A child runs what its parent ran until it execs.
                let parent = self.get_mut(ev.pid).cloned();
                let life = Life {
                    exe: parent.as_ref().and_then(|p| p.exe.clone()),
                    argv: parent.as_ref().map(|p| p.argv.clone()).unwrap_or_default(),
                    container_name: parent.and_then(|p| p.container_name),
                    ..life
                };
                // A live entry under this pid means its exit was missed.
                self.end(*child_pid, None);
                self.push(life);
            }
            EventKind::Exec { filename, .. } => {
                if let Some(l) = self.get_mut(ev.pid) {
                    l.comm = filename
                        .rsplit('/')
                        .next()
                        .unwrap_or(filename)
                        .chars()
                        .take(15)
                        .collect();
                }
            }
            EventKind::Exit {
                group_dead: true,
                code,
                signal,
                ..
            } => {
                let how = match signal {
                    Some(s) => ExitStatusInfo::Signal(*s),
                    None => ExitStatusInfo::Code(code.unwrap_or(0)),
                };
                self.end(ev.pid, Some(how));
            }
            _ => {}
        }
        intro
    }

    /// Takes what the analyzer made of an event: an exec's binary on the
    /// host (a re-exec of itself keeps the one it ran) and command line,
    /// a view's container name, a start's exe and argv.
    pub fn record(&mut self, ev: &Event) {
        let Some(l) = self.get_mut(ev.pid) else {
            return;
        };
        match &ev.kind {
            EventKind::Exec { filename, argv, .. } => {
                let itself = matches!(
                    ev.in_process.path_in_process.as_deref().unwrap_or(filename),
                    "/proc/self/exe" | "/proc/thread-self/exe"
                );
                if !(itself && l.exe.is_some()) {
                    l.exe = Some(filename.clone());
                }
                l.argv = argv.clone();
            }
            EventKind::ProcessStart { exe, argv, .. } => {
                l.exe = (!exe.is_empty()).then(|| exe.clone());
                l.argv = argv.clone();
            }
            EventKind::View {
                container: Some(c), ..
            } => l.container_name = c.name.clone(),
            _ => {}
        }
    }

    /// How a life stands: still running, how it ended, or that its end was
    /// not seen (its pid was taken by a new process first).
    fn state(&self, key: u64, l: &Life) -> String {
        match l.ended {
            Some(e) => e.describe(),
            None if self.live.get(&l.pid) == Some(&key) => "still running".into(),
            None => "exit not seen".into(),
        }
    }

    /// The `processes` section of JSON reports.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.all
                .iter()
                .map(|(&k, l)| {
                    json!({
                        "pid": l.pid,
                        "pid_in_namespace": l.ns_pid(),
                        "nspid": l.nspid,
                        "comm": l.comm,
                        "ppid": l.ppid,
                        "exe": l.exe,
                        "argv": l.argv,
                        "cgroup": l.cgroup,
                        "container_id": l.cgroup.as_deref().and_then(container_id),
                        "container_name": l.container_name,
                        "how": l.how.as_str(),
                        "state": self.state(k, l),
                    })
                })
                .collect(),
        )
    }

    /// The processes section of text reports: each process under the
    /// one that forked it, so a daemon's helpers (a re-exec such as
    /// `docker-untar`) show beneath it.
    pub fn render_text(&self) -> String {
        let mut s = format!("\nProcesses watched ({}):\n", self.all.len());
        let keys: Vec<u64> = self.all.keys().copied().collect();
        // A life's parent is the latest life of its ppid that began before it.
        let parent_of = |k: u64, l: &Life| {
            self.all
                .range(..k)
                .rev()
                .find(|(_, p)| p.pid == l.ppid)
                .map(|(&pk, _)| pk)
        };
        let mut children: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut roots = Vec::new();
        for &k in &keys {
            match parent_of(k, &self.all[&k]) {
                Some(p) => children.entry(p).or_default().push(k),
                None => roots.push(k),
            }
        }
        let mut stack: Vec<(u64, usize)> = roots.iter().rev().map(|&k| (k, 0)).collect();
        while let Some((k, depth)) = stack.pop() {
            let l = &self.all[&k];
            s.push_str(&format!("  {:>7}{}", l.pid, "  ".repeat(depth.min(8))));
            if let Some(ns) = l.ns_pid() {
                s.push_str(&format!(" (pid {ns} in its namespace)"));
            }
            s.push_str(&format!(" {}", shown(&l.comm)));
            // argv[0] when it says more than the name (`docker-untar`
            // for a re-exec that runs as `exe`).
            let named = |a: &&String| a.rsplit('/').next() != Some(l.comm.as_str());
            if let Some(arg0) = l.argv.first().filter(named) {
                s.push_str(&format!(" ({})", shown(arg0)));
            }
            if let Some(exe) = &l.exe {
                s.push_str(&format!("  exe {}", shown(exe)));
            }
            s.push_str(&format!("  {}", l.how.as_str()));
            if let Some(cg) = &l.cgroup {
                s.push_str(&format!("  cgroup {}", shown(cg)));
                if let Some(id) = container_id(cg) {
                    s.push_str(&format!("  container {}", &id[..12]));
                    if let Some(name) = &l.container_name {
                        s.push_str(&format!(" ({name})"));
                    }
                }
            }
            s.push_str(&format!("  {}\n", self.state(k, l)));
            if let Some(kids) = children.get(&k) {
                stack.extend(kids.iter().rev().map(|&c| (c, depth + 1)));
            }
        }
        if self.dropped > 0 {
            s.push_str(&format!(
                "  ({} left out of this list)\n",
                auditor_analyzer::report::plural::count(
                    self.dropped,
                    "ended process",
                    "ended processes"
                )
            ));
        }
        s
    }
}

/// Text a traced program chose (its name, arguments, paths), with control
/// characters escaped so it cannot drive the terminal.
fn shown(text: &str) -> String {
    text.chars()
        .flat_map(char::escape_default)
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pid: u32, kind: EventKind) -> Event {
        Event {
            seq: 1,
            ts_ns: 1,
            pid,
            tid: pid,
            comm: "d".into(),
            stack: None,
            kind,
            in_process: Default::default(),
        }
    }

    fn exit(pid: u32, code: i32) -> Event {
        ev(
            pid,
            EventKind::Exit {
                group_dead: true,
                code: Some(code),
                signal: None,
                core_dumped: false,
            },
        )
    }

    /// `parent` starts process `child` (not a thread), sharing nothing.
    fn fork(parent: u32, child: u32) -> Event {
        ev(
            parent,
            EventKind::Fork {
                child_pid: child,
                child_tid: child,
                thread: false,
                shares_files: false,
                new_mount_ns: false,
            },
        )
    }

    /// A pid that ends and comes back is two lives; the second one is
    /// introduced to the analyzer again.
    #[test]
    fn pid_reuse_makes_a_new_life() {
        let mut lives = Lives::new(ProcFs::new("/nonexistent"));
        let info = ProcInfo {
            pid: 4_000_000,
            comm: "d".into(),
            nspid: vec![4_000_000, 1],
            ..Default::default()
        };
        lives.attached(&info);
        assert!(lives.observe(&exit(4_000_000, 0)).is_none());
        assert_eq!(lives.live_count(), 0);
        let intro = lives.observe(&ev(
            4_000_000,
            EventKind::Exec {
                filename: "/usr/bin/d".into(),
                argv: Default::default(),
                stamp: None,
            },
        ));
        assert!(matches!(
            intro.map(|e| e.kind),
            Some(EventKind::ProcessStart {
                launched: false,
                ..
            })
        ));
        let j = lives.to_json();
        assert_eq!(j.as_array().unwrap().len(), 2);
        assert_eq!(j[0]["pid_in_namespace"], 1);
        assert_eq!(j[0]["state"], "exited with code 0");
        assert_eq!(j[1]["how"], "followed at exec");
        assert_eq!(j[1]["state"], "still running");
    }

    /// dockerd's re-exec shows under dockerd, as the binary it re-ran,
    /// known by its argv[0].
    #[test]
    fn a_re_exec_keeps_its_binary_and_shows_under_its_parent() {
        let mut lives = Lives::new(ProcFs::new("/nonexistent"));
        lives.attached(&ProcInfo {
            pid: 10,
            comm: "dockerd".into(),
            nspid: vec![10],
            ..Default::default()
        });
        lives.record(&ev(
            10,
            EventKind::ProcessStart {
                cwd: "/".into(),
                exe: "/usr/sbin/dockerd".into(),
                argv: vec!["/usr/sbin/dockerd".into()],
                ppid: 1,
                launched: false,
            },
        ));
        lives.observe(&fork(10, 20));
        let exec = ev(
            20,
            EventKind::Exec {
                filename: "/proc/self/exe".into(),
                argv: vec!["docker-untar".into(), "/".into()],
                stamp: None,
            },
        );
        lives.observe(&exec);
        lives.record(&exec);
        let j = lives.to_json();
        assert_eq!(j[1]["exe"], "/usr/sbin/dockerd");
        assert_eq!(j[1]["argv"][0], "docker-untar");
        assert_eq!(j[1]["ppid"], 10);
        let text = lives.render_text();
        assert!(
            text.contains("     20   exe (docker-untar)  exe /usr/sbin/dockerd"),
            "{text}"
        );
    }

    #[test]
    fn forks_are_followed_and_the_list_is_bounded() {
        let mut lives = Lives::new(ProcFs::new("/nonexistent"));
        lives.attached(&ProcInfo {
            pid: 10,
            cgroup: Some("/c".into()),
            ..Default::default()
        });
        for child in 0..(MAX_LIVES as u32 + 5) {
            let pid = 100 + child;
            lives.observe(&fork(10, pid));
            lives.observe(&exit(pid, 0));
        }
        assert_eq!(lives.all.len(), MAX_LIVES);
        // One parent and MAX_LIVES + 5 children: six ended ones dropped.
        assert_eq!(lives.dropped, 6);
        assert_eq!(lives.live_count(), 1, "the parent is still live");
        let parent = lives.get_mut(10).unwrap();
        assert_eq!(parent.how, How::Attached);
        let last = lives.all.values().last().unwrap();
        assert_eq!(last.cgroup.as_deref(), Some("/c"), "inherited");
    }
}
