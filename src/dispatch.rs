//! One open task per person at risk.
//!
//! The dispatcher remembers, per callee, the task that is open for them. A further event for
//! the same callee within the suppression window creates no new task unless its level is
//! higher, in which case an upgrade is emitted that references the earlier task. Time is the
//! events' own time, not the wall clock, so replaying history gives the same decisions.
//!
//! State is kept per input partition, as Kafka Streams keeps a state store per task: input is
//! keyed by callee, so a person's events and their open task live on one partition. Each
//! partition has its own event-time watermark (one partition's clock cannot expire another's
//! tasks), its own expiry queue (expiry and eviction cost O(1) per entry, never a scan), and
//! can be dropped on revocation and restored on assignment as a whole.
//!
//! Callees are keyed by a 64-bit hash of the canonical number, so the state holds no phone
//! numbers. State is bounded by `max_open`: at the bound, the oldest entry of the partition
//! is evicted (and counted) to make room.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::rules::Level;
use crate::table::{KeyTable, SlotHint};
use crate::task::TaskId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No open task for this callee: emit a new one.
    New,
    /// An open task exists at a lower level: emit an upgrade referencing it.
    Upgrade { previous: TaskId },
    /// An open task at the same or a higher level covers this event.
    Suppressed { open: TaskId },
}

/// The most upgrades one task can go through: low → medium → high → critical.
const MAX_CHAIN: usize = 3;

/// The open task of one person, as remembered and as written to the state changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTask {
    pub task_id: TaskId,
    pub level: Level,
    pub opened_at_ms: i64,
    /// The tasks this one upgraded, oldest first, so that a redelivered event of any of them
    /// gets its own decision back: its kind and its `upgrade_of`.
    #[serde(default, with = "chain_serde")]
    pub chain: [Option<TaskId>; MAX_CHAIN],
}

/// An empty slot's value (see [`KeyTable`]): never a person's task.
impl Default for OpenTask {
    fn default() -> OpenTask {
        OpenTask::fresh(TaskId([0; 16]), Level::Low, 0)
    }
}

impl OpenTask {
    fn fresh(task_id: TaskId, level: Level, opened_at_ms: i64) -> OpenTask {
        OpenTask {
            task_id,
            level,
            opened_at_ms,
            chain: [None; MAX_CHAIN],
        }
    }

    fn upgraded_by(&self, task_id: TaskId, level: Level, at_ms: i64) -> OpenTask {
        let mut chain = self.chain;
        let used = chain.iter().take_while(|c| c.is_some()).count();
        if used == MAX_CHAIN {
            chain.rotate_left(1);
            chain[MAX_CHAIN - 1] = Some(self.task_id);
        } else {
            chain[used] = Some(self.task_id);
        }
        OpenTask {
            task_id,
            level,
            opened_at_ms: at_ms,
            chain,
        }
    }

    /// The decision `task_id` got when it was first made, if it belongs to this chain.
    fn replay(&self, task_id: TaskId) -> Option<Decision> {
        let mut previous = None;
        for id in self.chain.iter().flatten().copied().chain([self.task_id]) {
            if id == task_id {
                return Some(match previous {
                    None => Decision::New,
                    Some(previous) => Decision::Upgrade { previous },
                });
            }
            previous = Some(id);
        }
        None
    }
}

mod chain_serde {
    use super::{TaskId, MAX_CHAIN};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        c: &[Option<TaskId>; MAX_CHAIN],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(c.iter().flatten())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<[Option<TaskId>; MAX_CHAIN], D::Error> {
        let ids = Vec::<TaskId>::deserialize(d)?;
        let mut chain = [None; MAX_CHAIN];
        for (slot, id) in chain.iter_mut().zip(ids.iter().rev().take(MAX_CHAIN).rev()) {
            *slot = Some(*id);
        }
        Ok(chain)
    }
}

/// What [`Dispatcher::decide`] decided, and the entry it now remembers for the callee (to be
/// written to the state changelog), if the decision emits a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    pub decision: Decision,
    pub state: Option<OpenTask>,
}

struct PartitionState {
    /// By callee key (see [`callee_key`]), in a table whose slot for a key can be
    /// prefetched from the key alone ([`Dispatcher::prefetch`]).
    open: KeyTable<OpenTask>,
    /// (opened_at_ms, callee) in insertion order. An item whose entry was since replaced is
    /// stale and skipped when it reaches the front.
    expiry: VecDeque<(i64, u64)>,
    /// Latest event time seen on this partition: the clock its expiry runs on.
    watermark_ms: i64,
}

impl PartitionState {
    fn new(hint: Arc<SlotHint>) -> PartitionState {
        PartitionState {
            open: KeyTable::with_hint(hint),
            expiry: VecDeque::new(),
            watermark_ms: 0,
        }
    }

    fn insert(&mut self, callee: u64, task: OpenTask) -> bool {
        self.watermark_ms = self.watermark_ms.max(task.opened_at_ms);
        self.expiry.push_back((task.opened_at_ms, callee));
        self.open.insert(callee, task).is_none()
    }

    /// Removes the entry at the front of the expiry queue if `expired` says so; returns
    /// whether a live entry was removed, or `None` when the queue is done.
    fn pop_front_if(&mut self, expired: impl Fn(i64) -> bool) -> Option<bool> {
        let &(at, callee) = self.expiry.front()?;
        if !expired(at) {
            return None;
        }
        self.expiry.pop_front();
        let live = self.open.get(callee).is_some_and(|t| t.opened_at_ms == at);
        if live {
            self.open.remove(callee);
        }
        Some(live)
    }
}

pub struct Dispatcher {
    /// Indexed by input partition: partition ids are small and dense.
    partitions: RwLock<Vec<Option<Mutex<PartitionState>>>>,
    /// Where the open tasks of partition `i` are, for the first [`HINTED_PARTITIONS`],
    /// readable without the locks above (kept across the partition's state being dropped
    /// and made again).
    hints: Box<[Arc<SlotHint>]>,
    window_ms: i64,
    max_open: usize,
    open_count: AtomicUsize,
    evicted: AtomicU64,
    not_remembered: AtomicU64,
}

/// Hashes a canonical callee number (see [`crate::phone`]) to the key the dispatcher stores.
pub fn callee_key(number: &str) -> u64 {
    callee_key_of_bytes(number.as_bytes())
}

/// [`callee_key`] of a number given as bytes (a Kafka record's key).
pub fn callee_key_of_bytes(number: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(number)
}

/// Partitions whose open tasks the look-ahead can prefetch; those beyond work the same,
/// without it. (Input topics have tens of partitions.)
const HINTED_PARTITIONS: usize = 1024;

impl Dispatcher {
    pub fn new(window: std::time::Duration, max_open: usize) -> Dispatcher {
        Dispatcher {
            partitions: RwLock::default(),
            hints: (0..HINTED_PARTITIONS).map(|_| Arc::default()).collect(),
            window_ms: window.as_millis() as i64,
            max_open,
            open_count: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            not_remembered: AtomicU64::new(0),
        }
    }

    /// Runs `f` on `partition`'s state, creating it when new.
    fn with_partition<R>(&self, partition: i32, f: impl FnOnce(&mut PartitionState) -> R) -> R {
        let i = usize::try_from(partition).expect("Kafka partitions are not negative");
        {
            let parts = self.partitions.read().expect("partitions lock");
            if let Some(Some(p)) = parts.get(i) {
                return f(&mut p.lock().expect("partition lock"));
            }
        }
        let mut parts = self.partitions.write().expect("partitions lock");
        if parts.len() <= i {
            parts.resize_with(i + 1, || None);
        }
        let p = parts[i].get_or_insert_with(|| {
            let hint = self.hints.get(i).cloned().unwrap_or_default();
            Mutex::new(PartitionState::new(hint))
        });
        f(p.get_mut().expect("partition lock"))
    }

    /// Starts loading what deciding an event for `callee` on `partition` reads: the
    /// processor calls it for the next record (the input is keyed by callee) before it
    /// works on the current one (see `Windows::prefetch`).
    pub fn prefetch(&self, callee: u64, partition: i32) {
        if let Some(hint) = usize::try_from(partition)
            .ok()
            .and_then(|i| self.hints.get(i))
        {
            hint.prefetch(callee);
        }
    }

    /// Decides what an event at `level` for `callee` (see [`callee_key`]) from input
    /// `partition` becomes, and records the task it opens.
    pub fn decide(
        &self,
        callee: u64,
        level: Level,
        at_ms: i64,
        task_id: TaskId,
        partition: i32,
    ) -> Decided {
        self.with_partition(partition, |st| {
            st.watermark_ms = st.watermark_ms.max(at_ms);
            let next = match st.open.get(callee) {
                Some(open) => {
                    // A redelivered event must reproduce its own decision, not be suppressed
                    // by itself or by the upgrade that followed it.
                    if let Some(decision) = open.replay(task_id) {
                        return Decided {
                            decision,
                            state: Some(*open),
                        };
                    }
                    if at_ms - open.opened_at_ms < self.window_ms {
                        if level <= open.level {
                            return Decided {
                                decision: Decision::Suppressed { open: open.task_id },
                                state: None,
                            };
                        }
                        (
                            Decision::Upgrade {
                                previous: open.task_id,
                            },
                            open.upgraded_by(task_id, level, at_ms),
                        )
                    } else {
                        (Decision::New, OpenTask::fresh(task_id, level, at_ms))
                    }
                }
                None => {
                    if !self.make_room(st) {
                        self.not_remembered.fetch_add(1, Ordering::Relaxed);
                        return Decided {
                            decision: Decision::New,
                            state: None,
                        };
                    }
                    (Decision::New, OpenTask::fresh(task_id, level, at_ms))
                }
            };
            if st.insert(callee, next.1) {
                self.open_count.fetch_add(1, Ordering::Relaxed);
            }
            Decided {
                decision: next.0,
                state: Some(next.1),
            }
        })
    }

    /// At `max_open`, evicts this partition's oldest entry. False when there is nothing of
    /// this partition's to evict (other partitions hold the whole bound).
    fn make_room(&self, st: &mut PartitionState) -> bool {
        if self.open_count.load(Ordering::Relaxed) < self.max_open {
            return true;
        }
        while let Some(live) = st.pop_front_if(|_| true) {
            if live {
                self.open_count.fetch_sub(1, Ordering::Relaxed);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Records an open task read back from the state changelog of `partition`. A later
    /// record for the same callee replaces an earlier one, as compaction would.
    pub fn restore(&self, partition: i32, callee: u64, task: OpenTask) {
        self.with_partition(partition, |st| {
            if st.insert(callee, task) {
                self.open_count.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// Forgets tasks whose window has passed by their partition's event time. Entries are
    /// kept for a second window so that late events still find the task they belong to.
    /// Returns how many were dropped.
    pub fn purge_expired(&self) -> usize {
        let horizon = 2 * self.window_ms;
        let parts = self.partitions.read().expect("partitions lock");
        let mut dropped = 0;
        for p in parts.iter().flatten() {
            let mut st = p.lock().expect("partition lock");
            let watermark = st.watermark_ms;
            while let Some(live) = st.pop_front_if(|at| watermark.saturating_sub(at) >= horizon) {
                dropped += usize::from(live);
            }
        }
        self.open_count.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// Forgets the state of partitions this instance no longer owns.
    pub fn drop_partitions(&self, partitions: &[i32]) -> usize {
        let mut parts = self.partitions.write().expect("partitions lock");
        let dropped: usize = partitions
            .iter()
            .filter_map(|&p| parts.get_mut(usize::try_from(p).ok()?)?.take())
            .map(|st| st.into_inner().expect("partition lock").open.len())
            .sum();
        self.open_count.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// Whether state for `partition` is held (assigned and restored, or seen).
    pub fn holds(&self, partition: i32) -> bool {
        let parts = self.partitions.read().expect("partitions lock");
        usize::try_from(partition).is_ok_and(|i| matches!(parts.get(i), Some(Some(_))))
    }

    /// The open tasks held for `partition`: (callee key, task).
    pub fn open_tasks(&self, partition: i32) -> Vec<(u64, OpenTask)> {
        let parts = self.partitions.read().expect("partitions lock");
        usize::try_from(partition)
            .ok()
            .and_then(|i| parts.get(i)?.as_ref())
            .map(|p| {
                let st = p.lock().expect("partition lock");
                st.open.iter().map(|(k, t)| (k, *t)).collect()
            })
            .unwrap_or_default()
    }

    /// Starts empty state for `partition` (restored entries then go into it).
    pub fn open_partition(&self, partition: i32) {
        self.with_partition(partition, |_| ());
    }

    /// Open tasks remembered now.
    pub fn open_count(&self) -> usize {
        self.open_count.load(Ordering::Relaxed)
    }

    /// Entries evicted at `max_open` to make room for a new person.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Tasks opened while the state was full with other partitions' entries, so not
    /// remembered for suppression.
    pub fn not_remembered(&self) -> u64 {
        self.not_remembered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: i64 = 60_000;

    fn id(n: u8) -> TaskId {
        TaskId([n; 16])
    }

    fn dispatcher() -> Dispatcher {
        Dispatcher::new(Duration::from_secs(30 * 60), 100)
    }

    fn decide(d: &Dispatcher, callee: u64, level: Level, at: i64, task: u8, p: i32) -> Decision {
        d.decide(callee, level, at, id(task), p).decision
    }

    #[test]
    fn first_event_opens_a_task() {
        let d = dispatcher();
        let decided = d.decide(1, Level::High, 0, id(1), 0);
        assert_eq!(decided.decision, Decision::New);
        assert_eq!(decided.state, Some(OpenTask::fresh(id(1), Level::High, 0)));
        assert_eq!(d.open_count(), 1);
    }

    #[test]
    fn same_or_lower_level_inside_window_is_suppressed() {
        let d = dispatcher();
        decide(&d, 1, Level::High, 0, 1, 0);
        let again = d.decide(1, Level::High, 10 * MIN, id(2), 0);
        assert_eq!(again.decision, Decision::Suppressed { open: id(1) });
        assert_eq!(again.state, None, "nothing to write to the changelog");
        assert_eq!(
            decide(&d, 1, Level::Medium, 29 * MIN, 3, 0),
            Decision::Suppressed { open: id(1) }
        );
    }

    #[test]
    fn higher_level_inside_window_upgrades_the_open_task() {
        let d = dispatcher();
        decide(&d, 1, Level::Medium, 0, 1, 0);
        assert_eq!(
            decide(&d, 1, Level::Critical, 5 * MIN, 2, 0),
            Decision::Upgrade { previous: id(1) }
        );
        // The upgrade is now the open task.
        assert_eq!(
            decide(&d, 1, Level::High, 6 * MIN, 3, 0),
            Decision::Suppressed { open: id(2) }
        );
    }

    #[test]
    fn event_after_window_opens_a_new_task() {
        let d = dispatcher();
        decide(&d, 1, Level::High, 0, 1, 0);
        assert_eq!(decide(&d, 1, Level::High, 30 * MIN, 2, 0), Decision::New);
    }

    #[test]
    fn redelivered_events_get_their_own_decisions_back() {
        let d = dispatcher();
        assert_eq!(decide(&d, 1, Level::Low, 0, 1, 0), Decision::New);
        assert_eq!(
            decide(&d, 1, Level::High, MIN, 2, 0),
            Decision::Upgrade { previous: id(1) }
        );
        assert_eq!(
            decide(&d, 1, Level::Critical, 2 * MIN, 3, 0),
            Decision::Upgrade { previous: id(2) }
        );
        // Redelivered in any order, after the whole chain was decided: same kinds, same
        // `upgrade_of`, and the original is not suppressed by its own upgrade.
        assert_eq!(
            decide(&d, 1, Level::High, MIN, 2, 0),
            Decision::Upgrade { previous: id(1) }
        );
        assert_eq!(decide(&d, 1, Level::Low, 0, 1, 0), Decision::New);
        assert_eq!(
            decide(&d, 1, Level::Critical, 2 * MIN, 3, 0),
            Decision::Upgrade { previous: id(2) }
        );
        assert_eq!(d.open_count(), 1);
    }

    #[test]
    fn restored_state_replays_a_chain_whose_original_was_not_delivered() {
        // Before a crash: medium task 1 (not acknowledged), critical upgrade 2 (acknowledged
        // and in the changelog). After restore, event 1 is redelivered and must come out.
        let before = dispatcher();
        decide(&before, 1, Level::Medium, 0, 1, 0);
        let upgrade = before.decide(1, Level::Critical, MIN, id(2), 0);
        let after = dispatcher();
        after.restore(0, 1, upgrade.state.unwrap());
        assert_eq!(decide(&after, 1, Level::Medium, 0, 1, 0), Decision::New);
        assert_eq!(
            decide(&after, 1, Level::Critical, MIN, 2, 0),
            Decision::Upgrade { previous: id(1) }
        );
        assert_eq!(
            decide(&after, 1, Level::High, 2 * MIN, 3, 0),
            Decision::Suppressed { open: id(2) }
        );
    }

    #[test]
    fn open_task_round_trips_through_json() {
        let t = OpenTask::fresh(id(1), Level::Medium, 5).upgraded_by(id(2), Level::High, 9);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<OpenTask>(&json).unwrap(), t);
    }

    #[test]
    fn callees_are_independent() {
        let d = dispatcher();
        decide(&d, 1, Level::High, 0, 1, 0);
        assert_eq!(decide(&d, 2, Level::High, 0, 2, 0), Decision::New);
    }

    #[test]
    fn one_partitions_clock_does_not_expire_anothers_tasks() {
        let d = dispatcher();
        decide(&d, 1, Level::High, 0, 1, 0);
        // A record dated years ahead on another partition.
        decide(&d, 2, Level::High, 5 * 365 * 24 * 60 * MIN, 2, 1);
        assert_eq!(d.purge_expired(), 0);
        assert_eq!(
            decide(&d, 1, Level::High, MIN, 3, 0),
            Decision::Suppressed { open: id(1) }
        );
    }

    #[test]
    fn purge_follows_the_partitions_own_event_time() {
        let d = dispatcher();
        decide(&d, 1, Level::High, 0, 1, 0);
        decide(&d, 2, Level::High, 20 * MIN, 2, 0);
        decide(&d, 3, Level::High, 35 * MIN, 3, 0);
        assert_eq!(d.purge_expired(), 0, "within two windows of the watermark");
        decide(&d, 4, Level::High, 61 * MIN, 4, 0);
        assert_eq!(d.purge_expired(), 1);
        assert_eq!(d.open_count(), 3);
    }

    #[test]
    fn at_the_bound_the_oldest_entry_is_evicted_and_counted() {
        let d = Dispatcher::new(Duration::from_secs(30 * 60), 2);
        decide(&d, 1, Level::High, 0, 1, 0);
        decide(&d, 2, Level::High, MIN, 2, 0);
        assert_eq!(decide(&d, 3, Level::High, 2 * MIN, 3, 0), Decision::New);
        assert_eq!(d.open_count(), 2);
        assert_eq!(d.evicted(), 1);
        // Callee 2 is still remembered; callee 1 was the oldest.
        assert_eq!(
            decide(&d, 2, Level::High, 3 * MIN, 4, 0),
            Decision::Suppressed { open: id(2) }
        );
        assert_eq!(decide(&d, 1, Level::High, 3 * MIN, 5, 0), Decision::New);
        assert_eq!(d.open_count(), 2);
    }

    #[test]
    fn a_full_bound_held_by_other_partitions_is_counted_not_remembered() {
        let d = Dispatcher::new(Duration::from_secs(30 * 60), 1);
        decide(&d, 1, Level::High, 0, 1, 0);
        assert_eq!(decide(&d, 2, Level::High, 0, 2, 1), Decision::New);
        assert_eq!(d.not_remembered(), 1);
        assert_eq!(d.open_count(), 1);
    }

    #[test]
    fn dropping_a_partition_forgets_its_callees() {
        let d = dispatcher();
        decide(&d, 1, Level::High, 0, 1, 0);
        decide(&d, 2, Level::High, 0, 2, 1);
        assert_eq!(d.drop_partitions(&[1]), 1);
        assert_eq!(d.open_count(), 1);
        assert!(!d.holds(1));
        assert_eq!(decide(&d, 2, Level::High, MIN, 5, 1), Decision::New);
    }

    #[test]
    fn restore_fills_a_partition_and_later_records_win() {
        let d = dispatcher();
        d.restore(2, 7, OpenTask::fresh(id(1), Level::Medium, 0));
        d.restore(2, 7, OpenTask::fresh(id(2), Level::High, 5 * MIN));
        assert_eq!(d.open_count(), 1);
        assert_eq!(
            decide(&d, 7, Level::High, 10 * MIN, 4, 2),
            Decision::Suppressed { open: id(2) }
        );
    }

    #[test]
    fn prefetching_any_partition_changes_no_decision() {
        let d = Dispatcher::new(Duration::from_secs(30 * 60), 10_000);
        let beyond = HINTED_PARTITIONS as i32;
        // Before any state, for a partition with no hint, and a partition no topic has.
        for p in [0, 1, beyond, -1] {
            d.prefetch(7, p);
        }
        decide(&d, 7, Level::High, 0, 1, 0);
        decide(&d, 7, Level::High, 0, 2, beyond);
        // Across a grown table, then after its partition was dropped and made again.
        for callee in 100..5_000 {
            decide(&d, callee, Level::High, 0, 3, 1);
        }
        d.prefetch(7, 1);
        assert_eq!(d.drop_partitions(&[1]), 4_900);
        d.prefetch(4_000, 1);
        assert_eq!(decide(&d, 4_000, Level::High, MIN, 4, 1), Decision::New);
        d.prefetch(7, 0);
        d.prefetch(7, beyond);
        assert_eq!(
            decide(&d, 7, Level::High, MIN, 5, 0),
            Decision::Suppressed { open: id(1) }
        );
        assert_eq!(
            decide(&d, 7, Level::High, MIN, 6, beyond),
            Decision::Suppressed { open: id(2) }
        );
    }

    #[test]
    fn callee_key_is_stable() {
        assert_eq!(callee_key("13812345678"), callee_key("13812345678"));
        assert_ne!(callee_key("13812345678"), callee_key("13812345679"));
    }
}
