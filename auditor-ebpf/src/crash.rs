//! Crash points for `auditor crashtest`: freeze a traced process right after
//! its Nth rename (or fsync), before it runs another instruction, so the
//! disk holds exactly what the program had done at that call.

use auditor_common::{
    linux::SIGSTOP,
    nr::{FDATASYNC, FSYNC, RENAME, RENAMEAT, RENAMEAT2},
};
use aya_ebpf::{helpers::bpf_send_signal, macros::map, maps::Array};

/// Slot 0: armed class (0 none, 1 renames, 2 fsyncs); slot 1: ordinal of the
/// call to stop at (1-based); slot 2: successful calls of that class so far;
/// slot 3: sequence number + 1 of the record of the call that stopped
/// (0 until then), which is how userspace recognises that record.
#[map]
pub static CRASH: Array<u64> = Array::with_max_entries(4, 0);

/// Set by userspace for `auditor crashtest` only. Read-only at load time,
/// so for every other mode the checker drops the code below as dead and
/// spends no start-up time on it.
#[unsafe(no_mangle)]
static CRASH_POINTS: u32 = 0;

const CLASS_RENAME: u64 = 1;
const CLASS_FSYNC: u64 = 2;

/// Called at syscall exit of a traced task, before its record is submitted.
/// Only successful renames and fsyncs count: a failed call changes nothing
/// on disk worth cutting the power after.
#[inline(always)]
pub fn check(nr: u32, ret: i64, seq: u64) {
    // SAFETY: an aligned read of our own global, volatile so the compiled-in
    // value is not folded (userspace rewrites it at load time).
    if unsafe { core::ptr::read_volatile(&CRASH_POINTS) } == 0 {
        return;
    }
    let class = match nr {
        RENAME | RENAMEAT | RENAMEAT2 => CLASS_RENAME,
        FSYNC | FDATASYNC => CLASS_FSYNC,
        _ => return,
    };
    if ret != 0 {
        return;
    }
    let (Some(armed), Some(target), Some(counter), Some(hit)) = (
        CRASH.get_ptr_mut(0),
        CRASH.get_ptr(1),
        CRASH.get_ptr_mut(2),
        CRASH.get_ptr_mut(3),
    ) else {
        return;
    };
    // SAFETY: live map values; the add is atomic, so concurrent callers
    // each get their own ordinal and exactly one of them stops.
    unsafe {
        if *armed != class {
            return;
        }
        let n = crate::atomic::add(counter, 1) + 1;
        if n == *target {
            *hit = seq + 1;
            // Stops the whole process on its way back to user mode.
            bpf_send_signal(SIGSTOP);
            // Later calls of this class, by any process, are past the point.
            *armed = 0;
        }
    }
}
