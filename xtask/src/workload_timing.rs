//! What every bench workload prints when it is done: its loop time, then
//! its CPU time. Shared by the workload binaries through `#[path]`.

use std::time::Instant;

/// Prints the wall time since `start` and the CPU time used, one line each.
pub fn print_since(start: Instant) {
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
