//! Which call a finding points at, and so which stack it shows: the
//! rename that placed the data, the first unsynced write, the create, the
//! failed fsync.

use crate::finding::{CallRef, Finding};

/// Writes that put data at risk.
const WRITES: &[&str] = &[
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "copy_file_range",
    "sendfile",
];

/// The syscalls whose call a rule's finding is about, and whether the last
/// of them (a rename placing the data) or the first (the first unsynced
/// write) is the one.
fn key_calls(rule: &str) -> (&'static [&'static str], bool) {
    match rule {
        "rename-without-fsync" | "rename-without-dir-fsync" => {
            (&["rename", "renameat", "renameat2", "link", "linkat"], true)
        }
        "create-without-dir-fsync" => (
            &[
                "open", "openat", "openat2", "creat", "mkdir", "mkdirat", "link", "linkat",
            ],
            false,
        ),
        "unlink-without-dir-fsync" => (&["unlink", "unlinkat"], true),
        "truncate-in-place" => (
            &[
                "truncate",
                "ftruncate",
                "open",
                "openat",
                "openat2",
                "creat",
            ],
            false,
        ),
        "fsync-error-ignored" => (&["fsync", "fdatasync"], false),
        "sync-file-range-only" => (&["sync_file_range"], false),
        _ => (WRITES, false),
    }
}

fn syscall_name(call: &str) -> &str {
    call.split('(').next().unwrap_or(call)
}

/// Gives `f` the stack of the call it is about (see [`key_calls`]), when
/// that call's stack was taken. A failed fsync is the one ignored.
pub fn locate(f: &mut Finding) {
    if f.stack.is_some() {
        return;
    }
    let (names, last) = key_calls(&f.rule);
    let fits = |c: &&CallRef| {
        names.contains(&syscall_name(&c.call))
            && (f.rule != "fsync-error-ignored" || c.call.contains("= -"))
    };
    let call = if last {
        f.calls.iter().rev().find(fits)
    } else {
        f.calls.iter().find(fits)
    };
    f.stack = call.and_then(|c| c.stack.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::{Frame, Stack};

    fn frame(function: &str) -> Frame {
        Frame {
            address: 0x1000,
            function: Some(function.into()),
            object: Some("/app".into()),
            ..Frame::default()
        }
    }

    fn call(text: &str, stack: Option<Stack>) -> CallRef {
        CallRef {
            seq: 1,
            ts_ns: 1,
            pid: 1,
            tid: 1,
            comm: "app".into(),
            call: text.into(),
            stack: stack.map(std::sync::Arc::new),
        }
    }

    fn at(function: &str) -> Option<Stack> {
        Some(Stack {
            frames: vec![frame(function)],
            ..Stack::default()
        })
    }

    /// A finding takes the stack of the call it is about: the rename that
    /// placed the data, the first unsynced write, the failed fsync.
    #[test]
    fn findings_take_the_stack_of_their_own_call() {
        let finding = |rule: &str, calls: Vec<CallRef>| {
            let mut f = Finding::new(
                rule,
                crate::finding::Severity::High,
                "/d/a",
                None,
                crate::finding::ProcessRef {
                    pid: 1,
                    comm: "app".into(),
                    exe: None,
                    argv: Default::default(),
                },
                "",
            );
            f.calls = calls;
            locate(&mut f);
            f.stack.map(|s| s.frames[0].function.clone().unwrap())
        };
        let chain = || {
            vec![
                call("openat(\"/d/a.tmp\", O_WRONLY|O_CREAT) = 3", at("create")),
                call("write(fd=3, 10) = 10", at("first_write")),
                call("write(fd=3, 10) = 10", at("second_write")),
                call("fsync(fd=3) = -5", at("failed_fsync")),
                call("rename(\"/d/a.tmp\", \"/d/a\") = 0", at("first_rename")),
                call("rename(\"/d/b\", \"/d/a\") = 0", at("last_rename")),
            ]
        };
        for (rule, function) in [
            ("rename-without-fsync", "last_rename"),
            ("unsynced-at-exit", "first_write"),
            ("create-without-dir-fsync", "create"),
            ("fsync-error-ignored", "failed_fsync"),
        ] {
            assert_eq!(finding(rule, chain()).as_deref(), Some(function), "{rule}");
        }
        assert_eq!(
            finding("unsynced-at-exit", vec![call("exit_group(0)", at("x"))]),
            None
        );
        let mut no_stack = chain();
        no_stack[5].stack = None;
        assert_eq!(
            finding("rename-without-fsync", no_stack),
            None,
            "no stack of another call stands in"
        );
    }
}
