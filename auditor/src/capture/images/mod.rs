//! Disk images' headers, read when a traced process opens a regular file
//! read-only, so the rules can tell an image that needs files outside
//! itself (see `auditor_analyzer::image`). The file is read through the
//! process's own fd while it holds it, by name otherwise, and only its
//! first bytes: 512 to recognise a qcow2 or VMDK file, then at most 64 KiB
//! of its header or descriptor. Each file's header is read once per
//! version (identity, size, mtime and ctime): every process opens its
//! libraries, and none of them is an image. The files an image names are
//! looked up as the process would see them, and their own headers read in
//! turn (a chain), to a bounded depth, each file once.

mod files;
mod header;
mod names;
mod qcow2;
mod vmdk;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::MetadataExt;

use auditor_analyzer::event::{Event, EventKind, FileId, FileType};
use auditor_analyzer::image::{DepState, Dependency, ImageInfo};
use auditor_common::linux::open::{O_ACCMODE, O_PATH};

use files::{Found, Lookup};
use header::Header;

/// Headers remembered (those of files that are no image included); the
/// cache starts over past it.
const CACHE_MAX: usize = 16_384;
/// Links of a chain followed (QEMU refuses deeper ones).
const DEPTH_MAX: u32 = 16;
/// Dependencies listed for one image.
const NEEDS_MAX: usize = 64;
/// Read of every candidate: the magics, a qcow2 header, a KDMV header.
const FIRST: usize = 512;
/// Smaller files hold no image header.
const MIN_SIZE: i64 = 20;
/// Root directories of processes kept open (each holds an fd).
const ROOTS_MAX: usize = 64;

/// What identifies one version of a file's content.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Default)]
pub struct ImageReader {
    headers: HashMap<FileId, (Stamp, Option<Header>)>,
    /// Each process's root directory, until it execs or ends.
    roots: HashMap<u32, File>,
}

impl ImageReader {
    /// Fills `Open.image` for a successful read-only open of an existing
    /// regular file on a local filesystem that holds an image's header.
    pub fn enrich(&mut self, ev: &mut Event) {
        let pid = ev.pid;
        if matches!(
            ev.kind,
            EventKind::Exec { .. }
                | EventKind::Exit {
                    group_dead: true,
                    ..
                }
        ) {
            // An exec may enter another root (a container's entry point).
            self.roots.remove(&pid);
        }
        if let EventKind::Open {
            path,
            flags,
            ret,
            file: Some(info),
            image: image @ None,
            ..
        } = &mut ev.kind
            && *ret >= 0
            && *flags & O_ACCMODE == 0
            && *flags & O_PATH == 0
            && info.file_type == FileType::Regular
            && !info.created
            && info.size >= MIN_SIZE
            && files::is_local(&info.fs)
        {
            *image = self.examine(pid, *ret as i32, path, info.id);
        }
    }

    /// The image `pid` opened as `fd` (`path`), with what it needs.
    fn examine(&mut self, pid: u32, fd: i32, path: &str, id: FileId) -> Option<ImageInfo> {
        let found = match files::through_fd(pid, fd, id) {
            Some(f) => f,
            // The process closed it already (or the fd is another file).
            None => match files::in_root(self.root(pid)?, path) {
                Lookup::Found(f) if f.id() == id => f,
                _ => return None,
            },
        };
        let header = self.header(&found, true)?;
        Some(self.resolve(pid, path, id, header))
    }

    /// `pid`'s root directory, opened once per process image.
    fn root(&mut self, pid: u32) -> Option<&File> {
        if !self.roots.contains_key(&pid) {
            if self.roots.len() >= ROOTS_MAX {
                self.roots.clear();
            }
            self.roots.insert(pid, files::root_of(pid)?);
        }
        self.roots.get(&pid)
    }

    /// The header of `f`, from the cache while the file is unchanged;
    /// `local` when its filesystem is known to be one whose files are read.
    fn header(&mut self, f: &Found, local: bool) -> Option<Header> {
        let stamp = Stamp::of(&f.meta);
        if let Some((s, h)) = self.headers.get(&f.id())
            && *s == stamp
        {
            return h.clone();
        }
        let h = if local || f.on_local_fs() {
            read_header(f)
        } else {
            None
        };
        if self.headers.len() >= CACHE_MAX {
            self.headers.clear();
        }
        self.headers.insert(f.id(), (stamp, h.clone()));
        h
    }

    /// Looks up every file the image names, then what those name, breadth
    /// first; a file met twice (a sparse VMDK names itself, a chain may
    /// loop) is listed once.
    fn resolve(&mut self, pid: u32, path: &str, id: FileId, header: Header) -> ImageInfo {
        let mut info = ImageInfo {
            format: header.format.to_string(),
            needs: Vec::new(),
            cut: false,
        };
        let mut seen = vec![id];
        let mut queue = VecDeque::from([(path.to_string(), 1, header.refs)]);
        while let Some((named_by, depth, refs)) = queue.pop_front() {
            for r in refs {
                if info.needs.len() >= NEEDS_MAX {
                    info.cut = true;
                    return info;
                }
                let named = names::classify(&r.name, &named_by);
                let lookup = match (named.path.as_deref(), self.root(pid)) {
                    (Some(p), Some(root)) => Some(files::in_root(root, p)),
                    (Some(_), None) => Some(Lookup::Unreadable),
                    (None, _) => None,
                };
                let mut need = Dependency {
                    role: r.role,
                    name: named.shown,
                    naming: named.naming,
                    path: named.path,
                    state: DepState::NotAPath,
                    file: None,
                    format: r.format,
                    named_by: named_by.clone(),
                    depth,
                };
                match lookup {
                    None => {}
                    Some(Lookup::Found(f)) => {
                        if seen.contains(&f.id()) {
                            continue;
                        }
                        seen.push(f.id());
                        need.state = DepState::Present;
                        need.file = Some(f.id());
                        if let Some(h) = self.header(&f, false) {
                            need.format = Some(h.format.to_string());
                            if depth >= DEPTH_MAX {
                                info.cut |= !h.refs.is_empty();
                            } else if let Some(p) = &need.path {
                                queue.push_back((p.clone(), depth + 1, h.refs));
                            }
                        }
                    }
                    Some(Lookup::Missing) => need.state = DepState::Missing,
                    Some(Lookup::Symlink) => need.state = DepState::Symlink,
                    Some(Lookup::NotRegular) => need.state = DepState::NotRegular,
                    Some(Lookup::Unreadable) => need.state = DepState::Unreadable,
                }
                info.needs.push(need);
            }
        }
        info
    }
}

/// Reads and parses what `f` starts with: None when it is no image.
fn read_header(f: &Found) -> Option<Header> {
    let file = f.open()?;
    let first = files::read_at(&file, 0, FIRST)?;
    if first.starts_with(qcow2::MAGIC) {
        let buf = files::read_at(&file, 0, qcow2::READ)?;
        return qcow2::parse(&buf);
    }
    let (at, len) = vmdk::locate(&first)?;
    let text = files::read_at(&file, at, len)?;
    Some(vmdk::parse_descriptor(&text))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use auditor_analyzer::image::{Naming, Role};

    use super::*;
    use crate::test_support::scratch;

    fn id(p: &Path) -> FileId {
        let m = std::fs::metadata(p).unwrap();
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// The image at `p` as a process that closed it already would be seen.
    fn examine(p: &Path) -> Option<ImageInfo> {
        ImageReader::default().examine(std::process::id(), -1, p.to_str().unwrap(), id(p))
    }

    /// A qcow2 image `o.qcow2` backed by `base.raw`, in a scratch directory
    /// of their own: (the directory, the image).
    fn thin_image(name: &str) -> (PathBuf, PathBuf) {
        let d = scratch(name);
        std::fs::write(d.join("base.raw"), vec![0u8; 512]).unwrap();
        let p = d.join("o.qcow2");
        std::fs::write(&p, qcow2::v3(b"base.raw")).unwrap();
        (d, p)
    }

    fn paths(info: &ImageInfo) -> Vec<(u32, Option<&str>, DepState)> {
        info.needs
            .iter()
            .map(|n| (n.depth, n.path.as_deref(), n.state))
            .collect()
    }

    #[test]
    fn a_chain_of_two_names_both_levels() {
        let d = scratch("images-chain");
        std::fs::write(d.join("base.raw"), vec![0u8; 4096]).unwrap();
        let base = d.join("base.raw");
        std::fs::write(
            d.join("mid.qcow2"),
            qcow2::v3(base.to_str().unwrap().as_bytes()),
        )
        .unwrap();
        std::fs::write(d.join("top.qcow2"), qcow2::v3(b"mid.qcow2")).unwrap();
        let info = examine(&d.join("top.qcow2")).unwrap();
        assert_eq!(info.format, "qcow2");
        let mid = d.join("mid.qcow2");
        assert_eq!(
            paths(&info),
            [
                (1, mid.to_str(), DepState::Present),
                (2, base.to_str(), DepState::Present)
            ]
        );
        assert_eq!(info.needs[0].naming, Naming::Relative);
        assert_eq!(info.needs[0].format.as_deref(), Some("qcow2"));
        assert_eq!(info.needs[1].naming, Naming::Absolute);
        assert_eq!(info.needs[1].format.as_deref(), Some("raw"));
        assert_eq!(info.needs[1].named_by, mid.to_str().unwrap());
        assert_eq!(info.needs[1].file, Some(id(&base)));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_linked_and_looping_backing_files() {
        let d = scratch("images-odd");
        std::fs::write(d.join("a.qcow2"), qcow2::v3(b"gone.raw")).unwrap();
        let a = examine(&d.join("a.qcow2")).unwrap();
        assert_eq!(a.needs[0].state, DepState::Missing);
        assert_eq!(a.needs[0].file, None);
        std::fs::write(d.join("real.raw"), b"0123456789abcdefghij").unwrap();
        std::os::unix::fs::symlink(d.join("real.raw"), d.join("link.raw")).unwrap();
        std::fs::write(d.join("b.qcow2"), qcow2::v3(b"link.raw")).unwrap();
        let b = examine(&d.join("b.qcow2")).unwrap();
        assert_eq!(b.needs[0].state, DepState::Symlink, "not followed");
        // x -> y -> x: each listed once.
        std::fs::write(d.join("x.qcow2"), qcow2::v3(b"y.qcow2")).unwrap();
        std::fs::write(d.join("y.qcow2"), qcow2::v3(b"x.qcow2")).unwrap();
        let x = examine(&d.join("x.qcow2")).unwrap();
        assert_eq!(paths(&x).len(), 1);
        // A name with a newline is shown, not looked up.
        std::fs::write(d.join("c.qcow2"), qcow2::v3(b"real.raw\n")).unwrap();
        let c = examine(&d.join("c.qcow2")).unwrap();
        assert_eq!(
            (c.needs[0].naming, c.needs[0].state),
            (Naming::Invalid, DepState::NotAPath)
        );
        assert!(examine(&d.join("real.raw")).is_none(), "not an image");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn vmdk_descriptors_and_sparse_files() {
        let d = scratch("images-vmdk");
        std::fs::write(d.join("disk-flat.vmdk"), vec![0u8; 1024]).unwrap();
        let text = "# Disk DescriptorFile\nversion=1\nparentCID=ffffffff\nRW 2 FLAT \"disk-flat.vmdk\" 0\nRW 2 FLAT \"/elsewhere/missing.vmdk\" 0\n";
        std::fs::write(d.join("disk.vmdk"), text).unwrap();
        let info = examine(&d.join("disk.vmdk")).unwrap();
        assert_eq!(info.format, "vmdk");
        assert_eq!(info.needs.len(), 2);
        assert_eq!(info.needs[0].role, Role::Extent);
        assert_eq!(info.needs[0].state, DepState::Present);
        assert_eq!(info.needs[1].state, DepState::Missing);
        // A monolithic sparse file names itself only: it needs nothing.
        let mut sparse = vec![0u8; 2048];
        sparse[0..4].copy_from_slice(vmdk::SPARSE_MAGIC);
        sparse[28..36].copy_from_slice(&1u64.to_le_bytes());
        sparse[36..44].copy_from_slice(&2u64.to_le_bytes());
        let desc = b"# Disk DescriptorFile\nRW 4 SPARSE \"sparse.vmdk\"\n";
        sparse[512..512 + desc.len()].copy_from_slice(desc);
        std::fs::write(d.join("sparse.vmdk"), &sparse).unwrap();
        let s = examine(&d.join("sparse.vmdk")).unwrap();
        assert!(!s.is_thin(), "{s:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_header_is_read_again_only_once_the_file_changed() {
        let (d, p) = thin_image("images-cache");
        let mut r = ImageReader::default();
        let pid = std::process::id();
        let at = p.to_str().unwrap();
        assert!(r.examine(pid, -1, at, id(&p)).unwrap().is_thin());
        // Flattened in place (qemu-img rebase -b ""): the backing is gone.
        let mut flat = qcow2::v3(b"base.raw");
        flat[8..20].fill(0);
        flat.push(0);
        std::fs::write(&p, flat).unwrap();
        assert!(!r.examine(pid, -1, at, id(&p)).unwrap().is_thin());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn only_read_only_opens_of_regular_files_are_examined() {
        let (d, p) = thin_image("images-enrich");
        let open = |flags: u32| Event {
            seq: 1,
            ts_ns: 1,
            pid: std::process::id(),
            tid: std::process::id(),
            comm: "t".into(),
            in_process: Default::default(),
            stack: None,
            kind: EventKind::Open {
                call: auditor_analyzer::event::Syscall::Openat,
                path: p.to_str().unwrap().into(),
                dirfd: -100,
                flags,
                mode: 0,
                ret: 999,
                file: Some(auditor_analyzer::event::FileInfo {
                    id: id(&p),
                    file_type: FileType::Regular,
                    fs: "ext4".into(),
                    size: 512,
                    flags,
                    created: false,
                }),
                image: None,
            },
        };
        let image = |ev: Event| match ev.kind {
            EventKind::Open { image, .. } => image,
            _ => None,
        };
        let mut r = ImageReader::default();
        let mut read = open(0);
        r.enrich(&mut read);
        assert!(image(read).is_some_and(|i| i.is_thin()));
        let mut write = open(2);
        r.enrich(&mut write);
        assert!(image(write).is_none(), "read-write: its user, not a copier");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
