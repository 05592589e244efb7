//! Process lifecycle and signal probes.

use auditor_common::{
    ExitRecord, FLAG_PATH_TRUNCATED, FLAG_PATH2_TRUNCATED, ForkRecord, Kind, PATH_MAX, PathRecord,
    STAT_TRACED_FULL, SignalRecord,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use auditor_common::nr::EXIT_GROUP;

use crate::{
    emit::emit,
    kernel::{current_task, exec_args, ident_file, off, read, view_stamp},
    maps::{TRACED, count, exec_is_watched, is_traced},
    runs,
    thread::{IDLE, bump_fd_generation, release, slot_of},
};

/// A raw tracepoint program `$name` on `$tracepoint` that runs `$body`: a
/// body stops at its first failed kernel read (`?`), with nothing to
/// report, and the program returns 0 either way.
macro_rules! raw_probe {
    ($(#[$doc:meta])* $name:ident: $tracepoint:literal => $body:ident) => {
        $(#[$doc])*
        #[raw_tracepoint(tracepoint = $tracepoint)]
        pub fn $name(ctx: RawTracePointContext) -> i32 {
            let _ = $body(&ctx);
            0
        }
    };
}

raw_probe! {
    /// raw `sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
    sched_process_fork: "sched_process_fork" => try_fork
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return Ok(());
    }
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    let (child_tgid, child_tid, pfiles, cfiles) = unsafe {
        let t: u32 = read(child, off!(task_tgid))?;
        let p: u32 = read(child, off!(task_pid))?;
        let pf: u64 = read(parent, off!(task_files))?;
        let cf: u64 = read(child, off!(task_files))?;
        (t, p, pf, cf)
    };
    let new_mount_ns = mount_ns(parent) != mount_ns(child);
    if child_tgid != tgid {
        // A new process: trace it before it can run.
        if TRACED.insert(child_tgid, 1, 0).is_err() {
            count(STAT_TRACED_FULL);
        }
    }
    emit(Kind::Fork, pid_tgid, |r: &mut ForkRecord| {
        r.child_tgid = child_tgid;
        r.child_tid = child_tid;
        r.shares_files = (pfiles == cfiles) as u32;
        r.new_mount_ns = new_mount_ns as u32;
    });
    Ok(())
}

/// The mount namespace `task` is in (0 when unreadable).
#[inline(always)]
fn mount_ns(task: *const u8) -> u64 {
    // SAFETY: fault-checked kernel reads.
    unsafe {
        match read::<*const u8>(task, off!(task_nsproxy)) {
            Ok(ns) if !ns.is_null() => read::<u64>(ns, off!(nsproxy_mnt_ns)).unwrap_or(0),
            _ => 0,
        }
    }
}

raw_probe! {
    /// raw `sched_process_exec(struct task_struct *p, pid_t old_pid,
    /// struct linux_binprm *bprm)`. Raw, like every probe here: a perf
    /// tracepoint's detach waits for an RCU grace period, which was most of
    /// the time a run took to end.
    sched_process_exec: "sched_process_exec" => try_exec
}

fn try_exec(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        if !exec_is_watched() {
            return Ok(());
        }
        if TRACED.insert(tgid, 1, 0).is_err() {
            count(STAT_TRACED_FULL);
            return Ok(());
        }
    }
    // Close-on-exec fds are gone.
    bump_fd_generation();
    let old_pid: u64 = ctx.arg(1);
    let bprm: *const u8 = ctx.arg(2);
    // SAFETY: a fault-checked kernel read.
    let filename: *const u8 =
        unsafe { read(bprm, off!(bprm_filename)) }.unwrap_or(core::ptr::null());
    // Where the new image's code went, for the stacks of a process that may
    // be gone before userspace could read its maps: the main binary's code
    // range and identity, and the program interpreter's base.
    let image = exec_image();
    emit(Kind::Exec, pid_tgid, |r: &mut PathRecord| {
        r.sys.nr = 0;
        r.sys.calls = image.exe.dev;
        r.sys.args = [
            old_pid as i32 as u64,
            0,
            image.start_code,
            image.end_code,
            image.interp_base,
            image.exe.ino,
        ];
        r.sys.ret = 0;
        r.sys.enter_ns = r.sys.header.ts_ns;
        r.sys.file = Default::default();
        r.sys.file2 = Default::default();
        r.sys.stack = 0;
        r.sys._pad = 0;
        view_stamp(&mut r.sys.file, &mut r.sys.file2);
        let (n, cut) = exec_args(&mut r.path2);
        r.sys.args[1] = n as u64;
        if cut {
            r.sys.header.flags |= FLAG_PATH2_TRUNCATED;
        }
        // SAFETY: a fault-checked kernel read into the record.
        match unsafe { bpf_probe_read_kernel_str_bytes(filename, &mut r.path) } {
            Ok(s) if s.len() >= PATH_MAX - 1 => r.sys.header.flags |= FLAG_PATH_TRUNCATED,
            Ok(_) => {}
            Err(_) => r.path[0] = 0,
        }
    });
    Ok(())
}

/// What an exec record says about where the new image's code is.
#[derive(Default)]
struct Image {
    start_code: u64,
    end_code: u64,
    /// `AT_BASE` of the auxiliary vector: where the program interpreter
    /// (the dynamic loader) was loaded.
    interp_base: u64,
    exe: auditor_common::FileIdent,
}

#[inline(always)]
fn exec_image() -> Image {
    const AT_NULL: u64 = 0;
    const AT_BASE: u64 = 7;
    /// The auxiliary vector holds fewer pairs than this.
    const AUXV_PAIRS: usize = 32;
    let mut image = Image::default();
    // SAFETY: fault-checked kernel reads.
    let mm: *const u8 = unsafe { read(current_task(), off!(task_mm)) }.unwrap_or(core::ptr::null());
    if mm.is_null() {
        return image;
    }
    unsafe {
        image.start_code = read::<u64>(mm, off!(mm_start_code)).unwrap_or(0);
        image.end_code = read::<u64>(mm, off!(mm_end_code)).unwrap_or(0);
        let exe = read::<*const u8>(mm, off!(mm_exe_file)).unwrap_or(core::ptr::null());
        ident_file(exe, &mut image.exe);
        let auxv = mm.wrapping_add(off!(mm_saved_auxv));
        for i in 0..AUXV_PAIRS {
            let Ok(pair) = read::<[u64; 2]>(auxv, i * 16) else {
                break;
            };
            if pair[0] == AT_NULL {
                break;
            }
            if pair[0] == AT_BASE {
                image.interp_base = pair[1];
                break;
            }
        }
    }
    image
}

raw_probe! {
    /// raw `sched_process_exit(struct task_struct *p, bool group_dead)`
    /// (`group_dead` since Linux 6.16).
    sched_process_exit: "sched_process_exit" => try_exit
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let mut exit_stack = 0;
    if let Some(p) = slot_of(tid) {
        // SAFETY: the exiting thread's own entry.
        unsafe {
            if (*p).nr == EXIT_GROUP {
                exit_stack = (*p).stack;
            }
        }
        // SAFETY: as above.
        runs::finish(unsafe { &mut (*p).run }, tid);
        release(tid, p);
    }
    if !is_traced(tgid) {
        return Ok(());
    }
    let task = current_task();
    let (code, group_code, live) = unsafe {
        let code: u32 = read(task, off!(task_exit_code)).unwrap_or(0);
        let sig: *const u8 = read(task, off!(task_signal)).unwrap_or(core::ptr::null());
        if sig.is_null() {
            (code, 0, 1)
        } else {
            let gc: u32 = read(sig, off!(signal_group_exit_code)).unwrap_or(0);
            let live: u32 = read(sig, off!(signal_live)).unwrap_or(1);
            (code, gc, live)
        }
    };
    let group_dead = if off!(exit_has_group_dead) != 0 {
        let arg: u64 = ctx.arg(1);
        arg as u8
    } else {
        // Older kernels: the group's live count, already decremented by
        // this thread (two threads ending at once may both see 0).
        (live == 0) as u8
    };
    if group_dead != 0 {
        // The pid may be reused by an untraced process.
        let _ = TRACED.remove(tgid);
    }
    emit(Kind::Exit, pid_tgid, |r: &mut ExitRecord| {
        r.exit_code = code;
        r.group_exit_code = group_code;
        r.group_dead = group_dead as u32;
        r.stack = exit_stack;
    });
    Ok(())
}

raw_probe! {
    /// raw `signal_generate(int sig, struct kernel_siginfo *info,
    /// struct task_struct *task, int group, int result)`.
    signal_generate: "signal_generate" => try_signal_generate
}

fn try_signal_generate(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let sender_tgid = (pid_tgid >> 32) as u32;
    let sig: u64 = ctx.arg(0);
    let info: u64 = ctx.arg(1);
    let task: *const u8 = ctx.arg(2);
    let group: u64 = ctx.arg(3);
    let result: u64 = ctx.arg(4);
    let (target_tgid, target_tid) = unsafe {
        let t: u32 = read(task, off!(task_tgid))?;
        let p: u32 = read(task, off!(task_pid))?;
        (t, p)
    };
    if !is_traced(sender_tgid) && !is_traced(target_tgid) {
        return Ok(());
    }
    // SEND_SIG_NOINFO (0) and SEND_SIG_PRIV (1) are not pointers.
    let code: i32 = match info {
        0 => 0,
        1 => 0x80,
        p => unsafe { read(p as *const u8, 8) }.unwrap_or(0),
    };
    let target_syscall = match slot_of(target_tid) {
        // SAFETY: a read of a live map value; a torn read only blurs this hint.
        Some(p) => match unsafe { (*p).nr } {
            IDLE => -1,
            nr => nr as i64,
        },
        None => -1,
    };
    emit(Kind::SignalGenerate, pid_tgid, |r: &mut SignalRecord| {
        r.sig = sig as i32;
        r.code = code;
        r.target_tgid = target_tgid;
        r.target_tid = target_tid;
        r.result = result as i32;
        r.group = group as i32;
        r.target_syscall = target_syscall;
        r.handler = 0;
        // SAFETY: a fault-checked kernel read.
        r.target_comm = unsafe { read(task, off!(task_comm)) }.unwrap_or([0; 16]);
    });
    Ok(())
}

raw_probe! {
    /// raw `signal_deliver(int sig, struct kernel_siginfo *info,
    /// struct k_sigaction *ka)`.
    signal_deliver: "signal_deliver" => try_signal_deliver
}

fn try_signal_deliver(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return Ok(());
    }
    let sig: u64 = ctx.arg(0);
    let info: *const u8 = ctx.arg(1);
    let ka: *const u8 = ctx.arg(2);
    // SAFETY: fault-checked kernel reads.
    let (code, handler) = unsafe {
        let code: i32 = read(info, off!(siginfo_code)).unwrap_or(0);
        let handler: u64 = read(ka, off!(ksigaction_handler))?;
        (code, handler)
    };
    emit(Kind::SignalDeliver, pid_tgid, |r: &mut SignalRecord| {
        r.sig = sig as i32;
        r.code = code;
        r.target_tgid = tgid;
        r.target_tid = pid_tgid as u32;
        r.result = 0;
        r.group = 0;
        r.target_syscall = -1;
        r.handler = handler;
        r.target_comm = r.header.comm;
    });
    Ok(())
}
