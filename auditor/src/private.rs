//! Files and names only root may see into. The auditor runs as root in
//! directories others can write (`/var/tmp`, a shared build tree), and what
//! it writes holds root's command lines and the paths of every traced
//! process: so its names are unguessable, it creates only new files
//! (O_EXCL), never through a symlink (O_NOFOLLOW), and readable by the
//! owner alone.

use std::{
    fs::File,
    io,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// Mode of every file the auditor creates: reports, recordings, exports,
/// logs, crashtest images.
pub const FILE_MODE: u32 = 0o600;

/// 16 hex digits from the kernel's random pool, for names a local user
/// must not be able to predict and create first.
pub fn random_hex() -> io::Result<String> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: writes at most the remaining length into our buffer.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates a new file at `path`, mode 0600, failing if anything (a file,
/// a symlink planted there) already has the name.
pub fn create_new(path: &Path) -> io::Result<File> {
    File::options()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens `path` for appending (a command's output log), creating it 0600;
/// a device such as /dev/null is opened as it is, a symlink planted at the
/// name is not followed.
pub fn open_append(path: &Path) -> io::Result<File> {
    File::options()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
}

/// Creates a new file in `dir` named `prefix` + random + `suffix`; a name
/// taken (a stale file from a killed run, or one planted) just means
/// another draw.
pub fn create_unique(dir: &Path, prefix: &str, suffix: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..8 {
        let path = dir.join(format!("{prefix}{}{suffix}", random_hex()?));
        match create_new(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_differ_and_files_are_private_and_new() {
        let a = random_hex().unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, random_hex().unwrap());
        let d = scratch("private");
        let (p, _) = create_unique(&d, ".x.", ".tmp").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            create_new(&p).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        // A symlink planted at the name is not followed.
        let link = d.join("link");
        std::os::unix::fs::symlink(d.join("elsewhere"), &link).unwrap();
        assert!(create_new(&link).is_err());
        assert!(!d.join("elsewhere").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
