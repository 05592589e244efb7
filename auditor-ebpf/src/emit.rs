//! Writing records into the ring buffer: reserve, header, body, submit.

use auditor_common::{Header, Kind, STAT_DROPPED};
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_ktime_get_ns};

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

/// Reports the runs of writes in flight, then writes a record: reserves a
/// `T`, fills its header, lets `body` write the rest (the header is already
/// set, so `body` may read its sequence number), and submits it.
#[inline(always)]
pub fn emit<T: Record>(kind: Kind, pid_tgid: u64, body: impl FnOnce(&mut T)) {
    crate::runs::flush_all();
    emit_raw(kind, pid_tgid, body);
}

/// Writes a record without flushing runs first (for the runs themselves).
/// A full ring buffer is counted per CPU, never waited on.
#[inline(always)]
pub fn emit_raw<T: Record>(kind: Kind, pid_tgid: u64, body: impl FnOnce(&mut T)) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(STAT_DROPPED);
        return;
    };
    // SAFETY: `Record` guarantees a Header at offset 0 of a repr(C) T; the
    // reservation is exactly size_of::<T>() bytes.
    unsafe {
        let r = &mut *entry.as_mut_ptr();
        fill_header(
            &mut *(r as *mut T as *mut Header),
            kind,
            core::mem::size_of::<T>(),
            pid_tgid,
        );
        body(r);
    }
    entry.submit(wakeup_flags());
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
