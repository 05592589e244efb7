//! The auditor runs as root on other people's hosts: what it writes never
//! replaces a device, a FIFO or a symlink, is readable by root only, fails
//! before the command runs when it could not be written, and crashtest's
//! scratch state can neither be planted by a local user nor outlive a
//! SIGKILL of the auditor.

use std::{
    ffi::CString,
    fs::FileType,
    os::unix::{
        ffi::OsStrExt,
        fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
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

/// The type of `path` itself, not of what a symlink points at.
fn file_type(path: &Path) -> FileType {
    std::fs::symlink_metadata(path).unwrap().file_type()
}

#[test]
fn output_to_a_device_is_written_into_never_replaced() {
    let dir = scratch("safety-devices");
    // Our own nodes, so a regression cannot break the host's /dev.
    let null = dir.join("null");
    mknod_char(&null, 1, 3);
    auditor_ok(&dir, &["run", "-o", null.to_str().unwrap(), "--", "true"]);
    assert!(
        file_type(&null).is_char_device(),
        "the null device became a file"
    );

    let full = dir.join("full");
    mknod_char(&full, 1, 7);
    let out = auditor(&dir, &["run", "-o", full.to_str().unwrap(), "--", "true"]);
    assert_one_line_error(&out, "No space left on device");
    assert!(
        file_type(&full).is_char_device(),
        "the full device became a file"
    );
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
    auditor_ok(
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
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut got);
    let doc: serde_json::Value = serde_json::from_slice(&got).expect("the report came through");
    assert_eq!(doc["schema"], "auditor.report/v1");
    assert!(file_type(&fifo).is_fifo());
}

#[test]
fn output_through_a_symlink_replaces_its_target() {
    let dir = scratch("safety-symlink");
    let real = dir.join("real.json");
    std::fs::write(&real, b"old").unwrap();
    let link = dir.join("latest.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    auditor_ok(&dir, &["run", "-o", "latest.json", "--", "true"]);
    assert!(
        file_type(&link).is_symlink(),
        "the link itself was replaced"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    assert_eq!(doc["schema"], "auditor.report/v1");
}

#[test]
fn reports_and_recordings_are_readable_by_root_only() {
    let dir = scratch("safety-modes");
    auditor_ok(&dir, &["run", "-o", "r.json", "--", "true"]);
    assert_eq!(mode(&dir.join("r.json")), 0o600);
    auditor_ok(&dir, &["record", "-o", "x.rec", "--", "true"]);
    assert_eq!(mode(&dir.join("x.rec")), 0o600);
    auditor_ok(&dir, &["report", "-o", "x.txt", "x.rec"]);
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
    auditor_ok(&dir, &["record", "-o", "whole.rec", "--", "true"]);
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
    let out = auditor_ok(&dir, &["report", "--format", "json", "whole.rec"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["complete"], true);
}

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// Pids and states of live processes whose command line mentions `needle`.
fn processes_running(needle: &str) -> Vec<(i32, char)> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(needle) {
            continue;
        }
        let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next())
            .unwrap_or('?');
        if state != 'Z' && state != 'X' {
            found.push((pid, state));
        }
    }
    found
}

/// Whatever a failed test leaves (its fixture's processes, mounts, loop
/// devices and directories under `dirs`) goes, so later tests start clean.
/// Only ours: other crashtests may be running on this host.
struct CleanUp {
    fixture: String,
    dirs: Vec<PathBuf>,
}

impl CleanUp {
    fn new(fixture_name: &str, dirs: Vec<PathBuf>) -> CleanUp {
        CleanUp {
            fixture: fixture(fixture_name).to_str().unwrap().to_owned(),
            dirs,
        }
    }

    fn ours(&self, path: &str) -> bool {
        self.dirs
            .iter()
            .any(|d| path.starts_with(d.to_str().unwrap()))
    }
}

impl Drop for CleanUp {
    fn drop(&mut self) {
        for (pid, _) in processes_running(&self.fixture) {
            // SAFETY: kill with a pid of a fixture of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
        for line in mountinfo().lines() {
            if let Some(m) = line.split(' ').nth(4).filter(|m| self.ours(m)) {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
        for line in loop_devices().lines() {
            if let Some((dev, rest)) = line.split_once(':')
                && self.dirs.iter().any(|d| rest.contains(d.to_str().unwrap()))
            {
                let _ = Command::new("losetup").args(["-d", dev]).status();
            }
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[test]
fn a_local_user_cannot_plant_the_crashtest_scratch_directory() {
    let dir = scratch("safety-plant");
    let victim_file = dir.join("victim-file");
    std::fs::write(&victim_file, b"precious").unwrap();
    let victim_dir = dir.join("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    let before: Vec<PathBuf> = crashtest_scratch_dirs()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    // nobody pre-creates auditor-crashtest-PID for the next pids to come,
    // with `mnt` and `run-0.img` pointing at the victims.
    let planted = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([PYTHON, "-B"])
        .arg(fixture("crash/plant.py"))
        .args(["/var/tmp", victim_dir.to_str().unwrap()])
        .args([victim_file.to_str().unwrap(), "500"])
        .status()
        .unwrap();
    assert!(planted.success());
    let planted: Vec<PathBuf> = crashtest_scratch_dirs()
        .into_iter()
        .filter(|(p, uid)| *uid == 65534 && !before.contains(p))
        .map(|(p, _)| p)
        .collect();
    let mut cleanup_dirs = planted.clone();
    cleanup_dirs.push(victim_dir.clone());
    let _cleanup = CleanUp::new("crash/unsynced_at_exit.py", cleanup_dirs);
    assert!(planted.len() >= 400, "planted {}", planted.len());

    let cmd = py("crash/unsynced_at_exit.py");
    let mut child = auditor_command(&dir, &["crashtest", "--keep", "--format", "json", "--"])
        .args(&cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let victim_mount = victim_dir.to_str().unwrap().to_owned();
    let mut mounted_on_victim = false;
    while child.try_wait().unwrap().is_none() {
        mounted_on_victim |= mountinfo()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&victim_mount));
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        std::fs::read(&victim_file).unwrap() == b"precious",
        "root wrote the user's chosen file: {stderr}"
    );
    assert!(!mounted_on_victim, "root mounted onto the user's directory");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for p in &planted {
        assert!(
            file_type(&p.join("mnt")).is_symlink(),
            "{} is not ours to touch",
            p.display()
        );
    }
    // The run's own directory: new, private, its kept image 0600.
    let kept: Vec<PathBuf> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("auditor: kept image "))
        .map(PathBuf::from)
        .collect();
    assert_eq!(kept.len(), 1, "{stderr}");
    let own = kept[0].parent().unwrap().to_path_buf();
    assert!(!planted.contains(&own));
    assert_eq!(mode(&kept[0]), 0o600);
    assert_eq!(mode(&own), 0o700);
    assert_eq!(std::fs::metadata(&own).unwrap().uid(), 0);
    assert!(
        !own.join("mnt").exists(),
        "a finished run's mount point goes"
    );
    std::fs::remove_dir_all(&own).unwrap();
}

#[test]
fn sigkill_of_crashtest_leaves_no_frozen_process_mount_loop_or_image() {
    require_root();
    let mut cleanup = CleanUp::new("crash/stopped_child.py", Vec::new());
    let fixture_path = cleanup.fixture.clone();
    let before: Vec<PathBuf> = crashtest_scratch_dirs()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let dir = scratch("safety-sigkill");
    let mut child = spawn_crashtest_at_renames(&dir, "crash/stopped_child.py", Stdio::null());
    // This run's scratch directory, mounted, and its stopped process.
    let start = Instant::now();
    let ours = loop {
        let new: Vec<PathBuf> = crashtest_scratch_dirs()
            .into_iter()
            .filter(|(p, uid)| *uid == 0 && !before.contains(p))
            .map(|(p, _)| p)
            .collect();
        if let [d] = new.as_slice()
            && mountinfo().contains(d.to_str().unwrap())
            && processes_running(&fixture_path)
                .iter()
                .any(|&(_, s)| s == 'T')
        {
            break d.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    cleanup.dirs.push(ours.clone());
    let ours_str = ours.to_str().unwrap().to_owned();
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    loop {
        let procs = processes_running(&fixture_path);
        let mounted = mountinfo().contains(&ours_str);
        let attached = loop_devices().contains(&ours_str);
        let exists = ours.exists();
        if procs.is_empty() && !mounted && !attached && !exists {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "left behind: processes {procs:?}, mounted {mounted}, loop {attached}, {ours_str} there {exists}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_later_crashtest_removes_what_a_killed_one_left() {
    require_root();
    // A pid that is gone: a child of ours, reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let stale = PathBuf::from(format!(
        "/var/tmp/auditor-crashtest-{gone_pid}-00112233445566ff"
    ));
    let _cleanup = CleanUp::new("crash/unsynced_at_exit_ok.py", vec![stale.clone()]);
    std::fs::create_dir(&stale).unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(stale.join("mnt")).unwrap();
    std::fs::write(stale.join("run-3.img"), b"the traced program's data").unwrap();
    let held = Tmpfs::mount(&stale.join("mnt"), "1m");
    std::mem::forget(held);
    let dir = scratch("safety-stale");
    let cmd = py("crash/unsynced_at_exit_ok.py");
    let mut args = vec!["crashtest", "--format", "json", "--"];
    args.extend(argv(&cmd));
    auditor_ok(&dir, &args);
    assert!(
        !mountinfo().contains(stale.to_str().unwrap()),
        "still mounted"
    );
    assert!(!stale.exists(), "stale scratch directory left");
}

#[test]
fn metrics_on_a_non_loopback_address_are_warned_about() {
    let dir = scratch("safety-metrics");
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let attach = |addr: &str| {
        auditor(
            &dir,
            &[
                "attach",
                "--pid",
                &pid,
                "--duration",
                "1s",
                "--metrics-addr",
                addr,
                "-o",
                "r.json",
            ],
        )
    };
    let open = attach("0.0.0.0:0");
    let quiet = attach("127.0.0.1:0");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let err = String::from_utf8_lossy(&open.stderr);
    assert_eq!(open.status.code(), Some(0), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("--metrics-addr 0.0.0.0:"), "{err}");
    assert!(warnings[0].contains("127.0.0.1"), "names the fix: {err}");
    let err = String::from_utf8_lossy(&quiet.stderr);
    assert_eq!(quiet.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
}
