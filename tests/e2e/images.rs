//! Disk images written out without the files they need
//! (`archive-not-self-contained`): images `qemu-img` makes, archives `tar`
//! writes, in the careless ways (flagged, with what is missing named) and
//! the careful ones (not flagged). The other rules' verdicts on the same
//! runs (tar and qemu-img leave their output unsynced) are theirs.

use std::path::{Path, PathBuf};

use auditor_e2e::*;
use serde_json::Value;

const RULE: &str = "archive-not-self-contained";

fn cmd(mode: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        fixture("images/archive.sh").to_str().unwrap().into(),
        mode.into(),
    ]
}

/// Runs `fixtures/images/archive.sh MODE` under the auditor.
fn archive(mode: &str) -> (PathBuf, Run) {
    let dir = scratch(&format!("images_{mode}"));
    let run = run_report(&dir, &["--fail-on", "low"], &argv(&cmd(mode)));
    assert_eq!(run.report["complete"], true, "no event may be lost");
    assert_eq!(run.report["exit_status"]["code"], 0, "{}", run.stderr);
    (dir, run)
}

fn flagged(run: &Run) -> Vec<&Value> {
    findings(&run.report, RULE)
}

fn not_flagged(mode: &str) {
    let (_, run) = archive(mode);
    assert!(
        flagged(&run).is_empty(),
        "{mode} ships what the image needs: {:#}",
        run.report["findings"]
    );
}

fn path(p: &Path) -> Value {
    Value::from(p.to_str().unwrap())
}

/// The one verdict, on `image`, by tar, medium.
fn the_verdict<'a>(run: &'a Run, image: &Path) -> &'a Value {
    let f = the_finding(&run.report, RULE);
    assert_eq!(f["path"], path(image), "{f:#}");
    assert_eq!(f["severity"], "medium", "{f:#}");
    assert_eq!(f["process"]["comm"], "tar", "{f:#}");
    assert_eq!(f["inconclusive"], false, "{f:#}");
    let (dev, ino) = identity(image);
    assert_eq!(
        (f["inode"]["dev"].as_u64(), f["inode"]["ino"].as_u64()),
        (Some(dev), Some(ino))
    );
    f
}

#[test]
fn an_overlay_archived_alone_is_flagged_with_its_backing_file() {
    let (dir, run) = archive("alone");
    let f = the_verdict(&run, &dir.join("overlay.qcow2"));
    let ev = &f["evidence"];
    assert_eq!(ev["format"], "qcow2");
    assert_eq!(ev["backing_file"], path(&dir.join("base.raw")));
    assert_eq!(ev["backing_naming"], "absolute");
    assert_eq!(ev["backing_state"], "present");
    assert_eq!(
        ev["not_shipped"],
        Value::from(vec![path(&dir.join("base.raw"))])
    );
    assert_eq!(ev["needs"][0]["format"], "raw");
    let (dev, ino) = identity(&dir.join("base.raw"));
    assert_eq!(ev["needs"][0]["shipped"], false);
    assert_eq!(
        (
            ev["needs"][0]["file"]["dev"].as_u64(),
            ev["needs"][0]["file"]["ino"].as_u64()
        ),
        (Some(dev), Some(ino)),
        "{ev:#}"
    );
    let tar = dir.join("overlay.tar");
    assert_eq!(ev["destinations"][0]["path"], path(&tar));
    assert_eq!(
        ev["bytes_written"].as_u64(),
        Some(std::fs::metadata(&tar).unwrap().len())
    );
    assert!(
        ev["fix"]
            .as_str()
            .unwrap()
            .contains("qemu-img rebase -b \"\""),
        "{ev:#}"
    );
    assert!(
        f["summary"].as_str().unwrap().contains("an absolute path"),
        "{f:#}"
    );
}

/// `tar -c | gzip`: tar's archive is the pipe. sha256sum and `qemu-img
/// info` read the overlay too, and copy nothing.
#[test]
fn an_overlay_archived_through_a_pipe_is_flagged_once() {
    let (dir, run) = archive("pipe");
    let f = the_verdict(&run, &dir.join("overlay.qcow2"));
    assert_eq!(f["evidence"]["destination"], "a pipe");
    assert_eq!(f["evidence"]["destinations"][0]["kind"], "pipe");
}

#[test]
fn a_flattened_overlay_archived_is_not_flagged() {
    not_flagged("flattened");
}

#[test]
fn an_overlay_archived_with_its_backing_file_is_not_flagged() {
    not_flagged("with-backing");
}

/// Two cps put the overlay (backed by a relative name) and a copy of its
/// base side by side; tar reads both there. The cp of the overlay alone
/// looks careless until the copy is seen to find its backing where it
/// landed.
#[test]
fn an_overlay_copied_next_to_its_backing_file_and_archived_whole_is_not_flagged() {
    not_flagged("bundle");
}

#[test]
fn a_chain_of_two_overlays_names_both_levels() {
    let (dir, run) = archive("chain");
    let f = the_verdict(&run, &dir.join("top.qcow2"));
    let ev = &f["evidence"];
    let (mid, base) = (dir.join("mid.qcow2"), dir.join("base.raw"));
    assert_eq!(ev["backing_file"], path(&mid));
    assert_eq!(
        ev["not_shipped"],
        Value::from(vec![path(&mid), path(&base)])
    );
    let needs = ev["needs"].as_array().unwrap();
    assert_eq!(needs.len(), 2, "{ev:#}");
    assert_eq!(
        (
            &needs[0]["depth"],
            &needs[0]["format"],
            &needs[0]["named_by"]
        ),
        (
            &Value::from(1),
            &Value::from("qcow2"),
            &path(&dir.join("top.qcow2"))
        )
    );
    assert_eq!(
        (&needs[1]["depth"], &needs[1]["path"], &needs[1]["named_by"]),
        (&Value::from(2), &path(&base), &path(&mid))
    );
}

#[test]
fn a_vmdk_descriptor_archived_without_its_extent_is_flagged() {
    let (dir, run) = archive("vmdk");
    let f = the_verdict(&run, &dir.join("disk.vmdk"));
    let ev = &f["evidence"];
    assert_eq!(ev["format"], "vmdk");
    assert_eq!(ev["needs"][0]["role"], "extent");
    assert_eq!(ev["needs"][0]["naming"], "relative");
    assert_eq!(
        ev["not_shipped"],
        Value::from(vec![path(&dir.join("disk-flat.vmdk"))])
    );
    assert!(ev["fix"].as_str().unwrap().contains("monolithicSparse"));
}

#[test]
fn a_vmdk_descriptor_archived_with_its_extent_is_not_flagged() {
    not_flagged("vmdk-whole");
}

/// The header is read once, live; a replay judges what the recording says
/// even when the files are gone.
#[test]
fn a_recording_carries_the_header_the_live_run_read() {
    let dir = scratch("images_record");
    record_run(&dir, &argv(&cmd("alone")));
    let image = dir.join("overlay.qcow2");
    let (dev, ino) = identity(&image);
    for f in ["overlay.qcow2", "base.raw", "overlay.tar"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let report = replay_run(&dir);
    let f = the_finding(&report, RULE);
    assert_eq!(f["path"], path(&image));
    assert_eq!(
        (f["inode"]["dev"].as_u64(), f["inode"]["ino"].as_u64()),
        (Some(dev), Some(ino))
    );
    assert_eq!(f["evidence"]["backing_state"], "present", "as it was live");
}
