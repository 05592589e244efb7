//! The auditor runs as root on other people's hosts: what it writes never
//! replaces a device, a FIFO or a symlink, is readable by root only, fails
//! before the command runs when it could not be written, and crashtest's
//! scratch state can neither be planted by a local user nor outlive a
//! SIGKILL of the auditor.

use std::{
    ffi::CString,
    os::unix::{
        ffi::OsStrExt,
        fs::{FileTypeExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    process::Command,
};

use auditor_e2e::*;

fn mknod_char(path: &Path, major: u32, minor: u32) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(rc, 0, "mknod {}", path.display());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn is_char_device(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .unwrap()
        .file_type()
        .is_char_device()
}

#[test]
fn output_to_a_device_is_written_into_never_replaced() {
    let dir = scratch("safety-devices");
    // Our own nodes, so a regression cannot break the host's /dev.
    let null = dir.join("null");
    mknod_char(&null, 1, 3);
    let out = auditor(&dir, &["run", "-o", null.to_str().unwrap(), "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_char_device(&null), "the null device became a file");

    let full = dir.join("full");
    mknod_char(&full, 1, 7);
    let out = auditor(&dir, &["run", "-o", full.to_str().unwrap(), "--", "true"]);
    assert_one_line_error(&out, "No space left on device");
    assert!(is_char_device(&full), "the full device became a file");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temp file left: {names:?}");
}

#[test]
fn output_to_a_fifo_is_streamed() {
    let dir = scratch("safety-fifo");
    let fifo = dir.join("report.pipe");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A reader that never blocks: the report (a few KiB) waits in the
    // pipe's buffer.
    let mut reader = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let out = auditor(
        &dir,
        &[
            "run",
            "--format",
            "json",
            "-o",
            fifo.to_str().unwrap(),
            "--",
            "true",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut got);
    let doc: serde_json::Value = serde_json::from_slice(&got).expect("the report came through");
    assert_eq!(doc["schema"], "auditor.report/v1");
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn output_through_a_symlink_replaces_its_target() {
    let dir = scratch("safety-symlink");
    let real = dir.join("real.json");
    std::fs::write(&real, b"old").unwrap();
    let link = dir.join("latest.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    let out = auditor(&dir, &["run", "-o", "latest.json", "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link itself was replaced"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    assert_eq!(doc["schema"], "auditor.report/v1");
}

#[test]
fn reports_and_recordings_are_readable_by_root_only() {
    let dir = scratch("safety-modes");
    let out = auditor(&dir, &["run", "-o", "r.json", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(mode(&dir.join("r.json")), 0o600);
    let out = auditor(&dir, &["record", "-o", "x.rec", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(mode(&dir.join("x.rec")), 0o600);
    let out = auditor(&dir, &["report", "-o", "x.txt", "x.rec"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(mode(&dir.join("x.txt")), 0o600);
}

/// A tmpfs of `size` mounted at `dir` for the life of the guard.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_destination_fails_before_the_command_runs() {
    let dir = scratch("safety-full");
    let full = Tmpfs::mount(&dir.join("full"), "2m");
    let marker = dir.join("the-command-ran");
    let out = auditor(
        &dir,
        &[
            "run",
            "-o",
            "full/r.json",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
    );
    assert_one_line_error(&out, "free some space");
    assert!(!marker.exists(), "the command ran and its report was lost");
    drop(full);
}

#[test]
fn a_truncated_recording_is_reported_incomplete_with_exit_2() {
    let dir = scratch("safety-truncated");
    let out = auditor(&dir, &["record", "-o", "whole.rec", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    let whole = std::fs::read(dir.join("whole.rec")).unwrap();
    // Cut inside the last event line: the trailer and part of an event go.
    let last_line = whole[..whole.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap();
    let event_line = whole[..last_line]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let cut = event_line + (last_line - event_line) / 2;
    std::fs::write(dir.join("cut.rec"), &whole[..cut]).unwrap();
    let out = auditor(&dir, &["report", "--format", "json", "cut.rec"]);
    assert_eq!(out.status.code(), Some(2), "not a clean bill of health");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("byte {event_line}")),
        "says where it stops: {err}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["complete"], false);
    assert_eq!(doc["truncated_at_byte"], event_line as u64);
    // The whole recording is still a clean one.
    let out = auditor(&dir, &["report", "--format", "json", "whole.rec"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["complete"], true);
}
