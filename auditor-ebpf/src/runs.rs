//! Runs of writes: consecutive complete writes of one thread to one regular
//! file are counted in the thread's slot and reported as one record (with
//! the number of calls) when anything else happens. A write then costs a
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
//! CPU may take them at any time: bit 63 [`LISTED`] (the thread is in
//! `RUNLIST`), bits 60-62 the run's version, bits 40-59 the number of
//! writes, bits 0-39 their bytes. What a record needs besides the counters
//! (file, fd, name, first entry time) is kept twice, picked by the version's
//! parity, so a thread starting a new run never rewrites the description a
//! flush on another CPU may be reading.

use auditor_common::{FLAG_RUN_UNSURE, FileIdent, Kind, SyscallRecord};
use aya_ebpf::helpers::bpf_ktime_get_ns;

use crate::{
    atomic::{self, cas, load},
    emit::emit_raw,
    maps::{OWNERS, Pending, RUNLIST, slot_of},
};

/// Threads that can hold a run at once; later writers are reported call by
/// call until a slot frees up (every flush frees the slots it empties).
pub const MAX_RUNS: u32 = 16;

const LISTED: u64 = 1 << 63;
const VER_SHIFT: u32 = 60;
const VER_BITS: u64 = 7 << VER_SHIFT;
const COUNT_SHIFT: u32 = 40;
const COUNT_FIELD: u64 = (1 << 20) - 1;
const COUNT_MAX: u64 = COUNT_FIELD - 1;
const BYTES_FIELD: u64 = (1 << COUNT_SHIFT) - 1;
/// Leaves room for one more write (at most 2 GiB) below the field's top.
const BYTES_MAX: u64 = 1 << 39;

/// A thread's run of writes (inside its `Pending` entry).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Run {
    pub word: u64,
    /// The owner's run counter; its low three bits are in `word`.
    pub ver: u32,
    /// `RUNLIST` index + 1 the owner last took (0: none).
    pub slot: u32,
    /// Fd generation when the current run started (its fd and syscall are
    /// in its `info`).
    pub fdgen: u64,
    pub pid_tgid: u64,
    pub info: [RunInfo; 2],
}

/// What a run's record says besides its counters.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RunInfo {
    pub file: FileIdent,
    pub first_ns: u64,
    /// Bytes of this run already reported: later parts start further on.
    pub flushed: u64,
    pub comm: [u8; 16],
    pub nr: u32,
    pub fd: u32,
}

pub const BLANK_INFO: RunInfo = RunInfo {
    file: FileIdent {
        ino: 0,
        size: 0,
        magic: 0,
        dev: 0,
        f_flags: 0,
        f_mode: 0,
        i_mode: 0,
        _pad: 0,
    },
    first_ns: 0,
    flushed: 0,
    comm: [0; 16],
    nr: 0,
    fd: 0,
};

pub const BLANK_RUN: Run = Run {
    word: 0,
    ver: 0,
    slot: 0,
    fdgen: 0,
    pid_tgid: 0,
    info: [BLANK_INFO; 2],
};

#[inline(always)]
fn count_of(w: u64) -> u64 {
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
    fn current(&mut self) -> &mut RunInfo {
        &mut self.info[(self.ver & 1) as usize]
    }

    /// Empties the run (keeping its version) and reports what it held.
    #[inline(always)]
    fn flush(&mut self) {
        let taken = atomic::and(&mut self.word, VER_BITS);
        report(self, taken);
    }
}

/// Reports what a flush took from `run`, if anything.
#[inline(never)]
fn report(run: &mut Run, taken: u64) {
    let calls = count_of(taken);
    if calls == 0 {
        return;
    }
    let bytes = taken & BYTES_FIELD;
    let ver = (taken >> VER_SHIFT) & 7;
    let before = atomic::add(&mut run.info[(ver & 1) as usize].flushed, bytes);
    let run = &*run;
    let info = run.info(ver);
    emit_raw(Kind::Syscall, run.pid_tgid, |r: &mut SyscallRecord| {
        r.header.comm = info.comm;
        r.nr = info.nr;
        r.calls = calls as u32;
        r.args = [info.fd as u64, 0, bytes, 0, 0, 0];
        r.ret = bytes as i64;
        r.enter_ns = info.first_ns;
        r.file = info.file;
        r.file.size = info.file.size.wrapping_add(before as i64);
        r.file2 = FileIdent::default();
        // The owner writes a description only after publishing the version
        // that will use it: two versions on, ours may have been rewritten
        // while it was copied.
        let now = (load(&run.word) >> VER_SHIFT) & 7;
        if now.wrapping_sub(ver) & 7 >= 2 {
            r.header.flags |= FLAG_RUN_UNSURE;
        }
    });
}

/// Reports every run in flight. Called before any other record is written,
/// from one place per program: each call site of this loop is checked slot
/// by slot when the probes load.
#[inline(always)]
pub fn flush_all() {
    for i in 0..MAX_RUNS {
        let Some(slot) = RUNLIST.get_ptr_mut(i) else {
            continue;
        };
        let tid = load(slot);
        if tid != 0 {
            flush_slot(slot, tid);
        }
    }
}

#[inline(never)]
fn flush_slot(slot: *mut u32, tid: u32) {
    flush_thread(tid);
    // After the flush cleared LISTED: the owner lists itself again on its
    // next write, never finding itself listed in a slot about to be freed.
    cas(slot, tid, 0);
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

#[inline(always)]
fn unlist(run: &mut Run, tid: u32) {
    if run.slot != 0
        && let Some(slot) = RUNLIST.get_ptr_mut(run.slot - 1)
    {
        cas(slot, tid, 0);
    }
    run.slot = 0;
}

/// Sets LISTED, then takes a free slot. LISTED goes first: a flush that
/// finds the slot then clears both, never the slot alone.
#[inline(always)]
fn list(run: &mut Run, tid: u32) -> bool {
    atomic::or(&mut run.word, LISTED);
    for i in 0..MAX_RUNS {
        if let Some(slot) = RUNLIST.get_ptr_mut(i)
            && cas(slot, 0, tid)
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
fn claim(run: &Run, tid: u32) {
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
        && load(&run.word) & LISTED != 0
}

/// Counts a finished write into the thread's run. False when the write must
/// be reported on its own (failed, short, not a regular file, or the file
/// did not resolve).
#[inline(always)]
pub fn absorb(p: &mut Pending, pid_tgid: u64, ret: i64) -> bool {
    const S_IFMT: u16 = 0o170000;
    const S_IFREG: u16 = 0o100000;
    if ret <= 0 || (p.nr == auditor_common::nr::WRITE && ret as u64 != p.args[2]) {
        return false;
    }
    let tid = pid_tgid as u32;
    let add = (1 << COUNT_SHIFT) | ret as u64;
    let run = &mut p.run;
    if p.cont != 0 {
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
    if f.ino == 0 || f.i_mode & S_IFMT != S_IFREG {
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
    run.fdgen = p.fdgen;
    run.pid_tgid = pid_tgid;
    claim(run, tid);
    atomic::add(&mut run.word, add);
    if !list(run, tid) {
        run.flush();
    }
    true
}
