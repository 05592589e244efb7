//! Loading and attaching the probes, and the maps userspace talks through.

use std::{
    os::fd::{AsFd, AsRawFd, RawFd},
    sync::Mutex,
    time::Instant,
};

use anyhow::{Context, Result};
use auditor_common::{
    STAT_ARGS_FULL, STAT_DROPPED, STAT_STACK_LOST, STAT_STACK_REUSED, STAT_TRACED_FULL,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{RawTracePoint, raw_trace_point::RawTracePointLink},
};

use super::{btf, preflight};
use crate::{error::UserError, timings};

static PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/auditor-ebpf.o"));

/// Loaded, attached probes. Dropping this detaches everything.
pub struct Probes {
    links: Links,
    // Keeps programs and maps alive; dropped after the links (None only
    // while dropping).
    ebpf: Option<Ebpf>,
    pub ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
    traced_fd: RawFd,
    flush_fd: RawFd,
    stack_sigs_fd: RawFd,
    stacks: bool,
}

/// Makes the syscall probes return at once (`cargo xtask bench` measures
/// the price of having them attached at all with it).
const EMPTY_PROBES_ENV: &str = "AUDITOR_BENCH_EMPTY_PROBES";

/// Whether the probes count visits and runs of positioned writes in the
/// kernel (the default). `AUDITOR_AGGREGATE=0` has them reported call by
/// call instead: the analyzer's results must be the same both ways, and
/// tests compare them.
fn aggregate() -> bool {
    std::env::var_os("AUDITOR_AGGREGATE").is_none_or(|v| v != "0")
}

/// Entries of the probes' per-thread array, then of the fallback hash map
/// for threads whose array entry another live thread holds. The array has
/// one entry per possible thread id (pid_max rounded up to a power of two),
/// at most 32768; the fallback map is only large when pid_max exceeds that
/// (a few entries otherwise, in case pid_max is raised while we run).
/// `AUDITOR_THREAD_SLOTS` forces a smaller array, so tests can make threads
/// share entries on a machine whose pid_max never would.
fn thread_slots() -> (u32, u32) {
    const MAX: u32 = 32768;
    const FEW: u32 = 64;
    if let Some(n) = std::env::var("AUDITOR_THREAD_SLOTS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| n.is_power_of_two() && *n >= 2 && *n <= MAX)
    {
        return (n, MAX);
    }
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(u32::MAX);
    let slots = pid_max
        .max(2)
        .checked_next_power_of_two()
        .unwrap_or(MAX)
        .min(MAX);
    (slots, if pid_max <= slots { FEW } else { MAX })
}

/// What a mode needs loaded beyond the probes every mode uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// Crash points (`auditor crashtest`): left out of the other modes'
    /// programs, so the verifier does not check them there.
    pub crash_points: bool,
    /// User stacks (not `--no-stacks`): without them their tail program
    /// is neither verified nor installed.
    pub stacks: bool,
}

/// Counters the probes keep in the kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelStats {
    /// Records lost because the ring buffer was full.
    pub dropped: u64,
    /// Syscalls not followed because the per-thread table was full.
    pub args_full: u64,
    /// Processes not traced because the traced-process table was full.
    pub traced_full: u64,
    /// Stacks that could not be taken (their calls have none).
    pub stacks_lost: u64,
    /// Calls whose stack was known already and only named.
    pub stacks_reused: u64,
}

impl KernelStats {
    /// Every event the kernel could not hand us, whatever the reason.
    pub fn lost(&self) -> u64 {
        self.dropped + self.args_full + self.traced_full
    }
}

impl Probes {
    /// Checks the host, loads the probes with this kernel's offsets and
    /// attaches them. Fails with a [`UserError`] for anything fixable.
    pub fn load(ring_bytes: u32, needs: Needs) -> Result<Probes> {
        if PROBE_OBJECT.is_empty() {
            return Err(UserError::new(
                "this auditor binary was built without its probes: build it with `cargo xtask build`",
            )
            .into());
        }
        let t = Instant::now();
        preflight::check_privileges()?;
        preflight::check_btf(std::path::Path::new(btf::VMLINUX_BTF))?;
        preflight::ensure_tracefs()?;
        preflight::raise_memlock();
        let t = timings::since("preflight", t);

        let offsets = btf::with_kernel_btf(|raw| {
            let kbtf = btf::Btf::parse(raw)
                .map_err(|e| UserError::new(format!("cannot parse {}: {e:#}", btf::VMLINUX_BTF)))?;
            btf::kernel_offsets(&kbtf).map_err(|e| {
                UserError::new(format!("this kernel's structures are not supported: {e:#}"))
            })
        })
        .map_err(|e| UserError::new(format!("cannot read {}: {e}", btf::VMLINUX_BTF)))??;
        let t = timings::since("btf offsets", t);

        let (slots, overflow) = thread_slots();
        let empty = std::env::var_os(EMPTY_PROBES_ENV).is_some_and(|v| v == "1");
        if empty {
            eprintln!(
                "auditor: {EMPTY_PROBES_ENV}=1: the syscall probes return at once and capture \
                 nothing (a benchmark's floor)"
            );
        }
        let mut loader = EbpfLoader::new();
        let t = timings::since("loader (kernel BTF parsed by aya)", t);
        let mut ebpf = loader
            // The probes carry no CO-RE relocations: the offsets above are
            // all they take from the kernel's BTF.
            .btf(None)
            .override_global("OFFSETS", &offsets, true)
            .override_global("EMPTY_PROBES", &u32::from(empty), true)
            .override_global("CRASH_POINTS", &u32::from(needs.crash_points), true)
            .override_global("AGGREGATE", &u32::from(aggregate()), true)
            .override_global("SLOT_MASK", &(slots - 1), true)
            .override_global("STACKS_ON", &u32::from(needs.stacks), true)
            .map_max_entries("SLOTS", slots)
            .map_max_entries("PENDING", overflow)
            .map_max_entries("EVENTS", ring_bytes)
            .load(PROBE_OBJECT)
            .context("loading the probes into the kernel")?;
        let t = timings::since("object and maps", t);

        load_programs(&mut ebpf, needs)?;
        let t = timings::since("verifier (all programs)", t);

        // The record-writing tail of sys_exit, in place before sys_exit runs.
        {
            let tail: &mut RawTracePoint = program(&mut ebpf, "sys_exit_report")?;
            let fd = tail.fd()?.try_clone()?;
            let mut tails = ProgramArray::try_from(ebpf.map_mut("TAILS").context("no TAILS map")?)?;
            tails.set(0, &fd, 0).context("installing sys_exit_report")?;
            if needs.stacks {
                let tail: &mut RawTracePoint = program(&mut ebpf, "sys_enter_stack")?;
                let fd = tail.fd()?.try_clone()?;
                let mut tails =
                    ProgramArray::try_from(ebpf.map_mut("TAILS").context("no TAILS map")?)?;
                tails.set(1, &fd, 0).context("installing sys_enter_stack")?;
            }
        }

        let mut links = Links::default();
        for name in RAW_TRACEPOINTS {
            let p: &mut RawTracePoint = program(&mut ebpf, name)?;
            let id = p
                .attach(name)
                .with_context(|| format!("attaching raw tracepoint {name}"))?;
            links.raw.push(p.take_link(id)?);
        }

        let flush_fd = {
            let p: &mut RawTracePoint = program(&mut ebpf, "flush_runs")?;
            p.fd()?.as_fd().as_raw_fd()
        };
        let traced_fd = match ebpf.map("TRACED") {
            Some(Map::HashMap(m)) => m.fd().as_fd().as_raw_fd(),
            _ => anyhow::bail!("probe object has no TRACED hash map"),
        };
        let stack_sigs_fd = match ebpf.map("STACK_SIGS") {
            Some(Map::LruHashMap(m)) => m.fd().as_fd().as_raw_fd(),
            _ => anyhow::bail!("probe object has no STACK_SIGS map"),
        };
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("no EVENTS map")?)?;
        let stats = PerCpuArray::try_from(ebpf.take_map("STATS").context("no STATS map")?)?;
        timings::since("attach", t);
        Ok(Probes {
            links,
            ebpf: Some(ebpf),
            ring,
            stats,
            traced_fd,
            flush_fd,
            stack_sigs_fd,
            stacks: needs.stacks,
        })
    }

    fn ebpf_mut(&mut self) -> Result<&mut Ebpf> {
        self.ebpf.as_mut().context("the probes are being unloaded")
    }

    /// Whether the probes take stacks (not `--no-stacks`).
    pub fn stacks(&self) -> bool {
        self.stacks
    }

    /// Raw fd of the map of stack signatures (userspace writes what it
    /// learnt unwinding a stack, see the probes' stack.rs).
    pub fn stack_sigs_fd(&self) -> RawFd {
        self.stack_sigs_fd
    }

    /// Raw fd of the traced-tgid map, for a child to add itself before exec.
    pub fn traced_map_fd(&self) -> RawFd {
        self.traced_fd
    }

    /// Starts tracing a process that is already running (`attach`); its
    /// forks are followed from then on by the fork probe.
    pub fn trace_pid(&mut self, pid: u32) -> Result<()> {
        self.map_insert("TRACED", pid).map_err(|e| {
            UserError::new(format!(
                "cannot trace pid {pid}: the kernel's table of traced processes (32768) is full or unusable ({e:#})"
            ))
            .into()
        })
    }

    /// Makes later execs under `comm` (zero-padded, at most 15 bytes) start
    /// tracing, for `attach --comm NAME --follow-new`.
    pub fn watch_comm(&mut self, comm: [u8; 16]) -> Result<()> {
        self.map_insert("WATCH_COMMS", comm)
    }

    /// Makes later execs inside cgroup v2 `id` (or below it) start tracing,
    /// for `attach --cgroup PATH --follow-new`.
    pub fn watch_cgroup(&mut self, id: u64) -> Result<()> {
        self.map_insert("WATCH_CGROUPS", id)
    }

    fn map_insert<K: aya::Pod>(&mut self, name: &str, key: K) -> Result<()> {
        let map = self
            .ebpf_mut()?
            .map_mut(name)
            .with_context(|| format!("probe object has no {name} map"))?;
        let mut m = aya::maps::HashMap::<_, K, u32>::try_from(map)?;
        m.insert(key, 1, 0)
            .with_context(|| format!("adding to the {name} map"))
    }

    /// Arms the crash point of `auditor crashtest`: the traced process whose
    /// `ordinal`-th (1-based) successful call of `class` (1 renames, 2
    /// fsyncs; 0 disarms) returns is stopped with SIGSTOP before it runs on.
    /// Returns the map's raw fd, whose slot 3 then tells the sequence number
    /// (+1) of that call's record.
    pub fn arm_crash(&mut self, class: u64, ordinal: u64) -> Result<RawFd> {
        let map = self
            .ebpf_mut()?
            .map_mut("CRASH")
            .context("probe object has no CRASH map")?;
        let fd = match &*map {
            Map::Array(m) => m.fd().as_fd().as_raw_fd(),
            _ => anyhow::bail!("CRASH is not an array map"),
        };
        let mut slots: aya::maps::Array<&mut MapData, u64> = aya::maps::Array::try_from(map)?;
        for (i, v) in [(2, 0), (3, 0), (1, ordinal), (0, class)] {
            slots.set(i, v, 0)?;
        }
        Ok(fd)
    }

    /// Makes the kernel report the runs of writes it is still counting
    /// (a thread that only writes produces no other record to flush them).
    pub fn flush_runs(&self) -> Result<()> {
        // struct bpf_attr for BPF_PROG_TEST_RUN: prog_fd, retval, then
        // fields that must stay zero for a raw tracepoint without context.
        let mut attr = [0u64; 10];
        attr[0] = self.flush_fd as u32 as u64;
        const BPF_PROG_TEST_RUN: libc::c_long = 10;
        // SAFETY: a zeroed attr of the size passed, naming our program.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if r < 0 {
            anyhow::bail!("running flush_runs: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn kernel_stats(&self) -> KernelStats {
        let sum = |i: u32| {
            self.stats
                .get(&i, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        KernelStats {
            dropped: sum(STAT_DROPPED),
            args_full: sum(STAT_ARGS_FULL),
            traced_full: sum(STAT_TRACED_FULL),
            stacks_lost: sum(STAT_STACK_LOST),
            stacks_reused: sum(STAT_STACK_REUSED),
        }
    }
}

/// Raw tracepoints, attached under their program's name. All raw: a perf
/// tracepoint's detach waits for an RCU grace period (tens of ms each,
/// under a global mutex), a raw one's does not.
const RAW_TRACEPOINTS: [&str; 7] = [
    "sys_enter",
    "sys_exit",
    "sched_process_fork",
    "sched_process_exec",
    "sched_process_exit",
    "signal_generate",
    "signal_deliver",
];

/// Every program: the attached ones, the tails of sys_exit and sys_enter
/// and the flush userspace runs. Longest to verify first, so the threads
/// below finish together.
const PROGRAMS: [&str; 10] = [
    "sys_exit_report",
    "sched_process_exec",
    "sys_exit",
    "sys_enter_stack",
    "sched_process_exit",
    "flush_runs",
    "signal_generate",
    "signal_deliver",
    "sched_process_fork",
    "sys_enter",
];

/// Loads every program the mode needs, on as many threads as there are
/// CPUs: the verifier is most of start-up, it checks each program on its
/// own, and (for a privileged loader) takes no lock that would serialise
/// them.
fn load_programs(ebpf: &mut Ebpf, needs: Needs) -> Result<()> {
    let wanted =
        |name: &str| PROGRAMS.contains(&name) && (needs.stacks || name != "sys_enter_stack");
    let mut todo: Vec<(&str, &mut aya::programs::Program)> = ebpf
        .programs_mut()
        .filter(|(name, _)| wanted(name))
        .collect();
    if todo.len() != PROGRAMS.iter().filter(|n| wanted(n)).count() {
        anyhow::bail!("probe object lacks some of its programs");
    }
    todo.sort_by_key(|(name, _)| std::cmp::Reverse(PROGRAMS.iter().position(|p| p == name)));
    let queue = Mutex::new(todo);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let Some((name, prog)) =
                            queue.lock().unwrap_or_else(|e| e.into_inner()).pop()
                        else {
                            return Ok(());
                        };
                        let t = Instant::now();
                        match prog {
                            aya::programs::Program::RawTracePoint(p) => p.load(),
                            _ => anyhow::bail!("program {name} has an unexpected type"),
                        }
                        .with_context(|| format!("loading {name}"))?;
                        if timings::enabled() {
                            let insns = prog
                                .info()
                                .ok()
                                .and_then(|i| i.verified_instruction_count())
                                .unwrap_or(0);
                            timings::record(
                                format!("verifier {name} ({insns} insns verified)"),
                                t.elapsed(),
                            );
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| anyhow::bail!("a loader thread panicked"))
        })
    })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .with_context(|| format!("probe object has no program {name}"))?;
    Ok(p.try_into()?)
}

/// The attachments, owned so they are closed before the programs.
#[derive(Default)]
struct Links {
    raw: Vec<RawTracePointLink>,
}

impl Drop for Probes {
    /// Raw tracepoints detach at once: no thread per link is needed.
    fn drop(&mut self) {
        let t = Instant::now();
        drop(std::mem::take(&mut self.links));
        // Programs and maps (the ring buffer, the per-thread array) are
        // freed as their fds close.
        drop(self.ebpf.take());
        timings::since("detach", t);
    }
}

/// Adds the calling process to the traced-tgid map with a raw `bpf(2)`
/// call. Runs in a freshly forked child before exec, so the first
/// instruction of the new program is already traced: only async-signal-safe
/// calls here.
pub fn trace_self_before_exec(map_fd: RawFd) -> std::io::Result<()> {
    #[repr(C)]
    struct MapUpdate {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    // SAFETY: getpid has no preconditions.
    let key: u32 = unsafe { libc::getpid() } as u32;
    let value: u32 = 1;
    let attr = MapUpdate {
        map_fd: map_fd as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    // SAFETY: attr points to a valid bpf_attr prefix for BPF_MAP_UPDATE_ELEM.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &attr as *const MapUpdate,
            std::mem::size_of::<MapUpdate>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
