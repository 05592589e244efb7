//! Moving records from the ring buffer to the analyzer: decoding, the
//! periodic flush of runs of writes the kernel is still counting, and the
//! kernel's drop counters turned into `Lost` events where they were seen.

use std::{
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use anyhow::Result;
use auditor_analyzer::event::{Event, EventKind};
use aya::maps::{MapData, RingBuf};

use super::{
    decode::{DecodeStats, Decoder},
    probes::{KernelStats, Probes},
};

/// How often runs are flushed and drop counters read, and the longest a
/// drain goes on before they are.
const EVERY: Duration = Duration::from_millis(100);

/// Monotonic nanoseconds on the clock `bpf_ktime_get_ns` uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Everything the kernel could not hand over: what it dropped (ring full,
/// tables full) and what reached us but could not be read or trusted.
/// Every report counts losses this one way.
pub fn dropped(kernel: &KernelStats, decode: &DecodeStats) -> u64 {
    kernel.lost() + decode.undecodable()
}

/// The ring buffer's reader.
pub struct Pump {
    pub decoder: Decoder,
    batch: Vec<Event>,
    dropped_seen: u64,
    last_check: Instant,
    last_flush: Instant,
    last_seq: u64,
    last_ts: u64,
}

impl Default for Pump {
    fn default() -> Self {
        Pump {
            decoder: Decoder::default(),
            batch: Vec::new(),
            dropped_seen: 0,
            last_check: Instant::now(),
            last_flush: Instant::now(),
            last_seq: 0,
            last_ts: 0,
        }
    }
}

impl Pump {
    /// One round: the runs of writes flushed (every 100 ms, or now when
    /// `force`), the ring drained for at most ~100 ms, the drop counters
    /// read. Returns whether the ring may hold more.
    pub fn round(
        &mut self,
        probes: &mut Probes,
        sink: &mut dyn FnMut(Event) -> Result<()>,
        force: bool,
    ) -> Result<bool> {
        if force || self.last_flush.elapsed() >= EVERY {
            self.last_flush = Instant::now();
            probes.flush_runs()?;
        }
        let more = self.drain(probes, sink)?;
        if force && !more {
            // Everything the processes did was committed before they could
            // be reaped (or before the stop), so the counters are final.
            self.check_drops(probes, sink, true)?;
        } else {
            self.check_drops(probes, sink, false)?;
        }
        Ok(more)
    }

    fn drain(
        &mut self,
        probes: &mut Probes,
        sink: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<bool> {
        while let Some(item) = probes.ring.next() {
            self.decoder.decode(&item, &mut self.batch);
            drop(item);
            for ev in self.batch.drain(..) {
                self.last_seq = ev.seq;
                self.last_ts = ev.ts_ns;
                sink(ev)?;
            }
            if self.last_check.elapsed() > EVERY {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn check_drops(
        &mut self,
        probes: &Probes,
        sink: &mut dyn FnMut(Event) -> Result<()>,
        force: bool,
    ) -> Result<()> {
        if !force && self.last_check.elapsed() < EVERY {
            return Ok(());
        }
        self.last_check = Instant::now();
        let dropped = probes.kernel_stats().lost();
        if dropped > self.dropped_seen {
            let count = dropped - self.dropped_seen;
            self.dropped_seen = dropped;
            sink(Event {
                seq: self.last_seq,
                ts_ns: self.last_ts.max(monotonic_ns()),
                pid: 0,
                tid: 0,
                comm: String::new(),
                stack: None,
                kind: EventKind::Lost { count },
                in_process: Default::default(),
            })?;
        }
        Ok(())
    }
}

/// Waits until the ring has data, `wake` (an eventfd, when given) is
/// written, or `timeout` passes.
pub fn wait_readable(ring: &RingBuf<MapData>, wake: Option<RawFd>, timeout: Duration) {
    let mut pfds = [
        libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds (a negative fd is ignored by poll).
    unsafe { libc::poll(pfds.as_mut_ptr(), 2, timeout.as_millis() as i32) };
}
