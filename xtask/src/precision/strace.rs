//! Reading `strace -f -yy` output into calls and thread ends.
//!
//! The trace is the independent witness the ground truth rests on, written
//! by programs nobody here controls: every line is untrusted. A line that
//! cannot be read is skipped and counted, never a panic. Calls split by
//! another thread (`<unfinished ...>` / `<... resumed>`) are joined back
//! into one.

use std::collections::HashMap;

/// One system call, its arguments as strace printed them (top-level,
/// split at commas) and its result.
#[derive(Debug, Clone)]
pub struct Call {
    /// The thread that made it (strace prints thread ids under `-f`).
    pub tid: u32,
    /// Line of the trace where it completed (or began, for calls that
    /// create a process), for examples people can look up.
    pub line: usize,
    pub name: String,
    pub args: Vec<String>,
    pub ret: Ret,
}

/// What a call returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Ret {
    /// A value, with the `-yy` annotation when it is an fd (`3</a/b>`).
    Ok { value: i64, target: Option<Target> },
    /// `-1 ENOENT (...)`: the errno name.
    Err(String),
    /// `= ?`: the call never returned; its thread died inside it.
    Died,
    /// Begun (`<unfinished ...>`) and never resumed before its thread ended
    /// or the trace did.
    Unfinished,
}

/// What `-yy` says an fd refers to.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// An absolute path; `deleted` when the kernel added ` (deleted)`.
    Path { path: String, deleted: bool },
    /// Anything that is not a path: `pipe:[1]`, `socket:[2]`, `anon_inode:...`.
    Other(String),
}

/// One thing the trace reports, in trace order.
#[derive(Debug, Clone)]
pub enum Event {
    Call(Call),
    /// `+++ exited with N +++`: the thread ended; for a thread group leader,
    /// the process did with that code.
    Exited {
        tid: u32,
        code: i32,
    },
    /// `+++ killed by SIGKILL +++`.
    Killed {
        tid: u32,
        signal: String,
    },
}

/// A whole trace.
#[derive(Debug, Default)]
pub struct Trace {
    pub events: Vec<Event>,
    /// Lines that could not be read (count), and the first few of them.
    pub skipped: usize,
    pub skipped_examples: Vec<String>,
}

/// Calls that create a thread or process. They are placed where they
/// began: the child can run (and appear in the trace) before the parent's
/// call is reported as resumed.
const CREATORS: &[&str] = &["clone", "clone3", "fork", "vfork"];

/// A call begun and not yet resumed.
struct Open {
    text: String,
    line: usize,
    /// Where a creator's event goes, reserved when it began.
    slot: Option<usize>,
}

/// Parses a whole trace. Never fails: odd lines are skipped and counted.
pub fn parse(text: &str) -> Trace {
    let mut trace = Trace::default();
    let mut slots: Vec<Option<Event>> = Vec::new();
    let mut open: HashMap<u32, Open> = HashMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let Some((tid, rest)) = split_pid(raw) else {
            if !raw.trim().is_empty() {
                skip(&mut trace, line, raw);
            }
            continue;
        };
        if let Some(end) = rest.strip_prefix("+++ ") {
            // The thread is gone: a call it had begun never completed.
            if let Some(o) = open.remove(&tid) {
                finish(&mut slots, tid, o, false);
            }
            match thread_end(tid, end) {
                Some(e) => slots.push(Some(e)),
                None => skip(&mut trace, line, raw),
            }
            continue;
        }
        if rest.starts_with("--- ") {
            // Signal deliveries: the model needs only how threads end.
            continue;
        }
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = resumed.split_once(" resumed>") else {
                skip(&mut trace, line, raw);
                continue;
            };
            let Some(o) = open.remove(&tid) else {
                skip(&mut trace, line, raw);
                continue;
            };
            let joined = Open {
                text: format!("{}{}", o.text, tail),
                line: if o.slot.is_some() { o.line } else { line },
                slot: o.slot,
            };
            if finish(&mut slots, tid, joined, true).is_none() {
                skip(&mut trace, line, raw);
            }
            continue;
        }
        if let Some(begun) = rest.strip_suffix(" <unfinished ...>") {
            let name = begun.split('(').next().unwrap_or("");
            let slot = CREATORS.contains(&name).then(|| {
                slots.push(None);
                slots.len() - 1
            });
            // A second begin without a resume: strace lost track; keep the
            // newer one and count the older as unreadable.
            if open
                .insert(
                    tid,
                    Open {
                        text: begun.to_owned(),
                        line,
                        slot,
                    },
                )
                .is_some()
            {
                skip(&mut trace, line, raw);
            }
            continue;
        }
        match call(tid, line, rest) {
            Some(c) => slots.push(Some(Event::Call(c))),
            None => skip(&mut trace, line, raw),
        }
    }
    let mut rest: Vec<(u32, Open)> = open.into_iter().collect();
    rest.sort_by_key(|(_, o)| o.line);
    for (tid, o) in rest {
        finish(&mut slots, tid, o, false);
    }
    trace.events = slots.into_iter().flatten().collect();
    trace
}

/// Places a joined call (`resumed`) or one never resumed. Returns None
/// when the joined text could not be read.
fn finish(slots: &mut Vec<Option<Event>>, tid: u32, o: Open, resumed: bool) -> Option<()> {
    let c = match resumed {
        true => call(tid, o.line, &o.text)?,
        false => {
            let (name, args) = name_and_args(&o.text, true)?;
            Call {
                tid,
                line: o.line,
                name,
                args,
                ret: Ret::Unfinished,
            }
        }
    };
    match o.slot {
        Some(i) => slots[i] = Some(Event::Call(c)),
        None => slots.push(Some(Event::Call(c))),
    }
    Some(())
}

fn skip(trace: &mut Trace, line: usize, raw: &str) {
    trace.skipped += 1;
    if trace.skipped_examples.len() < 5 {
        let shown: String = raw.chars().take(160).collect();
        trace.skipped_examples.push(format!("line {line}: {shown}"));
    }
}

/// `1234  rest` -> (1234, "rest").
fn split_pid(raw: &str) -> Option<(u32, &str)> {
    let digits = raw.len() - raw.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let tid = raw[..digits].parse().ok()?;
    let rest = &raw[digits..];
    if !rest.starts_with(' ') {
        return None;
    }
    Some((tid, rest.trim_start()))
}

/// `exited with 0 +++`, `killed by SIGKILL (core dumped) +++`.
fn thread_end(tid: u32, text: &str) -> Option<Event> {
    let text = text.strip_suffix(" +++")?;
    if let Some(code) = text.strip_prefix("exited with ") {
        return Some(Event::Exited {
            tid,
            code: code.trim().parse().ok()?,
        });
    }
    let signal = text.strip_prefix("killed by ")?;
    let signal = signal.split_whitespace().next()?;
    signal.starts_with("SIG").then(|| Event::Killed {
        tid,
        signal: signal.to_owned(),
    })
}

/// One complete call line: `name(args) = ret`.
fn call(tid: u32, line: usize, text: &str) -> Option<Call> {
    let (name, args, after) = scan_call(text)?;
    let ret = ret(after.trim_start().strip_prefix('=')?.trim())?;
    Some(Call {
        tid,
        line,
        name,
        args,
        ret,
    })
}

/// The name and arguments of a call whose text may stop before its end
/// (`partial`: a call begun and never resumed).
fn name_and_args(text: &str, partial: bool) -> Option<(String, Vec<String>)> {
    match scan_call(text) {
        Some((name, args, _)) => Some((name, args)),
        None if partial => {
            let (name, inner) = text.split_once('(')?;
            valid_name(name)?;
            Some((name.to_owned(), split_top(inner).0))
        }
        None => None,
    }
}

fn valid_name(name: &str) -> Option<()> {
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(())
}

/// `name(a, b, c)rest` -> (name, [a, b, c], rest).
fn scan_call(text: &str) -> Option<(String, Vec<String>, &str)> {
    let (name, inner) = text.split_once('(')?;
    valid_name(name)?;
    let (args, used) = split_top(inner);
    let rest = inner.get(used..)?.strip_prefix(')')?;
    Some((name.to_owned(), args, rest))
}

/// Splits at top-level commas up to the `)` that closes the argument list
/// (or the end of the text). Quotes, escapes and `([{<` nesting are
/// respected; a `>` closes only a `<` (so `=>` and `->` inside brackets do
/// not). Returns the arguments and the byte offset of the closing `)`.
fn split_top(s: &str) -> (Vec<String>, usize) {
    let bytes = s.as_bytes();
    let mut args = Vec::new();
    let mut stack: Vec<u8> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            c @ (b'(' | b'[' | b'{' | b'<') => stack.push(c),
            b'>' if stack.last() == Some(&b'<') => {
                stack.pop();
            }
            b')' if stack.is_empty() => {
                push_arg(&mut args, &s[start..i]);
                return (args, i);
            }
            // A stray closer at the top level: not ours to balance.
            b']' | b'}' if stack.is_empty() => {}
            b')' | b']' | b'}' => {
                stack.pop();
            }
            b',' if stack.is_empty() => {
                push_arg(&mut args, &s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    push_arg(&mut args, &s[start.min(s.len())..]);
    (args, s.len())
}

fn push_arg(args: &mut Vec<String>, text: &str) {
    let t = text.trim();
    if !t.is_empty() {
        args.push(t.to_owned());
    }
}

/// `3</a/b>`, `0`, `0x7f00`, `-1 ENOENT (No such file)`, `?`.
fn ret(text: &str) -> Option<Ret> {
    if let Some(why) = text.strip_prefix("? ") {
        // ERESTARTSYS and kin: interrupted by a signal and restarted, with
        // no effect; anything else after `?` is a death inside the call.
        let word = why.split_whitespace().next().unwrap_or("");
        if word.starts_with("ERESTART") {
            return Some(Ret::Err(word.to_owned()));
        }
        return Some(Ret::Died);
    }
    if text == "?" {
        return Some(Ret::Died);
    }
    if let Some(err) = text.strip_prefix("-1 ") {
        let errno = err.split_whitespace().next()?;
        return Some(Ret::Err(errno.to_owned()));
    }
    let (value, target) = fd_value(text)?;
    Some(Ret::Ok { value, target })
}

/// A number (decimal, `0x` hex, or a name like `AT_FDCWD`) with an optional
/// `<...>` annotation right after it.
fn fd_value(text: &str) -> Option<(i64, Option<Target>)> {
    let end = text.find(['<', ' ']).unwrap_or(text.len());
    let value = number(&text[..end])?;
    let target = match text[end..].strip_prefix('<') {
        Some(inner) => Some(target(annotation(inner)?)),
        None => None,
    };
    Some((value, target))
}

/// The inside of a `<...>` annotation whose `<` was just consumed, up to
/// its matching `>` (annotations nest: `</dev/null<char 1:3>>`).
fn annotation(inner: &str) -> Option<&str> {
    let mut depth = 1;
    let b = inner.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'<' => depth += 1,
            b'>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&inner[..i]);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn target(text: &str) -> Target {
    if !text.starts_with('/') {
        return Target::Other(text.to_owned());
    }
    // A device adds its numbers: `/dev/null<char 1:3>`.
    let path = match text.find('<') {
        Some(i) => &text[..i],
        None => text,
    };
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    Target::Path {
        path: lossy(&unescape(path)),
        deleted,
    }
}

/// An integer as strace prints it: decimal, negative, `0x` hex, `0`-led
/// octal (modes), or `AT_FDCWD`.
pub fn number(text: &str) -> Option<i64> {
    let t = text.trim();
    if t == "AT_FDCWD" {
        return Some(AT_FDCWD);
    }
    if let Some(h) = t.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).ok().map(|v| v as i64);
    }
    if t.len() > 1
        && let Some(o) = t.strip_prefix('0')
        && o.bytes().all(|c| c.is_ascii_digit())
    {
        return i64::from_str_radix(o, 8).ok();
    }
    t.parse().ok()
}

/// The kernel's value of `AT_FDCWD`.
pub const AT_FDCWD: i64 = -100;

/// An fd argument: `3</a/b>`, `AT_FDCWD</cwd>`, `5`.
pub fn fd_arg(text: &str) -> Option<(i64, Option<Target>)> {
    fd_value(text.trim())
}

/// A quoted string argument, unescaped (`"a\nb"...` -> `a\nb`). None when
/// the argument is not a string (a NULL or an address).
pub fn string_arg(text: &str) -> Option<String> {
    let t = text.trim();
    let inner = t.strip_prefix('"')?;
    // Truncated strings end with `"...`; the closing quote is the last one.
    let end = inner.rfind('"')?;
    Some(lossy(&unescape(&inner[..end])))
}

/// The `|`-separated names of a flags argument (`O_WRONLY|O_CREAT`).
pub fn flags(text: &str) -> Vec<&str> {
    text.trim().split('|').map(str::trim).collect()
}

/// The value of `key=` inside a structure or keyword argument
/// (`flags=CLONE_VM|CLONE_FS` in `clone3({flags=..., ...})`).
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=");
    let mut from = 0;
    while let Some(i) = text[from..].find(&pat) {
        let at = from + i;
        // A whole key: not the tail of a longer one (`child_tid=` vs `tid=`).
        let whole = at == 0 || {
            let before = text.as_bytes()[at - 1];
            !before.is_ascii_alphanumeric() && before != b'_'
        };
        let value = &text[at + pat.len()..];
        if whole {
            let end = value.find([',', '}', ']', ' ']).unwrap_or(value.len());
            return Some(&value[..end]);
        }
        from = at + pat.len();
    }
    None
}

/// Sum of the `iov_len=` fields of an iovec array: what a vectored write
/// asked for. None when strace cut the array short (`...`).
pub fn iov_total(text: &str) -> Option<u64> {
    if text.contains("...]") || text.contains(", ...") {
        return None;
    }
    let mut total = 0u64;
    let mut rest = text;
    while let Some(i) = rest.find("iov_len=") {
        rest = &rest[i + "iov_len=".len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += rest[..end].parse::<u64>().ok()?;
    }
    Some(total)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// strace's escapes: `\n \t \r \v \f \\ \"`, octal `\NNN` and hex `\xNN`.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        let c = b[i];
        i += 1;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(0x0b),
            b'f' => out.push(0x0c),
            b'x' => {
                let end = (i..b.len().min(i + 2))
                    .take_while(|&j| b[j].is_ascii_hexdigit())
                    .last()
                    .map_or(i, |j| j + 1);
                match u8::from_str_radix(&s[i..end], 16) {
                    Ok(v) => out.push(v),
                    Err(_) => out.extend_from_slice(b"\\x"),
                }
                i = end;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut digits = 1;
                while digits < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                    v = v * 8 + u32::from(b[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(t: &Trace) -> Vec<&Call> {
        t.events
            .iter()
            .filter_map(|e| match e {
                Event::Call(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_plain_call_with_annotations() {
        let t = parse(
            "23470 openat(AT_FDCWD</tmp/st>, \"a\", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3</tmp/st/a>\n",
        );
        let c = calls(&t)[0];
        assert_eq!((c.tid, c.name.as_str(), c.line), (23470, "openat", 1));
        assert_eq!(c.args.len(), 4);
        assert_eq!(
            fd_arg(&c.args[0]),
            Some((
                AT_FDCWD,
                Some(Target::Path {
                    path: "/tmp/st".into(),
                    deleted: false
                })
            ))
        );
        assert_eq!(string_arg(&c.args[1]).as_deref(), Some("a"));
        assert_eq!(flags(&c.args[2]), vec!["O_WRONLY", "O_CREAT", "O_TRUNC"]);
        assert_eq!(number(&c.args[3]), Some(0o666));
        assert_eq!(
            c.ret,
            Ret::Ok {
                value: 3,
                target: Some(Target::Path {
                    path: "/tmp/st/a".into(),
                    deleted: false
                })
            }
        );
        assert_eq!(t.skipped, 0);
    }

    #[test]
    fn errors_devices_pipes_and_deleted_files() {
        let t = parse(concat!(
            "1 openat(AT_FDCWD</d>, \"x\", O_RDONLY) = -1 ENOENT (No such file or directory)\n",
            "1 close(0</dev/null<char 1:3>>)     = 0\n",
            "1 write(1<pipe:[43064]>, \"x\\n\", 2)  = 2\n",
            "1 fsync(4</d/gone (deleted)>) = 0\n",
        ));
        let c = calls(&t);
        assert_eq!(c[0].ret, Ret::Err("ENOENT".into()));
        assert_eq!(
            fd_arg(&c[1].args[0]).unwrap().1,
            Some(Target::Path {
                path: "/dev/null".into(),
                deleted: false
            })
        );
        assert_eq!(
            fd_arg(&c[2].args[0]).unwrap().1,
            Some(Target::Other("pipe:[43064]".into()))
        );
        assert_eq!(
            fd_arg(&c[3].args[0]).unwrap().1,
            Some(Target::Path {
                path: "/d/gone".into(),
                deleted: true
            })
        );
    }

    #[test]
    fn escapes_in_strings_and_paths() {
        assert_eq!(
            string_arg(r#""a\"b\\c\n\t\001\x41\303\251""#).as_deref(),
            Some("a\"b\\c\n\t\u{1}Aé")
        );
        assert_eq!(string_arg(r#""abc"..."#).as_deref(), Some("abc"));
        assert_eq!(string_arg("NULL"), None);
        let (_, t) = fd_arg(r"3</d/with\x3e angle\040sp>").unwrap();
        assert_eq!(
            t,
            Some(Target::Path {
                path: "/d/with> angle sp".into(),
                deleted: false
            })
        );
        // A comma and a parenthesis inside a string do not split arguments.
        let t = parse("7 rename(\"a,b)\", \"c\") = 0\n");
        assert_eq!(calls(&t)[0].args.len(), 2);
    }

    #[test]
    fn unfinished_and_resumed_are_joined_at_completion() {
        let t = parse(concat!(
            "10 write(3</d/f>, \"abc\", 3 <unfinished ...>\n",
            "11 fsync(4</d/g>) = 0\n",
            "10 <... write resumed>) = 3\n",
        ));
        let c = calls(&t);
        assert_eq!(c[0].name, "fsync");
        assert_eq!((c[1].name.as_str(), c[1].line), ("write", 3));
        assert_eq!(c[1].args.len(), 3);
        assert_eq!(number(&c[1].args[2]), Some(3));
        assert_eq!(
            c[1].ret,
            Ret::Ok {
                value: 3,
                target: None
            }
        );
    }

    #[test]
    fn a_creator_is_placed_where_it_began() {
        let t = parse(concat!(
            "20 vfork( <unfinished ...>\n",
            "21 execve(\"/usr/bin/mv\", [\"mv\", \"a\", \"b\"], 0x5 /* 35 vars */ <unfinished ...>\n",
            "20 <... vfork resumed>)              = 21\n",
            "21 <... execve resumed>)             = 0\n",
        ));
        let c = calls(&t);
        assert_eq!(
            c.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["vfork", "execve"]
        );
        assert_eq!(
            c[0].ret,
            Ret::Ok {
                value: 21,
                target: None
            }
        );
    }

    #[test]
    fn clone3_and_clone_flags() {
        let t = parse(concat!(
            "5 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_THREAD, child_tid=0x7f, parent_tid=0x7f, exit_signal=0, stack=0x7f, stack_size=0x7fff80, tls=0x7f} => {parent_tid=[6]}, 88) = 6\n",
            "5 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f8) = 7\n",
        ));
        let c = calls(&t);
        assert_eq!(c[0].args.len(), 2);
        assert_eq!(
            flags(field(&c[0].args[0], "flags").unwrap()),
            ["CLONE_VM", "CLONE_FS", "CLONE_FILES", "CLONE_THREAD"]
        );
        assert_eq!(field(&c[0].args[0], "tid"), None);
        assert_eq!(
            field(&c[1].args[1], "flags").map(flags).unwrap()[2],
            "SIGCHLD"
        );
        assert_eq!(
            c[1].ret,
            Ret::Ok {
                value: 7,
                target: None
            }
        );
    }

    #[test]
    fn exits_kills_and_calls_cut_by_death() {
        let t = parse(concat!(
            "30 write(3</d/f>, \"abc\", 3 <unfinished ...>\n",
            "31 exit_group(0)                     = ?\n",
            "31 +++ exited with 0 +++\n",
            "32 pwrite64(4</d/g>, \"x\", 1, 0) = ?\n",
            "32 +++ killed by SIGKILL +++\n",
            "30 +++ killed by SIGSEGV (core dumped) +++\n",
        ));
        let kinds: Vec<String> = t
            .events
            .iter()
            .map(|e| match e {
                Event::Call(c) => format!("{} {:?}", c.name, c.ret),
                Event::Exited { tid, code } => format!("exit {tid} {code}"),
                Event::Killed { tid, signal } => format!("kill {tid} {signal}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "exit_group Died",
                "exit 31 0",
                "pwrite64 Died",
                "kill 32 SIGKILL",
                "write Unfinished",
                "kill 30 SIGSEGV",
            ]
        );
    }

    #[test]
    fn odd_lines_are_skipped_and_counted() {
        let t = parse(concat!(
            "garbage\n",
            "12 <... write resumed>) = 3\n",
            "12 write(3</d/f>, \"unterminated\n",
            "12 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---\n",
            "12 +++ something else +++\n",
            "12 close(3</d/f>) = 0\n",
        ));
        assert_eq!(t.skipped, 4);
        assert_eq!(calls(&t).len(), 1);
    }

    #[test]
    fn vectored_write_lengths() {
        assert_eq!(
            iov_total(r#"[{iov_base="ab", iov_len=2}, {iov_base="cde", iov_len=3}]"#),
            Some(5)
        );
        assert_eq!(iov_total(r#"[{iov_base="ab", iov_len=2}, ...]"#), None);
    }
}
