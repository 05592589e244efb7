//! Writing records into the ring buffer: reserve (which fixes the record's
//! place in the stream), header, body, submit. The ring keeps reservation
//! order, so a record reserved first is read first.

use auditor_common::{Header, Kind, STAT_DROPPED};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    maps::ring_buf::RingBufEntry,
};

use crate::maps::{EVENTS, count, next_seq, wakeup_flags};

/// Records whose first field is a [`Header`].
///
/// # Safety
/// Implementors must be `#[repr(C)]` with a `Header` at offset 0.
pub unsafe trait Record: 'static {}

// SAFETY: each is #[repr(C)] with `header` (or `sys.header`) first.
unsafe impl Record for auditor_common::SyscallRecord {}
unsafe impl Record for auditor_common::PathRecord {}
unsafe impl Record for auditor_common::ForkRecord {}
unsafe impl Record for auditor_common::ExitRecord {}
unsafe impl Record for auditor_common::SignalRecord {}
unsafe impl Record for auditor_common::StackRecord {}

/// Takes the next place in the stream for a `T` and fills its header; the
/// caller writes the body and submits (or discards) it. None when the ring
/// is full (the caller counts what that loses).
#[inline(always)]
pub fn reserve<T: Record>(kind: Kind, pid_tgid: u64) -> Option<RingBufEntry<T>> {
    let mut entry = EVENTS.reserve::<T>(0)?;
    // SAFETY: `Record` guarantees a Header at offset 0 of a repr(C) T; the
    // reservation is exactly size_of::<T>() bytes.
    unsafe {
        fill_header(
            &mut *(entry.as_mut_ptr() as *mut Header),
            kind,
            core::mem::size_of::<T>(),
            pid_tgid,
        );
    }
    Some(entry)
}

/// Hands a filled record to userspace.
#[inline(always)]
pub fn submit<T>(entry: RingBufEntry<T>) {
    entry.submit(wakeup_flags());
}

/// Hands a filled record to userspace and wakes it now: a stack, whose
/// signature the probes wait for before they stop copying that place.
#[inline(always)]
pub fn submit_now<T>(entry: RingBufEntry<T>) {
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    entry.submit(BPF_RB_FORCE_WAKEUP);
}

/// Writes a record: `body` fills in what follows the header (which is
/// already set, so it may read the sequence number). A full ring buffer is
/// counted per CPU, never waited on.
#[inline(always)]
pub fn emit_raw<T: Record>(kind: Kind, pid_tgid: u64, body: impl FnOnce(&mut T)) {
    let Some(mut entry) = reserve::<T>(kind, pid_tgid) else {
        count(STAT_DROPPED);
        return;
    };
    // SAFETY: a reservation of exactly one T.
    unsafe { body(&mut *entry.as_mut_ptr()) };
    submit(entry);
}

#[inline(always)]
fn fill_header(h: &mut Header, kind: Kind, size: usize, pid_tgid: u64) {
    h.kind = kind as u16;
    h.flags = 0;
    h.size = size as u32;
    h.seq = next_seq();
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
    h.tgid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}
