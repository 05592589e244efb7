//! Handlers for process lifecycle: start, fork, exec, signals, exit (which
//! the rules hear about as [`Moment::Ended`]).

use crate::calls::call_ref;
use crate::event::{Event, EventKind};
use crate::finding::Finding;
use crate::rules::Moment;
use crate::track::paths::normalize;
use crate::track::processes::{DeliveryRec, SignalRec};
use crate::track::views::View;
use std::sync::Arc;

use super::{Analyzer, Mode};

/// comm is the first 15 bytes of the executable's name.
fn comm_of(filename: &str) -> String {
    filename
        .rsplit('/')
        .next()
        .unwrap_or(filename)
        .chars()
        .take(15)
        .collect()
}

/// The paths by which a process execs its own running binary.
fn is_self_exe(path: &str) -> bool {
    matches!(path, "/proc/self/exe" | "/proc/thread-self/exe")
}

impl Analyzer {
    pub(super) fn on_process_start(&mut self, ev: &Event) {
        let EventKind::ProcessStart {
            cwd,
            exe,
            argv,
            ppid,
            launched,
        } = &ev.kind
        else {
            return;
        };
        if *launched && let Some(p) = self.procs.get(ev.pid) {
            self.mode = Mode::Launched {
                key: p.key,
                code: None,
                killed: false,
            };
            self.launched_cwd = cwd.starts_with('/').then(|| normalize(cwd));
        }
        if let Some(p) = self.procs.get_mut(ev.pid) {
            p.cwd = cwd.starts_with('/').then(|| normalize(cwd));
            p.exe = (!exe.is_empty()).then(|| exe.as_str().into());
            p.argv = argv.as_slice().into();
            p.ppid = *ppid;
        }
    }

    pub(super) fn on_fork(&mut self, ev: &Event) {
        let EventKind::Fork {
            child_pid,
            child_tid,
            thread,
            shares_files,
            new_mount_ns,
        } = &ev.kind
        else {
            return;
        };
        let Some(parent) = self.procs.get(ev.pid) else {
            return;
        };
        let parent_table = parent.table_of(ev.tid);
        if *thread {
            let own = (!shares_files).then(|| self.fds.copy(parent_table, false));
            if let Some(p) = self.procs.get_mut(ev.pid) {
                p.threads.insert(*child_tid);
                if let Some(t) = own {
                    p.thread_tables.insert(*child_tid, t);
                }
            }
            return;
        }
        let (cwd, exe, comm) = (parent.cwd.clone(), parent.exe.clone(), parent.comm.clone());
        let argv = parent.argv.clone();
        let view = if *new_mount_ns {
            let v = parent.view.as_deref().cloned().unwrap_or_else(View::host);
            Some(Arc::new(v.unshared()))
        } else {
            parent.view.clone()
        };
        let table = if *shares_files {
            self.fds.share(parent_table)
        } else {
            self.fds.copy(parent_table, false)
        };
        // A live record under the child's pid means we missed its exit: the
        // pid was reused, so the old record ends here without a verdict.
        if let Some(stale) = self.procs.start(*child_pid, &comm, table, self.epoch) {
            stale.tables().for_each(|t| self.fds.release(t));
        }
        let tick = self.stats.events;
        if let Some(c) = self.procs.get_mut(*child_pid) {
            c.ppid = ev.pid;
            c.cwd = cwd;
            c.exe = exe;
            c.argv = argv;
            c.view = view;
            c.threads.insert(*child_tid);
            c.last_active = tick;
        }
        self.bound_processes();
    }

    pub(super) fn on_exec(&mut self, ev: &Event, filename: &str, argv: &[String]) {
        let Some(p) = self.procs.get(ev.pid) else {
            return;
        };
        // A re-exec of itself (`/proc/self/exe`, as dockerd runs
        // docker-untar) runs the binary it already was.
        let seen = Self::seen(filename, &ev.in_process.path_in_process);
        let exe = match p.exe.clone() {
            Some(exe) if is_self_exe(&seen) => exe,
            _ => std::sync::Arc::from(filename),
        };
        let old: Vec<_> = p.tables().collect();
        let table = self.fds.copy(p.table_of(ev.tid), true);
        old.into_iter().for_each(|t| self.fds.release(t));
        if let Some(p) = self.procs.get_mut(ev.pid) {
            p.table = table;
            p.thread_tables.clear();
            p.threads.clear();
            p.threads.insert(ev.pid);
            p.exe = Some(exe);
            p.argv = argv.into();
            p.comm = comm_of(&seen).into();
            p.last_writes.clear();
            p.short_writes.clear();
            p.mappings.clear();
        }
    }

    pub(super) fn on_signal_sent(&mut self, ev: &Event) {
        let EventKind::SignalSent {
            signal,
            target_pid,
            target_tid,
            target_syscall,
            result,
            ..
        } = &ev.kind
        else {
            return;
        };
        let sender_parent = self.procs.get(ev.pid).filter(|s| s.ppid != 0).map(|s| {
            let comm = self
                .procs
                .get(s.ppid)
                .map(|pp| pp.comm.clone())
                .unwrap_or_default();
            (s.ppid, comm)
        });
        let call = call_ref(ev);
        if let Some(t) = self.procs.get_mut(*target_pid) {
            t.push_signal(SignalRec {
                signal: *signal,
                sender_pid: ev.pid,
                sender_comm: ev.comm.clone(),
                sender_parent,
                target_tid: *target_tid,
                target_syscall: *target_syscall,
                result: *result,
                call,
            });
        }
    }

    pub(super) fn on_signal_delivered(&mut self, ev: &Event, signal: i32, handler: u64) {
        if let Some(p) = self.procs.get_mut(ev.pid) {
            p.push_delivery(DeliveryRec {
                signal,
                handler,
                ts_ns: ev.ts_ns,
            });
        }
    }

    pub(super) fn on_exit(&mut self, ev: &Event, raised: &mut Vec<Finding>) {
        let EventKind::Exit {
            group_dead,
            code,
            signal,
            core_dumped,
        } = &ev.kind
        else {
            return;
        };
        if !group_dead {
            let released = self.procs.get_mut(ev.pid).and_then(|p| {
                p.threads.remove(&ev.tid);
                if signal.is_none() {
                    p.last_writes.remove(&ev.tid);
                    p.short_writes.retain(|(tid, _), _| *tid != ev.tid);
                }
                p.thread_tables.remove(&ev.tid)
            });
            if let Some(t) = released {
                self.fds.release(t);
            }
            return;
        }
        let Some(proc) = self.procs.remove(ev.pid) else {
            return;
        };
        proc.tables().for_each(|t| self.fds.release(t));
        if let Mode::Launched {
            key,
            code: c,
            killed,
        } = &mut self.mode
            && *key == proc.key
        {
            *c = *code;
            *killed = signal.is_some();
        }
        let call = call_ref(ev);
        self.dirs.ended(proc.key, &call);
        self.tell(
            &Moment::Ended {
                process: &proc,
                code: *code,
                signal: *signal,
                core_dumped: *core_dumped,
                call: &call,
            },
            raised,
        );
    }

    #[cfg(test)]
    pub(crate) fn live_pids(&self) -> Vec<u32> {
        self.procs.pids()
    }

    #[cfg(test)]
    pub(crate) fn cwd_of(&self, pid: u32) -> Option<String> {
        self.procs.get(pid).and_then(|p| p.cwd.clone())
    }
}
