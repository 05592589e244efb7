//! A terminal for the live view's tests: tmux, on a socket of its own.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

/// A tmux server of our own (its own socket), killed on drop, so tests
/// never touch anyone else's sessions. Each gets a fresh socket: a server
/// killed by the previous test may still be going away on the old one.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(dir: &Path, shell_cmd: &str) -> Tmux {
        static SERVERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmux = Tmux {
            socket: format!("auditor-e2e-{}-{n}", std::process::id()),
        };
        crate::succeed(
            tmux.cmd()
                .args([
                    "new-session",
                    "-d",
                    "-s",
                    "ui",
                    "-x",
                    "120",
                    "-y",
                    "40",
                    "-c",
                ])
                .arg(dir)
                .arg(shell_cmd),
        );
        tmux
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    pub fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "ui"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let status = self
            .cmd()
            .args(["send-keys", "-t", "ui"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn text(&self, text: &str) {
        let status = self
            .cmd()
            .args(["send-keys", "-t", "ui", "-l", text])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Polls the screen until `pred` holds; panics with the last screen.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .arg("kill-server")
            .stderr(std::process::Stdio::null())
            .status();
    }
}

pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The exit code a shell wrote to `exit.code` in `dir` once the command
/// it ran was gone.
pub fn exit_code(dir: &Path) -> i32 {
    let path = dir.join("exit.code");
    wait_for_file(&path);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if let Ok(code) = text.trim().parse() {
            return code;
        }
        assert!(Instant::now() < deadline, "exit.code holds {text:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
