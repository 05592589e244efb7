//! `/proc/PID/mountinfo`: which filesystem, and which directory of it, is
//! mounted where, as one process sees it. The text comes from the kernel
//! but names what others chose (mount points, sources, overlay options):
//! every line is checked, a malformed one is skipped and counted.

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem (for an overlay, its own).
    pub dev: (u32, u32),
    /// The directory of that filesystem shown at `point`.
    pub root: String,
    /// Where it is mounted, relative to the reading process's root.
    pub point: String,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options (an overlay's `upperdir=` is here).
    pub super_opts: String,
}

impl Mount {
    /// The value of `key=` in the superblock options, unescaped.
    pub fn super_opt(&self, key: &str) -> Option<String> {
        self.super_opts
            .split(',')
            .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
            .map(unescape)
    }
}

/// A parsed mount table, in the kernel's order (a later mount at a point
/// lies over an earlier one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub mounts: Vec<Mount>,
    /// Lines that did not parse.
    pub malformed: u64,
}

/// Parses mountinfo text: `id parent major:minor root point options
/// [optional fields...] - fstype source super_options`.
pub fn parse(text: &str) -> Table {
    let mut t = Table::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Some(m) => t.mounts.push(m),
            None => t.malformed += 1,
        }
    }
    t
}

fn parse_line(line: &str) -> Option<Mount> {
    let (pre, post) = line.split_once(" - ")?;
    let mut pre = pre.split(' ');
    let _id: u32 = pre.next()?.parse().ok()?;
    let _parent: u32 = pre.next()?.parse().ok()?;
    let (major, minor) = pre.next()?.split_once(':')?;
    let dev = (major.parse().ok()?, minor.parse().ok()?);
    let root = unescape(pre.next()?);
    let point = unescape(pre.next()?);
    if !root.starts_with('/') || !point.starts_with('/') {
        return None;
    }
    let mut post = post.split(' ');
    let fstype = unescape(post.next()?);
    let source = unescape(post.next()?);
    let super_opts = post.next().unwrap_or_default().to_string();
    Some(Mount {
        dev,
        root,
        point,
        fstype,
        source,
        super_opts,
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\134` for a
/// backslash); anything else is kept as it is.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1..i + 4)
                .is_some_and(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINER: &str = "\
77 52 0:40 / / rw,relatime master:2 - overlay overlay rw,lowerdir=/d/l/A:/d/l/B,upperdir=/d/overlay2/abc/diff,workdir=/d/overlay2/abc/work
78 77 0:43 / /proc rw,nosuid - proc proc rw
94 77 254:0 /srv/my\\040vol /data rw,relatime - ext4 /dev/vda rw
garbage line
95 77 254:0 relative /etc/hosts rw - ext4 /dev/vda rw
96 x 254:0 / /x rw - ext4 /dev/vda rw
";

    #[test]
    fn parses_a_container_table_and_counts_bad_lines() {
        let t = parse(CONTAINER);
        assert_eq!(t.malformed, 3);
        assert_eq!(t.mounts.len(), 3);
        let root = &t.mounts[0];
        assert_eq!((root.dev, root.point.as_str()), ((0, 40), "/"));
        assert_eq!(root.fstype, "overlay");
        assert_eq!(
            root.super_opt("upperdir").as_deref(),
            Some("/d/overlay2/abc/diff")
        );
        assert_eq!(root.super_opt("upper"), None);
        let vol = &t.mounts[2];
        assert_eq!(
            (vol.root.as_str(), vol.point.as_str()),
            ("/srv/my vol", "/data")
        );
        assert_eq!(vol.dev, (254, 0));
    }

    #[test]
    fn escapes_and_hostile_text_never_panic() {
        assert_eq!(unescape("a\\134b\\011c"), "a\\b\tc");
        assert_eq!(unescape("end\\04"), "end\\04");
        assert_eq!(unescape("\\777"), "\\777");
        assert_eq!(unescape("\\"), "\\");
        for junk in [
            "",
            " - ",
            "1 2 3:4 / / - ",
            "1 2 :: / / - a b c",
            "\u{0} - \u{1}",
        ] {
            let _ = parse(junk);
        }
    }
}
