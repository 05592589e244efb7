//! User stacks, from the probes' copies to symbolized frames: who mapped
//! what where ([`space`]), the objects themselves ([`objects`]), unwinding
//! ([`unwind`]) and names and lines ([`symbols`]). Each distinct stack is
//! done once, while the capture runs (the process may be gone by the
//! report), and what the unwinder learnt goes back to the probes so the
//! same place is not copied again.

mod objects;
mod space;
mod symbols;
mod unwind;

use std::{collections::HashMap, os::fd::RawFd, path::PathBuf};

use auditor_analyzer::stack::{Frame, Interpreter, Stack, Unwind};
use auditor_common::{FileIdent, PathRecord, StackKey, StackRecord, linux::misc::PROT_EXEC};
use framehop::x86_64::CacheX86_64;

use super::kdev::user_dev;
use objects::{Identity, Objects};
use space::Space;

/// Pages are this size for the mappings the probes report.
const PAGE: u64 = 4096;

/// Processes whose address space is kept (a fork bomb does not grow it).
const SPACES: usize = 8192;

pub struct Stacks {
    spaces: HashMap<u32, Space>,
    objects: Objects,
    symbols: symbols::Symbols,
    cache: CacheX86_64,
    /// The probes' map of stack signatures (None: replaying, nothing to
    /// tell).
    sigs_fd: Option<RawFd>,
}

impl Stacks {
    pub fn new(sigs_fd: Option<RawFd>) -> Stacks {
        Stacks {
            spaces: HashMap::new(),
            objects: Objects::default(),
            symbols: symbols::Symbols::default(),
            cache: CacheX86_64::new(),
            sigs_fd,
        }
    }

    fn space(&mut self, pid: u32) -> &mut Space {
        if self.spaces.len() >= SPACES && !self.spaces.contains_key(&pid) {
            // Past the bound, start over: spaces are rebuilt from /proc for
            // processes still alive.
            self.spaces.clear();
        }
        self.spaces.entry(pid).or_default()
    }

    /// A process replaced its image: the main binary where the kernel
    /// loaded it, and the program interpreter at its base.
    pub fn exec(&mut self, pid: u32, filename: &str, rec: &PathRecord) {
        let a = &rec.sys.args;
        let id = (a[5] != 0).then(|| (user_dev(rec.sys.calls), a[5]));
        let name = if filename.starts_with('/') {
            filename.to_string()
        } else {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| filename.to_string())
        };
        let mut candidates = vec![PathBuf::from(format!("/proc/{pid}/exe"))];
        if filename.starts_with('/') {
            candidates.push(PathBuf::from(filename));
            candidates.push(PathBuf::from(format!("/proc/{pid}/root{filename}")));
        }
        let mut space = Space::new(Some(name.clone()), space::cmdline(pid));
        if let Some(old) = self.spaces.get(&pid) {
            // Open fds outlive the exec (unless close-on-exec).
            space.inherit_fds(old);
        }
        let (start_code, end_code, interp_base) = (a[2], a[3], a[4]);
        if let Some(id) = id
            && let Some(exe) = self.objects.get(Some(id), &name, &candidates)
            && let Some(range) = exe.exec_range()
            && start_code != 0
        {
            let bias = start_code.wrapping_sub(range.start);
            let end = end_code.max(bias.wrapping_add(range.end));
            space.map(start_code..end, bias, exe.clone());
            if let Some(interp) = &exe.interp
                && interp_base != 0
            {
                let base = interp_base;
                let candidates = [
                    PathBuf::from(interp),
                    PathBuf::from(format!("/proc/{pid}/root{interp}")),
                ];
                if let Some(ld) = self.objects.get(None, interp, &candidates)
                    && let Some(r) = ld.exec_range()
                {
                    space.map(base + r.start..base + r.end, base, ld);
                }
            }
        }
        *self.space(pid) = space;
    }

    /// An executable mapping of a file (a library the loader mapped, a
    /// `dlopen`): where its code now is.
    pub fn mapped(&mut self, pid: u32, args: &[u64; 6], ret: i64, file: &FileIdent) {
        let (len, prot, fd, offset) = (args[1], args[2], args[4] as i32, args[5]);
        let Some(id) = identity(file) else { return };
        if prot & PROT_EXEC == 0 || ret < 0 || len == 0 {
            return;
        }
        let start = ret as u64;
        let end = start.saturating_add(len.div_ceil(PAGE) * PAGE);
        let path = self.space(pid).path_of_fd(fd).map(str::to_string);
        let name = path.clone().unwrap_or_else(|| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| format!("<inode {}:{}>", id.0, id.1))
        });
        let mut candidates = vec![
            PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}")),
            PathBuf::from(format!("/proc/{pid}/fd/{fd}")),
        ];
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            candidates.push(PathBuf::from(format!("/proc/{pid}/root{p}")));
            candidates.push(PathBuf::from(p));
        }
        if let Some(object) = self.objects.get(Some(id), &name, &candidates)
            && let Some(vaddr) = object.vaddr_of_offset(offset)
        {
            self.space(pid)
                .map(start..end, start.wrapping_sub(vaddr), object);
        }
    }

    /// An open that succeeded: a later mapping may name its file by fd.
    pub fn opened(&mut self, pid: u32, fd: i64, path: &str) {
        if let Ok(fd) = i32::try_from(fd)
            && fd >= 0
        {
            self.space(pid).opened(fd, path);
        }
    }

    /// A new process shares (thread) or copies (fork) its parent's space.
    pub fn forked(&mut self, parent: u32, child: u32, thread: bool) {
        if thread || parent == child {
            return;
        }
        if let Some(s) = self.spaces.get(&parent).cloned() {
            *self.space(child) = s;
        }
    }

    /// Reads the address space of a process found running at attach now,
    /// while it lives: its stacks may be read only after it ended.
    pub fn prime(&mut self, pid: u32) {
        if let Some(s) = Space::from_proc(pid, &mut self.objects) {
            *self.space(pid) = s;
        }
    }

    /// The process ended: its stacks were all sent before its exit.
    pub fn exited(&mut self, pid: u32) {
        self.spaces.remove(&pid);
    }

    /// Unwinds a stack the probes copied, symbolizes it when it is `shown`
    /// (else its frames name their object and offset only), and tells the
    /// probes where to find it again.
    pub fn resolve(&mut self, tgid: u32, rec: &StackRecord, shown: bool) -> Stack {
        if self.spaces.get(&tgid).is_none_or(|s| s.modules.is_empty())
            && let Some(s) = Space::from_proc(tgid, &mut self.objects)
        {
            *self.space(tgid) = s;
        }
        self.space(tgid);
        let space = self.spaces.entry(tgid).or_default();
        let u = unwind::unwind(space.unwinder(), &mut self.cache, rec);
        // The signature goes back before the frames are named: naming the
        // first frames in an object reads its symbols (and debug file),
        // and until the probes have the signature, every call from this
        // place sends another 12 KiB copy (a loop of creates filled the
        // ring with them).
        if let Some(fd) = self.sigs_fd {
            let key = StackKey {
                tgid,
                _pad: 0,
                ip: rec.ip,
                sp: rec.sp,
            };
            let sig = unwind::signature(rec.id, rec.sp, &u);
            if sig.words > 0 {
                // A full map only means this place is copied again.
                let _ = super::maps::update(fd, &key, &sig);
            }
        }
        let space = &self.spaces[&tgid];
        let mut frames: Vec<Frame> = Vec::new();
        for &at in &u.frames {
            match space.module_at(at.lookup()) {
                Some(m) if shown => {
                    frames.extend(self.symbols.frames(&m.object, m.bias, at).iter().cloned())
                }
                Some(m) => frames.push(symbols::Symbols::bare(&m.object, m.bias, at)),
                None => frames.push(Frame {
                    address: at.address,
                    ..Frame::default()
                }),
            }
        }
        let interpreter = interpreter(space);
        Stack {
            frames,
            unwind: if u.frame_pointers_agree {
                Unwind::FramePointers
            } else {
                Unwind::Dwarf
            },
            truncated: u.truncated,
            interpreter,
        }
    }
}

fn identity(f: &FileIdent) -> Option<Identity> {
    (f.ino != 0).then(|| (user_dev(f.dev), f.ino))
}

/// Interpreters whose native frames are not the program's.
const INTERPRETERS: &[&str] = &[
    "python", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh", "bash", "sh", "dash", "zsh",
    "ksh", "mksh", "busybox", "java",
];

fn interpreter(space: &Space) -> Option<Interpreter> {
    let exe = space.exe.as_deref()?;
    let base = exe.rsplit('/').next()?;
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.iter().find(|i| stem == **i)?;
    let args = space.cmdline.as_deref().unwrap_or_default();
    let mut script = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => {
                script = Some("-c COMMAND".to_string());
                break;
            }
            "-m" => {
                script = it.next().map(|m| format!("-m {m}"));
                break;
            }
            a if a.starts_with('-') => {}
            a => {
                script = Some(a.to_string());
                break;
            }
        }
    }
    Some(Interpreter {
        name: base.to_string(),
        script,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(exe: &str, args: &[&str]) -> Space {
        Space::new(
            Some(exe.into()),
            Some(args.iter().map(|a| a.to_string()).collect()),
        )
    }

    #[test]
    fn interpreters_and_their_scripts_are_named() {
        let i = interpreter(&space(
            "/usr/bin/python3.11",
            &["python3", "-B", "save.py", "x"],
        ))
        .unwrap();
        assert_eq!(
            (i.name.as_str(), i.script.as_deref()),
            ("python3.11", Some("save.py"))
        );
        let i = interpreter(&space("/bin/dash", &["sh", "-c", "echo hi > x"])).unwrap();
        assert_eq!(i.script.as_deref(), Some("-c COMMAND"));
        let i = interpreter(&space(
            "/usr/bin/python3",
            &["python3", "-m", "http.server"],
        ))
        .unwrap();
        assert_eq!(i.script.as_deref(), Some("-m http.server"));
        assert!(interpreter(&space("/usr/bin/git", &["git", "commit"])).is_none());
        assert!(interpreter(&space("/opt/app/shred", &["shred"])).is_none());
    }
}
