//! Prometheus text exposition (format 0.0.4) of a running attach, served at
//! `/metrics` by hyper on a single-threaded tokio runtime of its own thread.
//! The capture loop renders the page about once a second and the server
//! hands out the latest copy, so a scrape never touches the analyzer.
//! Connections are served concurrently, each with a deadline, and their
//! number is capped: an idle or slow client cannot delay a scrape or pile
//! up. Every label value comes from a bounded set, so no series multiplies
//! with the processes a host runs.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fmt::Write as _,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::Duration,
};

use auditor_analyzer::event::EventKind;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::error::UserError;

/// Time a client gets to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a whole connection may take, answer included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; past it new ones are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Commands shown with their own unsynced-bytes series (the largest); the
/// total over every process is a series of its own.
const UNSYNCED_SERIES: usize = 10;

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
        EventKind::Chroot { .. } => "chroot",
        EventKind::PivotRoot { .. } => "pivot_root",
        EventKind::Mount { .. } => "mount",
        EventKind::Umount { .. } => "umount",
        EventKind::Unshare { .. } => "unshare",
        EventKind::Setns { .. } => "setns",
        EventKind::View { .. } => "view",
        EventKind::Stack { .. } => "stack",
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
        "Bytes live traced processes of a command wrote that are not durable yet (the commands with the most).",
    );
    for (comm, bytes) in unsynced_by_comm(&s.unsynced) {
        let _ = writeln!(
            o,
            "auditor_unsynced_bytes{{comm=\"{}\"}} {bytes}",
            label(&comm)
        );
    }
    family(
        &mut o,
        "auditor_unsynced_bytes_all_processes",
        "gauge",
        "Bytes every live traced process wrote that are not durable yet.",
    );
    let _ = writeln!(
        o,
        "auditor_unsynced_bytes_all_processes {}",
        s.unsynced.iter().map(|u| u.2).sum::<u64>()
    );
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
    family(
        &mut o,
        "auditor_build_info",
        "gauge",
        "The auditor serving these metrics; always 1.",
    );
    let _ = writeln!(
        o,
        "auditor_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    o
}

/// Unsynced bytes summed per command, the largest first, at most
/// [`UNSYNCED_SERIES`] of them: a pid label would make a new series for
/// every process a daemon forks.
fn unsynced_by_comm(unsynced: &[(u32, String, u64)]) -> Vec<(String, u64)> {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, comm, bytes) in unsynced {
        *by.entry(comm.as_str()).or_default() += bytes;
    }
    let mut v: Vec<(String, u64)> = by.into_iter().map(|(c, b)| (c.to_owned(), b)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(UNSYNCED_SERIES);
    v
}

/// The warning for an address other hosts can reach: the page names the
/// commands running here and what they lose, and has no authentication.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "warning: --metrics-addr {addr} serves metrics (command names, findings) without authentication to every host that can reach it; use 127.0.0.1 unless that is intended"
        )
    })
}

/// A bound metrics endpoint; publish pages with [`Server::publish`].
pub struct Server {
    page: Arc<Mutex<String>>,
    pub addr: SocketAddr,
}

impl Server {
    /// Binds `addr` now, so a port in use fails before probes load; warns
    /// on stderr when other hosts can reach it.
    pub fn bind(addr: &str) -> Result<Server, UserError> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            UserError::new(format!(
                "--metrics-addr {addr}: cannot listen there: {e} (pick another port)"
            ))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| UserError::new(format!("--metrics-addr {addr}: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| UserError::new(format!("--metrics-addr {addr}: {e}")))?;
        if let Some(w) = exposure_warning(local) {
            eprintln!("auditor: {w}");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| UserError::new(format!("cannot start the metrics server: {e}")))?;
        let page = Arc::new(Mutex::new(String::new()));
        let shared = page.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || runtime.block_on(serve(listener, shared)))
            .map_err(|e| UserError::new(format!("cannot start the metrics server: {e}")))?;
        Ok(Server { page, addr: local })
    }

    pub fn publish(&self, page: String) {
        if let Ok(mut p) = self.page.lock() {
            *p = page;
        }
    }
}

/// Accepts for as long as the process runs; each connection is a task of
/// its own with a deadline.
async fn serve(listener: TcpListener, page: Arc<Mutex<String>>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of fds, say: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let page = page.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let page = page.clone();
                async move { Ok::<_, Infallible>(answer(&req, &page)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .title_case_headers(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

/// One request, one answer, then close: scrapers need nothing more.
fn answer(req: &Request<Incoming>, page: &Mutex<String>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
        r
    };
    let readable = matches!(*req.method(), Method::GET | Method::HEAD);
    match (readable, req.uri().path()) {
        (true, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            page.lock().map(|p| p.clone()).unwrap_or_default(),
        ),
        (true, _) => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "metrics are at /metrics\n".into(),
        ),
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        io::{Read, Write},
        net::TcpStream,
        time::Instant,
    };

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
        s.unsynced.push((8, "we\"ird\\na\nme".into(), 20));
        s.oldest_unsynced_age_s = Some(1.5);
        let page = render(&s);
        assert!(page.contains("auditor_events_total{kind=\"write\"} 3\n"));
        assert!(
            page.contains(
                "auditor_findings_total{rule=\"unsynced-at-exit\",severity=\"medium\"} 2\n"
            )
        );
        assert!(page.contains("auditor_unsynced_bytes{comm=\"we\\\"ird\\\\na\\nme\"} 120\n"));
        assert!(page.contains("auditor_unsynced_bytes_all_processes 120\n"));
        assert!(page.contains(&format!(
            "auditor_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
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

    #[test]
    fn series_stay_bounded_however_many_processes_run() {
        let mut s = Sample::default();
        for pid in 0..1000 {
            s.unsynced
                .push((pid, format!("worker-{}", pid % 50), 1 + u64::from(pid)));
        }
        let page = render(&s);
        let series: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with("auditor_unsynced_bytes{"))
            .collect();
        assert_eq!(series.len(), UNSYNCED_SERIES, "{series:#?}");
        assert!(!page.contains("pid="), "{page}");
        // The largest first: worker-49 has pids 49, 99, ..., 999.
        assert!(series[0].starts_with("auditor_unsynced_bytes{comm=\"worker-49\"}"));
        let total: u64 = (1..=1000).sum();
        assert!(page.contains(&format!("auditor_unsynced_bytes_all_processes {total}\n")));
    }

    #[test]
    fn idle_connections_neither_delay_a_scrape_nor_stay_open() {
        let server = Server::bind("127.0.0.1:0").unwrap();
        server.publish("auditor_uptime_seconds 1\n".into());
        let idle: Vec<TcpStream> = (0..10)
            .map(|_| TcpStream::connect(server.addr).unwrap())
            .collect();
        let t = Instant::now();
        let mut c = TcpStream::connect(server.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp:?}");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a scrape behind 10 idle connections took {:?}",
            t.elapsed()
        );
        // Each idle one is closed once its time to send a request is up.
        for mut conn in idle {
            conn.set_read_timeout(Some(HEADER_TIMEOUT * 3)).unwrap();
            let mut buf = Vec::new();
            assert!(conn.read_to_end(&mut buf).is_ok(), "closed by the server");
        }
        assert!(t.elapsed() < HEADER_TIMEOUT * 3);
    }

    #[test]
    fn only_loopback_goes_without_a_warning() {
        for quiet in ["127.0.0.1:9464", "[::1]:9464"] {
            assert_eq!(exposure_warning(quiet.parse().unwrap()), None, "{quiet}");
        }
        for loud in ["0.0.0.0:9464", "[::]:9464", "192.0.2.1:9464"] {
            let w = exposure_warning(loud.parse().unwrap()).unwrap();
            assert!(
                w.contains("without authentication") && w.contains("127.0.0.1"),
                "{w}"
            );
        }
    }
}
