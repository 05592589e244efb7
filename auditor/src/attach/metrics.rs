//! Prometheus text exposition (format 0.0.4) of a running attach, served at
//! `/metrics` by a small blocking HTTP server on its own thread. The capture
//! loop renders the page about once a second and the server hands out the
//! latest copy, so a scrape never touches the analyzer.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use auditor_analyzer::event::EventKind;

use crate::error::UserError;

/// Name of an event kind as the JSON stream writes it (`type`).
pub fn kind_name(k: &EventKind) -> &'static str {
    match k {
        EventKind::Open { .. } => "open",
        EventKind::Write { .. } => "write",
        EventKind::Truncate { .. } => "truncate",
        EventKind::Fallocate { .. } => "fallocate",
        EventKind::Sync { .. } => "sync",
        EventKind::Rename { .. } => "rename",
        EventKind::Unlink { .. } => "unlink",
        EventKind::Mkdir { .. } => "mkdir",
        EventKind::Close { .. } => "close",
        EventKind::CloseRange { .. } => "close_range",
        EventKind::Dup { .. } => "dup",
        EventKind::Fcntl { .. } => "fcntl",
        EventKind::Mmap { .. } => "mmap",
        EventKind::Chdir { .. } => "chdir",
        EventKind::Fchdir { .. } => "fchdir",
        EventKind::Fork { .. } => "fork",
        EventKind::Exec { .. } => "exec",
        EventKind::Exit { .. } => "exit",
        EventKind::SignalSent { .. } => "signal_sent",
        EventKind::SignalDelivered { .. } => "signal_delivered",
        EventKind::ProcessStart { .. } => "process_start",
        EventKind::FdAtStart { .. } => "fd_at_start",
        EventKind::Lost { .. } => "lost",
    }
}

/// Everything one page shows.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Records the kernel could not hand over, by reason.
    pub dropped_ring_full: u64,
    pub dropped_args_table_full: u64,
    /// Processes left untraced because the traced-process table was full.
    pub untraced_table_full: u64,
    /// (rule, severity) -> findings raised.
    pub findings: BTreeMap<(String, String), u64>,
    pub inconclusive_findings: u64,
    pub processes_live: usize,
    pub files_tracked: u64,
    pub evicted_inodes: u64,
    pub evicted_dirty: u64,
    pub tracked_inodes: u64,
    /// (pid, comm, unsynced bytes) of live processes with unsynced data.
    pub unsynced: Vec<(u32, String, u64)>,
    pub oldest_unsynced_age_s: Option<f64>,
    pub uptime_s: f64,
}

/// Escapes a label value: backslash, double quote and newline.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The page for `s`.
pub fn render(s: &Sample) -> String {
    let mut o = String::new();
    family(
        &mut o,
        "auditor_events_total",
        "counter",
        "Events analyzed, by kind.",
    );
    for (k, n) in &s.events_by_kind {
        let _ = writeln!(o, "auditor_events_total{{kind=\"{k}\"}} {n}");
    }
    family(
        &mut o,
        "auditor_events_dropped_total",
        "counter",
        "Events the kernel could not hand over, by reason; verdicts they could change are inconclusive.",
    );
    let _ = writeln!(
        o,
        "auditor_events_dropped_total{{reason=\"ring_buffer_full\"}} {}",
        s.dropped_ring_full
    );
    let _ = writeln!(
        o,
        "auditor_events_dropped_total{{reason=\"syscall_table_full\"}} {}",
        s.dropped_args_table_full
    );
    family(
        &mut o,
        "auditor_processes_untraced_total",
        "counter",
        "Processes left untraced because the kernel's traced-process table (32768) was full.",
    );
    let _ = writeln!(
        o,
        "auditor_processes_untraced_total {}",
        s.untraced_table_full
    );
    family(
        &mut o,
        "auditor_findings_total",
        "counter",
        "Durability findings raised, by rule and severity.",
    );
    for ((rule, sev), n) in &s.findings {
        let _ = writeln!(
            o,
            "auditor_findings_total{{rule=\"{}\",severity=\"{}\"}} {n}",
            label(rule),
            label(sev)
        );
    }
    family(
        &mut o,
        "auditor_inconclusive_findings_total",
        "counter",
        "Findings whose verdict missing events could have changed.",
    );
    let _ = writeln!(
        o,
        "auditor_inconclusive_findings_total {}",
        s.inconclusive_findings
    );
    family(
        &mut o,
        "auditor_tracked_processes",
        "gauge",
        "Processes being traced now.",
    );
    let _ = writeln!(o, "auditor_tracked_processes {}", s.processes_live);
    family(
        &mut o,
        "auditor_tracked_files_total",
        "counter",
        "Distinct files (on persistent filesystems) judged so far.",
    );
    let _ = writeln!(o, "auditor_tracked_files_total {}", s.files_tracked);
    family(
        &mut o,
        "auditor_evicted_inodes_total",
        "counter",
        "File states dropped to bound memory (--max-files).",
    );
    let _ = writeln!(o, "auditor_evicted_inodes_total {}", s.evicted_inodes);
    family(
        &mut o,
        "auditor_evicted_dirty_inodes_total",
        "counter",
        "File states dropped while they held unsynced data or a pending verdict: those verdicts are unknown.",
    );
    let _ = writeln!(o, "auditor_evicted_dirty_inodes_total {}", s.evicted_dirty);
    family(
        &mut o,
        "auditor_tracked_inodes",
        "gauge",
        "File states held now (at most --max-files).",
    );
    let _ = writeln!(o, "auditor_tracked_inodes {}", s.tracked_inodes);
    family(
        &mut o,
        "auditor_unsynced_bytes",
        "gauge",
        "Bytes a live traced process wrote that are not durable yet.",
    );
    for (pid, comm, bytes) in &s.unsynced {
        let _ = writeln!(
            o,
            "auditor_unsynced_bytes{{pid=\"{pid}\",comm=\"{}\"}} {bytes}",
            label(comm)
        );
    }
    family(
        &mut o,
        "auditor_oldest_unsynced_write_age_seconds",
        "gauge",
        "How long the oldest write not yet durable has waited (0 when none).",
    );
    let _ = writeln!(
        o,
        "auditor_oldest_unsynced_write_age_seconds {}",
        s.oldest_unsynced_age_s.unwrap_or(0.0)
    );
    family(
        &mut o,
        "auditor_uptime_seconds",
        "gauge",
        "Time since the probes were attached.",
    );
    let _ = writeln!(o, "auditor_uptime_seconds {}", s.uptime_s);
    o
}

/// A bound metrics endpoint; publish pages with [`Server::publish`].
pub struct Server {
    page: Arc<Mutex<String>>,
    pub addr: SocketAddr,
}

impl Server {
    /// Binds `addr` now, so a port in use fails before probes load.
    pub fn bind(addr: &str) -> Result<Server, UserError> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            UserError::new(format!(
                "--metrics-addr {addr}: cannot listen there: {e} (pick another port)"
            ))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| UserError::new(format!("--metrics-addr {addr}: {e}")))?;
        let page = Arc::new(Mutex::new(String::new()));
        let shared = page.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let _ = answer(conn, &shared);
                }
            })
            .map_err(|e| UserError::new(format!("cannot start the metrics server: {e}")))?;
        Ok(Server { page, addr: local })
    }

    pub fn publish(&self, page: String) {
        if let Ok(mut p) = self.page.lock() {
            *p = page;
        }
    }
}

/// One request, one answer, then close: scrapers need nothing more.
fn answer(mut conn: TcpStream, page: &Mutex<String>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            page.lock().map(|p| p.clone()).unwrap_or_default(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", String::new()),
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        resp.push_str(&body);
    }
    conn.write_all(resp.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn renders_labels_escaped_and_every_family_typed() {
        let mut s = Sample::default();
        s.events_by_kind.insert("write", 3);
        s.findings
            .insert(("unsynced-at-exit".into(), "medium".into()), 2);
        s.unsynced.push((7, "we\"ird\\na\nme".into(), 100));
        s.oldest_unsynced_age_s = Some(1.5);
        let page = render(&s);
        assert!(page.contains("auditor_events_total{kind=\"write\"} 3\n"));
        assert!(
            page.contains(
                "auditor_findings_total{rule=\"unsynced-at-exit\",severity=\"medium\"} 2\n"
            )
        );
        assert!(
            page.contains("auditor_unsynced_bytes{pid=\"7\",comm=\"we\\\"ird\\\\na\\nme\"} 100\n")
        );
        assert!(page.contains("auditor_oldest_unsynced_write_age_seconds 1.5\n"));
        // Every sample belongs to the family typed just before it.
        let mut typed = String::new();
        for l in page.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                typed = rest.split(' ').next().unwrap().to_owned();
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(name, typed, "{l}");
            }
        }
    }

    #[test]
    fn serves_the_latest_page_and_refuses_a_port_in_use() {
        let server = Server::bind("127.0.0.1:0").unwrap();
        server.publish("auditor_uptime_seconds 1\n".into());
        let resp = get(server.addr, "/metrics");
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(resp.ends_with("\r\n\r\nauditor_uptime_seconds 1\n"));
        assert!(get(server.addr, "/").starts_with("HTTP/1.1 404"));
        let e = Server::bind(&server.addr.to_string())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot listen there"), "{e}");
    }
}
