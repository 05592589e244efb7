//! The report for people. Terse by default: alike findings are one entry
//! (rule, count, where, who, one example in full and a few more names, the
//! fix), worst first; `verbose` adds every finding with its evidence and the
//! calls that led to it. Lines are wrapped to the width asked for, and
//! nothing a traced program chose (paths, argv, names) reaches the terminal
//! raw.

use std::fmt::Write;

use serde_json::Value;

use super::Report;
use super::groups::{Group, escape, relative, shell_quote};
use super::plural::count;
use crate::event::FileId;
use crate::finding::{Finding, Severity};

const RESET: &str = "\x1b[0m";
/// Frames of a stack the terse report shows.
const STACK_SHORT: usize = 3;
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
/// Examples named under a group besides the one shown in full.
const EXAMPLES: usize = 3;

/// How the text report is drawn.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextOptions {
    /// ANSI colour (a terminal, NO_COLOR unset).
    pub color: bool,
    /// Every finding in full: evidence and calls.
    pub verbose: bool,
    /// Wrap lines to this many columns.
    pub width: Option<usize>,
    /// Show at most this many entries (groups, or findings when verbose).
    pub max_findings: Option<usize>,
}

fn severity_color(s: Severity) -> &'static str {
    match s {
        Severity::High => "\x1b[1;31m",
        Severity::Medium => "\x1b[33m",
        Severity::Low => "\x1b[36m",
    }
}

/// `8:1` major:minor of a userspace `st_dev`.
fn dev_name(dev: u64) -> String {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    format!("{major}:{minor}")
}

fn inode_name(id: &FileId) -> String {
    format!("dev {} ino {}", dev_name(id.dev), id.ino)
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Styles text only when colour was asked for.
struct Paint(bool);

impl Paint {
    fn on(&self, style: &str, text: &str) -> String {
        if self.0 {
            format!("{style}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

/// Text on its way out: buffered, and handed to the writer (when there is
/// one) every 64 KiB, so a verbose report of 100,000 findings is never
/// held whole. The first write error is kept and returned at the end.
struct Out<'a> {
    buf: String,
    to: Option<&'a mut dyn std::io::Write>,
    error: Option<std::io::Error>,
}

impl Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.buf.push_str(s);
        Ok(())
    }
}

impl Out<'_> {
    fn push(&mut self, c: char) {
        self.buf.push(c);
    }

    /// Hands what is buffered to the writer once there is enough of it.
    fn spill(&mut self) {
        if self.buf.len() >= 64 << 10 {
            self.drain();
        }
    }

    fn drain(&mut self) {
        if let Some(w) = self.to.as_mut() {
            if self.error.is_none()
                && let Err(e) = w.write_all(self.buf.as_bytes())
            {
                self.error = Some(e);
            }
            self.buf.clear();
        }
    }
}

/// Writes `text` (already escaped) after `indent`, wrapped at `width` on
/// spaces; continuation lines are indented two more.
fn wrapped(out: &mut impl Write, indent: &str, text: &str, width: Option<usize>) {
    let Some(width) = width.filter(|w| *w > indent.len() + 20) else {
        let _ = writeln!(out, "{indent}{text}");
        return;
    };
    let mut line = String::from(indent);
    let mut first = true;
    for word in text.split(' ') {
        let room = if first {
            indent.len()
        } else {
            indent.len() + 2
        };
        if line.len() > room && line.len() + 1 + word.len() > width {
            let _ = writeln!(out, "{line}");
            line = format!("{indent}  ");
            first = false;
        } else if line.len() > room {
            line.push(' ');
        }
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}

impl Report {
    /// The text report (see [`TextOptions`]).
    pub fn render_text(&self, o: &TextOptions) -> String {
        let mut out = Out {
            buf: String::new(),
            to: None,
            error: None,
        };
        self.render_into(&mut out, o);
        out.buf
    }

    /// The text report written to `w` as it is drawn (see
    /// [`Report::render_text`]).
    pub fn write_text(&self, o: &TextOptions, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut out = Out {
            buf: String::new(),
            to: Some(w),
            error: None,
        };
        self.render_into(&mut out, o);
        out.drain();
        out.error.map_or(Ok(()), Err)
    }

    fn render_into(&self, out: &mut Out<'_>, o: &TextOptions) {
        let paint = Paint(o.color);
        let status = match self.run.exit_status {
            Some(e) => e.describe(),
            // A launched command without an exit status was still running
            // when the report was written (a second Ctrl-C).
            None if matches!(self.run.mode.as_str(), "run" | "crashtest") => {
                "was still running when the report was written".to_string()
            }
            None => "ran".to_string(),
        };
        let header = format!(
            "auditor {} ({}): {} {status}; {} .. {}",
            self.run.tool_version,
            self.run.mode,
            shell_quote(&self.run.command),
            self.run.started_at,
            self.run.ended_at
        );
        wrapped(out, "", &header, o.width);
        if self.dropped() > 0 {
            let warning = format!(
                "warning: {} dropped; verdicts that depend on them are marked inconclusive, and problems in the missing events cannot be seen",
                match self.dropped() {
                    1 => "1 event was".to_string(),
                    n => format!("{n} events were"),
                }
            );
            let _ = writeln!(out, "{}", paint.on("\x1b[1;33m", &warning));
        }
        if let Some(byte) = self.run.truncated_at_byte {
            let _ = writeln!(
                out,
                "{}",
                paint.on(
                    "\x1b[1;33m",
                    &format!(
                        "warning: the recording stops at byte {byte}: findings cover what it holds"
                    )
                )
            );
        }
        let shown = if o.verbose {
            self.render_findings(out, &paint, o)
        } else {
            self.render_groups(out, &paint, o)
        };
        if shown.0 < shown.1 {
            let what = if o.verbose { "findings" } else { "groups" };
            let _ = writeln!(
                out,
                "\n(+{} more {what}: --max-findings raises the limit; the JSON report has them all)",
                shown.1 - shown.0
            );
        }
        out.push('\n');
        if o.verbose {
            self.render_left_out(out);
        }
        self.render_not_judged(out);
        let _ = writeln!(out, "{}", self.summary_line());
    }

    /// One entry per group; returns (shown, total).
    fn render_groups(&self, out: &mut Out<'_>, paint: &Paint, o: &TextOptions) -> (usize, usize) {
        let base = self.run.base.as_deref();
        let limit = o.max_findings.unwrap_or(usize::MAX);
        for g in self.groups.iter().take(limit) {
            let first = &self.findings[g.members[0]];
            out.push('\n');
            self.group_head(out, paint, g, first);
            let example = escape(relative(&first.path, base));
            wrapped(
                out,
                "    ",
                &format!("{example}: {}", escape(&first.summary)),
                o.width,
            );
            if let Some(stack) = &first.stack {
                wrapped(
                    out,
                    "    ",
                    &escape(&stack.short_in(STACK_SHORT, base)),
                    o.width,
                );
            }
            if let Some(reason) = &first.inconclusive_reason {
                let line = format!("INCONCLUSIVE: {}", escape(reason));
                wrapped(out, "    ", &paint.on("\x1b[33m", &line), o.width);
            }
            if g.members.len() > 1 {
                let more: Vec<String> = g.members[1..]
                    .iter()
                    .take(EXAMPLES)
                    .map(|&i| escape(relative(&self.findings[i].path, base)).into_owned())
                    .collect();
                let rest = g.members.len() - 1 - more.len();
                let tail = if rest > 0 {
                    format!(" (+{rest} more)")
                } else {
                    String::new()
                };
                wrapped(
                    out,
                    "    ",
                    &format!("also: {}{tail}", more.join(", ")),
                    o.width,
                );
            }
            if let Some(fix) = first.evidence.get("fix").and_then(Value::as_str) {
                wrapped(out, "    ", &format!("fix: {}", escape(fix)), o.width);
            }
            out.spill();
        }
        (self.groups.len().min(limit), self.groups.len())
    }

    fn group_head(&self, out: &mut Out<'_>, paint: &Paint, g: &Group, first: &Finding) {
        let sev = format!("{:<6}", first.severity.as_str().to_uppercase());
        let count = if g.members.len() > 1 {
            format!(" x{}", g.members.len())
        } else {
            String::new()
        };
        let who = format!("{} (pid {})", first.process.comm, first.process.pid);
        let _ = writeln!(
            out,
            "{} {}{}  {}  {}",
            paint.on(severity_color(first.severity), &sev),
            paint.on(BOLD, &g.rule),
            count,
            paint.on(BOLD, &escape(&g.pattern)),
            paint.on(DIM, &format!("by {}", escape(&who)))
        );
    }

    /// Every finding in full, grouped by file; returns (shown, total).
    fn render_findings(&self, out: &mut Out<'_>, paint: &Paint, o: &TextOptions) -> (usize, usize) {
        let limit = o.max_findings.unwrap_or(usize::MAX);
        // In the order each path first appears; found through a map, as a
        // run may hold a finding on each of 100,000 files.
        let mut by_path: Vec<(&str, Vec<&Finding>)> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for f in self.findings.iter().take(limit) {
            match index.get(f.path.as_str()) {
                Some(&i) => by_path[i].1.push(f),
                None => {
                    index.insert(&f.path, by_path.len());
                    by_path.push((&f.path, vec![f]));
                }
            }
        }
        for (path, findings) in &by_path {
            out.push('\n');
            let inode = findings
                .iter()
                .find_map(|f| f.inode.as_ref())
                .map(inode_name);
            let fs = findings
                .iter()
                .find_map(|f| f.evidence.get("fs").and_then(Value::as_str));
            let detail: Vec<String> = inode.into_iter().chain(fs.map(str::to_string)).collect();
            let _ = writeln!(
                out,
                "{}  {}",
                paint.on(BOLD, &escape(path)),
                paint.on(DIM, &format!("({})", escape(&detail.join(", "))))
            );
            for f in findings {
                render_finding(out, f, paint, o.width);
            }
            out.spill();
        }
        (self.findings.len().min(limit), self.findings.len())
    }

    fn render_not_judged(&self, out: &mut Out<'_>) {
        if self.stats.ignored_files.count > 0 {
            let reasons: Vec<String> = self
                .stats
                .ignored_files
                .by_reason
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect();
            let _ = writeln!(
                out,
                "not judged: {} not on persistent storage ({})",
                count(self.stats.ignored_files.count, "file", "files"),
                reasons.join(", ")
            );
        }
        if self.stats.cache_findings > 0 {
            let _ = writeln!(
                out,
                "not judged: {} finding{} on caches their programs rebuild (__pycache__, .cache, ...); --judge-caches shows them",
                self.stats.cache_findings,
                if self.stats.cache_findings == 1 {
                    ""
                } else {
                    "s"
                }
            );
        }
        let caller = &self.stats.caller_files;
        if caller.files > 0 {
            let more = if caller.files > caller.examples.len() as u64 {
                ", ..."
            } else {
                ""
            };
            let examples: Vec<String> = caller
                .examples
                .iter()
                .map(|e| escape(e).into_owned())
                .collect();
            let _ = writeln!(
                out,
                "not judged: {} bytes written to {} file{} its caller handed the command as output ({}{more}): keeping redirected output is the caller's job",
                caller.bytes,
                caller.files,
                if caller.files == 1 { "" } else { "s" },
                examples.join(", ")
            );
        }
        if self.stats.evicted_dirty > 0 || self.stats.evicted_processes > 0 {
            let _ = writeln!(
                out,
                "not judged: {} files with unsynced data or a pending verdict and {} processes were evicted to stay within the limit of {} files; their verdicts are unknown",
                self.stats.evicted_dirty, self.stats.evicted_processes, self.stats.max_files
            );
        }
        if self.stats.evicted_names > 0 {
            let _ = writeln!(
                out,
                "not judged: {} names whose directory was not fsynced yet were dropped to stay within the limit of {} files; their verdicts are unknown",
                self.stats.evicted_names, self.stats.max_files
            );
        }
    }
}

/// The process as people know it: its comm, and its argv[0] when that
/// says more (dockerd's re-exec runs as `exe`, known as `docker-untar`).
fn who(f: &Finding) -> String {
    let arg0 = f
        .process
        .argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a));
    match arg0 {
        Some(a) if a != &*f.process.comm => format!("{} ({a:?})", f.process.comm),
        _ => f.process.comm.to_string(),
    }
}

fn render_finding(out: &mut Out<'_>, f: &Finding, paint: &Paint, width: Option<usize>) {
    let sev = format!("{:<6}", f.severity.as_str().to_uppercase());
    let _ = writeln!(
        out,
        "  {} {}  {}",
        paint.on(severity_color(f.severity), &sev),
        paint.on(BOLD, &f.rule),
        paint.on(DIM, &format!("pid {} {}", f.process.pid, escape(&who(f))))
    );
    wrapped(out, "    ", &escape(&f.summary), width);
    if let Some(seen) = &f.path_in_process {
        let _ = writeln!(
            out,
            "    {}",
            paint.on(DIM, &format!("as the process saw it: {}", escape(seen)))
        );
    }
    if let Some(c) = &f.container {
        let name = c
            .name
            .as_deref()
            .map(|n| format!(" ({})", escape(n)))
            .unwrap_or_default();
        let id = escape(c.id.get(..12).unwrap_or(&c.id)).into_owned();
        let _ = writeln!(
            out,
            "    {}",
            paint.on(DIM, &format!("container {id}{name}"))
        );
    }
    if let Some(why) = &f.host_path_unknown {
        let _ = writeln!(
            out,
            "    {}",
            paint.on("\x1b[33m", &format!("host path unknown: {}", escape(why)))
        );
    }
    if let Some(reason) = &f.inconclusive_reason {
        let _ = writeln!(
            out,
            "    {}",
            paint.on("\x1b[33m", &format!("INCONCLUSIVE: {}", escape(reason)))
        );
    }
    let evidence: Vec<(&String, &Value)> =
        f.evidence.iter().filter(|(_, v)| !v.is_null()).collect();
    if !evidence.is_empty() {
        let _ = writeln!(out, "    evidence:");
        for (k, v) in evidence {
            wrapped(
                out,
                "      ",
                &format!("{k}: {}", escape(&value_text(v))),
                width,
            );
        }
    }
    if let Some(stack) = &f.stack {
        let how = match stack.unwind {
            crate::stack::Unwind::FramePointers => "frame pointers",
            crate::stack::Unwind::Dwarf => "unwind tables",
        };
        let _ = writeln!(out, "    stack ({how}):");
        if let Some(i) = &stack.interpreter {
            wrapped(
                out,
                "      ",
                &escape(&format!(
                    "{}: these are the interpreter's native frames, not the script's",
                    i.describe()
                )),
                width,
            );
        }
        for (n, fr) in stack.frames.iter().enumerate() {
            let object = match (&fr.object, fr.offset) {
                (Some(o), Some(off)) => format!("  {o}+{off:#x}"),
                _ => String::new(),
            };
            let inlined = if fr.inlined { " (inlined)" } else { "" };
            let line = format!(
                "#{n:<2} {}{inlined}{}",
                escape(&fr.describe()),
                paint.on(DIM, &escape(&object))
            );
            wrapped(out, "      ", &line, width);
        }
        if stack.truncated {
            let _ = writeln!(
                out,
                "      (outer frames beyond the copied stack are missing)"
            );
        }
    }
    if let Some(first) = f.calls.first() {
        let _ = writeln!(out, "    calls:");
        for c in &f.calls {
            let rel = c.ts_ns.saturating_sub(first.ts_ns) as f64 / 1e9;
            let who = if c.pid == 0 {
                String::new()
            } else {
                format!("{}/{} {}  ", c.pid, c.tid, escape(&c.comm))
            };
            let _ = writeln!(
                out,
                "      #{:<6} +{rel:.6}s  {who}{}",
                c.seq,
                escape(&c.call)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TextOptions;
    use crate::report::tests::sample_report;

    fn verbose() -> TextOptions {
        TextOptions {
            verbose: true,
            ..TextOptions::default()
        }
    }

    /// The sample report rendered with `o`.
    fn sample_text(o: TextOptions) -> String {
        sample_report().render_text(&o)
    }

    #[test]
    fn verbose_text_groups_by_file_worst_first_with_calls() {
        let text = sample_text(verbose());
        assert!(!text.contains('\x1b'), "no colour unless asked");
        let a = text.find("/d/a  (dev 8:1 ino 10, ext4)").expect(&text);
        let log = text.find("/d/log  (").expect(&text);
        assert!(a < log, "worst file first:\n{text}");
        assert!(
            text.contains("HIGH   rename-without-fsync  pid 100 app"),
            "{text}"
        );
        assert!(text.contains("unsynced_bytes: 4096"), "{text}");
        assert!(
            text.contains("openat(\"/d/a.tmp\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC) = 3"),
            "{text}"
        );
        assert!(
            text.trim_end()
                .ends_with("3 findings (1 high, 2 medium) in 2 files; 8 events, 0 dropped"),
            "{text}"
        );
        let colored = TextOptions {
            color: true,
            ..verbose()
        };
        assert!(sample_text(colored).contains("\x1b[1;31mHIGH"));
    }

    #[test]
    fn terse_text_is_one_entry_per_group_with_its_fix() {
        let text = sample_text(TextOptions::default());
        assert!(
            text.contains("HIGH   rename-without-fsync  a  by app (pid 100)"),
            "{text}"
        );
        assert!(
            text.contains("    fix: fsync (or fdatasync) the file before renaming it"),
            "{text}"
        );
        assert!(!text.contains("evidence:"), "evidence is for -v: {text}");
        assert!(
            text.starts_with("auditor 0.1.0 (run): app --save exited with code 0;"),
            "{text}"
        );
    }

    #[test]
    fn at_most_max_findings_entries_and_a_word_about_the_rest() {
        let text = sample_text(TextOptions {
            max_findings: Some(1),
            ..TextOptions::default()
        });
        assert_eq!(text.matches("fix:").count(), 1, "{text}");
        assert!(text.contains("(+2 more groups"), "{text}");
    }

    #[test]
    fn lines_fit_the_width() {
        let text = sample_text(TextOptions {
            width: Some(80),
            ..TextOptions::default()
        });
        for line in text.lines().filter(|l| !l.starts_with("auditor ")) {
            // A word longer than the width (a path) cannot be broken.
            let longest_word = line.split(' ').map(str::len).max().unwrap_or(0);
            assert!(line.len() <= 80 || longest_word > 60, "{line:?}");
        }
    }

    #[test]
    fn names_a_program_chose_never_reach_the_terminal_raw() {
        let mut r = sample_report();
        r.findings[0].path = "/d/\x1b[2Jevil\u{202e}".into();
        r.findings[0].summary = "renamed \x1b]0;owned\x07".into();
        r.run.command = vec!["touch".into(), "\x1b[31mred".into()];
        for o in [TextOptions::default(), verbose()] {
            let text = r.render_text(&o);
            assert!(!text.contains('\x1b'), "{text:?}");
            assert!(!text.contains('\x07'), "{text:?}");
            assert!(!text.contains('\u{202e}'), "{text:?}");
            assert!(
                text.contains("\\x1b[2Jevil\\u{202e}") || text.contains("\\x1b]0;owned"),
                "{text}"
            );
        }
    }

    #[test]
    fn clean_report_says_so_plainly() {
        let mut r = sample_report();
        r.findings.clear();
        r.groups.clear();
        let text = r.render_text(&TextOptions::default());
        assert!(
            text.trim_end()
                .ends_with("no durability findings; 8 events, 0 dropped"),
            "{text}"
        );
        r.run.dropped = 7;
        let text = r.render_text(&TextOptions::default());
        assert!(text.contains("warning: 7 events were dropped"), "{text}");
    }
}
