//! Kernel records -> [`Event`]s. Sizes and kinds are checked, never trusted:
//! an unknown or short record is counted and skipped.

use std::mem::size_of;

use auditor_analyzer::event::{Event, EventKind, FileId, FileInfo, FileType, Reopens, ViewStamp};

use super::kdev::user_dev;
use super::stacks::Stacks;
use auditor_common::{
    ExitRecord, FLAG_RUN_UNSURE, FileIdent, ForkRecord, Header, Kind, PathRecord, SignalRecord,
    StackRecord, Syscall, SyscallRecord,
    linux::{
        FMODE_CREATED,
        at::AT_FDCWD,
        fcntl::{F_DUPFD, F_DUPFD_CLOEXEC},
        misc::{RWF_DSYNC, RWF_SYNC},
        mode,
        open::{O_CLOEXEC, O_CREAT, O_DSYNC, O_TRUNC, O_WRONLY},
    },
    nr::*,
};

/// Counts what could not be decoded; shown in every report.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeStats {
    pub records: u64,
    pub unknown_kind: u64,
    pub bad_size: u64,
    /// Runs of writes flagged `FLAG_RUN_UNSURE`.
    pub unsure_runs: u64,
}

impl DecodeStats {
    /// Records that reached us but could not be read (or trusted).
    pub fn undecodable(&self) -> u64 {
        self.bad_size + self.unknown_kind + self.unsure_runs
    }
}

/// Turns records into events. Losses are not inferred from sequence gaps
/// (records from different CPUs may commit out of sequence order); the
/// kernel's drop counters are exact and become `Lost` events instead.
#[derive(Default)]
pub struct Decoder {
    pub stats: DecodeStats,
    /// Turns the probes' stack copies into frames (live capture with
    /// stacks on); it follows execs, mappings and forks for that.
    pub stacks: Option<Stacks>,
}

impl Decoder {
    /// Decodes one ring-buffer record, appending at most one event.
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        self.stats.records += 1;
        let Some(h) = read::<Header>(bytes) else {
            self.stats.bad_size += 1;
            out.push(lost(0));
            return;
        };
        if h.size as usize != bytes.len() {
            self.stats.bad_size += 1;
            out.push(lost(h.ts_ns));
            return;
        }
        let kind = match Kind::from_u16(h.kind) {
            Some(k) => k,
            None => {
                self.stats.unknown_kind += 1;
                out.push(lost(h.ts_ns));
                return;
            }
        };
        if h.flags & FLAG_RUN_UNSURE != 0 {
            // A run of writes whose file the kernel could not vouch for.
            self.stats.unsure_runs += 1;
            out.push(lost(h.ts_ns));
            return;
        }
        let mut stack = 0u32;
        let decoded = match kind {
            Kind::Syscall => read::<SyscallRecord>(bytes).and_then(|r| {
                stack = r.stack;
                self.follow(&h, &r, None);
                syscall(&r, None, None)
            }),
            Kind::Path => read::<PathRecord>(bytes).and_then(|r| {
                stack = r.sys.stack;
                let path = cstr(&r.path);
                self.follow(&h, &r.sys, Some(&path));
                syscall(&r.sys, Some(path), Some(cstr(&r.path2)))
            }),
            Kind::Exec => read::<PathRecord>(bytes).map(|r| {
                let filename = cstr(&r.path);
                if let Some(s) = self.stacks.as_mut() {
                    s.exec(h.tgid, &filename, &r);
                }
                EventKind::Exec {
                    filename,
                    argv: args(&r.path2, r.sys.args[1]),
                    stamp: stamp(&r.sys),
                }
            }),
            Kind::Fork => read::<ForkRecord>(bytes).map(|r| {
                let thread = r.child_tgid == h.tgid;
                if let Some(s) = self.stacks.as_mut() {
                    s.forked(h.tgid, r.child_tgid, thread);
                }
                EventKind::Fork {
                    child_pid: r.child_tgid,
                    child_tid: r.child_tid,
                    thread,
                    shares_files: r.shares_files != 0,
                    new_mount_ns: r.new_mount_ns != 0,
                }
            }),
            Kind::Exit => read::<ExitRecord>(bytes).map(|r| {
                stack = r.stack;
                if r.group_dead != 0
                    && let Some(s) = self.stacks.as_mut()
                {
                    s.exited(h.tgid);
                }
                exit(&r)
            }),
            Kind::SignalGenerate => read::<SignalRecord>(bytes).map(|r| EventKind::SignalSent {
                signal: r.sig,
                target_pid: r.target_tgid,
                target_tid: r.target_tid,
                target_comm: cstr(&r.target_comm),
                code: r.code,
                group: r.group != 0,
                result: r.result,
                target_syscall: u32::try_from(r.target_syscall)
                    .ok()
                    .and_then(Syscall::from_nr),
            }),
            Kind::SignalDeliver => {
                read::<SignalRecord>(bytes).map(|r| EventKind::SignalDelivered {
                    signal: r.sig,
                    code: r.code,
                    handler: r.handler,
                })
            }
            Kind::Stack => {
                if bytes.len() < size_of::<StackRecord>() {
                    None
                } else {
                    // Not copied onto our stack: the record is 12 KiB.
                    // SAFETY: length checked; plain data valid for any bit
                    // pattern; read_unaligned copes with the alignment.
                    let r: Box<StackRecord> = Box::new(unsafe {
                        std::ptr::read_unaligned(bytes.as_ptr() as *const StackRecord)
                    });
                    match self.stacks.as_mut() {
                        Some(s) => Some(EventKind::Stack {
                            id: r.id,
                            user_stack: s.resolve(
                                h.tgid,
                                &r,
                                h.flags & auditor_common::STACK_UNSHOWN == 0,
                            ),
                        }),
                        // Stacks were not asked for: nothing to say.
                        None => return,
                    }
                }
            }
        };
        match decoded {
            Some(kind) => out.push(Event {
                seq: h.seq,
                ts_ns: h.ts_ns,
                pid: h.tgid,
                tid: h.tid,
                comm: cstr(&h.comm),
                stack: (stack != 0).then_some(stack),
                kind,
                in_process: Default::default(),
            }),
            None => {
                self.stats.bad_size += 1;
                out.push(lost(h.ts_ns));
            }
        }
    }

    /// What the stacks need from a syscall: files opened (a mapping names
    /// one by fd) and executable mappings.
    fn follow(&mut self, h: &Header, r: &SyscallRecord, path: Option<&str>) {
        let Some(s) = self.stacks.as_mut() else {
            return;
        };
        match r.nr {
            MMAP => s.mapped(h.tgid, &r.args, r.ret, &r.file),
            OPEN | OPENAT | OPENAT2 | CREAT if r.ret >= 0 => {
                if let Some(p) = path {
                    s.opened(h.tgid, r.ret, p);
                }
            }
            _ => {}
        }
    }
}

/// A record we could not read is an event the analyzer missed: it must
/// know, so the verdicts it could change become inconclusive.
fn lost(ts_ns: u64) -> Event {
    Event {
        seq: 0,
        ts_ns,
        pid: 0,
        tid: 0,
        comm: String::new(),
        stack: None,
        kind: EventKind::Lost { count: 1 },
        in_process: Default::default(),
    }
}

/// Reads a `#[repr(C)]` record from the front of `bytes` after checking
/// its length.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; every record type is plain data valid for any
    // bit pattern; read_unaligned copes with the ring buffer's alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    // Valid UTF-8 (nearly always) is copied once, without the lossy scan.
    match std::str::from_utf8(&b[..end]) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(&b[..end]).into_owned(),
    }
}

/// An exec's arguments: `len` bytes of NUL-separated strings (the last
/// may be cut).
fn args(b: &[u8], len: u64) -> Vec<String> {
    let n = (len as usize).min(b.len());
    b[..n]
        .split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Where the task stood, from an exec or setns record (see
/// `SyscallRecord::file`); None when the probe could not read it.
fn stamp(r: &SyscallRecord) -> Option<ViewStamp> {
    (r.file.ino != 0 && r.file2.ino != 0).then(|| ViewStamp {
        mnt_ns: r.file2.ino,
        root: FileId {
            dev: user_dev(r.file.dev),
            ino: r.file.ino,
        },
    })
}

fn exit(r: &ExitRecord) -> EventKind {
    let status = r.exit_code;
    let sig = (status & 0x7f) as i32;
    EventKind::Exit {
        group_dead: r.group_dead != 0,
        code: (sig == 0).then_some(((status >> 8) & 0xff) as i32),
        signal: (sig != 0).then_some(sig),
        core_dumped: status & 0x80 != 0,
    }
}

pub fn file_info(f: &FileIdent) -> Option<FileInfo> {
    if f.ino == 0 {
        return None;
    }
    Some(FileInfo {
        id: FileId {
            dev: user_dev(f.dev),
            ino: f.ino,
        },
        file_type: file_type(f.i_mode as u32),
        fs: fs_name(f.magic).to_owned(),
        size: f.size,
        flags: f.f_flags,
        created: f.f_mode & FMODE_CREATED != 0,
    })
}

pub fn file_type(m: u32) -> FileType {
    match m & mode::S_IFMT {
        mode::S_IFREG => FileType::Regular,
        mode::S_IFDIR => FileType::Directory,
        mode::S_IFLNK => FileType::Symlink,
        mode::S_IFIFO => FileType::Fifo,
        mode::S_IFSOCK => FileType::Socket,
        mode::S_IFCHR => FileType::CharDevice,
        mode::S_IFBLK => FileType::BlockDevice,
        _ => FileType::Unknown,
    }
}

/// Filesystem name from a superblock magic (include/uapi/linux/magic.h).
pub fn fs_name(magic: u64) -> &'static str {
    match magic {
        0x5846_5342 => "xfs",
        0xef53 => "ext4",
        0x9123_683e => "btrfs",
        0xf2f5_2010 => "f2fs",
        0x2fc1_2fc1 => "zfs",
        0x794c_7630 => "overlay",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x4d44 => "vfat",
        0x2011_bab0 => "exfat",
        0x7371_7368 => "squashfs",
        0x9660 => "isofs",
        0x0102_1997 => "9p",
        0x00c3_6400 => "ceph",
        0xfe53_4d42 | 0xff53_4d42 => "cifs",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x1cd1 => "devpts",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x5049_5045 => "pipefs",
        0x534f_434b => "sockfs",
        0x0904_1934 => "anon_inodefs",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0xcafe_4a11 => "bpf",
        0x6e73_6673 => "nsfs",
        0x7363_6673 => "securityfs",
        0x9584_58f6 => "hugetlbfs",
        0x1980_0202 => "mqueue",
        _ => "unknown",
    }
}

fn syscall(r: &SyscallRecord, path: Option<String>, path2: Option<String>) -> Option<EventKind> {
    let a = r.args;
    let ret = r.ret;
    let call = Syscall::from_nr(r.nr)?;
    let file = file_info(&r.file);
    let fd = |i: usize| a[i] as i32;
    // Each arm below takes the strings it needs by value (one arm runs), so
    // nothing is copied twice.
    let path = path.unwrap_or_default();
    let path2 = path2.unwrap_or_default();
    let write = |call: Syscall, requested: u64, offset: Option<i64>, file: Option<FileInfo>| {
        EventKind::Write {
            call,
            fd: fd(0),
            requested,
            ret,
            offset,
            file,
            enter_ns: r.enter_ns,
            calls: r.calls.max(1),
        }
    };
    let dup = |new_fd: Option<i32>, cloexec: bool, file: Option<FileInfo>| EventKind::Dup {
        call,
        old_fd: fd(0),
        new_fd,
        cloexec,
        ret,
        file,
    };
    // An *at call of one name is its plain form with a directory fd put in
    // front: `after_dir` are the arguments that follow it, the plain form's
    // own. (The renames, of two names, take two.)
    let (dirfd, after_dir) = match r.nr {
        UNLINKAT | MKDIRAT | OPENAT | OPENAT2 => (fd(0), &a[1..]),
        _ => (AT_FDCWD, &a[..]),
    };
    Some(match r.nr {
        WRITE => write(call, a[2], None, file),
        PWRITE64 => write(call, a[2], Some(a[3] as i64), file),
        // Vectored writes: the byte count asked for is not in the arguments;
        // a short vectored write is indistinguishable from a full one.
        WRITEV => write(call, ret.max(0) as u64, None, file),
        PWRITEV => write(call, ret.max(0) as u64, Some(a[3] as i64), file),
        PWRITEV2 => {
            // RWF_SYNC/RWF_DSYNC make this one write durable, as O_DSYNC
            // would: shown as the description's effective flags.
            let file = file.map(|mut f| {
                if a[5] & (RWF_SYNC | RWF_DSYNC) != 0 {
                    f.flags |= O_DSYNC;
                }
                f
            });
            let off = a[3] as i64;
            write(call, ret.max(0) as u64, (off >= 0).then_some(off), file)
        }
        COPY_FILE_RANGE => EventKind::Write {
            call,
            fd: fd(2),
            requested: a[4],
            ret,
            offset: None,
            file,
            enter_ns: r.enter_ns,
            calls: 1,
        },
        SENDFILE => write(call, a[3], None, file),
        FTRUNCATE => EventKind::Truncate {
            call,
            fd: Some(fd(0)),
            path: None,
            length: a[1] as i64,
            ret,
            file,
        },
        TRUNCATE => EventKind::Truncate {
            call,
            fd: None,
            path: Some(path),
            length: a[1] as i64,
            ret,
            file: None,
        },
        FALLOCATE => EventKind::Fallocate {
            fd: fd(0),
            mode: a[1] as i32,
            offset: a[2] as i64,
            len: a[3] as i64,
            ret,
            file,
        },
        FSYNC | FDATASYNC | SYNCFS => EventKind::Sync {
            call,
            fd: Some(fd(0)),
            ret,
            file,
            range: None,
            enter_ns: r.enter_ns,
        },
        SYNC_FILE_RANGE => EventKind::Sync {
            call,
            fd: Some(fd(0)),
            ret,
            file,
            range: Some((a[1], a[2], a[3] as u32)),
            enter_ns: r.enter_ns,
        },
        SYNC => EventKind::Sync {
            call,
            fd: None,
            ret,
            file: None,
            range: None,
            enter_ns: r.enter_ns,
        },
        MSYNC => EventKind::Sync {
            call,
            fd: None,
            ret,
            file: None,
            range: Some((a[0], a[1], a[2] as u32)),
            enter_ns: r.enter_ns,
        },
        RENAME | LINK => EventKind::Rename {
            call,
            old_dirfd: AT_FDCWD,
            old_path: path,
            new_dirfd: AT_FDCWD,
            new_path: path2,
            flags: 0,
            ret,
            file: None,
        },
        RENAMEAT => EventKind::Rename {
            call,
            old_dirfd: fd(0),
            old_path: path,
            new_dirfd: fd(2),
            new_path: path2,
            flags: 0,
            ret,
            file: None,
        },
        RENAMEAT2 | LINKAT => EventKind::Rename {
            call,
            old_dirfd: fd(0),
            old_path: path,
            new_dirfd: fd(2),
            new_path: path2,
            flags: a[4] as u32,
            ret,
            file: None,
        },
        UNLINK | UNLINKAT => EventKind::Unlink {
            call,
            dirfd,
            path,
            // unlink(2) takes no flags.
            flags: if r.nr == UNLINK {
                0
            } else {
                after_dir[1] as u32
            },
            ret,
        },
        MKDIR | MKDIRAT => EventKind::Mkdir {
            call,
            dirfd,
            path,
            mode: after_dir[1] as u32,
            ret,
        },
        OPEN | OPENAT | OPENAT2 => EventKind::Open {
            call,
            path,
            dirfd,
            flags: after_dir[1] as u32,
            mode: after_dir[2] as u32,
            ret,
            file,
            image: None,
        },
        CREAT => EventKind::Open {
            call,
            path,
            dirfd,
            flags: O_CREAT | O_WRONLY | O_TRUNC,
            mode: a[1] as u32,
            ret,
            file,
            image: None,
        },
        // calls > 0: a run of visits (the probes' visits.rs): the closes,
        // and in args[1..] the open call, the reopens, flags, mode, dirfd.
        CLOSE => EventKind::Close {
            fd: fd(0),
            ret,
            file,
            calls: r.calls.max(1),
            reopens: (r.calls > 0 && a[2] > 0).then(|| Reopens {
                call: u32::try_from(a[1])
                    .ok()
                    .and_then(Syscall::from_nr)
                    .unwrap_or(Syscall::Openat),
                dirfd: a[5] as i32,
                flags: a[3] as u32,
                mode: a[4] as u32,
                count: u32::try_from(a[2]).unwrap_or(u32::MAX),
            }),
        },
        CLOSE_RANGE => EventKind::CloseRange {
            first: a[0] as u32,
            last: a[1] as u32,
            flags: a[2] as u32,
            ret,
        },
        DUP => dup(None, false, file),
        DUP2 => dup(Some(fd(1)), false, file),
        DUP3 => dup(Some(fd(1)), a[2] & u64::from(O_CLOEXEC) != 0, file),
        FCNTL if a[1] == F_DUPFD || a[1] == F_DUPFD_CLOEXEC => {
            dup(Some(fd(2)), a[1] == F_DUPFD_CLOEXEC, file)
        }
        FCNTL => EventKind::Fcntl {
            fd: fd(0),
            cmd: a[1] as i32,
            arg: a[2],
            ret,
            file,
        },
        MMAP => EventKind::Mmap {
            fd: fd(4),
            addr: ret as u64,
            len: a[1],
            prot: a[2] as u32,
            flags: a[3] as u32,
            offset: a[5],
            file,
        },
        CHDIR => EventKind::Chdir { path, ret },
        CHROOT => EventKind::Chroot { path, ret },
        PIVOT_ROOT => EventKind::PivotRoot {
            new_root: path,
            put_old: path2,
            ret,
        },
        MOUNT => EventKind::Mount {
            source: path,
            target: path2,
            flags: a[3],
            ret,
        },
        UMOUNT2 => EventKind::Umount {
            target: path,
            flags: a[1] as u32,
            ret,
        },
        UNSHARE => EventKind::Unshare { flags: a[0], ret },
        SETNS => EventKind::Setns {
            fd: fd(0),
            nstype: a[1] as i64,
            ret,
            stamp: stamp(r),
        },
        FCHDIR => EventKind::Fchdir { fd: fd(0), ret },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditor_common::FLAG_PATH_TRUNCATED;

    fn header(kind: Kind, size: usize, seq: u64) -> Header {
        Header {
            kind: kind as u16,
            flags: 0,
            size: size as u32,
            seq,
            ts_ns: 1000 + seq,
            tgid: 42,
            tid: 43,
            comm: *b"writer\0\0\0\0\0\0\0\0\0\0",
        }
    }

    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: test records are plain data.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
    }

    /// The events a new decoder makes of one record.
    fn decoded<T>(rec: &T) -> Vec<Event> {
        let mut out = Vec::new();
        Decoder::default().decode(&bytes(rec), &mut out);
        out
    }

    /// A path record of `kind` around `sys`, its names still empty.
    fn path_record(kind: Kind, sys: SyscallRecord) -> PathRecord {
        let mut rec = PathRecord {
            sys,
            path: [0; auditor_common::PATH_MAX],
            path2: [0; auditor_common::PATH_MAX],
        };
        rec.sys.header = header(kind, size_of::<PathRecord>(), 1);
        rec
    }

    fn sys(nr: u32, args: [u64; 6], ret: i64, seq: u64) -> SyscallRecord {
        SyscallRecord {
            header: header(Kind::Syscall, size_of::<SyscallRecord>(), seq),
            nr,
            calls: 0,
            args,
            ret,
            enter_ns: 900,
            file: FileIdent {
                ino: 77,
                size: 10,
                magic: 0x5846_5342,
                dev: (7 << 20) | 3,
                f_flags: 0o2000,
                f_mode: 0,
                i_mode: 0o100644,
                _pad: 0,
            },
            file2: FileIdent::default(),
            stack: 0,
            _pad: 0,
        }
    }

    #[test]
    fn decodes_a_write_with_its_file() {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.decode(
            &bytes(&sys(WRITE, [3, 0, 4096, 0, 0, 0], 4096, 1)),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!((e.pid, e.tid, e.comm.as_str()), (42, 43, "writer"));
        match &e.kind {
            EventKind::Write {
                call,
                fd,
                requested,
                ret,
                file: Some(f),
                ..
            } => {
                assert_eq!(
                    (*call, *fd, *requested, *ret),
                    (Syscall::Write, 3, 4096, 4096)
                );
                assert_eq!(
                    f.id,
                    FileId {
                        dev: libc::makedev(7, 3),
                        ino: 77
                    }
                );
                assert_eq!(f.fs, "xfs");
                assert_eq!(f.file_type, FileType::Regular);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decodes_a_run_of_writes_as_one_event_with_its_calls() {
        // Fifty writev calls of 100 bytes each, reported together.
        let mut run = sys(WRITEV, [3, 0, 5000, 0, 0, 0], 5000, 9);
        run.calls = 50;
        let mut out = Vec::new();
        let mut d = Decoder::default();
        d.decode(&bytes(&run), &mut out);
        match &out[0].kind {
            EventKind::Write {
                call,
                fd,
                requested,
                ret,
                enter_ns,
                calls,
                ..
            } => assert_eq!(
                (*call, *fd, *requested, *ret, *enter_ns, *calls),
                (Syscall::Writev, 3, 5000, 5000, 900, 50)
            ),
            other => panic!("unexpected {other:?}"),
        }
        // One call is one call, whatever the record says.
        d.decode(&bytes(&sys(WRITE, [3, 0, 8, 0, 0, 0], 8, 10)), &mut out);
        assert!(matches!(out[1].kind, EventKind::Write { calls: 1, .. }));
        // A run the kernel could not vouch for is a loss, not a write.
        run.header.flags = FLAG_RUN_UNSURE;
        d.decode(&bytes(&run), &mut out);
        assert_eq!(out[2].kind, EventKind::Lost { count: 1 });
        assert_eq!((d.stats.unsure_runs, d.stats.undecodable()), (1, 1));
    }

    #[test]
    fn decodes_rename_paths() {
        let mut rec = path_record(
            Kind::Path,
            sys(RENAMEAT2, [AT_FDCWD as u64, 0, 5, 0, 1, 0], 0, 1),
        );
        rec.sys.header.flags = FLAG_PATH_TRUNCATED;
        rec.path[..5].copy_from_slice(b"a.tmp");
        rec.path2[..1].copy_from_slice(b"a");
        match &decoded(&rec)[0].kind {
            EventKind::Rename {
                old_path,
                new_path,
                old_dirfd,
                new_dirfd,
                flags,
                ..
            } => {
                assert_eq!((old_path.as_str(), new_path.as_str()), ("a.tmp", "a"));
                assert_eq!((*old_dirfd, *new_dirfd, *flags), (AT_FDCWD, 5, 1));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decodes_an_exec_with_its_arguments_and_stand() {
        let mut rec = path_record(Kind::Exec, sys(0, [7, 0, 0, 0, 0, 0], 0, 1));
        rec.path[..14].copy_from_slice(b"/proc/self/exe");
        let args = b"docker-untar\0/\0/var/lib/docker/overlay2/x/diff\0";
        rec.path2[..args.len()].copy_from_slice(args);
        rec.sys.args[1] = args.len() as u64;
        rec.sys.file2.ino = 4026531832;
        match &decoded(&rec)[0].kind {
            EventKind::Exec {
                filename,
                argv,
                stamp: Some(stamp),
            } => {
                assert_eq!(filename, "/proc/self/exe");
                assert_eq!(
                    argv,
                    &["docker-untar", "/", "/var/lib/docker/overlay2/x/diff"]
                );
                assert_eq!((stamp.mnt_ns, stamp.root.ino), (4026531832, 77));
            }
            other => panic!("unexpected {other:?}"),
        }
        // A length past the buffer is cut to it, never trusted.
        rec.sys.args[1] = u64::MAX;
        rec.sys.file.ino = 0;
        let cut = decoded(&rec);
        assert!(
            matches!(&cut[0].kind, EventKind::Exec { argv, stamp: None, .. } if argv.len() == 3)
        );
    }

    #[test]
    fn counts_bad_sizes_and_unknown_kinds() {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.decode(&[1, 2, 3], &mut out);
        let mut r = sys(FSYNC, [3, 0, 0, 0, 0, 0], 0, 5);
        let mut b = bytes(&r);
        b.pop();
        d.decode(&b, &mut out);
        r.header.kind = 99;
        d.decode(&bytes(&r), &mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|e| e.kind == EventKind::Lost { count: 1 }));
        out.clear();
        assert_eq!((d.stats.bad_size, d.stats.unknown_kind), (2, 1));
        d.decode(&bytes(&sys(FSYNC, [3, 0, 0, 0, 0, 0], 0, 7)), &mut out);
        assert!(matches!(out[0].kind, EventKind::Sync { .. }));
        assert_eq!(d.stats.records, 4);
    }

    #[test]
    fn exit_status_and_signal() {
        let mut r = ExitRecord {
            header: header(Kind::Exit, size_of::<ExitRecord>(), 1),
            exit_code: 3 << 8,
            group_exit_code: 0,
            group_dead: 1,
            stack: 0,
        };
        assert_eq!(
            exit(&r),
            EventKind::Exit {
                group_dead: true,
                code: Some(3),
                signal: None,
                core_dumped: false
            }
        );
        r.exit_code = 9;
        assert_eq!(
            exit(&r),
            EventKind::Exit {
                group_dead: true,
                code: None,
                signal: Some(9),
                core_dumped: false
            }
        );
    }

    #[test]
    fn pwritev2_dsync_counts_as_durable_write() {
        match &decoded(&sys(PWRITEV2, [3, 0, 1, u64::MAX, 0, RWF_DSYNC], 100, 1))[0].kind {
            EventKind::Write {
                file: Some(f),
                offset,
                ..
            } => {
                assert!(f.flags & O_DSYNC != 0);
                assert_eq!(*offset, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
