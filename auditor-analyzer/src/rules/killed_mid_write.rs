//! `killed-mid-write`: a thread died while inside a write, or after a short
//! write it never completed: the file holds a torn record.

use serde_json::json;

use crate::calls::signal_name;
use crate::exposure::Subject;
use crate::finding::{CallRef, Finding, Severity};
use crate::track::processes::{Process, WriteRec};

use super::{Cx, Kind, Moment, RuleInfo};

pub const INFO: RuleInfo = RuleInfo {
    id: "killed-mid-write",
    severity: Severity::High,
    title: "thread killed inside a write, or after a short write it never completed",
    kind: Kind::Lasting,
};

/// At a kill: the records its threads left torn.
pub fn observe(m: &Moment<'_>, cx: &mut Cx<'_>) {
    let Moment::Ended {
        process,
        signal: Some(sig),
        call,
        ..
    } = m
    else {
        return;
    };
    let torn = check(process, *sig, call, |w| {
        w.file.is_some_and(|id| cx.is_judged(&id))
    });
    for (file, f) in torn {
        cx.expose_since(&INFO, Subject::Lasting(file), f, process.since_epoch);
    }
}

/// Findings (with their file) for a process that died by `signal`.
/// `judged` filters out writes to files the analyzer does not judge.
fn check(
    p: &Process,
    signal: i32,
    exit_call: &CallRef,
    judged: impl Fn(&WriteRec) -> bool,
) -> Vec<(Option<crate::event::FileId>, Finding)> {
    let fatal = p.signals.iter().rev().find(|s| s.signal == signal);
    let mut tids: Vec<u32> = p.last_writes.keys().copied().collect();
    tids.sort_unstable();
    let mut out = Vec::new();
    let mut seen: Vec<(u32, i32)> = Vec::new();
    for tid in tids {
        let w = &p.last_writes[&tid];
        let Some(s) = fatal else { break };
        let t = s.call.ts_ns;
        let inside = (w.enter_ns <= t && t <= w.call.ts_ns)
            || (s.target_tid == tid
                && s.target_syscall.is_some_and(|c| c.is_write())
                && w.call.ts_ns >= t);
        if inside && judged(w) {
            seen.push((tid, w.fd));
            let what = format!(
                "was inside {} when {} arrived",
                w.call.text(),
                signal_name(signal)
            );
            out.push((
                w.file,
                finding(
                    p,
                    w,
                    tid,
                    signal,
                    "in_flight",
                    &what,
                    vec![w.call.to_ref(), s.call.clone(), exit_call.clone()],
                ),
            ));
        }
    }
    let mut shorts: Vec<(&(u32, i32), &WriteRec)> = p.short_writes.iter().collect();
    shorts.sort_by_key(|(k, _)| **k);
    for (&(tid, fd), w) in shorts {
        if seen.contains(&(tid, fd)) || !judged(w) {
            continue;
        }
        let what = format!(
            "wrote {} of {} bytes and never completed the write",
            w.ret, w.requested
        );
        let mut calls = vec![w.call.to_ref()];
        calls.extend(fatal.map(|s| s.call.clone()));
        calls.push(exit_call.clone());
        out.push((
            w.file,
            finding(p, w, tid, signal, "short_write", &what, calls),
        ));
    }
    out
}

fn finding(
    p: &Process,
    w: &WriteRec,
    tid: u32,
    signal: i32,
    kind: &str,
    what: &str,
    calls: Vec<CallRef>,
) -> Finding {
    let summary = format!(
        "thread {tid} of {} ({}) {what}, then the process was killed by {}: {:?} holds a torn record",
        p.comm,
        p.pid,
        signal_name(signal),
        w.path
    );
    let sender = p.signals.iter().rev().find(|s| s.signal == signal);
    INFO.finding(w.path.clone(), w.file, p.to_ref(), summary)
        .with("kind", kind)
        .with("tid", tid)
        .with("signal", signal_name(signal))
        .with("write", w.call.text())
        .with("requested", w.requested)
        .with("written", w.ret)
        .with("write_entered_ns", w.enter_ns)
        .with("write_returned_ns", w.call.ts_ns)
        .with("signal_sent_ns", sender.map(|s| s.call.ts_ns))
        .with("sender", sender.map(|s| json!({"pid": s.sender_pid, "comm": s.sender_comm})))
        .with("fix", "make records self-validating (length + checksum) and truncate a torn tail on open, or write aside and rename")
        .with_calls(calls)
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    fn setup() -> Vec<crate::Event> {
        vec![
            start(100, "/d"),
            open_existing(100, "/d/meta.log", 3, sized(reg(50), 100)),
            spawn_thread(100, 101),
            start(50, "/"),
        ]
    }

    #[test]
    fn thread_inside_a_write_when_killed() {
        let mut events = setup();
        let mut w = on_tid(write_full(100, 3, 4096, 1024, None, None), 101);
        if let crate::EventKind::Write { enter_ns, .. } = &mut w.kind {
            *enter_ns = 4_500_000;
        }
        events.extend([
            at(signal(50, 100, SIGKILL), 5_000_000),
            at(w, 5_200_000),
            killed(100, SIGKILL),
        ]);
        let findings = run(events);
        let f = one(&findings, "killed-mid-write");
        assert_eq!((f.path.as_str(), f.process.pid), ("/d/meta.log", 100));
        assert_eq!(f.evidence["kind"], "in_flight");
        assert_eq!(f.evidence["tid"], 101);
        assert_eq!(f.evidence["written"], 1024);
        assert_eq!(f.evidence["sender"]["pid"], 50);
    }

    #[test]
    fn short_write_never_completed_before_death() {
        let findings = run(trace![
            setup(),
            write_full(100, 3, 4096, 1000, None, None),
            kill(50, 100, SIGKILL),
        ]);
        let f = one(&findings, "killed-mid-write");
        assert_eq!(f.evidence["kind"], "short_write");
        assert_eq!(f.evidence["requested"], 4096);
    }

    #[test]
    fn completed_and_synced_writes_are_clean() {
        assert_clean(&run(trace![
            setup(),
            write_full(100, 3, 4096, 1000, None, None),
            write_full(100, 3, 3096, 3096, None, None),
            fsync(100, 3),
            kill(50, 100, SIGKILL),
        ]));
    }
}
