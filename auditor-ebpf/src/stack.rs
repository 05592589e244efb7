//! User stacks for the calls a finding can point at. The first time a
//! process makes such a call from a given place (return address and stack
//! pointer), the top of its stack goes to userspace, which unwinds it with
//! the binaries' unwind tables and sends back a signature: where the return
//! addresses were found and what they were. Later calls from the same place
//! compare those few words and, when they match, only name the stack: a hot
//! loop costs one copy (a few, until the signature is back: at most one per
//! 5 ms meanwhile once half the ring waits), then a handful of reads per
//! call.

use auditor_common::{
    Kind, STACK_BYTES, STACK_FP_FRAMES, STACK_PAGE, STACK_PENDING_GAP_NS, STACK_SIG_WORDS,
    STAT_STACK_LOST, STAT_STACK_REUSED, StackKey, StackRecord, StackSig,
};
use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf,
        generated::bpf_get_stack,
    },
    macros::map,
    maps::LruHashMap,
};

use crate::{
    maps::{COUNTERS, EVENTS, STACK_IDS, count},
    ring::{reserve, submit_now},
};

/// Signatures userspace sent back, by place (see the module comment).
#[map]
pub static STACK_SIGS: LruHashMap<StackKey, StackSig> = LruHashMap::with_max_entries(16384, 0);

/// Set by userspace: 0 turns stacks off (`--no-stacks`).
#[unsafe(no_mangle)]
static STACKS_ON: u32 = 1;

#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: an aligned read of our own global, volatile so the compiled-in
    // value is not folded (userspace rewrites it at load time).
    unsafe { core::ptr::read_volatile(&STACKS_ON) != 0 }
}

const BPF_F_USER_STACK: u64 = 1 << 8;

/// The id of the current thread's user stack at this call (ip, sp and bp
/// being its user registers): a known one when the signature for its place
/// matches, else a new copy sent to userspace; 0 when none could be had.
#[inline(always)]
/// `flags` go to a copy's header ([`auditor_common::STACK_UNSHOWN`]).
pub fn take<C: EbpfContext>(ctx: &C, tgid: u32, ip: u64, sp: u64, bp: u64, flags: u16) -> u32 {
    let key = StackKey {
        tgid,
        _pad: 0,
        ip,
        sp,
    };
    // Read only past the hot path (a matching signature).
    let now = || {
        // SAFETY: a call without arguments.
        unsafe { bpf_ktime_get_ns() }
    };
    match STACK_SIGS.get_ptr_mut(key) {
        Some(sig) => {
            // SAFETY: a live map value; userspace may rewrite it meanwhile,
            // which at worst fails the comparison (and sends a fresh copy).
            let sig = unsafe { &mut *sig };
            if matches(sig, sp) {
                count(STAT_STACK_REUSED);
                return sig.id;
            }
            // No signature for this stack yet: a copy from here may still
            // be on its way (userspace clears `copied_ns` with the answer).
            // While the ring keeps up, every call is copied; once it backs
            // up, one per gap, so copies cannot crowd out events.
            let now = now();
            if sig.copied_ns != 0
                && now.wrapping_sub(sig.copied_ns) < STACK_PENDING_GAP_NS
                && backed_up()
            {
                count(STAT_STACK_LOST);
                return 0;
            }
            sig.copied_ns = now;
        }
        None => {
            // Marks the place as copied; never over a signature userspace
            // wrote meanwhile.
            if STACK_SIGS.insert(key, PENDING, BPF_NOEXIST).is_ok()
                && let Some(sig) = STACK_SIGS.get_ptr_mut(key)
            {
                // SAFETY: the live value just inserted.
                unsafe { (*sig).copied_ns = now() };
            }
        }
    }
    copy(ctx, ip, sp, bp, flags)
}

/// Whether more than half of the ring waits to be read.
#[inline(always)]
fn backed_up() -> bool {
    const BPF_RB_AVAIL_DATA: u64 = 0;
    const BPF_RB_RING_SIZE: u64 = 1;
    EVENTS.query(BPF_RB_AVAIL_DATA) > EVENTS.query(BPF_RB_RING_SIZE) / 2
}

/// A place copied whose signature is not back (see [`take`]).
static PENDING: StackSig = StackSig {
    id: 0,
    words: 0,
    offsets: [0; STACK_SIG_WORDS],
    values: [0; STACK_SIG_WORDS],
    copied_ns: 0,
};

const BPF_NOEXIST: u64 = 1;

/// Whether the stack at `sp` holds the signature's words.
#[inline(always)]
fn matches(sig: &StackSig, sp: u64) -> bool {
    let words = sig.words;
    if words == 0 || sig.id == 0 {
        return false;
    }
    for i in 0..STACK_SIG_WORDS {
        if i as u32 >= words {
            break;
        }
        let at = sp.wrapping_add(u64::from(sig.offsets[i]));
        // SAFETY: a fault-checked read of user memory.
        match unsafe { bpf_probe_read_user(at as *const u64) } {
            Ok(v) if v == sig.values[i] => {}
            _ => return false,
        }
    }
    true
}

/// Sends the top of the stack (whole pages from the one holding `sp`) and
/// the kernel's frame-pointer walk; the new stack's id.
#[inline(never)]
/// (A subprogram takes five arguments at most: the thread is asked again.)
fn copy<C: EbpfContext>(ctx: &C, ip: u64, sp: u64, bp: u64, flags: u16) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(mut entry) = reserve::<StackRecord>(Kind::Stack, pid_tgid) else {
        count(STAT_STACK_LOST);
        return 0;
    };
    let id = match COUNTERS.get_ptr_mut(STACK_IDS) {
        // Ids start at 1: 0 means "no stack" in records.
        Some(n) => crate::atomic::add(n, 1) as u32 + 1,
        None => 0,
    };
    // SAFETY: a reservation of exactly one record, its header filled.
    let r = unsafe { &mut *entry.as_mut_ptr() };
    r.header.flags = flags;
    r.id = id;
    r.ip = ip;
    r.sp = sp;
    r.bp = bp;
    let base = sp & !(STACK_PAGE as u64 - 1);
    r.base = base;
    // SAFETY: the helper writes at most `size` bytes into the record.
    r.fp_len = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            r.fp.as_mut_ptr().cast(),
            (STACK_FP_FRAMES * 8) as u32,
            BPF_F_USER_STACK,
        )
    };
    let mut len = 0u32;
    for page in 0..STACK_BYTES / STACK_PAGE {
        // SAFETY: page `page` of the record's data, in bounds by the loop's
        // range.
        let dst = unsafe {
            core::slice::from_raw_parts_mut(r.data.as_mut_ptr().add(page * STACK_PAGE), STACK_PAGE)
        };
        let src = base.wrapping_add((page * STACK_PAGE) as u64) as *const u8;
        // SAFETY: a fault-checked read of user memory into the record.
        if unsafe { bpf_probe_read_user_buf(src, dst) }.is_err() {
            break;
        }
        len += STACK_PAGE as u32;
    }
    r.len = len;
    if len == 0 || id == 0 {
        entry.discard(0);
        count(STAT_STACK_LOST);
        return 0;
    }
    submit_now(entry);
    id
}
