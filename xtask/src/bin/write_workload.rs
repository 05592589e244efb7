//! Benchmark workload: N small writes to one file with an fsync every K,
//! timing only its own loop so tracer start-up is not counted. With
//! THREADS, that many threads do it at once, each to its own file
//! (PATH.0, PATH.1, ...), and the time is from their start to the last
//! one's end.
//! Usage: write_workload PATH WRITES FSYNC_EVERY [THREADS]
//!   -> prints loop nanoseconds, then `cpu NS`.

#[path = "../workload_timing.rs"]
mod workload_timing;

use std::{fs::File, io::Write, os::unix::fs::FileExt, time::Instant};

fn writer(path: &str, writes: u64, every: u64) {
    let mut f = File::create(path).expect("create");
    let record = [b'x'; 64];
    for i in 1..=writes {
        f.write_all(&record).expect("write");
        if every > 0 && i % every == 0 {
            f.sync_data().expect("fsync");
        }
    }
    f.sync_all().expect("fsync");
    let _ = f.read_at(&mut [0u8; 1], 0);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = &args[1];
    let writes: u64 = args[2].parse().expect("WRITES");
    let every: u64 = args[3].parse().expect("FSYNC_EVERY");
    let threads: Option<u64> = args.get(4).map(|t| t.parse().expect("THREADS"));
    let start = Instant::now();
    match threads {
        None => writer(path, writes, every),
        Some(n) => std::thread::scope(|s| {
            for t in 0..n {
                let path = format!("{path}.{t}");
                s.spawn(move || writer(&path, writes, every));
            }
        }),
    }
    workload_timing::print_since(start);
}
