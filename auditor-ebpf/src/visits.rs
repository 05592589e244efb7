//! Runs of visits: a thread that opens a regular file read-only, closes
//! it, and opens it again just the same (same call, path, flags, mode and
//! dirfd, the same fd back, the file unchanged: same inode, size, flags)
//! and closes it again, over and over, is reported as the first open, as
//! usual, then one record: its closes and the reopens between them. A
//! program polling a file, or one flooding the tracer with opens, then
//! costs no ring-buffer record per call, and the analyzer's state after
//! the record is what the calls one by one would have left: an identical
//! reopen and close change nothing once the first pair was seen.
//!
//! The visits are counted in the thread's run (runs.rs), so they are
//! flushed before any other record of any traced task, by the same
//! protocol, and a record always starts with a close: the owner adds to
//! the run only while it is still listed, in one compare-and-swap, so a
//! flush in between makes its call reported on its own instead, with its
//! path.

use auditor_common::{
    FileIdent, PATH_MAX,
    linux::{
        FMODE_CREATED,
        mode::{S_IFMT, S_IFREG},
        open::{O_ACCMODE, O_CREAT, O_TRUNC},
    },
    nr::{CLOSE, OPEN},
};
use aya_ebpf::{
    helpers::bpf_probe_read_user_str_bytes,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};

use crate::{
    atomic::{self, cas64, load},
    kernel::ident,
    runs::{
        BYTES_FIELD, BYTES_MAX, COUNT_MAX, COUNT_SHIFT, LISTED, VER_SHIFT, claim, count_of, list,
        unlist,
    },
    thread::{Pending, fd_generation},
};

/// 1 (the default): visits and runs of positioned writes are counted in
/// the kernel. Userspace sets 0 (`AUDITOR_AGGREGATE=0`) to have them
/// reported call by call, so tests can compare the analyzer's results on
/// both paths. Read-only at load time: the checker drops the dead side.
#[unsafe(no_mangle)]
static AGGREGATE: u32 = 1;

/// Whether calls beyond runs of plain writes are counted in the kernel.
#[inline(always)]
pub fn aggregate() -> bool {
    // SAFETY: an aligned read of our own global, volatile so the compiled-in
    // value is not folded (userspace rewrites it at load time).
    unsafe { core::ptr::read_volatile(&AGGREGATE) != 0 }
}

/// `Visit::state`: nothing to join.
pub const NONE: u32 = 0;
/// A reported open whose fd is still open: its close starts a run.
pub const ARMED: u32 = 1;
/// In a run, the fd closed: an identical reopen joins it.
pub const CLOSED: u32 = 2;
/// In a run, the fd reopened: its close joins it.
pub const REOPENED: u32 = 3;

/// `Pending::cont` of a close that may join its thread's visits.
pub const VISIT_CLOSE: u32 = 2;
/// `Pending::cont` of an open that may be a reopen of its thread's visit.
pub const REOPEN: u32 = 3;

/// The path of each thread's last reported read-only open, to compare a
/// reopen's with (only that thread reads or writes its entry). Least
/// recently used entries go: their threads then just report every call.
#[map]
static VISIT_PATHS: LruHashMap<u32, [u8; PATH_MAX]> = LruHashMap::with_max_entries(4096, 0);

/// Where a reopen's path is read to be compared.
#[map]
static SCRATCH: PerCpuArray<[u8; PATH_MAX]> = PerCpuArray::with_max_entries(1, 0);

/// Flags (the open's `flags` argument) of an open that only reads.
#[inline(always)]
fn read_only(flags: u32) -> bool {
    flags & O_ACCMODE == 0 && flags & (O_CREAT | O_TRUNC) == 0
}

/// The open's (dirfd, path pointer, flags, mode); `open(2)` has no dirfd.
#[inline(always)]
fn open_args(nr: u32, a: &[u64; 6]) -> (u32, u64, u32, u32) {
    if nr == OPEN {
        (0, a[0], a[1] as u32, a[2] as u32)
    } else {
        (a[0] as u32, a[1], a[2] as u32, a[3] as u32)
    }
}

#[inline(always)]
fn same_file(a: &FileIdent, b: &FileIdent) -> bool {
    a.ino == b.ino
        && a.dev == b.dev
        && a.size == b.size
        && a.f_flags == b.f_flags
        && a.f_mode == b.f_mode
        && a.i_mode == b.i_mode
        && a.magic == b.magic
}

/// After a reported open: makes it the thread's visit when it is a
/// read-only open of an existing regular file, keeping its path (`path`,
/// as the record holds it) to compare reopens with.
#[inline(always)]
pub fn arm(p: &mut Pending, tid: u32, ret: i64, file: &FileIdent, path: &[u8; PATH_MAX]) {
    p.visit.state = NONE;
    let (dirfd, _, flags, mode) = open_args(p.nr, &p.args);
    if !aggregate()
        || ret < 0
        || !read_only(flags)
        || file.ino == 0
        || u32::from(file.i_mode) & S_IFMT != S_IFREG
        || file.f_mode & FMODE_CREATED != 0
        || path[0] == 0
        || VISIT_PATHS.insert(tid, path, 0).is_err()
    {
        return;
    }
    let v = &mut p.visit;
    v.file = *file;
    v.fdgen = fd_generation();
    v.fd = ret as u32;
    v.nr = p.nr;
    v.flags = flags;
    v.mode = mode;
    v.dirfd = dirfd;
    v.state = ARMED;
}

/// At a close's entry: whether it closes the thread's visit (its fd,
/// unchanged since it was opened). Then its file is the visit's, and need
/// not be looked up.
#[inline(always)]
pub fn closes_visit(p: &mut Pending) -> bool {
    let v = &p.visit;
    if matches!(v.state, ARMED | REOPENED) && p.args[0] == v.fd as u64 && fd_generation() == v.fdgen
    {
        p.file = v.file;
        return true;
    }
    false
}

/// Adds `add` to the run's word if it still counts this thread's visits
/// (listed, of version `ver`) and has room; false when it does not (the
/// call is then reported on its own).
#[inline(always)]
fn add_if_current(word: *mut u64, ver: u32, add: u64) -> bool {
    for _ in 0..4 {
        let old = load(word);
        if old & LISTED == 0
            || (old >> VER_SHIFT) & 7 != u64::from(ver) & 7
            || count_of(old) >= COUNT_MAX
            || old & BYTES_FIELD >= BYTES_MAX
        {
            return false;
        }
        if cas64(word, old, old + add) {
            return true;
        }
    }
    false
}

/// At a successful close's exit (one [`closes_visit`] said yes to): counts
/// it into the thread's visits, starting a run after the reported open.
/// False when it must be reported on its own.
#[inline(always)]
pub fn absorb_close(p: &mut Pending, pid_tgid: u64) -> bool {
    let tid = pid_tgid as u32;
    match p.visit.state {
        REOPENED => {
            if add_if_current(&mut p.run.word, p.visit.ver, 1 << COUNT_SHIFT) {
                p.visit.state = CLOSED;
                return true;
            }
            p.visit.state = NONE;
            false
        }
        ARMED => {
            // A new run: as a run of writes starts (runs.rs).
            let run = &mut p.run;
            run.flush();
            unlist(run, tid);
            run.ver = run.ver.wrapping_add(1);
            atomic::swap(&mut run.word, ((run.ver as u64) & 7) << VER_SHIFT);
            let v = p.visit;
            let info = run.current();
            info.file = v.file;
            info.first_ns = p.enter_ns;
            info.flushed = 0;
            info.comm = aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]);
            info.nr = CLOSE;
            info.fd = v.fd;
            info.off = 0;
            info.open = [v.nr, v.flags, v.mode, v.dirfd];
            run.fdgen = fd_generation();
            run.pid_tgid = pid_tgid;
            claim(run, tid);
            atomic::add(&mut run.word, 1 << COUNT_SHIFT);
            if list(run, tid) {
                p.visit.ver = run.ver;
                p.visit.state = CLOSED;
            } else {
                // No room in the list: reported at once, as one close.
                run.flush();
                p.visit.state = NONE;
            }
            true
        }
        _ => false,
    }
}

/// At an open's entry: whether it may be an identical reopen of the
/// thread's closed visit (the rest is checked at exit).
#[inline(always)]
pub fn may_reopen(p: &Pending, nr: u32) -> bool {
    let v = &p.visit;
    if v.state != CLOSED || nr != v.nr {
        return false;
    }
    let (dirfd, _, flags, mode) = open_args(nr, &p.args);
    dirfd == v.dirfd && flags == v.flags && mode == v.mode
}

/// At a successful open's exit: whether it is an identical reopen of the
/// thread's closed visit, counted into its run (then nothing is reported).
#[inline(always)]
pub fn absorb_reopen(p: &mut Pending, tid: u32, ret: i64) -> bool {
    let v = p.visit;
    // The call, dirfd, flags and mode were compared at entry.
    if v.state != CLOSED || ret != i64::from(v.fd) {
        return false;
    }
    let (_, path, _, _) = open_args(p.nr, &p.args);
    let mut file = FileIdent::default();
    ident(ret as u64, &mut file);
    if !same_file(&file, &v.file) || !same_path(path, tid) {
        return false;
    }
    if !add_if_current(&mut p.run.word, v.ver, 1) {
        p.visit.state = NONE;
        return false;
    }
    p.visit.state = REOPENED;
    p.visit.fdgen = fd_generation();
    true
}

/// Whether the user string at `user` is the path kept for thread `tid`:
/// every byte up to and with its NUL (a path cut at `PATH_MAX` never is).
#[inline(never)]
fn same_path(user: u64, tid: u32) -> bool {
    let (Some(kept), Some(buf)) = (VISIT_PATHS.get_ptr(tid), SCRATCH.get_ptr_mut(0)) else {
        return false;
    };
    // SAFETY: a per-CPU scratch value, ours while this program runs; the
    // read is fault-checked.
    let n = match unsafe { bpf_probe_read_user_str_bytes(user as *const u8, &mut *buf) } {
        Ok(s) => s.len(),
        Err(_) => return false,
    };
    if n >= PATH_MAX - 1 {
        return false;
    }
    // Whole words before the NUL's, then the NUL's word up to it.
    let (kept, buf) = (kept as *const u64, buf as *const u64);
    let last = n / 8;
    for i in 0..PATH_MAX / 8 {
        // SAFETY: both are PATH_MAX-byte, 8-aligned map values; i < 64.
        let (a, b) = unsafe { (*kept.add(i), *buf.add(i)) };
        if i < last {
            if a != b {
                return false;
            }
        } else {
            let bytes = n % 8 + 1;
            let mask = if bytes == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * bytes)) - 1
            };
            return a & mask == b & mask;
        }
    }
    false
}
