//! The scratch filesystem: an image file formatted fresh for every run,
//! loop-mounted at one fixed directory (so paths compare across runs), and
//! a power cut that throws away whatever had not reached the log. All of
//! it lives in a directory private to root and new for each crashtest.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::leftovers;
use crate::{cli::CrashFs, error::UserError};

impl CrashFs {
    pub fn name(self) -> &'static str {
        match self {
            CrashFs::Xfs => "xfs",
            CrashFs::Ext4 => "ext4",
        }
    }

    fn mkfs(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            CrashFs::Xfs => ("mkfs.xfs", &["-q", "-f"], "xfsprogs"),
            CrashFs::Ext4 => ("mkfs.ext4", &["-q", "-F"], "e2fsprogs"),
        }
    }

    /// Smallest image the formatter accepts.
    fn min_size(self) -> u64 {
        match self {
            CrashFs::Xfs => 300 << 20,
            CrashFs::Ext4 => 16 << 20,
        }
    }
}

/// Refuses early, with the fix, when this host cannot run a crash test.
pub fn preflight(fs: CrashFs, size: u64) -> Result<(), UserError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(UserError::new(
            "crashtest mounts a scratch filesystem: run it as root",
        ));
    }
    let (mkfs, _, package) = fs.mkfs();
    if find_tool(mkfs).is_none() {
        return Err(UserError::new(format!(
            "{mkfs} not found: install the Debian package {package} (apt-get install {package})"
        )));
    }
    if !Path::new("/dev/loop-control").exists() {
        // The loop driver may be a module that is not loaded yet.
        let _ = Command::new("modprobe").arg("loop").output();
        if !Path::new("/dev/loop-control").exists() {
            return Err(UserError::new(
                "no loop devices (/dev/loop-control missing): load the loop module (modprobe loop)",
            ));
        }
    }
    if find_tool("mount").is_none() {
        return Err(UserError::new(
            "mount not found: install the Debian package mount",
        ));
    }
    if size < fs.min_size() {
        return Err(UserError::new(format!(
            "--size: {} needs at least {}M",
            fs.name(),
            fs.min_size() >> 20
        )));
    }
    Ok(())
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Start of every scratch directory's name; the owner's pid and a random
/// part follow (`auditor-crashtest-1234-0123456789abcdef`).
const PREFIX: &str = "auditor-crashtest-";

/// A private work directory holding the image(s) and the mount point.
/// Dropping it unmounts, detaches loop devices and removes what `--keep`
/// does not keep, whatever path got us there (error, interrupt, normal
/// end); a SIGKILL is the guardian's to clean up.
pub struct Scratch {
    pub fs: CrashFs,
    pub size: u64,
    pub keep: bool,
    pub dir: PathBuf,
    pub mnt: PathBuf,
    /// The image of the current run.
    pub image: PathBuf,
    /// Images kept for `--keep`, in run order.
    pub kept: Vec<PathBuf>,
    mounted: bool,
    /// Identity of the mount point we created, checked before each mount.
    mnt_id: (u64, u64),
    /// Where we were before entering the mount (the traced command inherits
    /// our working directory).
    home: PathBuf,
}

impl Scratch {
    /// A fresh directory under `$TMPDIR` (default /var/tmp), created by us
    /// now under a name nobody could guess, mode 0700: nothing a local user
    /// planted (a directory of that name, a symlink at `mnt` or at an
    /// image's name) can be in it. Leftovers of killed runs are removed
    /// first.
    pub fn new(fs: CrashFs, size: u64, keep: bool) -> Result<Scratch> {
        let base = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let base = check_base(&base)?;
        remove_stale(&base);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            crate::private::random_hex()?
        );
        let dir = base.join(name);
        make_private_dir(&dir)?;
        let mnt = dir.join(leftovers::MOUNT_POINT);
        make_private_dir(&mnt)?;
        let m = std::fs::symlink_metadata(&mnt)?;
        Ok(Scratch {
            fs,
            size,
            keep,
            image: dir.join("run-0.img"),
            dir,
            mnt,
            kept: Vec::new(),
            mounted: false,
            mnt_id: (m.dev(), m.ino()),
            home: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        })
    }

    /// Formats a fresh image for run `index` and mounts it.
    pub fn fresh(&mut self, index: usize) -> Result<()> {
        self.unmount()?;
        if !self.keep {
            let _ = std::fs::remove_file(&self.image);
        }
        self.image = self.dir.join(format!("run-{index}.img"));
        // New, never through a link, and 0600: it holds what the traced
        // program wrote, whatever modes it gave its files.
        let f = crate::private::create_new(&self.image)
            .with_context(|| format!("creating {}", self.image.display()))?;
        f.set_len(self.size)?;
        drop(f);
        let (mkfs, flags, _) = self.fs.mkfs();
        run_tool(Command::new(mkfs).args(flags).arg(&self.image))?;
        if self.keep {
            self.kept.push(self.image.clone());
        }
        self.mount()
    }

    /// Mounts the current image (log recovery happens here after a cut),
    /// only on the directory we created.
    pub fn mount(&mut self) -> Result<()> {
        let m = std::fs::symlink_metadata(&self.mnt)
            .with_context(|| format!("checking {}", self.mnt.display()))?;
        if !m.is_dir() || (m.dev(), m.ino()) != self.mnt_id {
            anyhow::bail!(
                "{} is no longer the directory this run created: not mounting there",
                self.mnt.display()
            );
        }
        run_tool(
            Command::new("mount")
                .args(["-t", self.fs.name(), "-o", "loop,nosuid,nodev"])
                .arg(&self.image)
                .arg(&self.mnt),
        )?;
        self.mounted = true;
        Ok(())
    }
    /// Makes the mount the working directory the traced command inherits.
    pub fn enter(&self) -> Result<()> {
        std::env::set_current_dir(&self.mnt)
            .with_context(|| format!("entering {}", self.mnt.display()))
    }

    pub fn leave(&self) {
        let _ = std::env::set_current_dir(&self.home);
    }

    /// Unmounts; a loop device set up by `mount -o loop` detaches with it.
    pub fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        self.leave();
        let c = CString::new(self.mnt.as_os_str().as_bytes())?;
        // SAFETY: valid C string.
        if unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW) } != 0 {
            let e = std::io::Error::last_os_error();
            // Busy (a straggler still holds a file): detach it lazily so
            // nothing is left mounted.
            // SAFETY: valid C string.
            if unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW | libc::MNT_DETACH) } != 0 {
                return Err(anyhow::anyhow!("unmounting {}: {e}", self.mnt.display()));
            }
        }
        self.mounted = false;
        detach_loops(&self.image);
        Ok(())
    }

    /// Pulls the plug: the filesystem stops at once and the log is not
    /// flushed, so only what was already in the on-disk log survives.
    /// XFS_IOC_GOINGDOWN and EXT4_IOC_SHUTDOWN share the number and the
    /// NOLOGFLUSH flag.
    pub fn power_cut(&self) -> Result<()> {
        const GOINGDOWN: libc::c_ulong = 0x8004_587d; // _IOR('X', 125, u32)
        const NOLOGFLUSH: u32 = 2;
        let c = CString::new(self.mnt.as_os_str().as_bytes())?;
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening the mount to cut power");
        }
        let flags = NOLOGFLUSH;
        // SAFETY: the ioctl reads one u32 from a valid pointer.
        let rc = unsafe { libc::ioctl(fd, GOINGDOWN, &flags as *const u32) };
        let err = std::io::Error::last_os_error();
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        if rc != 0 {
            return Err(err).context("shutting the scratch filesystem down");
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("auditor: {e:#}");
        }
        detach_loops(&self.image);
        // Without a mount point the directory holds only kept images, and
        // no later run takes it for leftovers.
        let _ = std::fs::remove_dir(&self.mnt);
        if self.keep {
            return;
        }
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Detaches any loop device still backed by `image` (autoclear normally
/// does it at unmount; this covers a mount that failed half-way).
fn detach_loops(image: &Path) {
    for (dev, backing) in leftovers::loop_devices() {
        if backing == image {
            leftovers::clear_loop(&dev);
        }
    }
}

/// The base directory, resolved, if a scratch directory there is safe from
/// others: one they can write into must be sticky (like /var/tmp), so
/// they cannot rename ours away and put their own in its place.
fn check_base(base: &Path) -> Result<PathBuf> {
    let bad = |why: &str| {
        UserError::new(format!(
            "TMPDIR {}: {why}; point TMPDIR at a directory only root can write, or unset it",
            base.display()
        ))
    };
    let real = std::fs::canonicalize(base).map_err(|e| bad(&e.to_string()))?;
    let m = std::fs::metadata(&real).map_err(|e| bad(&e.to_string()))?;
    if !m.is_dir() {
        return Err(bad("not a directory").into());
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let others_write = m.mode() & 0o022 != 0;
    let sticky = m.mode() & libc::S_ISVTX != 0;
    if m.uid() != me && m.uid() != 0 {
        return Err(bad("owned by another user").into());
    }
    if others_write && !sticky {
        return Err(bad("writable by others and not sticky").into());
    }
    Ok(real)
}

/// mkdir that fails if the name exists, mode 0700 whatever the umask.
fn make_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("creating {}", path.display()))
}

/// Takes down the scratch directories of earlier runs that were killed
/// along with their guardian: ours by name, owner and mode, still holding
/// a mount point, whose pid is gone. A directory someone else made with
/// our prefix is not ours and is left alone.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let ours = m.is_dir() && m.uid() == 0 && m.mode() & 0o7777 == 0o700;
        // SAFETY: signal 0 only checks that the pid exists.
        let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
        let unfinished = e.path().join(leftovers::MOUNT_POINT).is_dir();
        if ours && !alive && unfinished {
            leftovers::clean(&e.path(), false, &[]);
        }
    }
}

/// Runs a setup tool; its own message is the error when it fails.
fn run_tool(cmd: &mut Command) -> Result<()> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().with_context(|| format!("running {name}"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!("{name} failed: {}", msg.trim());
    }
    Ok(())
}
