//! Attaching: which processes to follow, and what each already was and
//! held when tracing began (read from /proc once it is traced, so a call
//! made in between is seen twice at worst, never missed).

use std::{collections::BTreeSet, time::Duration};

use anyhow::Result;
use auditor_analyzer::{Event, EventKind};

use crate::{
    attach::{
        cgroup,
        lives::Lives,
        targets::{Selectors, comm_key},
    },
    capture::{
        launch::start_events,
        probes::Probes,
        procfs::{ProcFs, ProcInfo},
        views::Views,
    },
    error::UserError,
};

/// What to attach to, and what matched it when the command started.
pub struct AttachPlan {
    selectors: Selectors,
    pub(super) proc: ProcFs,
    /// Our own pid, never a target.
    me: u32,
    found: Vec<ProcInfo>,
    pub(super) follow_new: bool,
    pub(super) deadline: Option<Duration>,
    /// `--pid`, `--comm` and `--cgroup` as given, for messages and reports.
    pub describe: Vec<String>,
}

/// The events about the attached processes at the attach.
pub(super) struct AtStart {
    pub processes: usize,
    pub events: Vec<Event>,
}

impl AttachPlan {
    /// Checks the selectors and discovers the targets now; nothing matching
    /// is an error unless `follow_new` can wait for a name or cgroup.
    pub fn new(
        pids: &[u32],
        comms: &[String],
        cgroups: &[String],
        follow_new: bool,
        deadline: Option<Duration>,
    ) -> Result<AttachPlan, UserError> {
        let describe: Vec<String> = pids
            .iter()
            .map(|p| format!("--pid {p}"))
            .chain(comms.iter().map(|c| format!("--comm {c}")))
            .chain(cgroups.iter().map(|c| format!("--cgroup {c}")))
            .collect();
        let mut resolved = Vec::new();
        if !cgroups.is_empty() {
            let root = cgroup::unified_root().ok_or_else(|| {
                UserError::new("--cgroup needs the cgroup v2 hierarchy, and none is mounted")
            })?;
            for c in cgroups {
                resolved.push(cgroup::resolve(c, &root)?);
            }
        }
        for c in comms {
            if c.is_empty() || c.contains('/') {
                return Err(UserError::new(format!(
                    "--comm {c:?}: give a process name as `ps -o comm` shows it"
                )));
            }
        }
        let selectors = Selectors {
            pids: pids.to_vec(),
            comms: comms.to_vec(),
            cgroups: resolved,
        };
        let proc = ProcFs::default();
        let me = std::process::id();
        let found = selectors.discover(&proc, me)?;
        let names = !(selectors.comms.is_empty() && selectors.cgroups.is_empty());
        if found.is_empty() && !(follow_new && names) {
            // Suggest only what would help: --follow-new waits for names
            // and cgroups, never for a pid.
            let hint = match (names, follow_new) {
                (true, _) => " (add --follow-new to wait for one)",
                (false, true) => " (--follow-new waits for a --comm or --cgroup, not a pid)",
                (false, false) => "",
            };
            return Err(UserError::new(format!(
                "no running process matches {}{hint}",
                describe.join(" ")
            )));
        }
        Ok(AttachPlan {
            selectors,
            proc,
            me,
            found,
            follow_new,
            deadline,
            describe,
        })
    }

    /// Whether processes that start later are followed too.
    pub fn follows_new(&self) -> bool {
        self.follow_new
    }

    /// Starts tracing the targets (and, with `follow_new`, watches their
    /// names and cgroups for later execs), registers their lives, and
    /// returns what they were and held. A second pass picks up children
    /// forked before their parent was traced.
    pub(super) fn seed(
        &self,
        probes: &mut Probes,
        lives: &mut Lives,
        views: &mut Views,
    ) -> Result<AtStart> {
        if self.follow_new {
            for c in &self.selectors.comms {
                probes.watch_comm(comm_key(c))?;
            }
            for c in &self.selectors.cgroups {
                probes.watch_cgroup(c.id)?;
            }
        }
        let mut seeded = BTreeSet::new();
        let mut watched = 0;
        let mut events = Vec::new();
        let mut pass = self.found.clone();
        for second in [false, true] {
            if second {
                // Now that the first ones are traced, their forks are too.
                pass = self
                    .selectors
                    .discover(&self.proc, self.me)
                    .unwrap_or_default();
            }
            let fresh: Vec<ProcInfo> = std::mem::take(&mut pass)
                .into_iter()
                .filter(|i| seeded.insert(i.pid))
                .collect();
            for info in &fresh {
                probes.trace_pid(info.pid)?;
            }
            // One that ended before it was traced would never be seen to
            // end: it is not watched (a short-lived child of a target).
            let fresh: Vec<ProcInfo> = fresh
                .into_iter()
                .filter(|i| self.proc.running(i.pid))
                .collect();
            watched += fresh.len();
            for info in &fresh {
                lives.attached(info);
                events.extend(self.state_at_attach(info, views));
            }
        }
        Ok(AtStart {
            processes: watched,
            events,
        })
    }

    /// What a process already was and held when the attach found it, and
    /// where its paths lie on the host (its cwd and fd links as it names
    /// them, the view after its start). An unreadable fd table is one line
    /// on stderr: later calls on those fds are still judged from the
    /// kernel's file identity.
    fn state_at_attach(&self, info: &ProcInfo, views: &mut Views) -> Vec<Event> {
        let (cwd, exe, argv) = self.proc.cwd_exe_argv(info.pid);
        let seen = views.at_attach(info.pid);
        let start = EventKind::ProcessStart {
            cwd: seen.in_process(&cwd),
            exe,
            argv,
            ppid: info.ppid,
            launched: false,
        };
        let mut fds = self.proc.open_files(info.pid).unwrap_or_else(|e| {
            eprintln!(
                "auditor: cannot read /proc/{}/fd ({e}): files {} had open before the attach are unknown",
                info.pid, info.pid
            );
            Vec::new()
        });
        for o in &mut fds {
            o.path = seen.in_process(&o.path);
        }
        // Standard output and error at attach are the process's log, set
        // up by whoever started it: not its data.
        let mut events = start_events(info.pid, &info.comm, start, fds, |o| o.fd == 1 || o.fd == 2);
        // The view first: the start's exe is named in it.
        if let Some(view) = seen.view {
            let mut v = events[0].clone();
            v.kind = view;
            events.insert(0, v);
        }
        events
    }
}
