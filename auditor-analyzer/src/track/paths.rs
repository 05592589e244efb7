//! Paths for people: lexical normalisation, resolution of relative paths,
//! and the table of which inode was last seen under which name.

use std::collections::HashMap;

use crate::event::FileId;

/// `AT_FDCWD`: relative paths resolve against the cwd.
pub const AT_FDCWD: i32 = -100;

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
}
