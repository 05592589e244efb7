//! `killed-while-dirty`: a process was killed by a signal while files it
//! wrote held data that was not durable: the buildkitd "SIGTERM, timeout,
//! SIGKILL, snapshot the disk" incident. The evidence names who sent the
//! signal and what came before it; a `sync` afterwards (the incident's fix)
//! closes the exposure, and the verdict then says so.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::calls::{human_duration, signal_name};
use crate::exposure::Subject;
use crate::finding::{CallRef, Finding, ProcessRef, Severity};
use crate::track::inodes::InodeState;
use crate::track::processes::Process;

use super::end_of_life::{EndOfLife, Ending};
use super::{Cx, Kind, Moment, RuleInfo, file_finding};

pub const INFO: RuleInfo = RuleInfo {
    id: "killed-while-dirty",
    severity: Severity::High,
    title: "process killed by a signal while its written data was not durable",
    kind: Kind::EndOfLife,
};

/// At a kill: the files the process left dirty, and those it held open
/// for writing since before the trace began.
pub fn observe(m: &Moment<'_>, cx: &mut Cx<'_>) {
    let Moment::Ended {
        process,
        signal: Some(sig),
        core_dumped,
        call,
        ..
    } = m
    else {
        return;
    };
    let kill = kill_context(process, *sig, call);
    let mut context = kill.evidence;
    context.insert("core_dumped".into(), (*core_dumped).into());
    let ending = Ending::new(&INFO, context, kill.calls, FIX);
    for id in cx.left_dirty(process) {
        if cx.exposed_by_its_order(id, process) {
            continue;
        }
        if let Some(draft) = cx
            .inodes
            .get(&id)
            .and_then(|st| check(st, process.to_ref(), &ending))
        {
            cx.expose_end_of_life(&INFO, Subject::Data(id), draft);
        }
    }
    // Files held open for writing since before tracing began, not
    // fsynced since and not dirtied under the trace's eyes (those got
    // the certain verdict): an inconclusive verdict each.
    for id in &process.held_at_start {
        let Some(st) = cx.inodes.get(id) else {
            continue;
        };
        let seen_dirty = st.dirty.as_ref().is_some_and(|d| d.written_by(process.key));
        if !st.unknown_past || st.unlinked || !st.judged() || seen_dirty {
            continue;
        }
        let f = check_unknown_past(st, process.to_ref(), &ending);
        cx.expose_since(&INFO, Subject::Data(*id), f, process.since_epoch);
    }
}

const FIX: &str = "fsync before acknowledging work, and give the process time to shut down (or sync) before SIGKILL";

/// Facts about a kill, shared by every file the process left dirty.
struct Kill {
    pub evidence: Map<String, Value>,
    pub calls: Vec<CallRef>,
}

fn handling(p: &Process, signal: i32, after_ns: u64) -> &'static str {
    match p
        .deliveries
        .iter()
        .find(|d| d.signal == signal && d.ts_ns >= after_ns)
    {
        Some(d) if d.handler == 0 => "default action",
        Some(d) if d.handler == 1 => "ignored",
        Some(_) => "caught by a handler",
        None => "no delivery seen",
    }
}

/// Who killed `p` with `signal`, and what signals came before.
fn kill_context(p: &Process, signal: i32, exit_call: &CallRef) -> Kill {
    let mut ev = Map::new();
    ev.insert("signal".into(), signal_name(signal).into());
    ev.insert("signal_number".into(), signal.into());
    let fatal = p.signals.iter().rev().find(|s| s.signal == signal);
    ev.insert(
        "sender".into(),
        fatal.map_or(Value::Null, |s| {
            json!({
                "pid": s.sender_pid,
                "comm": s.sender_comm,
                "parent_pid": s.sender_parent.as_ref().map(|p| p.0),
                "parent_comm": s.sender_parent.as_ref().map(|p| p.1.clone()),
            })
        }),
    );
    let signals: Vec<Value> = p
        .signals
        .iter()
        .map(|s| {
            json!({
                "signal": signal_name(s.signal),
                "sender_pid": s.sender_pid,
                "sender_comm": s.sender_comm,
                "ts_ns": s.call.ts_ns,
                "before_exit": human_duration(exit_call.ts_ns.saturating_sub(s.call.ts_ns)),
                "handling": handling(p, s.signal, s.call.ts_ns),
            })
        })
        .collect();
    ev.insert("signals".into(), signals.into());
    if let Some(fatal) = fatal
        && let Some(earlier) = p
            .signals
            .iter()
            .find(|s| s.signal != signal && s.call.ts_ns <= fatal.call.ts_ns)
    {
        let gap = fatal.call.ts_ns.saturating_sub(earlier.call.ts_ns);
        ev.insert(
            "escalation".into(),
            format!(
                "{} ({}), then {} {} later",
                signal_name(earlier.signal),
                handling(p, earlier.signal, earlier.call.ts_ns),
                signal_name(signal),
                human_duration(gap)
            )
            .into(),
        );
        ev.insert("escalation_gap_ns".into(), gap.into());
    }
    let mut calls: Vec<CallRef> = p.signals.iter().map(|s| s.call.clone()).collect();
    calls.push(exit_call.clone());
    Kill {
        evidence: ev,
        calls,
    }
}

/// How every verdict of a kill begins: "app (100) was killed by SIGKILL
/// sent by supervisor (42)", from the kill context.
fn killed(process: &ProcessRef, context: &Map<String, Value>) -> String {
    let signal = context
        .get("signal")
        .and_then(Value::as_str)
        .unwrap_or("a signal");
    let by = context
        .get("sender")
        .and_then(|s| {
            Some(format!(
                " sent by {} ({})",
                s.get("comm")?.as_str()?,
                s.get("pid")?
            ))
        })
        .unwrap_or_default();
    format!(
        "{} ({}) was killed by {signal}{by}",
        process.comm, process.pid
    )
}

/// A killed process held `inode` open for writing since before tracing
/// started and no fsync was seen since: data written before the trace may
/// have been lost, or not. Said as an inconclusive verdict, never a certain
/// one, and never passed over in silence.
fn check_unknown_past(inode: &InodeState, process: ProcessRef, ending: &Ending) -> Finding {
    let summary = format!(
        "{} while it held {:?} open for writing since before tracing began: whether it lost unsynced data is unknown",
        killed(&process, &ending.context),
        inode.path(),
    );
    let mut f = file_finding(ending.info, inode, process, summary)
        .with_all(&ending.context)
        .with(
            "state",
            "unknown: open for writing before tracing began, no fsync seen since",
        )
        .with("fs", &*inode.fs)
        .with("fix", ending.fix)
        .with_calls(ending.calls.clone());
    f.inconclusive = true;
    f.inconclusive_reason = Some(
        "the file was open for writing before tracing began and was not fsynced since: data written earlier is invisible to the trace".into(),
    );
    f
}

/// The verdict for one dirty file of a killed process.
fn check(inode: &InodeState, process: ProcessRef, ending: &Arc<Ending>) -> Option<EndOfLife> {
    EndOfLife::of_dirty(inode, process, ending, None, |s| {
        format!(
            "{} while {:?} held {} unsynced bytes",
            killed(s.process, s.context),
            s.path,
            s.bytes
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::event::EventKind;
    use crate::test_support::*;

    fn daemon_writes() -> Vec<crate::Event> {
        vec![
            start(1, "/"),
            fork(1, 50),
            start(100, "/var/lib/bk"),
            open_existing(100, "/var/lib/bk/meta.db", 3, sized(reg(40), 4096)),
            write_full(100, 3, 8192, 8192, Some(4096), None),
        ]
    }

    #[test]
    fn sigterm_wait_sigkill_with_dirty_data_is_flagged() {
        let mut events = daemon_writes();
        events.extend([
            at(signal(50, 100, SIGTERM), 1_000_000_000),
            ev(
                100,
                EventKind::SignalDelivered {
                    signal: SIGTERM,
                    code: 0,
                    handler: 0x4005d0,
                },
            ),
            at(signal(50, 100, SIGKILL), 11_000_000_000),
            killed(100, SIGKILL),
        ]);
        let findings = run(events);
        // No unsynced-at-exit for the same file.
        let f = sole(&findings, "killed-while-dirty");
        assert_finding(f, "/var/lib/bk/meta.db", 100, crate::Severity::High);
        assert_eq!(f.evidence["signal"], "SIGKILL");
        assert_eq!(f.evidence["sender"]["pid"], 50);
        assert_eq!(f.evidence["sender"]["parent_pid"], 1);
        assert_eq!(f.evidence["unsynced_bytes"], 8192);
        assert_eq!(f.evidence["unsynced_ranges"][0][0], 4096);
        assert_eq!(
            f.evidence["escalation"],
            "SIGTERM (caught by a handler), then SIGKILL 10.0s later"
        );
        assert_eq!(f.evidence["signals"].as_array().unwrap().len(), 2);
        assert!(f.summary.contains("sent by app (50)"), "{}", f.summary);
        assert!(
            f.calls
                .iter()
                .any(|c| c.call.starts_with("kill(pid=100 app, SIGTERM)"))
        );
    }

    #[test]
    fn killed_after_fsync_is_clean() {
        assert_clean(&run(trace![
            daemon_writes(),
            fsync(100, 3),
            kill(50, 100, SIGKILL),
        ]));
    }

    /// A daemon attached mid-life: its database fd was open for writing
    /// before tracing began.
    fn attached_daemon() -> Vec<crate::Event> {
        vec![
            start(1, "/"),
            fork(1, 50),
            start(100, "/var/lib/bk"),
            ev(
                100,
                EventKind::FdAtStart {
                    fd: 3,
                    path: "/var/lib/bk/meta.db".into(),
                    file: Some(sized(reg(40), 4096)),
                    cloexec: false,
                    from_caller: false,
                },
            ),
        ]
    }

    #[test]
    fn kill_with_a_file_open_for_writing_before_the_trace_is_inconclusive() {
        let findings = run(trace![attached_daemon(), kill(50, 100, SIGKILL)]);
        let f = one(&findings, "killed-while-dirty");
        assert_eq!(f.path, "/var/lib/bk/meta.db");
        assert!(f.inconclusive, "{f:?}");
        assert!(
            f.inconclusive_reason
                .as_deref()
                .is_some_and(|r| r.contains("before tracing began")),
            "{f:?}"
        );
        assert_eq!(f.evidence["sender"]["pid"], 50);
        assert!(
            f.summary
                .contains("whether it lost unsynced data is unknown")
        );
    }

    #[test]
    fn fsync_after_the_attach_makes_the_state_known() {
        assert_clean(&run(trace![
            attached_daemon(),
            fsync(100, 3),
            kill(50, 100, SIGKILL),
        ]));
    }

    #[test]
    fn writes_seen_after_the_attach_give_the_certain_verdict_once() {
        let findings = run(trace![
            attached_daemon(),
            write(100, 3, 100),
            kill(50, 100, SIGKILL),
        ]);
        let f = sole(&findings, "killed-while-dirty");
        assert!(!f.inconclusive, "{f:?}");
        assert_eq!(f.evidence["unsynced_bytes"], 100);
    }

    #[test]
    fn normal_exit_with_a_file_open_before_the_trace_is_not_judged() {
        assert_clean(&run(trace![attached_daemon(), exit(100, 0)]));
    }

    #[test]
    fn read_only_fds_from_before_the_trace_are_not_reported() {
        let mut events = attached_daemon();
        if let EventKind::FdAtStart { file: Some(f), .. } = &mut events[3].kind {
            f.flags = 0;
        }
        assert_clean(&run(trace![events, kill(50, 100, SIGKILL)]));
    }
}
