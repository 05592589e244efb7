//! What the program believed it had written (the live files, read just
//! before the power cut) and what came back after recovery.

use std::{
    collections::BTreeMap,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use auditor_analyzer::FileId;
use serde::Serialize;

/// One regular file as the program saw it.
#[derive(Clone, Debug, Serialize)]
pub struct FileState {
    pub size: u64,
    /// FNV-1a 64 of the content, hex: an equality check, not a signature.
    pub hash: String,
    #[serde(skip)]
    pub id: FileId,
}

/// Every regular file under the mount, by absolute path.
pub type Snapshot = BTreeMap<PathBuf, FileState>;

/// Reads every regular file under `root` through the page cache, which is
/// what the program's own reads would return.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}

/// Whether any regular file is under `root` (the program wrote something
/// there); stops at the first.
pub fn any_file(root: &Path) -> bool {
    fn find(root: &Path, dir: &Path, depth: usize) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            if dir == root && e.file_name() == "lost+found" {
                return false;
            }
            match std::fs::symlink_metadata(e.path()) {
                Ok(m) if m.is_file() => true,
                Ok(m) if m.is_dir() && depth < 64 => find(root, &e.path(), depth + 1),
                _ => false,
            }
        })
    }
    find(root, root, 0)
}

fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        // ext4's own directory, not the program's.
        if dir == root && e.file_name() == "lost+found" {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, out);
        } else if meta.is_file()
            && let Some(state) = read_state(&path)
        {
            out.insert(path, state);
        }
    }
}

fn read_state(path: &Path) -> Option<FileState> {
    use std::os::unix::fs::OpenOptionsExt;
    // The traced program names these files: a symlink it swapped in is not
    // followed out of the scratch filesystem, a FIFO does not block us.
    let mut f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        size += n as u64;
        for &b in &buf[..n] {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Some(FileState {
        size,
        hash: format!("{hash:016x}"),
        id: FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
    })
}

/// What a crash did to one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Intact,
    /// The name is gone.
    Missing,
    /// Zero bytes where the program had written some.
    Empty,
    /// Fewer bytes than written.
    Shorter,
    /// As long (or longer) but not the same bytes.
    Different,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Intact => "intact",
            Outcome::Missing => "missing",
            Outcome::Empty => "empty",
            Outcome::Shorter => "shorter",
            Outcome::Different => "different",
        }
    }

    pub fn is_loss(self) -> bool {
        self != Outcome::Intact
    }
}

/// Judges a recovered file against the believed one.
pub fn judge(believed: &FileState, after: Option<&FileState>) -> Outcome {
    match after {
        None => Outcome::Missing,
        Some(a) if a.size == believed.size && a.hash == believed.hash => Outcome::Intact,
        Some(a) if a.size == 0 => Outcome::Empty,
        Some(a) if a.size < believed.size => Outcome::Shorter,
        Some(_) => Outcome::Different,
    }
}

/// The recovered state of one believed path (None when it cannot be read).
pub fn recovered(path: &Path) -> Option<FileState> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .and_then(|_| read_state(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch;

    fn st(size: u64, hash: &str) -> FileState {
        FileState {
            size,
            hash: hash.into(),
            id: FileId { dev: 1, ino: 2 },
        }
    }

    #[test]
    fn outcomes_from_size_and_hash() {
        let b = st(10, "a");
        assert_eq!(judge(&b, None), Outcome::Missing);
        assert_eq!(judge(&b, Some(&st(10, "a"))), Outcome::Intact);
        assert_eq!(judge(&b, Some(&st(0, "z"))), Outcome::Empty);
        assert_eq!(judge(&b, Some(&st(4, "c"))), Outcome::Shorter);
        assert_eq!(judge(&b, Some(&st(10, "d"))), Outcome::Different);
        assert_eq!(judge(&b, Some(&st(12, "d"))), Outcome::Different);
        assert_eq!(judge(&st(0, "e"), Some(&st(0, "e"))), Outcome::Intact);
    }

    #[test]
    fn snapshot_reads_sizes_and_tells_contents_apart() {
        let d = scratch("crash-files");
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("a"), b"hello").unwrap();
        std::fs::write(d.join("sub/b"), b"hellp").unwrap();
        let s = snapshot(&d);
        assert_eq!(s.len(), 2);
        let (a, b) = (&s[&d.join("a")], &s[&d.join("sub/b")]);
        assert_eq!((a.size, b.size), (5, 5));
        assert_ne!(a.hash, b.hash);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
