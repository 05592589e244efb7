//! Maps shared with userspace (names are looked up there), and the small
//! helpers on them every probe uses.

use auditor_common::STAT_COUNT;

use crate::atomic;
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
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

/// Slot 0: `sys_exit_report`, the part of `sys_exit` that writes records;
/// slot 1: `sys_enter_stack`, the part of `sys_enter` that takes stacks.
#[map]
pub static TAILS: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// Records to userspace. Size is overridden by userspace at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Per-CPU counters (`auditor_common::STAT_*`).
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Slot 0: next sequence number.
#[map]
pub static SEQ: Array<u64> = Array::with_max_entries(1, 0);

/// Threads that can hold a run of writes at once; later writers are
/// reported call by call until a slot frees up (every flush frees the slots
/// it empties).
pub const MAX_RUNS: u32 = 16;

/// Slot 0: fd generation, bumped whenever an fd of a traced process may come
/// to name another file (close, dup2, dup3, close_range, exec): a thread may
/// reuse what it learnt about an fd while it is unchanged. Slot 1: entries
/// in `PENDING` (thread.rs), so the exit probe looks there only when there
/// are some. Slot 2: stacks sent (stack.rs), whose ids follow it.
#[map]
pub static COUNTERS: Array<u64> = Array::with_max_entries(3, 0);
pub const FD_GENERATION: u32 = 0;
pub const OVERFLOW: u32 = 1;
pub const STACK_IDS: u32 = 2;

/// Threads whose runs may hold writes not yet reported: `listing << 32 |
/// tid` (0 = free slot; see `Run::listing`).
/// Every record flushes these runs first, which keeps the stream in order.
#[map]
pub static RUNLIST: Array<u64> = Array::with_max_entries(MAX_RUNS, 0);

/// Which thread last started a run on a file (key: dev, pad, ino). A
/// writer starting on a file another thread is running on flushes that run
/// first, so turns taken by two writers stay visible.
#[map]
pub static OWNERS: LruHashMap<[u64; 2], u32> = LruHashMap::with_max_entries(8192, 0);

pub fn count(stat: u32) {
    if let Some(p) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Global order of records; a gap in userspace means a lost record.
pub fn next_seq() -> u64 {
    SEQ.get_ptr_mut(0).map_or(0, |p| atomic::add(p, 1))
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
