//! What only the live system can add to an event. The kernel record of a
//! path-based call (rename, link) carries no inode; right after the call a
//! `lstat` of the new name finds the inode that was moved. A later rename
//! of the same name could race this, which is why fd-based identities from
//! the kernel are always preferred and this is only a fallback. A disk
//! image opened for reading gets what its header names (see
//! [`super::images`]).

use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

use auditor_analyzer::event::{Event, EventKind, FileId, FileInfo};

use super::decode::{file_type, fs_name};
use super::images::ImageReader;

/// What the live system adds. A replay reads no image: a recording
/// carries what the live run read, and the files may have changed since.
pub struct Enricher {
    images: Option<ImageReader>,
}

impl Enricher {
    pub fn live() -> Enricher {
        Enricher {
            images: Some(ImageReader::default()),
        }
    }

    pub fn replay() -> Enricher {
        Enricher { images: None }
    }

    pub fn enrich(&mut self, ev: &mut Event) {
        enrich(ev);
        if let Some(images) = self.images.as_mut() {
            images.enrich(ev);
        }
    }
}

/// Fills `Rename.file` for successful renames and links.
pub fn enrich(ev: &mut Event) {
    if let EventKind::Rename {
        new_path,
        ret: 0,
        file: file @ None,
        ..
    } = &mut ev.kind
        && new_path.starts_with('/')
    {
        *file = stat_info(Path::new(new_path), false, 0);
    }
}

/// What stat and statfs say about `path`, in the shape the kernel gives for
/// an open file. `follow` follows a final symlink (a `/proc/PID/fd/N` link
/// reaches the open file itself, even a deleted one); a renamed name is
/// looked at as it is. `flags` are the open flags when known.
pub(crate) fn stat_info(path: &Path, follow: bool, flags: u32) -> Option<FileInfo> {
    use std::os::unix::fs::MetadataExt;
    let m = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .ok()?;
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statfs is a valid out buffer; the path is NUL-terminated.
    let magic = unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut s) == 0 {
            s.f_type as u64
        } else {
            0
        }
    };
    Some(FileInfo {
        id: FileId {
            dev: m.dev(),
            ino: m.ino(),
        },
        file_type: file_type(m.mode()),
        fs: fs_name(magic).to_owned(),
        size: m.size() as i64,
        flags,
        created: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_the_inode_of_a_renamed_file() {
        let dir = std::env::temp_dir().join(format!("auditor-enrich-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"abc").unwrap();
        let mut ev = Event {
            seq: 1,
            ts_ns: 1,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            stack: None,
            kind: EventKind::Rename {
                call: auditor_analyzer::event::Syscall::Rename,
                old_dirfd: -100,
                old_path: "/x".into(),
                new_dirfd: -100,
                new_path: p.to_str().unwrap().into(),
                flags: 0,
                ret: 0,
                file: None,
            },
            in_process: Default::default(),
        };
        enrich(&mut ev);
        let f = ev.file().expect("filled");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(f.id.ino, std::fs::metadata(&p).unwrap().ino());
        assert_eq!(f.size, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
