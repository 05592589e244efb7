//! Benchmark workload for a long attach: creates, writes (never fsyncs) and
//! closes N distinct files, one after the other, in DIR. Each file is
//! removed once WINDOW newer ones exist (and the rest at the end), so the
//! disk holds at most WINDOW small files while the tracer sees every one of
//! them still dirty when it has to let go of it. WINDOW 0 keeps them all
//! (the report-size benchmark: every file is a finding).
//! Usage: files_workload DIR N WINDOW
//! It creates DIR/ready, waits for DIR/go (the tracer is attached), works,
//! and prints its loop time in nanoseconds, then `cpu NS` (its CPU time).

#[path = "../workload_timing.rs"]
mod workload_timing;

use std::{
    fs::{self, File},
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[1]);
    let n: u64 = args[2].parse().expect("N");
    let window: u64 = args[3].parse().expect("WINDOW");
    let name = |i: u64| dir.join(format!("f{i:07}"));
    File::create(dir.join("ready")).expect("ready");
    while !dir.join("go").exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let record = [b'x'; 100];
    let start = Instant::now();
    for i in 0..n {
        let mut f = File::create(name(i)).expect("create");
        f.write_all(&record).expect("write");
        drop(f);
        if window > 0 && i >= window {
            fs::remove_file(name(i - window)).expect("remove");
        }
    }
    if window > 0 {
        for i in n.saturating_sub(window)..n {
            let _ = fs::remove_file(name(i));
        }
    }
    workload_timing::print_since(start);
}
