//! Where reports go. Files are written the way we tell others to write
//! theirs: into a temp file beside the target, fsynced, renamed into place,
//! and the directory fsynced, so a crash leaves the old file or the new one,
//! never a torn one. Stdout, FIFOs and character devices stream, and a
//! closed pipe is not an error.
//!
//! The auditor runs as root, often in directories others can write: a
//! destination is resolved once (a symlink's target is what gets replaced,
//! a device node or FIFO is written into, never replaced), temp names are
//! unguessable and created O_EXCL|O_NOFOLLOW, and every file it creates is
//! 0600, since reports hold root's command lines and every traced path.

use std::{
    ffi::CString,
    fs::File,
    io::{self, BufWriter, Write},
    os::unix::{
        ffi::OsStrExt,
        fs::{FileTypeExt, OpenOptionsExt},
        io::FromRawFd,
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicPtr, Ordering},
};

use crate::{error::UserError, private};

/// Free space a destination directory must have before the command runs:
/// a report is small, but a filesystem this close to full fails it after
/// the run, when the work is lost.
const MIN_FREE_BYTES: u64 = 4 << 20;

pub enum Output {
    Stdout(io::Stdout),
    File(AtomicFile),
    /// A FIFO, a character device or one of our own fds (`/dev/stdout`):
    /// written into as it is, never replaced.
    Stream(File),
    /// A stream read while it grows (`attach --format jsonl --output`): an
    /// append-only log, written line by line and fsynced at each checkpoint,
    /// the way such logs must be written (a report file instead appears
    /// whole, by rename).
    Log(LogFile),
}

impl Output {
    /// Opens the destination now, so an unwritable path, a directory too
    /// full for the report or a device that cannot be opened fails before
    /// any work is done.
    pub fn open(path: Option<&Path>) -> Result<Output, UserError> {
        match path {
            None => Ok(Output::Stdout(io::stdout())),
            Some(p) => Ok(match destination(p)? {
                Destination::Stdout => Output::Stdout(io::stdout()),
                Destination::Stream(f) => Output::Stream(f),
                Destination::Regular(real) => Output::File(AtomicFile::at(&real, p)?),
            }),
        }
    }

    /// A log at `path` that readers can follow as it grows.
    pub fn open_log(path: &Path) -> Result<Output, UserError> {
        Ok(match destination(path)? {
            Destination::Stdout => Output::Stdout(io::stdout()),
            Destination::Stream(f) => Output::Stream(f),
            Destination::Regular(real) => Output::Log(LogFile::create(&real, path)?),
        })
    }

    /// Makes what was written so far durable (logs only; the others become
    /// durable as a whole on commit).
    pub fn checkpoint(&mut self) -> io::Result<()> {
        match self {
            Output::Log(l) => l.file.sync_data(),
            _ => Ok(()),
        }
    }

    /// Writes and flushes one chunk (a line, or a whole report). A reader
    /// that went away (EPIPE) stops output quietly.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> io::Result<()> {
        let quiet_epipe = |r: io::Result<()>| match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        };
        match self {
            Output::Stdout(s) => {
                let mut lock = s.lock();
                quiet_epipe(lock.write_all(bytes).and_then(|_| lock.flush()))
            }
            Output::Stream(f) => quiet_epipe(f.write_all(bytes)),
            Output::File(f) => f.writer.write_all(bytes),
            Output::Log(l) => l.file.write_all(bytes),
        }
    }

    /// Makes a file output durable and visible under its name.
    pub fn commit(self) -> io::Result<()> {
        match self {
            Output::Stdout(_) | Output::Stream(_) => Ok(()),
            Output::File(f) => f.commit(),
            Output::Log(l) => {
                l.file.sync_all()?;
                sync_parent(&l.path)
            }
        }
    }

    pub fn is_terminal(&self) -> bool {
        use std::io::IsTerminal;
        match self {
            Output::Stdout(s) => s.is_terminal(),
            Output::Stream(f) => f.is_terminal(),
            _ => false,
        }
    }
}

/// For writers that take any `Write` (a recording): the same destinations.
impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout(s) => s.write(buf),
            Output::Stream(f) => f.write(buf),
            Output::File(f) => f.write(buf),
            Output::Log(l) => l.file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(s) => s.flush(),
            Output::Stream(f) => f.flush(),
            Output::File(f) => f.flush(),
            Output::Log(l) => l.file.flush(),
        }
    }
}

/// What a `--output` path turned out to be.
enum Destination {
    Stdout,
    Stream(File),
    /// A regular file (or a new name) to replace, symlinks resolved.
    Regular(PathBuf),
}

fn cannot_write(path: &Path, e: impl std::fmt::Display) -> UserError {
    UserError::new(format!("cannot write --output {}: {e}", path.display()))
}

/// Looks at `path` once and decides how to write there.
fn destination(path: &Path) -> Result<Destination, UserError> {
    if path == Path::new("-") {
        return Ok(Destination::Stdout);
    }
    if let Some(fd) = own_fd(path) {
        // SAFETY: dup of an fd number; the result is ours to own.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(cannot_write(path, io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd nothing else owns.
        return Ok(Destination::Stream(unsafe { File::from_raw_fd(dup) }));
    }
    match std::fs::metadata(path) {
        Ok(m) => {
            let t = m.file_type();
            if t.is_dir() {
                Err(UserError::new(format!(
                    "--output {}: is a directory",
                    path.display()
                )))
            } else if t.is_fifo() || t.is_char_device() {
                open_stream(path).map(Destination::Stream)
            } else if t.is_file() {
                std::fs::canonicalize(path)
                    .map(Destination::Regular)
                    .map_err(|e| cannot_write(path, e))
            } else {
                Err(UserError::new(format!(
                    "--output {}: is a block device or socket; give a file path",
                    path.display()
                )))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            dangling_target(path).map(Destination::Regular)
        }
        Err(e) => Err(cannot_write(path, e)),
    }
}

/// `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`: the fd we
/// already hold, written as it is (replacing what it points to would turn
/// the caller's terminal or pipe into a file).
fn own_fd(path: &Path) -> Option<i32> {
    let s = path.to_str()?;
    match s {
        "/dev/stdout" => Some(1),
        "/dev/stderr" => Some(2),
        _ => s
            .strip_prefix("/dev/fd/")
            .or_else(|| s.strip_prefix("/proc/self/fd/"))
            .and_then(|n| n.parse().ok()),
    }
}

/// Opens a FIFO or character device for writing in place, and checks that
/// what got opened is still one (not a file swapped in meanwhile).
fn open_stream(path: &Path) -> Result<File, UserError> {
    let f = File::options()
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| cannot_write(path, e))?;
    let t = f.metadata().map_err(|e| cannot_write(path, e))?.file_type();
    if !(t.is_fifo() || t.is_char_device()) {
        return Err(cannot_write(path, "changed while it was opened"));
    }
    Ok(f)
}

/// A path that does not exist, or a symlink to a name that does not exist
/// yet: the name the file will have.
fn dangling_target(path: &Path) -> Result<PathBuf, UserError> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p).map_err(|e| cannot_write(path, e))?;
                p = match p.parent() {
                    Some(dir) => dir.join(to),
                    None => to,
                };
            }
            Ok(_) => return Err(cannot_write(path, "changed while it was looked at")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(cannot_write(path, e)),
        }
    }
    Err(cannot_write(path, "too many levels of symbolic links"))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Refuses a destination directory too full to take the report, before the
/// command runs rather than after.
fn check_room(dir: &Path, shown: &Path) -> Result<(), UserError> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|e| cannot_write(shown, e))?;
    // SAFETY: zeroed plain struct, filled by statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(cannot_write(shown, io::Error::last_os_error()));
    }
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    let inodes = (st.f_files > 0).then_some(st.f_favail as u64);
    match room_problem(free, inodes) {
        Some(why) => Err(UserError::new(format!(
            "--output {}: {why} in {}: free some space there or write the report elsewhere",
            shown.display(),
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// Why a directory with `free` bytes and `inodes` free inodes (None when
/// the filesystem does not count them) cannot take a report.
fn room_problem(free: u64, inodes: Option<u64>) -> Option<String> {
    if free < MIN_FREE_BYTES {
        return Some(format!("only {} KiB free", free >> 10));
    }
    if inodes == Some(0) {
        return Some("no free inodes".into());
    }
    None
}

/// An append-only log file, written unbuffered so each line is visible to a
/// reader at once. A new file (0600) takes the name at the start, by
/// rename, so whatever was there is replaced, not truncated in place.
pub struct LogFile {
    path: PathBuf,
    file: File,
}

impl LogFile {
    fn create(real: &Path, shown: &Path) -> Result<LogFile, UserError> {
        let mut staged = AtomicFile::at(real, shown)?;
        staged.publish().map_err(|e| cannot_write(shown, e))?;
        let file = staged
            .writer
            .get_ref()
            .try_clone()
            .map_err(|e| cannot_write(shown, e))?;
        Ok(LogFile {
            path: real.to_path_buf(),
            file,
        })
    }
}

/// fsyncs the directory holding `path`, so a new or renamed name is durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    File::open(parent_dir(path))?.sync_all()
}

/// A file that appears under its final name only once complete and durable.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: BufWriter<File>,
    committed: bool,
    slot: Option<usize>,
}

impl AtomicFile {
    /// A new regular file at `target` (a symlink there: at its target).
    pub fn create(target: &Path) -> Result<AtomicFile, UserError> {
        match destination(target)? {
            Destination::Regular(real) => AtomicFile::at(&real, target),
            _ => Err(cannot_write(target, "not a regular file")),
        }
    }

    /// Stages a file for `real`, a resolved path; `shown` is the name the
    /// user gave, for messages.
    fn at(real: &Path, shown: &Path) -> Result<AtomicFile, UserError> {
        let name = real.file_name().ok_or_else(|| {
            UserError::new(format!("--output {}: not a file path", shown.display()))
        })?;
        let dir = parent_dir(real);
        check_room(dir, shown)?;
        let (temp, file) =
            private::create_unique(dir, &format!(".{}.", name.to_string_lossy()), ".tmp")
                .map_err(|e| cannot_write(shown, e))?;
        let slot = temp_files::register(&temp);
        Ok(AtomicFile {
            target: real.to_path_buf(),
            temp,
            writer: BufWriter::new(file),
            committed: false,
            slot,
        })
    }

    /// Renames the file into place and fsyncs the directory.
    fn publish(&mut self) -> io::Result<()> {
        std::fs::rename(&self.temp, &self.target)?;
        self.committed = true;
        temp_files::unregister(self.slot.take());
        sync_parent(&self.target)
    }

    /// Flushes, fsyncs, renames into place and fsyncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_all()?;
        self.publish()
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
            temp_files::unregister(self.slot.take());
        }
    }
}

/// Removes the temp files of outputs not committed yet; async-signal-safe,
/// for handlers that exit at once.
pub fn remove_temp_files() {
    temp_files::remove_all();
}

/// Temp files in flight, kept where a signal handler can reach them: a
/// SIGINT or SIGTERM that ends the process removes them rather than leave
/// them beside the report.
mod temp_files {
    use super::*;

    const SLOTS: usize = 16;
    static TEMPS: [AtomicPtr<libc::c_char>; SLOTS] =
        [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
    static HANDLERS: std::sync::Once = std::sync::Once::new();

    /// Records `path`; None when every slot is taken (the file is then
    /// removed on drop only).
    pub(super) fn register(path: &Path) -> Option<usize> {
        HANDLERS.call_once(install_handlers);
        let c = CString::new(path.as_os_str().as_bytes()).ok()?;
        // Never freed: a handler may be reading it at any moment, and a
        // process makes a handful of these.
        let ptr = c.into_raw();
        let slot = TEMPS.iter().position(|s| {
            s.compare_exchange(
                std::ptr::null_mut(),
                ptr,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        });
        if slot.is_none() {
            // SAFETY: ptr came from into_raw just above and was not shared.
            drop(unsafe { CString::from_raw(ptr) });
        }
        slot
    }

    pub(super) fn unregister(slot: Option<usize>) {
        if let Some(i) = slot {
            TEMPS[i].store(std::ptr::null_mut(), Ordering::Release);
        }
    }

    pub(super) fn remove_all() {
        for s in &TEMPS {
            let p = s.swap(std::ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                // SAFETY: a NUL-terminated path that is never freed;
                // unlink is async-signal-safe.
                unsafe { libc::unlink(p) };
            }
        }
    }

    extern "C" fn on_fatal_signal(sig: libc::c_int) {
        remove_all();
        // SAFETY: signal and raise are async-signal-safe; the default
        // action then ends the process as the signal meant to.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }

    /// Only where nothing else handles the signal yet: commands that stop
    /// cleanly on SIGINT install their own, and drop removes the file.
    fn install_handlers() {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: queries and sets a disposition; the handler is
            // async-signal-safe.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_DFL
                {
                    libc::signal(sig, on_fatal_signal as *const () as libc::sighandler_t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch;

    #[test]
    fn file_appears_only_on_commit() {
        let d = scratch("output-commit");
        let target = d.join("report.json");
        let mut out = Output::open(Some(&target)).unwrap();
        out.write_chunk(b"{}").unwrap();
        assert!(!target.exists());
        out.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{}");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn abandoned_output_leaves_nothing() {
        let d = scratch("output-abandon");
        let target = d.join("report.json");
        std::fs::write(&target, b"old").unwrap();
        let mut out = Output::open(Some(&target)).unwrap();
        out.write_chunk(b"new").unwrap();
        drop(out);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    }

    #[test]
    fn a_log_is_readable_line_by_line_before_commit() {
        let d = scratch("output-log");
        let target = d.join("findings.jsonl");
        let mut out = Output::open_log(&target).unwrap();
        out.write_chunk(b"{\"a\":1}\n").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{\"a\":1}\n");
        out.checkpoint().unwrap();
        out.write_chunk(b"{\"b\":2}\n").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap().lines().count(), 2);
    }

    #[test]
    fn a_stale_temp_file_never_blocks_a_later_run() {
        let d = scratch("output-stale");
        let target = d.join("report.json");
        // What a killed run with our pid left under the old fixed name.
        let stale = d.join(format!(".report.json.{}.tmp", std::process::id()));
        std::fs::write(&stale, b"stale").unwrap();
        let mut out = Output::open(Some(&target)).unwrap();
        out.write_chunk(b"{}").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{}");
        assert_eq!(
            std::fs::read(&stale).unwrap(),
            b"stale",
            "not ours to touch"
        );
    }

    #[test]
    fn temp_names_are_not_predictable() {
        let d = scratch("output-names");
        let target = d.join("report.json");
        let a = AtomicFile::create(&target).unwrap();
        let b = AtomicFile::create(&target).unwrap();
        assert_ne!(a.temp, b.temp);
        let name = a.temp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains(&std::process::id().to_string()), "{name}");
    }

    #[test]
    fn reports_and_logs_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: umask has no preconditions; 022 is the usual default.
        unsafe { libc::umask(0o022) };
        let d = scratch("output-mode");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let report = d.join("report.json");
        std::fs::write(&report, b"old, world-readable").unwrap();
        let out = Output::open(Some(&report)).unwrap();
        out.commit().unwrap();
        assert_eq!(mode(&report), 0o600);
        let log = d.join("findings.jsonl");
        std::fs::write(&log, b"old").unwrap();
        let mut out = Output::open_log(&log).unwrap();
        assert_eq!(mode(&log), 0o600);
        assert_eq!(
            std::fs::read(&log).unwrap(),
            b"",
            "a new file took the name"
        );
        out.write_chunk(b"x\n").unwrap();
        out.commit().unwrap();
    }

    #[test]
    fn a_symlink_is_followed_once_and_its_target_replaced() {
        let d = scratch("output-symlink");
        let real = d.join("real.json");
        std::fs::write(&real, b"old").unwrap();
        let link = d.join("latest.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        let mut out = Output::open(Some(&link)).unwrap();
        out.write_chunk(b"new").unwrap();
        out.commit().unwrap();
        assert!(link.is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A link to a name that does not exist yet creates that name.
        let dangling = d.join("next.json");
        std::os::unix::fs::symlink(d.join("sub-less-target.json"), &dangling).unwrap();
        let out = Output::open(Some(&dangling)).unwrap();
        out.commit().unwrap();
        assert!(d.join("sub-less-target.json").is_file());
        assert!(dangling.is_symlink());
    }

    #[test]
    fn a_fifo_is_streamed_into_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let d = scratch("output-fifo");
        let fifo = d.join("pipe");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A reader that never blocks: a write lands in the pipe's buffer.
        let mut reader = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let mut out = Output::open(Some(&fifo)).unwrap();
        out.write_chunk(b"report\n").unwrap();
        out.commit().unwrap();
        let mut got = Vec::new();
        let _ = io::Read::read_to_end(&mut reader, &mut got);
        assert_eq!(got, b"report\n");
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no temp file");
    }

    #[test]
    fn dash_and_our_own_fds_are_streams() {
        assert!(matches!(
            Output::open(Some(Path::new("-"))),
            Ok(Output::Stdout(_))
        ));
        assert!(matches!(
            Output::open(Some(Path::new("/dev/stdout"))),
            Ok(Output::Stream(_))
        ));
        assert_eq!(own_fd(Path::new("/proc/self/fd/7")), Some(7));
        assert_eq!(own_fd(Path::new("/dev/fd/x")), None);
    }

    #[test]
    fn a_nearly_full_directory_is_refused_up_front() {
        assert!(room_problem(1 << 30, Some(1000)).is_none());
        assert!(room_problem(1 << 30, None).is_none());
        assert_eq!(
            room_problem(100 << 10, Some(10)).unwrap(),
            "only 100 KiB free"
        );
        assert_eq!(room_problem(1 << 30, Some(0)).unwrap(), "no free inodes");
    }

    #[test]
    fn unwritable_destination_is_a_user_error() {
        let err = Output::open(Some(Path::new("/nonexistent-dir/x.json")))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("cannot write --output /nonexistent-dir/x.json")
        );
        let d = scratch("output-isdir");
        let err = Output::open(Some(&d)).err().unwrap();
        assert!(err.to_string().contains("is a directory"));
    }
}
