//! What `attach` does while it captures: counts events and findings for
//! the metrics page (rendered about once a second) and, under `--format
//! jsonl`, streams findings and writes a stats line every 10 s (fsynced
//! when the output is a followed log).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Result;
use auditor_analyzer::{Event, Finding, snapshot::ProcessState};
use serde_json::{Value, json};

use crate::attach::metrics::{self, Sample, Server};
use crate::{
    capture::pump::monotonic_ns,
    cli::Format,
    output::Output,
    pipeline::{Pulse, Sink, sinks::stream_at_risk},
};

/// How often the metrics page is re-rendered.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// How often `--format jsonl` writes a stats line.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// The attach sink.
pub struct Watch<'a> {
    pub out: &'a mut Output,
    pub format: Format,
    pub metrics: Option<Server>,
    counts: Counts,
    last_metrics: Option<Instant>,
    last_stats: Instant,
}

impl<'a> Watch<'a> {
    pub fn new(out: &'a mut Output, format: Format, metrics: Option<Server>) -> Self {
        Watch {
            out,
            format,
            metrics,
            counts: Counts::default(),
            last_metrics: None,
            last_stats: Instant::now(),
        }
    }
}

impl Sink for Watch<'_> {
    fn event(&mut self, ev: &Event, found: &[Finding]) -> Result<()> {
        *self
            .counts
            .events
            .entry(metrics::kind_name(&ev.kind))
            .or_default() += 1;
        for f in found {
            *self
                .counts
                .findings
                .entry((f.rule.clone(), f.severity.to_string()))
                .or_default() += 1;
            self.counts.inconclusive += u64::from(f.inconclusive);
        }
        if self.format == Format::Jsonl {
            stream_at_risk(self.out, found)?;
        }
        Ok(())
    }

    fn pulse(&mut self, p: &Pulse<'_>) -> Result<()> {
        let metrics_due = self.metrics.is_some()
            && self
                .last_metrics
                .is_none_or(|t| t.elapsed() >= METRICS_EVERY);
        let stats_due = self.format == Format::Jsonl && self.last_stats.elapsed() >= STATS_EVERY;
        if !metrics_due && !stats_due {
            return Ok(());
        }
        let s = self.counts.sample(p);
        if metrics_due && let Some(m) = &self.metrics {
            self.last_metrics = Some(Instant::now());
            m.publish(metrics::render(&s));
        }
        if stats_due {
            self.last_stats = Instant::now();
            self.out
                .write_chunk(format!("{}\n", stats_line(&s)).as_bytes())?;
            self.out.checkpoint()?;
        }
        Ok(())
    }
}

/// Counters kept as the stream passes.
#[derive(Default)]
struct Counts {
    events: BTreeMap<&'static str, u64>,
    findings: BTreeMap<(String, String), u64>,
    inconclusive: u64,
}

impl Counts {
    fn sample(&self, p: &Pulse<'_>) -> Sample {
        let snap = p.analyzer.snapshot(monotonic_ns());
        let k = p.kernel;
        Sample {
            events_by_kind: self.events.clone(),
            dropped_ring_full: k.dropped,
            dropped_args_table_full: k.args_full,
            untraced_table_full: k.traced_full,
            findings: self.findings.clone(),
            inconclusive_findings: self.inconclusive,
            processes_live: p.lives.map_or(0, |l| l.live_count()),
            files_tracked: snap.stats.files_tracked,
            evicted_inodes: snap.stats.evicted_inodes,
            evicted_dirty: snap.stats.evicted_dirty,
            tracked_inodes: snap.stats.tracked_inodes,
            unsynced: snap
                .processes
                .iter()
                .filter(|p| p.state == ProcessState::Running && p.unsynced_bytes > 0)
                .map(|p| (p.pid, p.comm.clone(), p.unsynced_bytes))
                .collect(),
            oldest_unsynced_age_s: snap
                .files
                .iter()
                .filter_map(|f| f.unsynced_age_ns)
                .max()
                .map(|ns| ns as f64 / 1e9),
            uptime_s: p.uptime.as_secs_f64(),
        }
    }
}

/// The periodic `{"type":"stats"}` line of `--format jsonl`.
fn stats_line(s: &Sample) -> Value {
    json!({
        "type": "stats",
        "at": auditor_analyzer::now_rfc3339(),
        "uptime_s": (s.uptime_s * 10.0).round() / 10.0,
        "events": s.events_by_kind.values().sum::<u64>(),
        "dropped": s.dropped_ring_full + s.dropped_args_table_full,
        "findings": s.findings.values().sum::<u64>(),
        "processes_live": s.processes_live,
        "files_tracked": s.files_tracked,
        "evicted_inodes": s.evicted_inodes,
        "evicted_dirty": s.evicted_dirty,
        "tracked_inodes": s.tracked_inodes,
        "unsynced_bytes": s.unsynced.iter().map(|u| u.2).sum::<u64>(),
    })
}
