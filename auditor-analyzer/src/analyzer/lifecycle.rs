//! Handlers for process lifecycle (start, fork, exec, signals, exit) and the
//! verdicts that fall due when a process or the trace ends.

use serde_json::{Map, Value};

use crate::calls::{Call, call_ref};
use crate::event::{Event, EventKind, FileId};
use crate::finding::{CallRef, Finding, Severity};
use crate::rules::{
    create_without_dir_fsync, interleaved_writers, killed_mid_write, killed_while_dirty,
    rename_without_dir_fsync, sync_file_range_only, unsynced_at_exit,
};
use crate::track::dirs::PendingName;
use crate::track::inodes::{Deferred, judged};
use crate::track::paths::normalize;
use crate::track::processes::{DeliveryRec, Process, SignalRec};

use super::Analyzer;

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

fn inodes_has(inodes: &crate::track::inodes::Inodes, id: &FileId) -> bool {
    inodes.get(id).is_some_and(|s| !s.appends.reported)
}

/// Lowers an end-of-trace verdict about a process that may still act.
fn still_running(mut f: Finding, pids: &[u32]) -> Finding {
    f.severity = Severity::Low;
    f.summary
        .push_str(" (still running or open when the trace ended: it may still be made durable)");
    f.evidence
        .insert("still_running_pids".into(), Value::from(pids.to_vec()));
    f
}

impl Analyzer {
    pub(super) fn on_process_start(&mut self, ev: &Event) {
        let EventKind::ProcessStart { cwd, exe, ppid, .. } = &ev.kind else {
            return;
        };
        if let Some(p) = self.procs.get_mut(ev.pid) {
            p.cwd = cwd.starts_with('/').then(|| normalize(cwd));
            p.exe = (!exe.is_empty()).then(|| exe.clone());
            p.ppid = *ppid;
        }
    }

    pub(super) fn on_fork(&mut self, ev: &Event) {
        let EventKind::Fork {
            child_pid,
            child_tid,
            thread,
            shares_files,
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
            c.threads.insert(*child_tid);
            c.last_active = tick;
        }
        self.bound_processes();
    }

    pub(super) fn on_exec(&mut self, ev: &Event, filename: &str) {
        let Some(p) = self.procs.get(ev.pid) else {
            return;
        };
        let old: Vec<_> = p.tables().collect();
        let table = self.fds.copy(p.table_of(ev.tid), true);
        old.into_iter().for_each(|t| self.fds.release(t));
        if let Some(p) = self.procs.get_mut(ev.pid) {
            p.table = table;
            p.thread_tables.clear();
            p.threads.clear();
            p.threads.insert(ev.pid);
            p.exe = Some(filename.to_string());
            p.comm = comm_of(filename);
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

    pub(super) fn on_exit(&mut self, ev: &Event) {
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
        let call = call_ref(ev);
        let mut context = Map::new();
        let mut calls = vec![call.clone()];
        let rule = match signal {
            Some(sig) => {
                let kill = killed_while_dirty::kill_context(&proc, *sig, &call);
                context = kill.evidence;
                context.insert("core_dumped".into(), (*core_dumped).into());
                calls = kill.calls;
                for f in killed_mid_write::check(&proc, *sig, &call, |w| {
                    w.file.is_some_and(|id| self.is_judged(&id))
                }) {
                    self.emit(f, proc.since_epoch);
                }
                killed_while_dirty::INFO.id
            }
            None => {
                context.insert("exit_code".into(), (*code).into());
                unsynced_at_exit::INFO.id
            }
        };
        self.judge_dirty_at_exit(&proc, rule, &context, &calls, &call);
        if signal.is_some() {
            self.judge_unknown_past_at_kill(&proc, &context, &calls);
        }
        self.resolve_all_deferred();
        self.judge_interleaving_at_exit(&proc, *signal);
        for p in self.dirs.take_for(proc.key) {
            self.judge_pending_name(&p, &[]);
        }
    }

    /// Files a killed process held open for writing since before tracing
    /// began, not fsynced since and not dirtied under the trace's eyes (those
    /// get the certain verdict): an inconclusive killed-while-dirty each.
    fn judge_unknown_past_at_kill(
        &mut self,
        proc: &Process,
        context: &Map<String, Value>,
        calls: &[CallRef],
    ) {
        for id in &proc.held_at_start {
            let Some(st) = self.inodes.get(id) else {
                continue;
            };
            let seen_dirty = st.dirty.as_ref().is_some_and(|d| d.written_by(proc.key));
            if !st.unknown_past || st.unlinked || !st.judged() || seen_dirty {
                continue;
            }
            let f = killed_while_dirty::check_unknown_past(st, proc.to_ref(), context, calls);
            self.emit(f, proc.since_epoch);
        }
    }

    /// The exit verdict for each file `proc` left dirty, deferred while
    /// another live process still holds the file open.
    fn judge_dirty_at_exit(
        &mut self,
        proc: &Process,
        rule: &'static str,
        context: &Map<String, Value>,
        calls: &[CallRef],
        exit_call: &CallRef,
    ) {
        let key = proc.key;
        let ids = self.inodes.select(&proc.written, |s| {
            s.judged()
                && !s.unlinked
                && s.dirty
                    .as_ref()
                    .is_some_and(|d| d.written_by(key) && !d.exit_judged.contains(&key))
        });
        for id in ids {
            let holders = self.live_holders(id);
            let deferred = Deferred {
                rule,
                process: proc.to_ref(),
                evidence: context.clone(),
                calls: calls.to_vec(),
            };
            let sfr = self.inodes.get(&id).and_then(|st| {
                let trigger = Call::from(exit_call);
                sync_file_range_only::check(st, "exit", &trigger, proc.to_ref())
            });
            let Some(st) = self.inodes.get_mut(&id) else {
                continue;
            };
            let since = st.dirty.as_ref().map_or(self.epoch, |d| d.since_epoch);
            if let Some(d) = st.dirty.as_mut() {
                d.exit_judged.push(key);
                d.sfr_reported |= sfr.is_some();
            }
            if holders.is_empty() {
                self.raise_verdict(id, &deferred, &[]);
            } else {
                st.deferred.push(deferred);
                self.deferred_ids.insert(id);
            }
            if let Some(f) = sfr {
                self.emit(f, since);
            }
        }
    }

    /// Raises a (possibly deferred) exit verdict if the data is still dirty.
    fn raise_verdict(&mut self, id: FileId, v: &Deferred, still_open_by: &[u32]) {
        let Some(st) = self.inodes.get(&id) else {
            return;
        };
        let Some(since) = st.dirty.as_ref().map(|d| d.since_epoch) else {
            return;
        };
        let f = if v.rule == killed_while_dirty::INFO.id {
            killed_while_dirty::check(st, v.process.clone(), &v.evidence, &v.calls)
        } else {
            unsynced_at_exit::check(st, v.process.clone(), &v.evidence, &v.calls)
        };
        let Some(mut f) = f else { return };
        if v.rule == killed_while_dirty::INFO.id
            && let Some(d) = self.inodes.get_mut(&id).and_then(|s| s.dirty.as_mut())
        {
            d.killed_reported = true;
        }
        if !still_open_by.is_empty() {
            f = still_running(f, still_open_by);
        }
        self.emit(f, since);
    }

    /// Deferred verdicts on `id` fall due once no live process holds it.
    pub(super) fn resolve_deferred(&mut self, id: FileId) {
        if !self.live_holders(id).is_empty() {
            return;
        }
        self.deferred_ids.remove(&id);
        let Some(st) = self.inodes.get_mut(&id) else {
            return;
        };
        let pending = std::mem::take(&mut st.deferred);
        for v in &pending {
            self.raise_verdict(id, v, &[]);
        }
    }

    fn resolve_all_deferred(&mut self) {
        let ids = self
            .inodes
            .select(&self.deferred_ids, |s| !s.deferred.is_empty());
        self.deferred_ids.retain(|id| ids.contains(id));
        for id in ids {
            self.resolve_deferred(id);
        }
    }

    /// interleaved-writers when one of the appenders ends: high at once if it
    /// was killed, medium once every appender is gone.
    fn judge_interleaving_at_exit(&mut self, proc: &Process, signal: Option<i32>) {
        let key = proc.key;
        self.interleaved_ids
            .retain(|id| inodes_has(&self.inodes, id));
        let ids = self.inodes.select(&self.interleaved_ids, |s| {
            s.appends.interleaved.is_some()
                && !s.appends.reported
                && s.appends.writers.iter().any(|w| w.key == key)
        });
        let process = proc.to_ref();
        for id in ids {
            let Some(st) = self.inodes.get(&id) else {
                continue;
            };
            let all_gone = st
                .appends
                .writers
                .iter()
                .all(|w| !self.procs.is_live(w.key));
            if signal.is_none() && !all_gone {
                continue;
            }
            let since = st.appends.since_epoch;
            let found = interleaved_writers::check(st, signal.map(|s| (&process, s)));
            if let Some(st) = self.inodes.get_mut(&id) {
                st.appends.reported = true;
            }
            if let Some(f) = found {
                self.emit(f, since);
            }
        }
    }

    /// The directory-entry rules for a name its process left pending.
    fn judge_pending_name(&mut self, p: &PendingName, live: &[u32]) {
        let persistent =
            p.fs.as_deref()
                .is_some_and(|fs| judged(crate::event::FileType::Regular, fs).is_ok());
        if !persistent {
            return;
        }
        let found =
            rename_without_dir_fsync::check(p).or_else(|| create_without_dir_fsync::check(p));
        if let Some(mut f) = found {
            if !live.is_empty() {
                f = still_running(f, live);
            }
            self.emit(f, p.since_epoch);
        }
    }

    /// End of trace: what is still pending becomes a finding, lowered when
    /// a live process could still fix it.
    pub(super) fn judge_end_of_trace(&mut self) {
        let end_call = self.last_event.map(|(seq, ts_ns)| CallRef {
            seq,
            ts_ns,
            pid: 0,
            tid: 0,
            comm: String::new(),
            call: "end of trace".into(),
        });
        let calls: Vec<CallRef> = end_call.into_iter().collect();
        let ids = self
            .inodes
            .ids_where(|s| s.judged() && !s.unlinked && s.dirty.is_some());
        for id in ids {
            let holders = self.live_holders(id);
            let Some(st) = self.inodes.get_mut(&id) else {
                continue;
            };
            let deferred = std::mem::take(&mut st.deferred);
            let Some(d) = st.dirty.as_ref() else { continue };
            let unjudged = d
                .writers
                .iter()
                .find(|w| !d.exit_judged.contains(&w.key))
                .cloned();
            for v in &deferred {
                self.raise_verdict(id, v, &holders);
            }
            let Some(w) = unjudged else { continue };
            let alive = self.procs.is_live(w.key);
            let mut context = Map::new();
            context.insert(
                "ended_by".into(),
                if alive {
                    "end of trace"
                } else {
                    "exit not seen"
                }
                .into(),
            );
            let v = Deferred {
                rule: unsynced_at_exit::INFO.id,
                process: w.process.clone(),
                evidence: context,
                calls: calls.clone(),
            };
            let live: Vec<u32> = if alive {
                vec![w.process.pid]
            } else {
                holders.clone()
            };
            self.raise_verdict(id, &v, &live);
        }
        for id in self
            .inodes
            .ids_where(|s| s.appends.interleaved.is_some() && !s.appends.reported)
        {
            let Some(st) = self.inodes.get(&id) else {
                continue;
            };
            let since = st.appends.since_epoch;
            if let Some(f) = interleaved_writers::check(st, None) {
                self.emit(f, since);
            }
        }
        for p in self.dirs.take_all() {
            let live: Vec<u32> = if self.procs.is_live(p.key) {
                vec![p.process.pid]
            } else {
                Vec::new()
            };
            self.judge_pending_name(&p, &live);
        }
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
