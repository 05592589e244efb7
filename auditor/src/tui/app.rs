//! The UI's state and its one update function (Elm style): messages in,
//! state and an effect out. Nothing here draws or touches the terminal, so
//! every key binding is tested without rendering.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use auditor_analyzer::Finding;
use auditor_analyzer::finding::Severity;
use auditor_analyzer::report::groups::escape;
use auditor_analyzer::snapshot::{FileView, ProcessState, ProcessView, SignalView, Snapshot};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Samples of unsynced bytes kept per process for the sparkline (at 10 Hz,
/// about 25 s; wider terminals show the newest part that fits).
pub const SPARK_SAMPLES: usize = 256;
/// Processes with a sparkline history; later ones go without one, so a
/// fork storm cannot grow the UI's memory.
const SPARK_PROCESSES: usize = 512;
/// Window over which events per second are measured.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// How the detail pane's text fit at the last draw: only the view knows
/// the pane's size, and the scroll keys need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetailFit {
    /// Lines below the pane when scrolled to the top (0: it all fits).
    pub max_scroll: u16,
    /// Lines one page scrolls by.
    pub page: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Findings,
    Files,
    Processes,
    Signals,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Findings, Tab::Files, Tab::Processes, Tab::Signals];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Findings => "Findings",
            Tab::Files => "Files",
            Tab::Processes => "Processes",
            Tab::Signals => "Signals",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn step(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        Tab::ALL[((self.index() as isize + by).rem_euclid(n)) as usize]
    }
}

/// Orders the rows of the current tab; `s` cycles through the tab's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Newest,
    Severity,
    Unsynced,
    Age,
    Path,
    Syncs,
    Pid,
    OpenFiles,
}

impl Sort {
    pub fn label(self) -> &'static str {
        match self {
            Sort::Newest => "newest",
            Sort::Severity => "severity",
            Sort::Unsynced => "unsynced bytes",
            Sort::Age => "age",
            Sort::Path => "path",
            Sort::Syncs => "fsyncs",
            Sort::Pid => "pid",
            Sort::OpenFiles => "open files",
        }
    }

    fn choices(tab: Tab) -> &'static [Sort] {
        match tab {
            Tab::Findings => &[Sort::Severity, Sort::Newest],
            Tab::Files => &[Sort::Unsynced, Sort::Age, Sort::Path, Sort::Syncs],
            Tab::Processes => &[Sort::Pid, Sort::Unsynced, Sort::OpenFiles],
            Tab::Signals => &[Sort::Newest],
        }
    }
}

/// Everything that changes the UI.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    /// Time since the UI started (injected, so views render the same in tests).
    Tick(Duration),
    Snapshot(Box<Snapshot>),
    /// The traced workload ended; the text says how.
    CaptureEnded(String),
    /// A one-line notice for the footer (export done or failed).
    Notice(String),
}

/// What the caller must do after an update.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    Export,
}

/// A row's identity, so the selection follows the same item while new
/// data reorders the list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RowKey {
    Finding(usize),
    Path(String),
    Pid(u32),
    Signal(u64, u32),
}

#[derive(Clone, Debug, Default)]
struct Selection {
    index: usize,
    key: Option<RowKey>,
}

pub struct App {
    /// What is traced (`python3 app.py`, `pid 1234`).
    pub target: String,
    /// Where the traced command's own output goes.
    pub output_note: String,
    pub snapshot: Snapshot,
    pub elapsed: Duration,
    pub tab: Tab,
    sorts: [Sort; 4],
    selections: [Selection; 4],
    /// The finding detail pane is open.
    pub detail: bool,
    /// Lines the detail pane is scrolled down by.
    pub detail_scroll: u16,
    pub detail_fit: Cell<DetailFit>,
    pub filter: String,
    pub editing_filter: bool,
    pub paused: bool,
    pub help: bool,
    pub notice: Option<String>,
    pub capture_ended: Option<String>,
    pub events_per_sec: f64,
    rate: VecDeque<(Duration, u64)>,
    history: HashMap<u32, VecDeque<u64>>,
}

impl App {
    pub fn new(target: impl Into<String>, output_note: impl Into<String>) -> App {
        App {
            target: escape(&target.into()).into_owned(),
            output_note: escape(&output_note.into()).into_owned(),
            snapshot: Snapshot::default(),
            elapsed: Duration::ZERO,
            tab: Tab::Findings,
            sorts: [Sort::Severity, Sort::Unsynced, Sort::Pid, Sort::Newest],
            selections: Default::default(),
            detail: false,
            detail_scroll: 0,
            detail_fit: Cell::new(DetailFit::default()),
            filter: String::new(),
            editing_filter: false,
            paused: false,
            help: false,
            notice: None,
            capture_ended: None,
            events_per_sec: 0.0,
            rate: VecDeque::new(),
            history: HashMap::new(),
        }
    }

    pub fn update(&mut self, msg: Msg) -> Effect {
        match msg {
            Msg::Key(k) => return self.on_key(k),
            Msg::Tick(elapsed) => self.elapsed = elapsed,
            Msg::Snapshot(mut s) => {
                if !self.paused {
                    defuse(&mut s);
                    self.take_snapshot(*s);
                }
            }
            Msg::CaptureEnded(how) => self.capture_ended = Some(how),
            Msg::Notice(text) => self.notice = Some(text),
        }
        Effect::None
    }

    fn on_key(&mut self, k: KeyEvent) -> Effect {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Effect::Quit;
        }
        if self.editing_filter {
            match k.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.reselect_all();
            return Effect::None;
        }
        if self.help {
            match k.code {
                KeyCode::Char('q') => return Effect::Quit,
                _ => self.help = false,
            }
            return Effect::None;
        }
        self.notice = None;
        if self.detail && self.scroll_detail(k.code) {
            return Effect::None;
        }
        match k.code {
            KeyCode::Char('q') => return Effect::Quit,
            KeyCode::Char('e') => return Effect::Export,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab | KeyCode::Right | KeyCode::Char('l') => self.switch_tab(1),
            KeyCode::BackTab | KeyCode::Left | KeyCode::Char('h') => self.switch_tab(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(isize::MAX / 2),
            KeyCode::Enter => {
                self.detail = self.tab == Tab::Findings && !self.detail;
                self.detail_scroll = 0;
            }
            KeyCode::Esc => {
                if self.detail {
                    self.detail = false;
                } else {
                    self.filter.clear();
                    self.reselect_all();
                }
            }
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Char('s') => {
                let choices = Sort::choices(self.tab);
                let i = self.tab.index();
                let at = choices
                    .iter()
                    .position(|s| *s == self.sorts[i])
                    .unwrap_or(0);
                self.sorts[i] = choices[(at + 1) % choices.len()];
                self.reselect(self.tab);
            }
            KeyCode::Char('p') => self.paused = !self.paused,
            _ => {}
        }
        Effect::None
    }

    /// Page keys scroll the open detail (the arrows still pick the finding);
    /// false when `code` is not one of them.
    fn scroll_detail(&mut self, code: KeyCode) -> bool {
        let fit = self.detail_fit.get();
        let page = fit.page.max(1);
        self.detail_scroll = match code {
            KeyCode::PageDown | KeyCode::Char(' ') => self.detail_scroll.saturating_add(page),
            KeyCode::PageUp => self.detail_scroll.saturating_sub(page),
            _ => return false,
        }
        .min(fit.max_scroll);
        true
    }

    fn switch_tab(&mut self, by: isize) {
        self.tab = self.tab.step(by);
        self.detail = false;
    }

    fn take_snapshot(&mut self, s: Snapshot) {
        self.rate.push_back((self.elapsed, s.stats.events));
        while self
            .rate
            .front()
            .is_some_and(|(t, _)| self.elapsed.saturating_sub(*t) > RATE_WINDOW)
        {
            self.rate.pop_front();
        }
        if let (Some((t0, e0)), Some((t1, e1))) = (self.rate.front(), self.rate.back()) {
            let dt = t1.saturating_sub(*t0).as_secs_f64();
            if dt > 0.0 {
                self.events_per_sec = e1.saturating_sub(*e0) as f64 / dt;
            }
        }
        self.history
            .retain(|pid, _| s.processes.iter().any(|p| p.pid == *pid));
        for p in &s.processes {
            if p.state != ProcessState::Running {
                continue;
            }
            if !self.history.contains_key(&p.pid) && self.history.len() >= SPARK_PROCESSES {
                continue;
            }
            let h = self.history.entry(p.pid).or_default();
            if h.len() == SPARK_SAMPLES {
                h.pop_front();
            }
            h.push_back(p.unsynced_bytes);
        }
        self.snapshot = s;
        self.reselect_all();
    }

    /// The sort in force on `tab`.
    pub fn sort(&self, tab: Tab) -> Sort {
        self.sorts[tab.index()]
    }

    /// Index of the selected row in `tab`'s visible rows.
    pub fn selected(&self, tab: Tab) -> usize {
        self.selections[tab.index()].index
    }

    fn matches(&self, texts: &[&str]) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        texts.iter().any(|t| t.to_lowercase().contains(&needle))
    }

    /// Findings shown, each with its ordinal (0 = first raised).
    pub fn findings(&self) -> Vec<(usize, &Finding)> {
        let total = self.snapshot.findings_total;
        let mut rows: Vec<(usize, &Finding)> = self
            .snapshot
            .findings
            .iter()
            .enumerate()
            .map(|(i, f)| (total.saturating_sub(i + 1), f))
            .filter(|(_, f)| self.matches(&[&f.path, &f.process.comm, &f.rule]))
            .collect();
        if self.sort(Tab::Findings) == Sort::Severity {
            rows.sort_by_key(|(n, f)| (std::cmp::Reverse(f.severity), std::cmp::Reverse(*n)));
        }
        rows
    }

    pub fn files(&self) -> Vec<&FileView> {
        let mut rows: Vec<&FileView> = self
            .snapshot
            .files
            .iter()
            .filter(|f| {
                let mut texts: Vec<&str> = vec![&f.path];
                texts.extend(f.writers.iter().map(|w| w.1.as_str()));
                self.matches(&texts)
            })
            .collect();
        match self.sort(Tab::Files) {
            Sort::Age => rows.sort_by_key(|f| std::cmp::Reverse(f.unsynced_age_ns)),
            Sort::Path => rows.sort_by(|a, b| a.path.cmp(&b.path)),
            Sort::Syncs => rows.sort_by_key(|f| std::cmp::Reverse(f.syncs)),
            _ => rows.sort_by_key(|f| std::cmp::Reverse(f.unsynced_bytes)),
        }
        rows
    }

    pub fn processes(&self) -> Vec<&ProcessView> {
        let mut rows: Vec<&ProcessView> = self
            .snapshot
            .processes
            .iter()
            .filter(|p| self.matches(&[&p.comm]))
            .collect();
        match self.sort(Tab::Processes) {
            Sort::Unsynced => rows.sort_by_key(|p| std::cmp::Reverse(p.unsynced_bytes)),
            Sort::OpenFiles => rows.sort_by_key(|p| std::cmp::Reverse(p.open_files)),
            _ => {}
        }
        rows
    }

    pub fn signals(&self) -> Vec<&SignalView> {
        self.snapshot
            .signals
            .iter()
            .filter(|s| self.matches(&[&s.sender_comm, &s.target_comm]))
            .collect()
    }

    /// The finding the detail pane shows.
    pub fn selected_finding(&self) -> Option<&Finding> {
        self.findings()
            .get(self.selected(Tab::Findings))
            .map(|(_, f)| *f)
    }

    pub fn selected_process(&self) -> Option<&ProcessView> {
        self.processes().get(self.selected(Tab::Processes)).copied()
    }

    /// Unsynced bytes over time of `pid`, oldest first.
    pub fn history(&self, pid: u32) -> Vec<u64> {
        self.history
            .get(&pid)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }

    fn keys(&self, tab: Tab) -> Vec<RowKey> {
        match tab {
            Tab::Findings => self
                .findings()
                .iter()
                .map(|(n, _)| RowKey::Finding(*n))
                .collect(),
            Tab::Files => self
                .files()
                .iter()
                .map(|f| RowKey::Path(f.path.clone()))
                .collect(),
            Tab::Processes => self
                .processes()
                .iter()
                .map(|p| RowKey::Pid(p.pid))
                .collect(),
            Tab::Signals => self
                .signals()
                .iter()
                .map(|s| RowKey::Signal(s.ts_ns, s.sender_pid))
                .collect(),
        }
    }

    fn move_selection(&mut self, by: isize) {
        // Another finding's detail starts at its top.
        self.detail_scroll = 0;
        let keys = self.keys(self.tab);
        let sel = &mut self.selections[self.tab.index()];
        if keys.is_empty() {
            *sel = Selection::default();
            return;
        }
        let i = (sel.index as isize)
            .saturating_add(by)
            .clamp(0, keys.len() as isize - 1) as usize;
        sel.index = i;
        sel.key = Some(keys[i].clone());
    }

    /// Keeps each tab's selection on the same item after the rows changed
    /// (new data, filter, sort); when it is gone, stays at the same place.
    fn reselect_all(&mut self) {
        for tab in Tab::ALL {
            self.reselect(tab);
        }
    }

    fn reselect(&mut self, tab: Tab) {
        let keys = self.keys(tab);
        let sel = &mut self.selections[tab.index()];
        if keys.is_empty() {
            sel.index = 0;
            return;
        }
        if let Some(i) = sel
            .key
            .as_ref()
            .and_then(|k| keys.iter().position(|x| x == k))
        {
            sel.index = i;
        } else {
            sel.index = sel.index.min(keys.len() - 1);
            sel.key = Some(keys[sel.index].clone());
        }
    }
}

/// Severity for people, padded for tables.
pub fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::High => "HIGH",
        Severity::Medium => "MED",
        Severity::Low => "LOW",
    }
}

/// Makes everything a traced program chose (paths, names, calls, evidence)
/// safe to draw: control characters and bidirectional overrides become
/// escapes, so a file name cannot clear the screen or forge a line.
fn defuse(s: &mut Snapshot) {
    fn clean(v: &mut String) {
        if let std::borrow::Cow::Owned(e) = escape(v) {
            *v = e;
        }
    }
    for p in &mut s.processes {
        clean(&mut p.comm);
    }
    for f in &mut s.files {
        clean(&mut f.path);
        if let Some(op) = f.last_op.as_mut() {
            clean(op);
        }
        for (_, comm) in &mut f.writers {
            clean(comm);
        }
    }
    for sig in &mut s.signals {
        clean(&mut sig.sender_comm);
        clean(&mut sig.target_comm);
    }
    for f in &mut s.findings {
        clean(&mut f.path);
        clean(&mut f.summary);
        if let std::borrow::Cow::Owned(e) = escape(&f.process.comm) {
            f.process.comm = e.into();
        }
        for c in &mut f.calls {
            clean(&mut c.comm);
            clean(&mut c.call);
        }
        for v in f.evidence.values_mut() {
            if let serde_json::Value::String(t) = v {
                clean(t);
            }
        }
        // Function and file names come from the traced program's binaries.
        if let Some(stack) = f.stack.as_mut().map(std::sync::Arc::make_mut) {
            for fr in &mut stack.frames {
                for v in [&mut fr.function, &mut fr.file, &mut fr.object]
                    .into_iter()
                    .flatten()
                {
                    clean(v);
                }
            }
            if let Some(i) = stack.interpreter.as_mut() {
                clean(&mut i.name);
                if let Some(s) = i.script.as_mut() {
                    clean(s);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use auditor_analyzer::ProcessRef;
    use auditor_analyzer::snapshot::SeverityCounts;
    use ratatui::crossterm::event::KeyEventKind;

    pub fn key(code: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    pub fn finding(rule: &str, severity: Severity, path: &str, pid: u32, comm: &str) -> Finding {
        Finding::new(
            rule,
            severity,
            path,
            None,
            ProcessRef {
                pid,
                comm: comm.into(),
                exe: None,
                argv: Default::default(),
            },
            format!("{path}: {rule}"),
        )
    }

    pub fn file(path: &str, unsynced: u64, age_ms: u64, syncs: u64) -> FileView {
        FileView {
            path: path.into(),
            unsynced_bytes: unsynced,
            unsynced_age_ns: (unsynced > 0).then_some(age_ms * 1_000_000),
            last_op: Some("write(fd=3, 10) = 10".into()),
            last_op_ns: 0,
            syncs,
            writers: vec![(10, "app".into())],
        }
    }

    pub fn process(pid: u32, comm: &str, unsynced: u64, state: ProcessState) -> ProcessView {
        ProcessView {
            pid,
            ppid: 1,
            comm: comm.into(),
            open_files: 3,
            unsynced_bytes: unsynced,
            state,
        }
    }

    /// Findings oldest first, as the analyzer raises them.
    pub fn snapshot_with(findings: Vec<Finding>, events: u64) -> Snapshot {
        let mut severity = SeverityCounts::default();
        for f in &findings {
            match f.severity {
                Severity::High => severity.high += 1,
                Severity::Medium => severity.medium += 1,
                Severity::Low => severity.low += 1,
            }
        }
        let mut s = Snapshot {
            findings_total: findings.len(),
            findings: findings.into_iter().rev().collect(),
            severity,
            ..Snapshot::default()
        };
        s.stats.events = events;
        s
    }

    #[test]
    fn names_a_program_chose_are_drawn_defused() {
        let mut evil = three_findings().remove(0);
        evil.path = "/d/\x1b[2J\x1b]0;pwned\x07\u{202e}cod.exe".into();
        evil.summary = "\x1b[31mforged line\n".into();
        evil.process.comm = "\x1bc".into();
        let mut app = App::new("run \x1b[2J", "log");
        app.update(Msg::Snapshot(Box::new(snapshot_with(vec![evil], 1))));
        let f = app.findings()[0].1;
        for text in [&*f.path, &*f.summary, &*f.process.comm, &*app.target] {
            assert!(
                !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{text:?}"
            );
        }
        assert_eq!(f.path, "/d/\\x1b[2J\\x1b]0;pwned\\x07\\u{202e}cod.exe");
    }

    fn three_findings() -> Vec<Finding> {
        vec![
            finding("unsynced-at-exit", Severity::Medium, "/d/log", 10, "app"),
            finding(
                "rename-without-fsync",
                Severity::High,
                "/d/state",
                10,
                "app",
            ),
            finding(
                "create-without-dir-fsync",
                Severity::Low,
                "/d/new",
                11,
                "worker",
            ),
        ]
    }

    #[test]
    fn newest_first_sort_and_selection_follows_the_item() {
        let mut app = App::new("t", "n");
        let mut all = three_findings();
        app.update(Msg::Snapshot(Box::new(snapshot_with(all.clone(), 0))));
        app.update(key(KeyCode::Char('s')));
        assert_eq!(app.sort(Tab::Findings), Sort::Newest);
        assert_eq!(app.findings()[0].1.path, "/d/new");
        app.update(key(KeyCode::Char('g')));
        app.update(key(KeyCode::Char('j')));
        assert_eq!(app.selected_finding().unwrap().path, "/d/state");
        all.push(finding(
            "fsync-error-ignored",
            Severity::High,
            "/d/x",
            10,
            "app",
        ));
        app.update(Msg::Snapshot(Box::new(snapshot_with(all, 0))));
        assert_eq!(
            app.selected(Tab::Findings),
            2,
            "a new finding on top moves the row"
        );
        assert_eq!(app.selected_finding().unwrap().path, "/d/state");
    }

    #[test]
    fn moving_stays_in_bounds() {
        let mut app = App::new("t", "n");
        app.update(key(KeyCode::Up));
        assert_eq!(app.selected(Tab::Findings), 0, "empty list");
        app.update(Msg::Snapshot(Box::new(snapshot_with(three_findings(), 0))));
        for _ in 0..5 {
            app.update(key(KeyCode::Down));
        }
        assert_eq!(app.selected(Tab::Findings), 2);
        app.update(key(KeyCode::Char('g')));
        assert_eq!(app.selected(Tab::Findings), 0);
        app.update(key(KeyCode::End));
        assert_eq!(app.selected(Tab::Findings), 2);
    }

    #[test]
    fn tab_cycles_and_enter_opens_detail_only_on_findings() {
        let mut app = App::new("t", "n");
        app.update(Msg::Snapshot(Box::new(snapshot_with(three_findings(), 0))));
        app.update(key(KeyCode::Enter));
        assert!(app.detail);
        app.update(key(KeyCode::Esc));
        assert!(!app.detail);
        app.update(key(KeyCode::Enter));
        app.update(key(KeyCode::Tab));
        assert_eq!(app.tab, Tab::Files);
        assert!(!app.detail, "switching panes closes the detail");
        app.update(key(KeyCode::Enter));
        assert!(!app.detail);
        app.update(key(KeyCode::BackTab));
        app.update(key(KeyCode::BackTab));
        assert_eq!(app.tab, Tab::Signals);
        app.update(key(KeyCode::Right));
        assert_eq!(app.tab, Tab::Findings);
    }

    #[test]
    fn filter_matches_path_or_comm_and_esc_clears() {
        let mut app = App::new("t", "n");
        app.update(Msg::Snapshot(Box::new(snapshot_with(three_findings(), 0))));
        app.update(key(KeyCode::Char('/')));
        assert!(app.editing_filter);
        for c in "WORK".chars() {
            app.update(key(KeyCode::Char(c)));
        }
        assert_eq!(app.findings().len(), 1, "comm, case-insensitive");
        app.update(key(KeyCode::Backspace));
        app.update(key(KeyCode::Backspace));
        app.update(key(KeyCode::Backspace));
        app.update(key(KeyCode::Backspace));
        for c in "state".chars() {
            app.update(key(KeyCode::Char(c)));
        }
        app.update(key(KeyCode::Enter));
        assert!(!app.editing_filter);
        assert_eq!(app.filter, "state");
        let rows = app.findings();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1.path, "/d/state");
        // Keys typed into the filter are not commands.
        assert_eq!(app.update(key(KeyCode::Char('/'))), Effect::None);
        assert_eq!(app.update(key(KeyCode::Char('q'))), Effect::None);
        assert_eq!(app.filter, "stateq");
        app.update(key(KeyCode::Esc));
        assert!(app.filter.is_empty() && !app.editing_filter);
        assert_eq!(app.findings().len(), 3);
    }

    #[test]
    fn sort_cycles_per_pane() {
        let mut app = App::new("t", "n");
        let mut s = snapshot_with(three_findings(), 0);
        s.files = vec![
            file("/d/b", 10, 5_000, 0),
            file("/d/a", 5, 9_000, 3),
            file("/d/c", 0, 0, 1),
        ];
        app.update(Msg::Snapshot(Box::new(s)));
        assert_eq!(
            app.sort(Tab::Findings),
            Sort::Severity,
            "worst first by default"
        );
        assert_eq!(app.findings()[0].1.severity, Severity::High);
        app.update(key(KeyCode::Char('s')));
        assert_eq!(app.sort(Tab::Findings), Sort::Newest);
        let newest = app.findings()[0].0;
        assert!(app.findings().iter().all(|(n, _)| *n <= newest));
        app.update(key(KeyCode::Char('s')));
        assert_eq!(app.sort(Tab::Findings), Sort::Severity, "wraps around");
        app.update(key(KeyCode::Tab));
        let paths = |app: &App| {
            app.files()
                .iter()
                .map(|f| f.path.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(&app), ["/d/b", "/d/a", "/d/c"]);
        app.update(key(KeyCode::Char('s')));
        assert_eq!(app.sort(Tab::Files), Sort::Age);
        assert_eq!(paths(&app), ["/d/a", "/d/b", "/d/c"]);
        app.update(key(KeyCode::Char('s')));
        assert_eq!(paths(&app), ["/d/a", "/d/b", "/d/c"]);
        app.update(key(KeyCode::Char('s')));
        assert_eq!(app.sort(Tab::Files), Sort::Syncs);
        assert_eq!(paths(&app)[0], "/d/a");
        app.update(key(KeyCode::Char('s')));
        assert_eq!(app.sort(Tab::Files), Sort::Unsynced, "wraps around");
    }

    #[test]
    fn pause_freezes_the_view_but_not_the_clock() {
        let mut app = App::new("t", "n");
        app.update(Msg::Snapshot(Box::new(snapshot_with(vec![], 5))));
        app.update(key(KeyCode::Char('p')));
        assert!(app.paused);
        app.update(Msg::Snapshot(Box::new(snapshot_with(three_findings(), 50))));
        app.update(Msg::Tick(Duration::from_secs(3)));
        assert_eq!(app.snapshot.stats.events, 5);
        assert_eq!(app.elapsed, Duration::from_secs(3));
        app.update(key(KeyCode::Char('p')));
        app.update(Msg::Snapshot(Box::new(snapshot_with(three_findings(), 50))));
        assert_eq!(app.findings().len(), 3);
    }

    #[test]
    fn quit_export_and_help_keys() {
        let mut app = App::new("t", "n");
        assert_eq!(app.update(key(KeyCode::Char('e'))), Effect::Export);
        app.update(key(KeyCode::Char('?')));
        assert!(app.help);
        assert_eq!(app.update(key(KeyCode::Char('x'))), Effect::None);
        assert!(!app.help, "any key closes help");
        assert_eq!(app.update(key(KeyCode::Char('q'))), Effect::Quit);
        let ctrl_c = KeyEvent {
            kind: KeyEventKind::Press,
            ..KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)
        };
        assert_eq!(app.update(Msg::Key(ctrl_c)), Effect::Quit);
    }

    #[test]
    fn events_per_second_over_a_window_and_bounded_sparkline() {
        let mut app = App::new("t", "n");
        for i in 0..(SPARK_SAMPLES as u64 + 40) {
            app.update(Msg::Tick(Duration::from_millis(100 * i)));
            let mut s = snapshot_with(vec![], i * 50);
            s.processes = vec![process(7, "app", i, ProcessState::Running)];
            app.update(Msg::Snapshot(Box::new(s)));
        }
        assert!(
            (app.events_per_sec - 500.0).abs() < 1e-6,
            "{}",
            app.events_per_sec
        );
        let h = app.history(7);
        assert_eq!(h.len(), SPARK_SAMPLES);
        assert_eq!(*h.last().unwrap(), SPARK_SAMPLES as u64 + 39);
        // A process that left the snapshot takes its history with it.
        app.update(Msg::Snapshot(Box::new(snapshot_with(vec![], 0))));
        assert!(app.history(7).is_empty());
    }
}
