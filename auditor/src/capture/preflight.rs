//! Checks made before loading probes, so each problem gets one clear line
//! naming its fix instead of a kernel errno deep inside the loader.

use std::path::Path;

use crate::error::UserError;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Root, or CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN) in the effective set.
pub fn check_privileges() -> Result<(), UserError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(UserError::new(
        "loading eBPF probes needs root (or CAP_BPF and CAP_PERFMON): run it with sudo",
    ))
}

/// The kernel's BTF, needed for the field offsets the probes read.
pub fn check_btf(path: &Path) -> Result<(), UserError> {
    if path.exists() {
        return Ok(());
    }
    Err(UserError::new(format!(
        "this kernel exposes no BTF ({} is missing): use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        path.display()
    )))
}

/// tracefs, where the tracepoints live. Mounts it when it is missing, as
/// `mount -t tracefs nodev /sys/kernel/tracing` would.
pub fn ensure_tracefs() -> Result<(), UserError> {
    const TRACING: &str = "/sys/kernel/tracing";
    let candidates = [TRACING, "/sys/kernel/debug/tracing"];
    if candidates
        .iter()
        .any(|d| Path::new(d).join("events").is_dir())
    {
        return Ok(());
    }
    let src = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 && Path::new(TRACING).join("events").is_dir() {
        return Ok(());
    }
    Err(UserError::new(format!(
        "tracefs is not mounted and could not be mounted ({}): run `mount -t tracefs nodev {TRACING}`",
        std::io::Error::last_os_error()
    )))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
pub fn raise_memlock() {
    let rl = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit with a valid struct; failure is harmless on
    // kernels that account maps to memory cgroups.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) };
}
