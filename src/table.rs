//! The map from key hashes to per-person state (windows, last tasks, open tasks): open
//! addressing with linear probing over two arrays (keys, values), so that where a key's
//! lookup will read is known from the key alone, and those reads can be started early
//! ([`SlotHint::prefetch`]).
//!
//! Why not hashbrown: at a centre's key counts nearly every window lookup misses the caches,
//! and each read waits for the one before (control bytes, then the entry), a tenth of the
//! speed of reads that do not wait (BENCHMARKS.md, "The windows at a production-sized key
//! space"). The processor knows whose record comes next (its Kafka key) while it works on
//! the current one, so it can start those reads a record ahead; hashbrown cannot say where a
//! key lives without reading the table.
//!
//! Keys are hashes, so they need no hashing of their own: a key's home slot is the top bits
//! of its product with an odd constant. Key 0 marks an empty slot; a real key 0 is kept
//! beside the arrays.

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::Arc;

const EMPTY: u64 = 0;
/// Spreads keys whose low or high bits agree (those of one shard share their top bits).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;
const MIN_SLOTS: usize = 16;
/// Bytes in a cache line.
const LINE: usize = 64;

/// `V::default()` must own no memory: empty slots hold it, and it is overwritten unread.
pub(crate) struct KeyTable<V> {
    keys: Box<[u64]>,
    values: Box<[V]>,
    /// The value of key 0, which cannot live in `keys`.
    zero: Option<V>,
    /// Keys in `keys` (key 0 not counted).
    len: usize,
    /// Where the arrays are, readable without the table's lock.
    hint: Arc<SlotHint>,
}

impl<V: Default> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable {
            keys: Box::default(),
            values: Box::default(),
            zero: None,
            len: 0,
            hint: Arc::default(),
        }
    }
}

impl<V: Default> KeyTable<V> {
    /// An empty table that publishes where its arrays are through `hint`, a handle its
    /// owner keeps for this table and the ones that later replace it.
    pub fn with_hint(hint: Arc<SlotHint>) -> Self {
        hint.bits.store(0, Ordering::Relaxed);
        KeyTable {
            hint,
            ..KeyTable::default()
        }
    }

    /// The handle through which the table's slots can be prefetched without its lock.
    pub fn hint(&self) -> Arc<SlotHint> {
        self.hint.clone()
    }

    pub fn len(&self) -> usize {
        self.len + usize::from(self.zero.is_some())
    }

    pub fn get(&self, key: u64) -> Option<&V> {
        if key == EMPTY {
            return self.zero.as_ref();
        }
        self.find(key).map(|i| &self.values[i])
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        if key == EMPTY {
            return self.zero.as_mut();
        }
        self.find(key).map(|i| &mut self.values[i])
    }

    pub fn get_or_insert_with(&mut self, key: u64, value: impl FnOnce() -> V) -> &mut V {
        if key == EMPTY {
            return self.zero.get_or_insert_with(value);
        }
        let i = match self.find(key) {
            Some(i) => i,
            None => {
                self.reserve_one();
                self.place(key, value())
            }
        };
        &mut self.values[i]
    }

    /// Puts `value` under `key`; returns the value it replaces.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        if key == EMPTY {
            return self.zero.replace(value);
        }
        if let Some(i) = self.find(key) {
            return Some(std::mem::replace(&mut self.values[i], value));
        }
        self.reserve_one();
        self.place(key, value);
        None
    }

    pub fn remove(&mut self, key: u64) -> Option<V> {
        if key == EMPTY {
            return self.zero.take();
        }
        let i = self.find(key)?;
        let value = std::mem::take(&mut self.values[i]);
        self.remove_at(i);
        Some(value)
    }

    /// Makes room for one more key.
    fn reserve_one(&mut self) {
        // At most three quarters full: linear probing slows sharply beyond.
        if (self.len + 1) * 4 > self.keys.len() * 3 {
            self.resize((self.keys.len() * 2).max(MIN_SLOTS));
        }
    }

    /// Keeps the entries for which `keep` is true. It may see an entry twice (when a removal
    /// moves it across the end of the arrays), so it must decide the same way both times.
    pub fn retain(&mut self, mut keep: impl FnMut(u64, &mut V) -> bool) {
        if let Some(v) = &mut self.zero {
            if !keep(EMPTY, v) {
                self.zero = None;
            }
        }
        let mut i = 0;
        while i < self.keys.len() {
            let key = self.keys[i];
            if key != EMPTY && !keep(key, &mut self.values[i]) {
                // The slot now holds the next entry of its run, if any: look at it again.
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
        // Give back what a burst of keys took once most are gone.
        if self.keys.len() > MIN_SLOTS && self.len * 8 < self.keys.len() {
            self.resize((self.len * 2).next_power_of_two().max(MIN_SLOTS));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        let zero = self.zero.as_ref().map(|v| (EMPTY, v));
        self.keys
            .iter()
            .zip(self.values.iter())
            .filter(|(&k, _)| k != EMPTY)
            .map(|(&k, v)| (k, v))
            .chain(zero)
    }

    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(k, _)| k)
    }

    fn home(&self, key: u64) -> usize {
        slot_of(key, self.keys.len())
    }

    fn find(&self, key: u64) -> Option<usize> {
        if self.keys.is_empty() {
            return None;
        }
        let mask = self.keys.len() - 1;
        let mut i = self.home(key);
        loop {
            match self.keys[i] {
                k if k == key => return Some(i),
                EMPTY => return None,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Puts a key that is not in the table into its first free slot; there is one.
    fn place(&mut self, key: u64, value: V) -> usize {
        let mask = self.keys.len() - 1;
        let mut i = self.home(key);
        while self.keys[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.keys[i] = key;
        // An empty slot holds a default value, which owns nothing: overwrite it unread. (A
        // drop would read it first, a cache miss the insert then waits for; a write does
        // not wait.)
        std::mem::forget(std::mem::replace(&mut self.values[i], value));
        self.len += 1;
        i
    }

    /// Empties slot `hole`, then moves later entries of its run back so that every entry
    /// stays reachable from its home slot without passing an empty one.
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.keys.len() - 1;
        self.keys[hole] = EMPTY;
        self.values[hole] = V::default();
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let key = self.keys[j];
            if key == EMPTY {
                return;
            }
            let home = self.home(key);
            // The entry at `j` may fill the hole when the hole lies on its way from its home.
            if hole.wrapping_sub(home) & mask < j.wrapping_sub(home) & mask {
                self.keys.swap(hole, j);
                self.values.swap(hole, j);
                hole = j;
            }
        }
    }

    fn resize(&mut self, slots: usize) {
        let keys = std::mem::replace(&mut self.keys, vec![EMPTY; slots].into_boxed_slice());
        let values = std::mem::replace(
            &mut self.values,
            std::iter::repeat_with(V::default).take(slots).collect(),
        );
        self.len = 0;
        for (key, value) in keys.iter().zip(values.into_vec()) {
            if *key != EMPTY {
                self.place(*key, value);
            }
        }
        self.hint.publish(&self.keys, &self.values);
    }
}

/// The home slot of `key` in arrays of `slots` (a power of two) entries.
fn slot_of(key: u64, slots: usize) -> usize {
    (key.wrapping_mul(MIX) >> (64 - slots.trailing_zeros())) as usize
}

/// Where a table's arrays are, published whenever they move, so that a thread without the
/// table's lock can prefetch a key's slots. A prefetch through a stale hint (the arrays
/// moved meanwhile) fetches memory nobody reads, which costs a little and harms nothing.
#[derive(Default)]
pub(crate) struct SlotHint {
    keys: AtomicPtr<u64>,
    values: AtomicPtr<u8>,
    value_size: AtomicU32,
    /// log2 of the slots; 0 for no arrays yet.
    bits: AtomicU32,
}

impl SlotHint {
    fn publish<V>(&self, keys: &[u64], values: &[V]) {
        self.keys.store(keys.as_ptr().cast_mut(), Ordering::Relaxed);
        self.values
            .store(values.as_ptr().cast::<u8>().cast_mut(), Ordering::Relaxed);
        self.value_size
            .store(std::mem::size_of::<V>() as u32, Ordering::Relaxed);
        self.bits
            .store(keys.len().trailing_zeros(), Ordering::Relaxed);
    }

    /// Starts reading the cache lines that looking `key` up will read first: its home key
    /// slot and the value beside it.
    pub fn prefetch(&self, key: u64) {
        let bits = self.bits.load(Ordering::Relaxed);
        if bits == 0 {
            return;
        }
        let home = slot_of(key, 1 << bits);
        let keys = self.keys.load(Ordering::Relaxed);
        let values = self.values.load(Ordering::Relaxed);
        let size = self.value_size.load(Ordering::Relaxed) as usize;
        // Addresses only: nothing is read through them here.
        let value = values.wrapping_add(home * size);
        prefetch(keys.wrapping_add(home).cast());
        // Every line of the value, not only its first and last: a window's 120 bytes start
        // anywhere in a line and then span three lines in six cases of eight, and the
        // middle one holds the fields read first.
        let lines = (value as usize + size - 1) / LINE - value as usize / LINE;
        for line in 0..=lines {
            prefetch(value.wrapping_add(line * LINE));
        }
    }
}

/// Asks the CPU to start loading the cache line of `at`.
fn prefetch(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults, whatever the
    // address; SSE, which provides it, is part of every x86-64 CPU.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        /// By `retain` when true, else by `remove`.
        Remove(u64, bool),
        Get(u64),
    }

    /// Keys from a small set, so that operations meet each other's keys, spread over the
    /// whole range (and key 0) so that runs wrap around the arrays' end.
    fn key() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            (0u64..64).prop_map(|k| k.wrapping_mul(0x2545_f491_4f6c_dd1d)),
            // Keys with one home slot in any small table: long runs.
            (0u64..8).prop_map(|k| k + 1),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (key(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (key(), any::<bool>()).prop_map(|(k, by_retain)| Op::Remove(k, by_retain)),
            key().prop_map(Op::Get),
        ]
    }

    proptest! {
        /// Whatever the mix of inserts and removals, the table answers as a `HashMap` does.
        #[test]
        fn agrees_with_a_hash_map(ops in prop::collection::vec(op(), 0..400)) {
            let mut table = KeyTable::<u32>::default();
            let mut model = HashMap::new();
            for op in ops {
                match op {
                    // Half through each way in.
                    Op::Insert(k, v) if v % 2 == 0 => {
                        *table.get_or_insert_with(k, || v) = v;
                        model.insert(k, v);
                    }
                    Op::Insert(k, v) => prop_assert_eq!(table.insert(k, v), model.insert(k, v)),
                    Op::Remove(k, true) => {
                        table.retain(|key, _| key != k);
                        model.remove(&k);
                    }
                    Op::Remove(k, false) => prop_assert_eq!(table.remove(k), model.remove(&k)),
                    Op::Get(k) => prop_assert_eq!(table.get(k), model.get(&k)),
                }
                prop_assert_eq!(table.len(), model.len());
            }
            let mut held: Vec<_> = table.iter().map(|(k, &v)| (k, v)).collect();
            let mut expected: Vec<_> = model.into_iter().collect();
            held.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(held, expected);
        }
    }

    #[test]
    fn retain_removes_a_run_across_the_end_of_the_arrays() {
        let mut table = KeyTable::<u64>::default();
        // Keys whose home is the last slot of a 16-slot table: their run wraps to the front.
        let last: Vec<u64> = (1..u64::MAX)
            .filter(|&k| slot_of(k, MIN_SLOTS) == MIN_SLOTS - 1)
            .take(5)
            .collect();
        for &k in &last {
            table.get_or_insert_with(k, || k);
        }
        assert_eq!(table.keys.len(), MIN_SLOTS);
        table.retain(|k, _| k == last[4] || k == last[2]);
        assert_eq!(table.get(last[2]), Some(&last[2]));
        assert_eq!(table.get(last[4]), Some(&last[4]));
        assert_eq!(table.len(), 2);
        for k in [last[0], last[1], last[3]] {
            assert_eq!(table.get(k), None);
        }
    }

    #[test]
    fn shrinks_once_most_keys_are_gone_and_publishes_where_it_moved() {
        let mut table = KeyTable::<u64>::default();
        let hint = table.hint();
        for k in 1..=1_000 {
            table.get_or_insert_with(k, || k);
        }
        let grown = table.keys.len();
        assert_eq!(hint.bits.load(Ordering::Relaxed), grown.trailing_zeros());
        table.retain(|k, _| k <= 10);
        assert!(table.keys.len() < grown / 8, "{} slots", table.keys.len());
        assert_eq!(
            hint.keys.load(Ordering::Relaxed),
            table.keys.as_ptr().cast_mut()
        );
        assert_eq!(table.len(), 10);
        assert!((1..=10).all(|k| table.get(k) == Some(&k)));
        // A prefetch reads nothing: any key, before and after a move.
        hint.prefetch(12_345);
    }
}
