//! `archive-not-self-contained`: a disk image that needs files outside
//! itself (a qcow2 overlay's backing file, the next link of its chain, a
//! VMDK descriptor's extents or parent) is read by a process that writes it
//! somewhere (an archive, a copy, a pipe, a socket) without those files.
//! The data is durable, but not portable: restored on another machine the
//! image reads whatever the names hold there (seed 002: restored sandboxes
//! read another worker's base image, and half of them saw corrupt data).
//!
//! Shipped means read, by identity: a dependency travels with the image
//! when the process that read the image also read it, or a process it
//! started did before it ended, or a process that started it did (a
//! program that runs `cat` on the overlay into its stream, then sends the
//! base itself). A sibling's read does not count: `qemu-img` reading the
//! base to create the overlay puts nothing into tar's archive. A
//! process that reads an image and writes less than a sixteenth of it (a
//! checksum, `file`, a listing) is not copying it; one that writes the
//! image itself is its author (`qemu-img`), not its copier. A copy that is
//! read again later and finds all its own dependencies where it landed (an
//! overlay copied next to its backing file) took them along. Verdicts are
//! given at the end of the observation, `low` while a process that could
//! still send the rest runs.

use serde_json::{Value, json};

use crate::calls::Call;
use crate::event::{FileId, FileType};
use crate::fast_hash::{FastMap, FastSet};
use crate::finding::{CallRef, Finding, ProcessRef, Severity};
use crate::image::{DepState, Dependency, ImageInfo, Naming, Role};
use crate::track::processes::ProcKey;

use super::{Cx, Kind, Moment, Rule, RuleInfo};

pub const INFO: RuleInfo = RuleInfo {
    id: "archive-not-self-contained",
    severity: Severity::Medium,
    title: "disk image archived or copied without the files it needs",
    kind: Kind::Lasting,
};

/// Files remembered per process as read or written; past it, whether the
/// process read a dependency is unknown.
const FILES_PER_PROCESS: usize = 16_384;
/// Files remembered over all live processes at once.
const FILES_TOTAL: usize = 1 << 20;
/// Images remembered per process.
const IMAGES_PER_PROCESS: usize = 64;
/// Destinations named per process (their bytes are all counted).
const DESTINATIONS: usize = 8;
/// Checks waiting for the end of the observation (or on one parent); past
/// it, verdicts are given at once.
const CHECKS: usize = 4_096;
/// Images remembered by identity, to recognise copies read again.
const SEEN: usize = 4_096;
/// Ancestors walked up from an ending process.
const ANCESTORS: usize = 64;
/// Process records past which those of processes no longer traced go.
const READERS: usize = 32_768;

/// What a process did to one file.
#[derive(Clone, Copy, Default)]
struct Touch {
    read: bool,
    wrote: bool,
}

/// Where a process's writes went.
#[derive(Clone, Debug)]
struct Destination {
    id: FileId,
    kind: &'static str,
    path: String,
    bytes: u64,
}

#[derive(Clone, Default)]
struct Outputs {
    bytes: u64,
    to: Vec<Destination>,
    /// More destinations than are named.
    more: bool,
    first: Option<Call>,
}

impl Outputs {
    fn add(&mut self, id: FileId, kind: &'static str, path: &str, bytes: u64, call: &Call) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.first.get_or_insert_with(|| call.clone());
        if let Some(d) = self.to.iter_mut().find(|d| d.id == id) {
            d.bytes = d.bytes.saturating_add(bytes);
        } else if self.to.len() < DESTINATIONS {
            self.to.push(Destination {
                id,
                kind,
                path: path.to_string(),
                bytes,
            });
        } else {
            self.more = true;
        }
    }

    /// Whether this much output can hold a copy of an image of `size`
    /// bytes: a sixteenth of it (compression), up to 1 MiB, and at least
    /// 4 KiB or the whole image when smaller.
    fn could_hold(&self, size: u64) -> bool {
        let want = (size / 16).clamp(4096, 1 << 20).min(size);
        self.bytes > 0 && self.bytes >= want
    }

    /// The main destination, as people read it.
    fn describe(&self) -> String {
        let Some(d) = self.to.iter().max_by_key(|d| d.bytes) else {
            return "nowhere".into();
        };
        match d.kind {
            "file" => format!("{:?}", d.path),
            "block device" => format!("the block device {:?}", d.path),
            kind => format!("a {kind}"),
        }
    }
}

/// An image with dependencies that a process opened read-only.
#[derive(Clone)]
struct ImageRead {
    id: FileId,
    path: String,
    info: ImageInfo,
    size: u64,
    call: Call,
    since_epoch: u32,
    /// Per entry of `info.needs`: seen read with the image.
    shipped: Vec<bool>,
}

impl ImageRead {
    /// Marks what `touched` read as shipped.
    fn ship(&mut self, touched: &FastMap<FileId, Touch>) {
        for (need, shipped) in self.info.needs.iter().zip(self.shipped.iter_mut()) {
            if need
                .file
                .is_some_and(|id| touched.get(&id).is_some_and(|t| t.read))
            {
                *shipped = true;
            }
        }
    }

    fn complete(&self) -> bool {
        self.shipped.iter().all(|s| *s)
    }

    fn unshipped(&self) -> impl Iterator<Item = &Dependency> {
        self.info
            .needs
            .iter()
            .zip(&self.shipped)
            .filter(|(_, s)| !**s)
            .map(|(n, _)| n)
    }
}

/// An image a process wrote out without everything it needs, waiting for
/// its verdict (an ancestor may still read the rest).
#[derive(Clone)]
struct Check {
    image: ImageRead,
    key: ProcKey,
    process: ProcessRef,
    out: Outputs,
    /// The reading process's end, or the end of the trace.
    end: CallRef,
    /// It read more files than are remembered.
    overflow: bool,
    /// Pids that were still running when the trace ended.
    running: Vec<u32>,
}

/// What one live process read and wrote.
#[derive(Default)]
struct Reader {
    key: ProcKey,
    touched: FastMap<FileId, Touch>,
    overflow: bool,
    images: Vec<ImageRead>,
    /// Checks of processes it started, which ended.
    inherited: Vec<Check>,
    out: Outputs,
}

#[derive(Default)]
pub struct ArchiveNotSelfContained {
    readers: FastMap<u32, Reader>,
    /// Entries of every reader's `touched`.
    held: usize,
    /// Checks whose processes all ended.
    decided: Vec<Check>,
    /// Images seen opened, by identity: (state, identity) of each need.
    seen: FastMap<FileId, Vec<(DepState, Option<FileId>)>>,
}

impl Rule for ArchiveNotSelfContained {
    fn observe(&mut self, m: &Moment<'_>, cx: &mut Cx<'_>) {
        match m {
            Moment::Opened {
                id,
                pid,
                path,
                writable,
                image,
                call,
            } => self.opened(cx, *pid, *id, path, *writable, *image, call),
            Moment::Output {
                id,
                pid,
                path,
                bytes,
                call,
            } => self.output(cx, *pid, *id, path, *bytes, call),
            Moment::Ended { process, call, .. } => {
                let Some(r) = self.readers.remove(&process.pid) else {
                    return;
                };
                if r.key != process.key {
                    self.release(&r);
                    return;
                }
                let who = (process.key, process.ppid, process.to_ref());
                self.ended(cx, r, who, call, None);
            }
            Moment::End { last } => {
                // Every live ancestor gets a record first, then children go
                // before their parents (a child starts after its parent, so
                // its key is larger): what a child leaves goes up to its
                // parent, which is judged after it.
                let pids: Vec<u32> = self.readers.keys().copied().collect();
                for pid in pids {
                    let Some((key, ppid)) = cx.procs.get(pid).map(|p| (p.key, p.ppid)) else {
                        continue;
                    };
                    for a in ancestors(cx, key, ppid) {
                        self.reader(cx, a);
                    }
                }
                let mut order: Vec<(ProcKey, u32)> =
                    self.readers.iter().map(|(pid, r)| (r.key, *pid)).collect();
                order.sort_unstable_by(|a, b| b.cmp(a));
                for (_, pid) in order {
                    let Some(r) = self.readers.remove(&pid) else {
                        continue;
                    };
                    let Some(who) = cx
                        .procs
                        .get(pid)
                        .filter(|p| p.key == r.key)
                        .map(|p| (p.key, p.ppid, p.to_ref()))
                    else {
                        self.release(&r);
                        continue;
                    };
                    let end = end_or_none(last.cloned());
                    self.ended(cx, r, who, &end, Some(pid));
                }
                self.verdicts(cx);
            }
            _ => {}
        }
    }
}

/// The end call, or a placeholder when the trace had none.
fn end_or_none(end: Option<CallRef>) -> CallRef {
    end.unwrap_or_else(|| CallRef {
        seq: 0,
        ts_ns: 0,
        pid: 0,
        tid: 0,
        comm: String::new(),
        call: "end of trace".into(),
        stack: None,
    })
}

impl ArchiveNotSelfContained {
    /// The reader record of live `pid`, started afresh when the pid is
    /// another process now.
    fn reader(&mut self, cx: &Cx<'_>, pid: u32) -> Option<&mut Reader> {
        let key = cx.procs.get(pid)?.key;
        if self.readers.get(&pid).is_some_and(|r| r.key != key)
            && let Some(stale) = self.readers.remove(&pid)
        {
            self.release(&stale);
        }
        if self.readers.len() >= READERS && !self.readers.contains_key(&pid) {
            // Records of processes whose end was never seen (their
            // records were evicted from the process table).
            let stale: Vec<u32> = self
                .readers
                .iter()
                .filter(|(p, r)| cx.procs.get(**p).is_none_or(|live| live.key != r.key))
                .map(|(p, _)| *p)
                .collect();
            for p in stale {
                if let Some(r) = self.readers.remove(&p) {
                    self.release(&r);
                }
            }
            if self.readers.len() >= READERS {
                return None;
            }
        }
        Some(self.readers.entry(pid).or_insert_with(|| Reader {
            key,
            ..Reader::default()
        }))
    }

    fn release(&mut self, r: &Reader) {
        self.held = self.held.saturating_sub(r.touched.len());
    }

    /// Remembers what `pid` did to `id`, within the bounds.
    fn touch(&mut self, cx: &Cx<'_>, pid: u32, id: FileId, f: impl FnOnce(&mut Touch)) {
        let room = self.held < FILES_TOTAL;
        let Some(r) = self.reader(cx, pid) else {
            return;
        };
        let known = r.touched.contains_key(&id);
        if !known && (!room || r.touched.len() >= FILES_PER_PROCESS) {
            r.overflow = true;
            return;
        }
        f(r.touched.entry(id).or_default());
        if !known {
            self.held += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn opened(
        &mut self,
        cx: &Cx<'_>,
        pid: u32,
        id: FileId,
        path: &str,
        writable: bool,
        image: Option<&ImageInfo>,
        call: &Call,
    ) {
        self.touch(cx, pid, id, |t| t.read = true);
        let Some(info) = image.filter(|i| i.is_thin()) else {
            return;
        };
        if self.seen.len() < SEEN || self.seen.contains_key(&id) {
            let needs = info.needs.iter().map(|n| (n.state, n.file)).collect();
            self.seen.insert(id, needs);
        }
        if writable {
            return;
        }
        let size = cx
            .inodes
            .get(&id)
            .and_then(|s| s.size)
            .map_or(0, |s| s.max(0) as u64);
        let epoch = cx.epoch;
        let Some(r) = self.reader(cx, pid) else {
            return;
        };
        if r.images.iter().any(|i| i.id == id) || r.images.len() >= IMAGES_PER_PROCESS {
            return;
        }
        r.images.push(ImageRead {
            id,
            path: path.to_string(),
            shipped: vec![false; info.needs.len()],
            info: info.clone(),
            size,
            call: call.clone(),
            since_epoch: epoch,
        });
    }

    fn output(&mut self, cx: &Cx<'_>, pid: u32, id: FileId, path: &str, bytes: u64, call: &Call) {
        // Only a process that read something can copy it.
        if !self.readers.contains_key(&pid) {
            return;
        }
        let Some(kind) = cx.inodes.get(&id).and_then(|s| output_kind(s.file_type)) else {
            return;
        };
        if kind == "file" {
            self.touch(cx, pid, id, |t| t.wrote = true);
        }
        if let Some(r) = self.reader(cx, pid) {
            r.out.add(id, kind, path, bytes, call);
        }
    }

    /// `r`'s process ended (or the trace did, `running` then its pid):
    /// what it read ships its own images, its ancestors' and what its
    /// children left; what is still missing goes up to its parent, or is
    /// decided when no traced parent is left.
    fn ended(
        &mut self,
        cx: &mut Cx<'_>,
        mut r: Reader,
        (key, ppid, process): (ProcKey, u32, ProcessRef),
        end: &CallRef,
        running: Option<u32>,
    ) {
        self.release(&r);
        let mut checks = std::mem::take(&mut r.inherited);
        for c in checks.iter_mut() {
            c.image.ship(&r.touched);
            c.overflow |= r.overflow;
            c.running.extend(running);
        }
        for mut img in std::mem::take(&mut r.images) {
            let authored = r.touched.get(&img.id).is_some_and(|t| t.wrote);
            if authored || !r.out.could_hold(img.size) {
                continue;
            }
            img.ship(&r.touched);
            checks.push(Check {
                image: img,
                key: r.key,
                process: process.clone(),
                out: r.out.clone(),
                end: end.clone(),
                overflow: r.overflow,
                running: running.into_iter().collect(),
            });
        }
        checks.retain(|c| !c.image.complete());
        // What it read ships its ancestors' own images too (a child that
        // sends the rest into its parent's stream).
        let ancestors = ancestors(cx, key, ppid);
        for a in &ancestors {
            if let Some(ar) = self.readers.get_mut(a) {
                for img in ar.images.iter_mut() {
                    img.ship(&r.touched);
                }
            }
        }
        for c in &checks {
            if c.key == r.key {
                cx.at_risk(finding(c));
            }
        }
        let parent = ancestors
            .first()
            .and_then(|&parent| self.reader(cx, parent))
            .filter(|p| p.inherited.len() + checks.len() <= CHECKS);
        match parent {
            Some(p) => p.inherited.extend(checks),
            // No traced parent left (or too much waiting on one): decided.
            None => {
                for c in checks {
                    if self.decided.len() < CHECKS {
                        self.decided.push(c);
                    } else {
                        self.verdict(cx, &c, &[]);
                    }
                }
            }
        }
    }

    /// At the end: every check still missing something is a verdict.
    fn verdicts(&mut self, cx: &mut Cx<'_>) {
        let checks = std::mem::take(&mut self.decided);
        for c in &checks {
            self.verdict(cx, c, &checks);
        }
    }

    /// The verdict of `c` (`all` the checks decided with it), unless its
    /// copy was seen to find everything where it landed, another verdict
    /// names its image, or nothing it wrote is left.
    fn verdict(&self, cx: &mut Cx<'_>, c: &Check, all: &[Check]) {
        if self.copied_along(c) || covered(c, all) || gone(c, cx) {
            return;
        }
        let mut f = finding(c);
        if !c.running.is_empty() {
            f.severity = Severity::Low;
            f.summary
                .push_str(" (still running when the trace ended: it may yet read what is missing)");
            f.evidence
                .insert("still_running_pids".into(), Value::from(c.running.clone()));
        }
        if c.overflow {
            f.inconclusive = true;
            f.inconclusive_reason = Some(format!(
                "the process read more than {FILES_PER_PROCESS} files: whether it read these is unknown"
            ));
        }
        cx.settle(&INFO, f, None, c.image.since_epoch);
    }

    /// Whether every destination of `c` is a file later read as an image
    /// that found all it needs, none of it what `c` left behind.
    fn copied_along(&self, c: &Check) -> bool {
        let left: FastSet<FileId> = c.image.unshipped().filter_map(|n| n.file).collect();
        !c.out.more
            && !c.out.to.is_empty()
            && c.out.to.iter().all(|d| {
                d.kind == "file"
                    && self.seen.get(&d.id).is_some_and(|needs| {
                        needs.iter().all(|(state, file)| {
                            *state == DepState::Present && file.is_some_and(|f| !left.contains(&f))
                        })
                    })
            })
    }
}

/// Live traced ancestors of the process `key` whose parent is `ppid`,
/// nearest first.
fn ancestors(cx: &Cx<'_>, mut key: ProcKey, ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut next = ppid;
    while out.len() < ANCESTORS && next != 0 {
        // A parent started before its child: a record with a later key is
        // another process that took the pid since.
        let Some(p) = cx.procs.get(next).filter(|p| p.key < key) else {
            break;
        };
        out.push(p.pid);
        key = p.key;
        next = p.ppid;
    }
    out
}

/// `c`'s image is a link in the chain of another image the same process
/// left incomplete: that verdict names it already.
fn covered(c: &Check, all: &[Check]) -> bool {
    all.iter().any(|o| {
        o.key == c.key
            && o.image.id != c.image.id
            && o.image
                .info
                .needs
                .iter()
                .any(|n| n.file == Some(c.image.id))
    })
}

/// The destinations that count as output: files, pipes, sockets, block
/// devices (terminals and /dev/null do not carry a copy anywhere).
fn output_kind(t: FileType) -> Option<&'static str> {
    match t {
        FileType::Regular => Some("file"),
        FileType::Fifo => Some("pipe"),
        FileType::Socket => Some("socket"),
        FileType::BlockDevice => Some("block device"),
        _ => None,
    }
}

/// Every destination of `c` is a file deleted since: no copy is left.
fn gone(c: &Check, cx: &Cx<'_>) -> bool {
    !c.out.more
        && !c.out.to.is_empty()
        && c.out
            .to
            .iter()
            .all(|d| d.kind == "file" && cx.inodes.get(&d.id).is_some_and(|s| s.unlinked))
}

fn finding(c: &Check) -> Finding {
    let img = &c.image;
    let left: Vec<&Dependency> = img.unshipped().collect();
    let first = left.first().copied();
    let what = first.map_or_else(String::new, |n| {
        let more = match left.len() {
            1 => String::new(),
            2 => " and 1 more".into(),
            k => format!(" and {} more", k - 1),
        };
        format!(
            "its {} {:?} ({}){more}",
            n.role.as_str(),
            n.path.as_deref().unwrap_or(&n.name),
            naming_phrase(n)
        )
    });
    let names = if left.len() == 1 {
        "that name"
    } else {
        "those names"
    };
    let summary = format!(
        "{:?} ({}) was written to {} by {} without {what}, which it needs: restored elsewhere it reads whatever is there under {names}",
        img.path,
        img.info.format,
        c.out.describe(),
        c.process.comm,
    );
    let backing = img.info.needs.iter().find(|n| n.depth == 1);
    let mut calls = vec![img.call.to_ref()];
    calls.extend(c.out.first.as_ref().map(Call::to_ref));
    calls.push(c.end.clone());
    INFO.finding(img.path.clone(), Some(img.id), c.process.clone(), summary)
        .with("image", img.path.clone())
        .with("format", img.info.format.clone())
        .with("backing_file", backing.map(shown))
        .with(
            "backing_naming",
            backing.map(|n| Value::from(naming_str(n.naming))),
        )
        .with(
            "backing_state",
            backing.map(|n| Value::from(state_str(n.state))),
        )
        .with(
            "not_shipped",
            left.iter().map(|n| shown(n)).collect::<Vec<_>>(),
        )
        .with(
            "needs",
            img.info
                .needs
                .iter()
                .zip(&img.shipped)
                .map(|(n, s)| need_json(n, *s))
                .collect::<Vec<_>>(),
        )
        .with("needs_cut", img.info.cut)
        .with("destination", c.out.describe())
        .with(
            "destinations",
            c.out
                .to
                .iter()
                .map(|d| json!({"kind": d.kind, "path": d.path, "bytes": d.bytes}))
                .collect::<Vec<_>>(),
        )
        .with("bytes_written", c.out.bytes)
        .with("fix", fix(&img.info.format))
        .with_calls(calls)
}

/// The path a dependency resolves to, else its name.
fn shown(n: &Dependency) -> Value {
    Value::from(n.path.clone().unwrap_or_else(|| n.name.clone()))
}

fn naming_phrase(n: &Dependency) -> String {
    let naming = match n.naming {
        Naming::Absolute => "an absolute path",
        Naming::Relative => "a relative path",
        Naming::Protocol => "not a local file",
        Naming::Invalid => "an unusable name",
    };
    match n.state {
        DepState::Missing => format!("{naming}, missing here"),
        DepState::Symlink => format!("{naming}, a symbolic link"),
        _ => naming.to_string(),
    }
}

fn naming_str(n: Naming) -> &'static str {
    match n {
        Naming::Absolute => "absolute",
        Naming::Relative => "relative",
        Naming::Protocol => "protocol",
        Naming::Invalid => "invalid",
    }
}

fn state_str(s: DepState) -> &'static str {
    match s {
        DepState::Present => "present",
        DepState::Missing => "missing",
        DepState::Symlink => "symlink",
        DepState::NotRegular => "not_regular",
        DepState::Unreadable => "unreadable",
        DepState::NotAPath => "not_a_path",
    }
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::BackingFile => "backing_file",
        Role::DataFile => "data_file",
        Role::Extent => "extent",
        Role::Parent => "parent",
    }
}

fn need_json(n: &Dependency, shipped: bool) -> Value {
    json!({
        "role": role_str(n.role),
        "name": n.name,
        "naming": naming_str(n.naming),
        "path": n.path,
        "state": state_str(n.state),
        "file": n.file,
        "format": n.format,
        "named_by": n.named_by,
        "depth": n.depth,
        "shipped": shipped,
    })
}

fn fix(format: &str) -> &'static str {
    if format == "vmdk" {
        "archive the descriptor together with every extent and parent it names, or convert it to one self-contained file first (qemu-img convert -O vmdk -o subformat=monolithicSparse IMAGE OUT)"
    } else {
        "flatten the image before archiving (qemu-img rebase -b \"\" IMAGE merges the backing data in and keeps internal snapshots), or ship the backing file inside the same archive under a relative name, or build the base image deterministically so the same path holds the same bytes on every machine"
    }
}

#[cfg(test)]
mod tests {
    use crate::event::{Event, EventKind, FileId, FileInfo, FileType};
    use crate::finding::Severity;
    use crate::image::{DepState, Dependency, ImageInfo, Naming, Role};
    use crate::test_support::*;
    use crate::track::paths::AT_FDCWD;

    const ID: &str = "archive-not-self-contained";
    const OVERLAY: u64 = 11;
    const BASE: u64 = 10;

    fn need(path: &str, ino: u64, depth: u32, named_by: &str) -> Dependency {
        Dependency {
            role: Role::BackingFile,
            name: path.into(),
            naming: Naming::Absolute,
            path: Some(path.into()),
            state: DepState::Present,
            file: Some(FileId { dev: DEV, ino }),
            format: Some("raw".into()),
            named_by: named_by.into(),
            depth,
        }
    }

    fn qcow2(needs: Vec<Dependency>) -> ImageInfo {
        ImageInfo {
            format: "qcow2".into(),
            needs,
            cut: false,
        }
    }

    /// The overlay of the seed: backed by /d/base.raw, by absolute path.
    fn overlay() -> ImageInfo {
        qcow2(vec![need("/d/base.raw", BASE, 1, "/d/overlay.qcow2")])
    }

    /// `pid` opens the thin overlay (on `fd`) and reads it whole.
    fn read_overlay(pid: u32, fd: i64) -> Event {
        read(
            pid,
            "/d/overlay.qcow2",
            fd,
            OVERLAY,
            196_616,
            Some(overlay()),
        )
    }

    fn read(pid: u32, path: &str, fd: i64, ino: u64, size: i64, image: Option<ImageInfo>) -> Event {
        let mut e = open_with(
            pid,
            path,
            AT_FDCWD,
            0,
            fd,
            Some(FileInfo {
                flags: 0,
                ..sized(reg(ino), size)
            }),
        );
        if let EventKind::Open { image: i, .. } = &mut e.kind {
            *i = image;
        }
        e
    }

    fn pipe_write(pid: u32, fd: i32, n: u64) -> Event {
        let pipe = FileInfo {
            file_type: FileType::Fifo,
            fs: "pipefs".into(),
            ..reg(900)
        };
        write_full(pid, fd, n, n as i64, None, Some(pipe))
    }

    /// `cat overlay.qcow2 | ...`: `pid` reads the overlay and writes
    /// `bytes` of it to its stdout, a pipe.
    fn cats_overlay(pid: u32, bytes: u64) -> Vec<Event> {
        vec![read_overlay(pid, 3), pipe_write(pid, 1, bytes)]
    }

    /// Process 100 runs `cat overlay.qcow2` (pid 101) into a pipe.
    fn child_cats_overlay() -> Vec<Event> {
        trace![fork(100, 101), cats_overlay(101, 196_616), exit(101, 0)]
    }

    /// `tar -cf /d/a.tar` of the given reads, as pid 101 under a shell.
    fn tar(reads: Vec<Event>) -> Vec<Event> {
        trace![
            start(100, "/d"),
            fork(100, 101),
            reads,
            create_unsynced(101, "/d/a.tar", 5, 20, 204_800),
            exit(101, 0),
            exit(100, 0),
        ]
    }

    #[test]
    fn an_overlay_archived_alone_names_its_backing_file() {
        let found = run(tar(vec![read_overlay(101, 4)]));
        let f = one(&found, ID);
        assert_finding(f, "/d/overlay.qcow2", 101, Severity::Medium);
        let ev = &f.evidence;
        assert_eq!(ev["backing_file"], "/d/base.raw");
        assert_eq!(ev["backing_naming"], "absolute");
        assert_eq!(ev["backing_state"], "present");
        assert_eq!(ev["not_shipped"], serde_json::json!(["/d/base.raw"]));
        assert_eq!(ev["destination"], "\"/d/a.tar\"");
        assert_eq!(ev["bytes_written"], 204_800);
        assert!(
            ev["fix"]
                .as_str()
                .unwrap()
                .contains("qemu-img rebase -b \"\"")
        );
        assert!(f.summary.contains("an absolute path"), "{}", f.summary);
        let calls: Vec<&str> = f.calls.iter().map(|c| c.call.as_str()).collect();
        assert!(
            calls[0].starts_with("openat(\"/d/overlay.qcow2\""),
            "{calls:?}"
        );
    }

    #[test]
    fn an_overlay_archived_with_its_backing_file_is_fine() {
        let found = run(tar(vec![
            read(101, "/d/base.raw", 3, BASE, 1 << 20, None),
            read_overlay(101, 4),
        ]));
        assert_none_of(&found, ID);
    }

    #[test]
    fn a_flattened_image_needs_nothing() {
        let found = run(tar(vec![read(
            101,
            "/d/flat.qcow2",
            4,
            OVERLAY,
            1 << 20,
            Some(qcow2(vec![])),
        )]));
        assert_none_of(&found, ID);
    }

    #[test]
    fn reading_without_writing_a_copy_is_not_archiving() {
        // sha256sum overlay.qcow2 | ...: 80 bytes out of a 192 KiB image.
        let events = trace![start(100, "/d"), cats_overlay(100, 80), exit(100, 0)];
        assert_none_of(&run(events), ID);
    }

    #[test]
    fn the_author_of_an_image_is_not_its_copier() {
        // qemu-img reopens the overlay it writes, read-only.
        let events = trace![
            start(100, "/d"),
            create_unsynced(100, "/d/overlay.qcow2", 3, OVERLAY, 196_616),
            read_overlay(100, 3),
            exit(100, 0),
        ];
        assert_none_of(&run(events), ID);
    }

    #[test]
    fn a_chain_names_every_level_once() {
        let top = qcow2(vec![
            need("/d/mid.qcow2", OVERLAY, 1, "/d/top.qcow2"),
            need("/d/base.raw", BASE, 2, "/d/mid.qcow2"),
        ]);
        let mid = qcow2(vec![need("/d/base.raw", BASE, 1, "/d/mid.qcow2")]);
        let found = run(tar(vec![
            read(101, "/d/top.qcow2", 3, 12, 196_616, Some(top.clone())),
            read(101, "/d/mid.qcow2", 4, OVERLAY, 196_616, Some(mid)),
        ]));
        let f = one(&found, ID);
        assert_eq!(f.path, "/d/top.qcow2", "mid is named in top's verdict");
        assert_eq!(
            f.evidence["not_shipped"],
            serde_json::json!(["/d/base.raw"])
        );
        let needs = f.evidence["needs"].as_array().unwrap();
        assert_eq!(needs.len(), 2);
        assert_eq!(needs[0]["shipped"], true);
        assert_eq!(needs[1]["depth"], 2);
        let alone = run(tar(vec![read(
            101,
            "/d/top.qcow2",
            3,
            12,
            196_616,
            Some(top),
        )]));
        assert_eq!(
            one(&alone, ID).evidence["not_shipped"],
            serde_json::json!(["/d/mid.qcow2", "/d/base.raw"])
        );
    }

    #[test]
    fn a_pipeline_writes_to_a_pipe() {
        // sh -c 'tar -c overlay.qcow2 | gzip > a.tgz'
        let events = trace![
            start(100, "/d"),
            fork(100, 101),
            fork(100, 102),
            cats_overlay(101, 204_800),
            exit(101, 0),
            write_new(102, "/d/a.tgz", 1, 20, 400),
            exit(102, 0),
            exit(100, 0),
        ];
        let found = run(events);
        let f = one(&found, ID);
        assert_eq!(f.process.pid, 101);
        assert_eq!(f.evidence["destination"], "a pipe");
    }

    #[test]
    fn a_parent_that_reads_the_rest_into_the_stream_ships_it() {
        // A program runs `cat overlay.qcow2` into its socket, then sends
        // the base image itself.
        let events = trace![
            start(100, "/d"),
            child_cats_overlay(),
            read(100, "/d/base.raw", 3, BASE, 1 << 20, None),
            exit(100, 0),
        ];
        assert_none_of(&run(events), ID);
        // A sibling's read is not the same archive: qemu-img read the base
        // to create the overlay, and tar archived the overlay alone.
        let found = run(trace![
            start(100, "/d"),
            fork(100, 102),
            read(102, "/d/base.raw", 3, BASE, 1 << 20, None),
            exit(102, 0),
            child_cats_overlay(),
            exit(100, 0),
        ]);
        assert_eq!(one(&found, ID).process.pid, 101);
    }

    #[test]
    fn a_parent_still_running_is_judged_after_its_children() {
        let child = trace![start(100, "/d"), child_cats_overlay()];
        let mut shipped = child.clone();
        shipped.push(read(100, "/d/base.raw", 3, BASE, 1 << 20, None));
        assert_none_of(&run(shipped), ID);
        let found = run(child);
        let f = one(&found, ID);
        assert_eq!(f.process.pid, 101);
        assert_eq!(
            f.severity,
            Severity::Low,
            "its parent may still send the rest"
        );
        assert_eq!(f.evidence["still_running_pids"], serde_json::json!([100]));
    }

    #[test]
    fn a_copy_that_finds_its_backing_where_it_landed_took_it_along() {
        let copy = qcow2(vec![need("/d/b/base.raw", 22, 1, "/d/b/overlay.qcow2")]);
        let cp = trace![
            start(100, "/d"),
            fork(100, 101),
            read_overlay(101, 3),
            write_new(101, "/d/b/overlay.qcow2", 4, 21, 196_616),
            exit(101, 0),
        ];
        let mut alone = cp.clone();
        alone.push(exit(100, 0));
        let found = run(alone);
        assert_eq!(
            one(&found, ID).evidence["destination"],
            "\"/d/b/overlay.qcow2\""
        );
        let mut archived = cp;
        archived.extend([
            fork(100, 102),
            read(102, "/d/b/base.raw", 3, 22, 1 << 20, None),
            read(102, "/d/b/overlay.qcow2", 4, 21, 196_616, Some(copy)),
            open_new(102, "/d/b.tar", 5, reg(23)),
            write(102, 5, 1 << 21),
            exit(102, 0),
            exit(100, 0),
        ]);
        assert_none_of(&run(archived), ID);
    }

    #[test]
    fn still_running_at_the_end_it_may_yet_ship_the_rest() {
        let events = trace![start(100, "/d"), cats_overlay(100, 196_616)];
        let found = run(events);
        let f = one(&found, ID);
        assert_eq!(f.severity, Severity::Low);
        assert_eq!(f.evidence["still_running_pids"], serde_json::json!([100]));
    }

    #[test]
    fn an_archive_deleted_before_the_end_leaves_nothing() {
        let mut events = tar(vec![read_overlay(101, 4)]);
        let end = events.pop().unwrap();
        events.extend([unlink(100, "/d/a.tar"), end]);
        assert_none_of(&run(events), ID);
    }

    #[test]
    fn the_image_header_travels_in_recordings() {
        let e = read_overlay(101, 4);
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), e);
        // Older recordings have no `image`; plain opens write none.
        let plain = read(101, "/d/x", 4, 30, 10, None);
        let line = serde_json::to_string(&plain).unwrap();
        assert!(!line.contains("image"), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), plain);
    }
}
