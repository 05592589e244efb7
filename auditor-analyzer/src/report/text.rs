//! The report for people: findings grouped by file, worst first, each with
//! its evidence and the calls that led to it, and a one-line summary.

use std::fmt::Write;

use serde_json::Value;

use super::{ExitStatusInfo, Report};
use crate::event::FileId;
use crate::finding::{Finding, Severity};

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";

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

impl Report {
    /// The text report; ANSI colour only when `color` is set.
    pub fn render_text(&self, color: bool) -> String {
        let paint = Paint(color);
        let mut out = String::new();
        let status = self
            .run
            .exit_status
            .map_or_else(|| "ran".to_string(), ExitStatusInfo::describe);
        let _ = writeln!(
            out,
            "auditor {} ({}): `{}` {status}; {} .. {}",
            self.run.tool_version,
            self.run.mode,
            self.run.command.join(" "),
            self.run.started_at,
            self.run.ended_at
        );
        if self.dropped() > 0 {
            let warning = format!(
                "warning: {} events were dropped; verdicts that depend on them are marked inconclusive, and problems in the missing events cannot be seen",
                self.dropped()
            );
            let _ = writeln!(out, "{}", paint.on("\x1b[1;33m", &warning));
        }
        // Group by path, in the (worst-first) order findings are sorted.
        let mut groups: Vec<(&str, Vec<&Finding>)> = Vec::new();
        for f in &self.findings {
            match groups.iter_mut().find(|(p, _)| *p == f.path) {
                Some((_, list)) => list.push(f),
                None => groups.push((&f.path, vec![f])),
            }
        }
        for (path, findings) in &groups {
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
                paint.on(BOLD, path),
                paint.on(DIM, &format!("({})", detail.join(", ")))
            );
            for f in findings {
                render_finding(&mut out, f, &paint);
            }
        }
        out.push('\n');
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
                "not judged: {} files not on persistent storage ({})",
                self.stats.ignored_files.count,
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
            let _ = writeln!(
                out,
                "not judged: {} bytes written to {} file{} its caller handed the command as output ({}{more}): keeping redirected output is the caller's job",
                caller.bytes,
                caller.files,
                if caller.files == 1 { "" } else { "s" },
                caller.examples.join(", ")
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
        let _ = writeln!(out, "{}", self.summary_line());
        out
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
        Some(a) if a != f.process.comm => format!("{} ({a:?})", f.process.comm),
        _ => f.process.comm.clone(),
    }
}

fn render_finding(out: &mut String, f: &Finding, paint: &Paint) {
    let sev = format!("{:<6}", f.severity.as_str().to_uppercase());
    let _ = writeln!(
        out,
        "  {} {}  {}",
        paint.on(severity_color(f.severity), &sev),
        paint.on(BOLD, &f.rule),
        paint.on(DIM, &format!("pid {} {}", f.process.pid, who(f)))
    );
    let _ = writeln!(out, "    {}", f.summary);
    if let Some(seen) = &f.path_in_process {
        let _ = writeln!(
            out,
            "    {}",
            paint.on(DIM, &format!("as the process saw it: {seen:?}"))
        );
    }
    if let Some(c) = &f.container {
        let name = c
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let id = c.id.get(..12).unwrap_or(&c.id);
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
            paint.on("\x1b[33m", &format!("host path unknown: {why}"))
        );
    }
    if let Some(reason) = &f.inconclusive_reason {
        let _ = writeln!(
            out,
            "    {}",
            paint.on("\x1b[33m", &format!("INCONCLUSIVE: {reason}"))
        );
    }
    let evidence: Vec<(&String, &Value)> =
        f.evidence.iter().filter(|(_, v)| !v.is_null()).collect();
    if !evidence.is_empty() {
        let _ = writeln!(out, "    evidence:");
        for (k, v) in evidence {
            let _ = writeln!(out, "      {k}: {}", value_text(v));
        }
    }
    if let Some(first) = f.calls.first() {
        let _ = writeln!(out, "    calls:");
        for c in &f.calls {
            let rel = c.ts_ns.saturating_sub(first.ts_ns) as f64 / 1e9;
            let who = if c.pid == 0 {
                String::new()
            } else {
                format!("{}/{} {}  ", c.pid, c.tid, c.comm)
            };
            let _ = writeln!(out, "      #{:<6} +{rel:.6}s  {who}{}", c.seq, c.call);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::report::tests::sample_report;

    #[test]
    fn text_groups_by_file_worst_first_with_calls() {
        let r = sample_report();
        let text = r.render_text(false);
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
        assert!(r.render_text(true).contains("\x1b[1;31mHIGH"));
    }

    #[test]
    fn clean_report_says_so_plainly() {
        let mut r = sample_report();
        r.findings.clear();
        let text = r.render_text(false);
        assert!(
            text.trim_end()
                .ends_with("no durability findings; 8 events, 0 dropped"),
            "{text}"
        );
        r.run.dropped = 7;
        let text = r.render_text(false);
        assert!(text.contains("warning: 7 events were dropped"), "{text}");
    }
}
