//! The finding a process's end raises for each file it left dirty
//! (unsynced-at-exit, killed-while-dirty), kept as a draft until someone
//! reads it. One exit can leave 50,000 files dirty: built at once, their
//! findings (an evidence map, rendered calls and a summary each) were most
//! of the auditor's memory, though nobody reads them before the end. A
//! draft holds only the facts, shares what every file of the exit has in
//! common, and builds the very same finding when asked.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::calls::{Call, human_duration};
use crate::event::FileId;
use crate::exposure::Draft;
use crate::finding::{CallRef, Finding, ProcessRef};
use crate::track::inodes::{Dirty, InodeState};

use super::{RuleInfo, still_running};

/// What an end shares across every file it left dirty: the rule that
/// tells it, the exit or kill facts, the calls that ended the process, and
/// the fix.
#[derive(Debug)]
pub(crate) struct Ending {
    pub info: &'static RuleInfo,
    pub context: Map<String, Value>,
    pub calls: Vec<CallRef>,
    pub fix: &'static str,
}

impl Ending {
    pub(crate) fn new(
        info: &'static RuleInfo,
        context: Map<String, Value>,
        calls: Vec<CallRef>,
        fix: &'static str,
    ) -> Arc<Ending> {
        Arc::new(Ending {
            info,
            context,
            calls,
            fix,
        })
    }
}

/// The facts of unsynced data every "data not durable" finding shows:
/// bytes, ranges, writes, age, writers, filesystem, last fsync.
#[derive(Debug)]
pub(crate) struct DirtyFacts {
    bytes: u64,
    writes: u64,
    ranges: Box<[(u64, u64)]>,
    first_write_ns: u64,
    writer_pids: Box<[u32]>,
    fs: Arc<str>,
    /// (seq, ts_ns) of the inode's last successful fsync.
    last_sync: Option<(u64, u64)>,
}

impl DirtyFacts {
    pub(crate) fn of(inode: &InodeState, dirty: &Dirty) -> DirtyFacts {
        let mut writer_pids: Vec<u32> = dirty.writers.iter().map(|w| w.process.pid).collect();
        writer_pids.dedup();
        DirtyFacts {
            bytes: dirty.bytes,
            writes: dirty.writes,
            ranges: dirty.ranges.as_slice().into(),
            first_write_ns: dirty.first_write.ts_ns,
            writer_pids: writer_pids.into(),
            fs: inode.fs.clone(),
            last_sync: inode.last_sync.as_ref().map(|c| (c.seq, c.ts_ns)),
        }
    }

    /// Adds the facts to `f`, the data's age counted up to `now_ns`.
    pub(crate) fn add_to(&self, f: Finding, now_ns: u64) -> Finding {
        let age = now_ns.saturating_sub(self.first_write_ns);
        let ranges: Vec<Value> = self
            .ranges
            .iter()
            .map(|&(s, e)| Value::from(vec![s, e]))
            .collect();
        f.with("unsynced_bytes", self.bytes)
            .with("unsynced_ranges", Value::Array(ranges))
            .with("writes", self.writes)
            .with("first_unsynced_write_ns", self.first_write_ns)
            .with("unsynced_age_ns", age)
            .with("unsynced_age", human_duration(age))
            .with("writer_pids", Value::from(self.writer_pids.to_vec()))
            .with("fs", &*self.fs)
            .with(
                "last_successful_fsync",
                self.last_sync
                    .map(|(seq, ts_ns)| json!({"seq": seq, "ts_ns": ts_ns})),
            )
    }
}

/// What a draft's summary is told from.
pub(crate) struct Summary<'a> {
    pub path: &'a str,
    pub bytes: u64,
    pub writes: u64,
    pub process: &'a ProcessRef,
    /// The end's facts (exit code, signal, sender).
    pub context: &'a Map<String, Value>,
}

/// The finding of one file a process left dirty at its end, as facts.
#[derive(Debug)]
pub(crate) struct EndOfLife {
    id: FileId,
    path: Box<str>,
    process: ProcessRef,
    /// Tells the summary from the facts when the finding is built (a
    /// hundred bytes of text per file, kept for nobody, otherwise).
    summary: fn(&Summary<'_>) -> String,
    facts: DirtyFacts,
    /// The file's own calls: its first unsynced write and its history
    /// (shared with the file's state until the file sees another call).
    first_write: Call,
    history: Arc<VecDeque<Call>>,
    last_write_ns: u64,
    ending: Arc<Ending>,
    /// The writer still runs (it may yet fsync): the verdict is lowered.
    live: Option<u32>,
}

impl EndOfLife {
    /// The draft for `inode` if it holds unsynced data (none if it does
    /// not), its summary told from that data and the process.
    pub(crate) fn of_dirty(
        inode: &InodeState,
        process: ProcessRef,
        ending: &Arc<Ending>,
        live: Option<u32>,
        summary: fn(&Summary<'_>) -> String,
    ) -> Option<EndOfLife> {
        let dirty = inode.dirty.as_ref()?;
        Some(EndOfLife {
            id: inode.id,
            path: inode.path().into(),
            process,
            summary,
            facts: DirtyFacts::of(inode, dirty),
            first_write: dirty.first_write.clone(),
            history: inode.history.clone(),
            last_write_ns: dirty.last_write_ns,
            ending: ending.clone(),
            live,
        })
    }

    /// The pid the finding is about.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid
    }

    /// The file's own calls, its first unsynced write first.
    fn calls(&self) -> impl Iterator<Item = &Call> {
        std::iter::once(&self.first_write).chain(self.history.iter())
    }

    /// When the exposure opened: the time of its finding's last call
    /// (calls are shown in trace order; the one that ended the process
    /// comes last).
    pub(crate) fn opened_ns(&self) -> u64 {
        let history = self.calls().map(|c| (c.seq, c.ts_ns));
        let ending = self.ending.calls.iter().map(|c| (c.seq, c.ts_ns));
        history.chain(ending).max().map_or(0, |(_, ts)| ts)
    }
}

impl Draft for EndOfLife {
    fn finding(&self) -> Finding {
        let end = self
            .ending
            .calls
            .last()
            .map_or(self.last_write_ns, |c| c.ts_ns);
        let summary = (self.summary)(&Summary {
            path: &self.path,
            bytes: self.facts.bytes,
            writes: self.facts.writes,
            process: &self.process,
            context: &self.ending.context,
        });
        let f = self
            .ending
            .info
            .finding(&*self.path, Some(self.id), self.process.clone(), summary)
            .with_all(&self.ending.context);
        let mut all: Vec<CallRef> = self.calls().map(Call::to_ref).collect();
        all.extend(self.ending.calls.iter().cloned());
        let f = self
            .facts
            .add_to(f, end)
            .with("fix", self.ending.fix)
            .with_calls(all);
        match self.live {
            Some(pid) => still_running(f, &[pid]),
            None => f,
        }
    }
}
