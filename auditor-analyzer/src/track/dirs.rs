//! Directory entries not yet durable: names created, renamed, linked into
//! or removed from a directory that has not been fsynced since. A crash can
//! lose such a name (or bring a removed one back) even when the file's data
//! is on disk. Names stay here until their directory is made durable, they
//! go away, or the observation ends: a name whose process ended before its
//! directory was fsynced is a verdict, settled at the end.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::calls::Call;
use crate::event::FileId;
use crate::exposure::Closer;
use crate::fast_hash::FastMap;
use crate::finding::{CallRef, ProcessRef, bound_calls};

use super::processes::ProcKey;

/// How the name came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameOp {
    Create,
    Mkdir,
    Rename,
    Link,
    Unlink,
}

impl NameOp {
    pub fn as_str(self) -> &'static str {
        match self {
            NameOp::Create => "create",
            NameOp::Mkdir => "mkdir",
            NameOp::Rename => "rename",
            NameOp::Link => "link",
            NameOp::Unlink => "unlink",
        }
    }
}

/// A name whose parent directory still needs an fsync.
#[derive(Clone, Debug)]
pub struct PendingName {
    pub op: NameOp,
    /// Shared with the journal's indexes.
    pub path: Arc<str>,
    /// Source of a rename or link.
    pub old_path: Option<String>,
    /// Shared by the names of one directory recorded in a row.
    pub dir: Arc<str>,
    pub dir_id: Option<FileId>,
    /// The inode the name points to, when known.
    pub file: Option<FileId>,
    /// Filesystem of the entry, when known (needed to judge it).
    pub fs: Option<Arc<str>>,
    pub key: ProcKey,
    pub process: ProcessRef,
    /// The file's own data was made durable after the name appeared.
    pub data_synced: bool,
    /// The file's data had been made durable before an unlink removed its
    /// last name (its program cared about it: a journal whose removal
    /// commits a transaction, say).
    pub cared: bool,
    /// The call that made the name, kept unrendered (its text is shared
    /// with the file's own history).
    pub call: Call,
    pub since_epoch: u32,
    /// Its process ended (or the observation did) before the directory was
    /// fsynced: from then on the name is a verdict.
    /// Shared by every name the process left.
    pub ended: Option<Arc<CallRef>>,
    /// An fsync of the directory (or a sync) that came after `ended`.
    pub closed: Option<Arc<Closer>>,
}

impl PendingName {
    /// Whether the name lives on persistent storage (a name on tmpfs is
    /// lost at reboot by design).
    pub fn persistent(&self) -> bool {
        self.fs.as_deref().is_some_and(|fs| {
            crate::track::inodes::judged(crate::event::FileType::Regular, fs).is_ok()
        })
    }

    /// The calls its verdict shows: the one that made the name, how its
    /// process ended, and what closed it later.
    pub fn calls(&self) -> Vec<CallRef> {
        let mut calls = vec![self.call.to_ref()];
        calls.extend(self.ended.iter().map(|c| (**c).clone()));
        calls.extend(self.closed.iter().map(|c| c.call.clone()));
        bound_calls(calls)
    }
}

/// All pending names, by path (a later operation on the same name replaces
/// the earlier one). A program that creates files without ever fsyncing
/// their directory leaves one per live name, however many file states the
/// inode cap lets go, so the journal has its own cap: past it the oldest
/// names are dropped.
#[derive(Debug, Default)]
pub struct DirJournal {
    /// Path -> (recording number, name); the name boxed, so the tree's
    /// nodes stay small (a program creating 50,000 files leaves as many).
    /// The path is shared with `order`.
    by_path: BTreeMap<Arc<str>, (u64, Box<PendingName>)>,
    /// Recording number -> path, oldest first.
    order: BTreeMap<u64, Arc<str>>,
    /// File -> recording numbers of the names pointing to it: an fsync of
    /// a file finds its names without a walk over every pending one (a
    /// program that fsyncs each of 50,000 new files but never their
    /// directory would otherwise walk 50,000 names 50,000 times).
    by_file: FastMap<FileId, Numbers>,
    next: u64,
    last_dir: Option<Arc<str>>,
    last_fs: Option<Arc<str>>,
}

/// The recording numbers of one file's names: nearly every file has one
/// name, held inline rather than in a list of its own (50,000 new files
/// would otherwise hold 50,000 one-element lists).
#[derive(Debug)]
enum Numbers {
    One(u64),
    Many(Vec<u64>),
}

impl Numbers {
    fn as_slice(&self) -> &[u64] {
        match self {
            Numbers::One(n) => std::slice::from_ref(n),
            Numbers::Many(ns) => ns,
        }
    }

    fn push(&mut self, n: u64) {
        match self {
            Numbers::One(m) => *self = Numbers::Many(vec![*m, n]),
            Numbers::Many(ns) => ns.push(n),
        }
    }

    /// Removes `n`; true when none are left.
    fn remove(&mut self, n: u64) -> bool {
        match self {
            Numbers::One(m) => *m == n,
            Numbers::Many(ns) => {
                ns.retain(|&m| m != n);
                match ns[..] {
                    [] => true,
                    [m] => {
                        *self = Numbers::One(m);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

fn index(by_file: &mut FastMap<FileId, Numbers>, file: Option<FileId>, n: u64) {
    if let Some(f) = file {
        match by_file.get_mut(&f) {
            Some(ns) => ns.push(n),
            None => {
                by_file.insert(f, Numbers::One(n));
            }
        }
    }
}

fn unindex(by_file: &mut FastMap<FileId, Numbers>, file: Option<FileId>, n: u64) {
    let Some(f) = file else { return };
    if let Some(ns) = by_file.get_mut(&f)
        && ns.remove(n)
    {
        by_file.remove(&f);
    }
}

impl DirJournal {
    /// Records a pending name. Past `cap` names the oldest are dropped and
    /// returned: their verdicts can no longer be given.
    pub fn record(&mut self, mut p: PendingName, cap: usize) -> Vec<PendingName> {
        self.next += 1;
        // A program creating many files does so in one directory and on
        // one filesystem: their names share those strings.
        match &self.last_dir {
            Some(d) if *d == p.dir => p.dir = d.clone(),
            _ => self.last_dir = Some(p.dir.clone()),
        }
        match (&self.last_fs, &p.fs) {
            (Some(f), Some(mine)) if f == mine => p.fs = Some(f.clone()),
            (_, Some(mine)) => self.last_fs = Some(mine.clone()),
            _ => {}
        }
        let key = p.path.clone();
        self.order.insert(self.next, key.clone());
        index(&mut self.by_file, p.file, self.next);
        if let Some((n, old)) = self.by_path.insert(key, (self.next, Box::new(p))) {
            self.order.remove(&n);
            unindex(&mut self.by_file, old.file, n);
        }
        let mut dropped = Vec::new();
        while self.by_path.len() > cap.max(1) {
            let Some((n, path)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, p)) = self.by_path.remove(&*path) {
                unindex(&mut self.by_file, p.file, n);
                dropped.push(*p);
            }
        }
        dropped
    }

    fn remove(&mut self, path: &str) -> Option<PendingName> {
        let (n, p) = self.by_path.remove(path)?;
        self.order.remove(&n);
        unindex(&mut self.by_file, p.file, n);
        Some(*p)
    }

    /// The names `pred` matches are durable now: those whose process has
    /// not ended go (the program's own protocol), the others are closed by
    /// `by` (a verdict that the window closed later).
    fn made_durable(&mut self, by: &Arc<Closer>, pred: impl Fn(&PendingName) -> bool) {
        let (order, by_file) = (&mut self.order, &mut self.by_file);
        self.by_path.retain(|_, (n, p)| {
            if !pred(p) {
                return true;
            }
            if p.ended.is_none() {
                order.remove(n);
                unindex(by_file, p.file, *n);
                return false;
            }
            if p.closed.is_none() {
                p.closed = Some(by.clone());
            }
            true
        });
    }

    /// The name went away (renamed from, unlinked): nothing to persist.
    pub fn forget(&mut self, path: &str) -> Option<PendingName> {
        self.remove(path)
    }

    /// Every pending name.
    pub fn iter(&self) -> impl Iterator<Item = &PendingName> {
        self.by_path.values().map(|(_, p)| &**p)
    }

    /// The names process `key` left pending.
    pub fn of_process(&self, key: ProcKey) -> impl Iterator<Item = &PendingName> {
        self.iter().filter(move |p| p.key == key)
    }

    /// The pending name at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&PendingName> {
        self.by_path.get(path).map(|(_, p)| &**p)
    }

    /// A directory was renamed from `old` to `new`: names pending inside it
    /// now live under `new`, and an fsync of the directory by its new name
    /// (the write-set-then-rename-the-directory pattern) makes them durable.
    pub fn dir_moved(&mut self, old: &str, new: &str) {
        let prefix = format!("{old}/");
        let moved: Vec<Arc<str>> = self
            .by_path
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        let rehome = |s: &str| format!("{new}{}", &s[old.len()..]);
        for path in moved {
            let Some((n, mut p)) = self.by_path.remove(&*path) else {
                continue;
            };
            p.path = rehome(&p.path).into();
            if &*p.dir == old || p.dir.starts_with(&prefix) {
                p.dir = rehome(&p.dir).into();
            }
            // Same age under its new path.
            let key = p.path.clone();
            self.order.insert(n, key.clone());
            if let Some((m, old)) = self.by_path.insert(key, (n, p)) {
                self.order.remove(&m);
                unindex(&mut self.by_file, old.file, m);
            }
        }
    }

    /// The directory (by identity or any of its names) was fsynced.
    pub fn dir_synced(&mut self, dir: FileId, dir_paths: &[String], by: &Arc<Closer>) {
        self.made_durable(by, |p| {
            p.dir_id == Some(dir) || dir_paths.iter().any(|d| **d == *p.dir)
        });
    }

    /// A file's data became durable; names pointing to it remember that
    /// (and learn its identity and fs when they only had a path).
    pub fn data_synced(&mut self, file: FileId, fs: &str, paths: &[String]) {
        let mark = |p: &mut PendingName| {
            p.data_synced = true;
            p.file = Some(file);
            if p.fs.is_none() {
                p.fs = Some(fs.into());
            }
        };
        let known: Vec<u64> = self
            .by_file
            .get(&file)
            .map(|ns| ns.as_slice().to_vec())
            .unwrap_or_default();
        for n in known {
            let path = self.order.get(&n);
            if let Some((_, p)) = path.and_then(|path| self.by_path.get_mut(&**path)) {
                mark(p);
            }
        }
        for path in paths {
            if let Some((n, p)) = self.by_path.get_mut(path.as_str())
                && p.file.is_none()
            {
                mark(p);
                index(&mut self.by_file, p.file, *n);
            }
        }
    }

    /// syncfs of `dev` (or sync() with None) made every name durable.
    pub fn synced_fs(&mut self, dev: Option<u64>, by: &Arc<Closer>) {
        self.made_durable(by, |p| {
            dev.is_none_or(|d| {
                p.file.is_some_and(|f| f.dev == d) || p.dir_id.is_some_and(|f| f.dev == d)
            })
        });
    }

    /// Process `key` ended with `call`: the names it left pending become
    /// verdicts.
    pub fn ended(&mut self, key: ProcKey, call: &CallRef) {
        let call = Arc::new(call.clone());
        for (_, p) in self.by_path.values_mut() {
            if p.key == key && p.ended.is_none() {
                p.ended = Some(call.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::processes::ProcKey;

    fn id(ino: u64) -> FileId {
        FileId { dev: 1, ino }
    }

    fn name(path: &str, file: Option<FileId>) -> PendingName {
        PendingName {
            op: NameOp::Create,
            path: path.into(),
            old_path: None,
            dir: path.rsplit_once('/').map_or("/", |(d, _)| d).into(),
            dir_id: None,
            file,
            fs: None,
            key: ProcKey::default(),
            process: ProcessRef {
                pid: 1,
                comm: "t".into(),
                exe: None,
                argv: Default::default(),
            },
            data_synced: false,
            cared: false,
            call: Call::from(&CallRef {
                seq: 1,
                ts_ns: 1,
                pid: 1,
                tid: 1,
                comm: "t".into(),
                call: "openat(...) = 3".into(),
                stack: None,
            }),
            since_epoch: 0,
            ended: None,
            closed: None,
        }
    }

    fn synced(j: &DirJournal) -> Vec<&str> {
        j.iter()
            .filter(|p| p.data_synced)
            .map(|p| &*p.path)
            .collect()
    }

    #[test]
    fn an_fsync_finds_the_names_of_its_file_wherever_they_moved() {
        let mut j = DirJournal::default();
        j.record(name("/d/a", Some(id(1))), 100);
        j.record(name("/d/b", Some(id(2))), 100);
        j.record(name("/d/link-to-a", Some(id(1))), 100);
        j.record(name("/d/unknown", None), 100);
        j.dir_moved("/d", "/e");
        j.data_synced(id(1), "ext4", &[]);
        assert_eq!(synced(&j), vec!["/e/a", "/e/link-to-a"]);
        // A name known only by path learns the file, and a later fsync of
        // that file by identity finds it too.
        j.data_synced(id(3), "ext4", &["/e/unknown".to_string()]);
        assert_eq!(j.get("/e/unknown").unwrap().file, Some(id(3)));
        // Names that went away, or were replaced, are no longer the file's.
        j.forget("/e/a");
        j.record(name("/e/link-to-a", Some(id(4))), 100);
        for p in ["/e/b", "/e/link-to-a", "/e/unknown"] {
            assert!(j.get(p).is_some(), "{p}");
        }
        assert!(!j.by_file.contains_key(&id(1)), "{:?}", j.by_file);
        j.data_synced(id(2), "ext4", &[]);
        assert!(j.get("/e/b").unwrap().data_synced);
        assert!(!j.get("/e/link-to-a").unwrap().data_synced);
    }

    #[test]
    fn names_past_the_cap_leave_the_index_with_the_journal() {
        let mut j = DirJournal::default();
        for i in 0..10 {
            j.record(name(&format!("/d/{i}"), Some(id(i))), 4);
        }
        assert_eq!(j.iter().count(), 4);
        assert_eq!(j.by_file.len(), 4);
        j.data_synced(id(9), "ext4", &[]);
        assert_eq!(synced(&j), vec!["/d/9"]);
    }

    #[test]
    fn a_files_numbers_go_from_one_to_many_and_back() {
        let mut ns = Numbers::One(1);
        assert!(!ns.remove(2));
        ns.push(2);
        ns.push(3);
        assert_eq!(ns.as_slice(), [1, 2, 3]);
        assert!(!ns.remove(2));
        assert!(!ns.remove(1));
        assert!(matches!(ns, Numbers::One(3)));
        assert!(ns.remove(3));
        let mut many = Numbers::Many(vec![4]);
        assert!(many.remove(4));
    }
}
