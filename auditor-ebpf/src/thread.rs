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
    /// Where a positioned write must start to continue the thread's run
    /// (the end of its last write); only the owner reads or writes it.
    pub next_off: u64,
    /// The thread's last reported read-only open, which its close and
    /// identical reopens may join into a run (visits.rs).
    pub visit: Visit,
    pub run: Run,
}

/// A read-only open of a regular file that was reported, seen from its
/// thread: its close, and reopens just like it, are counted in a run of
/// visits instead of reported one by one. Only the owner reads or writes
/// it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Visit {
    pub file: FileIdent,
    /// Fd generation when the fd was (re)opened: while it is unchanged,
    /// the fd still names this file.
    pub fdgen: u64,
    pub fd: u32,
    /// The open call, its flags, mode and dirfd as it made it.
    pub nr: u32,
    pub flags: u32,
    pub mode: u32,
    pub dirfd: u32,
    /// `visits::NONE`, `ARMED`, `CLOSED` or `REOPENED`.
    pub state: u32,
    /// The run's version that counts the visits (`CLOSED`, `OPEN`).
    pub ver: u32,
    pub _pad: u32,
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
                (*s).visit.state = 0;
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
    // By reference: a copy of the entry would not fit the 512-byte stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = PENDING.insert(tid, &BLANK, 0);
    if inserted.is_err() {
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
    /// Offset of the run's first write, for positioned writes.
    pub off: u64,
    /// A run of visits: the open call, its flags, mode and dirfd.
    pub open: [u32; 4],
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
    off: 0,
    open: [0; 4],
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
    next_off: 0,
    visit: Visit {
        file: BLANK_INFO.file,
        fdgen: 0,
        fd: 0,
        nr: 0,
        flags: 0,
        mode: 0,
        dirfd: 0,
        state: 0,
        ver: 0,
        _pad: 0,
    },
    run: BLANK_RUN,
};
