//! Maps shared with userspace (names are looked up there).

use auditor_common::{FileIdent, STAT_ARGS_FULL, STAT_COUNT};

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

/// Per traced thread, at index `tid & slot_mask()` and tagged with the tid:
/// the syscall it is inside, if any (arguments saved at entry, read at
/// exit), and its run of writes. An array, because an array lookup is a few
/// instructions where a hash lookup is a call: the exit probe runs on every
/// syscall of every process. The entry lives as long as the thread.
#[map]
pub static SLOTS: Array<Pending> = Array::with_max_entries(32768, 0);

/// Threads whose array slot is held by another live thread (only possible
/// when pid_max exceeds the array).
#[map]
pub static PENDING: HashMap<u32, Pending> = HashMap::with_max_entries(32768, 0);

/// Slot 0: fd generation, bumped whenever an fd of a traced process may come
/// to name another file (close, dup2, dup3, close_range, exec): a thread may
/// reuse what it learnt about an fd while it is unchanged. Slot 1: entries
/// in `PENDING`, so the exit probe looks there only when there are some.
#[map]
pub static COUNTERS: Array<u64> = Array::with_max_entries(2, 0);

/// `SLOTS` size - 1 (a power of two less one); userspace sizes both to the
/// machine's pid_max (at most 32768 slots).
#[unsafe(no_mangle)]
pub(crate) static SLOT_MASK: u32 = 32767;

#[inline(always)]
fn slot_index(tid: u32) -> u32 {
    // SAFETY: an aligned read of our own global, volatile so the compiled-in
    // value is not folded (userspace rewrites it at load time).
    tid & unsafe { core::ptr::read_volatile(&SLOT_MASK) }
}
const FD_GENERATION: u32 = 0;
const OVERFLOW: u32 = 1;

/// Slot 0: `sys_exit_report`, the part of `sys_exit` that writes records.
#[map]
pub static TAILS: ProgramArray = ProgramArray::with_max_entries(1, 0);

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

/// A syscall in flight (`nr != IDLE`), and the thread's run of writes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// Owner of the entry (0: free).
    pub tid: u32,
    pub nr: u32,
    /// Set at entry: this write goes to the file of the thread's run, so
    /// its file was not looked up again.
    pub cont: u32,
    pub enter_ns: u64,
    pub args: [u64; 6],
    pub file: FileIdent,
    /// Fd generation seen at entry.
    pub fdgen: u64,
    pub run: crate::runs::Run,
}

/// The current thread's entry, if it has one.
#[inline(always)]
pub fn slot_of(tid: u32) -> Option<*mut Pending> {
    if let Some(s) = SLOTS.get_ptr_mut(slot_index(tid))
        // SAFETY: a field of a live map value.
        && atomic::load(unsafe { &(*s).tid }) == tid
    {
        return Some(s);
    }
    match COUNTERS.get_ptr(OVERFLOW) {
        Some(n) if atomic::load(n) != 0 => PENDING.get_ptr_mut(tid),
        _ => None,
    }
}

/// The entry of a traced thread entering a syscall, made on its first one;
/// None for untraced threads (or when no entry can be had, counted).
#[inline(always)]
pub fn slot_for(tid: u32, tgid: u32) -> Option<*mut Pending> {
    if let Some(s) = slot_of(tid) {
        return Some(s);
    }
    if !is_traced(tgid) {
        return None;
    }
    if let Some(s) = SLOTS.get_ptr_mut(slot_index(tid)) {
        // SAFETY: a field of a live map value.
        let won = atomic::cas(unsafe { &mut (*s).tid }, 0, tid);
        if won {
            // SAFETY: ours now; nothing else reads a run before it is listed.
            unsafe {
                (*s).nr = IDLE;
                (*s).cont = 0;
                (*s).run.word = 0;
                (*s).run.ver = 0;
                (*s).run.slot = 0;
            }
            return Some(s);
        }
    }
    if PENDING.insert(tid, crate::syscalls::BLANK, 0).is_err() {
        count(STAT_ARGS_FULL);
        return None;
    }
    let p = PENDING.get_ptr_mut(tid)?;
    // SAFETY: just inserted, ours.
    unsafe { (*p).tid = tid };
    if let Some(n) = COUNTERS.get_ptr_mut(OVERFLOW) {
        atomic::add(n, 1);
    }
    Some(p)
}

/// Gives up a thread's entry when it exits.
#[inline(always)]
pub fn release(tid: u32, p: *mut Pending) {
    // SAFETY: the exiting thread's own entry.
    unsafe {
        crate::runs::finish(&mut (*p).run, tid);
        (*p).nr = IDLE;
    }
    if let Some(s) = SLOTS.get_ptr_mut(slot_index(tid))
        && core::ptr::eq(s, p)
    {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&mut (*p).tid, 0) };
        return;
    }
    if PENDING.remove(tid).is_ok()
        && let Some(n) = COUNTERS.get_ptr_mut(OVERFLOW)
    {
        atomic::add(n, u64::MAX);
    }
}

/// The current fd generation.
#[inline(always)]
pub fn fd_generation() -> u64 {
    match COUNTERS.get_ptr(FD_GENERATION) {
        Some(g) => atomic::load(g),
        None => 0,
    }
}

/// Marks that an fd of a traced process may now name another file.
#[inline(always)]
pub fn bump_fd_generation() {
    if let Some(g) = COUNTERS.get_ptr_mut(FD_GENERATION) {
        atomic::add(g, 1);
    }
}

/// Threads whose runs may hold writes not yet reported (0 = free slot).
/// Every record flushes these runs first, which keeps the stream in order.
#[map]
pub static RUNLIST: Array<u32> = Array::with_max_entries(crate::runs::MAX_RUNS, 0);

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
