//! Drawing: a pure function of the [`App`] onto a frame, so the same code
//! renders into the terminal and into `TestBackend` for snapshot tests.

use auditor_analyzer::Finding;
use auditor_analyzer::calls::{human_duration, signal_name};
use auditor_analyzer::finding::Severity;
use auditor_analyzer::snapshot::ProcessState;
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap},
};

use super::app::{App, DetailFit, SPARK_SAMPLES, Tab, severity_label};

pub fn severity_style(s: Severity) -> Style {
    match s {
        Severity::High => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Severity::Medium => Style::new().fg(Color::Yellow),
        Severity::Low => Style::new().fg(Color::Cyan),
    }
}

/// `4.0 KiB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn clock(d: std::time::Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

/// `path` in at most `width` characters, cut in the middle so the file
/// name stays: `/var/lib/docker/…/layer.tar`.
pub fn middle(path: &str, width: usize) -> String {
    let chars: Vec<char> = path.chars().collect();
    let n = chars.len();
    if n <= width {
        return path.to_string();
    }
    if width < 4 {
        return chars[..width].iter().collect();
    }
    let budget = width - 1;
    let name = chars
        .iter()
        .rev()
        .position(|&c| c == '/')
        .map_or(n, |i| i + 1);
    // Keep the whole name (with its slash) and a little of the start when
    // it fits; else a third of the start and the end of the name.
    let head = if name + 4 <= budget {
        budget - name
    } else {
        budget / 3
    };
    let tail = budget - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[n - tail..]);
    out
}

/// Widths the table gives its columns in `area` (as [`table`] lays them
/// out: one column of spacing, one for the selection mark).
/// A column of a pane's table: its header and its width.
type Column = (&'static str, Constraint);

fn column_widths(area: Rect, columns: &[Column]) -> Vec<usize> {
    let inner = Rect {
        width: area.width.saturating_sub(1),
        ..area
    };
    Layout::horizontal(columns.iter().map(|c| c.1))
        .spacing(1)
        .split(inner)
        .iter()
        .map(|r| r.width as usize)
        .collect()
}

fn pid_comm(pid: u32, comm: &str) -> String {
    format!("{pid} {comm}")
}

pub fn state_text(s: &ProcessState) -> String {
    match s {
        ProcessState::Running => "running".into(),
        ProcessState::Exited { code: Some(c), .. } => format!("exited ({c})"),
        ProcessState::Exited { code: None, .. } => "exited".into(),
        ProcessState::Killed { signal, by, .. } => match by {
            Some((pid, comm)) => format!("killed by {} from {pid} ({comm})", signal_name(*signal)),
            None => format!("killed by {}", signal_name(*signal)),
        },
    }
}

pub fn render(f: &mut Frame, app: &App) {
    let [header, tabs, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(f.area());
    render_header(f, header, app);
    render_tabs(f, tabs, app);
    match app.tab {
        Tab::Findings if app.detail => {
            let [list, detail] =
                Layout::vertical([Constraint::Percentage(35), Constraint::Min(5)]).areas(body);
            render_findings(f, list, app);
            render_detail(f, detail, app);
        }
        Tab::Findings => render_findings(f, body, app),
        Tab::Files => render_files(f, body, app),
        Tab::Processes => {
            let [list, spark] =
                Layout::vertical([Constraint::Min(3), Constraint::Length(5)]).areas(body);
            render_processes(f, list, app);
            render_sparkline(f, spark, app);
        }
        Tab::Signals => render_signals(f, body, app),
    }
    render_footer(f, footer, app);
    if app.help {
        render_help(f);
    }
}

fn render_header(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.snapshot;
    let mut title = vec![
        Span::styled(" auditor ", Style::new().reversed().bold()),
        Span::raw(" "),
        Span::raw(app.target.clone()).bold(),
    ];
    if app.paused {
        title.push(Span::raw("  "));
        title.push(Span::styled(" PAUSED ", Style::new().black().on_yellow()));
    }
    let dropped = s.stats.lost_events;
    let dropped_style = if dropped > 0 {
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    let c = s.severity;
    let stats = vec![
        Span::raw(format!(" {} ", clock(app.elapsed))),
        Span::raw(format!(" {} ev/s ", rate(app.events_per_sec))).dim(),
        Span::styled(format!(" dropped {dropped} "), dropped_style),
        Span::raw(" findings "),
        Span::styled(format!("{} high", c.high), severity_style(Severity::High)),
        Span::raw(" "),
        Span::styled(
            format!("{} med", c.medium),
            severity_style(Severity::Medium),
        ),
        Span::raw(" "),
        Span::styled(format!("{} low", c.low), severity_style(Severity::Low)),
    ];
    f.render_widget(
        Paragraph::new(vec![Line::from(title), Line::from(stats)]),
        area,
    );
}

fn render_tabs(f: &mut Frame, area: Rect, app: &App) {
    let counts = [
        app.findings().len(),
        app.files().len(),
        app.processes().len(),
        app.signals().len(),
    ];
    let mut spans = Vec::new();
    for (tab, n) in Tab::ALL.iter().zip(counts) {
        let text = format!(" {} {n} ", tab.title());
        spans.push(if *tab == app.tab {
            Span::styled(text, Style::new().reversed().bold())
        } else {
            Span::raw(text)
        });
    }
    spans.push(Span::raw(format!(" sort:{}", app.sort(app.tab).label())).dim());
    if !app.filter.is_empty() {
        spans.push(Span::styled(
            format!(" filter:{}", app.filter),
            Style::new().fg(Color::Magenta),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A pane's rows under its columns' headers, the `selected` one
/// highlighted; while there are none, `empty` says so under the headers.
fn render_table(
    f: &mut Frame,
    area: Rect,
    columns: &[Column],
    rows: Vec<Row>,
    selected: usize,
    empty: &str,
) {
    let none = rows.is_empty();
    let t = Table::new(rows, columns.iter().map(|c| c.1))
        .header(Row::new(columns.iter().map(|c| c.0)).style(Style::new().bold().underlined()))
        .column_spacing(1)
        .row_highlight_style(Style::new().reversed())
        .highlight_symbol(">");
    let mut state = TableState::default().with_selected(Some(selected));
    f.render_stateful_widget(t, area, &mut state);
    if none && area.height > 2 {
        let msg = Rect {
            y: area.y + 2,
            height: 1,
            ..area
        };
        f.render_widget(Paragraph::new(empty.to_string()).dim(), msg);
    }
}

fn render_findings(f: &mut Frame, area: Rect, app: &App) {
    let columns = [
        ("SEV", Constraint::Length(4)),
        ("RULE", Constraint::Length(25)),
        ("PATH", Constraint::Fill(1)),
        ("PROCESS", Constraint::Length(16)),
    ];
    let path_width = column_widths(area, &columns)[2];
    let rows: Vec<Row> = app
        .findings()
        .into_iter()
        .map(|(_, x)| {
            let sev = Cell::from(severity_label(x.severity)).style(severity_style(x.severity));
            let mut rule = x.rule.clone();
            if x.inconclusive {
                rule.push('?');
            }
            Row::new(vec![
                sev,
                Cell::from(rule),
                Cell::from(middle(&x.path, path_width)),
                Cell::from(pid_comm(x.process.pid, &x.process.comm)),
            ])
        })
        .collect();
    let selected = app.selected(Tab::Findings);
    render_table(f, area, &columns, rows, selected, "no findings yet");
}

/// The calls that led to the finding (times relative to the first), then
/// the evidence: the calls first, as they explain the most in few lines.
fn detail_lines(x: &Finding) -> Vec<Line<'static>> {
    let mut lines = vec![
        Line::from(vec![
            Span::styled(
                format!("{} ", severity_label(x.severity)),
                severity_style(x.severity),
            ),
            Span::raw(x.rule.clone()).bold(),
            Span::raw(format!("  {}", x.path)),
        ]),
        Line::from(x.summary.clone()),
        Line::from(format!(
            "process {} ({}){}",
            x.process.pid,
            x.process.comm,
            x.process
                .exe
                .as_ref()
                .map(|e| format!(" {e}"))
                .unwrap_or_default()
        )),
    ];
    if let Some(why) = &x.inconclusive_reason {
        lines.push(Line::styled(
            format!("inconclusive: {why}"),
            Style::new().fg(Color::Yellow),
        ));
    }
    if let Some(stack) = &x.stack {
        lines.push(Line::from("Where").bold());
        if let Some(i) = &stack.interpreter {
            lines.push(
                Line::from(format!(
                    "  {}: the interpreter's native frames",
                    i.describe()
                ))
                .dim(),
            );
        }
        for f in stack.program_frames(DETAIL_FRAMES) {
            lines.push(Line::from(format!("  {}", f.describe())));
        }
    }
    if !x.calls.is_empty() {
        lines.push(Line::from("Timeline").bold());
        let t0 = x.calls[0].ts_ns;
        for c in &x.calls {
            lines.push(Line::from(vec![
                Span::raw(format!(
                    "  +{:<8} ",
                    human_duration(c.ts_ns.saturating_sub(t0))
                ))
                .dim(),
                Span::raw(format!("{} {} ", c.pid, c.comm)).dim(),
                Span::raw(c.call.clone()),
            ]));
        }
    }
    if !x.evidence.is_empty() {
        lines.push(Line::from("Evidence").bold());
        for (k, v) in &x.evidence {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            lines.push(Line::from(vec![
                Span::raw(format!("  {k}: ")).dim(),
                Span::raw(v),
            ]));
        }
    }
    lines
}

/// Frames of a finding's stack its detail shows (the JSON report has all).
const DETAIL_FRAMES: usize = 8;

fn render_detail(f: &mut Frame, area: Rect, app: &App) {
    let lines = app
        .selected_finding()
        .map(detail_lines)
        .unwrap_or_else(|| vec![Line::from("no finding selected").dim()]);
    let text = Paragraph::new(lines).wrap(Wrap { trim: false });
    // The top border takes one line.
    let shown = area.height.saturating_sub(1);
    let total = u16::try_from(text.line_count(area.width)).unwrap_or(u16::MAX);
    let max_scroll = total.saturating_sub(shown);
    app.detail_fit.set(DetailFit {
        max_scroll,
        page: shown.saturating_sub(1),
    });
    let scroll = app.detail_scroll.min(max_scroll);
    let title = if max_scroll == 0 {
        " Detail (Esc closes) ".to_string()
    } else {
        format!(
            " Detail (Esc closes, PgUp/PgDn scroll) lines {}-{} of {total} ",
            scroll + 1,
            scroll + shown
        )
    };
    let block = Block::default().borders(Borders::TOP).title(title);
    f.render_widget(text.block(block).scroll((scroll, 0)), area);
}

fn render_files(f: &mut Frame, area: Rect, app: &App) {
    let columns = [
        ("PATH", Constraint::Fill(3)),
        ("UNSYNCED", Constraint::Length(9)),
        ("AGE", Constraint::Length(7)),
        ("FSYNCS", Constraint::Length(6)),
        ("WRITERS", Constraint::Length(12)),
        ("LAST OP", Constraint::Fill(2)),
    ];
    let path_width = column_widths(area, &columns)[0];
    let rows: Vec<Row> = app
        .files()
        .into_iter()
        .map(|x| {
            let unsynced = Cell::from(bytes(x.unsynced_bytes)).style(if x.unsynced_bytes > 0 {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new().dim()
            });
            let writers = x
                .writers
                .iter()
                .map(|(pid, comm)| pid_comm(*pid, comm))
                .collect::<Vec<_>>()
                .join(",");
            Row::new(vec![
                Cell::from(middle(&x.path, path_width)),
                unsynced,
                Cell::from(x.unsynced_age_ns.map(human_duration).unwrap_or_default()),
                Cell::from(x.syncs.to_string()),
                Cell::from(writers),
                Cell::from(x.last_op.clone().unwrap_or_default()),
            ])
        })
        .collect();
    let selected = app.selected(Tab::Files);
    render_table(f, area, &columns, rows, selected, "no files written yet");
}

fn render_processes(f: &mut Frame, area: Rect, app: &App) {
    let columns = [
        ("PID", Constraint::Length(7)),
        ("COMM", Constraint::Length(15)),
        ("FILES", Constraint::Length(5)),
        ("UNSYNCED", Constraint::Length(9)),
        ("STATE", Constraint::Fill(1)),
    ];
    let rows: Vec<Row> = app
        .processes()
        .into_iter()
        .map(|p| {
            let style = match p.state {
                ProcessState::Running => Style::new(),
                ProcessState::Exited { .. } => Style::new().dim(),
                ProcessState::Killed { .. } => Style::new().fg(Color::Red),
            };
            Row::new(vec![
                Cell::from(p.pid.to_string()),
                Cell::from(p.comm.clone()),
                Cell::from(p.open_files.to_string()),
                Cell::from(bytes(p.unsynced_bytes)),
                Cell::from(state_text(&p.state)).style(style),
            ])
        })
        .collect();
    let selected = app.selected(Tab::Processes);
    render_table(f, area, &columns, rows, selected, "no process traced yet");
}

fn render_sparkline(f: &mut Frame, area: Rect, app: &App) {
    let Some(p) = app.selected_process() else {
        f.render_widget(
            Block::default()
                .borders(Borders::TOP)
                .title(" Unsynced bytes "),
            area,
        );
        return;
    };
    let history = app.history(p.pid);
    let width = area.width as usize;
    let shown = &history[history.len().saturating_sub(width.min(SPARK_SAMPLES))..];
    let max = shown
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(p.unsynced_bytes);
    let block = Block::default().borders(Borders::TOP).title(format!(
        " Unsynced bytes of {} ({}): now {}, peak {} ",
        p.pid,
        p.comm,
        bytes(p.unsynced_bytes),
        bytes(max)
    ));
    f.render_widget(
        Sparkline::default()
            .block(block)
            .data(shown)
            .max(max.max(1))
            .style(Style::new().fg(Color::Yellow)),
        area,
    );
}

fn render_signals(f: &mut Frame, area: Rect, app: &App) {
    let columns = [
        ("WHEN", Constraint::Length(12)),
        ("FROM", Constraint::Fill(1)),
        ("SIGNAL", Constraint::Length(9)),
        ("TO", Constraint::Fill(1)),
        ("RESULT", Constraint::Length(15)),
    ];
    let now = app.snapshot.now_ns;
    let rows: Vec<Row> = app
        .signals()
        .into_iter()
        .map(|s| {
            let result = match s.result {
                0 => "delivered",
                1 => "ignored",
                2 => "already pending",
                _ => "lost",
            };
            Row::new(vec![
                Cell::from(format!(
                    "{} ago",
                    human_duration(now.saturating_sub(s.ts_ns))
                )),
                Cell::from(pid_comm(s.sender_pid, &s.sender_comm)),
                Cell::from(signal_name(s.signal)).style(Style::new().bold()),
                Cell::from(pid_comm(s.target_pid, &s.target_comm)),
                Cell::from(result),
            ])
        })
        .collect();
    let selected = app.selected(Tab::Signals);
    render_table(
        f,
        area,
        &columns,
        rows,
        selected,
        "no signals sent by traced processes",
    );
}

fn render_footer(f: &mut Frame, area: Rect, app: &App) {
    let first = if app.editing_filter {
        Line::from(vec![
            Span::styled(format!("/{}", app.filter), Style::new().fg(Color::Magenta)),
            Span::raw("_  Enter keep, Esc clear").dim(),
        ])
    } else if let Some(n) = &app.notice {
        Line::from(n.clone()).bold()
    } else {
        Line::from(
            "Tab:pane ↑↓/jk:move Enter:detail /:filter s:sort p:pause e:export ?:help q:quit",
        )
        .dim()
    };
    let state = match &app.capture_ended {
        Some(how) => Span::styled(format!("{how}  "), Style::new().fg(Color::Green)),
        None => Span::raw("tracing  "),
    };
    let second = Line::from(vec![
        state,
        Span::raw(format!("command output: {}", app.output_note)).dim(),
    ]);
    f.render_widget(Paragraph::new(vec![first, second]), area);
}

fn render_help(f: &mut Frame) {
    let lines = [
        "Tab / Shift-Tab, ← → h l   switch pane",
        "↑ ↓ j k, PgUp PgDn, g G    move the selection",
        "Enter                      open/close the finding's detail",
        "PgUp PgDn, Space           scroll the open detail",
        "/                          filter by path or comm (Esc clears)",
        "s                          change the sort of this pane",
        "p                          pause the view (capture goes on)",
        "e                          export the current report (JSON)",
        "q, Ctrl-C                  quit and write the report",
        "",
        "Quitting while the command runs sends SIGTERM to every traced",
        "process, then SIGKILL to those left after 2 s.",
    ];
    let area = f.area();
    let w = (lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u16 + 4).min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines.iter().map(|l| Line::from(*l)).collect::<Vec<_>>())
            .block(Block::bordered().title(" Keys (any key closes) ")),
        rect,
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_paths_are_cut_in_the_middle_keeping_the_file_name() {
        let p = "/var/lib/docker/overlay2/0123456789abcdef/diff/etc/config.json";
        assert_eq!(middle(p, 80), p, "fits: unchanged");
        let cut = middle(p, 30);
        assert_eq!(cut.chars().count(), 30);
        assert!(cut.ends_with("/config.json"), "{cut}");
        assert!(cut.starts_with("/var/lib/"), "{cut}");
        assert!(cut.contains('…'));
        // A name longer than the room keeps both ends of it.
        let long = format!("/d/{}", "n".repeat(50));
        let cut = middle(&long, 20);
        assert_eq!(cut.chars().count(), 20);
        assert!(cut.starts_with("/d/") && cut.ends_with("nnn"), "{cut}");
        assert_eq!(middle("/abcdef", 3), "/ab");
    }

    use std::time::Duration;

    use auditor_analyzer::snapshot::SignalView;
    use insta::assert_snapshot;
    use ratatui::{Terminal, backend::TestBackend, crossterm::event::KeyCode};
    use serde_json::json;

    use super::*;
    use crate::tui::app::Msg;
    use crate::tui::app::tests::{file, finding, key, process, snapshot_with};
    use auditor_analyzer::CallRef;

    const MS: u64 = 1_000_000;

    fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| render(f, app)).unwrap();
        t
    }

    fn app() -> App {
        let mut app = App::new("python3 save.py", "/tmp/out/report.cmd.log");
        app.update(Msg::Tick(Duration::from_secs(75)));
        app
    }

    fn call(seq: u64, ts_ms: u64, text: &str) -> CallRef {
        CallRef {
            seq,
            ts_ns: ts_ms * MS,
            pid: 4242,
            tid: 4242,
            comm: "python3".into(),
            call: text.into(),
            stack: None,
        }
    }

    /// A state after a save that renamed its temp file without fsync, and a
    /// worker killed by its parent while data was unsynced.
    fn busy() -> App {
        let mut rename = finding(
            "rename-without-fsync",
            Severity::High,
            "/data/state.json",
            4242,
            "python3",
        );
        rename.summary = "renamed over /data/state.json with 6 bytes never fsynced".into();
        rename.evidence.insert("unsynced_bytes".into(), json!(6));
        rename.evidence.insert("fs".into(), json!("ext4"));
        rename.calls = vec![
            call(
                3,
                1000,
                "openat(\"/data/state.json.tmp\", O_WRONLY|O_CREAT|O_TRUNC) = 3",
            ),
            call(4, 1001, "write(fd=3, 6) = 6"),
            call(
                5,
                1003,
                "rename(\"/data/state.json.tmp\", \"/data/state.json\") = 0",
            ),
        ];
        let killed = finding(
            "killed-while-dirty",
            Severity::High,
            "/data/journal",
            4250,
            "worker",
        );
        let low = finding(
            "create-without-dir-fsync",
            Severity::Low,
            "/data/new.log",
            4242,
            "python3",
        );
        let mut s = snapshot_with(vec![low, rename, killed], 1234);
        s.now_ns = 5000 * MS;
        s.files = vec![
            file("/data/journal", 8192, 2500, 0),
            file("/data/state.json", 6, 4000, 0),
            file("/data/settled", 0, 0, 4),
        ];
        s.processes = vec![
            process(4242, "python3", 6, ProcessState::Running),
            process(
                4250,
                "worker",
                8192,
                ProcessState::Killed {
                    signal: 9,
                    by: Some((4242, "python3".into())),
                    ts_ns: 4900 * MS,
                },
            ),
            process(
                4251,
                "gzip",
                0,
                ProcessState::Exited {
                    code: Some(0),
                    ts_ns: 4000 * MS,
                },
            ),
        ];
        s.signals = vec![SignalView {
            ts_ns: 4899 * MS,
            signal: 9,
            sender_pid: 4242,
            sender_comm: "python3".into(),
            target_pid: 4250,
            target_comm: "worker".into(),
            result: 0,
        }];
        let mut app = app();
        app.update(Msg::Snapshot(Box::new(s)));
        app
    }

    #[test]
    fn empty_start() {
        assert_snapshot!(draw(&app(), 80, 24).backend());
    }

    #[test]
    fn rename_without_fsync_selected_with_detail() {
        let mut app = busy();
        app.update(key(KeyCode::Down));
        app.update(key(KeyCode::Enter));
        assert_eq!(app.selected_finding().unwrap().rule, "rename-without-fsync");
        assert_snapshot!(draw(&app, 100, 30).backend());
    }

    #[test]
    fn killed_process() {
        let mut app = busy();
        app.update(key(KeyCode::Tab));
        app.update(key(KeyCode::Tab));
        app.update(key(KeyCode::Down));
        assert_snapshot!(draw(&app, 100, 20).backend());
    }

    #[test]
    fn signals_pane() {
        let mut app = busy();
        app.update(key(KeyCode::BackTab));
        assert_snapshot!(draw(&app, 100, 12).backend());
    }

    #[test]
    fn filtered_files() {
        let mut app = busy();
        app.update(key(KeyCode::Tab));
        app.update(key(KeyCode::Char('/')));
        for c in "state".chars() {
            app.update(key(KeyCode::Char(c)));
        }
        assert_snapshot!(draw(&app, 100, 14).backend());
    }

    #[test]
    fn everything_at_80x24_with_help() {
        let mut app = busy();
        app.update(key(KeyCode::Enter));
        assert_snapshot!("detail_80x24", draw(&app, 80, 24).backend());
        app.update(key(KeyCode::Char('?')));
        assert_snapshot!("help_80x24", draw(&app, 80, 24).backend());
    }

    /// The detail says where in the code the call was made: the program's
    /// own frames, past the C library's wrapper.
    #[test]
    fn detail_shows_where_in_the_code() {
        use auditor_analyzer::stack::{Frame, Stack};
        let mut f = finding(
            "rename-without-fsync",
            Severity::High,
            "/data/state.json",
            42,
            "app",
        );
        let frame = |function: &str, file: &str, line: u32, object: &str| Frame {
            address: 1,
            function: Some(function.into()),
            file: Some(file.into()),
            line: Some(line),
            object: Some(object.into()),
            offset: Some(1),
            inlined: false,
        };
        f.stack = Some(std::sync::Arc::new(Stack {
            frames: vec![
                frame(
                    "rename",
                    "rename.c",
                    29,
                    "/usr/lib/x86_64-linux-gnu/libc.so.6",
                ),
                frame("save_state", "src/state.c", 42, "/opt/app"),
                frame("main", "src/main.c", 10, "/opt/app"),
            ],
            ..Stack::default()
        }));
        let text: Vec<String> = detail_lines(&f).iter().map(|l| l.to_string()).collect();
        let at = text
            .iter()
            .position(|l| l == "Where")
            .expect("a Where section");
        assert_eq!(text[at + 1], "  save_state (src/state.c:42)");
        assert_eq!(text[at + 2], "  main (src/main.c:10)");
    }

    /// A detail longer than its pane scrolls to its last line and no
    /// further; picking another finding starts it at its top again.
    #[test]
    fn detail_scrolls_to_its_end_and_no_further() {
        let mut journal = finding(
            "unsynced-at-exit",
            Severity::Medium,
            "/data/journal",
            4242,
            "python3",
        );
        journal.calls = (0..24)
            .map(|i| {
                call(
                    10 + i,
                    1000 + i,
                    &format!("write(fd=3, 512) = 512 (record {i})"),
                )
            })
            .collect();
        journal
            .evidence
            .insert("unsynced_bytes".into(), json!(12288));
        journal
            .evidence
            .insert("unsynced_ranges".into(), json!([[0, 12288]]));
        let other = finding(
            "create-without-dir-fsync",
            Severity::Low,
            "/data/a",
            4242,
            "python3",
        );
        let mut app = app();
        app.update(Msg::Snapshot(Box::new(snapshot_with(
            vec![other, journal],
            0,
        ))));
        app.update(key(KeyCode::Enter));
        assert_eq!(app.selected_finding().unwrap().path, "/data/journal");
        draw(&app, 80, 24);
        let fit = app.detail_fit.get();
        assert!(fit.max_scroll > 0, "the detail overflows at 80x24: {fit:?}");
        for _ in 0..20 {
            app.update(key(KeyCode::PageDown));
        }
        assert_eq!(app.detail_scroll, fit.max_scroll);
        assert_snapshot!("detail_80x24_scrolled_to_end", draw(&app, 80, 24).backend());
        app.update(key(KeyCode::PageUp));
        assert_eq!(app.detail_scroll, fit.max_scroll.saturating_sub(fit.page));
        app.update(key(KeyCode::Down));
        assert_eq!(app.detail_scroll, 0);
        assert_eq!(
            app.selected_finding().unwrap().path,
            "/data/a",
            "the arrows still pick findings"
        );
    }

    #[test]
    fn sparkline_follows_the_selected_process() {
        let mut app = app();
        for i in 0..30u64 {
            let mut s = snapshot_with(vec![], 0);
            s.processes = vec![process(7, "app", i * 100, ProcessState::Running)];
            app.update(Msg::Snapshot(Box::new(s)));
        }
        app.update(key(KeyCode::Tab));
        app.update(key(KeyCode::Tab));
        assert_snapshot!(draw(&app, 80, 12).backend());
    }

    #[test]
    fn dropped_events_are_red_only_when_non_zero() {
        let mut app = app();
        let t = draw(&app, 80, 24);
        let buf = t.backend().buffer();
        let x = (0..80u16).find(|&x| buf[(x, 1)].symbol() == "d").unwrap();
        assert_ne!(buf[(x, 1)].fg, Color::Red);
        let mut s = snapshot_with(vec![], 0);
        s.stats.lost_events = 17;
        app.update(Msg::Snapshot(Box::new(s)));
        let t = draw(&app, 80, 24);
        let buf = t.backend().buffer();
        assert_eq!(buf[(x, 1)].fg, Color::Red);
        let line: String = (0..80u16)
            .map(|x| buf[(x, 1)].symbol().to_string())
            .collect();
        assert!(line.contains("dropped 17"), "{line}");
    }

    #[test]
    fn tiny_and_huge_terminals_do_not_panic() {
        let mut app = busy();
        app.update(key(KeyCode::Enter));
        for (w, h) in [(1, 1), (20, 5), (80, 24), (300, 100)] {
            draw(&app, w, h);
        }
        app.update(key(KeyCode::Char('?')));
        draw(&app, 10, 4);
    }
}
