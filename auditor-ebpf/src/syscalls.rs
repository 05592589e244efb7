//! Syscall probes on the raw `sys_enter` / `sys_exit` tracepoints. Two
//! attachments instead of one per syscall: detaching a perf tracepoint waits
//! for an RCU grace period under a global mutex (~40 ms each, seconds for
//! eighty), while raw tracepoints detach at once. Untraced processes cost
//! one map lookup per syscall; traced ones skip uninteresting syscalls by
//! number before touching anything else.

use auditor_common::{
    FLAG_PATH_TRUNCATED, FLAG_PATH2_TRUNCATED, FileIdent, Kind, PATH_MAX, PathRecord, REGS_WINDOW,
    STAT_DROPPED, SyscallRecord,
    linux::open::O_APPEND,
    nr::{
        CLOSE, CLOSE_RANGE, COPY_FILE_RANGE, CREAT, DUP2, DUP3, EXIT_GROUP, FALLOCATE, FDATASYNC,
        FSYNC, FTRUNCATE, LINK, LINKAT, MKDIR, MKDIRAT, MMAP, OPEN, OPENAT, OPENAT2, PWRITE64,
        PWRITEV, PWRITEV2, RENAME, RENAMEAT, RENAMEAT2, SENDFILE, SYNC_FILE_RANGE, TRUNCATE,
        UNLINK, UNLINKAT, WRITE, WRITEV, fd_args, is_traced_syscall, path_args, returns_fd,
        stamps_view,
    },
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use crate::{
    kernel::{Window, ident, off, read, view_stamp},
    maps::{TAILS, count},
    ring::emit_raw,
    runs, stack,
    thread::{IDLE, Pending, bump_fd_generation, fd_generation, slot_for, slot_of},
    visits,
};

/// raw `sys_enter(struct pt_regs *regs, long id)`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    if empty() {
        return 0;
    }
    let _ = try_sys_enter(&ctx);
    0
}

/// raw `sys_exit(struct pt_regs *regs, long ret)`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    if empty() {
        return 0;
    }
    let _ = try_sys_exit(&ctx);
    0
}

/// Set by userspace for `cargo xtask bench` only: both syscall probes
/// return at once, which measures what having them attached costs by
/// itself. Read-only at load time, so the checker drops the dead branch.
#[unsafe(no_mangle)]
static EMPTY_PROBES: u32 = 0;

#[inline(always)]
fn empty() -> bool {
    // SAFETY: an aligned read of our own global, volatile so the compiled-in
    // value is not folded (userspace rewrites it at load time).
    unsafe { core::ptr::read_volatile(&EMPTY_PROBES) != 0 }
}

fn try_sys_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    // The number first: most syscalls on a host (reads, polls, futexes) are
    // not ours, and comparing costs less than the traced-tgid lookup.
    let id: u64 = ctx.arg(1);
    let nr = id as u32;
    if id > u32::MAX as u64 || !is_traced_syscall(nr) {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(p) = slot_for(pid_tgid as u32, (pid_tgid >> 32) as u32) else {
        return Ok(());
    };
    // SAFETY: this thread's own entry; only this thread writes its syscall
    // fields (the run word is changed atomically, see runs.rs).
    let p = unsafe { &mut *p };
    p.nr = IDLE;
    p.stack = 0;
    let regs: *const u8 = ctx.arg(0);
    let mut w: Window<REGS_WINDOW> = Window::new();
    let start = off!(regs_win);
    w.load(regs, start)?;
    p.args[0] = w.get(off!(regs_args[0]), start);
    p.args[1] = w.get(off!(regs_args[1]), start);
    p.args[2] = w.get(off!(regs_args[2]), start);
    p.args[3] = w.get(off!(regs_args[3]), start);
    p.args[4] = w.get(off!(regs_args[4]), start);
    p.args[5] = w.get(off!(regs_args[5]), start);
    if runs::runs_on(nr) {
        // Only writes start or continue runs, and only they need this.
        p.fdgen = fd_generation();
        if runs::continues(p, nr, p.args[0], p.fdgen) {
            // The file is the run's: no lookup, and no clock (a run keeps
            // its first write's entry time).
            p.cont = 1;
            p.nr = nr;
            return Ok(());
        }
    }
    p.cont = 0;
    if nr == CLOSE && visits::closes_visit(p) {
        // The visit's file, known: no lookup, and no clock (a close
        // reported after all has its end stand in for its entry).
        p.cont = visits::VISIT_CLOSE;
        bump_fd_generation();
        p.nr = nr;
        return Ok(());
    }
    if matches!(nr, CLOSE | CLOSE_RANGE | DUP2 | DUP3) {
        // Before the call acts: a write entered after this looks again.
        bump_fd_generation();
    }
    if nr == OPENAT2 {
        // openat2 passes flags and mode in a user struct open_how
        // { u64 flags; u64 mode; u64 resolve; }: copy them into the argument
        // slots openat uses, so userspace decodes both the same way.
        let how = p.args[2] as *const u64;
        p.args[2] = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
        p.args[3] = unsafe { bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
    }
    if visits::may_reopen(p, nr) {
        // Likely counted at exit: no clock now (as above).
        p.cont = visits::REOPEN;
        p.file = FileIdent::default();
        p.nr = nr;
        return Ok(());
    }
    p.enter_ns = unsafe { bpf_ktime_get_ns() };
    // The main fd is resolved now: a close or dup2 replaces it before exit.
    p.file = FileIdent::default();
    if let (Some(i), _) = fd_args(nr) {
        ident(arg(&p.args, i), &mut p.file);
    }
    // Last, so the syscall shows as in flight only once its entry is whole.
    p.nr = nr;
    if stack::enabled() && wants_stack(nr, &p.args, &p.file) {
        // SAFETY: the context is this program's own; returns only when the
        // tail call fails (the call then has no stack).
        unsafe { TAILS.tail_call(ctx, 1) };
    }
    Ok(())
}

/// The calls a finding can point at: a create or an open for writing, a
/// name changed, a truncate, an fsync (its result is not known yet), the
/// first write of a run to a regular file, the exit.
#[inline(always)]
fn wants_stack(nr: u32, args: &[u64; 6], file: &FileIdent) -> bool {
    use auditor_common::linux::{
        mode::{S_IFMT, S_IFREG},
        open::{O_CREAT, O_RDWR, O_TRUNC, O_WRONLY},
    };
    let writes = (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC) as u64;
    match nr {
        OPEN => args[1] & writes != 0,
        OPENAT | OPENAT2 => args[2] & writes != 0,
        CREAT | RENAME | RENAMEAT | RENAMEAT2 | LINK | LINKAT | UNLINK | UNLINKAT | MKDIR
        | MKDIRAT | TRUNCATE | FTRUNCATE | FSYNC | FDATASYNC | SYNC_FILE_RANGE | FALLOCATE
        | EXIT_GROUP => true,
        WRITE | WRITEV | PWRITE64 | PWRITEV | PWRITEV2 | COPY_FILE_RANGE | SENDFILE => {
            u32::from(file.i_mode) & S_IFMT == S_IFREG
        }
        _ => false,
    }
}

/// Tail of `sys_enter` for calls that take a stack: the user registers the
/// syscall saved, then the stack (see stack.rs), named in the thread's
/// entry for the record written at exit.
#[raw_tracepoint]
pub fn sys_enter_stack(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(p) = slot_of(pid_tgid as u32) else {
        return 0;
    };
    let regs: *const u8 = ctx.arg(0);
    // SAFETY: fault-checked reads of the syscall's saved user registers.
    let (ip, sp, bp) = unsafe {
        (
            read::<u64>(regs, off!(regs_ip)).unwrap_or(0),
            read::<u64>(regs, off!(regs_sp)).unwrap_or(0),
            read::<u64>(regs, off!(regs_bp)).unwrap_or(0),
        )
    };
    if sp == 0 {
        return 0;
    }
    // SAFETY: this thread's own entry (see try_sys_enter).
    let flags = match unsafe { (*p).nr } {
        EXIT_GROUP => auditor_common::STACK_UNSHOWN,
        _ => 0,
    };
    let id = stack::take(&ctx, (pid_tgid >> 32) as u32, ip, sp, bp, flags);
    // SAFETY: this thread's own entry (see try_sys_enter).
    unsafe { (*p).stack = id };
    0
}

fn try_sys_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(pending) = slot_of(tid) else {
        return Ok(());
    };
    // SAFETY: this thread's own entry (see try_sys_enter).
    let p = unsafe { &mut *pending };
    if p.nr == IDLE {
        return Ok(());
    }
    let ret: i64 = ctx.arg(1);
    if runs::runs_on(p.nr) {
        if runs::absorb(p, pid_tgid, ret) {
            p.nr = IDLE;
            return Ok(());
        }
        if p.cont != 0 {
            // Reported on its own after all (failed or short): its own look
            // at the file; its entry time was not taken, its end stands in.
            // The size is now after the write: an append started where it
            // ends minus what it wrote.
            ident(p.args[0], &mut p.file);
            if ret > 0 && p.file.f_flags & O_APPEND != 0 {
                p.file.size = p.file.size.wrapping_sub(ret);
            }
            p.enter_ns = unsafe { bpf_ktime_get_ns() };
        }
    }
    if matches!(p.cont, visits::VISIT_CLOSE | visits::REOPEN) {
        // Entered without the clock: its end stands in.
        p.enter_ns = unsafe { bpf_ktime_get_ns() };
    }
    if p.nr == CLOSE {
        if p.cont == visits::VISIT_CLOSE && ret == 0 && visits::absorb_close(p, pid_tgid) {
            p.nr = IDLE;
            return Ok(());
        }
        if p.args[0] == u64::from(p.visit.fd) {
            p.visit.state = visits::NONE;
        }
    }
    if p.cont == visits::REOPEN && ret >= 0 && visits::absorb_reopen(p, tid, ret) {
        p.nr = IDLE;
        return Ok(());
    }
    if p.nr == MMAP && !shared_writable_file_map(&p.args, ret) {
        p.nr = IDLE;
        return Ok(());
    }
    // The record is written by `sys_exit_report`: flushing runs before it
    // is a loop the load-time checker walks once per way of reaching it,
    // and this program has many; that one has one. Returns only on failure.
    // SAFETY: the context is this program's own.
    unsafe { TAILS.tail_call(ctx, 0) };
    count(STAT_DROPPED);
    p.nr = IDLE;
    Ok(())
}

/// Reports the runs in flight; never attached, run by userspace (through
/// BPF_PROG_TEST_RUN) every 100 ms and before it stops, so a thread that only
/// writes is still seen while it writes, and nothing stays in the kernel.
#[raw_tracepoint]
pub fn flush_runs(_ctx: RawTracePointContext) -> i32 {
    runs::flush_all();
    0
}

/// Tail of `sys_exit` for calls that are reported: runs in flight, then the
/// call's record.
#[raw_tracepoint]
pub fn sys_exit_report(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = slot_of(pid_tgid as u32) else {
        return 0;
    };
    // SAFETY: this thread's own entry (see try_sys_enter).
    let p = unsafe { &mut *pending };
    if p.nr == IDLE {
        return 0;
    }
    runs::flush_all();
    emit_record(pid_tgid, p, ctx.arg(1));
    p.nr = IDLE;
    0
}

/// The record of a finished syscall: plain, or with its paths.
#[inline(always)]
fn emit_record(pid_tgid: u64, p: &mut Pending, ret: i64) {
    let (pa, pb) = path_args(p.nr);
    if pa.is_none() {
        emit_raw(Kind::Syscall, pid_tgid, |r: &mut SyscallRecord| {
            fill_sys(r, p, ret);
            if stamps_view(p.nr) {
                view_stamp(&mut r.file, &mut r.file2);
            }
            crate::crash::check(p.nr, ret, r.header.seq);
        });
        return;
    }
    emit_raw(Kind::Path, pid_tgid, |r: &mut PathRecord| {
        fill_sys(&mut r.sys, p, ret);
        if returns_fd(p.nr) && ret >= 0 {
            ident(ret as u64, &mut r.sys.file);
        }
        r.path[0] = 0;
        r.path2[0] = 0;
        if let Some(i) = pa
            && read_path(arg(&p.args, i), &mut r.path)
        {
            r.sys.header.flags |= FLAG_PATH_TRUNCATED;
        }
        if let Some(i) = pb
            && read_path(arg(&p.args, i), &mut r.path2)
        {
            r.sys.header.flags |= FLAG_PATH2_TRUNCATED;
        }
        if matches!(p.nr, OPEN | OPENAT | OPENAT2) && r.sys.header.flags & FLAG_PATH_TRUNCATED == 0
        {
            visits::arm(p, pid_tgid as u32, ret, &r.sys.file, &r.path);
        }
        crate::crash::check(p.nr, ret, r.sys.header.seq);
    });
}

/// Copies a user string; true when it did not fit.
#[inline(always)]
fn read_path(ptr: u64, out: &mut [u8; PATH_MAX]) -> bool {
    match unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, out) } {
        Ok(s) => s.len() >= PATH_MAX - 1,
        Err(_) => {
            out[0] = 0;
            false
        }
    }
}

/// The body of a syscall record (the header is already filled).
#[inline(always)]
fn fill_sys(r: &mut SyscallRecord, p: &Pending, ret: i64) {
    r.nr = p.nr;
    r.calls = 0;
    r.args = p.args;
    r.ret = ret;
    r.enter_ns = p.enter_ns;
    r.file = p.file;
    // The second fd (copy_file_range's or sendfile's source) is still open:
    // resolved here, it need not ride in every in-flight entry.
    r.file2 = FileIdent::default();
    if let (_, Some(i)) = fd_args(p.nr) {
        ident(arg(&p.args, i), &mut r.file2);
    }
    r.stack = p.stack;
    r._pad = 0;
}

#[inline(always)]
fn arg(args: &[u64; 6], i: usize) -> u64 {
    if i < 6 { args[i] } else { 0 }
}

/// Only writable shared mappings of files can carry data to disk (msync);
/// executable ones tell where a process's code is, for its stacks.
#[inline(always)]
fn shared_writable_file_map(args: &[u64; 6], ret: i64) -> bool {
    use auditor_common::linux::misc::{
        MAP_SHARED, MAP_SHARED_VALIDATE, MAP_TYPE, PROT_EXEC, PROT_WRITE,
    };
    if ret < 0 || (args[4] as i64) < 0 {
        return false;
    }
    let shared = matches!(args[3] & MAP_TYPE, MAP_SHARED | MAP_SHARED_VALIDATE);
    (args[2] & PROT_WRITE != 0 && shared) || (args[2] & PROT_EXEC != 0 && stack::enabled())
}
