//! Which keys a sharded map may hold, readable without its locks.
//!
//! Most calls touch a key that holds nothing: a callee never called by a flagged number, a
//! caller who called no elderly person, a person who never had a task. Finding that out
//! through the map took its shard's lock (two locked instructions) and a probe into a table
//! of up to millions of keys, for every event. A clear bit here says the same with one load
//! from an array of 128 KiB.
//!
//! One bit per key hash, set while its map entry may exist. The bits of a shard are written
//! only under that shard's lock (when a key is inserted, and when the shard is swept: then
//! they are rebuilt from the keys that stay), so a clear bit read outside the lock means the
//! key was absent when it was last written; a set bit may be another key's (about one in
//! eight for 150,000 keys), and then the caller takes the lock and looks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits per shard; with 64 shards, 2^20 bits in all.
const SHARD_BITS: usize = 1 << 14;
const SHARD_WORDS: usize = SHARD_BITS / 64;

pub struct Presence {
    words: Vec<AtomicU64>,
}

impl Presence {
    pub fn new(shards: usize) -> Presence {
        Presence {
            words: (0..shards * SHARD_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// The word and bit of `key`, whose map shard is `shard`.
    fn slot(shard: usize, key: u64) -> (usize, u64) {
        // The shard is chosen by the top bits and the map hashes the low ones: these are
        // neither.
        let bit = (key >> 32) as usize % SHARD_BITS;
        (shard * SHARD_WORDS + bit / 64, 1 << (bit % 64))
    }

    /// Whether `key` may be in the map: false means it is not.
    pub fn may_hold(&self, shard: usize, key: u64) -> bool {
        let (word, bit) = Self::slot(shard, key);
        self.words[word].load(Ordering::Acquire) & bit != 0
    }

    /// Marks `key` present. Only under the lock of `shard`, which makes the load and store
    /// one step: no one else writes this shard's words.
    pub fn insert(&self, shard: usize, key: u64) {
        let (word, bit) = Self::slot(shard, key);
        let word = &self.words[word];
        let old = word.load(Ordering::Relaxed);
        if old & bit == 0 {
            word.store(old | bit, Ordering::Release);
        }
    }

    /// Rebuilds the bits of `shard` from the keys it now holds. Only under its lock.
    pub fn rebuild(&self, shard: usize, keys: impl Iterator<Item = u64>) {
        let mut fresh = [0u64; SHARD_WORDS];
        for key in keys {
            // Shard 0's slot is the word's place within any shard.
            let (word, bit) = Self::slot(0, key);
            fresh[word] |= bit;
        }
        for (word, bits) in self.words[shard * SHARD_WORDS..][..SHARD_WORDS]
            .iter()
            .zip(fresh)
        {
            word.store(bits, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_absent_until_inserted_and_after_a_rebuild_without_it() {
        let p = Presence::new(4);
        let (a, b) = (0x0123_4567_89ab_cdef_u64, 0x0123_4568_89ab_cdef_u64);
        assert!(!p.may_hold(2, a));
        p.insert(2, a);
        assert!(p.may_hold(2, a));
        // Another shard's bits are its own.
        assert!(!p.may_hold(1, a));
        assert!(!p.may_hold(2, b));
        p.rebuild(2, [b].into_iter());
        assert!(!p.may_hold(2, a));
        assert!(p.may_hold(2, b));
        p.rebuild(2, std::iter::empty());
        assert!(!p.may_hold(2, b));
    }

    #[test]
    fn keys_that_share_a_bit_are_both_held() {
        let p = Presence::new(1);
        // The same bits 32..46: one slot.
        let (a, b) = (0x0000_1234_0000_0001_u64, 0xffff_1234_ffff_fffe_u64);
        assert_eq!(Presence::slot(0, a), Presence::slot(0, b));
        p.insert(0, a);
        assert!(p.may_hold(0, b), "a shared bit says 'maybe', never 'no'");
    }
}
