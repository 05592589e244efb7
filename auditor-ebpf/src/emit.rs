//! Records of everything but syscalls (those are written by the tail of
//! `sys_exit`): the runs of writes in flight go first, so a write is always
//! reported before whatever came after it.

use auditor_common::Kind;

use crate::ring::{Record, emit_raw};

/// Reports the runs of writes in flight, then writes a record (see
/// [`emit_raw`]).
#[inline(always)]
pub fn emit<T: Record>(kind: Kind, pid_tgid: u64, body: impl FnOnce(&mut T)) {
    crate::runs::flush_all();
    emit_raw(kind, pid_tgid, body);
}
