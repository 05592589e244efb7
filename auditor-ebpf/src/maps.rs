//! Maps shared with userspace (names are looked up there).

use auditor_common::{FileIdent, STAT_COUNT};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};

/// Tgids being traced. Userspace seeds it; forks add children.
#[map]
pub static TRACED: HashMap<u32, u32> = HashMap::with_max_entries(32768, 0);

/// Process names (`comm`, zero-padded) whose later execs start tracing:
/// `attach --comm NAME --follow-new`. Checked only at exec, so it costs
/// nothing on the syscall path.
#[map]
pub static WATCH_COMMS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(64, 0);

/// cgroup v2 ids whose processes (at any depth below) start tracing when
/// they exec: `attach --cgroup PATH --follow-new`.
#[map]
pub static WATCH_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(64, 0);

/// Per traced thread: the syscall it is inside, if any (arguments saved at
/// entry, read at exit). The entry lives as long as the thread, so a
/// syscall costs two lookups instead of an insert, a lookup and a delete.
#[map]
pub static PENDING: HashMap<u32, Pending> = HashMap::with_max_entries(32768, 0);

/// Records to userspace. Size is overridden by userspace at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Per-CPU counters (`auditor_common::STAT_*`).
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Slot 0: next sequence number.
#[map]
pub static SEQ: Array<u64> = Array::with_max_entries(1, 0);

/// `Pending::nr` of a thread that is not inside a traced syscall.
pub const IDLE: u32 = u32::MAX;

/// A syscall in flight (`nr != IDLE`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub nr: u32,
    pub _pad: u32,
    pub enter_ns: u64,
    pub args: [u64; 6],
    pub file: FileIdent,
}

pub fn count(stat: u32) {
    if let Some(p) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Global order of records; a gap in userspace means a lost record.
/// (`AtomicU64::fetch_add` is not offered for the BPF target, the intrinsic is.)
pub fn next_seq() -> u64 {
    match SEQ.get_ptr_mut(0) {
        // SAFETY: the pointer is to a live map value; the add is atomic.
        Some(p) => unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::SeqCst }>(
                p, 1,
            )
        },
        None => 0,
    }
}

pub fn is_traced(tgid: u32) -> bool {
    TRACED.get_ptr(tgid).is_some()
}

/// Whether the current task, which is not traced, just exec'd into a
/// watched name or runs in a watched cgroup (or below one). Container
/// runtimes move a process into its cgroup before exec, so exec is the
/// moment both are settled.
pub fn exec_is_watched() -> bool {
    if let Ok(comm) = aya_ebpf::helpers::bpf_get_current_comm()
        && WATCH_COMMS.get_ptr(comm).is_some()
    {
        return true;
    }
    // cgroup v2 nesting is shallow in practice; eight levels cover systemd
    // slices plus container scopes.
    for level in 0..8 {
        // SAFETY: helper with a plain integer argument.
        let id = unsafe { aya_ebpf::helpers::bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        if WATCH_CGROUPS.get_ptr(id).is_some() {
            return true;
        }
    }
    false
}

/// Flags for `submit`: wake the reader only once a batch has built up.
/// A wakeup per record cost more than the probes themselves on write-heavy
/// programs; the reader also polls every 50 ms, so nothing waits long.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    const BATCH_BYTES: u64 = 256 << 10;
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= BATCH_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}
