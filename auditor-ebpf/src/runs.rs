//! Runs of writes: consecutive complete writes of one thread to one regular
//! file are counted in the thread's slot and reported as one record (with
//! the number of calls) when anything else happens. Positioned writes
//! (pwrite64, pwritev) run the same way when each starts where the last
//! ended: the record says the first one's offset, and the run stands for
//! one write of their total there, as the calls together were. A write then costs a
//! counter update instead of a ring-buffer record and the file lookup it
//! would need, which is most of what tracing a write-heavy program costs.
//!
//! Order is kept: every other record first flushes the runs in flight
//! ([`flush_all`]), so a write is always reported before whatever came after
//! it, whichever thread or process did that. A thread that starts writing a
//! file another thread is running on flushes that run first, so writers
//! taking turns stay visible.
//!
//! A run's counters are one 64-bit word changed only atomically, because any
//! CPU may take them at any time: bit 63 [`LISTED`] (the thread's current
//! listing in `RUNLIST` holds it), bits 60-62 the run's version, bits 40-59 the number of
//! writes, bits 0-39 their bytes. What a record needs besides the counters
//! (file, fd, name, first entry time) is kept twice, picked by the version's
//! parity, so a thread starting a new run never rewrites the description a
//! flush on another CPU may be reading.

use auditor_common::{FLAG_RUN_UNSURE, FileIdent, Kind, STAT_DROPPED, SyscallRecord};
use aya_ebpf::helpers::bpf_ktime_get_ns;

use crate::{
    atomic::{self, cas64, load},
    maps::{MAX_RUNS, OWNERS, RUNLIST, count},
    ring::{reserve, submit},
    thread::{Pending, Run, RunInfo, slot_of},
};

pub(crate) const LISTED: u64 = 1 << 63;
pub(crate) const VER_SHIFT: u32 = 60;
const VER_BITS: u64 = 7 << VER_SHIFT;
pub(crate) const COUNT_SHIFT: u32 = 40;
const COUNT_FIELD: u64 = (1 << 20) - 1;
pub(crate) const COUNT_MAX: u64 = COUNT_FIELD - 1;
pub(crate) const BYTES_FIELD: u64 = (1 << COUNT_SHIFT) - 1;
/// Leaves room for one more write (at most 2 GiB) below the field's top.
pub(crate) const BYTES_MAX: u64 = 1 << 39;

#[inline(always)]
pub(crate) fn count_of(w: u64) -> u64 {
    (w >> COUNT_SHIFT) & COUNT_FIELD
}

impl Run {
    /// The description of the run of version `ver`.
    #[inline(always)]
    fn info(&self, ver: u64) -> &RunInfo {
        &self.info[(ver & 1) as usize]
    }

    /// The description of the current run (the owner's to write).
    #[inline(always)]
    pub(crate) fn current(&mut self) -> &mut RunInfo {
        &mut self.info[(self.ver & 1) as usize]
    }

    /// Empties the run (keeping its version) and reports what it held.
    #[inline(always)]
    pub(crate) fn flush(&mut self) {
        if count_of(load(&self.word)) != 0 {
            report(self);
        }
    }
}

/// Takes the run's counters and reports them. The record's place in the
/// ring is reserved before the counters are taken: whoever finds them
/// taken (the owner about to write its next record, an fsync say) reserves
/// its own place after this one, so a run is never read after a later call
/// of its thread, whichever CPU flushed it.
#[inline(never)]
fn report(run: &mut Run) {
    let Some(mut entry) = reserve::<SyscallRecord>(Kind::Syscall, run.pid_tgid) else {
        // Ring full: the writes are lost, and counted; never reported late.
        if count_of(atomic::and(&mut run.word, VER_BITS)) != 0 {
            count(STAT_DROPPED);
        }
        return;
    };
    let taken = atomic::and(&mut run.word, VER_BITS);
    let calls = count_of(taken);
    if calls == 0 {
        // Another flush took them first (and reserved before it did).
        entry.discard(0);
        return;
    }
    let bytes = taken & BYTES_FIELD;
    let ver = (taken >> VER_SHIFT) & 7;
    let before = atomic::add(&mut run.info[(ver & 1) as usize].flushed, bytes);
    let run = &*run;
    let info = run.info(ver);
    // SAFETY: a reservation of exactly one record, its header filled.
    let r = unsafe { &mut *entry.as_mut_ptr() };
    {
        r.header.comm = info.comm;
        r.nr = info.nr;
        r.calls = calls as u32;
        r.args = [info.fd as u64, 0, bytes, 0, 0, 0];
        r.ret = bytes as i64;
        r.enter_ns = info.first_ns;
        r.file = info.file;
        if info.nr == auditor_common::nr::CLOSE {
            // Visits: the closes are the calls, the reopens between them
            // count in the bytes field (visits.rs); the open as it was made.
            r.args = [
                info.fd as u64,
                info.open[0] as u64,
                bytes,
                info.open[1] as u64,
                info.open[2] as u64,
                info.open[3] as i32 as u64,
            ];
            r.ret = 0;
        } else if positioned(info.nr) {
            // This part starts where the parts before it ended; the file
            // was at least that long by then.
            let start = info.off.wrapping_add(before);
            r.args[3] = start;
            r.file.size = if before > 0 && (start as i64) > info.file.size {
                start as i64
            } else {
                info.file.size
            };
        } else {
            r.file.size = info.file.size.wrapping_add(before as i64);
        }
        r.file2 = FileIdent::default();
        r.stack = info.stack;
        r._pad = 0;
        // The owner writes a description only after publishing the version
        // that will use it: two versions on, ours may have been rewritten
        // while it was copied.
        let now = (load(&run.word) >> VER_SHIFT) & 7;
        if now.wrapping_sub(ver) & 7 >= 2 {
            r.header.flags |= FLAG_RUN_UNSURE;
        }
    }
    submit(entry);
}

/// Reports every run in flight. Called before any other record is written.
/// The slots are walked by `bpf_loop`, whose body the load-time checker
/// verifies once: unrolled, this loop was checked slot by slot at every
/// call site, and that was most of the probes' start-up.
#[inline(always)]
pub fn flush_all() {
    // SAFETY: a helper call with our own callback and no context.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_RUNS,
            flush_index as *const () as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        )
    };
}

/// `bpf_loop`'s body: flushes `RUNLIST` slot `i` when it names a run.
#[inline(never)]
extern "C" fn flush_index(i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    if let Some(slot) = RUNLIST.get_ptr_mut(i as u32) {
        let entry = load(slot);
        if entry != 0 {
            flush_slot(slot, entry);
        }
    }
    0
}

/// Flushes the run a `RUNLIST` entry names, then frees the entry unless it
/// is still the owner's current listing. The listing number in the entry
/// is what makes that safe: an owner that lists itself again, even in this
/// very slot, does so under a new number, which a stale entry never holds.
#[inline(never)]
fn flush_slot(slot: *mut u64, entry: u64) {
    let tid = entry as u32;
    let current = match slot_of(tid) {
        // SAFETY: a live map value; its run word is only changed atomically
        // and its listing number is one aligned word.
        Some(p) => unsafe {
            (*p).run.flush();
            load(&(*p).run.word) & LISTED != 0 && load(&(*p).run.listing) == (entry >> 32) as u32
        },
        // Its thread is gone.
        None => false,
    };
    if !current {
        cas64(slot, entry, 0);
    }
}

/// Reports the run of another thread now.
#[inline(always)]
fn flush_thread(tid: u32) {
    if let Some(p) = slot_of(tid) {
        // SAFETY: a live map value; its run word is only changed atomically.
        unsafe { (*p).run.flush() };
    }
}

/// Reports the caller's own run and gives up its slot (thread exit).
#[inline(always)]
pub fn finish(run: &mut Run, tid: u32) {
    run.flush();
    unlist(run, tid);
}

/// The `RUNLIST` entry of the owner's current listing.
#[inline(always)]
fn entry_of(run: &Run, tid: u32) -> u64 {
    (u64::from(run.listing) << 32) | u64::from(tid)
}

#[inline(always)]
pub(crate) fn unlist(run: &mut Run, tid: u32) {
    if run.slot != 0
        && let Some(slot) = RUNLIST.get_ptr_mut(run.slot - 1)
    {
        cas64(slot, entry_of(run, tid), 0);
    }
    run.slot = 0;
}

/// Starts a new listing: its number, then LISTED, then a free slot. LISTED
/// goes before the slot: a flush that finds the slot then clears both,
/// never the slot alone.
#[inline(always)]
pub(crate) fn list(run: &mut Run, tid: u32) -> bool {
    // SAFETY: an aligned word of the owner's own entry, read by flushes.
    unsafe { core::ptr::write_volatile(&mut run.listing, run.listing.wrapping_add(1)) };
    atomic::or(&mut run.word, LISTED);
    let entry = entry_of(run, tid);
    for i in 0..MAX_RUNS {
        if let Some(slot) = RUNLIST.get_ptr_mut(i)
            && cas64(slot, 0, entry)
        {
            run.slot = i + 1;
            return true;
        }
    }
    false
}

/// Makes this thread the one running on the run's file, flushing the
/// thread that was.
#[inline(always)]
pub(crate) fn claim(run: &Run, tid: u32) {
    let file = &run.info(run.ver as u64).file;
    let key = [file.dev as u64, file.ino];
    match OWNERS.get_ptr_mut(key) {
        Some(owner) => {
            // A race between two claimers only costs a flush.
            let prev = atomic::load(owner);
            if prev != tid {
                // SAFETY: a live map value.
                unsafe { core::ptr::write_volatile(owner, tid) };
                flush_thread(prev);
            }
        }
        None => {
            let _ = OWNERS.insert(key, tid, 0);
        }
    }
}

/// Whether the write being entered continues the thread's run: same fd,
/// same syscall, no fd of a traced process has changed meaning since, and
/// no flush has taken the run. After a flush the file is looked at again:
/// others may have written it meanwhile, and the part reported next must
/// say the size it starts from.
#[inline(always)]
pub fn continues(p: &Pending, nr: u32, fd: u64, fdgen: u64) -> bool {
    let run = &p.run;
    let info = run.info(run.ver as u64);
    run.ver != 0
        && info.fd as u64 == fd
        && run.fdgen == fdgen
        && info.nr == nr
        && (!positioned(nr) || p.args[3] == p.next_off)
        && plain(nr, &p.args)
        && load(&run.word) & LISTED != 0
}

/// The writes that say their offset, and run when each starts where the
/// last ended.
#[inline(always)]
pub fn positioned(nr: u32) -> bool {
    use auditor_common::nr::{PWRITE64, PWRITEV, PWRITEV2};
    matches!(nr, PWRITE64 | PWRITEV | PWRITEV2)
}

/// The calls that start or continue runs.
#[inline(always)]
pub fn runs_on(nr: u32) -> bool {
    use auditor_common::nr::{WRITE, WRITEV};
    matches!(nr, WRITE | WRITEV) || (positioned(nr) && crate::visits::aggregate())
}

/// pwritev2 runs only without flags (RWF_DSYNC and the like change what
/// one call does) and at an offset (-1 is the fd's position).
#[inline(always)]
fn plain(nr: u32, args: &[u64; 6]) -> bool {
    nr != auditor_common::nr::PWRITEV2 || (args[5] == 0 && args[3] as i64 >= 0)
}

/// Counts a finished write into the thread's run. False when the write must
/// be reported on its own (failed, short, not a regular file, or the file
/// did not resolve).
#[inline(always)]
pub fn absorb(p: &mut Pending, pid_tgid: u64, ret: i64) -> bool {
    use auditor_common::linux::mode::{S_IFMT, S_IFREG};
    use auditor_common::nr::{PWRITE64, WRITE};
    if ret <= 0 || (matches!(p.nr, WRITE | PWRITE64) && ret as u64 != p.args[2]) {
        return false;
    }
    let tid = pid_tgid as u32;
    let add = (1 << COUNT_SHIFT) | ret as u64;
    let next_off = p.args[3].wrapping_add(ret as u64);
    let run = &mut p.run;
    if p.cont != 0 {
        p.next_off = next_off;
        let old = atomic::add(&mut run.word, add);
        if old & LISTED == 0 {
            // A flush took the run while this write was inside the kernel
            // (entry saw it listed): the file is known, but this thread must
            // say again that it is writing it. The part reported next starts
            // here (this write's end stands in for its entry, which was not
            // timed); its size is the run's own count, blind to what others
            // wrote in that instant.
            if count_of(old) == 0 {
                run.current().first_ns = unsafe { bpf_ktime_get_ns() };
            }
            claim(run, tid);
            if !list(run, tid) {
                run.flush();
            }
        } else if count_of(old) >= COUNT_MAX || old & BYTES_FIELD >= BYTES_MAX {
            finish(run, tid);
        }
        return true;
    }
    let f = p.file;
    if f.ino == 0 || u32::from(f.i_mode) & S_IFMT != S_IFREG {
        return false;
    }
    // Linux appends a pwrite on an O_APPEND file wherever it says: its
    // offset is not where the data went.
    if !plain(p.nr, &p.args)
        || positioned(p.nr) && f.f_flags & auditor_common::linux::open::O_APPEND != 0
    {
        return false;
    }
    // A new run: report the last one, publish the new version, then
    // describe it in the half of `info` no flush of older versions reads.
    run.flush();
    unlist(run, tid);
    run.ver = run.ver.wrapping_add(1);
    // Count 0 and not LISTED: no flush reports it yet.
    atomic::swap(&mut run.word, ((run.ver as u64) & 7) << VER_SHIFT);
    let info = run.current();
    info.file = f;
    info.first_ns = p.enter_ns;
    info.flushed = 0;
    info.comm = aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]);
    info.nr = p.nr;
    info.fd = p.args[0] as u32;
    info.off = p.args[3];
    info.stack = p.stack;
    run.fdgen = p.fdgen;
    run.pid_tgid = pid_tgid;
    claim(run, tid);
    atomic::add(&mut run.word, add);
    if !list(run, tid) {
        run.flush();
    }
    p.next_off = next_off;
    true
}
