//! Embeds the probe object built by `cargo xtask build` (which compiles
//! `auditor-ebpf` for bpfel-unknown-none with nightly). Plain `cargo build`
//! and `cargo test` work without the BPF toolchain: the binary then carries
//! no probes and says so, with the command that builds them, when asked to
//! trace.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=AUDITOR_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let default = manifest.join("../target/bpfel-unknown-none/release/auditor-ebpf");
    let object = env::var_os("AUDITOR_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("auditor-ebpf.o");
    match fs::read(&object) {
        Ok(bytes) => fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=probe object {} not found: this build cannot trace (run `cargo xtask build`)",
                object.display()
            );
            fs::write(&out, []).unwrap();
        }
    }
}
