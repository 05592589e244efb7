mod capture;
mod error;

use capture::{launch, probes::Probes};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut probes = match Probes::load(probes_ring()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("auditor: {e:#}");
            std::process::exit(2);
        }
    };
    let out = launch::trace_command(&mut probes, &argv, |ev| {
        println!("{}", serde_json::to_string(&ev)?);
        Ok(())
    });
    match out {
        Ok(o) => eprintln!("{o:?}"),
        Err(e) => {
            eprintln!("auditor: {e:#}");
            std::process::exit(2);
        }
    }
}

fn probes_ring() -> u32 {
    capture::probes::DEFAULT_RING_BYTES
}
