//! Paths for people: lexical normalisation, resolution of relative paths,
//! and the table of which inode was last seen under which name.

use std::collections::HashMap;

use crate::event::FileId;

pub use auditor_common::linux::at::AT_FDCWD;

/// Collapses `//`, `.` and `..` without touching the filesystem (symlinks
/// are not followed: the recorded name is what the program used).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if path.starts_with('/') {
        format!("/{}", parts.join("/"))
    } else {
        parts.join("/")
    }
}

/// `rel` made absolute against `base` (itself absolute), normalised.
pub fn join(base: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        normalize(rel)
    } else {
        normalize(&format!("{base}/{rel}"))
    }
}

/// The directory holding `path` (`/` for top-level names).
pub fn parent(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

/// `path` once the directory `old` is called `new`: Some when `path` is
/// `old` itself or lies under it.
pub fn rehome(path: &str, old: &str, new: &str) -> Option<String> {
    let rest = path.strip_prefix(old)?;
    (rest.is_empty() || rest.starts_with('/')).then(|| format!("{new}{rest}"))
}

/// Which inode each path names now, as far as the trace showed. Lets
/// path-only calls (rename, unlink) find the inode they act on.
#[derive(Debug, Default)]
pub struct NameTable {
    by_path: HashMap<String, FileId>,
}

impl NameTable {
    /// The inode last seen at `path`.
    pub fn get(&self, path: &str) -> Option<FileId> {
        self.by_path.get(path).copied()
    }

    /// Records that `path` now names `id`; returns what it named before.
    pub fn set(&mut self, path: &str, id: FileId) -> Option<FileId> {
        self.by_path.insert(path.to_string(), id)
    }

    /// `path` no longer names anything; returns what it named.
    pub fn remove(&mut self, path: &str) -> Option<FileId> {
        self.by_path.remove(path)
    }

    /// Takes out every name strictly under the directory `dir` (when that
    /// directory moves, they move with it).
    pub fn take_under(&mut self, dir: &str) -> Vec<(String, FileId)> {
        let prefix = format!("{dir}/");
        self.by_path
            .extract_if(|path, _| path.starts_with(&prefix))
            .collect()
    }

    /// Forgets names of inodes the tracker evicted, to keep memory bounded.
    pub fn retain_ids(&mut self, keep: impl Fn(&FileId) -> bool) {
        self.by_path.retain(|_, id| keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_lexically() {
        assert_eq!(normalize("/a//b/./c/../d"), "/a/b/d");
        assert_eq!(normalize("/.."), "/");
        assert_eq!(join("/home/u", "../x/./y"), "/home/x/y");
        assert_eq!(join("/home/u", "/etc/x"), "/etc/x");
        assert_eq!(parent("/d/a"), "/d");
        assert_eq!(parent("/a"), "/");
    }

    #[test]
    fn rehomes_the_directory_and_what_is_under_it_only() {
        assert_eq!(rehome("/d/ws", "/d/ws", "/d/l").as_deref(), Some("/d/l"));
        assert_eq!(
            rehome("/d/ws/a/b", "/d/ws", "/d/l").as_deref(),
            Some("/d/l/a/b")
        );
        assert_eq!(rehome("/d/ws2/a", "/d/ws", "/d/l"), None);
        assert_eq!(rehome("/d/w", "/d/ws", "/d/l"), None);
    }

    #[test]
    fn takes_names_under_a_directory_not_beside_it() {
        let id = |ino| FileId { dev: 1, ino };
        let mut t = NameTable::default();
        t.set("/d/ws", id(1));
        t.set("/d/ws/a", id(2));
        t.set("/d/ws/sub/b", id(3));
        t.set("/d/ws2/c", id(4));
        let mut under = t.take_under("/d/ws");
        under.sort();
        assert_eq!(
            under,
            [
                ("/d/ws/a".to_string(), id(2)),
                ("/d/ws/sub/b".to_string(), id(3))
            ]
        );
        assert_eq!(
            (t.get("/d/ws"), t.get("/d/ws2/c")),
            (Some(id(1)), Some(id(4)))
        );
        assert_eq!(t.get("/d/ws/a"), None);
    }
}
