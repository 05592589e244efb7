//! Alike findings, and the names that stay the same from one run to the
//! next. A `cp -r` of 200 files is one problem, not 600 entries: findings
//! of the same rule, severity and process, in the same directory pattern,
//! are one group. A fingerprint (rule, path relative to the repository or
//! working directory, call site) says "the same finding" across runs, for
//! baselines and code review.

use std::collections::BTreeMap;

use crate::finding::Finding;

/// Directories of one rule and process beyond which alike findings are
/// folded into their common ancestor (`dst/**`).
const FOLD_AFTER: usize = 3;

/// FNV-1a, 64 bits: stable across builds and platforms (unlike the std
/// hasher), which is all a fingerprint needs.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// `path` relative to `base` when inside it (`base` itself is `.`).
pub fn relative<'a>(path: &'a str, base: Option<&str>) -> &'a str {
    let Some(base) = base.map(|b| b.trim_end_matches('/')) else {
        return path;
    };
    if base.is_empty() {
        return path;
    }
    match path.strip_prefix(base) {
        Some("") => ".",
        Some(rest) if rest.starts_with('/') => &rest[1..],
        _ => path,
    }
}

/// Where in the program the finding comes from, as far as the trace can
/// tell: the executable's name and, with a stack, the functions of its
/// first frames in the program's own code (names, not lines: a line moves
/// with every edit above it). An interpreter's frames are its own, so its
/// script stands in for them.
fn call_site(f: &Finding) -> String {
    let exe = f
        .process
        .exe
        .as_deref()
        .and_then(|e| e.rsplit('/').next())
        .unwrap_or(&f.process.comm);
    let Some(stack) = &f.stack else {
        return exe.to_string();
    };
    if let Some(i) = &stack.interpreter {
        return format!("{exe} {}", i.script.as_deref().unwrap_or(""));
    }
    let functions: Vec<&str> = stack
        .program_frames(SITE_FRAMES)
        .iter()
        .filter_map(|fr| fr.function.as_deref())
        .collect();
    if functions.is_empty() {
        return exe.to_string();
    }
    format!("{exe} {}", functions.join("<-"))
}

/// Frames of a stack that make its call site.
const SITE_FRAMES: usize = 3;

/// The fingerprint of `f`: 16 hex digits.
pub fn fingerprint(f: &Finding, base: Option<&str>) -> String {
    format!(
        "{:016x}",
        fnv(&[&f.rule, relative(&f.path, base), &call_site(f)])
    )
}

/// A name component with what varies from file to file replaced by `*`:
/// a component that is all hex with a digit (`61`, `a8`: git's object
/// directories), runs of six or more hex digits with a digit (hashes,
/// `tmp_obj_3f2a9c`), and runs of decimal digits (`file12.txt`).
fn generalize(component: &str) -> String {
    let hexish =
        |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b.is_ascii_digit());
    if !component.is_empty() && hexish(component) {
        return "*".to_string();
    }
    let mut out = String::with_capacity(component.len());
    let chars: Vec<char> = component.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while i < chars.len() && chars[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i > start {
            let run: String = chars[start..i].iter().collect();
            if run.len() >= 6 && hexish(&run) {
                out.push('*');
            } else {
                // Decimal runs inside it.
                let mut in_digits = false;
                for c in run.chars() {
                    if c.is_ascii_digit() {
                        if !in_digits {
                            out.push('*');
                            in_digits = true;
                        }
                    } else {
                        in_digits = false;
                        out.push(c);
                    }
                }
            }
        }
        if i < chars.len() {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The directory part with every component generalized.
fn dir_pattern(dir: &str) -> String {
    dir.split('/').map(generalize).collect::<Vec<_>>().join("/")
}

/// Alike findings.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Stable id (12 hex digits), also on each member as `group`.
    pub id: String,
    pub rule: String,
    /// Where they are: `dir/pattern` (`objects/*/*`, `dst/**`).
    pub pattern: String,
    /// Indexes of its findings, in report order (worst first).
    pub members: Vec<usize>,
}

/// Groups `findings` (already worst first): same rule, severity and call
/// site, same generalized directory; past [`FOLD_AFTER`] directories for one
/// rule and call site, their common ancestor. Groups come in the order of
/// their first member.
pub fn groups(findings: &[Finding], base: Option<&str>) -> Vec<Group> {
    // (rule, severity, site) -> generalized dir -> members
    let mut by_site: BTreeMap<(String, String, String), BTreeMap<String, Vec<usize>>> =
        BTreeMap::new();
    for (i, f) in findings.iter().enumerate() {
        let (dir, _) = split(relative(&f.path, base));
        by_site
            .entry((f.rule.clone(), f.severity.to_string(), call_site(f)))
            .or_default()
            .entry(dir_pattern(dir))
            .or_default()
            .push(i);
    }
    let mut out = Vec::new();
    for ((rule, severity, site), dirs) in by_site {
        let folded: Vec<(String, Vec<usize>)> = if dirs.len() > FOLD_AFTER {
            let all: Vec<usize> = dirs.values().flatten().copied().collect();
            let ancestor = common_ancestor(dirs.keys().map(String::as_str));
            let pattern = if ancestor.is_empty() {
                "**".to_string()
            } else {
                format!("{ancestor}/**")
            };
            vec![(pattern, all)]
        } else {
            dirs.into_iter()
                .map(|(dir, members)| {
                    let names: Vec<&str> = members
                        .iter()
                        .map(|&i| split(relative(&findings[i].path, base)).1)
                        .collect();
                    let name = name_pattern(&names);
                    let pattern = if dir.is_empty() {
                        name
                    } else {
                        format!("{dir}/{name}")
                    };
                    (pattern, members)
                })
                .collect()
        };
        for (pattern, mut members) in folded {
            members.sort_unstable();
            let id = format!("{:012x}", fnv(&[&rule, &severity, &site, &pattern]) >> 16);
            out.push(Group {
                id,
                rule: rule.clone(),
                pattern,
                members,
            });
        }
    }
    out.sort_by_key(|g| g.members[0]);
    out
}

/// One name for a set of file names: the name itself when they are all
/// the same, their generalized form when that is shared, else `*`.
fn name_pattern(names: &[&str]) -> String {
    let first = names.first().copied().unwrap_or("*");
    if names.iter().all(|n| *n == first) {
        return first.to_string();
    }
    let g = generalize(first);
    if names.iter().all(|n| generalize(n) == g) {
        g
    } else {
        "*".to_string()
    }
}

/// The longest directory prefix (whole components) all of `dirs` share.
fn common_ancestor<'a>(mut dirs: impl Iterator<Item = &'a str>) -> String {
    let Some(first) = dirs.next() else {
        return String::new();
    };
    let mut common: Vec<&str> = first.split('/').collect();
    for d in dirs {
        let parts: Vec<&str> = d.split('/').collect();
        let n = common
            .iter()
            .zip(&parts)
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(n);
    }
    common.join("/")
}

/// A string made safe for a terminal: control characters (C0, DEL, C1) and
/// the bidirectional overrides a file name could use to forge what a line
/// says are written as escapes; everything else is kept.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `argv` as a shell would need it pasted back: plain words as they are,
/// others single-quoted, and words with control characters in bash's
/// `$'...'` form (so nothing raw reaches the terminal).
pub fn shell_quote(argv: &[String]) -> String {
    argv.iter()
        .map(|a| quote_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote_word(a: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !a.is_empty() && a.chars().all(plain) {
        return a.to_string();
    }
    if a.chars()
        .any(|c| c.is_control() || escape(&c.to_string()) != c.to_string())
    {
        let mut out = String::from("$'");
        for c in a.chars() {
            match c {
                '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                c if escape(&c.to_string()) != c.to_string() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    format!("'{}'", a.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{ProcessRef, Severity};

    fn f(rule: &str, path: &str) -> Finding {
        Finding::new(
            rule,
            Severity::Medium,
            path,
            None,
            ProcessRef {
                pid: 1,
                comm: "cp".into(),
                exe: Some("/usr/bin/cp".into()),
                argv: Default::default(),
            },
            "s",
        )
    }

    #[test]
    fn a_copied_tree_is_one_group_per_rule() {
        let mut v = Vec::new();
        for d in ["a", "b", "c", "d", "e"] {
            for i in 0..40 {
                v.push(f("unsynced-at-exit", &format!("/w/dst/{d}/file{i}.txt")));
            }
        }
        v.push(f("rename-without-dir-fsync", "/w/dst/a/x"));
        let g = groups(&v, Some("/w"));
        assert_eq!(g.len(), 2, "{g:#?}");
        assert_eq!(g[0].pattern, "dst/**");
        assert_eq!(g[0].members.len(), 200);
        assert_eq!(g[1].pattern, "dst/a/x");
    }

    #[test]
    fn what_varies_from_file_to_file_is_generalized() {
        for (name, pattern) in [
            ("61", "*"),
            ("a8", "*"),
            ("file12.txt", "file*.txt"),
            ("tmp_obj_3f2a9c", "tmp_obj_*"),
            ("cafe", "cafe"),
            ("state.json", "state.json"),
        ] {
            assert_eq!(generalize(name), pattern, "{name}");
        }
    }

    #[test]
    fn git_objects_are_one_pattern() {
        let v = vec![
            f("rename-without-dir-fsync", "/r/.git/objects/61/7807982"),
            f("rename-without-dir-fsync", "/r/.git/objects/78/9819226"),
            f("rename-without-dir-fsync", "/r/.git/objects/a8/d918fea"),
        ];
        let g = groups(&v, Some("/r"));
        assert_eq!(g.len(), 1, "{g:#?}");
        assert_eq!(g[0].pattern, ".git/objects/*/*");
    }

    #[test]
    fn fingerprints_ignore_where_the_tree_is_and_who_ran_it() {
        let a = f("unsynced-at-exit", "/home/a/proj/out.log");
        let mut b = f("unsynced-at-exit", "/tmp/ci/proj/out.log");
        b.process.pid = 999;
        assert_eq!(
            fingerprint(&a, Some("/home/a/proj")),
            fingerprint(&b, Some("/tmp/ci/proj"))
        );
        assert_ne!(
            fingerprint(&a, Some("/home/a/proj")),
            fingerprint(
                &f("rename-without-fsync", "/home/a/proj/out.log"),
                Some("/home/a/proj")
            )
        );
        assert_eq!(fingerprint(&a, None).len(), 16);
    }

    #[test]
    fn control_characters_never_reach_a_terminal_raw() {
        for (raw, shown) in [
            ("plain/path é", "plain/path é"),
            ("a\x1b[2Jb\x07", "a\\x1b[2Jb\\x07"),
            ("x\ny", "x\\ny"),
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
            ("\u{9b}", "\\x9b"), // a C1 control
        ] {
            assert_eq!(escape(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn argv_is_quoted_so_it_can_be_pasted_back() {
        let argv: Vec<String> = ["python3", "-c", "print('hi')", "a b", "ok.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_quote(&argv),
            r#"python3 -c 'print('\''hi'\'')' 'a b' ok.txt"#
        );
        assert_eq!(
            shell_quote(&["touch".into(), "bad\x1bname".into()]),
            r"touch $'bad\x1bname'"
        );
        assert_eq!(shell_quote(&[String::new()]), "''");
    }
}
