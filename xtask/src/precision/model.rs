//! The ground truth: a model of Linux durability semantics fed by the
//! strace trace of a run, written from the kernel's rules and not from the
//! auditor's code, so that it can disagree with it.
//!
//! Files are nodes; absolute names map to nodes. Data written to a node is
//! dirty until an fsync/fdatasync of any fd on it (any process), a sync(),
//! a syncfs() of its filesystem or an msync(MS_SYNC) of a shared mapping.
//! A new or removed name is pending in its directory until that directory
//! is fsynced (or sync/syncfs). Verdicts are taken at the end of the run on
//! what is still exposed then, under the names things have then: data made
//! durable later by anyone is a closed exposure, a node deleted or renamed
//! away is moot; both are kept as low notes that explain disagreements.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::disk::Disk;
use super::strace::{self, Call, Event, Ret, Target, Trace};

/// How much a verdict counts: only medium and high enter the precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    /// The report's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// One verdict of the ground truth.
#[derive(Debug, Clone)]
pub struct Expected {
    pub rule: &'static str,
    pub severity: Severity,
    /// The names the file has at the end (several for hard links; the last
    /// name it had when it has none left). Any of them matches.
    pub paths: Vec<String>,
    /// The process responsible: the writer for exit verdicts, the renamer
    /// for renames.
    pub pid: u32,
    pub comm: String,
    /// For low notes: why the exposure does not count (closed, moot).
    pub why: String,
}

/// Something the model could not decide from the trace; counted instead of
/// guessed. With a rule and paths when it is a verdict left open.
#[derive(Debug, Clone)]
pub struct Undecided {
    pub rule: Option<&'static str>,
    pub paths: Vec<String>,
    pub why: String,
}

/// Everything the model concluded about one run.
#[derive(Debug, Default)]
pub struct Truth {
    pub expected: Vec<Expected>,
    pub undecided: Vec<Undecided>,
    /// fds the model had not seen opened, identified by strace's `-yy`
    /// annotation instead (passed over SCM_RIGHTS, made by untraced calls).
    pub adopted: usize,
}

/// What the harness knows about the scratch tree before the run.
#[derive(Debug, Default, Clone)]
pub struct Setup {
    /// The scratch tree (absolute): a name under it that is not in `before`
    /// did not exist when the run began.
    pub root: String,
    /// Where the command starts.
    pub cwd: String,
    /// Every path under `root` before the run.
    pub before: BTreeMap<String, Before>,
    /// Paths never judged (the strace output file).
    pub never_judged: Vec<String>,
}

/// A path as it was before the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    Dir,
    File {
        size: u64,
    },
    /// A symlink, socket, fifo...: never judged.
    Other,
}

/// Caches their programs check and rebuild: the auditor's documented
/// policy, which the ground truth follows (a damaged `.pyc` is recompiled).
const CACHE_DIRS: &[&str] = &["__pycache__", ".pytest_cache", ".mypy_cache", ".cache"];

/// Runs the model over a trace.
pub fn truth(trace: &Trace, setup: &Setup, disk: &dyn Disk) -> Truth {
    let mut m = Model::new(setup, disk);
    if trace.skipped > 0 {
        m.undecided(
            None,
            Vec::new(),
            format!(
                "{} trace lines could not be read (first: {})",
                trace.skipped,
                trace.skipped_examples.first().map_or("", String::as_str)
            ),
        );
    }
    for e in &trace.events {
        match e {
            Event::Call(c) => m.call(c),
            Event::Exited { tid, code } => m.thread_end(*tid, Fate::Exited(*code)),
            Event::Killed { tid, signal } => m.thread_end(*tid, Fate::Killed(signal.clone())),
        }
    }
    m.verdicts()
}

type NodeId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    /// Symlinks and other non-regular files made or found by name.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Empty,
    NonEmpty,
    Unknown,
}

/// A rename or link that exposed dirty data under a new name.
#[derive(Debug, Clone)]
struct Exposure {
    tgid: u32,
    line: usize,
}

#[derive(Debug, Clone)]
struct Truncation {
    tgid: u32,
    line: usize,
    /// False when the size before was unknown (not in the setup snapshot,
    /// never seen written): then the verdict is undecided.
    had_content: bool,
    rewritten: bool,
}

#[derive(Debug, Default, Clone)]
struct Appends {
    /// Threads (tid, tgid) that appended, in order of their first append.
    writers: Vec<(u32, u32)>,
    last: Option<u32>,
    /// The first writer, once A, B, A happened while both held it open.
    interleaved: Option<u32>,
}

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    content: Content,
    /// Writers (tgid -> line of their first unsynced write) whose data is
    /// not durable and was not exposed by a rename yet.
    dirty: BTreeMap<u32, usize>,
    exposed: Option<Exposure>,
    truncation: Option<Truncation>,
    appends: Appends,
    /// An fsync that failed (tgid, errno) and what the same process did next.
    fsync_failed: Option<(u32, String)>,
    fsync_ignored: Option<(u32, &'static str)>,
    /// Written through a shared writable mapping since it was last durable:
    /// the trace cannot see those writes.
    mapped: bool,
    /// sync_file_range was the only "sync" since the last write.
    range_synced: bool,
    /// The last name it lost and how, to explain moot verdicts.
    gone: Option<(String, String)>,
    /// Exposures closed or made moot before the end: low notes.
    notes: Vec<(&'static str, u32, String)>,
}

impl Node {
    fn new(kind: Kind, content: Content) -> Node {
        Node {
            kind,
            content,
            dirty: BTreeMap::new(),
            exposed: None,
            truncation: None,
            appends: Appends::default(),
            fsync_failed: None,
            fsync_ignored: None,
            mapped: false,
            range_synced: false,
            gone: None,
            notes: Vec::new(),
        }
    }

    fn unsynced(&self) -> bool {
        !self.dirty.is_empty() || self.exposed.is_some()
    }
}

/// What an open file description refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refers {
    Node(NodeId),
    /// Pipes, sockets, devices, deleted files: never judged.
    Other,
    /// The command's inherited stdin/stdout/stderr: its caller's to keep.
    Inherited,
}

/// An open file description, shared by dup and fork.
#[derive(Debug, Clone, Copy)]
struct OpenFile {
    target: Refers,
    append: bool,
    /// O_SYNC/O_DSYNC: every write is durable when it returns.
    sync: bool,
}

#[derive(Debug, Clone, Copy)]
struct Fd {
    file: usize,
    cloexec: bool,
}

#[derive(Debug, Clone, Default)]
struct FdTable {
    fds: BTreeMap<i64, Fd>,
}

/// The raw arguments of a rename or a link: `old` (under the directory fd
/// `old_dir`, or the cwd) gets the name `new` (likewise), with `flags`.
#[derive(Debug, Clone, Copy)]
struct Names<'a> {
    old_dir: Option<&'a str>,
    old: Option<&'a str>,
    new_dir: Option<&'a str>,
    new: Option<&'a str>,
    flags: Option<&'a str>,
}

impl<'a> Names<'a> {
    /// `rename(old, new)`, `link(old, new)`: both relative to the cwd.
    fn cwd(old: Option<&'a str>, new: Option<&'a str>) -> Self {
        Self::at(None, old, None, new, None)
    }

    /// The `*at` forms.
    fn at(
        old_dir: Option<&'a str>,
        old: Option<&'a str>,
        new_dir: Option<&'a str>,
        new: Option<&'a str>,
        flags: Option<&'a str>,
    ) -> Self {
        Names {
            old_dir,
            old,
            new_dir,
            new,
            flags,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    Running,
    Exited(i32),
    Killed(String),
}

#[derive(Debug, Clone)]
struct Proc {
    comm: String,
    table: usize,
    cwd: usize,
    fate: Fate,
}

/// Per thread: a write it was inside of, or a short write it had not
/// completed, for `killed-mid-write`.
#[derive(Debug, Default, Clone)]
struct ThreadState {
    in_write: Option<NodeId>,
    short: Option<NodeId>,
}

/// A directory entry change not yet made durable by an fsync of its
/// directory.
#[derive(Debug, Clone)]
enum Pending {
    Created {
        tgid: u32,
    },
    /// Destination of a rename or link.
    Placed {
        tgid: u32,
    },
    Removed {
        tgid: u32,
    },
}

struct Mapping {
    start: u64,
    len: u64,
    node: NodeId,
}

struct Model<'a> {
    setup: &'a Setup,
    disk: &'a dyn Disk,
    nodes: Vec<Node>,
    names: BTreeMap<String, NodeId>,
    /// Names known not to exist (removed, renamed away, ENOENT).
    absent: BTreeSet<String>,
    /// Directory renames (from, to), to map a name back to the snapshot.
    moves: Vec<(String, String)>,
    pending: BTreeMap<(NodeId, String), Pending>,
    /// Pending renames overtaken before the end (directory, name, renamer,
    /// why): low notes.
    entry_notes: Vec<(NodeId, String, u32, String)>,
    files: Vec<OpenFile>,
    tables: Vec<FdTable>,
    cwds: Vec<String>,
    procs: HashMap<u32, Proc>,
    threads: HashMap<u32, u32>,
    states: HashMap<u32, ThreadState>,
    maps: Vec<Mapping>,
    undecided: Vec<Undecided>,
    adopted: usize,
}

/// errnos of fsync that say nothing about the data (not a file that can
/// be synced, a bad fd): only the others are data errors.
const NOT_DATA_ERRORS: &[&str] = &["EINVAL", "EBADF", "EROFS", "EINTR"];

impl<'a> Model<'a> {
    fn new(setup: &'a Setup, disk: &'a dyn Disk) -> Model<'a> {
        Model {
            setup,
            disk,
            nodes: Vec::new(),
            names: BTreeMap::new(),
            absent: BTreeSet::new(),
            moves: Vec::new(),
            pending: BTreeMap::new(),
            entry_notes: Vec::new(),
            files: Vec::new(),
            tables: Vec::new(),
            cwds: Vec::new(),
            procs: HashMap::new(),
            threads: HashMap::new(),
            states: HashMap::new(),
            maps: Vec::new(),
            undecided: Vec::new(),
            adopted: 0,
        }
    }

    fn undecided(&mut self, rule: Option<&'static str>, paths: Vec<String>, why: String) {
        self.undecided.push(Undecided { rule, paths, why });
    }

    // ------------------------------------------------------------ processes

    /// The thread group of a thread, creating the first one seen as the
    /// command itself (inherited stdin/out/err, the setup's cwd).
    fn tgid(&mut self, tid: u32, line: usize) -> u32 {
        if let Some(&g) = self.threads.get(&tid) {
            return g;
        }
        let first = self.procs.is_empty();
        let mut table = FdTable::default();
        if first {
            for fd in 0..3 {
                self.files.push(OpenFile {
                    target: Refers::Inherited,
                    append: false,
                    sync: false,
                });
                table.fds.insert(
                    fd,
                    Fd {
                        file: self.files.len() - 1,
                        cloexec: false,
                    },
                );
            }
        } else {
            self.undecided(
                None,
                Vec::new(),
                format!("line {line}: thread {tid} appears without the call that created it"),
            );
        }
        self.tables.push(table);
        self.cwds.push(self.setup.cwd.clone());
        self.procs.insert(
            tid,
            Proc {
                comm: String::new(),
                table: self.tables.len() - 1,
                cwd: self.cwds.len() - 1,
                fate: Fate::Running,
            },
        );
        self.threads.insert(tid, tid);
        tid
    }

    fn proc(&self, tgid: u32) -> &Proc {
        &self.procs[&tgid]
    }

    fn thread_end(&mut self, tid: u32, fate: Fate) {
        let Some(&tgid) = self.threads.get(&tid) else {
            return;
        };
        let p = self
            .procs
            .get_mut(&tgid)
            .expect("thread of a known process");
        match fate {
            // A fatal signal takes the whole thread group.
            Fate::Killed(_) => p.fate = fate,
            // The leader's exit is the process's; a thread's own is not.
            Fate::Exited(_) if tid == tgid && p.fate == Fate::Running => p.fate = fate,
            _ => {}
        }
    }

    fn spawn(&mut self, parent: u32, child: u32, flags: &[&str]) {
        let has = |f: &str| flags.contains(&f);
        if has("CLONE_THREAD") {
            self.threads.insert(child, parent);
            return;
        }
        if self.procs.contains_key(&child) {
            // A pid used again in one run: verdicts keyed by it would mix
            // two processes.
            self.undecided(
                None,
                Vec::new(),
                format!("pid {child} was used by two processes in one run"),
            );
        }
        let (table, cwd, comm) = {
            let p = self.proc(parent);
            (p.table, p.cwd, p.comm.clone())
        };
        let table = if has("CLONE_FILES") {
            table
        } else {
            let copy = self.tables[table].clone();
            self.tables.push(copy);
            self.tables.len() - 1
        };
        let cwd = if has("CLONE_FS") {
            cwd
        } else {
            let copy = self.cwds[cwd].clone();
            self.cwds.push(copy);
            self.cwds.len() - 1
        };
        self.procs.insert(
            child,
            Proc {
                comm,
                table,
                cwd,
                fate: Fate::Running,
            },
        );
        self.threads.insert(child, child);
    }

    // ------------------------------------------------------------ names

    /// The absolute, lexically normal form of `path` relative to `base`.
    fn join(base: &str, path: &str) -> String {
        let full = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("{base}/{path}")
        };
        normalise(&full)
    }

    /// Resolves a path argument against a dirfd argument (or the cwd):
    /// strace's annotation of the dirfd is the kernel's own answer.
    fn resolve(&mut self, tgid: u32, dirfd: Option<&str>, path: &str) -> Option<String> {
        if path.starts_with('/') {
            return Some(normalise(path));
        }
        let base = match dirfd.and_then(strace::fd_arg) {
            None => self.cwds[self.proc(tgid).cwd].clone(),
            Some((_, Some(Target::Path { path, .. }))) => path,
            Some((strace::AT_FDCWD, _)) => self.cwds[self.proc(tgid).cwd].clone(),
            Some((fd, _)) => {
                let node = self.lookup_fd(tgid, fd)?;
                self.name_of(node)?
            }
        };
        Some(Self::join(&base, path))
    }

    fn name_of(&self, node: NodeId) -> Option<String> {
        self.names
            .iter()
            .find(|(_, n)| **n == node)
            .map(|(p, _)| p.clone())
    }

    /// Whether the name existed before the run, as far as the snapshot can
    /// say (None: outside the scratch tree, unknown).
    fn before(&self, path: &str) -> Option<Option<Before>> {
        let mut p = path.to_owned();
        for (from, to) in self.moves.iter().rev() {
            if let Some(rest) = under(&p, to) {
                p = format!("{from}{rest}");
            }
        }
        if under(&p, &self.setup.root).is_some() {
            return Some(self.setup.before.get(&p).copied());
        }
        None
    }

    fn known_absent(&self, path: &str) -> bool {
        if self.names.contains_key(path) {
            return false;
        }
        let mut p = path;
        loop {
            if self.absent.contains(p) {
                return true;
            }
            match p.rfind('/') {
                Some(0) | None => break,
                Some(i) => p = &p[..i],
            }
        }
        matches!(self.before(path), Some(None))
    }

    /// The node a name refers to; a name seen for the first time is a file
    /// that existed before the run (unknown content, nothing unsynced).
    fn node_at(&mut self, path: &str) -> NodeId {
        if let Some(&n) = self.names.get(path) {
            return n;
        }
        let (kind, content) = match self.before(path).flatten() {
            Some(Before::Dir) => (Kind::Dir, Content::Unknown),
            Some(Before::File { size: 0 }) => (Kind::File, Content::Empty),
            Some(Before::File { .. }) => (Kind::File, Content::NonEmpty),
            Some(Before::Other) => (Kind::Other, Content::Unknown),
            None => (Kind::File, Content::Unknown),
        };
        self.nodes.push(Node::new(kind, content));
        let n = self.nodes.len() - 1;
        self.absent.remove(path);
        self.names.insert(path.to_owned(), n);
        n
    }

    fn dir_node(&mut self, path: &str) -> NodeId {
        let n = self.node_at(path);
        self.nodes[n].kind = Kind::Dir;
        n
    }

    /// A name that now exists for a new node.
    fn create(&mut self, path: &str, kind: Kind, tgid: u32, line: usize) -> NodeId {
        self.nodes.push(Node::new(kind, Content::Empty));
        let n = self.nodes.len() - 1;
        self.lose(path, format!("replaced by a file pid {tgid} created"));
        self.names.insert(path.to_owned(), n);
        self.absent.remove(path);
        self.pend(path, Pending::Created { tgid }, line);
        n
    }

    /// The name no longer refers to its node.
    fn lose(&mut self, path: &str, how: String) {
        if let Some(n) = self.names.remove(path) {
            self.nodes[n].gone = Some((path.to_owned(), how));
        }
    }

    /// Records an entry change pending in its directory. A rename that was
    /// pending there and is overtaken leaves a note: its verdict is moot.
    fn pend(&mut self, path: &str, what: Pending, line: usize) {
        let (dir, base) = split(path);
        let d = self.dir_node(dir);
        let why = match &what {
            Pending::Placed { tgid } => {
                format!(
                    "superseded: renamed over again by pid {tgid} at line {line} before the directory was fsynced"
                )
            }
            Pending::Removed { tgid } => {
                format!("moot: the name was removed by pid {tgid} at line {line}")
            }
            Pending::Created { tgid } => {
                format!("superseded: created anew by pid {tgid} at line {line}")
            }
        };
        if let Some(Pending::Placed { tgid }) = self.pending.insert((d, base.to_owned()), what) {
            self.entry_notes.push((d, base.to_owned(), tgid, why));
        }
    }

    fn unname(&mut self, path: &str, tgid: u32, line: usize) {
        self.lose(path, format!("deleted by pid {tgid} at line {line}"));
        self.absent.insert(path.to_owned());
        self.pend(path, Pending::Removed { tgid }, line);
    }

    /// Moves every name at or under `from` to `to` (a directory rename
    /// moves its whole tree).
    fn move_tree(&mut self, from: &str, to: &str) {
        // `from` itself, then `from/...`: the keys from "from/" up to
        // "from0" ('0' follows '/').
        let mut moved: Vec<(String, NodeId)> = self
            .names
            .get_key_value(from)
            .map(|(p, n)| (p.clone(), *n))
            .into_iter()
            .collect();
        moved.extend(
            self.names
                .range(format!("{from}/")..format!("{from}0"))
                .map(|(p, n)| (p.clone(), *n)),
        );
        for (p, n) in moved {
            self.names.remove(&p);
            let rest = under(&p, from).unwrap_or_default();
            self.names.insert(format!("{to}{rest}"), n);
        }
        let gone: Vec<String> = self
            .absent
            .iter()
            .filter(|p| under(p, from).is_some())
            .cloned()
            .collect();
        for p in gone {
            self.absent.remove(&p);
            let rest = under(&p, from).unwrap_or_default();
            if !rest.is_empty() {
                self.absent.insert(format!("{to}{rest}"));
            }
        }
        self.moves.push((from.to_owned(), to.to_owned()));
    }

    // ------------------------------------------------------------ fds

    fn table(&self, tgid: u32) -> usize {
        self.proc(tgid).table
    }

    fn lookup_fd(&self, tgid: u32, fd: i64) -> Option<NodeId> {
        let t = &self.tables[self.table(tgid)];
        match self.files[t.fds.get(&fd)?.file].target {
            Refers::Node(n) => Some(n),
            _ => None,
        }
    }

    /// The open file behind an fd argument. An fd the model has not seen
    /// opened is identified by strace's annotation (and counted); without
    /// one it is undecided.
    fn file_of(&mut self, tgid: u32, arg: &str, line: usize) -> Option<OpenFile> {
        let (fd, target) = strace::fd_arg(arg)?;
        // The annotation says what the kernel had at that fd: a pipe or a
        // socket is never a file, whatever the model believed.
        let annotated = match &target {
            Some(Target::Other(_)) => Some(Refers::Other),
            Some(Target::Path { path, .. }) if is_device(path) => Some(Refers::Other),
            _ => None,
        };
        let t = self.table(tgid);
        if let Some(e) = self.tables[t].fds.get(&fd) {
            let mut f = self.files[e.file];
            if let Some(a) = annotated {
                f.target = a;
            }
            return Some(f);
        }
        let target = match target {
            Some(Target::Path {
                path,
                deleted: false,
            }) => {
                self.adopted += 1;
                Refers::Node(self.node_at(&path))
            }
            Some(_) => Refers::Other,
            None => {
                if fd >= 0 {
                    self.undecided(
                        None,
                        Vec::new(),
                        format!("line {line}: fd {fd} was never seen opened"),
                    );
                }
                return None;
            }
        };
        let f = OpenFile {
            target,
            append: false,
            sync: false,
        };
        self.install(tgid, fd, f, false);
        Some(f)
    }

    fn install(&mut self, tgid: u32, fd: i64, f: OpenFile, cloexec: bool) {
        self.files.push(f);
        let file = self.files.len() - 1;
        let t = self.table(tgid);
        self.tables[t].fds.insert(fd, Fd { file, cloexec });
    }

    /// `new` becomes a copy of `old` (dup, dup2, dup3, F_DUPFD).
    fn dup(&mut self, tgid: u32, old_arg: &str, new: i64, cloexec: bool, line: usize) {
        let Some((old, _)) = strace::fd_arg(old_arg) else {
            return;
        };
        if old == new {
            return;
        }
        let t = self.table(tgid);
        let file = match self.tables[t].fds.get(&old) {
            Some(e) => e.file,
            None => {
                if self.file_of(tgid, old_arg, line).is_none() {
                    self.tables[t].fds.remove(&new);
                    return;
                }
                self.tables[t].fds[&old].file
            }
        };
        self.tables[t].fds.insert(new, Fd { file, cloexec });
    }

    // ------------------------------------------------------------ durability

    /// The node is durable now: every exposure on it closes.
    fn clean(&mut self, n: NodeId, how: &str) {
        let ended: BTreeSet<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.fate != Fate::Running)
            .map(|(g, _)| *g)
            .collect();
        let mapped = self.maps.iter().any(|m| m.node == n);
        let node = &mut self.nodes[n];
        for (&w, _) in node.dirty.iter() {
            if ended.contains(&w) {
                node.notes.push((
                    "unsynced-at-exit",
                    w,
                    format!("closed: made durable later by {how}"),
                ));
            }
        }
        if let Some(e) = node.exposed.take() {
            node.notes.push((
                "rename-without-fsync",
                e.tgid,
                format!(
                    "closed: renamed dirty at line {}, made durable later by {how}",
                    e.line
                ),
            ));
        }
        if let Some(t) = node.truncation.take()
            && t.rewritten
        {
            node.notes.push((
                "truncate-in-place",
                t.tgid,
                format!(
                    "closed: truncated at line {}, made durable later by {how}",
                    t.line
                ),
            ));
        }
        node.dirty.clear();
        node.mapped = mapped;
        node.range_synced = false;
    }

    /// A directory is durable now: its pending entries are.
    fn clean_entries(&mut self, dir: NodeId, how: &str) {
        let keys: Vec<(NodeId, String)> = self
            .pending
            .range((dir, String::new())..)
            .take_while(|((d, _), _)| *d == dir)
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        let dir_name = self.name_of(dir).unwrap_or_default();
        for k in keys {
            if let Some(Pending::Placed { tgid, .. }) = self.pending.remove(&k)
                && self
                    .procs
                    .get(&tgid)
                    .is_some_and(|p| p.fate != Fate::Running)
                && let Some(&n) = self.names.get(&format!("{dir_name}/{}", k.1))
            {
                self.nodes[n].notes.push((
                    "rename-without-dir-fsync",
                    tgid,
                    format!("closed: directory made durable later by {how}"),
                ));
            }
        }
    }

    fn dirty(
        &mut self,
        n: NodeId,
        tgid: u32,
        tid: u32,
        f: OpenFile,
        positional: bool,
        line: usize,
    ) {
        if f.append && !positional {
            self.append(n, tgid, tid);
        }
        let node = &mut self.nodes[n];
        node.content = Content::NonEmpty;
        node.range_synced = false;
        if !f.sync {
            node.dirty.entry(tgid).or_insert(line);
        }
        if let Some(t) = node.truncation.as_mut()
            && t.tgid == tgid
        {
            t.rewritten = true;
        }
        if let Some((g, _)) = &node.fsync_failed
            && *g == tgid
            && node.fsync_ignored.is_none()
        {
            node.fsync_ignored = Some((tgid, "write"));
        }
    }

    /// An append by `tid`: A, B, A while B still holds the file open is an
    /// interleaving.
    fn append(&mut self, n: NodeId, tgid: u32, tid: u32) {
        let a = &self.nodes[n].appends;
        if a.last == Some(tid) {
            return;
        }
        let again = a.writers.iter().any(|(t, _)| *t == tid);
        let prev = a
            .last
            .and_then(|p| a.writers.iter().find(|(t, _)| *t == p))
            .map(|w| w.1);
        let turn =
            again && a.interleaved.is_none() && prev.is_some_and(|g| self.holders(n).contains(&g));
        let a = &mut self.nodes[n].appends;
        if turn {
            a.interleaved = a.writers.first().map(|w| w.1);
        }
        if !again {
            a.writers.push((tid, tgid));
        }
        a.last = Some(tid);
    }

    /// Processes that hold the node open now.
    fn holders(&self, n: NodeId) -> BTreeSet<u32> {
        self.procs
            .iter()
            .filter(|(_, p)| p.fate == Fate::Running)
            .filter(|(_, p)| {
                self.tables[p.table]
                    .fds
                    .values()
                    .any(|e| self.files[e.file].target == Refers::Node(n))
            })
            .map(|(g, _)| *g)
            .collect()
    }

    fn truncate(&mut self, n: NodeId, tgid: u32, line: usize) {
        let node = &mut self.nodes[n];
        // Unsynced data truncated away is not lost by a crash: the program
        // threw it away itself.
        for (&w, _) in std::mem::take(&mut node.dirty).iter() {
            node.notes.push((
                "unsynced-at-exit",
                w,
                format!("moot: replaced, truncated by pid {tgid} at line {line}"),
            ));
        }
        if let Some(t) = &node.truncation
            && t.rewritten
        {
            node.notes.push((
                "truncate-in-place",
                t.tgid,
                format!("superseded: truncated again by pid {tgid} at line {line}"),
            ));
        }
        match node.content {
            Content::Empty => {}
            c => {
                node.truncation = Some(Truncation {
                    tgid,
                    line,
                    had_content: c == Content::NonEmpty,
                    rewritten: false,
                })
            }
        }
        node.content = Content::Empty;
    }

    /// A rename or link put `n` under a new name: dirty data is exposed.
    fn expose(&mut self, n: NodeId, tgid: u32, line: usize, op: &'static str) {
        let node = &mut self.nodes[n];
        if !node.dirty.is_empty() {
            // The rename is what exposes these writes; they are reported
            // by it, not again at their writers' exit.
            node.dirty.clear();
            if node.exposed.is_none() {
                node.exposed = Some(Exposure { tgid, line });
            }
        }
        if op == "rename"
            && let Some((g, _)) = &node.fsync_failed
            && *g == tgid
            && node.fsync_ignored.is_none()
        {
            node.fsync_ignored = Some((tgid, "rename"));
        }
    }

    // ------------------------------------------------------------ calls

    fn call(&mut self, c: &Call) {
        let tgid = self.tgid(c.tid, c.line);
        let a = |i: usize| c.args.get(i).map(String::as_str);
        let ok = matches!(c.ret, Ret::Ok { .. });
        let value = match &c.ret {
            Ret::Ok { value, .. } => Some(*value),
            _ => None,
        };
        match c.name.as_str() {
            "open" => self.open(c, tgid, None, a(0), a(1)),
            "openat" => self.open(c, tgid, a(0), a(1), a(2)),
            "openat2" => {
                let how = a(2).and_then(|h| strace::field(h, "flags"));
                self.open(c, tgid, a(0), a(1), how)
            }
            "creat" => self.open(c, tgid, None, a(0), Some("O_WRONLY|O_CREAT|O_TRUNC")),
            "close" if !matches!(&c.ret, Ret::Err(e) if e == "EBADF") => {
                if let Some((fd, _)) = a(0).and_then(strace::fd_arg) {
                    let t = self.table(tgid);
                    self.tables[t].fds.remove(&fd);
                }
            }
            "close_range" if ok => self.close_range(tgid, a(0), a(1), a(2)),
            "dup" => {
                if let (Some(new), Some(old)) = (value, a(0)) {
                    self.dup(tgid, old, new, false, c.line);
                }
            }
            "dup2" | "dup3" => {
                if let (Some(new), Some(old)) = (value, a(0)) {
                    let cloexec = a(2).is_some_and(|f| strace::flags(f).contains(&"O_CLOEXEC"));
                    self.dup(tgid, old, new, cloexec, c.line);
                }
            }
            "fcntl" => self.fcntl(c, tgid, value),
            "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" => self.write(c, tgid),
            "copy_file_range" | "splice" => self.write_to(c, tgid, a(2), a(4)),
            "sendfile" => self.write_to(c, tgid, a(0), a(3)),
            "fsync" | "fdatasync" => self.fsync(c, tgid),
            "sync" if ok => {
                let how = format!("sync() (pid {tgid}) at line {}", c.line);
                for n in 0..self.nodes.len() {
                    self.clean(n, &how);
                    self.clean_entries(n, &how);
                }
            }
            "syncfs" if ok => self.syncfs(c, tgid),
            "msync" if ok => {
                let sync = a(2).is_some_and(|f| strace::flags(f).contains(&"MS_SYNC"));
                if let (true, Some(start), Some(len)) = (
                    sync,
                    a(0).and_then(strace::number),
                    a(1).and_then(strace::number),
                ) {
                    let hit: Vec<NodeId> = self
                        .maps
                        .iter()
                        .filter(|m| overlaps(m, start as u64, len as u64))
                        .map(|m| m.node)
                        .collect();
                    for n in hit {
                        self.clean(n, &format!("msync at line {}", c.line));
                    }
                }
            }
            "mmap" => self.mmap(c, tgid, value),
            "munmap" if ok => {
                if let (Some(start), Some(len)) =
                    (a(0).and_then(strace::number), a(1).and_then(strace::number))
                {
                    self.maps.retain(|m| !overlaps(m, start as u64, len as u64));
                }
            }
            "sync_file_range" if ok => {
                if let Some(f) = a(0).and_then(|x| self.file_of(tgid, x, c.line))
                    && let Refers::Node(n) = f.target
                    && self.nodes[n].unsynced()
                {
                    self.nodes[n].range_synced = true;
                }
            }
            "truncate" if ok => {
                if let (Some(p), Some(len)) = (a(0).and_then(strace::string_arg), a(1))
                    && let Some(path) = self.resolve(tgid, None, &p)
                {
                    let n = self.node_at(&path);
                    self.set_size(n, tgid, len, c.line);
                }
            }
            "ftruncate" if ok => {
                if let (Some(f), Some(len)) =
                    (a(0).and_then(|x| self.file_of(tgid, x, c.line)), a(1))
                    && let Refers::Node(n) = f.target
                {
                    self.set_size(n, tgid, len, c.line);
                }
            }
            "rename" if ok => self.rename(c, tgid, Names::cwd(a(0), a(1))),
            "renameat" if ok => self.rename(c, tgid, Names::at(a(0), a(1), a(2), a(3), None)),
            "renameat2" if ok => self.rename(c, tgid, Names::at(a(0), a(1), a(2), a(3), a(4))),
            "link" if ok => self.link(c, tgid, Names::cwd(a(0), a(1))),
            "linkat" if ok => self.link(c, tgid, Names::at(a(0), a(1), a(2), a(3), a(4))),
            "symlink" if ok => self.make(c, tgid, None, a(1), Kind::Other),
            "symlinkat" if ok => self.make(c, tgid, a(1), a(2), Kind::Other),
            "mkdir" if ok => self.make(c, tgid, None, a(0), Kind::Dir),
            "mkdirat" if ok => self.make(c, tgid, a(0), a(1), Kind::Dir),
            "unlink" | "rmdir" if ok => self.remove(tgid, None, a(0), c.line),
            "unlinkat" if ok => self.remove(tgid, a(0), a(1), c.line),
            "chdir" if ok => {
                if let Some(path) = a(0)
                    .and_then(strace::string_arg)
                    .and_then(|p| self.resolve(tgid, None, &p))
                {
                    let cwd = self.proc(tgid).cwd;
                    self.cwds[cwd] = path;
                }
            }
            "fchdir" if ok => {
                let path = match a(0).and_then(strace::fd_arg) {
                    Some((_, Some(Target::Path { path, .. }))) => Some(path),
                    Some((fd, _)) => self.lookup_fd(tgid, fd).and_then(|n| self.name_of(n)),
                    None => None,
                };
                match path {
                    Some(p) => {
                        let cwd = self.proc(tgid).cwd;
                        self.cwds[cwd] = p;
                    }
                    None => self.undecided(
                        None,
                        Vec::new(),
                        format!("line {}: fchdir to a directory never seen", c.line),
                    ),
                }
            }
            "execve" | "execveat" if ok => self.exec(c, tgid),
            "clone" | "clone3" | "fork" | "vfork" => self.clone(c, tgid, value),
            _ => {}
        }
    }

    fn open(
        &mut self,
        c: &Call,
        tgid: u32,
        dirfd: Option<&str>,
        path: Option<&str>,
        flag_arg: Option<&str>,
    ) {
        let Some(path) = path.and_then(strace::string_arg) else {
            return;
        };
        let fl = flag_arg.map(strace::flags).unwrap_or_default();
        let has = |f: &str| fl.contains(&f);
        let lexical = self.resolve(tgid, dirfd, &path);
        let (fd, target) = match &c.ret {
            Ret::Ok { value, target } => (*value, target.clone()),
            Ret::Err(e) if e == "ENOENT" && !has("O_CREAT") => {
                if let Some(p) = lexical {
                    self.lose(&p, format!("found missing at line {}", c.line));
                    self.absent.insert(p);
                }
                return;
            }
            _ => return,
        };
        let name = match target {
            Some(Target::Path {
                path,
                deleted: false,
            }) => Some(path),
            Some(Target::Other(_)) => None,
            _ => lexical,
        };
        let Some(name) = name else {
            self.install(
                tgid,
                fd,
                OpenFile {
                    target: Refers::Other,
                    append: false,
                    sync: false,
                },
                has("O_CLOEXEC"),
            );
            return;
        };
        let target = if is_device(&name) {
            Refers::Other
        } else if has("O_TMPFILE") {
            // An unnamed file: it gets a name only by linkat.
            self.nodes.push(Node::new(Kind::File, Content::Empty));
            Refers::Node(self.nodes.len() - 1)
        } else {
            let created = has("O_CREAT") && (has("O_EXCL") || self.known_absent(&name));
            let n = if created {
                self.create(&name, Kind::File, tgid, c.line)
            } else {
                let n = self.node_at(&name);
                if has("O_TRUNC") && (has("O_WRONLY") || has("O_RDWR")) {
                    self.truncate(n, tgid, c.line);
                }
                n
            };
            if has("O_DIRECTORY") {
                self.nodes[n].kind = Kind::Dir;
            }
            Refers::Node(n)
        };
        self.install(
            tgid,
            fd,
            OpenFile {
                target,
                append: has("O_APPEND"),
                sync: has("O_SYNC") || has("O_DSYNC"),
            },
            has("O_CLOEXEC"),
        );
    }

    fn close_range(
        &mut self,
        tgid: u32,
        first: Option<&str>,
        last: Option<&str>,
        fl: Option<&str>,
    ) {
        let num = |s: Option<&str>| match s.map(str::trim) {
            Some("~0U") | Some("~0") => Some(i64::from(u32::MAX)),
            Some(x) => strace::number(x),
            None => None,
        };
        let (Some(first), Some(last)) = (num(first), num(last)) else {
            return;
        };
        let fl = fl.map(strace::flags).unwrap_or_default();
        if fl.contains(&"CLOSE_RANGE_UNSHARE") {
            let copy = self.tables[self.table(tgid)].clone();
            self.tables.push(copy);
            let t = self.tables.len() - 1;
            self.procs.get_mut(&tgid).expect("known").table = t;
        }
        let t = self.table(tgid);
        if fl.contains(&"CLOSE_RANGE_CLOEXEC") {
            for (_, e) in self.tables[t].fds.range_mut(first..=last) {
                e.cloexec = true;
            }
        } else {
            self.tables[t]
                .fds
                .retain(|fd, _| !(first..=last).contains(fd));
        }
    }

    fn fcntl(&mut self, c: &Call, tgid: u32, value: Option<i64>) {
        let a = |i: usize| c.args.get(i).map(String::as_str);
        let (Some(fd_arg), Some(cmd)) = (a(0), a(1)) else {
            return;
        };
        match cmd {
            "F_DUPFD" | "F_DUPFD_CLOEXEC" => {
                if let Some(new) = value {
                    self.dup(tgid, fd_arg, new, cmd == "F_DUPFD_CLOEXEC", c.line);
                }
            }
            "F_SETFD" if value.is_some() => {
                if let Some((fd, _)) = strace::fd_arg(fd_arg) {
                    let t = self.table(tgid);
                    if let Some(e) = self.tables[t].fds.get_mut(&fd) {
                        e.cloexec = a(2).is_some_and(|f| strace::flags(f).contains(&"FD_CLOEXEC"));
                    }
                }
            }
            "F_SETFL" if value.is_some() => {
                if let Some((fd, _)) = strace::fd_arg(fd_arg) {
                    let t = self.table(tgid);
                    if let Some(e) = self.tables[t].fds.get(&fd) {
                        // Only O_APPEND of the durability-relevant flags can
                        // change this way (O_SYNC cannot, on Linux).
                        self.files[e.file].append =
                            a(2).is_some_and(|f| strace::flags(f).contains(&"O_APPEND"));
                    }
                }
            }
            _ => {}
        }
    }

    fn write(&mut self, c: &Call, tgid: u32) {
        let a = |i: usize| c.args.get(i).map(String::as_str);
        let name = c.name.as_str();
        let requested = match name {
            "write" | "pwrite64" => a(2).and_then(strace::number).map(|v| v as u64),
            _ => a(1).and_then(strace::iov_total),
        };
        let rwf = if name == "pwritev2" {
            a(4).map(strace::flags).unwrap_or_default()
        } else {
            Vec::new()
        };
        let positional = matches!(name, "pwrite64" | "pwritev")
            || (name == "pwritev2" && !rwf.contains(&"RWF_APPEND"));
        let sync = rwf.contains(&"RWF_SYNC") || rwf.contains(&"RWF_DSYNC");
        self.written(c, tgid, a(0), requested, positional, sync);
    }

    fn write_to(&mut self, c: &Call, tgid: u32, out: Option<&str>, len: Option<&str>) {
        let requested = len.and_then(strace::number).map(|v| v as u64);
        self.written(c, tgid, out, requested, true, false);
    }

    fn written(
        &mut self,
        c: &Call,
        tgid: u32,
        fd_arg: Option<&str>,
        requested: Option<u64>,
        positional: bool,
        sync: bool,
    ) {
        let Some(fd_arg) = fd_arg else {
            return;
        };
        let Some(mut f) = self.file_of(tgid, fd_arg, c.line) else {
            return;
        };
        let Refers::Node(n) = f.target else {
            return;
        };
        f.sync |= sync;
        let st = self.states.entry(c.tid).or_default();
        match c.ret {
            Ret::Ok { value, .. } if value > 0 => {
                st.in_write = None;
                if requested.is_some_and(|r| (value as u64) < r) {
                    st.short = Some(n);
                } else if st.short == Some(n) {
                    // The rest of a short write: completed.
                    st.short = None;
                }
                self.dirty(n, tgid, c.tid, f, positional, c.line);
            }
            Ret::Died | Ret::Unfinished => st.in_write = Some(n),
            _ => {}
        }
    }

    fn fsync(&mut self, c: &Call, tgid: u32) {
        let Some(f) = c.args.first().and_then(|x| self.file_of(tgid, x, c.line)) else {
            return;
        };
        let Refers::Node(n) = f.target else {
            return;
        };
        let node = &mut self.nodes[n];
        if let Some((g, _)) = &node.fsync_failed
            && *g == tgid
            && node.fsync_ignored.is_none()
        {
            node.fsync_ignored = Some((tgid, "fsync retry"));
        }
        match &c.ret {
            Ret::Ok { .. } => {
                let how = format!("{} (pid {tgid}) at line {}", c.name, c.line);
                self.clean(n, &how);
                self.clean_entries(n, &how);
            }
            Ret::Err(e) if !NOT_DATA_ERRORS.contains(&e.as_str()) => {
                self.nodes[n].fsync_failed = Some((tgid, e.clone()));
            }
            _ => {}
        }
    }

    fn syncfs(&mut self, c: &Call, tgid: u32) {
        let dev = c
            .args
            .first()
            .and_then(|x| self.file_of(tgid, x, c.line))
            .and_then(|f| match f.target {
                Refers::Node(n) => self.name_of(n),
                _ => None,
            })
            .and_then(|p| self.disk.device(&p));
        let Some(dev) = dev else {
            self.undecided(
                None,
                Vec::new(),
                format!(
                    "line {}: syncfs of a filesystem the model cannot tell",
                    c.line
                ),
            );
            return;
        };
        let how = format!("syncfs (pid {tgid}) at line {}", c.line);
        let on_fs: BTreeSet<NodeId> = self
            .names
            .iter()
            .filter(|(p, _)| self.disk.device(p) == Some(dev))
            .map(|(_, n)| *n)
            .collect();
        for &n in &on_fs {
            self.clean(n, &how);
            self.clean_entries(n, &how);
        }
    }

    fn mmap(&mut self, c: &Call, tgid: u32, value: Option<i64>) {
        let a = |i: usize| c.args.get(i).map(String::as_str);
        let (Some(addr), Some(len), Some(prot), Some(fl), Some(fd)) =
            (value, a(1), a(2), a(3), a(4))
        else {
            return;
        };
        let shared = strace::flags(fl)
            .iter()
            .any(|f| *f == "MAP_SHARED" || *f == "MAP_SHARED_VALIDATE");
        if !shared || !strace::flags(prot).contains(&"PROT_WRITE") {
            return;
        }
        if let Some(f) = self.file_of(tgid, fd, c.line)
            && let Refers::Node(n) = f.target
        {
            self.maps.push(Mapping {
                start: addr as u64,
                len: strace::number(len).unwrap_or(0) as u64,
                node: n,
            });
            self.nodes[n].mapped = true;
        }
    }

    fn set_size(&mut self, n: NodeId, tgid: u32, len: &str, line: usize) {
        match strace::number(len) {
            Some(0) => self.truncate(n, tgid, line),
            Some(_) => self.nodes[n].content = Content::NonEmpty,
            None => {}
        }
    }

    fn rename(&mut self, c: &Call, tgid: u32, args: Names) {
        let (Some(old), Some(new)) = (
            args.old.and_then(strace::string_arg),
            args.new.and_then(strace::string_arg),
        ) else {
            return;
        };
        let (Some(from), Some(to)) = (
            self.resolve(tgid, args.old_dir, &old),
            self.resolve(tgid, args.new_dir, &new),
        ) else {
            self.undecided(
                None,
                Vec::new(),
                format!("line {}: rename with an unknown base", c.line),
            );
            return;
        };
        if from == to {
            return;
        }
        let exchange = args
            .flags
            .is_some_and(|f| strace::flags(f).contains(&"RENAME_EXCHANGE"));
        let n = self.node_at(&from);
        if exchange {
            let m = self.node_at(&to);
            let parked = format!("{to}\0exchange");
            self.move_tree(&to, &parked);
            self.move_tree(&from, &to);
            self.move_tree(&parked, &from);
            self.pend(&to, Pending::Placed { tgid }, c.line);
            self.pend(&from, Pending::Placed { tgid }, c.line);
            self.expose(n, tgid, c.line, "rename");
            self.expose(m, tgid, c.line, "rename");
            return;
        }
        if let Some(&m) = self.names.get(&to)
            && m != n
        {
            self.lose(
                &to,
                format!("replaced by a rename from pid {tgid} at line {}", c.line),
            );
        }
        self.move_tree(&from, &to);
        self.absent.insert(from.clone());
        self.absent.remove(&to);
        self.pend(&from, Pending::Removed { tgid }, c.line);
        self.pend(&to, Pending::Placed { tgid }, c.line);
        self.expose(n, tgid, c.line, "rename");
    }

    fn link(&mut self, c: &Call, tgid: u32, args: Names) {
        let Some(to) = args
            .new
            .and_then(strace::string_arg)
            .and_then(|p| self.resolve(tgid, args.new_dir, &p))
        else {
            return;
        };
        let empty = args
            .flags
            .is_some_and(|f| strace::flags(f).contains(&"AT_EMPTY_PATH"));
        let old = args.old.and_then(strace::string_arg).unwrap_or_default();
        let n = if empty && old.is_empty() {
            // linkat(fd, "", ..., AT_EMPTY_PATH): the fd's own file (O_TMPFILE).
            match args
                .old_dir
                .and_then(|x| self.file_of(tgid, x, c.line))
                .map(|f| f.target)
            {
                Some(Refers::Node(n)) => n,
                _ => return,
            }
        } else {
            let Some(from) = self.resolve(tgid, args.old_dir, &old) else {
                return;
            };
            self.node_at(&from)
        };
        self.names.insert(to.clone(), n);
        self.absent.remove(&to);
        self.pend(&to, Pending::Placed { tgid }, c.line);
        self.expose(n, tgid, c.line, "link");
    }

    fn make(&mut self, c: &Call, tgid: u32, dirfd: Option<&str>, path: Option<&str>, kind: Kind) {
        if let Some(p) = path
            .and_then(strace::string_arg)
            .and_then(|p| self.resolve(tgid, dirfd, &p))
        {
            self.create(&p, kind, tgid, c.line);
        }
    }

    fn remove(&mut self, tgid: u32, dirfd: Option<&str>, path: Option<&str>, line: usize) {
        if let Some(p) = path
            .and_then(strace::string_arg)
            .and_then(|p| self.resolve(tgid, dirfd, &p))
        {
            self.unname(&p, tgid, line);
        }
    }

    fn exec(&mut self, c: &Call, tgid: u32) {
        if let Some(path) = c.args.first().and_then(|p| strace::string_arg(p)) {
            let base = path.rsplit('/').next().unwrap_or(&path);
            // The kernel's comm: the file name, cut to 15 bytes.
            let comm: String = base.chars().take(15).collect();
            self.procs.get_mut(&tgid).expect("known").comm = comm;
        }
        // exec gives the process its own table, without O_CLOEXEC fds.
        let mut copy = self.tables[self.table(tgid)].clone();
        copy.fds.retain(|_, e| !e.cloexec);
        self.tables.push(copy);
        let t = self.tables.len() - 1;
        self.procs.get_mut(&tgid).expect("known").table = t;
    }

    fn clone(&mut self, c: &Call, tgid: u32, value: Option<i64>) {
        let Some(child) = value.filter(|v| *v > 0) else {
            if c.ret == Ret::Unfinished {
                self.undecided(
                    None,
                    Vec::new(),
                    format!("line {}: {} never returned", c.line, c.name),
                );
            }
            return;
        };
        let text = c.args.first().map(String::as_str).unwrap_or("");
        let flag_text = match c.name.as_str() {
            "clone" => c
                .args
                .iter()
                .find_map(|a| a.strip_prefix("flags="))
                .unwrap_or(""),
            "clone3" => strace::field(text, "flags").unwrap_or(""),
            // fork and vfork copy the fd table and the cwd.
            _ => "",
        };
        self.spawn(tgid, child as u32, &strace::flags(flag_text));
    }

    // ------------------------------------------------------------ verdicts

    fn judged(&self, path: &str) -> bool {
        !self.setup.never_judged.iter().any(|p| p == path)
            && !path.split('/').any(|c| CACHE_DIRS.contains(&c))
            && !self.disk.volatile(path)
    }

    fn comm(&self, tgid: u32) -> String {
        self.procs
            .get(&tgid)
            .map_or_else(String::new, |p| p.comm.clone())
    }

    fn verdicts(mut self) -> Truth {
        let mut names: HashMap<NodeId, Vec<String>> = HashMap::new();
        for (p, n) in &self.names {
            names.entry(*n).or_default().push(p.clone());
        }
        let mut out = Vec::new();
        let mut undecided = std::mem::take(&mut self.undecided);
        let mut push = |rule, severity, paths: &Vec<String>, pid, comm: String, why: String| {
            out.push(Expected {
                rule,
                severity,
                paths: paths.clone(),
                pid,
                comm,
                why,
            })
        };
        for (n, node) in self.nodes.iter().enumerate() {
            if node.kind != Kind::File {
                continue;
            }
            let (paths, moot) = match (names.get(&n), &node.gone) {
                (Some(p), _) => (p.clone(), false),
                (None, Some((p, _))) => (vec![p.clone()], true),
                (None, None) => continue,
            };
            if paths.is_empty() || !paths.iter().all(|p| self.judged(p)) {
                continue;
            }
            for (rule, pid, why) in &node.notes {
                push(
                    rule,
                    Severity::Low,
                    &paths,
                    *pid,
                    self.comm(*pid),
                    why.clone(),
                );
            }
            let moot_why = || format!("moot: {}", node.gone.as_ref().map_or("", |g| g.1.as_str()));
            if let Some(e) = &node.exposed {
                let (sev, why) = if moot {
                    (Severity::Low, moot_why())
                } else {
                    (Severity::High, String::new())
                };
                push(
                    "rename-without-fsync",
                    sev,
                    &paths,
                    e.tgid,
                    self.comm(e.tgid),
                    why,
                );
            }
            // The truncating process's own rewrite is its truncate-in-place
            // exposure, not a second verdict at its exit.
            let rewrite_by = node
                .truncation
                .as_ref()
                .filter(|t| t.rewritten && t.had_content && node.unsynced())
                .map(|t| t.tgid);
            for &w in node.dirty.keys() {
                if rewrite_by == Some(w) {
                    continue;
                }
                let fate = self.procs.get(&w).map(|p| &p.fate);
                let rule = match fate {
                    Some(Fate::Killed(_)) => "killed-while-dirty",
                    _ => "unsynced-at-exit",
                };
                if moot {
                    push(rule, Severity::Low, &paths, w, self.comm(w), moot_why());
                    continue;
                }
                match fate {
                    Some(Fate::Exited(_)) => push(
                        rule,
                        Severity::Medium,
                        &paths,
                        w,
                        self.comm(w),
                        String::new(),
                    ),
                    Some(Fate::Killed(_)) => {
                        push(rule, Severity::High, &paths, w, self.comm(w), String::new())
                    }
                    _ => undecided.push(Undecided {
                        rule: Some(rule),
                        paths: paths.clone(),
                        why: format!("the exit of writer {w} was never seen"),
                    }),
                }
                if node.range_synced {
                    push(
                        "sync-file-range-only",
                        Severity::Low,
                        &paths,
                        w,
                        self.comm(w),
                        "sync_file_range is not durability".into(),
                    );
                }
            }
            if let Some(t) = &node.truncation
                && t.rewritten
                && node.unsynced()
            {
                if moot {
                    push(
                        "truncate-in-place",
                        Severity::Low,
                        &paths,
                        t.tgid,
                        self.comm(t.tgid),
                        moot_why(),
                    );
                } else if t.had_content {
                    push(
                        "truncate-in-place",
                        Severity::High,
                        &paths,
                        t.tgid,
                        self.comm(t.tgid),
                        String::new(),
                    );
                } else {
                    undecided.push(Undecided {
                        rule: Some("truncate-in-place"),
                        paths: paths.clone(),
                        why: format!(
                            "truncated at line {} with a size before the trace never showed",
                            t.line
                        ),
                    });
                }
            }
            if let Some(first) = node.appends.interleaved {
                let killed = node.appends.writers.iter().any(|(_, g)| {
                    matches!(self.procs.get(g).map(|p| &p.fate), Some(Fate::Killed(_)))
                });
                let sev = match (moot, killed) {
                    (true, _) => Severity::Low,
                    (false, true) => Severity::High,
                    (false, false) => Severity::Medium,
                };
                let why = if moot { moot_why() } else { String::new() };
                push(
                    "interleaved-writers",
                    sev,
                    &paths,
                    first,
                    self.comm(first),
                    why,
                );
            }
            if let Some((g, follow)) = node.fsync_ignored {
                let (sev, why) = if moot {
                    (Severity::Low, moot_why())
                } else {
                    (Severity::High, format!("followed by a {follow}"))
                };
                push("fsync-error-ignored", sev, &paths, g, self.comm(g), why);
            }
            if node.mapped && !moot {
                undecided.push(Undecided {
                    rule: None,
                    paths: paths.clone(),
                    why: "written through a shared mapping the trace cannot see, not synced since"
                        .into(),
                });
            }
        }
        for (tid, st) in &self.states {
            let Some(&g) = self.threads.get(tid) else {
                continue;
            };
            if !matches!(self.procs.get(&g).map(|p| &p.fate), Some(Fate::Killed(_))) {
                continue;
            }
            for (n, kind) in [(st.in_write, "in flight"), (st.short, "short write")] {
                let Some(n) = n else { continue };
                let Some(paths) = names.get(&n).filter(|p| p.iter().all(|p| self.judged(p))) else {
                    continue;
                };
                push(
                    "killed-mid-write",
                    Severity::High,
                    paths,
                    g,
                    self.comm(g),
                    kind.into(),
                );
            }
        }
        // Where a directory is now, or the name it last had.
        let dir_path = |d: &NodeId| match (names.get(d), &self.nodes[*d].gone) {
            (Some(p), _) => Some((p[0].clone(), None)),
            (None, Some((p, how))) => Some((p.clone(), Some(how.clone()))),
            (None, None) => None,
        };
        for (dir, base, tgid, why) in &self.entry_notes {
            if let Some((d, _)) = dir_path(dir)
                && self.judged(&format!("{d}/{base}"))
            {
                let paths = vec![format!("{d}/{base}")];
                push(
                    "rename-without-dir-fsync",
                    Severity::Low,
                    &paths,
                    *tgid,
                    self.comm(*tgid),
                    why.clone(),
                );
            }
        }
        for ((dir, base), what) in &self.pending {
            let Some((d, gone)) = dir_path(dir) else {
                continue;
            };
            let path = format!("{d}/{base}");
            if let (Some(how), Pending::Placed { tgid }) = (gone, what) {
                if self.judged(&path) {
                    let why = format!("moot: its directory is gone ({how})");
                    push(
                        "rename-without-dir-fsync",
                        Severity::Low,
                        &vec![path],
                        *tgid,
                        self.comm(*tgid),
                        why,
                    );
                }
                continue;
            }
            if !self.judged(&path) {
                continue;
            }
            let present = self.names.get(&path);
            let paths = vec![path.clone()];
            match what {
                Pending::Placed { tgid, .. } => {
                    let (sev, why) = match present {
                        Some(_) => (Severity::Medium, String::new()),
                        None => (Severity::Low, "moot: the name is gone".to_owned()),
                    };
                    push(
                        "rename-without-dir-fsync",
                        sev,
                        &paths,
                        *tgid,
                        self.comm(*tgid),
                        why,
                    );
                }
                Pending::Created { tgid } => {
                    if present.is_some_and(|n| !self.nodes[*n].unsynced()) {
                        push(
                            "create-without-dir-fsync",
                            Severity::Low,
                            &paths,
                            *tgid,
                            self.comm(*tgid),
                            String::new(),
                        );
                    }
                }
                Pending::Removed { tgid } => {
                    if present.is_none() {
                        push(
                            "unlink-without-dir-fsync",
                            Severity::Low,
                            &paths,
                            *tgid,
                            self.comm(*tgid),
                            "the name was removed (deleted or renamed away) and its directory never fsynced".into(),
                        );
                    }
                }
            }
        }
        Truth {
            expected: out,
            undecided,
            adopted: self.adopted,
        }
    }
}

fn overlaps(m: &Mapping, start: u64, len: u64) -> bool {
    start < m.start.saturating_add(m.len) && m.start < start.saturating_add(len.max(1))
}

/// Device files are never durable storage, wherever they are.
fn is_device(path: &str) -> bool {
    path == "/dev" || path.starts_with("/dev/")
}

/// `/a/b/c` under `/a/b` -> Some("/c"); `/a/b` itself -> Some("").
fn under<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(dir)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// `/a/b` -> ("/a", "b"); `/a` -> ("/", "a").
fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (".", path),
    }
}

/// Lexical normal form: no `.`, `..` or repeated `/`.
pub fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /dev/shm is tmpfs; everything is on one filesystem.
    struct FakeDisk;

    impl Disk for FakeDisk {
        fn volatile(&self, path: &str) -> bool {
            path.starts_with("/dev/") || path.starts_with("/proc/")
        }
        fn device(&self, _: &str) -> Option<u64> {
            Some(1)
        }
    }

    fn truth_of(before: &[(&str, Before)], trace: &str) -> Truth {
        let setup = Setup {
            root: "/w".into(),
            cwd: "/w".into(),
            before: before.iter().map(|(p, b)| (p.to_string(), *b)).collect(),
            never_judged: vec!["/dev/shm/trace".into()],
        };
        truth(&strace::parse(trace), &setup, &FakeDisk)
    }

    /// The counted verdicts: (rule, first path), sorted.
    fn counted(t: &Truth) -> Vec<(&'static str, String)> {
        let mut v: Vec<_> = t
            .expected
            .iter()
            .filter(|e| e.severity >= Severity::Medium)
            .map(|e| (e.rule, e.paths[0].clone()))
            .collect();
        v.sort();
        v
    }

    /// The trace, with `before` on disk, gives exactly the counted verdicts
    /// `want` (rule, first path); the truth, for further checks.
    fn assert_counted(before: &[(&str, Before)], trace: &str, want: &[(&str, &str)]) -> Truth {
        let t = truth_of(before, trace);
        let want: Vec<(&str, String)> = want.iter().map(|&(r, p)| (r, p.to_owned())).collect();
        assert_eq!(counted(&t), want);
        t
    }

    fn low(t: &Truth) -> Vec<(&'static str, String, String)> {
        t.expected
            .iter()
            .filter(|e| e.severity == Severity::Low)
            .map(|e| (e.rule, e.paths[0].clone(), e.why.clone()))
            .collect()
    }

    const SAVE_DIRTY: &str = "\
100 openat(AT_FDCWD</w>, \"a.tmp\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 3</w/a.tmp>
100 write(3</w/a.tmp>, \"data\", 4) = 4
100 close(3</w/a.tmp>) = 0
100 rename(\"a.tmp\", \"a\") = 0
";

    #[test]
    fn write_fsync_rename_and_directory_fsync_is_clean() {
        let t = assert_counted(
            &[],
            "\
100 openat(AT_FDCWD</w>, \"a.tmp\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 3</w/a.tmp>
100 write(3</w/a.tmp>, \"data\", 4) = 4
100 fsync(3</w/a.tmp>) = 0
100 close(3</w/a.tmp>) = 0
100 rename(\"a.tmp\", \"a\") = 0
100 openat(AT_FDCWD</w>, \"/w\", O_RDONLY|O_DIRECTORY) = 3</w>
100 fsync(3</w>) = 0
100 close(3</w>) = 0
100 +++ exited with 0 +++
",
            &[],
        );
        assert!(t.undecided.is_empty(), "{:?}", t.undecided);
    }

    #[test]
    fn a_rename_of_dirty_data_is_flagged_once() {
        let t = assert_counted(
            &[],
            &format!("{SAVE_DIRTY}100 +++ exited with 0 +++\n"),
            &[
                ("rename-without-dir-fsync", "/w/a"),
                ("rename-without-fsync", "/w/a"),
            ],
        );
        // The rename exposed the writes: not again at the writer's exit.
        assert!(t.expected.iter().all(|e| e.rule != "unsynced-at-exit"));
        assert_eq!(
            t.expected
                .iter()
                .find(|e| e.rule == "rename-without-fsync")
                .unwrap()
                .pid,
            100
        );
    }

    #[test]
    fn durability_another_process_supplies_later_closes_the_exposure() {
        let t = assert_counted(
            &[],
            "\
100 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f) = 101
101 openat(AT_FDCWD</w>, \"log\", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3</w/log>
101 write(3</w/log>, \"x\", 1) = 1
101 +++ exited with 0 +++
100 vfork( <unfinished ...>
102 execve(\"/usr/bin/sync\", [\"sync\", \"log\"], 0x5 /* 3 vars */ <unfinished ...>
100 <... vfork resumed>) = 102
102 <... execve resumed>) = 0
102 openat(AT_FDCWD</w>, \"log\", O_RDONLY|O_NONBLOCK) = 3</w/log>
102 fsync(3</w/log>) = 0
102 +++ exited with 0 +++
100 +++ exited with 0 +++
",
            &[],
        );
        let l = low(&t);
        assert!(
            l.iter().any(|(r, p, why)| *r == "unsynced-at-exit"
                && p == "/w/log"
                && why.starts_with("closed: made durable later by fsync (pid 102)")),
            "{l:?}"
        );
        // The file's name is still pending in /w: low, not counted.
        assert!(
            l.iter()
                .any(|(r, p, _)| *r == "create-without-dir-fsync" && p == "/w/log")
        );
    }

    #[test]
    fn a_deleted_temporary_file_is_moot() {
        let t = assert_counted(
            &[],
            "\
100 openat(AT_FDCWD</w>, \"scratch\", O_RDWR|O_CREAT|O_EXCL, 0600) = 3</w/scratch>
100 write(3</w/scratch>, \"tmp\", 3) = 3
100 unlinkat(AT_FDCWD</w>, \"scratch\", 0) = 0
100 write(3</w/scratch (deleted)>, \"more\", 4) = 4
100 +++ exited with 0 +++
",
            &[],
        );
        assert!(low(&t).iter().any(|(r, p, why)| *r == "unsynced-at-exit"
            && p == "/w/scratch"
            && why.starts_with("moot: deleted by pid 100")));
    }

    #[test]
    fn link_then_unlink_moves_the_data_with_the_name() {
        assert_counted(
            &[("/w/objects", Before::Dir)],
            "\
100 mkdir(\"objects/ab\", 0777) = 0
100 openat(AT_FDCWD</w>, \"objects/ab/tmp_obj_1\", O_RDWR|O_CREAT|O_EXCL, 0444) = 3</w/objects/ab/tmp_obj_1>
100 write(3</w/objects/ab/tmp_obj_1>, \"blob\", 4) = 4
100 close(3</w/objects/ab/tmp_obj_1>) = 0
100 link(\"objects/ab/tmp_obj_1\", \"objects/ab/cdef\") = 0
100 unlink(\"objects/ab/tmp_obj_1\") = 0
100 +++ exited with 0 +++
",
            &[
                ("rename-without-dir-fsync", "/w/objects/ab/cdef"),
                ("rename-without-fsync", "/w/objects/ab/cdef"),
            ],
        );
    }

    #[test]
    fn a_renamed_directory_takes_its_files_and_their_verdicts() {
        assert_counted(
            &[],
            "\
100 mkdir(\"d.tmp\", 0755) = 0
100 openat(AT_FDCWD</w>, \"d.tmp/f\", O_WRONLY|O_CREAT|O_EXCL, 0644) = 3</w/d.tmp/f>
100 write(3</w/d.tmp/f>, \"f\", 1) = 1
100 rename(\"d.tmp\", \"d\") = 0
100 write(3</w/d/f>, \"g\", 1) = 1
100 +++ exited with 0 +++
",
            &[
                ("rename-without-dir-fsync", "/w/d"),
                ("unsynced-at-exit", "/w/d/f"),
            ],
        );
    }

    #[test]
    fn a_kill_while_dirty_and_inside_a_write() {
        let t = assert_counted(
            &[],
            "\
100 openat(AT_FDCWD</w>, \"log\", O_WRONLY|O_CREAT|O_APPEND, 0666) = 3</w/log>
100 write(3</w/log>, \"abc\", 3) = 3
100 write(3</w/log>, \"defgh\", 5 <unfinished ...>
100 +++ killed by SIGKILL +++
",
            &[
                ("killed-mid-write", "/w/log"),
                ("killed-while-dirty", "/w/log"),
            ],
        );
        // Killed, not exited: no exit verdict.
        assert!(t.expected.iter().all(|e| e.rule != "unsynced-at-exit"));
    }

    const REWRITE: &str = "\
100 openat(AT_FDCWD</w>, \"state.json\", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3</w/state.json>
100 write(3</w/state.json>, \"{}\", 2) = 2
100 +++ exited with 0 +++
";

    #[test]
    fn truncating_a_file_with_content_and_rewriting_it() {
        // One verdict: the truncating process's rewrite is its
        // truncate-in-place, not a second one at its exit.
        assert_counted(
            &[("/w/state.json", Before::File { size: 10 })],
            REWRITE,
            &[("truncate-in-place", "/w/state.json")],
        );
        // An empty file loses nothing to the truncation.
        assert_counted(
            &[("/w/state.json", Before::File { size: 0 })],
            REWRITE,
            &[("unsynced-at-exit", "/w/state.json")],
        );
        // Outside the snapshot, the size before is unknown: undecided.
        let t = assert_counted(
            &[],
            &REWRITE.replace("/w", "/elsewhere"),
            &[("unsynced-at-exit", "/elsewhere/state.json")],
        );
        assert_eq!(t.undecided.len(), 1);
        assert_eq!(t.undecided[0].rule, Some("truncate-in-place"));
    }

    #[test]
    fn data_truncated_away_by_another_process_is_not_lost_by_a_crash() {
        let trace = "\
100 openat(AT_FDCWD</w>, \"log\", O_WRONLY|O_CREAT, 0666) = 3</w/log>
100 write(3</w/log>, \"old\", 3) = 3
100 +++ exited with 0 +++
200 openat(AT_FDCWD</w>, \"log\", O_WRONLY|O_TRUNC) = 3</w/log>
200 write(3</w/log>, \"new\", 3) = 3
200 fsync(3</w/log>) = 0
200 +++ exited with 0 +++
";
        let t = truth_of(&[], trace);
        assert!(counted(&t).is_empty(), "{:?}", t.expected);
    }

    #[test]
    fn inherited_output_devices_and_tmpfs_are_not_judged() {
        let t = assert_counted(
            &[],
            "\
100 write(1</w/out.log>, \"hello\\n\", 6) = 6
100 dup2(1</w/out.log>, 5) = 5</w/out.log>
100 write(5</w/out.log>, \"again\\n\", 6) = 6
100 openat(AT_FDCWD</w>, \"/dev/shm/x\", O_WRONLY|O_CREAT, 0600) = 3</dev/shm/x>
100 write(3</dev/shm/x>, \"x\", 1) = 1
100 openat(AT_FDCWD</w>, \"/dev/null\", O_WRONLY) = 4</dev/null<char 1:3>>
100 write(4</dev/null<char 1:3>>, \"x\", 1) = 1
100 +++ exited with 0 +++
",
            &[],
        );
        assert!(t.undecided.is_empty());
    }

    #[test]
    fn exec_closes_cloexec_fds_and_keeps_the_others() {
        let body = |flags: &str| {
            format!(
                "\
100 openat(AT_FDCWD</w>, \"a\", O_WRONLY|O_CREAT|O_EXCL{flags}, 0644) = 3</w/a>
100 execve(\"/bin/prog\", [\"prog\"], 0x1 /* 1 var */) = 0
100 write(3, \"x\", 1) = 1
100 +++ exited with 0 +++
"
            )
        };
        let t = assert_counted(&[], &body(""), &[("unsynced-at-exit", "/w/a")]);
        assert_eq!(t.expected[0].comm, "prog");
        let t = assert_counted(&[], &body("|O_CLOEXEC"), &[]);
        assert!(t.undecided[0].why.contains("fd 3 was never seen opened"));
    }

    #[test]
    fn processes_taking_turns_at_appending_interleave() {
        assert_counted(
            &[],
            "\
100 openat(AT_FDCWD</w>, \"journal\", O_WRONLY|O_CREAT|O_APPEND, 0644) = 3</w/journal>
100 clone(child_stack=NULL, flags=SIGCHLD, child_tidptr=0x1) = 101
100 write(3</w/journal>, \"a1\", 2) = 2
101 write(3</w/journal>, \"b1\", 2) = 2
100 write(3</w/journal>, \"a2\", 2) = 2
101 fsync(3</w/journal>) = 0
101 +++ exited with 0 +++
100 +++ exited with 0 +++
",
            &[("interleaved-writers", "/w/journal")],
        );
    }

    #[test]
    fn an_ignored_fsync_error() {
        assert_counted(
            &[],
            "\
100 openat(AT_FDCWD</w>, \"db\", O_RDWR|O_CREAT|O_EXCL, 0644) = 3</w/db>
100 write(3</w/db>, \"x\", 1) = 1
100 fsync(3</w/db>) = -1 EIO (Input/output error)
100 fsync(3</w/db>) = 0
100 +++ exited with 0 +++
",
            &[("fsync-error-ignored", "/w/db")],
        );
    }
}
