//! A process's address space as far as its stacks need it: which object's
//! code is mapped where. Built from what the probes report (the exec'd
//! image, the program interpreter's base, executable mappings), so it
//! stays right for a process that has ended by the time its stacks are
//! read; `/proc/PID/maps` fills in for processes already running when
//! tracing began.

use std::{collections::VecDeque, ops::Range, path::PathBuf, sync::Arc};

use framehop::{ExplicitModuleSectionInfo, Module, Unwinder, x86_64::UnwinderX86_64};

use super::objects::{Identity, Object, Objects};

/// Recent opens remembered per process (an executable mapping names its
/// file by fd).
const FDS: usize = 32;

/// One object's code mapped at `avma`; `bias` is the address of the
/// object's virtual address 0.
#[derive(Clone, Debug)]
pub struct Mapped {
    pub avma: Range<u64>,
    pub bias: u64,
    pub object: Arc<Object>,
}

pub type Unwind = UnwinderX86_64<Arc<[u8]>>;

#[derive(Default)]
pub struct Space {
    /// Sorted by start, not overlapping.
    pub modules: Vec<Mapped>,
    /// The exec'd image's name and command line, for interpreters.
    pub exe: Option<String>,
    pub cmdline: Option<Vec<String>>,
    /// Recent opens: (fd, path).
    fds: VecDeque<(i32, String)>,
    unwinder: Option<Unwind>,
}

impl Clone for Space {
    /// A fork's copy: same mappings; its own unwinder is built when needed.
    fn clone(&self) -> Self {
        Space {
            modules: self.modules.clone(),
            exe: self.exe.clone(),
            cmdline: self.cmdline.clone(),
            fds: self.fds.clone(),
            unwinder: None,
        }
    }
}

impl Space {
    pub fn new(exe: Option<String>, cmdline: Option<Vec<String>>) -> Space {
        Space {
            exe,
            cmdline,
            ..Space::default()
        }
    }

    pub fn opened(&mut self, fd: i32, path: &str) {
        self.fds.retain(|(f, _)| *f != fd);
        if self.fds.len() == FDS {
            self.fds.pop_front();
        }
        self.fds.push_back((fd, path.to_string()));
    }

    pub fn inherit_fds(&mut self, from: &Space) {
        self.fds = from.fds.clone();
    }

    pub fn path_of_fd(&self, fd: i32) -> Option<&str> {
        self.fds
            .iter()
            .rev()
            .find(|(f, _)| *f == fd)
            .map(|(_, p)| p.as_str())
    }

    /// Maps `object`'s code at `avma` (what was there before goes).
    pub fn map(&mut self, avma: Range<u64>, bias: u64, object: Arc<Object>) {
        if avma.start >= avma.end {
            return;
        }
        self.modules
            .retain(|m| m.avma.end <= avma.start || m.avma.start >= avma.end);
        let at = self.modules.partition_point(|m| m.avma.start < avma.start);
        self.modules.insert(at, Mapped { avma, bias, object });
        self.unwinder = None;
    }

    /// The module whose code holds `addr`.
    pub fn module_at(&self, addr: u64) -> Option<&Mapped> {
        let i = self.modules.partition_point(|m| m.avma.start <= addr);
        self.modules[..i].last().filter(|m| addr < m.avma.end)
    }

    /// The unwinder over this space's modules (built once per change).
    pub fn unwinder(&mut self) -> &Unwind {
        if self.unwinder.is_none() {
            let mut u = Unwind::new();
            for m in &self.modules {
                let w = &m.object.unwinding;
                u.add_module(Module::new(
                    m.object.name.clone(),
                    m.avma.clone(),
                    m.bias,
                    ExplicitModuleSectionInfo {
                        base_svma: 0,
                        text_svma: w.text_svma.clone(),
                        eh_frame_svma: w.eh_frame_svma.clone(),
                        eh_frame: w.eh_frame.clone(),
                        eh_frame_hdr_svma: w.eh_frame_hdr_svma.clone(),
                        eh_frame_hdr: w.eh_frame_hdr.clone(),
                        got_svma: w.got_svma.clone(),
                        debug_frame: w.debug_frame.clone(),
                        ..Default::default()
                    },
                ));
            }
            self.unwinder = Some(u);
        }
        self.unwinder.get_or_insert_with(Unwind::new)
    }

    /// Reads `/proc/PID/maps` (a process that was running before tracing
    /// began, or whose mappings were missed): every executable file mapping.
    pub fn from_proc(pid: u32, objects: &mut Objects) -> Option<Space> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let mut space = Space::new(
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .map(|p| p.display().to_string()),
            cmdline(pid),
        );
        for line in maps.lines() {
            let Some(m) = MapsLine::parse(line) else {
                continue;
            };
            if !m.exec || !m.path.starts_with('/') {
                continue;
            }
            let candidates = [
                PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)),
                PathBuf::from(format!("/proc/{pid}/root{}", m.path)),
            ];
            let Some(object) = objects.get(Some(m.id), &m.path, &candidates) else {
                continue;
            };
            if let Some(vaddr) = object.vaddr_of_offset(m.offset) {
                let bias = m.start.wrapping_sub(vaddr);
                space.map(m.start..m.end, bias, object);
            }
        }
        Some(space)
    }
}

/// The command line of a live process.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .take(16)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then_some(args)
}

/// One line of `/proc/PID/maps`.
struct MapsLine {
    start: u64,
    end: u64,
    exec: bool,
    offset: u64,
    id: Identity,
    path: String,
}

impl MapsLine {
    fn parse(line: &str) -> Option<MapsLine> {
        let mut f = line.splitn(6, ' ');
        let (range, perms, offset, dev, inode) =
            (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        let path = f.next().unwrap_or("").trim_start().to_string();
        let (start, end) = range.split_once('-')?;
        let (major, minor) = dev.split_once(':')?;
        let dev = libc::makedev(
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        );
        Some(MapsLine {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            exec: perms.as_bytes().get(2) == Some(&b'x'),
            offset: u64::from_str_radix(offset, 16).ok()?,
            id: (dev, inode.parse().ok()?),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_and_garbage_does_not() {
        let m = MapsLine::parse(
            "7f0c1a028000-7f0c1a1bd000 r-xp 00028000 fe:01 1847 /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(
            (m.start, m.end, m.offset),
            (0x7f0c1a028000, 0x7f0c1a1bd000, 0x28000)
        );
        assert!(m.exec);
        assert_eq!(m.id, (libc::makedev(0xfe, 1), 1847));
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert!(MapsLine::parse("garbage").is_none());
        assert!(MapsLine::parse("zz-yy r-xp 0 0:0 0 /x").is_none());
    }

    #[test]
    fn our_own_space_finds_the_module_of_our_code() {
        let mut objects = Objects::default();
        let space = Space::from_proc(std::process::id(), &mut objects).unwrap();
        let here = our_own_space_finds_the_module_of_our_code as fn() as usize as u64;
        let m = space.module_at(here).expect("our code is mapped");
        assert!(
            m.object.name.ends_with(
                std::fs::read_link("/proc/self/exe")
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
            )
        );
        assert!(space.module_at(0).is_none());
    }
}
