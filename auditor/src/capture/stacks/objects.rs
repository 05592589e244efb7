//! The executables and libraries stacks run through, opened once each and
//! held open: a process may be gone (and its binary replaced) by the time
//! its stacks are symbolized, and a handle keeps the very file that ran.
//! Only a file whose identity matches what the kernel said was mapped is
//! used, so a name swapped meanwhile (or a link planted by a traced
//! program) is never read in its place.

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{
    Object as _, ObjectSection,
    read::elf::{ElfFile64, ProgramHeader as _},
};

/// Objects kept open at once (the least recently added go first).
const KEPT: usize = 512;

/// Largest object read (a bigger one is left unsymbolized).
const MAX_BYTES: u64 = 1 << 30;

/// `(st_dev, st_ino)`.
pub type Identity = (u64, u64);

/// A loadable segment, as the ELF program headers state it.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub exec: bool,
}

/// What unwinding needs from an object: its unwind tables and where its
/// sections sit (as the object states it).
#[derive(Debug, Default)]
pub struct Unwinding {
    pub text_svma: Option<std::ops::Range<u64>>,
    pub eh_frame_svma: Option<std::ops::Range<u64>>,
    pub eh_frame: Option<Arc<[u8]>>,
    pub eh_frame_hdr_svma: Option<std::ops::Range<u64>>,
    pub eh_frame_hdr: Option<Arc<[u8]>>,
    pub got_svma: Option<std::ops::Range<u64>>,
    pub debug_frame: Option<Arc<[u8]>>,
}

/// One executable or library.
#[derive(Debug)]
pub struct Object {
    /// The name it was mapped under, for people.
    pub name: String,
    /// Where the symbolizer reads it: the name itself when it still is the
    /// same file, else our handle (`/proc/self/fd/N`).
    pub open_path: PathBuf,
    _file: File,
    pub segments: Vec<Segment>,
    /// The program interpreter (`PT_INTERP`), for an executable.
    pub interp: Option<String>,
    pub unwinding: Unwinding,
}

impl Object {
    /// The segment-relative virtual address of file offset `offset`.
    pub fn vaddr_of_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.offset && offset < s.offset + s.filesz.max(1))
            .map(|s| s.vaddr + (offset - s.offset))
    }

    /// The lowest and highest virtual addresses of executable segments.
    pub fn exec_range(&self) -> Option<std::ops::Range<u64>> {
        let exec = self.segments.iter().filter(|s| s.exec);
        let lo = exec.clone().map(|s| s.vaddr).min()?;
        let hi = exec.map(|s| s.vaddr + s.memsz).max()?;
        Some(lo..hi)
    }
}

/// Opened objects by identity.
#[derive(Default)]
pub struct Objects {
    by_id: HashMap<Identity, Arc<Object>>,
    order: VecDeque<Identity>,
}

impl Objects {
    /// The object with identity `id`, opened from the first of `candidates`
    /// that is that file (`id` None: the first that opens, for the program
    /// interpreter, whose identity the kernel does not tell).
    pub fn get(
        &mut self,
        id: Option<Identity>,
        name: &str,
        candidates: &[PathBuf],
    ) -> Option<Arc<Object>> {
        if let Some(id) = id
            && let Some(known) = self.by_id.get(&id)
        {
            return Some(known.clone());
        }
        let (file, got) = candidates.iter().find_map(|p| open(p, id))?;
        if let Some(known) = self.by_id.get(&got) {
            return Some(known.clone());
        }
        let object = Arc::new(load(file, name)?);
        self.by_id.insert(got, object.clone());
        self.order.push_back(got);
        while self.order.len() > KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        Some(object)
    }
}

/// Opens `path` read-only when it is a regular file with identity `want`
/// (any regular file when `want` is None).
fn open(path: &Path, want: Option<Identity>) -> Option<(File, Identity)> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let got = (meta.dev(), meta.ino());
    if !meta.is_file() || meta.len() > MAX_BYTES || want.is_some_and(|w| w != got) {
        return None;
    }
    Some((file, got))
}

/// Reads what unwinding and symbolizing need from an opened ELF object.
fn load(file: File, name: &str) -> Option<Object> {
    use std::io::Read;
    let mut data = Vec::new();
    (&file).take(MAX_BYTES).read_to_end(&mut data).ok()?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data).ok()?;
    let segments = elf
        .elf_program_headers()
        .iter()
        .filter(|p| p.p_type(elf.endian()) == object::elf::PT_LOAD)
        .map(|p| {
            let e = elf.endian();
            Segment {
                vaddr: p.p_vaddr(e),
                memsz: p.p_memsz(e),
                offset: p.p_offset(e),
                filesz: p.p_filesz(e),
                exec: p.p_flags(e) & object::elf::PF_X != 0,
            }
        })
        .collect();
    let interp = elf
        .elf_program_headers()
        .iter()
        .find(|p| p.p_type(elf.endian()) == object::elf::PT_INTERP)
        .and_then(|p| p.data(elf.endian(), &*data).ok())
        .map(|b| String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(b)).into_owned());
    let range = |name: &str| {
        elf.section_by_name(name)
            .map(|s| s.address()..s.address() + s.size())
    };
    let bytes = |name: &str| {
        elf.section_by_name(name)
            .and_then(|s| s.data().ok())
            .filter(|d| !d.is_empty())
            .map(Arc::<[u8]>::from)
    };
    let unwinding = Unwinding {
        text_svma: range(".text"),
        eh_frame_svma: range(".eh_frame"),
        eh_frame: bytes(".eh_frame"),
        eh_frame_hdr_svma: range(".eh_frame_hdr"),
        eh_frame_hdr: bytes(".eh_frame_hdr"),
        got_svma: range(".got"),
        debug_frame: bytes(".debug_frame"),
    };
    // The symbolizer reads by name: the real name when only root can
    // change what it names and it names this very file (its debug link is
    // then found beside it), else our handle. A name a traced program can
    // swap (its own build directory) could otherwise turn into a FIFO that
    // blocks the read, or another file, between our check and that read.
    let open_path = match root_held(Path::new(name)) {
        Some((path, m))
            if file
                .metadata()
                .is_ok_and(|f| f.dev() == m.dev() && f.ino() == m.ino()) =>
        {
            path
        }
        _ => PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        )),
    };
    Some(Object {
        name: name.to_string(),
        open_path,
        _file: file,
        segments,
        interp,
        unwinding,
    })
}

/// `name` resolved, with what it names, when root owns it and every
/// directory above it, none of them writable by group or others: nobody
/// else can make it name another file.
fn root_held(name: &Path) -> Option<(PathBuf, std::fs::Metadata)> {
    let path = std::fs::canonicalize(name).ok()?;
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if meta.uid() != 0 || !meta.is_file() {
        return None;
    }
    for dir in path.ancestors().skip(1) {
        let d = std::fs::symlink_metadata(dir).ok()?;
        if d.uid() != 0 || !d.is_dir() || d.mode() & 0o022 != 0 {
            return None;
        }
    }
    Some((path, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_binary_has_segments_and_unwind_tables() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let mut objects = Objects::default();
        let o = objects
            .get(None, exe.to_str().unwrap(), std::slice::from_ref(&exe))
            .expect("our binary loads");
        assert!(o.exec_range().is_some());
        assert!(o.unwinding.eh_frame.is_some() && o.unwinding.eh_frame_hdr.is_some());
        assert!(o.interp.as_deref().is_some_and(|i| i.contains("ld-linux")));
    }

    /// Only names nobody but root can change are handed on by name.
    #[test]
    fn names_only_root_can_change_are_trusted() {
        use std::os::unix::fs::PermissionsExt;
        assert!(root_held(Path::new("/bin/sh")).is_some());
        let dir = std::env::temp_dir().join(format!("auditor-objects-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("lib.so");
        std::fs::write(&f, b"x").unwrap();
        // Under the temporary directory (writable by all, sticky).
        assert!(root_held(&f).is_none());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(root_held(&f).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_the_mapped_one_is_refused() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let mut objects = Objects::default();
        assert!(
            objects
                .get(Some((0, 1)), "x", std::slice::from_ref(&exe))
                .is_none()
        );
        assert!(
            objects
                .get(None, "x", &[PathBuf::from("/etc/hostname")])
                .is_none()
        );
    }
}
