//! Where reports go. Files are written the way we tell others to write
//! theirs: into a temp file beside the target, fsynced, renamed into place,
//! and the directory fsynced, so a crash leaves the old file or the new one,
//! never a torn one. Stdout streams, and a closed pipe is not an error.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::error::UserError;

pub enum Output {
    Stdout(io::Stdout),
    File(AtomicFile),
    /// A stream read while it grows (`attach --format jsonl --output`): an
    /// append-only log, written line by line and fsynced at each checkpoint,
    /// the way such logs must be written (a report file instead appears
    /// whole, by rename).
    Log(LogFile),
}

impl Output {
    /// Opens the destination now, so an unwritable path fails before any
    /// work is done.
    pub fn open(path: Option<&Path>) -> Result<Output, UserError> {
        match path {
            None => Ok(Output::Stdout(io::stdout())),
            Some(p) => AtomicFile::create(p).map(Output::File),
        }
    }

    /// A log at `path` that readers can follow as it grows.
    pub fn open_log(path: &Path) -> Result<Output, UserError> {
        LogFile::create(path).map(Output::Log)
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
        match self {
            Output::Stdout(s) => {
                let mut lock = s.lock();
                match lock.write_all(bytes).and_then(|_| lock.flush()) {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                    other => other,
                }
            }
            Output::File(f) => f.writer.write_all(bytes),
            Output::Log(l) => l.file.write_all(bytes),
        }
    }

    /// Makes a file output durable and visible under its name.
    pub fn commit(self) -> io::Result<()> {
        match self {
            Output::Stdout(_) => Ok(()),
            Output::File(f) => f.commit(),
            Output::Log(l) => {
                l.file.sync_all()?;
                sync_parent(&l.path)
            }
        }
    }

    pub fn is_terminal(&self) -> bool {
        use std::io::IsTerminal;
        matches!(self, Output::Stdout(s) if s.is_terminal())
    }
}

/// An append-only log file, written unbuffered so each line is visible to a
/// reader at once.
pub struct LogFile {
    path: PathBuf,
    file: File,
}

impl LogFile {
    fn create(path: &Path) -> Result<LogFile, UserError> {
        if path.is_dir() {
            return Err(UserError::new(format!(
                "--output {}: is a directory",
                path.display()
            )));
        }
        let file = File::create(path).map_err(|e| {
            UserError::new(format!("cannot write --output {}: {e}", path.display()))
        })?;
        // The new name must survive a crash too.
        sync_parent(path).map_err(|e| {
            UserError::new(format!("cannot write --output {}: {e}", path.display()))
        })?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
        })
    }
}

/// fsyncs the directory holding `path`, so a new or renamed name is durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// A file that appears under its final name only once complete and durable.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: BufWriter<File>,
    committed: bool,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<AtomicFile, UserError> {
        let name = target.file_name().ok_or_else(|| {
            UserError::new(format!("--output {}: not a file path", target.display()))
        })?;
        if target.is_dir() {
            return Err(UserError::new(format!(
                "--output {}: is a directory",
                target.display()
            )));
        }
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let temp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| {
                UserError::new(format!("cannot write --output {}: {e}", target.display()))
            })?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            temp,
            writer: BufWriter::new(file),
            committed: false,
        })
    }

    /// Flushes, fsyncs, renames into place and fsyncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_all()?;
        std::fs::rename(&self.temp, &self.target)?;
        self.committed = true;
        sync_parent(&self.target)
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("auditor-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn file_appears_only_on_commit() {
        let d = scratch("commit");
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
        let d = scratch("abandon");
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
        let d = scratch("log");
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
    fn unwritable_destination_is_a_user_error() {
        let err = Output::open(Some(Path::new("/nonexistent-dir/x.json")))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("cannot write --output /nonexistent-dir/x.json")
        );
        let d = scratch("isdir");
        let err = Output::open(Some(&d)).err().unwrap();
        assert!(err.to_string().contains("is a directory"));
    }
}
