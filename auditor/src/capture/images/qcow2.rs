//! qcow2 (and qcow version 1) headers, as QEMU's `docs/interop/qcow2.txt`
//! lays them out: big-endian, the backing file's name at
//! `backing_file_offset` (u64 at 8) for `backing_file_size` bytes (u32 at
//! 16, at most 1023), then for version 3 the header extensions after
//! `header_length` (u32 at 100): the backing file's format and the name
//! of an external data file. The bytes come from a file anyone could have
//! written, so every offset is checked against what was read.

use auditor_analyzer::image::Role;

use super::header::{Header, NAME_MAX, Ref, be32, be64, slice};

pub const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Bytes read of a qcow2 image: the header, its extensions and the backing
/// name lie in the first cluster (512 bytes at least), and QEMU writes
/// them in its first few hundred bytes.
pub const READ: usize = 64 * 1024;

const BACKING_NAME_MAX: u32 = 1023;
const V2_HEADER: usize = 72;
const V3_HEADER_MIN: u32 = 104;
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Extensions walked at most (a header is a few of them).
const EXTENSIONS_MAX: usize = 64;
/// Longest backing format name kept (`qcow2`, `raw`, `vmdk`, ...).
const FORMAT_MAX: usize = 32;

/// The header in `buf` (the start of the file), or None when it is not a
/// qcow image of a version QEMU knows (1 to 3) or is cut before the
/// backing file's fields.
pub fn parse(buf: &[u8]) -> Option<Header> {
    if !buf.starts_with(MAGIC) {
        return None;
    }
    let version = be32(buf, 4)?;
    if !(1..=3).contains(&version) {
        return None;
    }
    let offset = be64(buf, 8)?;
    let size = be32(buf, 16)?;
    let ext_start = match version {
        2 => Some(V2_HEADER),
        3 => be32(buf, 100)
            .filter(|&l| l >= V3_HEADER_MIN)
            .map(|l| l as usize),
        _ => None,
    };
    let ext = ext_start.map(|at| extensions(buf, at)).unwrap_or_default();
    let mut refs = Vec::new();
    if offset != 0 && size != 0 {
        let name = if size > BACKING_NAME_MAX {
            Err("a backing file name longer than 1023 bytes")
        } else {
            slice(buf, offset, size.into())
                .map(<[u8]>::to_vec)
                .ok_or("a backing file name outside the header")
        };
        refs.push(Ref {
            role: Role::BackingFile,
            name,
            format: ext.backing_format,
        });
    }
    if let Some(name) = ext.data_file {
        refs.push(Ref {
            role: Role::DataFile,
            name,
            format: None,
        });
    }
    Some(Header {
        format: if version == 1 { "qcow" } else { "qcow2" },
        refs,
    })
}

#[derive(Default)]
struct Extensions {
    backing_format: Option<String>,
    data_file: Option<Result<Vec<u8>, &'static str>>,
}

/// Walks the header extensions from `at` until the end marker, the end of
/// what was read, or [`EXTENSIONS_MAX`].
fn extensions(buf: &[u8], mut at: usize) -> Extensions {
    let mut out = Extensions::default();
    for _ in 0..EXTENSIONS_MAX {
        let (Some(kind), Some(len)) = (be32(buf, at), be32(buf, at + 4)) else {
            break;
        };
        if kind == EXT_END {
            break;
        }
        let Some(data) = slice(buf, at as u64 + 8, len.into()) else {
            break;
        };
        match kind {
            EXT_BACKING_FORMAT if data.len() <= FORMAT_MAX => {
                out.backing_format = std::str::from_utf8(data)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                    .map(str::to_string);
            }
            EXT_DATA_FILE if !data.is_empty() => {
                out.data_file = Some(if data.len() > NAME_MAX {
                    Err("a data file name longer than 4096 bytes")
                } else {
                    Ok(data.to_vec())
                });
            }
            _ => {}
        }
        // Each extension's data is padded to a multiple of 8 bytes.
        let Some(next) = (len as usize)
            .checked_next_multiple_of(8)
            .and_then(|l| at.checked_add(8 + l))
        else {
            break;
        };
        at = next;
    }
    out
}

/// A version 3 header backed by `backing` (format `raw`), laid out as
/// `qemu-img create -f qcow2 -b BACKING -F raw` writes it.
#[cfg(test)]
pub(super) fn v3(backing: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0..4].copy_from_slice(MAGIC);
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    b[100..104].copy_from_slice(&112u32.to_be_bytes());
    // Backing format extension: "raw", padded to 8.
    b[112..116].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
    b[116..120].copy_from_slice(&3u32.to_be_bytes());
    b[120..123].copy_from_slice(b"raw");
    // End of extensions at 128, then the name.
    let at = 136usize;
    b[8..16].copy_from_slice(&(at as u64).to_be_bytes());
    b[16..20].copy_from_slice(&(backing.len() as u32).to_be_bytes());
    b[at..at + backing.len()].copy_from_slice(backing);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_backing_file_and_its_format() {
        let h = parse(&v3(b"/data/firecracker/images/default.ext4")).unwrap();
        assert_eq!(h.format, "qcow2");
        assert_eq!(
            h.refs,
            [Ref::named(
                Role::BackingFile,
                b"/data/firecracker/images/default.ext4",
                "raw"
            )]
        );
    }

    #[test]
    fn a_flat_image_names_nothing() {
        let mut b = v3(b"x");
        b[8..20].fill(0);
        assert_eq!(parse(&b).unwrap().refs, []);
    }

    #[test]
    fn an_external_data_file_is_a_dependency_too() {
        let mut b = v3(b"base.raw");
        // Replace the end marker at 128 with a data file extension.
        b[128..132].copy_from_slice(&EXT_DATA_FILE.to_be_bytes());
        b[132..136].copy_from_slice(&4u32.to_be_bytes());
        b[136..140].copy_from_slice(b"data");
        b[8..16].copy_from_slice(&200u64.to_be_bytes());
        b[200..208].copy_from_slice(b"base.raw");
        let h = parse(&b).unwrap();
        assert_eq!(h.refs.len(), 2);
        assert_eq!(h.refs[1].role, Role::DataFile);
        assert_eq!(h.refs[1].name, Ok(b"data".to_vec()));
    }

    #[test]
    fn version_2_and_qcow_1_have_their_backing_name_at_the_same_place() {
        for (version, format) in [(2u32, "qcow2"), (1, "qcow")] {
            let mut b = vec![0u8; 200];
            b[0..4].copy_from_slice(MAGIC);
            b[4..8].copy_from_slice(&version.to_be_bytes());
            b[8..16].copy_from_slice(&100u64.to_be_bytes());
            b[16..20].copy_from_slice(&4u32.to_be_bytes());
            b[100..104].copy_from_slice(b"base");
            let h = parse(&b).unwrap();
            assert_eq!(h.format, format);
            assert_eq!(h.refs[0].name, Ok(b"base".to_vec()));
        }
    }

    #[test]
    fn truncated_or_absurd_headers_are_handled() {
        let good = v3(b"base.raw");
        assert_eq!(parse(&good[..12]), None, "cut before the backing fields");
        assert_eq!(parse(b"QFI"), None);
        assert_eq!(parse(b"not an image at all"), None);
        let mut v9 = good.clone();
        v9[4..8].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(parse(&v9), None, "unknown version");
        // The name lies past what was read: named, but not usable.
        let h = parse(&good[..140]).unwrap();
        assert!(h.refs[0].name.is_err());
        let mut long = good.clone();
        long[16..20].copy_from_slice(&5000u32.to_be_bytes());
        assert!(parse(&long).unwrap().refs[0].name.is_err());
        let mut far = good.clone();
        far[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(parse(&far).unwrap().refs[0].name.is_err());
        // An extension claiming 4 GiB stops the walk, not the parse.
        let mut ext = good;
        ext[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
        let h = parse(&ext).unwrap();
        assert_eq!(h.refs[0].format, None);
        assert_eq!(h.refs[0].name, Ok(b"base.raw".to_vec()));
    }

    proptest::proptest! {
        #![proptest_config(crate::test_support::fuzz_config())]

        #[test]
        fn no_bytes_make_it_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024)) {
            let mut b = MAGIC.to_vec();
            b.extend(tail);
            let _ = parse(&b);
        }

        #[test]
        fn a_valid_header_with_garbage_after_it(noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), at in 8usize..512) {
            let mut b = v3(b"base.raw");
            for (i, n) in noise.iter().enumerate() {
                if let Some(x) = b.get_mut(at + i) {
                    *x = *n;
                }
            }
            let _ = parse(&b);
        }
    }
}
