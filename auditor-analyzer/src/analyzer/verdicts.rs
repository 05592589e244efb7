//! The end of the observation: each exposure's verdict from how it stands.
//! Open: the rule's severity (lowered when a live process may still make
//! the data durable). Closed later: low, saying who closed it and after
//! how long, except for the ordering rules under attach or after a failed
//! command, where the window itself is the problem. Moot: no finding,
//! counted.

use serde_json::json;

use crate::calls::human_duration;
use crate::event::FileId;
use crate::exposure::{Closer, Exposure, Moot, State, Subject};
use crate::fast_hash::FastMap;
use crate::finding::{Finding, Severity, bound_calls};
use crate::rules::{Kind, still_running};

use super::{Analyzer, Mode};

impl Analyzer {
    /// Every exposure's verdict, in the order they opened; counts the moot
    /// ones and those left out by `--ignore` or as caches. With `release`,
    /// a file's state is dropped once its last exposure is judged (a
    /// verdict reads only its own file's state).
    pub(super) fn verdicts(&mut self, release: bool) -> Vec<Finding> {
        let mut out = Vec::with_capacity(self.exposures.len());
        let mut moot = self.stats.moot.clone();
        let mut suppressed = 0;
        let mut caches = 0;
        // The exposures end here: their findings are moved into the
        // verdicts, not copied.
        let mut exposures = std::mem::take(&mut self.exposures);
        let mut left: FastMap<FileId, u32> = FastMap::default();
        if release {
            for id in exposures.iter().filter_map(|e| e.subject.inode()) {
                *left.entry(id).or_default() += 1;
            }
        }
        for mut e in exposures.drain() {
            let f = match &e.state {
                State::Moot(Moot::Deleted) => {
                    moot.deleted += 1;
                    None
                }
                State::Moot(Moot::Replaced) => {
                    moot.replaced += 1;
                    None
                }
                _ => {
                    let f = e.told.take();
                    Some(self.judge_finding(&e, f, true))
                }
            };
            if let Some(id) = e.subject.inode()
                && let Some(n) = left.get_mut(&id)
            {
                *n -= 1;
                if *n == 0 {
                    self.inodes.forget(&id);
                }
            }
            let Some(f) = f else { continue };
            if !self.filter.rule_enabled(&f.rule) {
                continue;
            }
            if self.filter.path_ignored(&f.path) {
                suppressed += 1;
            } else if self.filter.path_is_skipped_cache(&f.path) {
                caches += 1;
            } else {
                out.push(f);
            }
        }
        self.stats.moot = moot;
        self.stats.suppressed_findings += suppressed;
        self.stats.cache_findings += caches;
        out
    }

    /// The newest `n` exposures as they stand now (not moot, not filtered
    /// out), oldest first, for live views.
    pub(super) fn standing(&self, n: usize) -> Vec<Finding> {
        let mut v: Vec<Finding> = self
            .exposures
            .iter()
            .rev()
            .filter(|e| !matches!(e.state, State::Moot(_)))
            .map(|e| self.judge(e, false))
            .filter(|f| self.shown(f))
            .take(n)
            .collect();
        v.reverse();
        v
    }

    /// How many exposures stand now (not moot).
    pub(super) fn standing_count(&self) -> usize {
        self.exposures
            .iter()
            .filter(|e| !matches!(e.state, State::Moot(_)))
            .count()
    }

    /// The verdict of one exposure that is not moot; `end` when the
    /// observation is over (a live process may then still fix it later).
    fn judge(&self, e: &Exposure, end: bool) -> Finding {
        self.judge_finding(e, e.told.finding(), end)
    }

    /// [`Analyzer::judge`] of `e` whose finding, as raised, is `f`.
    fn judge_finding(&self, e: &Exposure, mut f: Finding, end: bool) -> Finding {
        let inode = match e.subject {
            Subject::Data(id) | Subject::Lasting(Some(id)) => Some(id),
            _ => None,
        };
        let state = inode.and_then(|id| self.inodes.get(&id));
        // The data follows its inode: a file moved since is named where it
        // is now.
        if let Some(st) = state
            && !st.unlinked
            && !st.current_names.is_empty()
            && !st.current_names.contains(&f.path)
        {
            let now = st.path();
            f.evidence
                .insert("path_when_found".into(), f.path.clone().into());
            f.path = now;
        }
        match &e.state {
            State::Closed(by) => self.closed_later(&mut f, e, by),
            // A live process holding the file may still make it durable
            // (a writer still running says so itself when it opens the
            // exposure at the end).
            State::Open if end && e.rule.kind == Kind::EndOfLife => {
                if let Some(id) = inode {
                    let live = self.live_holders(id);
                    if !live.is_empty() && f.evidence.get("still_running_pids").is_none() {
                        f = still_running(f, &live);
                    }
                }
            }
            _ => {}
        }
        if self.epoch > e.since_epoch {
            f.inconclusive = true;
            f.inconclusive_reason = Some(format!(
                "{} events were lost (ring buffer full) after this state began; the missing calls could have changed the verdict",
                self.stats.lost_events
            ));
        } else if inode.is_some() && state.is_none_or(|s| s.evicted) {
            f.inconclusive = true;
            f.inconclusive_reason = Some(format!(
                "state evicted (limit {} files, {} processes): what this file held before the eviction is unknown",
                self.config.max_files, self.config.max_processes
            ));
        }
        self.locate(&mut f);
        f
    }

    /// A window that closed later: low, or the rule's severity for an
    /// ordering rule whose window mattered (attach, a failed command).
    fn closed_later(&self, f: &mut Finding, e: &Exposure, by: &Closer) {
        let after = by.call.ts_ns.saturating_sub(e.opened_ns);
        let window_matters = e.rule.kind == Kind::Ordering
            && !matches!(
                self.mode,
                Mode::Launched {
                    code: Some(0),
                    killed: false,
                    ..
                }
            );
        if !window_matters {
            f.severity = Severity::Low;
        }
        let who = if by.process.pid == f.process.pid {
            "by the same process".to_string()
        } else {
            format!("by {} ({})", by.process.comm, by.process.pid)
        };
        f.summary.push_str(&format!(
            "; made durable {} later {who} with {}",
            human_duration(after),
            by.call.call
        ));
        f.evidence.insert(
            "closed_by".into(),
            json!({
                "pid": by.process.pid,
                "comm": by.process.comm,
                "call": by.call.call,
                "seq": by.call.seq,
                "ts_ns": by.call.ts_ns,
            }),
        );
        f.evidence
            .insert("exposed_for".into(), human_duration(after).into());
        f.evidence.insert("exposed_for_ns".into(), after.into());
        let mut calls = std::mem::take(&mut f.calls);
        calls.push(by.call.clone());
        f.calls = bound_calls(calls);
    }

    /// Pids of live processes holding `id` open.
    pub(super) fn live_holders(&self, id: crate::event::FileId) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .procs
            .iter()
            .filter(|p| p.tables().any(|t| self.fds.holds(t, id)))
            .map(|p| p.pid)
            .collect();
        pids.sort_unstable();
        pids
    }
}
