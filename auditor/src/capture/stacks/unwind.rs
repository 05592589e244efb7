//! Unwinding a copied stack: with the objects' unwind tables (framehop,
//! falling back to frame pointers where an address has none), checked
//! against the kernel's own frame-pointer walk, which says whether frame
//! pointers alone would have done and reaches further out when the copy
//! ends before the stack does.

use auditor_common::{STACK_SIG_WORDS, StackRecord, StackSig};
use framehop::{
    Unwinder,
    x86_64::{CacheX86_64, UnwindRegsX86_64},
};

use super::space::Unwind;

/// Most frames kept.
pub const MAX_FRAMES: usize = 64;

/// A frame's address and whether it is a return address (looked up one
/// byte back, in the call instruction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameAddr {
    pub address: u64,
    pub is_return: bool,
}

impl FrameAddr {
    pub fn lookup(self) -> u64 {
        if self.is_return {
            self.address.saturating_sub(1)
        } else {
            self.address
        }
    }
}

#[derive(Debug, Default)]
pub struct Unwound {
    pub frames: Vec<FrameAddr>,
    /// The frame-pointer chain agreed with every frame found.
    pub frame_pointers_agree: bool,
    /// The stack went on beyond what could be read.
    pub truncated: bool,
    /// The words the unwinder read (address, value), in order: what
    /// decides the frames.
    pub reads: Vec<(u64, u64)>,
}

/// The stack bytes of a record as an unwinder reads them.
struct Copy<'a> {
    base: u64,
    data: &'a [u8],
}

impl Copy<'_> {
    fn word(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let b = self.data.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

pub fn unwind(unwinder: &Unwind, cache: &mut CacheX86_64, rec: &StackRecord) -> Unwound {
    let len = (rec.len as usize).min(rec.data.len());
    let copy = Copy {
        base: rec.base,
        data: &rec.data[..len],
    };
    let mut out = Unwound::default();
    let mut beyond = false;
    let mut read = |addr: u64| match copy.word(addr) {
        Some(v) => {
            out.reads.push((addr, v));
            Ok(v)
        }
        None => {
            beyond = addr >= copy.base + len as u64;
            Err(())
        }
    };
    let regs = UnwindRegsX86_64::new(rec.ip, rec.sp, rec.bp);
    let mut frames = Vec::new();
    {
        let mut iter = unwinder.iter_frames(rec.ip, regs, cache, &mut read);
        while frames.len() < MAX_FRAMES {
            match iter.next() {
                Ok(Some(f)) => frames.push(FrameAddr {
                    address: f.address(),
                    is_return: f.is_return_address(),
                }),
                Ok(None) => break,
                Err(_) => break,
            }
        }
    }
    out.truncated = beyond || frames.len() == MAX_FRAMES;
    let fp = fp_chain(rec);
    out.frame_pointers_agree = frames.len() > 1
        && fp.len() >= frames.len()
        && frames.iter().zip(&fp).all(|(a, b)| a.address == *b);
    if out.truncated && out.frame_pointers_agree && fp.len() > frames.len() {
        // The kernel's walk went on past the copy along the same chain.
        for &a in &fp[frames.len()..] {
            if frames.len() == MAX_FRAMES {
                break;
            }
            frames.push(FrameAddr {
                address: a,
                is_return: true,
            });
        }
        out.truncated = fp.len() == auditor_common::STACK_FP_FRAMES;
    }
    out.frames = frames;
    out
}

/// The kernel's frame-pointer walk: addresses until the first zero.
fn fp_chain(rec: &StackRecord) -> Vec<u64> {
    let n = if rec.fp_len > 0 {
        (rec.fp_len as usize / 8).min(rec.fp.len())
    } else {
        0
    };
    rec.fp[..n]
        .iter()
        .copied()
        .take_while(|&a| a != 0)
        .collect()
}

/// The signature later calls from the same place are compared with: where
/// the unwinder found the return addresses (as offsets from `sp`) and what
/// they were. Only those: other words it read (a register a function saved
/// in its prologue, such as a loop counter in `rbp` of code without frame
/// pointers) change from call to call without changing the frames. Empty
/// when too little was found to be worth reusing.
pub fn signature(id: u32, sp: u64, u: &Unwound) -> StackSig {
    let mut sig = StackSig {
        id,
        ..StackSig::default()
    };
    if u.frames.len() < 2 {
        return sig;
    }
    let returns: Vec<u64> = u
        .frames
        .iter()
        .filter(|f| f.is_return)
        .map(|f| f.address)
        .collect();
    let mut n = 0;
    for &(addr, value) in &u.reads {
        if !returns.contains(&value) {
            continue;
        }
        let Some(off) = addr.checked_sub(sp).and_then(|o| u32::try_from(o).ok()) else {
            continue;
        };
        if n == STACK_SIG_WORDS {
            break;
        }
        if sig.offsets[..n].contains(&off) {
            continue;
        }
        sig.offsets[n] = off;
        sig.values[n] = value;
        n += 1;
    }
    sig.words = n as u32;
    sig
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_hold_the_return_addresses_above_sp() {
        let u = Unwound {
            frames: vec![
                FrameAddr {
                    address: 1,
                    is_return: false,
                },
                FrameAddr {
                    address: 2,
                    is_return: true,
                },
            ],
            // The return address 2 read twice, once below sp; 7 and 9 are
            // other words (saved registers).
            reads: vec![
                (0x1008, 7),
                (0x1010, 2),
                (0x1010, 2),
                (0x0ff8, 2),
                (0x1020, 9),
            ],
            ..Unwound::default()
        };
        let s = signature(5, 0x1000, &u);
        assert_eq!(s.id, 5);
        assert_eq!(s.words, 1);
        assert_eq!((s.offsets[0], s.values[0]), (0x10, 2));
        let lone = Unwound {
            frames: vec![u.frames[0]],
            ..Unwound::default()
        };
        assert_eq!(
            signature(5, 0x1000, &lone).words,
            0,
            "one frame says nothing"
        );
    }
}
