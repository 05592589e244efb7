//! The names an image gives its dependencies, taken as QEMU takes them: a
//! name with a `:` before any `/` is a protocol (`nbd:`, `json:{...}`), a
//! name starting with `/` is absolute, and any other is relative to the
//! directory of the image that names it. They come from the file's bytes:
//! control characters, bytes that are not UTF-8 and absurd lengths make a
//! name that is shown escaped and never looked up.

use std::fmt::Write;

use auditor_analyzer::image::Naming;

use super::header::NAME_MAX;

/// A name as the report shows it, how it is named, and where it resolves.
#[derive(Debug, PartialEq, Eq)]
pub struct Named {
    pub shown: String,
    pub naming: Naming,
    pub path: Option<String>,
}

/// Takes the name `raw` given by the image at `named_by` (an absolute path
/// when known).
pub fn classify(raw: &Result<Vec<u8>, &'static str>, named_by: &str) -> Named {
    let invalid = |shown: String| Named {
        shown,
        naming: Naming::Invalid,
        path: None,
    };
    let bytes = match raw {
        Ok(b) => b.as_slice(),
        Err(why) => return invalid(format!("<{why}>")),
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) if bytes.len() <= NAME_MAX && !t.chars().any(char::is_control) => t,
        _ => return invalid(escape(bytes)),
    };
    let slash = text.find('/').unwrap_or(text.len());
    if text[..slash].contains(':') {
        return Named {
            shown: text.into(),
            naming: Naming::Protocol,
            path: None,
        };
    }
    if text.starts_with('/') {
        return Named {
            shown: text.into(),
            naming: Naming::Absolute,
            path: Some(tidy(text)),
        };
    }
    let path = named_by
        .starts_with('/')
        .then(|| tidy(&format!("{}/{text}", dir_of(named_by))));
    Named {
        shown: text.into(),
        naming: Naming::Relative,
        path,
    }
}

/// The directory holding `path`.
fn dir_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Drops empty and `.` components. `..` stays: the kernel resolves it
/// through symlinks, which a lexical rewrite would not.
fn tidy(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Printable UTF-8 as it is, anything else as `\xNN`, at most 1024 bytes.
pub fn escape(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(1024)];
    let mut out = String::new();
    for chunk in cut.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                for b in c.to_string().bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if bytes.len() > cut.len() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(name: &[u8], by: &str) -> Named {
        classify(&Ok(name.to_vec()), by)
    }

    #[test]
    fn absolute_relative_and_protocols() {
        let a = of(
            b"/data/firecracker/images/default.ext4",
            "/srv/rootfs.qcow2",
        );
        assert_eq!(a.naming, Naming::Absolute);
        assert_eq!(
            a.path.as_deref(),
            Some("/data/firecracker/images/default.ext4")
        );
        let r = of(b"./base.raw", "/srv/vm/rootfs.qcow2");
        assert_eq!(r.naming, Naming::Relative);
        assert_eq!(r.path.as_deref(), Some("/srv/vm/base.raw"));
        assert_eq!(
            of(b"../images/base.raw", "/srv/vm/a.qcow2").path.as_deref(),
            Some("/srv/vm/../images/base.raw")
        );
        assert_eq!(
            of(b"base.raw", "/a.qcow2").path.as_deref(),
            Some("/base.raw")
        );
        assert_eq!(of(b"base.raw", "a.qcow2").path, None, "no directory known");
        for p in [
            &b"nbd://host:10809/disk"[..],
            b"json:{\"file\":{}}",
            b"rbd:pool/img",
        ] {
            assert_eq!(of(p, "/a").naming, Naming::Protocol);
        }
        assert_eq!(of(b"dir/a:b", "/d/x").naming, Naming::Relative);
    }

    #[test]
    fn hostile_names_are_escaped_and_not_looked_up() {
        let nl = of(b"base\n/etc/shadow", "/d/x");
        assert_eq!((nl.naming, nl.path), (Naming::Invalid, None));
        assert_eq!(nl.shown, "base\\x0a/etc/shadow");
        let bin = of(b"\xff\xfe/x", "/d/x");
        assert_eq!(bin.naming, Naming::Invalid);
        assert_eq!(bin.shown, "\\xff\\xfe/x");
        let long = of(&[b'a'; 5000], "/d/x");
        assert_eq!(long.naming, Naming::Invalid);
        assert_eq!(long.shown.len(), 1024 + 3);
        let err = classify(&Err("a backing file name outside the header"), "/d/x");
        assert_eq!(err.shown, "<a backing file name outside the header>");
    }
}
