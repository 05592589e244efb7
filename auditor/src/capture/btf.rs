//! Field offsets of the kernel structures the probes walk, read from the
//! running kernel's BTF. rustc emits no CO-RE relocations for BPF, so the
//! offsets must come from here and never be hard-coded.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use auditor_common::{Offsets, REGS_WINDOW, WINDOW};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// The structs the probes walk: only their names are indexed, so start-up
/// does not build a table of the kernel's ~150,000 types.
const WANTED: &[&str] = &[
    "task_struct",
    "signal_struct",
    "files_struct",
    "fdtable",
    "file",
    "inode",
    "super_block",
    "pt_regs",
    "linux_binprm",
    "kernel_siginfo",
    "k_sigaction",
    "sigaction",
    "fs_struct",
    "path",
    "dentry",
    "mm_struct",
    "nsproxy",
    "mnt_namespace",
    "ns_common",
];

/// Typedefs looked up by name: the prototypes of raw tracepoints.
const WANTED_TYPEDEFS: &[&str] = &["btf_trace_sched_process_exit"];

/// A BTF blob read in place: where each type's record starts, and the ids
/// of the structs in [`WANTED`]. Members are decoded when asked for.
pub struct Btf<'a> {
    data: &'a [u8],
    strings: &'a [u8],
    /// Byte offset in `data` of each type's record; index = type id
    /// (slot 0, `void`, has none and holds 0).
    types: Vec<u32>,
    structs: HashMap<&'static str, u32>,
    typedefs: HashMap<&'static str, u32>,
}

/// One type record's fixed part.
struct Type {
    name: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// size for struct/union/int, referenced type for modifiers.
    size_or_type: u32,
    /// Offset of what follows the fixed part (members, for structs).
    body: usize,
}

fn u16_at(data: &[u8], o: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(
        data.get(o..o + 2).context("BTF truncated")?.try_into()?,
    ))
}

fn u32_at(data: &[u8], o: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(
        data.get(o..o + 4).context("BTF truncated")?.try_into()?,
    ))
}

impl<'a> Btf<'a> {
    /// Indexes the structs the probes need.
    pub fn parse(data: &'a [u8]) -> Result<Btf<'a>> {
        Btf::parse_wanting(data, WANTED)
    }

    /// Indexes the structs named in `wanted`.
    fn parse_wanting(data: &'a [u8], wanted: &'static [&'static str]) -> Result<Btf<'a>> {
        if u16_at(data, 0)? != BTF_MAGIC {
            bail!("not a little-endian BTF blob");
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("BTF string section out of bounds")?;
        let mut btf = Btf {
            data,
            strings,
            types: vec![0],
            structs: HashMap::new(),
            typedefs: HashMap::new(),
        };
        let mut pos = hdr_len + type_off;
        let end = pos + type_len;
        while pos < end {
            let t = btf.type_at(pos)?;
            btf.types.push(pos as u32);
            pos = t.body
                + match t.kind {
                    KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                    KIND_ARRAY => 12,
                    KIND_STRUCT | KIND_UNION => 12 * t.vlen,
                    KIND_ENUM | KIND_FUNC_PROTO => 8 * t.vlen,
                    KIND_DATASEC | KIND_ENUM64 => 12 * t.vlen,
                    _ => 0,
                };
            if t.kind == KIND_STRUCT && t.name != 0 {
                let name = btf.str_at(t.name);
                if let Some(w) = wanted.iter().find(|w| **w == name) {
                    let id = btf.types.len() as u32 - 1;
                    btf.structs.entry(w).or_insert(id);
                }
            }
            if t.kind == KIND_TYPEDEF && t.name != 0 {
                let name = btf.str_at(t.name);
                if let Some(w) = WANTED_TYPEDEFS.iter().find(|w| **w == name) {
                    let id = btf.types.len() as u32 - 1;
                    btf.typedefs.entry(w).or_insert(id);
                }
            }
        }
        Ok(btf)
    }

    fn type_at(&self, pos: usize) -> Result<Type> {
        let info = u32_at(self.data, pos + 4)?;
        Ok(Type {
            name: u32_at(self.data, pos)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(self.data, pos + 8)?,
            body: pos + 12,
        })
    }

    fn get(&self, id: u32) -> Option<Type> {
        match self.types.get(id as usize) {
            Some(&pos) if id != 0 => self.type_at(pos as usize).ok(),
            _ => None,
        }
    }

    fn str_at(&self, off: u32) -> &'a str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let len = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..len]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.get(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// (name, type id, bit offset) of each member of a struct or union.
    fn members(&self, t: &Type) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let (body, flag) = (t.body, t.kind_flag);
        let n = if matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            t.vlen
        } else {
            0
        };
        (0..n).filter_map(move |i| {
            let p = body + 12 * i;
            let off = u32_at(self.data, p + 8).ok()?;
            Some((
                u32_at(self.data, p).ok()?,
                u32_at(self.data, p + 4).ok()?,
                if flag { off & 0xff_ffff } else { off },
            ))
        })
    }

    fn struct_id(&self, name: &str) -> Result<u32> {
        self.structs
            .get(name)
            .copied()
            .with_context(|| format!("struct {name} not in BTF"))
    }

    /// Byte offset of `field` in `struct name`, looking inside anonymous
    /// struct/union members as C does.
    pub fn member_offset(&self, name: &str, field: &str) -> Result<u32> {
        let id = self.struct_id(name)?;
        self.find(id, field, 0)
            .map(|bits| bits / 8)
            .with_context(|| format!("struct {name} has no field {field} in this kernel's BTF"))
    }

    fn find(&self, id: u32, field: &str, depth: u32) -> Option<u32> {
        let t = self.get(id)?;
        if depth > 16 {
            return None;
        }
        for (name, _, bits) in self.members(&t) {
            if name != 0 && self.str_at(name) == field {
                return Some(bits);
            }
        }
        for (name, type_id, bits) in self.members(&t) {
            if name == 0 {
                let inner = self.resolve(type_id);
                let k = self.get(inner)?.kind;
                if (k == KIND_STRUCT || k == KIND_UNION)
                    && let Some(inner_bits) = self.find(inner, field, depth + 1)
                {
                    return Some(bits + inner_bits);
                }
            }
        }
        None
    }

    /// Arguments the raw tracepoint `name` passes its programs, from the
    /// prototype of its `btf_trace_NAME` typedef (whose first parameter is
    /// the tracepoint's own data, not passed on).
    pub fn raw_tracepoint_args(&self, name: &str) -> Option<usize> {
        let id = *self.typedefs.get(format!("btf_trace_{name}").as_str())?;
        let ptr = self.get(self.get(id)?.size_or_type)?;
        if ptr.kind != KIND_PTR {
            return None;
        }
        let proto = self.get(self.resolve(ptr.size_or_type))?;
        (proto.kind == KIND_FUNC_PROTO).then(|| proto.vlen.saturating_sub(1))
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<u32> {
        let id = self.struct_id(name)?;
        Ok(self.get(id).context("BTF type out of range")?.size_or_type)
    }

    #[cfg(test)]
    fn has_struct(&self, name: &str) -> bool {
        self.structs.contains_key(name)
    }

    #[cfg(test)]
    fn kind_of_member(&self, name: &str, field: &str) -> Option<u32> {
        let t = self.get(*self.structs.get(name)?)?;
        self.members(&t)
            .find(|m| self.str_at(m.0) == field)
            .and_then(|m| self.get(self.resolve(m.1)))
            .map(|t| t.kind)
    }
}

/// The running kernel's BTF, mapped rather than read: sysfs hands it out
/// 4 KiB per read(2), about 1,300 calls and tens of milliseconds for 5 MiB,
/// where a mapping costs a page fault per page the parse touches.
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    pub fn open(path: &str) -> std::io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path)?;
        let len = f.metadata()?.len() as usize;
        if len == 0 {
            return Err(std::io::Error::other("empty file"));
        }
        // SAFETY: a private read-only mapping of a file we opened; the
        // kernel's BTF does not change while it runs.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and lives as long as
        // `self`.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Reads the kernel's BTF: mapped where sysfs allows it (Linux 6.15 and
/// later), else read.
pub fn with_kernel_btf<T>(f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    match Mapped::open(VMLINUX_BTF) {
        Ok(m) => Ok(f(m.bytes())),
        Err(_) => Ok(f(&std::fs::read(VMLINUX_BTF)?)),
    }
}

/// Start of the span the probes read from `strukt` at once: 8-aligned, at or
/// before the first field, holding every field (each `(offset, size)`,
/// naturally aligned), and ending inside the structure (reading past it
/// could cross into an unmapped page).
fn window(btf: &Btf, strukt: &str, fields: &[(u32, u32)]) -> Result<u32> {
    window_of(btf, strukt, fields, WINDOW as u32)
}

fn window_of(btf: &Btf, strukt: &str, fields: &[(u32, u32)], window: u32) -> Result<u32> {
    let size = btf.struct_size(strukt)?;
    if size < window {
        bail!("struct {strukt} ({size} bytes) is smaller than the span read from it");
    }
    let first = fields.iter().map(|f| f.0).min().unwrap_or(0);
    let start = (first & !7).min((size - window) & !7);
    for &(off, len) in fields {
        if off < start || off + len > start + window || off % len != 0 {
            bail!("fields of struct {strukt} are too far apart for one read (offset {off})");
        }
    }
    Ok(start)
}

/// Offsets the probes need, from the running kernel.
pub fn kernel_offsets(btf: &Btf) -> Result<Offsets> {
    let o = |s: &str, f: &str| btf.member_offset(s, f);
    let mut offsets = Offsets {
        task_files: o("task_struct", "files")?,
        task_tgid: o("task_struct", "tgid")?,
        task_pid: o("task_struct", "pid")?,
        task_signal: o("task_struct", "signal")?,
        task_exit_code: o("task_struct", "exit_code")?,
        signal_group_exit_code: o("signal_struct", "group_exit_code")?,
        files_fdt: o("files_struct", "fdt")?,
        fdt_max_fds: o("fdtable", "max_fds")?,
        fdt_fd: o("fdtable", "fd")?,
        file_inode: o("file", "f_inode")?,
        file_flags: o("file", "f_flags")?,
        file_mode: o("file", "f_mode")?,
        inode_ino: o("inode", "i_ino")?,
        inode_mode: o("inode", "i_mode")?,
        inode_size: o("inode", "i_size")?,
        inode_sb: o("inode", "i_sb")?,
        sb_dev: o("super_block", "s_dev")?,
        sb_magic: o("super_block", "s_magic")?,
        task_comm: o("task_struct", "comm")?,
        task_fs: o("task_struct", "fs")?,
        fs_root_dentry: o("fs_struct", "root")? + o("path", "dentry")?,
        dentry_inode: o("dentry", "d_inode")?,
        task_nsproxy: o("task_struct", "nsproxy")?,
        nsproxy_mnt_ns: o("nsproxy", "mnt_ns")?,
        mnt_ns_inum: o("mnt_namespace", "ns")? + o("ns_common", "inum")?,
        task_mm: o("task_struct", "mm")?,
        mm_arg_start: o("mm_struct", "arg_start")?,
        mm_arg_end: o("mm_struct", "arg_end")?,
        mm_start_code: o("mm_struct", "start_code")?,
        mm_end_code: o("mm_struct", "end_code")?,
        mm_saved_auxv: o("mm_struct", "saved_auxv")?,
        mm_exe_file: o("mm_struct", "exe_file")?,
        regs_ip: o("pt_regs", "ip")?,
        regs_sp: o("pt_regs", "sp")?,
        regs_bp: o("pt_regs", "bp")?,
        regs_args: [
            o("pt_regs", "di")?,
            o("pt_regs", "si")?,
            o("pt_regs", "dx")?,
            o("pt_regs", "r10")?,
            o("pt_regs", "r8")?,
            o("pt_regs", "r9")?,
        ],
        file_win: 0,
        inode_win: 0,
        sb_win: 0,
        regs_win: 0,
        bprm_filename: o("linux_binprm", "filename")?,
        siginfo_code: o("kernel_siginfo", "si_code")?,
        ksigaction_handler: o("k_sigaction", "sa")? + o("sigaction", "sa_handler")?,
        signal_live: o("signal_struct", "live")?,
        exit_has_group_dead: u32::from(
            btf.raw_tracepoint_args("sched_process_exit")
                .is_some_and(|n| n >= 2),
        ),
    };
    let x = offsets;
    offsets.file_win = window(
        btf,
        "file",
        &[(x.file_mode, 4), (x.file_flags, 4), (x.file_inode, 8)],
    )?;
    offsets.inode_win = window(
        btf,
        "inode",
        &[
            (x.inode_mode, 2),
            (x.inode_size, 8),
            (x.inode_ino, 8),
            (x.inode_sb, 8),
        ],
    )?;
    offsets.sb_win = window(btf, "super_block", &[(x.sb_dev, 4), (x.sb_magic, 8)])?;
    let regs: Vec<(u32, u32)> = x.regs_args.iter().map(|&r| (r, 8)).collect();
    offsets.regs_win = window_of(btf, "pt_regs", &regs, REGS_WINDOW as u32)?;
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny hand-made blob: struct outer { int a; union { int b; int c; }; }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0".to_vec();
        let mut types = Vec::new();
        let push = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
        // 1: int
        push(&mut types, 1);
        push(&mut types, KIND_INT << 24);
        push(&mut types, 4);
        push(&mut types, 32);
        // 2: anonymous union { b, c }
        push(&mut types, 0);
        push(&mut types, (KIND_UNION << 24) | 2);
        push(&mut types, 4);
        for name in [13, 15] {
            push(&mut types, name);
            push(&mut types, 1);
            push(&mut types, 0);
        }
        // 3: struct outer { a @0, <anon> @32 bits }
        push(&mut types, 5);
        push(&mut types, (KIND_STRUCT << 24) | 2);
        push(&mut types, 8);
        push(&mut types, 11);
        push(&mut types, 1);
        push(&mut types, 0);
        push(&mut types, 0);
        push(&mut types, 2);
        push(&mut types, 32);
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.push(1);
        out.push(0);
        push(&mut out, 24);
        push(&mut out, 0);
        push(&mut out, types.len() as u32);
        push(&mut out, types.len() as u32);
        push(&mut out, strings.len() as u32);
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let blob = blob();
        let btf = Btf::parse_wanting(&blob, &["outer"]).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 4);
        assert!(btf.member_offset("outer", "zz").is_err());
        assert!(btf.member_offset("nope", "a").is_err());
        assert_eq!(btf.kind_of_member("outer", "a"), Some(KIND_INT));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, really").is_err());
        assert!(Btf::parse(&[]).is_err());
    }

    #[test]
    fn running_kernel_has_every_offset() {
        // Skipped where the kernel exposes no BTF; the end-to-end tests cover
        // the same path as root.
        let Ok(o) = with_kernel_btf(|data| {
            let btf = Btf::parse(data).unwrap();
            assert!(btf.has_struct("task_struct"));
            assert!(btf.raw_tracepoint_args("sched_process_exit").unwrap() >= 1);
            kernel_offsets(&btf).unwrap()
        }) else {
            return;
        };
        assert!(o.task_files > 0 && o.inode_sb > 0 && o.fdt_fd > 0);
        assert_ne!(o.task_pid, o.task_tgid);
        assert!(o.bprm_filename > 0 && o.siginfo_code == 8);
    }
}
