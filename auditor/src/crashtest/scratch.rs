//! The scratch filesystem: an image file formatted fresh for every run,
//! loop-mounted at one fixed directory (so paths compare across runs), and
//! a power cut that throws away whatever had not reached the log.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

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

/// A work directory holding the image(s) and the mount point. Dropping it
/// unmounts, detaches loop devices and removes what `--keep` does not keep,
/// whatever path got us there (error, interrupt, normal end).
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
    /// Where we were before entering the mount (the traced command inherits
    /// our working directory).
    home: PathBuf,
}

impl Scratch {
    pub fn new(fs: CrashFs, size: u64, keep: bool) -> Result<Scratch> {
        let base = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let dir = base.join(format!("auditor-crashtest-{}", std::process::id()));
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
        Ok(Scratch {
            fs,
            size,
            keep,
            image: dir.join("run-0.img"),
            dir,
            mnt,
            kept: Vec::new(),
            mounted: false,
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
        let f = std::fs::File::create(&self.image)
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

    /// Mounts the current image (log recovery happens here after a cut).
    pub fn mount(&mut self) -> Result<()> {
        run_tool(
            Command::new("mount")
                .args(["-t", self.fs.name(), "-o", "loop"])
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
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            // Busy (a straggler still holds a file): detach it lazily so
            // nothing is left mounted.
            // SAFETY: valid C string.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
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
        if self.keep {
            return;
        }
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Detaches any loop device still backed by `image` (autoclear normally
/// does it at unmount; this covers a mount that failed half-way).
fn detach_loops(image: &Path) {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        let backing =
            std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
        if Path::new(backing.trim()) == image
            && let Ok(dev) = std::fs::File::open(format!("/dev/{name}"))
        {
            use std::os::fd::AsRawFd;
            const LOOP_CLR_FD: libc::c_ulong = 0x4c01;
            // SAFETY: ioctl without argument on an open loop device.
            unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
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
