//! A fast, non-cryptographic hasher for the tracker's tables. Their keys are
//! small integers (pids, table ids, inode identities) looked up several
//! times per event; SipHash's flood resistance buys nothing there and costs
//! a measurable share of the per-event time. Tables keyed by strings the
//! traced programs choose (paths) keep the standard hasher.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplier of the Fx family (as in rustc's `FxHasher`, 64-bit).
const K: u64 = 0xf135_7aea_2e62_a9c5;

/// Fx-style word hasher: add, multiply; the final rotation moves the mixed
/// high bits down so both the bucket index (low bits) and the control byte
/// (high bits) of the table vary.
#[derive(Clone, Copy, Default)]
pub struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn write_i32(&mut self, i: i32) {
        self.add(i as u32 as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

pub type FastBuild = BuildHasherDefault<FastHasher>;
pub type FastMap<K, V> = HashMap<K, V, FastBuild>;
pub type FastSet<T> = HashSet<T, FastBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FileId;

    #[test]
    fn distinct_small_keys_hash_apart() {
        use std::hash::BuildHasher;
        let b = FastBuild::default();
        let a = b.hash_one(FileId { dev: 2049, ino: 12 });
        let c = b.hash_one(FileId { dev: 2049, ino: 13 });
        assert_ne!(a, c);
        let mut m: FastMap<u32, u32> = FastMap::default();
        for i in 0..1000 {
            m.insert(i, i * 2);
        }
        assert_eq!(m.get(&500), Some(&1000));
    }
}
