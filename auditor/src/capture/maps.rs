//! The probes' maps read by raw fd, from threads that do not own the map
//! objects (the running capture does): the tgids being traced, one slot of
//! an array map, and signals to every traced process.

use std::os::fd::RawFd;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// The traced map holds at most this many tgids; a longer walk means the
/// map changed under it and is cut.
const TRACED_MAX: usize = 65536;

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &MapElemAttr) -> bool {
    // SAFETY: attr is a valid bpf_attr prefix for the element commands.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const MapElemAttr,
            std::mem::size_of::<MapElemAttr>() as libc::c_uint,
        )
    };
    rc == 0
}

/// One u64 slot of an array map.
pub fn read_slot(map_fd: RawFd, index: u32) -> Option<u64> {
    let mut value = 0u64;
    let attr = MapElemAttr {
        map_fd: map_fd as u32,
        _pad: 0,
        key: &index as *const u32 as u64,
        value: &mut value as *mut u64 as u64,
        flags: 0,
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &attr).then_some(value)
}

/// Sets `key` to `value` in a hash map; whether the kernel took it.
pub fn update<K: Copy, V: Copy>(map_fd: RawFd, key: &K, value: &V) -> bool {
    let attr = MapElemAttr {
        map_fd: map_fd as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: value as *const V as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &attr)
}

/// Tgids in the traced map right now.
pub fn traced_pids(traced_fd: RawFd) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut key: Option<u32> = None;
    loop {
        let mut next = 0u32;
        let attr = MapElemAttr {
            map_fd: traced_fd as u32,
            _pad: 0,
            key: key.as_ref().map_or(0, |k| k as *const u32 as u64),
            value: &mut next as *mut u32 as u64,
            flags: 0,
        };
        if !bpf(BPF_MAP_GET_NEXT_KEY, &attr) || pids.len() > TRACED_MAX {
            return pids;
        }
        pids.push(next as i32);
        key = Some(next);
    }
}

/// Sends `sig` to every traced process; how many there were. The exit
/// probe takes a process off the map when it ends, so while the probes
/// are attached the map names live (or just ending) processes only.
pub fn signal_all(traced_fd: RawFd, sig: libc::c_int) -> usize {
    let pids = traced_pids(traced_fd);
    for &pid in &pids {
        if pid > 1 {
            // SAFETY: kill with a pid we trace.
            unsafe { libc::kill(pid, sig) };
        }
    }
    pids.len()
}
