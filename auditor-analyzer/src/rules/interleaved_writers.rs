//! `interleaved-writers`: several threads or processes append to one file in
//! turn. A crash or a kill mid-record leaves a torn entry with another
//! writer's record after it: the Shake metadata corruption.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;

use serde_json::json;

use crate::calls::{Call, signal_name};
use crate::event::FileId;
use crate::exposure::Subject;
use crate::fast_hash::FastMap;
use crate::finding::{Finding, ProcessRef, Severity};
use crate::track::inodes::Writer;
use crate::track::processes::ProcKey;

use super::{Cx, Kind, Moment, Rule, RuleInfo};

pub const INFO: RuleInfo = RuleInfo {
    id: "interleaved-writers",
    severity: Severity::Medium,
    title: "several threads or processes append to one file, interleaved",
    kind: Kind::Lasting,
};

/// Appends remembered per inode for the evidence.
const APPEND_CALLS: usize = 6;
/// Writers remembered per inode.
const WRITERS: usize = 8;

/// Appenders of an inode, in the order they alternated (once a second
/// writer came).
#[derive(Default)]
struct Appends {
    last_tid: Option<u32>,
    before_last_tid: Option<u32>,
    writers: Vec<Writer>,
    /// Calls showing the A, B, A pattern once it was seen.
    interleaved: Option<Vec<Call>>,
    recent: VecDeque<Call>,
    /// A write not at the end of file: not an append-only inode.
    not_append_only: bool,
    reported: bool,
    since_epoch: u32,
}

/// The one writer of an inode so far, and its last append: all the
/// evidence needs should another writer come (the pattern starts there).
struct First {
    since_epoch: u32,
    writer: Writer,
    last: Call,
}

/// What is followed of an inode. Most files ever have one writer: theirs
/// is one allocation, not a table entry and two lists.
enum Slot {
    /// Written somewhere other than at its end: not append-only.
    Ignored,
    One(Box<First>),
    Turns(Box<Appends>),
}

impl Slot {
    /// The appends of an inode whose writers alternated and whose finding
    /// is still to tell.
    fn pending(&self) -> Option<&Appends> {
        match self {
            Slot::Turns(a) if a.interleaved.is_some() && !a.reported => Some(a),
            _ => None,
        }
    }
}

#[derive(Default)]
pub struct InterleavedWriters {
    files: FastMap<FileId, Slot>,
}

impl Rule for InterleavedWriters {
    fn observe(&mut self, m: &Moment<'_>, cx: &mut Cx<'_>) {
        match m {
            Moment::Wrote {
                id,
                at_end,
                pid,
                tid,
                call,
            } => {
                let Some(process) = cx.procs.get(*pid) else {
                    return;
                };
                let id = *id;
                let writer = || Writer {
                    key: process.key,
                    tid: *tid,
                    process: process.to_ref(),
                };
                let Some(a) = follow(&mut self.files, id, *at_end, call, *tid, cx.epoch, writer)
                else {
                    return;
                };
                if track(a, *at_end, call, *tid, writer) {
                    // Writers that take turns but never hold the file open
                    // together (a shell appending around a child) are not
                    // concurrent writers.
                    let other = a
                        .writers
                        .iter()
                        .find(|w| Some(w.tid) == a.before_last_tid)
                        .map(|w| w.key);
                    let concurrent = other.is_some_and(|k| holds(cx, k, id));
                    if concurrent {
                        a.interleaved = Some(a.recent.iter().cloned().collect());
                    }
                }
            }
            Moment::Ended {
                process, signal, ..
            } => {
                // High at once if an appender was killed, medium once every
                // appender is gone.
                let key = process.key;
                let ids: Vec<FileId> = self
                    .files
                    .iter()
                    .filter(|(_, s)| {
                        s.pending()
                            .is_some_and(|a| a.writers.iter().any(|w| w.key == key))
                    })
                    .map(|(id, _)| *id)
                    .collect();
                let me = process.to_ref();
                for id in ids {
                    let Some(Slot::Turns(a)) = self.files.get_mut(&id) else {
                        continue;
                    };
                    let all_gone = a.writers.iter().all(|w| !cx.procs.is_live(w.key));
                    if signal.is_none() && !all_gone {
                        continue;
                    }
                    a.reported = true;
                    if let Some(f) = check(a, id, cx, signal.map(|s| (&me, s))) {
                        cx.expose_since(&INFO, Subject::Lasting(Some(id)), f, a.since_epoch);
                    }
                }
            }
            Moment::End { .. } => {
                let mut ids: Vec<FileId> = self
                    .files
                    .iter()
                    .filter(|(_, s)| s.pending().is_some())
                    .map(|(id, _)| *id)
                    .collect();
                ids.sort_unstable();
                for id in ids {
                    let Some(Slot::Turns(a)) = self.files.get_mut(&id) else {
                        continue;
                    };
                    a.reported = true;
                    if let Some(f) = check(a, id, cx, None) {
                        cx.expose_since(&INFO, Subject::Lasting(Some(id)), f, a.since_epoch);
                    }
                }
            }
            _ => {}
        }
    }

    fn holds(&self, id: &FileId) -> bool {
        self.files.get(id).is_some_and(|s| s.pending().is_some())
    }

    fn forget(&mut self, id: &FileId) {
        self.files.remove(id);
    }
}

/// Whether the live process `key` holds `id` open.
fn holds(cx: &Cx<'_>, key: ProcKey, id: FileId) -> bool {
    cx.procs
        .iter()
        .any(|p| p.key == key && p.tables().any(|t| cx.fds.holds(t, id)))
}

/// The appends to follow for this write once `id` has had two writers;
/// until then the first writer and its last append are kept, and nothing
/// is followed of a file written other than at its end.
fn follow<'a>(
    files: &'a mut FastMap<FileId, Slot>,
    id: FileId,
    at_end: bool,
    call: &Call,
    tid: u32,
    epoch: u32,
    writer: impl FnOnce() -> Writer,
) -> Option<&'a mut Appends> {
    let slot = match files.entry(id) {
        Entry::Vacant(v) => {
            v.insert(if at_end {
                Slot::One(Box::new(First {
                    since_epoch: epoch,
                    writer: writer(),
                    last: call.clone(),
                }))
            } else {
                Slot::Ignored
            });
            return None;
        }
        Entry::Occupied(o) => o.into_mut(),
    };
    match slot {
        Slot::Turns(a) => return Some(a),
        Slot::Ignored => return None,
        Slot::One(_) if !at_end => {
            *slot = Slot::Ignored;
            return None;
        }
        Slot::One(first) if first.writer.tid == tid => {
            first.last = call.clone();
            return None;
        }
        Slot::One(first) => {
            let mut recent = VecDeque::with_capacity(APPEND_CALLS);
            recent.push_back(first.last.clone());
            *slot = Slot::Turns(Box::new(Appends {
                last_tid: Some(first.writer.tid),
                writers: vec![first.writer.clone()],
                recent,
                since_epoch: first.since_epoch,
                ..Appends::default()
            }));
        }
    }
    match slot {
        Slot::Turns(a) => Some(a),
        _ => None,
    }
}

/// Follows who appends, to spot A, B, A; true when this write made the
/// pattern (a writer returning after another one).
fn track(
    a: &mut Appends,
    at_end: bool,
    call: &Call,
    tid: u32,
    writer: impl FnOnce() -> Writer,
) -> bool {
    if !at_end {
        a.not_append_only = true;
    }
    if a.not_append_only || a.reported {
        return false;
    }
    if !a.writers.iter().any(|w| w.tid == tid) && a.writers.len() < WRITERS {
        a.writers.push(writer());
    }
    if a.recent.len() == APPEND_CALLS {
        a.recent.pop_front();
    }
    a.recent.push_back(call.clone());
    if a.last_tid == Some(tid) {
        return false;
    }
    let returning = a.before_last_tid == Some(tid);
    a.before_last_tid = a.last_tid;
    a.last_tid = Some(tid);
    returning && a.interleaved.is_none()
}

/// The finding for an inode whose appends interleaved. `killed` is a
/// participant that died by a signal while still appending: then high.
fn check(
    a: &Appends,
    id: FileId,
    cx: &Cx<'_>,
    killed: Option<(&ProcessRef, i32)>,
) -> Option<Finding> {
    if a.not_append_only {
        return None;
    }
    let inode = cx.inodes.get(&id)?;
    let path = inode.path();
    let pattern = a.interleaved.as_ref()?;
    let first = a.writers.first()?;
    let tids: Vec<u32> = a.writers.iter().map(|w| w.tid).collect();
    let mut summary = format!(
        "{} threads/processes appended to {:?} in turn (tids {:?}): a crash or kill mid-record leaves a torn entry followed by other writers' records",
        a.writers.len(),
        path,
        tids
    );
    let (severity, process) = match killed {
        Some((p, sig)) => {
            summary.push_str(&format!(
                "; {} ({}) was killed by {} while appending",
                p.comm,
                p.pid,
                signal_name(sig)
            ));
            (Severity::High, p.clone())
        }
        None => (INFO.severity, first.process.clone()),
    };
    let writers: Vec<_> = a
        .writers
        .iter()
        .map(|w| json!({"pid": w.process.pid, "tid": w.tid, "comm": w.process.comm}))
        .collect();
    let mut f = Finding::new(INFO.id, severity, path, Some(id), process, summary)
        .with("writers", writers)
        .with("fs", &*inode.fs)
        .with("fix", "give each writer its own file, or serialise whole records under a lock with a length/checksum per record");
    if let Some((p, sig)) = killed {
        f = f.with(
            "killed_writer",
            json!({"pid": p.pid, "comm": p.comm, "signal": signal_name(sig)}),
        );
    }
    let mut calls: Vec<_> = pattern.iter().map(Call::to_ref).collect();
    calls.extend(a.recent.iter().map(Call::to_ref));
    Some(f.with_calls(calls))
}

#[cfg(test)]
mod tests {
    use crate::event::FileInfo;
    use crate::test_support::*;
    use crate::track::fds::flags::O_APPEND;
    use crate::track::paths::AT_FDCWD;

    fn open_append(pid: u32, fd: i64) -> crate::Event {
        let info = FileInfo {
            flags: O_WRONLY | O_APPEND,
            ..sized(reg(20), 100)
        };
        open_with(
            pid,
            "/d/meta",
            AT_FDCWD,
            O_WRONLY | O_APPEND,
            fd,
            Some(info),
        )
    }

    fn threads_appending(order: &[u32]) -> Vec<crate::Event> {
        let mut events = vec![
            start(100, "/d"),
            open_append(100, 3),
            spawn_thread(100, 101),
            spawn_thread(100, 102),
        ];
        events.extend(order.iter().map(|&tid| on_tid(write(100, 3, 64), tid)));
        events.push(fsync(100, 3));
        events
    }

    #[test]
    fn threads_taking_turns_on_an_append_only_file() {
        let findings = run(trace![threads_appending(&[101, 102, 101]), exit(100, 0)]);
        let f = sole(&findings, "interleaved-writers");
        assert_finding(f, "/d/meta", 100, crate::Severity::Medium);
        let tids: Vec<u64> = f.evidence["writers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["tid"].as_u64().unwrap())
            .collect();
        assert_eq!(tids, vec![101, 102]);
    }

    #[test]
    fn the_evidence_shows_the_turns_after_a_long_run_of_one_writer() {
        let findings = run(trace![
            threads_appending(&[101, 101, 101, 101, 102, 101]),
            exit(100, 0),
        ]);
        let f = sole(&findings, "interleaved-writers");
        let writes: Vec<u32> = f
            .calls
            .iter()
            .filter(|c| c.call.starts_with("write"))
            .map(|c| c.tid)
            .collect();
        assert_eq!(writes, vec![101, 102, 101], "{:#?}", f.calls);
    }

    #[test]
    fn killed_appender_raises_it_to_high() {
        let findings = run(trace![
            threads_appending(&[101, 102, 101, 102]),
            killed(100, SIGKILL),
        ]);
        let f = one(&findings, "interleaved-writers");
        assert_eq!(f.severity, crate::Severity::High);
        assert_eq!(f.evidence["killed_writer"]["signal"], "SIGKILL");
    }

    #[test]
    fn a_single_appender_is_clean() {
        assert_clean(&run(trace![
            threads_appending(&[101, 101, 101]),
            exit(100, 0),
        ]));
    }

    #[test]
    fn a_file_once_written_in_place_is_never_followed() {
        // One write inside the file, then turns of appends: not an
        // append-only file, whoever writes to it afterwards.
        let in_place = crate::test_support::write_full(100, 4, 10, 10, Some(0), None);
        let mut events = vec![
            start(100, "/d"),
            open_with(
                100,
                "/d/meta",
                AT_FDCWD,
                O_WRONLY,
                4,
                Some(FileInfo {
                    flags: O_WRONLY,
                    ..sized(reg(20), 100)
                }),
            ),
            on_tid(in_place, 101),
            open_append(100, 3),
            spawn_thread(100, 101),
            spawn_thread(100, 102),
        ];
        events.extend([101, 102, 101, 102].map(|tid| on_tid(write(100, 3, 64), tid)));
        events.push(fsync(100, 3));
        assert_clean(&run(trace![events, exit(100, 0)]));
    }

    #[test]
    fn writers_that_never_hold_the_file_together_are_clean() {
        // A shell appends, a child appends and exits, the shell appends again.
        let append = |pid: u32, fd: i32| {
            vec![
                open_append(pid, fd as i64),
                write(pid, fd, 10),
                fsync(pid, fd),
            ]
        };
        assert_clean(&run(trace![
            start(100, "/d"),
            append(100, 3),
            close(100, 3),
            fork(100, 200),
            append(200, 1),
            exit(200, 0),
            append(100, 3),
            exit(100, 0),
        ]));
    }
}
