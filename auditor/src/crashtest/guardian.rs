//! A cleanup that survives our own SIGKILL. Drop handlers and signal
//! watchers cannot run when the crashtest is killed outright, and what it
//! leaves is not small: traced processes frozen for good, a mounted
//! filesystem, a loop device, an image holding the program's data. So a
//! guardian process, forked before any thread exists and detached from us
//! (not our child, in its own process group so a terminal's Ctrl-C does
//! not reach it), holds one end of a socket. We tell it the scratch
//! directory and hand it the traced-process map; when our end closes
//! without a word, we are dead, and it takes everything down.

use std::{
    ffi::OsStr,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::leftovers;

const DIR: u8 = b'D';
const MAP: u8 = b'M';
const DISMISS: u8 = b'Q';

/// Our end of the guardian's socket; dropping it after a clean finish
/// dismisses the guardian.
pub struct Guardian {
    sock: OwnedFd,
}

impl Guardian {
    /// Forks the guardian. Call before any thread exists: the child of a
    /// threaded process may only call async-signal-safe functions.
    pub fn start() -> Result<Guardian> {
        let (ours, theirs) = socket_pair().context("starting the cleanup guardian")?;
        // SAFETY: single-threaded here (documented precondition).
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()).context("starting the cleanup guardian"),
            0 => {
                drop(ours);
                // A second fork, so the guardian is not our child: the
                // traced command's reaper waits for all our children.
                // SAFETY: still single-threaded.
                match unsafe { libc::fork() } {
                    0 => guard(theirs),
                    // SAFETY: leave at once, running nothing of the parent's.
                    _ => unsafe { libc::_exit(0) },
                }
            }
            child => {
                drop(theirs);
                let mut status = 0;
                // SAFETY: our own child, which exits at once.
                unsafe { libc::waitpid(child, &mut status, 0) };
                Ok(Guardian { sock: ours })
            }
        }
    }

    /// The scratch directory to take down if we die (its images stay with
    /// `keep`).
    pub fn watch_dir(&self, dir: &Path, keep: bool) -> Result<()> {
        let mut msg = vec![DIR, u8::from(keep)];
        msg.extend_from_slice(dir.as_os_str().as_bytes());
        send(self.sock.as_raw_fd(), &msg, None).context("telling the cleanup guardian")
    }

    /// The traced-process map: its processes are killed if we die, frozen
    /// ones included.
    pub fn watch_traced(&self, map_fd: RawFd) -> Result<()> {
        send(self.sock.as_raw_fd(), &[MAP], Some(map_fd)).context("telling the cleanup guardian")
    }
}

impl Drop for Guardian {
    /// Runs after the scratch state was dropped (declared first, dropped
    /// last), so there is nothing left for the guardian to do.
    fn drop(&mut self) {
        let _ = send(self.sock.as_raw_fd(), &[DISMISS], None);
    }
}

/// Both ends of a new message socket. They close on exec, so neither the
/// traced command nor a tool we run holds them.
fn socket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: valid out array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The guardian's life: collect what to watch until dismissed, or clean up
/// when the other end closes without a word.
fn guard(sock: OwnedFd) -> ! {
    // SAFETY: plain process-attribute calls on ourselves.
    unsafe {
        libc::setpgid(0, 0);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        // Nobody reads our stdout; stderr stays for the one line below.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
    }
    let mut dirs: Vec<(PathBuf, bool)> = Vec::new();
    let mut maps: Vec<OwnedFd> = Vec::new();
    loop {
        match recv(sock.as_raw_fd()) {
            Ok(Some((msg, fd))) => match msg.first() {
                Some(&DIR) if msg.len() > 2 => {
                    dirs.push((PathBuf::from(OsStr::from_bytes(&msg[2..])), msg[1] == 1));
                }
                Some(&MAP) => maps.extend(fd),
                // SAFETY: a clean finish: nothing to do.
                Some(&DISMISS) => unsafe { libc::_exit(0) },
                _ => {}
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // End of file (or a broken socket): the crashtest is gone.
            Ok(None) | Err(_) => break,
        }
    }
    let traced: Vec<RawFd> = maps.iter().map(AsRawFd::as_raw_fd).collect();
    let mut cleaned = false;
    for (dir, keep) in &dirs {
        cleaned |= leftovers::clean(dir, *keep, &traced);
    }
    if cleaned {
        eprintln!(
            "auditor: crashtest ended without cleaning up: its traced processes were killed and its scratch filesystem unmounted and removed"
        );
    }
    // SAFETY: leave without running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}

/// One datagram, with an fd passed alongside when `fd` is set.
fn send(sock: RawFd, msg: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    // u64s: aligned for a cmsghdr, and room for one fd.
    let mut control = [0u64; 4];
    // SAFETY: zeroed plain struct.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if let Some(fd) = fd {
        hdr.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_* compute sizes and pointers within `control`,
        // which is large enough for one int.
        unsafe {
            hdr.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: hdr points at live buffers.
    if unsafe { libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One datagram and the fd passed with it, if any; None at end of file.
fn recv(sock: RawFd) -> std::io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; 8192];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: zeroed plain struct.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: hdr points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(sock, &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(None);
    }
    buf.truncate(n as usize);
    let mut fd = None;
    // SAFETY: the kernel filled the control buffer; CMSG_* walk it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&hdr);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS
        {
            let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
            fd = Some(OwnedFd::from_raw_fd(raw));
        }
    }
    Ok(Some((buf, fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_fds_pass_through_the_socket() {
        let (a, b) = socket_pair().unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        send(a.as_raw_fd(), b"Dx/tmp", None).unwrap();
        send(a.as_raw_fd(), &[MAP], Some(file.as_raw_fd())).unwrap();
        let (m, fd) = recv(b.as_raw_fd()).unwrap().unwrap();
        assert_eq!((m.as_slice(), fd.is_none()), (&b"Dx/tmp"[..], true));
        let (m, fd) = recv(b.as_raw_fd()).unwrap().unwrap();
        assert_eq!(m, [MAP]);
        let fd = fd.expect("an fd came along");
        assert_ne!(fd.as_raw_fd(), file.as_raw_fd());
        drop(a);
        assert!(recv(b.as_raw_fd()).unwrap().is_none(), "end of file");
    }
}
