//! A cheap, read-only picture of the analyzer's live state, for views that
//! refresh while capture goes on (the terminal UI). It is bounded whatever
//! the size of the traced workload, so taking one ten times a second costs
//! the capture thread little and never grows memory.
//!
//! Ended processes and signals are gone from the tracker's tables (they only
//! hold what rules still need), so [`Recent`] keeps the last few of each as
//! the events stream past.

use std::collections::VecDeque;

use crate::event::{Event, EventKind};
use crate::finding::{Finding, Severity};
use crate::stats::AnalyzerStats;
use crate::track::fds::FdSpace;
use crate::track::inodes::Inodes;
use crate::track::processes::{Process, ProcessTable};

/// Ended processes remembered for the view.
const ENDED: usize = 64;
/// Signals remembered for the view.
const SIGNALS: usize = 64;
/// Files shown: those with unsynced data first, then the most recently
/// changed (files only read are left out).
const FILES: usize = 256;
/// Newest findings copied into a snapshot (counts cover all of them).
pub(crate) const FINDINGS: usize = 200;

/// How a process stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    Exited {
        code: Option<i32>,
        ts_ns: u64,
    },
    /// Killed by `signal`; `by` is the traced sender (pid, comm) when the
    /// trace saw one.
    Killed {
        signal: i32,
        by: Option<(u32, String)>,
        ts_ns: u64,
    },
}

/// One traced process as the view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessView {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// File descriptors the trace knows to be open.
    pub open_files: usize,
    /// Bytes it wrote that are not durable yet (at its end, for ended ones).
    pub unsynced_bytes: u64,
    pub state: ProcessState,
}

/// One file (inode) as the view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileView {
    pub path: String,
    pub unsynced_bytes: u64,
    /// How long the oldest unsynced write has waited, at snapshot time.
    pub unsynced_age_ns: Option<u64>,
    /// The last relevant call, rendered (`rename("/d/a.tmp", "/d/a") = 0`).
    pub last_op: Option<String>,
    pub last_op_ns: u64,
    /// Times its data was made durable (fsync, fdatasync, sync, syncfs,
    /// msync, synchronous writes).
    pub syncs: u64,
    /// Processes whose writes are still unsynced (pid, comm).
    pub writers: Vec<(u32, String)>,
}

/// A signal a traced task sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalView {
    pub ts_ns: u64,
    pub signal: i32,
    pub sender_pid: u32,
    pub sender_comm: String,
    pub target_pid: u32,
    pub target_comm: String,
    /// TRACE_SIGNAL_* result: 0 delivered, 1 ignored, 2 already pending, 3 lost.
    pub result: i32,
}

/// Findings per severity, over every finding so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeverityCounts {
    pub high: usize,
    pub medium: usize,
    pub low: usize,
}

/// What a live view renders.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Monotonic time the snapshot stands for (ages are relative to it).
    pub now_ns: u64,
    pub stats: AnalyzerStats,
    /// Live processes by pid, then ended ones, newest end first.
    pub processes: Vec<ProcessView>,
    /// Files with unsynced data (most bytes first), then recently used ones.
    pub files: Vec<FileView>,
    /// Newest first.
    pub signals: Vec<SignalView>,
    /// Newest first, at most a few hundred.
    pub findings: Vec<Finding>,
    pub findings_total: usize,
    pub severity: SeverityCounts,
}

/// Ended processes and signals, kept as the stream passes by.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    ended: VecDeque<ProcessView>,
    signals: VecDeque<SignalView>,
}

impl Recent {
    /// Whether `pid` is among the ended processes remembered.
    pub(crate) fn ended_recently(&self, pid: u32) -> bool {
        self.ended.iter().any(|p| p.pid == pid)
    }

    /// Notes what the tracker is about to forget. Runs before the event is
    /// applied, so an exiting process is still in the table.
    pub(crate) fn observe(
        &mut self,
        ev: &Event,
        procs: &ProcessTable,
        inodes: &Inodes,
        fds: &FdSpace,
    ) {
        match &ev.kind {
            EventKind::SignalSent {
                signal,
                target_pid,
                target_comm,
                result,
                ..
            } => push_bounded(
                &mut self.signals,
                SIGNALS,
                SignalView {
                    ts_ns: ev.ts_ns,
                    signal: *signal,
                    sender_pid: ev.pid,
                    sender_comm: ev.comm.clone(),
                    target_pid: *target_pid,
                    target_comm: target_comm.clone(),
                    result: *result,
                },
            ),
            EventKind::Exit {
                group_dead: true,
                code,
                signal,
                ..
            } => {
                let Some(p) = procs.get(ev.pid) else { return };
                let state = match signal {
                    Some(sig) => ProcessState::Killed {
                        signal: *sig,
                        by: p
                            .signals
                            .iter()
                            .rev()
                            .find(|s| s.signal == *sig && s.result == 0)
                            .map(|s| (s.sender_pid, s.sender_comm.clone())),
                        ts_ns: ev.ts_ns,
                    },
                    None => ProcessState::Exited {
                        code: *code,
                        ts_ns: ev.ts_ns,
                    },
                };
                let view = process_view(p, inodes, fds, state);
                push_bounded(&mut self.ended, ENDED, view);
            }
            _ => {}
        }
    }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, max: usize, item: T) {
    if ring.len() == max {
        ring.pop_front();
    }
    ring.push_back(item);
}

fn process_view(p: &Process, inodes: &Inodes, fds: &FdSpace, state: ProcessState) -> ProcessView {
    let unsynced_bytes = p
        .written
        .iter()
        .filter_map(|id| inodes.get(id))
        .filter(|s| s.judged() && !s.unlinked)
        .filter_map(|s| s.dirty.as_ref())
        .filter(|d| d.written_by(p.key))
        .map(|d| d.bytes)
        .sum();
    ProcessView {
        pid: p.pid,
        ppid: p.ppid,
        comm: p.comm.to_string(),
        open_files: p.tables().map(|t| fds.fd_count(t)).sum(),
        unsynced_bytes,
        state,
    }
}

/// The parts of the analyzer a snapshot reads.
pub(crate) struct Parts<'a> {
    pub procs: &'a ProcessTable,
    pub inodes: &'a Inodes,
    pub fds: &'a FdSpace,
    pub recent: &'a Recent,
    /// The newest findings as they stand (at most [`FINDINGS`]).
    pub findings: &'a [Finding],
    /// How many stand in all.
    pub findings_total: usize,
    pub stats: AnalyzerStats,
}

/// Builds the bounded picture; costs one pass over live inodes.
pub(crate) fn build(parts: Parts<'_>, now_ns: u64) -> Snapshot {
    let mut processes: Vec<ProcessView> = parts
        .procs
        .iter()
        .map(|p| process_view(p, parts.inodes, parts.fds, ProcessState::Running))
        .collect();
    processes.sort_by_key(|p| p.pid);
    processes.extend(parts.recent.ended.iter().rev().cloned());

    let mut candidates: Vec<_> = parts
        .inodes
        .values()
        .filter(|s| {
            s.file_type == crate::event::FileType::Regular
                && s.judged()
                && !s.unlinked
                && (s.dirty.is_some() || s.changed)
        })
        .collect();
    let rank = |s: &&crate::track::inodes::InodeState| {
        (
            std::cmp::Reverse(s.dirty.as_ref().map_or(0, |d| d.bytes)),
            std::cmp::Reverse(s.history.back().map_or(0, |c| c.seq)),
        )
    };
    if candidates.len() > FILES {
        candidates.select_nth_unstable_by_key(FILES, rank);
        candidates.truncate(FILES);
    }
    candidates.sort_by_key(rank);
    let files = candidates
        .into_iter()
        .map(|s| {
            let last = s.history.back();
            let mut writers: Vec<(u32, String)> = s
                .dirty
                .iter()
                .flat_map(|d| d.writers.iter())
                .map(|w| (w.process.pid, w.process.comm.to_string()))
                .collect();
            writers.dedup_by_key(|w| w.0);
            FileView {
                path: crate::track::views::outside(&s.path()).to_string(),
                unsynced_bytes: s.dirty.as_ref().map_or(0, |d| d.bytes),
                unsynced_age_ns: s
                    .dirty
                    .as_ref()
                    .map(|d| now_ns.saturating_sub(d.first_write.ts_ns)),
                last_op: last.map(|c| c.text()),
                last_op_ns: last.map_or(0, |c| c.ts_ns),
                syncs: s.syncs,
                writers,
            }
        })
        .collect();

    let mut severity = SeverityCounts::default();
    for f in parts.findings {
        match f.severity {
            Severity::High => severity.high += 1,
            Severity::Medium => severity.medium += 1,
            Severity::Low => severity.low += 1,
        }
    }
    Snapshot {
        now_ns,
        stats: parts.stats,
        processes,
        files,
        signals: parts.recent.signals.iter().rev().cloned().collect(),
        findings: parts
            .findings
            .iter()
            .rev()
            .take(FINDINGS)
            .cloned()
            .collect(),
        findings_total: parts.findings_total,
        severity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Analyzer;
    use crate::test_support::*;

    fn feed(events: Vec<Event>) -> Analyzer {
        process_all(events).0
    }

    #[test]
    fn dirty_file_shows_bytes_age_writer_and_process_totals() {
        let a = feed(trace![
            start(10, "/d"),
            write_new(10, "/d/a.tmp", 3, 1, 4096),
            write(10, 3, 100),
        ]);
        let now = 10_000_000;
        let s = a.snapshot(now);
        assert_eq!(s.files.len(), 1);
        let f = &s.files[0];
        assert_eq!(f.path, "/d/a.tmp");
        assert_eq!(f.unsynced_bytes, 4196);
        // The first write returned at 3 ms (events are 1 ms apart).
        assert_eq!(f.unsynced_age_ns, Some(now - 3_000_000));
        assert_eq!(f.writers, vec![(10, "app".to_string())]);
        assert_eq!(f.syncs, 0);
        assert!(f.last_op.as_deref().unwrap().starts_with("write("));
        let p = &s.processes[0];
        assert_eq!((p.pid, p.unsynced_bytes, p.open_files), (10, 4196, 1));
        assert_eq!(p.state, ProcessState::Running);
    }

    #[test]
    fn files_only_read_are_left_out() {
        let a = feed(vec![
            start(10, "/d"),
            open_with(
                10,
                "/etc/hosts",
                crate::track::paths::AT_FDCWD,
                0,
                3,
                Some(reg(1)),
            ),
            close(10, 3),
            open_new(10, "/d/out", 4, reg(2)),
            close(10, 4),
            open_existing(10, "/d/kept", 5, reg(3)),
            close(10, 5),
        ]);
        let s = a.snapshot(0);
        let paths: Vec<&str> = s.files.iter().map(|f| f.path.as_str()).collect();
        assert!(!paths.contains(&"/etc/hosts"), "{paths:?}");
        assert!(
            paths.contains(&"/d/out") && paths.contains(&"/d/kept"),
            "{paths:?}"
        );
    }

    #[test]
    fn one_row_per_process_life() {
        // An exiting child's SIGCHLD to its parent comes after its exit.
        let a = feed(vec![
            start(10, "/d"),
            fork(10, 11),
            exit(11, 0),
            signal(11, 10, 17),
        ]);
        let s = a.snapshot(0);
        let rows: Vec<_> = s.processes.iter().filter(|p| p.pid == 11).collect();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert!(matches!(rows[0].state, ProcessState::Exited { .. }));
        assert_eq!(s.signals.len(), 1, "the signal itself is kept");
        // A reused pid starts a new life at its fork.
        let a = feed(vec![
            start(10, "/d"),
            fork(10, 11),
            exit(11, 0),
            fork(10, 11),
        ]);
        let s = a.snapshot(0);
        assert_eq!(s.processes.iter().filter(|p| p.pid == 11).count(), 2);
    }

    #[test]
    fn fsync_clears_unsynced_bytes_and_counts() {
        let a = feed(trace![
            start(10, "/d"),
            write_new(10, "/d/a", 3, 1, 10),
            fsync(10, 3),
            write(10, 3, 10),
            fsync(10, 3),
        ]);
        let s = a.snapshot(0);
        assert_eq!(s.files[0].syncs, 2);
        assert_eq!(s.files[0].unsynced_bytes, 0);
        assert_eq!(s.files[0].unsynced_age_ns, None);
        assert_eq!(s.processes[0].unsynced_bytes, 0);
    }

    #[test]
    fn killed_process_names_its_killer_and_signals_are_kept() {
        let a = feed(trace![
            start(10, "/d"),
            fork(10, 11),
            write_new(11, "/d/state", 3, 1, 512),
            kill(10, 11, SIGKILL),
        ]);
        let s = a.snapshot(0);
        let dead = s.processes.iter().find(|p| p.pid == 11).unwrap();
        assert!(
            matches!(&dead.state, ProcessState::Killed { signal: 9, by: Some((10, c)), .. } if c == "app"),
            "{:?}",
            dead.state
        );
        assert_eq!(
            dead.unsynced_bytes, 512,
            "what it left unsynced when it died"
        );
        assert_eq!(s.signals.len(), 1);
        assert_eq!(
            (
                s.signals[0].sender_pid,
                s.signals[0].target_pid,
                s.signals[0].signal
            ),
            (10, 11, SIGKILL)
        );
        assert_eq!(s.processes[0].pid, 10, "live processes first");
    }

    #[test]
    fn findings_are_newest_first_with_counts() {
        let mut events = vec![start(10, "/d")];
        for i in 0..3u64 {
            events.push(open_new(10, &format!("/d/f{i}.tmp"), 3, reg(i + 1)));
            events.push(write(10, 3, 10));
            events.push(rename(10, &format!("/d/f{i}.tmp"), &format!("/d/f{i}")));
            events.push(close(10, 3));
        }
        let mut a = feed(events);
        let s = a.snapshot(0);
        // Before the end, what stands now: the three renames at risk.
        assert_eq!(s.findings_total, 3);
        assert_eq!(s.findings[0].path, "/d/f2", "newest first");
        // After it, the verdicts.
        a.finish();
        let s = a.snapshot(0);
        assert_eq!(s.findings_total, a.findings().len());
        assert!(s.findings_total >= 3);
        assert_eq!(s.findings[0], *a.findings().last().unwrap());
        assert_eq!(
            s.severity.high + s.severity.medium + s.severity.low,
            s.findings_total
        );
    }

    #[test]
    fn rings_and_file_list_stay_bounded() {
        let mut events = vec![start(1, "/d")];
        for pid in 2..(2 + ENDED as u32 + 10) {
            events.push(fork(1, pid));
            events.push(signal(1, pid, SIGTERM));
            events.push(killed(pid, SIGTERM));
        }
        for ino in 0..(FILES as u64 + 50) {
            events.push(open_new(1, &format!("/d/f{ino}"), 3, reg(ino + 100)));
            events.push(write(1, 3, ino + 1));
            events.push(close(1, 3));
        }
        let s = feed(events).snapshot(0);
        assert_eq!(s.signals.len(), SIGNALS);
        assert_eq!(s.processes.len(), 1 + ENDED);
        assert_eq!(s.files.len(), FILES);
        assert_eq!(
            s.files[0].unsynced_bytes,
            FILES as u64 + 50,
            "the most unsynced file is kept, first"
        );
    }
}
