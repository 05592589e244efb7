//! The programs the precision harness runs: Debian's own binaries, each in
//! a careless and a careful form where the program has one. Every run is
//! hermetic: its inputs are made here (untraced) in the scratch tree, which
//! is also its cwd, HOME and TMPDIR, and nothing touches the network.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::sh;

/// One program in one form.
pub struct Program {
    pub name: &'static str,
    pub form: &'static str,
    /// Makes the inputs in the scratch tree, untraced: they exist before the
    /// run and are not the program's data.
    pub setup: fn(&Path) -> Result<()>,
    /// Run by `/bin/sh -c` in the scratch tree.
    pub script: &'static str,
    pub env: Vec<(&'static str, String)>,
}

fn program(
    name: &'static str,
    form: &'static str,
    setup: fn(&Path) -> Result<()>,
    script: &'static str,
) -> Program {
    Program {
        name,
        form,
        setup,
        script,
        env: Vec::new(),
    }
}

fn with_env(mut p: Program, env: &[(&'static str, &str)]) -> Program {
    p.env.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    p
}

/// Every program and form, in the order the table shows them.
pub fn all() -> Vec<Program> {
    let git = |form, fsync: &[(&'static str, &str)]| {
        let mut env = vec![
            ("GIT_AUTHOR_NAME", "A"),
            ("GIT_AUTHOR_EMAIL", "a@example.invalid"),
            ("GIT_COMMITTER_NAME", "A"),
            ("GIT_COMMITTER_EMAIL", "a@example.invalid"),
            ("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z"),
            ("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
        ];
        env.extend_from_slice(fsync);
        with_env(
            program(
                "git",
                form,
                tree,
                "cd src && git init -q -b main && git add . && git commit -q -m one \
                 && git rm -q b.txt && git commit -q -m two && git gc -q",
            ),
            &env,
        )
    };
    let sqlite = |form, pragmas: &'static str| program("sqlite3", form, sqlite_input, pragmas);
    let saver = |form, script| program("json-save", form, json_savers, script);
    vec![
        git(
            "none",
            &[
                ("GIT_CONFIG_COUNT", "1"),
                ("GIT_CONFIG_KEY_0", "core.fsync"),
                ("GIT_CONFIG_VALUE_0", "none"),
            ],
        ),
        git(
            "all",
            &[
                ("GIT_CONFIG_COUNT", "2"),
                ("GIT_CONFIG_KEY_0", "core.fsync"),
                ("GIT_CONFIG_VALUE_0", "all"),
                ("GIT_CONFIG_KEY_1", "core.fsyncMethod"),
                ("GIT_CONFIG_VALUE_1", "fsync"),
            ],
        ),
        sqlite(
            "off",
            "sqlite3 -cmd 'PRAGMA journal_mode=DELETE' -cmd 'PRAGMA synchronous=OFF' test.db '.read work.sql'",
        ),
        sqlite(
            "full",
            "sqlite3 -cmd 'PRAGMA journal_mode=DELETE' -cmd 'PRAGMA synchronous=FULL' test.db '.read work.sql'",
        ),
        sqlite(
            "wal",
            "sqlite3 -cmd 'PRAGMA journal_mode=WAL' -cmd 'PRAGMA synchronous=FULL' test.db '.read work.sql'",
        ),
        saver("careless", "python3 -B careless.py"),
        saver("atomic", "python3 -B atomic.py"),
        // The careless saver, then killed by SIGKILL with its data unsynced.
        saver("killed", "python3 -B careless.py --kill; true"),
        program(
            "tar",
            "plain",
            tarball,
            "mkdir out && tar -xf tree.tar -C out",
        ),
        program(
            "tar",
            "sync",
            tarball,
            "mkdir out && tar -xf tree.tar -C out && sync",
        ),
        program(
            "tar",
            "syncfs",
            tarball,
            "mkdir out && tar -xf tree.tar -C out && sync -f out",
        ),
        program("cp", "plain", tree, "cp -r src dst"),
        program("cp", "sync", tree, "cp -r src dst && sync"),
        program("rsync", "plain", tree, "rsync -a src/ dst/"),
        program("rsync", "fsync", tree, "rsync -a --fsync src/ dst/"),
        program("sed", "plain", text, "sed -i s/alpha/beta/ notes.txt"),
        program(
            "sed",
            "sync",
            text,
            "sed -i s/alpha/beta/ notes.txt && sync",
        ),
        program(
            "install",
            "plain",
            script_file,
            "install -D -m 755 tool.sh bin/tool",
        ),
        // coreutils' sync with arguments fsyncs each: the file, then its directory.
        program(
            "install",
            "sync",
            script_file,
            "install -D -m 755 tool.sh bin/tool && sync bin/tool bin",
        ),
        program(
            "dd",
            "plain",
            blob,
            "dd if=in.bin of=out.bin bs=64k status=none",
        ),
        program(
            "dd",
            "fsync",
            blob,
            "dd if=in.bin of=out.bin bs=64k status=none conv=fsync",
        ),
        program(
            "ex",
            "nofsync",
            text,
            "ex -s -u NONE -i NONE -n -c 'set nofsync' -c '%s/alpha/beta/' -c wq notes.txt",
        ),
        program(
            "ex",
            "fsync",
            text,
            "ex -s -u NONE -i NONE -n -c 'set fsync' -c '%s/alpha/beta/' -c wq notes.txt",
        ),
        program(
            "logrotate",
            "default",
            logs,
            "logrotate -f -s state logrotate.conf",
        ),
        program(
            "initdb",
            "no-sync",
            for_nobody,
            "setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
             /usr/lib/postgresql/15/bin/initdb -D data -A trust -U postgres --no-instructions --no-sync",
        ),
        program(
            "initdb",
            "sync",
            for_nobody,
            "setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
             /usr/lib/postgresql/15/bin/initdb -D data -A trust -U postgres --no-instructions",
        ),
        program(
            "lmdb",
            "default",
            lmdb_input,
            "mkdir db && mdb_load -T -f pairs.txt db",
        ),
        program("dpkg-deb", "plain", deb, "dpkg-deb -x pkg.deb root"),
        program("dpkg-deb", "sync", deb, "dpkg-deb -x pkg.deb root && sync"),
        with_env(
            program(
                "restic",
                "default",
                tree,
                "restic -q -r repo init && restic -q -r repo backup --no-cache src",
            ),
            &[
                ("RESTIC_PASSWORD", "precision"),
                ("RESTIC_CACHE_DIR", "cache"),
            ],
        ),
        program(
            "venv",
            "default",
            nothing,
            "python3 -m venv --without-pip venv",
        ),
    ]
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    Ok(std::fs::write(path, text)?)
}

fn nothing(_: &Path) -> Result<()> {
    Ok(())
}

/// A small source tree: a few files and a subdirectory.
fn tree(w: &Path) -> Result<()> {
    write(&w.join("src/a.txt"), "alpha\n")?;
    write(&w.join("src/b.txt"), &"bravo\n".repeat(200))?;
    write(&w.join("src/sub/c.txt"), "charlie\n")?;
    write(&w.join("src/sub/d.bin"), &"d".repeat(70_000))
}

fn tarball(w: &Path) -> Result<()> {
    tree(w)?;
    sh(Command::new("tar")
        .current_dir(w)
        .args(["-cf", "tree.tar", "-C", "src", "."]))?;
    Ok(std::fs::remove_dir_all(w.join("src"))?)
}

fn text(w: &Path) -> Result<()> {
    write(&w.join("notes.txt"), &"alpha one\nalpha two\n".repeat(50))
}

fn script_file(w: &Path) -> Result<()> {
    write(&w.join("tool.sh"), "#!/bin/sh\necho tool\n")
}

fn blob(w: &Path) -> Result<()> {
    write(&w.join("in.bin"), &"0123456789abcdef".repeat(16_384))
}

const SQL: &str = "\
CREATE TABLE accounts(id INTEGER PRIMARY KEY, name TEXT, balance INTEGER);
BEGIN;
INSERT INTO accounts(name, balance) VALUES ('a', 10), ('b', 20), ('c', 30);
COMMIT;
UPDATE accounts SET balance = balance * 2;
INSERT INTO accounts(name, balance) SELECT name || '2', balance FROM accounts;
";

fn sqlite_input(w: &Path) -> Result<()> {
    write(&w.join("work.sql"), SQL)
}

/// Saves a small JSON state three times by rewriting the file in place.
const CARELESS: &str = r#"import json, os, signal, sys
state = {"version": 0, "items": []}
for i in range(3):
    state["version"] = i
    state["items"].append("item %d" % i)
    with open("state.json", "w") as f:
        json.dump(state, f)
if "--kill" in sys.argv:
    os.kill(os.getpid(), signal.SIGKILL)
"#;

/// The same saves, each to a temporary file fsynced, renamed over the old
/// one, and the directory fsynced.
const ATOMIC: &str = r#"import json, os
def save(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    d = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(d)
    finally:
        os.close(d)
state = {"version": 0, "items": []}
for i in range(3):
    state["version"] = i
    state["items"].append("item %d" % i)
    save("state.json", state)
"#;

fn json_savers(w: &Path) -> Result<()> {
    write(&w.join("careless.py"), CARELESS)?;
    write(&w.join("atomic.py"), ATOMIC)
}

fn logs(w: &Path) -> Result<()> {
    write(&w.join("logs/app.log"), &"a log line\n".repeat(100))?;
    let conf = format!(
        "{}/logs/app.log {{\n    rotate 2\n    create\n    missingok\n}}\n",
        w.canonicalize()?.display()
    );
    write(&w.join("logrotate.conf"), &conf)
}

/// initdb refuses to run as root: the tree belongs to nobody.
fn for_nobody(w: &Path) -> Result<()> {
    sh(Command::new("chown").args(["-R", "nobody:nogroup"]).arg(w))?;
    // Every ancestor must let nobody through.
    let mut d = w.parent();
    while let Some(p) = d {
        let mode = p.metadata()?.permissions().mode();
        if mode & 0o001 == 0 {
            anyhow::bail!(
                "{} is not searchable by other users: initdb cannot run as nobody",
                p.display()
            );
        }
        d = p.parent();
    }
    Ok(())
}

fn lmdb_input(w: &Path) -> Result<()> {
    let mut pairs = String::new();
    for i in 0..200 {
        pairs.push_str(&format!("key{i:04}\nvalue number {i}\n"));
    }
    write(&w.join("pairs.txt"), &pairs)
}

/// A tiny package built here, with a file in two directories.
fn deb(w: &Path) -> Result<()> {
    let p = w.join("pkg");
    write(
        &p.join("DEBIAN/control"),
        "Package: precision-demo\nVersion: 1.0\nArchitecture: all\nMaintainer: A <a@example.invalid>\nDescription: demo\n",
    )?;
    write(&p.join("usr/bin/demo"), "#!/bin/sh\necho demo\n")?;
    write(
        &p.join("usr/share/doc/precision-demo/README"),
        &"readme\n".repeat(100),
    )?;
    sh(Command::new("dpkg-deb")
        .current_dir(w)
        .args(["--root-owner-group", "-Zgzip", "-b", "pkg", "pkg.deb"])
        .stdout(std::process::Stdio::null()))?;
    Ok(std::fs::remove_dir_all(p)?)
}
