//! Benchmark workload for floods: opens a file read-only and closes it
//! again, N times, as fast as it can (a program polling a config file, or
//! one trying to drown a tracer in events).
//! Usage: flood_workload PATH N  -> prints its loop time in nanoseconds, then `cpu NS`.

#[path = "../workload_timing.rs"]
mod workload_timing;

use std::{ffi::CString, time::Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = CString::new(args[1].as_str()).expect("PATH");
    let n: u64 = args[2].parse().expect("N");
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: a NUL-terminated path; the fd is closed at once.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            assert!(fd >= 0, "open failed");
            libc::close(fd);
        }
    }
    workload_timing::print_since(start);
}
