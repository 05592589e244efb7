//! What an image's header names, before anything is looked up: the shape
//! both parsers return and the reader resolves.

use auditor_analyzer::image::Role;

/// Longest name kept from a header: qcow2 allows backing names of at most
/// 1023 bytes, and no path a kernel resolves is longer than 4096.
pub const NAME_MAX: usize = 4096;

/// A disk image's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub format: &'static str,
    pub refs: Vec<Ref>,
}

/// One file the header names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref {
    pub role: Role,
    /// The name's bytes, or why they cannot be taken as a name.
    pub name: Result<Vec<u8>, &'static str>,
    /// The format the image declares for it.
    pub format: Option<String>,
}

#[cfg(test)]
impl Ref {
    /// A usable name, as a parser's tests expect it.
    pub fn named(role: Role, name: &[u8], format: &str) -> Ref {
        Ref {
            role,
            name: Ok(name.to_vec()),
            format: Some(format.into()),
        }
    }
}

/// `len` bytes at `at` in `buf`, when they are all there.
pub fn slice(buf: &[u8], at: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(at).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    buf.get(start..end)
}

pub fn be32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

pub fn be64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

pub fn le64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}
