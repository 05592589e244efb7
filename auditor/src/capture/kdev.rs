//! Device numbers as the kernel keeps them and as userspace sees them.

/// Kernel `s_dev` (major << 20 | minor) to userspace `st_dev`.
pub fn user_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xfffff)
}
