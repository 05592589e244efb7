//! Records the probes write into the ring buffer.
//!
//! Every record starts with a [`Header`]; `Header::kind` tells which record
//! follows and `Header::size` its full length, so the decoder can check sizes
//! instead of trusting a transmute. All structs are `#[repr(C)]` with explicit
//! padding so both sides agree on the layout.
#![no_std]

pub mod linux;
pub mod nr;
pub mod syscall;

pub use syscall::Syscall;

/// Longest path the probes copy. Longer paths are cut and flagged
/// with [`FLAG_PATH_TRUNCATED`].
pub const PATH_MAX: usize = 512;

/// Maximum number of fds the probe walks in `fdtable.fd[]`.
pub const TASK_COMM_LEN: usize = 16;

/// The first path of a record was cut at [`PATH_MAX`].
pub const FLAG_PATH_TRUNCATED: u16 = 1;
/// The second path of a record was cut at [`PATH_MAX`].
pub const FLAG_PATH2_TRUNCATED: u16 = 2;
/// A run of writes whose file could not be read back consistently (its
/// writer started two newer runs while the record was being filled): the
/// record is counted as lost instead of trusted.
pub const FLAG_RUN_UNSURE: u16 = 4;

/// Record kinds (`Header::kind`).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A syscall without path arguments: [`SyscallRecord`].
    Syscall = 1,
    /// A syscall with one or two path arguments: [`PathRecord`].
    Path = 2,
    /// `sched_process_fork`: [`ForkRecord`].
    Fork = 3,
    /// `sched_process_exec`: [`PathRecord`] with the new executable as path.
    Exec = 4,
    /// `sched_process_exit`: [`ExitRecord`].
    Exit = 5,
    /// `signal_generate`: [`SignalRecord`].
    SignalGenerate = 6,
    /// `signal_deliver`: [`SignalRecord`].
    SignalDeliver = 7,
    /// A copy of the top of a user stack: [`StackRecord`].
    Stack = 8,
}

impl Kind {
    pub fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            1 => Kind::Syscall,
            2 => Kind::Path,
            3 => Kind::Fork,
            4 => Kind::Exec,
            5 => Kind::Exit,
            6 => Kind::SignalGenerate,
            7 => Kind::SignalDeliver,
            8 => Kind::Stack,
            _ => return None,
        })
    }
}

/// Common start of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub kind: u16,
    pub flags: u16,
    /// Full record length in bytes, header included.
    pub size: u32,
    /// Global sequence number: a gap means the kernel dropped records.
    pub seq: u64,
    /// `bpf_ktime_get_ns`: monotonic time since boot.
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; TASK_COMM_LEN],
}

/// What the kernel says about an open file, read from its `struct file`.
/// `ino == 0` means the fd did not resolve (closed, or a race).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileIdent {
    /// `inode.i_ino`.
    pub ino: u64,
    /// `inode.i_size` when the call was made.
    pub size: i64,
    /// `super_block.s_magic`: tells the filesystem type.
    pub magic: u64,
    /// `super_block.s_dev` in the kernel's internal encoding.
    pub dev: u32,
    /// `file.f_flags` (O_APPEND, O_SYNC, O_DSYNC, O_DIRECT, ...).
    pub f_flags: u32,
    /// `file.f_mode` (FMODE_CREATED tells an open that created the file).
    pub f_mode: u32,
    /// `inode.i_mode` (file type bits).
    pub i_mode: u16,
    pub _pad: u16,
}

/// A finished syscall: its number, arguments, return value and the file
/// behind its fd argument(s), resolved at entry (before a close can drop it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallRecord {
    pub header: Header,
    /// x86_64 syscall number.
    pub nr: u32,
    /// 0 for one call. For a run (consecutive complete writes of one thread
    /// to one file, reported together): how many calls; `ret` is their
    /// total, `enter_ns` the first one's entry and `file.size` the size
    /// before the first.
    pub calls: u32,
    pub args: [u64; 6],
    pub ret: i64,
    /// Time the syscall was entered.
    pub enter_ns: u64,
    /// File behind the main fd argument (or the returned fd for opens).
    /// For setns and exec records: the task's root directory afterwards.
    pub file: FileIdent,
    /// File behind a second fd argument (source of copy_file_range/sendfile).
    /// For setns and exec records: `ino` is the inode number of the task's
    /// mount namespace afterwards (what `/proc/PID/ns/mnt` shows).
    pub file2: FileIdent,
    /// The [`StackRecord::id`] of the user stack the call was made from (for
    /// a run, its first write's); 0 when none was taken.
    pub stack: u32,
    pub _pad: u32,
}

/// A finished syscall that carries paths (open, rename, link, unlink, mkdir,
/// truncate, chdir, chroot, pivot_root, mount, umount2) or an exec. An exec
/// carries the new program's arguments in `path2`, NUL-separated, their
/// length in `sys.args[1]`; where its code is in `sys.args[2..=4]` (the
/// main binary's code start and end, the program interpreter's base), and
/// the binary's identity in `sys.args[5]` (inode) and `sys.calls` (device,
/// the kernel's encoding).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathRecord {
    pub sys: SyscallRecord,
    pub path: [u8; PATH_MAX],
    pub path2: [u8; PATH_MAX],
}

/// Bytes of user stack a [`StackRecord`] carries, from the page holding the
/// stack pointer up (at least two pages above it): what an unwinder in
/// userspace walks with the binaries' unwind tables.
pub const STACK_BYTES: usize = 3 * STACK_PAGE;

/// Stacks are copied a page at a time: a page either reads whole or not at
/// all, and fixed-size reads at fixed places are what the load-time checker
/// can prove in bounds.
pub const STACK_PAGE: usize = 4096;

/// Return addresses the kernel's own frame-pointer walk keeps.
pub const STACK_FP_FRAMES: usize = 32;

/// [`Header::flags`] of a [`StackRecord`] taken at a call no finding
/// points at (the process's exit): unwound, for its signature and so that
/// every call still has its stack, but not symbolized. Naming the frames
/// of a program's exit would read the C library's debug information for
/// every `true` run, and nobody is shown them.
pub const STACK_UNSHOWN: u16 = 1;

/// A user stack, taken at a call a finding can point at (a create, rename,
/// the first write of a run, ...). Taken once per distinct stack: later
/// calls from the same place only name its `id` (see [`StackSig`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackRecord {
    pub header: Header,
    /// Names this stack in later records' `stack` fields (never 0).
    pub id: u32,
    /// Bytes of `data` copied, a whole number of pages from `base` (a copy
    /// stops at the first unmapped page, the top of the stack).
    pub len: u32,
    /// User registers at the syscall: instruction, stack and frame pointer.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Address `data` starts at: `sp` rounded down to its page.
    pub base: u64,
    /// The kernel's frame-pointer walk (`bpf_get_stack` on the user stack):
    /// bytes of `fp` filled, or a negative error.
    pub fp_len: i64,
    pub fp: [u64; STACK_FP_FRAMES],
    pub data: [u8; STACK_BYTES],
}

/// Where a stack was taken before: key of [`StackSig`] (the syscall's
/// return address and stack pointer in one process).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ip: u64,
    pub sp: u64,
}

/// Words of a stack that decide its frames.
pub const STACK_SIG_WORDS: usize = 16;

/// What userspace learnt unwinding the stack it was sent for a
/// [`StackKey`]: the places (offsets from `sp`) where the unwinder found
/// return addresses, and what it found there. A later call with the same
/// key whose stack holds the same words at those places has the same
/// frames: the probe names `id` instead of copying the stack again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StackSig {
    pub id: u32,
    /// Words to compare (at most [`STACK_SIG_WORDS`]); 0 never matches.
    pub words: u32,
    pub offsets: [u32; STACK_SIG_WORDS],
    pub values: [u64; STACK_SIG_WORDS],
    /// Set by the probe when it sends a copy from this place (no
    /// signature yet, or one the stack did not match): when it did
    /// (`bpf_ktime_get_ns`). Userspace's answer writes 0.
    pub copied_ns: u64,
}

/// While a copy from a place is on its way to userspace (no signature for
/// that stack back yet) and more than half of the ring waits to be
/// read, the probe sends at most one copy from it per this many
/// nanoseconds; the calls in between have no stack (counted as lost).
/// Without it, a loop of creates sent a 12 KiB copy per call while the
/// first one was being read, and filled the ring in milliseconds.
pub const STACK_PENDING_GAP_NS: u64 = 5_000_000;

/// A new task: thread or process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: Header,
    pub child_tgid: u32,
    pub child_tid: u32,
    /// 1 when the child shares the parent's fd table (CLONE_FILES or a thread).
    pub shares_files: u32,
    /// 1 when the child got a mount namespace of its own (CLONE_NEWNS).
    pub new_mount_ns: u32,
}

/// A task ended.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: Header,
    /// `task.exit_code`: wait-status encoding (signal in the low 7 bits).
    pub exit_code: u32,
    /// `signal_struct.group_exit_code` (the group's status on exit_group/fatal signal).
    pub group_exit_code: u32,
    /// 1 when this was the last thread of the process.
    pub group_dead: u32,
    /// Stack of the thread's `exit_group` call, when it made one (0: none).
    pub stack: u32,
}

/// A signal generated (header = sender) or delivered (header = receiver).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SignalRecord {
    pub header: Header,
    pub sig: i32,
    /// si_code of the siginfo (SI_USER, SI_KERNEL, ...).
    pub code: i32,
    /// Target tgid / tid (for delivery: the receiver again).
    pub target_tgid: u32,
    pub target_tid: u32,
    /// signal_generate: TRACE_SIGNAL_* result; signal_deliver: 0.
    pub result: i32,
    /// signal_generate: 1 for a process-wide signal.
    pub group: i32,
    /// Syscall the target thread was inside when the signal was generated,
    /// or -1. Tells "killed while inside write()".
    pub target_syscall: i64,
    /// signal_deliver: the handler (0 = SIG_DFL, 1 = SIG_IGN, else a handler).
    pub handler: u64,
    pub target_comm: [u8; TASK_COMM_LEN],
}

/// Kernel structure field offsets, read from BTF by userspace at start-up and
/// written into the probe's globals (rustc emits no CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub task_files: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_signal: u32,
    pub task_exit_code: u32,
    pub signal_group_exit_code: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_flags: u32,
    pub file_mode: u32,
    pub inode_ino: u32,
    pub inode_mode: u32,
    pub inode_size: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub sb_magic: u32,
    /// `comm` in task_struct (for the signal target's name).
    pub task_comm: u32,
    /// `task_struct.fs`, then `fs_struct.root.dentry` (one offset for the
    /// embedded path) and `dentry.d_inode`: the task's root directory.
    pub task_fs: u32,
    pub fs_root_dentry: u32,
    pub dentry_inode: u32,
    /// `task_struct.nsproxy`, `nsproxy.mnt_ns`, and
    /// `mnt_namespace.ns.inum` (one offset): its mount namespace.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    /// `task_struct.mm`, `mm_struct.arg_start` and `arg_end`: where an
    /// exec's arguments lie in the new program's memory.
    pub task_mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// Fields of the new image an exec record carries (where the
    /// program's code was loaded, for stacks).
    pub mm_start_code: u32,
    pub mm_end_code: u32,
    pub mm_saved_auxv: u32,
    pub mm_exe_file: u32,
    /// User instruction, stack and frame pointer in `struct pt_regs`.
    pub regs_ip: u32,
    pub regs_sp: u32,
    pub regs_bp: u32,
    /// Syscall argument registers in `struct pt_regs` (x86_64 ABI order).
    pub regs_args: [u32; 6],
    /// Start of the [`WINDOW`]-byte span read at once from each structure;
    /// every field above lies inside its structure's window. One read of a
    /// span costs about what one read of a field does.
    pub file_win: u32,
    pub inode_win: u32,
    pub sb_win: u32,
    pub regs_win: u32,
    /// `linux_binprm.filename`: the raw `sched_process_exec` passes the
    /// binprm, not the perf event's copied name.
    pub bprm_filename: u32,
    /// `kernel_siginfo.si_code` and `k_sigaction.sa.sa_handler`, for the
    /// raw `signal_deliver`.
    pub siginfo_code: u32,
    pub ksigaction_handler: u32,
    /// `signal_struct.live`: threads of the group still running, for
    /// kernels whose raw `sched_process_exit` does not pass `group_dead`.
    pub signal_live: u32,
    /// 1 when the raw `sched_process_exit` passes `group_dead` (Linux 6.16
    /// and later; the kernel's BTF tells).
    pub exit_has_group_dead: u32,
}

/// Bytes read at once from a kernel structure (see [`Offsets`]).
pub const WINDOW: usize = 128;

/// The smaller span read from `pt_regs` (the six argument registers sit
/// within 64 bytes on x86_64): it is read on every traced syscall.
pub const REGS_WINDOW: usize = 64;

/// Per-CPU counters the probes keep; read by userspace at the end.
pub const STAT_DROPPED: u32 = 0;
/// Syscalls the probes skipped because their thread got no slot in the
/// (full) per-thread table.
pub const STAT_ARGS_FULL: u32 = 1;
/// Processes left untraced because the traced-tgid table was full (a fork
/// or a watched exec): everything they do is missing.
pub const STAT_TRACED_FULL: u32 = 2;
/// Stacks that could not be taken (unreadable user stack, ring full): the
/// calls they were for have no stack.
pub const STAT_STACK_LOST: u32 = 3;
/// Calls whose stack was known already (named, not copied).
pub const STAT_STACK_REUSED: u32 = 4;
pub const STAT_COUNT: u32 = 5;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::Offsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackSig {}
}
