//! Where in the code: each finding carries the stack of the call that put
//! the data at risk, unwound and symbolized while the process lived. Real
//! programs built here with real compilers: C with and without frame
//! pointers, Rust, Go; a child that exits right after the bad call; a hot
//! loop (one copy, then only names); and `--no-stacks`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use auditor_e2e::*;
use serde_json::Value;

/// The 1-based line of `source` holding `marker`.
fn line_of(source: &Path, marker: &str) -> u64 {
    let text = std::fs::read_to_string(source).unwrap();
    text.lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} not in {}", source.display())) as u64
        + 1
}

/// A C fixture compiled into `dir` with `flags`.
fn gcc(dir: &Path, source: &str, flags: &[&str]) -> PathBuf {
    let exe = dir.join(source.trim_end_matches(".c"));
    succeed(
        Command::new("gcc")
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(fixture(&format!("stacks/{source}"))),
    );
    exe
}

/// A fresh scratch directory `name` (this needs root) with the C fixture
/// `source` built in it by gcc with `flags`: the directory, the binary and
/// the source's path.
fn built_c(name: &str, source: &str, flags: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    require_root();
    let dir = scratch(name);
    let exe = gcc(&dir, source, flags);
    (dir, exe, fixture(&format!("stacks/{source}")))
}

/// The finding of `rule` on `path`.
fn finding<'a>(report: &'a Value, rule: &str, path: &Path) -> &'a Value {
    findings(report, rule)
        .into_iter()
        .find(|f| f["path"] == path.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {rule} on {}: {:#}", path.display(), report["findings"]))
}

/// The frames of a finding's stack.
fn frames(f: &Value) -> &Vec<Value> {
    f["stack"]["frames"]
        .as_array()
        .unwrap_or_else(|| panic!("finding without a stack: {f:#}"))
}

/// Index of the first frame whose function satisfies `pred`.
fn frame_at(frames: &[Value], pred: impl Fn(&str) -> bool) -> usize {
    frames
        .iter()
        .position(|fr| fr["function"].as_str().is_some_and(&pred))
        .unwrap_or_else(|| panic!("no such frame in {frames:#?}"))
}

/// The frame names `function` at `file`:`line`.
fn assert_at(frame: &Value, file_suffix: &str, line: u64) {
    assert!(
        frame["file"]
            .as_str()
            .is_some_and(|f| f.ends_with(file_suffix)),
        "{frame:#}"
    );
    assert_eq!(frame["line"], line, "{frame:#}");
}

/// The stack of the rename-without-fsync finding on `path`, and the index
/// of its first frame in a function `pred` accepts: that frame must name
/// the line of `source` marked RENAME-LINE.
fn renamed_in<'a>(
    report: &'a Value,
    path: &Path,
    source: &Path,
    pred: impl Fn(&str) -> bool,
) -> (&'a [Value], usize) {
    let fr = frames(finding(report, "rename-without-fsync", path));
    let at = frame_at(fr, pred);
    let name = source.file_name().unwrap().to_str().unwrap();
    assert_at(&fr[at], name, line_of(source, "RENAME-LINE"));
    (fr, at)
}

/// The careless save, in a child that exits at once and in the process
/// itself, names `save_state` and the rename's line, then its caller.
fn c_names_function_and_line(name: &str, flags: &[&str]) {
    let (dir, exe, source) = built_c(name, "save.c", flags);
    let run = run_report(&dir, &[], &[exe.to_str().unwrap(), dir.to_str().unwrap()]);
    for (file, call) in [
        ("child.json", "CHILD-CALL-LINE"),
        ("state.json", "MAIN-CALL-LINE"),
    ] {
        let (fr, at) = renamed_in(&run.report, &dir.join(file), &source, |func| {
            func == "save_state"
        });
        assert_eq!(fr[at]["object"], exe.to_str().unwrap());
        let caller = frame_at(fr, |func| func == "main");
        assert!(caller > at, "main calls save_state: {fr:#?}");
        assert_at(&fr[caller], "save.c", line_of(&source, call));
        // The frame before save_state is the C library's wrapper.
        assert!(at >= 1 && fr[0]["function"] == "rename", "{fr:#?}");
    }
    assert!(run.report["stats"]["stacks"].as_u64().unwrap() >= 2);
    assert_eq!(run.report["stats"]["stacks_lost"], 0);
}

#[test]
fn c_with_frame_pointers_names_the_function_and_line() {
    c_names_function_and_line("stacks_c_o0", &["-g", "-O0", "-fno-omit-frame-pointer"]);
}

#[test]
fn c_without_frame_pointers_names_the_function_and_line() {
    c_names_function_and_line("stacks_c_o2", &["-g", "-O2", "-fomit-frame-pointer"]);
}

/// The text report says it in one line; a program exec'd by a shell that
/// ends at once is symbolized from what its exec told.
#[test]
fn the_text_report_says_where_for_a_program_a_shell_started() {
    let (dir, exe, source) = built_c("stacks_text", "save.c", &["-g", "-O2"]);
    let script = format!("{} {}; true", exe.display(), dir.display());
    let out = auditor(&dir, &["run", "--", "/bin/sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    // Source files inside the repository are named relative to it.
    let want = format!(
        "at save_state (tests/fixtures/stacks/save.c:{}) <- main (tests/fixtures/stacks/save.c:",
        line_of(&source, "RENAME-LINE"),
    );
    assert!(text.contains(&want), "{want:?} not in:\n{text}");
}

/// A loop renaming 200 files from one place: each place's stack is copied
/// until its signature is back, every later call only names it; one
/// group, one call site.
#[test]
fn a_hot_loop_costs_one_stack_per_place() {
    let (dir, exe, _) = built_c("stacks_hot", "hot.c", &["-g", "-O2"]);
    let run = run_report(&dir, &[], &[exe.to_str().unwrap(), dir.to_str().unwrap()]);
    let renames = findings(&run.report, "rename-without-fsync");
    assert_eq!(renames.len(), 200);
    for f in &renames {
        frame_at(frames(f), |func| func == "save_one");
    }
    let stats = &run.report["stats"];
    let taken = stats["stacks"].as_u64().unwrap();
    let reused = stats["stacks_reused"].as_u64().unwrap();
    // open, first write, rename: three places, 200 calls each, 10 ms
    // apart; copies stop once the first is unwound (well within a second).
    assert!(taken <= 3 * 40, "stacks copied: {stats:#}");
    // And one for the exit.
    assert_eq!(
        reused + taken,
        3 * 200 + 1,
        "every call has its stack: {stats:#}"
    );
    let fingerprints: std::collections::BTreeSet<&str> = renames
        .iter()
        .map(|f| f["group"].as_str().unwrap())
        .collect();
    assert_eq!(fingerprints.len(), 1, "one call site, one group");
}

/// The same loop at some 7 saves a millisecond, on a tmpfs so the disk
/// does not set the pace: while the first copies wait to be read (the
/// first stack named reads its objects' symbols, tens of milliseconds),
/// every call from a place used to send another 12 KiB copy (1,233 of them
/// in each of six runs, and a full ring: 400 to 1,500 events dropped).
/// Now, once half the ring waits, a place whose answer is not back sends at
/// most one per 5 ms: no event lost, and the calls passed over are counted
/// as stacks lost.
#[test]
fn a_tight_loop_does_not_fill_the_ring_with_copies() {
    let (dir, exe, _) = built_c("stacks_tight", "hot.c", &["-g", "-O2"]);
    let shm = PathBuf::from(format!("/dev/shm/auditor-e2e-tight-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&shm);
    std::fs::create_dir(&shm).unwrap();
    let run = run_report(
        &dir,
        &[],
        &[exe.to_str().unwrap(), shm.to_str().unwrap(), "20000", "20"],
    );
    std::fs::remove_dir_all(&shm).unwrap();
    let stats = &run.report["stats"];
    assert_eq!(stats["dropped"], 0, "{stats:#}");
    let taken = stats["stacks"].as_u64().unwrap();
    let reused = stats["stacks_reused"].as_u64().unwrap();
    let lost = stats["stacks_lost"].as_u64().unwrap();
    // Half the ring is some 680 copies.
    assert!(taken <= 900, "stacks copied: {stats:#}");
    // open, first write and rename, 20,000 each, and the exit: each
    // call's stack is copied, named or counted lost.
    assert_eq!(taken + reused + lost, 3 * 20_000 + 1, "{stats:#}");
    assert!(
        reused >= 3 * 20_000 * 9 / 10,
        "most calls name their stack: {stats:#}"
    );
}

#[test]
fn rust_names_the_function_and_line() {
    require_root();
    let dir = scratch("stacks_rust");
    let exe = dir.join("save");
    let source = fixture("stacks/save.rs");
    succeed(
        Command::new("rustc")
            .args(["-g", "-C", "opt-level=1", "--edition", "2021", "-o"])
            .arg(&exe)
            .arg(&source),
    );
    let run = run_report(&dir, &[], &[exe.to_str().unwrap(), dir.to_str().unwrap()]);
    let (fr, at) = renamed_in(&run.report, &dir.join("state.json"), &source, |func| {
        func.ends_with("save_state")
    });
    assert!(
        fr[at]["function"]
            .as_str()
            .unwrap()
            .contains("save::save_state"),
        "demangled: {fr:#?}"
    );
    let caller = frame_at(fr, |func| func.ends_with("save::main"));
    assert_at(&fr[caller], "save.rs", line_of(&source, "MAIN-CALL-LINE"));
}

#[test]
fn go_names_the_function_and_line() {
    require_root();
    let dir = scratch("stacks_go");
    let exe = dir.join("save");
    let source = fixture("stacks/save.go");
    // A cache that outlives the scratch directory: the first build compiles
    // the runtime.
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-cache");
    succeed(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&exe)
            .arg(&source)
            .env("GOCACHE", &cache)
            .env("GOFLAGS", "-mod=mod")
            .env("GO111MODULE", "off")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0"),
    );
    let run = run_report(&dir, &[], &[exe.to_str().unwrap(), dir.to_str().unwrap()]);
    let (fr, _) = renamed_in(&run.report, &dir.join("state.json"), &source, |func| {
        func == "main.saveState"
    });
    let caller = frame_at(fr, |func| func == "main.main");
    assert_at(&fr[caller], "save.go", line_of(&source, "MAIN-CALL-LINE"));
}

/// A script's native frames are the interpreter's: the stack says which
/// interpreter runs which script, and does not pretend more.
#[test]
fn an_interpreted_program_names_its_interpreter_and_script() {
    require_root();
    let dir = scratch("stacks_python");
    let run = run_report(
        &dir,
        &[],
        &[
            "/usr/bin/python3",
            "-B",
            fixture("stacks/save.py").to_str().unwrap(),
            dir.to_str().unwrap(),
        ],
    );
    let f = &findings(&run.report, "rename-without-fsync")[0];
    let i = &f["stack"]["interpreter"];
    assert!(i["name"].as_str().unwrap().starts_with("python3"), "{f:#}");
    assert!(i["script"].as_str().unwrap().ends_with("save.py"), "{f:#}");
    frame_at(frames(f), |func| func == "rename");
}

/// `--no-stacks`: no stack is taken, and nothing else changes.
#[test]
fn no_stacks_takes_none() {
    let (dir, exe, _) = built_c("stacks_off", "save.c", &["-g", "-O2"]);
    let on = run_report(&dir, &[], &[exe.to_str().unwrap(), dir.to_str().unwrap()]);
    let off = run_report(
        &dir,
        &["--no-stacks"],
        &[exe.to_str().unwrap(), dir.to_str().unwrap()],
    );
    assert_eq!(off.report["stats"]["stacks"], 0);
    assert!(
        all_findings(&off.report)
            .iter()
            .all(|f| f.get("stack").is_none())
    );
    let rules = |r: &Value| -> Vec<(String, String)> {
        all_findings(r)
            .iter()
            .map(|f| {
                (
                    f["rule"].as_str().unwrap().into(),
                    f["path"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(rules(&on.report), rules(&off.report));
}

/// A process started before the auditor attached: its mappings come from
/// /proc, and its stack is named all the same.
#[test]
fn an_attached_process_names_the_function_and_line() {
    use std::time::{Duration, Instant};
    let (dir, exe, source) = built_c("stacks_attach", "later.c", &["-g", "-O2"]);
    let mut child = Command::new(&exe).arg(&dir).spawn().unwrap();
    let report = dir.join("report.json");
    let pid = child.id().to_string();
    let mut attach = Command::new(auditor_bin())
        .current_dir(&dir)
        .args(["attach", "-p", &pid, "--format", "json", "--output"])
        .arg(&report)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Attached once it says so on stderr; the go file then releases the
    // save, and the attach ends with the process.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stderr = attach.stderr.take().unwrap();
    let mut seen = String::new();
    while !seen.contains("attached to") {
        assert!(Instant::now() < deadline, "never attached: {seen}");
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut stderr, &mut buf).unwrap();
        assert!(n > 0, "attach ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    std::fs::write(dir.join("go"), b"").unwrap();
    child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    attach.wait().unwrap();
    let doc: Value = serde_json::from_slice(&std::fs::read(&report).unwrap())
        .unwrap_or_else(|e| panic!("no report ({e}): {seen}{rest}"));
    renamed_in(&doc, &dir.join("state.json"), &source, |func| {
        func == "save_state"
    });
}

/// A recording keeps the stacks as they were symbolized live: its report
/// names the function even after the binary is gone.
#[test]
fn a_recording_keeps_the_stacks() {
    let (dir, exe, source) = built_c("stacks_record", "save.c", &["-g", "-O2"]);
    record_run(&dir, &[exe.to_str().unwrap(), dir.to_str().unwrap()]);
    std::fs::remove_file(&exe).unwrap();
    let report = replay_run(&dir);
    renamed_in(&report, &dir.join("state.json"), &source, |func| {
        func == "save_state"
    });
}
