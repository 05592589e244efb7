//! VMDK: a text descriptor names the files that hold the disk (extent
//! lines: `RW 2048 FLAT "disk-flat.vmdk" 0`) and, for a delta disk, its
//! parent (`parentFileNameHint="base.vmdk"`). The descriptor is a file of
//! its own (starting `# Disk DescriptorFile`), or is embedded in a sparse
//! extent (magic `KDMV`) at the sector its header gives (u64 little-endian
//! at 28, its length in sectors at 36). A monolithic sparse file names
//! only itself; a flat or split one names files beside it.

use auditor_analyzer::image::Role;

use super::header::{Header, NAME_MAX, Ref, le64};

pub const SPARSE_MAGIC: &[u8; 4] = b"KDMV";
pub const DESCRIPTOR: &[u8] = b"# Disk DescriptorFile";
/// Most descriptor bytes read (QEMU writes well under 1 KiB).
pub const READ: usize = 64 * 1024;
/// Files named by one descriptor at most (a split 2 TB disk has ~1000).
const REFS_MAX: usize = 1024;
const SECTOR: u64 = 512;
/// `parentCID` of a disk without a parent.
const NO_PARENT: &str = "ffffffff";

/// Where the descriptor lies in a file whose first bytes are `first`:
/// (offset, length to read). None when it is not a VMDK file; a length of
/// 0 for a sparse extent that embeds none (it names nothing).
pub fn locate(first: &[u8]) -> Option<(u64, usize)> {
    if first.starts_with(DESCRIPTOR) {
        return Some((0, READ));
    }
    if !first.starts_with(SPARSE_MAGIC) {
        return None;
    }
    let (sector, sectors) = (le64(first, 28)?, le64(first, 36)?);
    let at = sector.checked_mul(SECTOR).unwrap_or(0);
    let len = sectors.saturating_mul(SECTOR).min(READ as u64) as usize;
    Some(if at == 0 { (0, 0) } else { (at, len) })
}

/// The files a descriptor's text names. It ends at its first NUL (an
/// embedded one is padded with them); lines it does not know are skipped.
pub fn parse_descriptor(text: &[u8]) -> Header {
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    let mut refs = Vec::new();
    let mut parent = None;
    let mut parent_cid = None;
    for line in text.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        if let Some(v) = value(line, b"parentFileNameHint") {
            parent = Some(v);
        } else if let Some(v) = value(line, b"parentCID") {
            parent_cid = Some(v);
        } else if let Some(r) = extent(line)
            && refs.len() < REFS_MAX
        {
            refs.push(r);
        }
    }
    let has_parent = parent_cid.is_none_or(|c| !c.eq_ignore_ascii_case(NO_PARENT.as_bytes()));
    if let Some(p) = parent.filter(|p| has_parent && !p.is_empty()) {
        refs.push(Ref {
            role: Role::Parent,
            name: name(p),
            format: Some("vmdk".into()),
        });
    }
    Header {
        format: "vmdk",
        refs,
    }
}

/// The value of `key=value` or `key="value"`.
fn value<'a>(line: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(key)?.trim_ascii_start();
    let v = rest.strip_prefix(b"=")?.trim_ascii();
    Some(
        v.strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v),
    )
}

/// `ACCESS SECTORS TYPE "FILE" [OFFSET]`; ZERO extents name no file.
fn extent(line: &[u8]) -> Option<Ref> {
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let access = words.next()?;
    if !matches!(access, b"RW" | b"RDONLY" | b"NOACCESS") {
        return None;
    }
    let sectors = words.next()?;
    if !sectors.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let kind = words.next()?;
    if kind == b"ZERO" {
        return None;
    }
    let open = line.iter().position(|&b| b == b'"')?;
    let rest = &line[open + 1..];
    let close = rest.iter().position(|&b| b == b'"')?;
    let file = &rest[..close];
    (!file.is_empty()).then(|| Ref {
        role: Role::Extent,
        name: name(file),
        format: std::str::from_utf8(kind)
            .ok()
            .filter(|k| k.len() <= 16 && k.bytes().all(|b| b.is_ascii_alphabetic()))
            .map(str::to_ascii_lowercase),
    })
}

fn name(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    if bytes.len() > NAME_MAX {
        Err("a file name longer than 4096 bytes")
    } else {
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `qemu-img create -f vmdk -o subformat=monolithicFlat` writes.
    const FLAT: &str = "# Disk DescriptorFile\nversion=1\nCID=906708f1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 2048 FLAT \"disk-flat.vmdk\" 0\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n";

    #[test]
    fn a_flat_descriptor_names_its_extent() {
        assert_eq!(locate(FLAT.as_bytes()), Some((0, READ)));
        let h = parse_descriptor(FLAT.as_bytes());
        assert_eq!(
            h.refs,
            [Ref::named(Role::Extent, b"disk-flat.vmdk", "flat")]
        );
    }

    #[test]
    fn a_delta_names_its_parent_and_zero_extents_nothing() {
        let text = "# Disk DescriptorFile\r\nparentCID=5c5155a4\r\nparentFileNameHint=\"base dir/sparse.vmdk\"\r\nRW 2048 SPARSE \"child.vmdk\"\r\nRW 100 ZERO\r\n\0\0\0RW 1 FLAT \"after-the-nul\"";
        let h = parse_descriptor(text.as_bytes());
        let names: Vec<_> = h.refs.iter().map(|r| (r.role, r.name.clone())).collect();
        assert_eq!(
            names,
            [
                (Role::Extent, Ok(b"child.vmdk".to_vec())),
                (Role::Parent, Ok(b"base dir/sparse.vmdk".to_vec())),
            ]
        );
        // A hint left behind with no parent CID names nothing.
        let orphan = "# Disk DescriptorFile\nparentCID=ffffffff\nparentFileNameHint=\"old.vmdk\"\n";
        assert_eq!(parse_descriptor(orphan.as_bytes()).refs, []);
    }

    #[test]
    fn a_sparse_header_points_at_its_embedded_descriptor() {
        let mut h = vec![0u8; 512];
        h[0..4].copy_from_slice(SPARSE_MAGIC);
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&20u64.to_le_bytes());
        assert_eq!(locate(&h), Some((512, 20 * 512)));
        h[36..44].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(locate(&h), Some((512, READ)), "bounded");
        h[28..36].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(locate(&h), Some((0, 0)), "nowhere: names nothing");
        assert_eq!(locate(&h[..30]), None, "cut short");
        assert_eq!(locate(b"KDM"), None);
        assert_eq!(locate(b"QFI\xfb"), None);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let text = b"# Disk DescriptorFile\nRW\nRW x FLAT \"a\"\nRW 1 FLAT \"unterminated\nRW 1 FLAT \"\"\nparentFileNameHint\n=\n\xff\xfe";
        assert_eq!(parse_descriptor(text).refs, []);
    }

    proptest::proptest! {
        #![proptest_config(crate::test_support::fuzz_config())]

        #[test]
        fn no_bytes_make_it_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let mut b = DESCRIPTOR.to_vec();
            b.extend(&tail);
            let _ = parse_descriptor(&b);
            let mut s = SPARSE_MAGIC.to_vec();
            s.extend(&tail);
            let _ = locate(&s);
        }

        #[test]
        fn extent_lines_of_any_shape(words in proptest::collection::vec("[A-Z0-9\" ]{0,12}", 0..8)) {
            let text = format!("{}\n{}\n", String::from_utf8_lossy(DESCRIPTOR), words.join(" "));
            let _ = parse_descriptor(text.as_bytes());
        }
    }
}
