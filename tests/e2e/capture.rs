//! The probes capture what programs really do: kinds, order, paths,
//! identities equal to `stat`, byte counts, return values, process tree and
//! signals; untraced processes stay invisible.

use auditor_e2e::*;
use serde_json::Value;

fn path_is(ev: &Value, key: &str, want: &std::path::Path) -> bool {
    ev[key].as_str() == Some(want.to_str().unwrap())
}

#[test]
fn write_then_fsync_through_dup_then_rename() {
    let dir = scratch("dup_fsync_rename");
    let evs = events(&dir, &argv(&py("dup_fsync_rename.py")));
    let tmp = dir.join("data.tmp");
    let open = evs
        .iter()
        .find(|e| e["type"] == "open" && path_is(e, "path", &tmp))
        .expect("open of data.tmp with an absolute path");
    assert_eq!(
        open["flags"].as_u64().unwrap() & 0o1100,
        0o1100,
        "O_CREAT|O_TRUNC seen"
    );
    assert_eq!(open["file"]["created"], true);
    let fd = open["ret"].as_i64().unwrap();
    let id = event_identity(open);
    assert_eq!(
        id,
        identity(&dir.join("data")),
        "kernel identity equals stat of the file"
    );
    assert_eq!(open["file"]["fs"], "ext4");

    let on_file: Vec<&Value> = evs
        .iter()
        .filter(|e| e["file"]["id"].is_object() && event_identity(e) == id)
        .collect();
    let kinds: Vec<String> = on_file
        .iter()
        .map(|e| {
            e["call"]
                .as_str()
                .unwrap_or(e["type"].as_str().unwrap())
                .to_owned()
        })
        .collect();
    let want = [
        "openat", "write", "pwrite64", "writev", "fcntl", "fsync", "close", "close", "rename",
    ];
    // Python's os.dup is fcntl(F_DUPFD_CLOEXEC); the order is what matters.
    assert_eq!(kinds, want, "calls on the file, in order");
    assert_eq!(
        (on_file[4]["type"].as_str(), on_file[4]["cloexec"].as_bool()),
        (Some("dup"), Some(true)),
        "fcntl(F_DUPFD_CLOEXEC) is a dup"
    );
    let write = on_file[1];
    assert_eq!(
        (
            write["fd"].as_i64(),
            write["requested"].as_u64(),
            write["ret"].as_i64()
        ),
        (Some(fd), Some(11), Some(11))
    );
    assert_eq!(on_file[2]["offset"].as_i64(), Some(0));
    assert_eq!(on_file[2]["ret"].as_i64(), Some(5));
    assert_eq!(on_file[3]["ret"].as_i64(), Some(4));
    let dup_fd = on_file[4]["ret"].as_i64().unwrap();
    let fsync = on_file[5];
    assert_eq!(
        (fsync["fd"].as_i64(), fsync["ret"].as_i64()),
        (Some(dup_fd), Some(0))
    );

    let rename = of_type(&evs, "rename");
    let rename = rename
        .iter()
        .find(|e| path_is(e, "old_path", &tmp))
        .expect("rename seen");
    assert!(path_is(rename, "new_path", &dir.join("data")));
    assert_eq!(rename["ret"].as_i64(), Some(0));
    assert_eq!(
        event_identity(rename),
        id,
        "rename knows the inode it moved"
    );
    // Kernel order: the rename comes after the last close.
    let seq = |e: &Value| e["seq"].as_u64().unwrap();
    assert!(seq(rename) > seq(on_file[7]));
}

#[test]
fn fsync_from_another_process_has_the_same_identity() {
    let dir = scratch("fsync_other_process");
    let evs = events(&dir, &argv(&py("fsync_other_process.py")));
    let id = identity(&dir.join("shared.dat"));
    let write = evs
        .iter()
        .find(|e| e["type"] == "write" && e["file"]["id"].is_object() && event_identity(e) == id)
        .expect("write to shared.dat");
    let fsync = evs
        .iter()
        .find(|e| e["call"] == "fsync" && event_identity(e) == id)
        .expect("fsync of shared.dat from the child");
    assert_ne!(write["pid"], fsync["pid"], "two different processes");
    assert_eq!(write["requested"].as_u64(), Some(1000));
    assert_eq!(fsync["ret"].as_i64(), Some(0));
}

#[test]
fn forks_execs_and_threads_are_followed() {
    let dir = scratch("fork_exec_threads");
    let evs = events(&dir, &argv(&py("fork_exec_threads.py")));
    let main_pid = evs[0]["pid"].as_u64().unwrap();
    assert_eq!(evs[0]["type"], "process_start");
    let forks = of_type(&evs, "fork");
    let thread = forks
        .iter()
        .find(|f| f["pid"].as_u64() == Some(main_pid) && f["thread"] == true);
    let thread = thread.expect("thread creation seen");
    assert_eq!(thread["child_pid"].as_u64(), Some(main_pid));
    assert_eq!(thread["shares_files"], true);
    let child = forks
        .iter()
        .find(|f| f["pid"].as_u64() == Some(main_pid) && f["thread"] == false)
        .expect("child process seen");
    let child_pid = child["child_pid"].as_u64().unwrap();
    let thread_tid = thread["child_tid"].as_u64().unwrap();

    let by_thread = evs
        .iter()
        .find(|e| e["type"] == "open" && path_is(e, "path", &dir.join("from_thread.txt")))
        .expect("thread's open");
    assert_eq!(by_thread["tid"].as_u64(), Some(thread_tid));
    assert!(
        evs.iter().any(|e| e["type"] == "exec"
            && e["pid"].as_u64() == Some(child_pid)
            && e["filename"].as_str().unwrap().ends_with("sh")),
        "exec of sh in the child"
    );
    let by_child = evs
        .iter()
        .find(|e| e["type"] == "open" && path_is(e, "path", &dir.join("from_child.txt")))
        .expect("child's open, path made absolute against its cwd");
    assert_eq!(by_child["pid"].as_u64(), Some(child_pid));
    let exits = of_type(&evs, "exit");
    assert!(exits.iter().any(|e| e["pid"].as_u64() == Some(child_pid)
        && e["group_dead"] == true
        && e["code"] == 0));
    assert!(
        exits
            .iter()
            .any(|e| e["tid"].as_u64() == Some(thread_tid) && e["group_dead"] == false)
    );
}

#[test]
fn sigkill_from_a_sibling_names_sender_and_target() {
    let dir = scratch("sibling_kill");
    let evs = events(&dir, &argv(&py("sibling_kill.py")));
    let sent: Vec<&Value> = of_type(&evs, "signal_sent")
        .into_iter()
        .filter(|e| e["signal"] == 9)
        .collect();
    assert_eq!(sent.len(), 1, "one SIGKILL: {sent:?}");
    let kill = sent[0];
    let target = kill["target_pid"].as_u64().unwrap();
    let sender = kill["pid"].as_u64().unwrap();
    assert_ne!(target, sender);
    let forks = of_type(&evs, "fork");
    let children: Vec<u64> = forks
        .iter()
        .filter(|f| f["thread"] == false)
        .map(|f| f["child_pid"].as_u64().unwrap())
        .collect();
    assert!(
        children.contains(&target) && children.contains(&sender),
        "both are children of the fixture"
    );
    assert_eq!(kill["result"].as_i64(), Some(0), "delivered");
    let death = of_type(&evs, "exit")
        .into_iter()
        .find(|e| e["pid"].as_u64() == Some(target) && e["group_dead"] == true)
        .expect("target's exit");
    assert_eq!(death["signal"].as_i64(), Some(9));
}

#[test]
fn untraced_process_produces_no_events() {
    let dir = scratch("untraced");
    let mut bystander = std::process::Command::new(PYTHON)
        .current_dir(&dir)
        .args([
            "-B",
            fixture("write_loop.py").to_str().unwrap(),
            "untraced.txt",
            "3",
        ])
        .spawn()
        .unwrap();
    let loop_py = fixture("write_loop.py");
    let evs = events(
        &dir,
        &[PYTHON, "-B", loop_py.to_str().unwrap(), "traced.txt", "1"],
    );
    bystander.wait().unwrap();
    let bystander_pid = bystander.id() as u64;
    assert!(
        evs.iter().all(|e| e["pid"].as_u64() != Some(bystander_pid)),
        "no event from the bystander"
    );
    let id = identity(&dir.join("untraced.txt"));
    assert!(
        evs.iter()
            .all(|e| !e["file"]["id"].is_object() || event_identity(e) != id),
        "no event on the bystander's file"
    );
    let traced = of_type(&evs, "write").len();
    assert!(
        traced >= 50,
        "the traced writer was captured ({traced} writes)"
    );
}
