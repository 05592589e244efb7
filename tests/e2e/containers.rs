//! Host paths inside chroots, private mount namespaces and containers: the
//! real `chroot` and `unshare --mount --root`, and a real dockerd (Debian's
//! docker.io) started here on private directories, attached to by pid while
//! it loads an image (its `docker-untar` re-exec pivots into the layer
//! directory) and by cgroup while a container writes to its root and to a
//! bind-mounted volume. Every finding must name a path one can `ls` on the
//! host, with the path the process used beside it.

use std::{
    io::{BufRead, BufReader},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use auditor_e2e::*;
use serde_json::Value;

const BUSYBOX: &str = "/bin/busybox";
const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";

/// The careless way to replace a file, from inside the jail.
const REPLACE: &str =
    "echo root:x:0:0::/:/bin/sh > /etc/passwd.tmp && mv /etc/passwd.tmp /etc/passwd";

/// A root directory holding busybox and an /etc/passwd.
fn jail(dir: &Path) -> PathBuf {
    let j = dir.join("jail");
    std::fs::create_dir_all(j.join("bin")).unwrap();
    std::fs::create_dir_all(j.join("etc")).unwrap();
    std::fs::copy(BUSYBOX, j.join("bin/busybox")).unwrap();
    std::fs::write(j.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
    j
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The rename inside the jail is reported at its host path, by the binary
/// that ran it, with the jail's own path beside it.
fn assert_replaced_in(jail: &Path, report: &Value) {
    let f = the_finding(report, "rename-without-fsync");
    let passwd = jail.join("etc/passwd");
    assert_eq!(f["path"], s(&passwd), "{f:#}");
    assert_eq!(f["path_in_process"], "/etc/passwd");
    assert!(f.get("host_path_unknown").is_none(), "{f:#}");
    assert_eq!(f["process"]["exe"], s(&jail.join("bin/busybox")));
    assert!(passwd.exists());
    let dir = the_finding(report, "rename-without-dir-fsync");
    assert_eq!(dir["path"], s(&passwd));
    assert_eq!(dir["evidence"]["directory"], s(&jail.join("etc")));
}

#[test]
fn a_rename_under_chroot_is_named_on_the_host() {
    let dir = scratch("containers_chroot");
    let j = jail(&dir);
    let run = run_report(
        &dir,
        &[],
        &["chroot", s(&j), "/bin/busybox", "sh", "-c", REPLACE],
    );
    assert_replaced_in(&j, &run.report);
}

#[test]
fn a_rename_under_unshare_mount_root_is_named_on_the_host() {
    let dir = scratch("containers_unshare");
    let j = jail(&dir);
    let root = format!("--root={}", s(&j));
    let run = run_report(&dir, &[], &unshare_sh(&root, REPLACE));
    assert_replaced_in(&j, &run.report);
}

/// `unshare --mount <root> busybox sh -c <script>`: the script in a mount
/// namespace of its own, under `root` (`--root=...`).
fn unshare_sh<'a>(root: &'a str, script: &'a str) -> [&'a str; 7] {
    [
        "unshare",
        "--mount",
        root,
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]
}

/// Opens the FIFO at `fifo` for writing once a reader has it open, and
/// after `hold` lets that reader go on.
fn release_after(fifo: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let fifo = fifo.to_path_buf();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            // Without a reader a non-blocking open fails (ENXIO).
            let open = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo);
            if let Ok(mut f) = open {
                std::thread::sleep(hold);
                let _ = f.write_all(b"go\n");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// The shell waits inside the jail (on a FIFO there) long after its exec,
/// so /proc is read while it runs: its view comes from its mount table,
/// which under a root that is no mount point lists nothing, and must name
/// the jail as its own calls do. A recording shows that view; its report
/// is the live one.
#[test]
fn a_rename_under_unshare_mount_root_is_named_on_the_host_from_proc() {
    let dir = scratch("containers_unshare_proc");
    let j = jail(&dir);
    let fifo = j.join("go");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let release = release_after(&fifo, Duration::from_secs(1));
    let root = format!("--root={}", s(&j));
    let script = format!("read go < /go && {REPLACE}");
    record_run(&dir, &unshare_sh(&root, &script));
    release.join().unwrap();
    let recording = std::fs::read_to_string(dir.join("run.rec")).unwrap();
    let views: Vec<Value> = recording
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "view")
        .collect();
    let want = serde_json::json!([{ "at": "/", "host": s(&j) }]);
    assert!(
        views
            .iter()
            .any(|v| v["mounts"] == want && v["private"] == true),
        "no view naming the jail from /proc: {views:#?}"
    );
    assert_replaced_in(&j, &replay_run(&dir));
}

// ------------------------------------------------------------------ dockerd

/// Mount points under `dir`, deepest first, from our mount table.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", s(dir));
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&prefix))
        .map(PathBuf::from)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    points
}

/// Pids whose command line names `dir`: the containerd and shims a dockerd
/// of ours started there.
fn processes_under(dir: &Path) -> Vec<i32> {
    let needle = s(dir).as_bytes().to_vec();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            pids.push(pid);
        }
    }
    pids
}

/// Leaves nothing of a dockerd of ours under `dir`: its processes, its
/// mounts (overlays, the containers' shm), then the directory.
fn clean(dir: &Path) {
    for pid in processes_under(dir) {
        // SAFETY: kill has no memory preconditions; these are ours.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for point in mounts_under(dir) {
        let c = std::ffi::CString::new(point.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path of a mount made by our daemon.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A dockerd of our own: data root, exec root and socket in a scratch
/// directory, no iptables or bridge. Dropping it stops it and cleans up,
/// a failed test included.
struct Dockerd {
    dir: PathBuf,
    root: PathBuf,
    sock: String,
    child: Child,
}

impl Dockerd {
    fn start(dir: &Path) -> Dockerd {
        let root = dir.join("root");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let sock = format!("unix://{}", s(&dir.join("docker.sock")));
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(&root)
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args(["--host", &sock, "--iptables=false", "--bridge=none"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let d = Dockerd {
            dir: dir.to_owned(),
            root,
            sock,
            child,
        };
        let t0 = Instant::now();
        while !d.docker(&["version"]).status.success() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "dockerd did not answer: {}",
                std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .args(["-H", &self.sock])
            .args(args)
            .output()
            .expect("running docker")
    }

    /// `docker args`, which must succeed; its output, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        // SAFETY: our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while self.running() && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        clean(&self.dir);
    }
}

/// An `auditor attach` running in the background.
struct Attached {
    child: Child,
    out: PathBuf,
    stderr: mpsc::Receiver<String>,
}

impl Attached {
    /// Starts `auditor attach <selectors>` with a JSON report and waits
    /// until it says it is attached.
    fn start(dir: &Path, name: &str, selectors: &[&str]) -> Attached {
        require_root();
        let out = dir.join(format!("{name}.json"));
        let mut child = Command::new(auditor_bin())
            .current_dir(dir)
            .arg("attach")
            .args(selectors)
            .args(["--format", "json", "--output", s(&out)])
            .stderr(Stdio::piped())
            .spawn()
            .expect("running auditor attach");
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let a = Attached { child, out, stderr };
        let t0 = Instant::now();
        loop {
            match a.stderr.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.contains("attached to") => break,
                Ok(_) => {}
                Err(e) => panic!("auditor attach did not attach: {e}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "not attached");
        }
        a
    }

    /// Waits for it to end (after a SIGINT when `interrupt`); exit code
    /// and report.
    fn finish(mut self, interrupt: bool) -> (i32, Value) {
        if interrupt {
            // SAFETY: our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        }
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("auditor attach did not end");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let rest: Vec<String> = self.stderr.try_iter().collect();
        let code = status.code().expect("auditor killed by a signal");
        assert!(code == 0 || code == 1, "auditor error {code}: {rest:?}");
        let doc = serde_json::from_slice(&std::fs::read(&self.out).unwrap()).expect("JSON");
        (code, doc)
    }
}

/// A one-layer image made here: busybox and an /etc/motd, imported, saved
/// to `tiny.tar` and removed, so a `docker load` of it unpacks the layer.
fn saved_image(d: &Dockerd, dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), "hello from the layer\n").unwrap();
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let import = Command::new(DOCKER)
        .args(["-H", &d.sock, "import", "-", "auditor-e2e:tiny"])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let saved = dir.join("tiny.tar");
    d.ok(&["save", "-o", s(&saved), "auditor-e2e:tiny"]);
    d.ok(&["rmi", "auditor-e2e:tiny"]);
    saved
}

fn by_rule<'a>(report: &'a Value, rule: &str, path: &Path) -> &'a Value {
    findings(report, rule)
        .into_iter()
        .find(|f| f["path"] == s(path))
        .unwrap_or_else(|| panic!("no {rule} on {}: {:#}", path.display(), report["findings"]))
}

#[test]
fn dockerd_load_and_a_container_are_named_on_the_host() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e/containers_docker");
    clean(&dir);
    let dir = scratch("containers_docker");
    let mut d = Dockerd::start(&dir);
    let image = saved_image(&d, &dir);

    // docker load, attached to dockerd by pid.
    let pid = d.pid().to_string();
    let attached = Attached::start(&dir, "load", &["--pid", &pid]);
    d.ok(&["load", "-i", s(&image)]);
    let (_, report) = attached.finish(true);
    assert!(d.running(), "dockerd survived the attach");
    let upper = PathBuf::from(d.ok(&[
        "image",
        "inspect",
        "-f",
        "{{.GraphDriver.Data.UpperDir}}",
        "auditor-e2e:tiny",
    ]));
    assert!(upper.starts_with(&d.root), "{}", upper.display());
    for (name, seen) in [("etc/motd", "/etc/motd"), ("bin/busybox", "/bin/busybox")] {
        let host = upper.join(name);
        let f = by_rule(&report, "unsynced-at-exit", &host);
        assert_eq!(f["path_in_process"], seen, "{f:#}");
        assert_eq!(f["process"]["argv"][0], "docker-untar", "{f:#}");
        assert_eq!(f["process"]["exe"], DOCKERD, "the binary it re-ran: {f:#}");
        assert!(host.exists(), "{} is on the host", host.display());
    }
    let commit = findings(&report, "commit-before-data")
        .into_iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.contains("/image/overlay2/layerdb/sha256/"))
        })
        .unwrap_or_else(|| panic!("no commit-before-data: {:#}", report["findings"]));
    assert_eq!(commit["severity"], "medium");
    assert_eq!(commit["process"]["pid"].as_u64(), Some(d.pid() as u64));
    let data: Vec<&str> = commit["evidence"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    for name in ["etc/motd", "bin/busybox"] {
        assert!(data.contains(&s(&upper.join(name))), "{commit:#}");
    }
    let untar = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["argv"][0] == "docker-untar" && p["argv"][2].as_str().is_some_and(|a| a == s(&upper))
        })
        .unwrap_or_else(|| panic!("no docker-untar life: {:#}", report["processes"]));
    assert_eq!(untar["ppid"].as_u64(), Some(d.pid() as u64));
    assert_eq!(untar["exe"], DOCKERD);

    // A container writing to its root and to a volume, attached by cgroup.
    let vol = dir.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    let mount = format!("{}:/data", s(&vol));
    let script = "while [ ! -e /data/go ]; do /bin/busybox sleep 0.1; done; \
                  echo a > /rootfile; echo b > /data/volfile";
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "auditor-e2e-writer",
        "-v",
        &mount,
        "auditor-e2e:tiny",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    let attached = Attached::start(&dir, "container", &["--cgroup", &id]);
    std::fs::write(vol.join("go"), "").unwrap();
    let (_, report) = attached.finish(false);
    assert_eq!(d.ok(&["wait", &id]), "0", "the container ended well");
    let upper = PathBuf::from(d.ok(&["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", &id]));
    for (host, seen) in [
        (upper.join("rootfile"), "/rootfile"),
        (vol.join("volfile"), "/data/volfile"),
    ] {
        let f = by_rule(&report, "unsynced-at-exit", &host);
        assert_eq!(f["path_in_process"], seen, "{f:#}");
        assert_eq!(f["container"]["id"], id, "{f:#}");
        assert_eq!(f["container"]["name"], "auditor-e2e-writer", "{f:#}");
        assert!(host.exists(), "{} is on the host", host.display());
    }
    let lives = report["processes"].as_array().unwrap();
    assert!(
        lives.iter().all(|l| l["container_id"] == id.as_str()),
        "{lives:#?}"
    );
    assert!(d.running(), "dockerd survived");
}
