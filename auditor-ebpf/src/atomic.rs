//! Atomic operations on words of map values, shared by CPUs. `AtomicU64`'s
//! methods are not offered for the BPF target; the intrinsics are, and
//! compile to the BPF atomic instructions (`-mcpu=v3`).
//!
//! Every pointer passed here must point to an aligned word of a live map
//! value (maps hand out such pointers; they stay valid while the program
//! runs).

use core::intrinsics::{
    AtomicOrdering::SeqCst, atomic_and, atomic_cxchg, atomic_or, atomic_xadd, atomic_xchg,
};

/// Adds `v`; returns the value before.
#[inline(always)]
pub fn add(p: *mut u64, v: u64) -> u64 {
    // SAFETY: see the module comment.
    unsafe { atomic_xadd::<u64, u64, { SeqCst }>(p, v) }
}

/// Keeps the bits of `mask`; returns the value before.
#[inline(always)]
pub fn and(p: *mut u64, mask: u64) -> u64 {
    // SAFETY: see the module comment.
    unsafe { atomic_and::<u64, u64, { SeqCst }>(p, mask) }
}

/// Sets the bits of `bits`; returns the value before.
#[inline(always)]
pub fn or(p: *mut u64, bits: u64) -> u64 {
    // SAFETY: see the module comment.
    unsafe { atomic_or::<u64, u64, { SeqCst }>(p, bits) }
}

/// Stores `v`; returns the value before.
#[inline(always)]
pub fn swap(p: *mut u64, v: u64) -> u64 {
    // SAFETY: see the module comment.
    unsafe { atomic_xchg::<u64, { SeqCst }>(p, v) }
}

/// Replaces `old` by `new`; whether it did.
#[inline(always)]
pub fn cas(p: *mut u32, old: u32, new: u32) -> bool {
    // SAFETY: see the module comment.
    unsafe { atomic_cxchg::<u32, { SeqCst }, { SeqCst }>(p, old, new).1 }
}

/// [`cas`] of a 64-bit word.
#[inline(always)]
pub fn cas64(p: *mut u64, old: u64, new: u64) -> bool {
    // SAFETY: see the module comment.
    unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(p, old, new).1 }
}

/// A plain read that the compiler may not fold or reorder away (the word is
/// written by other CPUs).
#[inline(always)]
pub fn load<T: Copy>(p: *const T) -> T {
    // SAFETY: see the module comment.
    unsafe { core::ptr::read_volatile(p) }
}
