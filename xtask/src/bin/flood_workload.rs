//! Benchmark workload for floods: opens a file read-only and closes it
//! again, N times, as fast as it can (a program polling a config file, or
//! one trying to drown a tracer in events).
//! Usage: flood_workload PATH N  -> prints its loop time in nanoseconds, then `cpu NS`.

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
    println!("{}", start.elapsed().as_nanos());
    println!("cpu {}", cpu_ns());
}

/// CPU time this process used (user + system, all threads): what tracing
/// costs the program itself, without the time it waited for a CPU that
/// other processes held, or for the disk.
fn cpu_ns() -> u128 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as u128 * 1_000_000_000 + tv.tv_usec as u128 * 1000;
    t(ru.ru_utime) + t(ru.ru_stime)
}
