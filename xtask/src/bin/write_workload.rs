//! Benchmark workload: N small writes to one file with an fsync every K,
//! timing only its own loop so tracer start-up is not counted.
//! Usage: write_workload PATH WRITES FSYNC_EVERY  -> prints loop nanoseconds.

use std::{fs::File, io::Write, os::unix::fs::FileExt, time::Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = &args[1];
    let writes: u64 = args[2].parse().expect("WRITES");
    let every: u64 = args[3].parse().expect("FSYNC_EVERY");
    let mut f = File::create(path).expect("create");
    let record = [b'x'; 64];
    let start = Instant::now();
    for i in 1..=writes {
        f.write_all(&record).expect("write");
        if every > 0 && i % every == 0 {
            f.sync_data().expect("fsync");
        }
    }
    f.sync_all().expect("fsync");
    let _ = f.read_at(&mut [0u8; 1], 0);
    println!("{}", start.elapsed().as_nanos());
}
