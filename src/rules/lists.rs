//! Number lists: known fraud numbers, official numbers that spoofing imitates. Millions of
//! entries, loaded from a file with the rule set and changed while running; a rule tests the
//! caller against them with `caller_number in_list <id>`.
//!
//! Entries are stored as 64-bit keys ([`crate::phone::list_key`]), so any spelling of a
//! number finds it and an entry costs a hash-set slot, not a string.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use rustc_hash::FxHashMap;

use crate::phone::list_key;

/// At most this many bad lines are reported per list file.
const MAX_REPORTED: usize = 10;

#[derive(Debug)]
pub struct NumberList {
    pub id: String,
    pub description: String,
    pub file: PathBuf,
    /// The entries read from the file.
    base: KeySet,
    /// Changes since the file was read: `true` added, `false` removed.
    changes: RwLock<FxHashMap<u64, bool>>,
    /// Whether `changes` holds anything: the lookup skips its lock until then.
    changed: AtomicBool,
}

impl NumberList {
    /// Reads `file`: one number per line, any spelling; `#` starts a comment; blank lines are
    /// skipped. Bad lines are reported as `file:line: message`, never quoting the number.
    pub fn load(id: &str, description: &str, file: &Path) -> Result<NumberList, Vec<String>> {
        let shown = file.display();
        let text = std::fs::read_to_string(file)
            .map_err(|e| vec![format!("{shown}: cannot read the list: {e}")])?;
        let mut keys = Vec::new();
        let mut bad = Vec::new();
        let mut bad_lines = 0usize;
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            match list_key(entry) {
                Some(key) => keys.push(key),
                None => {
                    bad_lines += 1;
                    if bad.len() < MAX_REPORTED {
                        bad.push(format!(
                            "{shown}:{}: not a phone number or service number (digits, an \
                             optional leading +, spaces or dashes)",
                            n + 1
                        ));
                    }
                }
            }
        }
        if bad_lines > MAX_REPORTED {
            bad.push(format!("{shown}: {bad_lines} bad lines in all"));
        }
        if !bad.is_empty() {
            return Err(bad);
        }
        Ok(NumberList {
            id: id.to_owned(),
            description: description.to_owned(),
            file: file.to_owned(),
            base: KeySet::new(keys),
            changes: RwLock::default(),
            changed: AtomicBool::new(false),
        })
    }

    /// Whether the number with `key` is on the list now.
    #[inline]
    pub fn contains(&self, key: u64) -> bool {
        if self.changed.load(Ordering::Acquire) {
            if let Some(&present) = self.changes.read().expect("list lock").get(&key) {
                return present;
            }
        }
        self.base.contains(&key)
    }

    /// Adds (`present`) or removes a number while running. False when `number` is not a
    /// number a list can hold.
    pub fn apply(&self, number: &str, present: bool) -> bool {
        let Some(key) = list_key(number) else {
            return false;
        };
        self.changes
            .write()
            .expect("list lock")
            .insert(key, present);
        self.changed.store(true, Ordering::Release);
        true
    }

    /// Takes over the changes made to `previous` while running (from the lists topic), so
    /// that a list read again from its file on a reload keeps them.
    pub fn carry_changes_from(&self, previous: &NumberList) {
        let theirs = previous.changes.read().expect("list lock");
        if theirs.is_empty() {
            return;
        }
        self.changes
            .write()
            .expect("list lock")
            .extend(theirs.iter().map(|(k, v)| (*k, *v)));
        self.changed.store(true, Ordering::Release);
    }

    /// Entries on the list now.
    pub fn len(&self) -> usize {
        let changes = self.changes.read().expect("list lock");
        let (added, removed) = changes.iter().fold((0, 0), |(a, r), (key, &present)| {
            match (present, self.base.contains(key)) {
                (true, false) => (a + 1, r),
                (false, true) => (a, r + 1),
                _ => (a, r),
            }
        });
        self.base.len() + added - removed
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A read-only set of 64-bit hashes in one open-addressed array, probed linearly: a lookup
/// usually reads one cache line, where a general hash set reads its control bytes and its
/// slot in two places. For lists of millions of entries, lookups miss the cache, and that
/// second miss doubled the time of one (BENCHMARKS.md, "Number lists").
#[derive(Debug, Default)]
struct KeySet {
    /// Power-of-two length, at most 5/8 full; 0 marks an empty slot.
    slots: Vec<u64>,
    len: usize,
}

impl KeySet {
    fn new(mut keys: Vec<u64>) -> KeySet {
        keys.sort_unstable();
        keys.dedup();
        let size = (keys.len() * 8 / 5 + 1).next_power_of_two().max(8);
        let mut set = KeySet {
            slots: vec![0; size],
            len: keys.len(),
        };
        for key in keys {
            let mut i = set.slot(key);
            while set.slots[i] != 0 {
                i = (i + 1) & (size - 1);
            }
            set.slots[i] = Self::stored(key);
        }
        set
    }

    /// Keys are hashes already: their low bits pick the slot.
    #[inline]
    fn slot(&self, key: u64) -> usize {
        key as usize & (self.slots.len() - 1)
    }

    /// 0 marks an empty slot, so the key 0 is stored as 1 (a hash collision of 2^-64).
    #[inline]
    fn stored(key: u64) -> u64 {
        key.max(1)
    }

    #[inline]
    fn contains(&self, key: &u64) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let want = Self::stored(*key);
        let mut i = self.slot(*key);
        loop {
            match self.slots[i] {
                0 => return false,
                k if k == want => return true,
                _ => i = (i + 1) & (self.slots.len() - 1),
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}
