//! Reads of kernel structures at offsets taken from the running kernel's BTF
//! (userspace writes them into `OFFSETS` before load).

use auditor_common::{FileIdent, Offsets};
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets {
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
    regs_args: [0; 6],
    _pad: 0,
};

#[inline(always)]
pub fn off(f: fn(&Offsets) -> u32) -> usize {
    // SAFETY: a read of our own global; volatile so the compiler does not
    // fold the zeros it was compiled with.
    let o = unsafe { core::ptr::read_volatile(&OFFSETS) };
    f(&o) as usize
}

#[inline(always)]
pub unsafe fn read<T>(base: *const u8, offset: usize) -> Result<T, i64> {
    unsafe { bpf_probe_read_kernel(base.add(offset) as *const T) }.map_err(|e| e as i64)
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// `struct file *` behind `fd` in the current task's fd table.
#[inline(always)]
pub fn fd_file(fd: u64) -> Result<*const u8, i64> {
    unsafe {
        let task = current_task();
        let files: *const u8 = read(task, off(|o| o.task_files))?;
        if files.is_null() {
            return Err(-1);
        }
        let fdt: *const u8 = read(files, off(|o| o.files_fdt))?;
        let max: u32 = read(fdt, off(|o| o.fdt_max_fds))?;
        if fd >= max as u64 {
            return Err(-1);
        }
        let fds: *const u8 = read(fdt, off(|o| o.fdt_fd))?;
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

#[inline(always)]
fn fill(file: *const u8, out: &mut FileIdent) -> Result<(), i64> {
    unsafe {
        out.f_flags = read(file, off(|o| o.file_flags))?;
        out.f_mode = read(file, off(|o| o.file_mode))?;
        let inode: *const u8 = read(file, off(|o| o.file_inode))?;
        if inode.is_null() {
            return Err(-1);
        }
        out.i_mode = read(inode, off(|o| o.inode_mode))?;
        out.size = read(inode, off(|o| o.inode_size))?;
        let sb: *const u8 = read(inode, off(|o| o.inode_sb))?;
        out.dev = read(sb, off(|o| o.sb_dev))?;
        out.magic = read(sb, off(|o| o.sb_magic))?;
        out.ino = read(inode, off(|o| o.inode_ino))?;
    }
    Ok(())
}
