//! Reads of kernel structures at offsets taken from the running kernel's BTF
//! (userspace writes them into `OFFSETS` before load).

use core::mem::MaybeUninit;

use auditor_common::{FileIdent, Offsets, PATH_MAX, WINDOW};
use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_buf, bpf_probe_read_user_buf,
};

#[unsafe(no_mangle)]
pub(crate) static OFFSETS: Offsets = Offsets {
    task_files: 0,
    task_tgid: 0,
    task_pid: 0,
    task_signal: 0,
    task_exit_code: 0,
    signal_group_exit_code: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_inode: 0,
    file_flags: 0,
    file_mode: 0,
    inode_ino: 0,
    inode_mode: 0,
    inode_size: 0,
    inode_sb: 0,
    sb_dev: 0,
    sb_magic: 0,
    task_comm: 0,
    task_fs: 0,
    fs_root_dentry: 0,
    dentry_inode: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    mm_start_code: 0,
    mm_end_code: 0,
    mm_saved_auxv: 0,
    mm_exe_file: 0,
    regs_ip: 0,
    regs_sp: 0,
    regs_bp: 0,
    regs_args: [0; 6],
    file_win: 0,
    inode_win: 0,
    sb_win: 0,
    regs_win: 0,
    bprm_filename: 0,
    siginfo_code: 0,
    ksigaction_handler: 0,
    signal_live: 0,
    exit_has_group_dead: 0,
};

/// One field of `OFFSETS`, read volatile so the compiler does not fold the
/// zeros it was compiled with (userspace rewrites them at load time).
/// Reading the field alone matters: copying the whole struct on every use
/// cost more than the kernel reads themselves.
macro_rules! off {
    ($($field:tt)+) => {
        {
            // SAFETY: an aligned read of our own global.
            #[allow(unused_unsafe)]
            let v = unsafe {
                core::ptr::read_volatile(core::ptr::addr_of!($crate::kernel::OFFSETS.$($field)+))
            };
            v as usize
        }
    };
}
pub(crate) use off;

#[inline(always)]
pub unsafe fn read<T>(base: *const u8, offset: usize) -> Result<T, i64> {
    unsafe { bpf_probe_read_kernel(base.add(offset) as *const T) }.map_err(|e| e as i64)
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// A span of a kernel structure copied in one read; fields are picked out
/// of it by their offset relative to the span's start. Left uninitialised
/// until loaded: zeroing 128 bytes four times per syscall showed up in
/// profiles, and the kernel helper fills every byte.
/// `N` is a power of two.
pub struct Window<const N: usize = WINDOW>(MaybeUninit<Aligned<N>>);

#[repr(C, align(8))]
pub struct Aligned<const N: usize>([u8; N]);

impl<const N: usize> Window<N> {
    #[inline(always)]
    pub fn new() -> Window<N> {
        Window(MaybeUninit::uninit())
    }

    /// Copies `N` bytes starting at `base + start`. Fields may be read only
    /// after this succeeded.
    #[inline(always)]
    pub fn load(&mut self, base: *const u8, start: usize) -> Result<(), i64> {
        // SAFETY: the buffer is N bytes; the read is fault-checked and
        // writes all of it (or fails, and then nothing is read from it).
        let dst = unsafe { core::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u8, N) };
        unsafe { bpf_probe_read_kernel_buf(base.wrapping_add(start), dst) }.map_err(|e| e as i64)
    }

    /// The `T` at absolute offset `off` of a window loaded at `start`.
    /// Offsets are checked at start-up to fall inside the window and be
    /// naturally aligned; the masks keep the verifier sure of it.
    #[inline(always)]
    pub fn get<T: Copy + Default>(&self, off: usize, start: usize) -> T {
        let rel = off.wrapping_sub(start) & (N - 1);
        if rel + core::mem::size_of::<T>() > N {
            return T::default();
        }
        // SAFETY: in bounds (checked above), aligned (checked at start-up),
        // and written by a successful `load`.
        unsafe { ((self.0.as_ptr() as *const u8).add(rel) as *const T).read() }
    }
}

/// `struct file *` behind `fd` in the current task's fd table.
#[inline(always)]
pub fn fd_file(fd: u64) -> Result<*const u8, i64> {
    unsafe {
        let task = current_task();
        let files: *const u8 = read(task, off!(task_files))?;
        if files.is_null() {
            return Err(-1);
        }
        let fdt: *const u8 = read(files, off!(files_fdt))?;
        // fdtable is smaller than a window: two plain reads.
        let max: u32 = read(fdt, off!(fdt_max_fds))?;
        if fd >= max as u64 {
            return Err(-1);
        }
        let fds: *const u8 = read(fdt, off!(fdt_fd))?;
        let file: *const u8 = read(fds, (fd as usize) * 8)?;
        if file.is_null() {
            return Err(-1);
        }
        Ok(file)
    }
}

/// Fills `out` from the file behind `fd`; leaves it zeroed when `fd` is not open.
#[inline(always)]
pub fn ident(fd: u64, out: &mut FileIdent) {
    if let Ok(file) = fd_file(fd) {
        let _ = fill(file, out);
    }
}

/// What the kernel says about a `struct file` (the exec'd image's, say).
#[inline(always)]
pub fn ident_file(file: *const u8, out: &mut FileIdent) {
    if !file.is_null() {
        let _ = fill(file, out);
    }
}

/// Three window reads (file, inode, super_block) instead of nine field reads.
#[inline(always)]
fn fill(file: *const u8, out: &mut FileIdent) -> Result<(), i64> {
    let mut w: Window = Window::new();
    let start = off!(file_win);
    w.load(file, start)?;
    out.f_flags = w.get(off!(file_flags), start);
    out.f_mode = w.get(off!(file_mode), start);
    let inode = w.get::<u64>(off!(file_inode), start) as *const u8;
    fill_inode(inode, &mut w, out)
}

/// The inode and super_block halves of [`fill`].
#[inline(always)]
fn fill_inode(inode: *const u8, w: &mut Window, out: &mut FileIdent) -> Result<(), i64> {
    if inode.is_null() {
        return Err(-1);
    }
    let start = off!(inode_win);
    w.load(inode, start)?;
    out.i_mode = w.get(off!(inode_mode), start);
    out.size = w.get(off!(inode_size), start);
    out.ino = w.get(off!(inode_ino), start);
    let sb = w.get::<u64>(off!(inode_sb), start) as *const u8;
    if sb.is_null() {
        return Err(-1);
    }
    let start = off!(sb_win);
    w.load(sb, start)?;
    out.dev = w.get(off!(sb_dev), start);
    out.magic = w.get(off!(sb_magic), start);
    Ok(())
}

/// Where the current task stands: its root directory into `root` (inode
/// and device) and its mount namespace's inode number into `ns.ino`.
/// Userspace compares these with /proc before it trusts what /proc says
/// about the task's mounts. Left zeroed where a read fails.
#[inline(always)]
pub fn view_stamp(root: &mut FileIdent, ns: &mut FileIdent) {
    let task = current_task();
    // SAFETY: fault-checked kernel reads.
    unsafe {
        if let Ok(fs) = read::<*const u8>(task, off!(task_fs))
            && !fs.is_null()
            && let Ok(dentry) = read::<*const u8>(fs, off!(fs_root_dentry))
            && !dentry.is_null()
            && let Ok(inode) = read::<*const u8>(dentry, off!(dentry_inode))
        {
            let mut w: Window = Window::new();
            let _ = fill_inode(inode, &mut w, root);
        }
        if let Ok(nsproxy) = read::<*const u8>(task, off!(task_nsproxy))
            && !nsproxy.is_null()
            && let Ok(mnt_ns) = read::<*const u8>(nsproxy, off!(nsproxy_mnt_ns))
            && !mnt_ns.is_null()
            && let Ok(inum) = read::<u32>(mnt_ns, off!(mnt_ns_inum))
        {
            ns.ino = inum as u64;
        }
    }
}

/// Copies the current program's arguments (NUL-separated, as exec laid
/// them out) into `out`; returns how many bytes, and whether they were
/// cut at its size.
#[inline(always)]
pub fn exec_args(out: &mut [u8; PATH_MAX]) -> (usize, bool) {
    let task = current_task();
    // SAFETY: fault-checked kernel reads.
    let (start, end) = unsafe {
        let Ok(mm) = read::<*const u8>(task, off!(task_mm)) else {
            return (0, false);
        };
        if mm.is_null() {
            return (0, false);
        }
        let start: u64 = read(mm, off!(mm_arg_start)).unwrap_or(0);
        let end: u64 = read(mm, off!(mm_arg_end)).unwrap_or(0);
        (start, end)
    };
    if end <= start {
        return (0, false);
    }
    let want = end - start;
    let cut = want >= PATH_MAX as u64;
    let n = if cut { PATH_MAX - 1 } else { want as usize } & (PATH_MAX - 1);
    if n == 0 {
        return (0, cut);
    }
    // SAFETY: a fault-checked user read of the new program's own memory
    // into the first `n` bytes of `out` (n < PATH_MAX, masked for the
    // checker).
    match unsafe { bpf_probe_read_user_buf(start as *const u8, &mut out[..n]) } {
        Ok(()) => (n, cut),
        Err(_) => (0, false),
    }
}
