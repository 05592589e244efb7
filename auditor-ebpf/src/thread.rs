//! A traced thread's entry: the syscall it is inside (arguments saved at
//! entry, read at exit) and its run of writes, whose counters runs.rs keeps.
//! Entries live in an array indexed by tid, with a hash map for threads
//! whose array entry another live thread holds.

use auditor_common::{FileIdent, STAT_ARGS_FULL};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};

use crate::{
    atomic,
    maps::{COUNTERS, FD_GENERATION, OVERFLOW, count, is_traced},
};

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
    /// Id of the user stack taken at entry (0: none; see stack.rs).
    pub stack: u32,
    pub enter_ns: u64,
    pub args: [u64; 6],
    pub file: FileIdent,
    /// Fd generation seen at entry.
    pub fdgen: u64,
    pub run: Run,
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
                (*s).stack = 0;
                (*s).run.word = 0;
                (*s).run.ver = 0;
                (*s).run.slot = 0;
                // Listing numbers of a new thread start away from those a
                // thread that had its tid may have left in `RUNLIST`.
                (*s).run.listing = aya_ebpf::helpers::bpf_ktime_get_ns() as u32;
            }
            return Some(s);
        }
    }
    if PENDING.insert(tid, BLANK, 0).is_err() {
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

/// Gives up a thread's entry when it exits (its run reported first, see
/// `runs::finish`).
#[inline(always)]
pub fn release(tid: u32, p: *mut Pending) {
    // SAFETY: the exiting thread's own entry.
    unsafe { (*p).nr = IDLE };
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

/// A thread's run of writes (inside its `Pending` entry).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Run {
    pub word: u64,
    /// The owner's run counter; its low three bits are in `word`.
    pub ver: u32,
    /// `RUNLIST` index + 1 the owner last took (0: none).
    pub slot: u32,
    /// Number of the owner's current listing: a `RUNLIST` entry holds it
    /// beside the tid, so a flush can tell a stale entry from the current
    /// one when the owner lists itself again in the same slot.
    pub listing: u32,
    pub _pad: u32,
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
    /// Stack of the run's first write.
    pub stack: u32,
    pub _pad: u32,
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
    stack: 0,
    _pad: 0,
};

pub const BLANK_RUN: Run = Run {
    word: 0,
    ver: 0,
    slot: 0,
    listing: 0,
    _pad: 0,
    fdgen: 0,
    pid_tgid: 0,
    info: [BLANK_INFO; 2],
};

/// A thread's first entry: not in a syscall, no run.
pub static BLANK: Pending = Pending {
    tid: 0,
    nr: IDLE,
    cont: 0,
    stack: 0,
    enter_ns: 0,
    args: [0; 6],
    file: BLANK_INFO.file,
    fdgen: 0,
    run: BLANK_RUN,
};
