//! Field offsets of the kernel structures the probes walk, read from the
//! running kernel's BTF. rustc emits no CO-RE relocations for BPF, so the
//! offsets must come from here and never be hard-coded.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use auditor_common::{Offsets, REGS_WINDOW, WINDOW};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
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

struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// size for struct/union/int, referenced type for modifiers.
    size_or_type: u32,
    members: Vec<Member>,
}

/// A parsed BTF blob: just enough to find struct members by name.
pub struct Btf {
    strings: Vec<u8>,
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

impl Btf {
    pub fn parse(data: &[u8]) -> Result<Btf> {
        let u16_at = |o: usize| -> Result<u16> {
            Ok(u16::from_le_bytes(
                data.get(o..o + 2).context("BTF truncated")?.try_into()?,
            ))
        };
        let u32_at = |o: usize| -> Result<u32> {
            Ok(u32::from_le_bytes(
                data.get(o..o + 4).context("BTF truncated")?.try_into()?,
            ))
        };
        if u16_at(0)? != BTF_MAGIC {
            bail!("not a little-endian BTF blob");
        }
        let hdr_len = u32_at(4)? as usize;
        let type_off = u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let str_off = u32_at(16)? as usize;
        let str_len = u32_at(20)? as usize;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("BTF string section out of bounds")?
            .to_vec();
        // Type ids start at 1; slot 0 is `void`.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut pos = hdr_len + type_off;
        let end = pos + type_len;
        while pos < end {
            let name = u32_at(pos)?;
            let info = u32_at(pos + 4)?;
            let size_or_type = u32_at(pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => pos += 4,
                KIND_ARRAY => pos += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let off = u32_at(pos + 8)?;
                        members.push(Member {
                            name: u32_at(pos)?,
                            type_id: u32_at(pos + 4)?,
                            bit_offset: if kind_flag { off & 0xff_ffff } else { off },
                        });
                        pos += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => pos += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => pos += 12 * vlen,
                _ => {}
            }
            types.push(Type {
                name,
                kind,
                size_or_type,
                members,
            });
        }
        let mut btf = Btf {
            strings,
            types,
            structs: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                btf.structs
                    .entry(btf.str_at(t.name).to_owned())
                    .or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let len = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..len]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
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

    /// Byte offset of `field` in `struct name`, looking inside anonymous
    /// struct/union members as C does.
    pub fn member_offset(&self, name: &str, field: &str) -> Result<u32> {
        let id = *self
            .structs
            .get(name)
            .with_context(|| format!("struct {name} not in BTF"))?;
        self.find(id, field)
            .map(|bits| bits / 8)
            .with_context(|| format!("struct {name} has no field {field} in this kernel's BTF"))
    }

    fn find(&self, id: u32, field: &str) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.name != 0 && self.str_at(m.name) == field {
                return Some(m.bit_offset);
            }
        }
        for m in &t.members {
            if m.name == 0 {
                let inner = self.resolve(m.type_id);
                let k = self.types.get(inner as usize)?.kind;
                if (k == KIND_STRUCT || k == KIND_UNION)
                    && let Some(bits) = self.find(inner, field)
                {
                    return Some(m.bit_offset + bits);
                }
            }
        }
        None
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<u32> {
        let id = *self
            .structs
            .get(name)
            .with_context(|| format!("struct {name} not in BTF"))?;
        Ok(self.types[id as usize].size_or_type)
    }

    #[cfg(test)]
    fn has_struct(&self, name: &str) -> bool {
        self.structs.contains_key(name)
    }

    #[cfg(test)]
    fn kind_of_member(&self, name: &str, field: &str) -> Option<u32> {
        let id = *self.structs.get(name)?;
        let t = &self.types[id as usize];
        t.members
            .iter()
            .find(|m| self.str_at(m.name) == field)
            .map(|m| self.types[self.resolve(m.type_id) as usize].kind)
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
        let btf = Btf::parse(&blob()).unwrap();
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
        let Ok(data) = std::fs::read(VMLINUX_BTF) else {
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        assert!(btf.has_struct("task_struct"));
        let o = kernel_offsets(&btf).unwrap();
        assert!(o.task_files > 0 && o.inode_sb > 0 && o.fdt_fd > 0);
        assert_ne!(o.task_pid, o.task_tgid);
    }
}
