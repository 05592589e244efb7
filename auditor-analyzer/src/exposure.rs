//! Exposures: what a crash could lose, from the moment a rule finds it (a
//! process ends with data unsynced, data is renamed into place before it is
//! durable, a torn record is left behind) until the observation ends. Any
//! traced process may later close one (the data became durable: an fsync
//! of the inode through any fd, a sync, a syncfs) or make it moot (the file
//! is gone, or its content was replaced). Verdicts are given at the end,
//! from how each exposure stands then: a program judged by what it left
//! behind, not by the moment it claimed to be done.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::FileId;
use crate::fast_hash::FastMap;
use crate::finding::{CallRef, Finding, ProcessRef};
use crate::rules::info::RuleInfo;

/// What an exposure is about, which says what can close it.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    /// Data of an inode: closed when the inode is durable, moot when it
    /// loses its last name or its content is replaced.
    Data(FileId),
    /// Something no later call undoes (a torn record, an ignored fsync
    /// error): moot only when the file is gone.
    Lasting(Option<FileId>),
    /// A verdict already settled when it was given (at the end).
    Settled,
}

impl Subject {
    pub(crate) fn inode(&self) -> Option<FileId> {
        match self {
            Subject::Data(id) | Subject::Lasting(Some(id)) => Some(*id),
            _ => None,
        }
    }
}

/// Who made an exposure durable, and with which call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closer {
    pub process: ProcessRef,
    pub call: CallRef,
}

/// Why an exposure no longer matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Moot {
    /// The file lost its last name: its data can no longer be lost.
    Deleted,
    /// Its content was truncated away and written anew.
    Replaced,
}

/// How an exposure stands.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Open,
    /// Closed by a call; a sync() closes thousands at once, with one.
    Closed(Arc<Closer>),
    Moot(Moot),
}

/// A finding kept as the facts it is made of, built when someone asks:
/// an exposure that is opened by the thousand (one per file a process left
/// dirty) and read only at the end need not hold its finding built.
pub trait Draft: Send + std::fmt::Debug {
    /// The finding, exactly as it would have been built when the exposure
    /// opened.
    fn finding(&self) -> Finding;
}

/// The finding an exposure tells.
#[derive(Debug)]
pub enum Told {
    Built(Box<Finding>),
    Draft(Box<dyn Draft>),
    /// Moved out into its verdict.
    Taken,
}

impl Told {
    /// The finding as the rule raised it (pointed at the code that made
    /// it, like every raised finding).
    pub fn finding(&self) -> Finding {
        match self {
            Told::Built(f) => (**f).clone(),
            Told::Draft(d) => {
                let mut f = d.finding();
                crate::locate::locate(&mut f);
                f
            }
            Told::Taken => Finding::placeholder(),
        }
    }

    /// Moves the finding out, leaving [`Told::Taken`].
    pub fn take(&mut self) -> Finding {
        match std::mem::replace(self, Told::Taken) {
            Told::Built(f) => *f,
            d => d.finding(),
        }
    }
}

/// One exposure.
#[derive(Debug)]
pub struct Exposure {
    pub rule: &'static RuleInfo,
    pub subject: Subject,
    /// The finding as the rule wrote it when the exposure opened.
    pub told: Told,
    /// The process the finding is about.
    pub pid: u32,
    /// When it opened (monotonic ns).
    pub opened_ns: u64,
    /// Lost-event epoch its facts rest on.
    pub since_epoch: u32,
    pub state: State,
}

/// Exposures that were moot by the end, by reason.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MootCounts {
    /// On files deleted before the end.
    pub deleted: u64,
    /// On content truncated away and written anew.
    pub replaced: u64,
    /// Names left by a process that ended, renamed or removed before
    /// their directory was made durable: nothing of them to persist.
    pub moved: u64,
}

/// Every exposure of the run, in the order they opened.
#[derive(Debug, Default)]
pub struct Exposures {
    all: Vec<Exposure>,
    /// Open exposures on each inode (indexes into `all`).
    open: FastMap<FileId, Vec<usize>>,
}

impl Exposures {
    /// Records a new exposure; returns what it tells.
    pub fn open(&mut self, e: Exposure) -> &Told {
        let i = self.all.len();
        if let (State::Open, Some(id)) = (&e.state, e.subject.inode()) {
            self.open.entry(id).or_default().push(i);
        }
        self.all.push(e);
        &self.all[i].told
    }

    /// Whether an open exposure of `rule` is on `id`.
    pub fn is_open(&self, id: FileId, rule: &str) -> bool {
        self.open
            .get(&id)
            .is_some_and(|v| v.iter().any(|&i| self.all[i].rule.id == rule))
    }

    /// Whether an open exposure on `id` matches `pred`.
    pub fn any_open_where(&self, id: FileId, pred: impl Fn(&Exposure) -> bool) -> bool {
        self.open
            .get(&id)
            .is_some_and(|v| v.iter().any(|&i| pred(&self.all[i])))
    }

    /// Whether anything open rests on `id` (so its state must be kept).
    pub fn any_open(&self, id: &FileId) -> bool {
        self.open.contains_key(id)
    }

    /// `id` is durable now: its open data exposures close.
    pub fn close(&mut self, id: FileId, by: &Arc<Closer>) {
        let Some(list) = self.open.remove(&id) else {
            return;
        };
        let mut kept = Vec::new();
        for i in list {
            match self.all[i].subject {
                Subject::Data(_) => self.all[i].state = State::Closed(by.clone()),
                _ => kept.push(i),
            }
        }
        if !kept.is_empty() {
            self.open.insert(id, kept);
        }
    }

    /// Every open data exposure on device `dev` (all devices for None)
    /// closes: a sync() or syncfs().
    pub fn close_all(&mut self, dev: Option<u64>, by: &Arc<Closer>) {
        let ids: Vec<FileId> = self
            .open
            .keys()
            .filter(|id| dev.is_none_or(|d| id.dev == d))
            .copied()
            .collect();
        for id in ids {
            self.close(id, by);
        }
    }

    /// `id` is gone or its content replaced: what is open on it is moot
    /// (for a replacement, only its data: a torn record was torn in the
    /// content that is gone too, but an ignored fsync error is not undone).
    pub fn moot(&mut self, id: FileId, why: Moot) {
        let Some(list) = self.open.remove(&id) else {
            return;
        };
        let mut kept = Vec::new();
        for i in list {
            let e = &mut self.all[i];
            if why == Moot::Deleted || matches!(e.subject, Subject::Data(_)) {
                e.state = State::Moot(why);
            } else {
                kept.push(i);
            }
        }
        if !kept.is_empty() {
            self.open.insert(id, kept);
        }
    }

    /// The inode's state is gone (evicted): what rests on it can no longer
    /// be followed, so it stays as it stands, marked at the end.
    pub fn untrack(&mut self, id: &FileId) {
        self.open.remove(id);
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Exposure> {
        self.all.iter()
    }

    /// Takes every exposure out, in the order they opened.
    pub fn drain(&mut self) -> impl Iterator<Item = Exposure> + '_ {
        self.open.clear();
        self.all.drain(..)
    }

    /// Keeps at most `cap` exposures: past it the oldest closed ones go
    /// first (their verdict is low anyway), then the oldest of any state.
    /// Returns how many went.
    pub fn bound(&mut self, cap: usize) -> usize {
        if self.all.len() <= cap {
            return 0;
        }
        let excess = self.all.len() - cap;
        let mut dropped = 0;
        let mut keep: Vec<bool> = vec![true; self.all.len()];
        for (i, e) in self.all.iter().enumerate() {
            if dropped == excess {
                break;
            }
            if !matches!(e.state, State::Open) {
                keep[i] = false;
                dropped += 1;
            }
        }
        for k in keep.iter_mut() {
            if dropped == excess {
                break;
            }
            if *k {
                *k = false;
                dropped += 1;
            }
        }
        let mut i = 0;
        self.all.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        });
        self.reindex();
        dropped
    }

    fn reindex(&mut self) {
        self.open.clear();
        for (i, e) in self.all.iter().enumerate() {
            if let (State::Open, Some(id)) = (&e.state, e.subject.inode()) {
                self.open.entry(id).or_default().push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;
    use crate::rules::{killed_mid_write, unsynced_at_exit};

    fn id(ino: u64) -> FileId {
        FileId { dev: 1, ino }
    }

    /// Exposures opened in order, one for each (rule, subject).
    fn opened(all: impl IntoIterator<Item = (&'static RuleInfo, Subject)>) -> Exposures {
        let mut x = Exposures::default();
        for (rule, subject) in all {
            x.open(exposure(rule, subject));
        }
        x
    }

    fn exposure(rule: &'static RuleInfo, subject: Subject) -> Exposure {
        let p = ProcessRef {
            pid: 1,
            comm: "t".into(),
            exe: None,
            argv: Default::default(),
        };
        Exposure {
            rule,
            subject,
            told: Told::Built(Box::new(Finding::new(
                rule.id,
                Severity::Medium,
                "/f",
                None,
                p,
                "s",
            ))),
            pid: 1,
            opened_ns: 0,
            since_epoch: 0,
            state: State::Open,
        }
    }

    fn closer() -> Arc<Closer> {
        Arc::new(Closer {
            process: ProcessRef {
                pid: 2,
                comm: "c".into(),
                exe: None,
                argv: Default::default(),
            },
            call: CallRef {
                seq: 9,
                ts_ns: 9,
                pid: 2,
                tid: 2,
                comm: "c".into(),
                call: "fsync(fd=3) = 0".into(),
                stack: None,
            },
        })
    }

    #[test]
    fn durability_closes_data_not_lasting_damage() {
        let mut x = opened([
            (&unsynced_at_exit::INFO, Subject::Data(id(1))),
            (&killed_mid_write::INFO, Subject::Lasting(Some(id(1)))),
        ]);
        x.close(id(1), &closer());
        let states: Vec<&State> = x.iter().map(|e| &e.state).collect();
        assert!(matches!(states[0], State::Closed(_)));
        assert_eq!(states[1], &State::Open);
        assert!(x.is_open(id(1), killed_mid_write::INFO.id));
        assert!(!x.is_open(id(1), unsynced_at_exit::INFO.id));
        // Deleting the file makes the rest moot.
        x.moot(id(1), Moot::Deleted);
        assert_eq!(x.iter().nth(1).unwrap().state, State::Moot(Moot::Deleted));
        assert!(!x.any_open(&id(1)));
    }

    #[test]
    fn sync_closes_one_device_or_all() {
        let mut x = opened([
            (&unsynced_at_exit::INFO, Subject::Data(id(1))),
            (
                &unsynced_at_exit::INFO,
                Subject::Data(FileId { dev: 2, ino: 1 }),
            ),
        ]);
        x.close_all(Some(2), &closer());
        assert!(x.is_open(id(1), unsynced_at_exit::INFO.id));
        x.close_all(None, &closer());
        assert!(x.iter().all(|e| matches!(e.state, State::Closed(_))));
    }

    #[test]
    fn the_bound_drops_closed_ones_first() {
        let mut x = opened((1..=4).map(|ino| (&unsynced_at_exit::INFO, Subject::Data(id(ino)))));
        x.close(id(3), &closer());
        assert_eq!(x.bound(2), 2);
        let left: Vec<bool> = x.iter().map(|e| e.state == State::Open).collect();
        assert_eq!(left, vec![true, true], "the closed one and the oldest went");
        assert!(x.is_open(id(4), unsynced_at_exit::INFO.id));
        assert!(x.is_open(id(2), unsynced_at_exit::INFO.id));
    }
}
