//! One open task per person at risk.
//!
//! The dispatcher remembers, per callee, the task that is open for them. A further event for
//! the same callee within the suppression window creates no new task unless its level is
//! higher, in which case an upgrade is emitted that references the earlier task. Time is the
//! events' own time, not the wall clock, so replaying history gives the same decisions.
//!
//! Callees are keyed by a 64-bit hash of the number, so the state holds no phone numbers.
//! State is bounded: expired entries are purged, and at `max_open` new entries are not
//! remembered (a possible duplicate task is better than a dropped warning).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use dashmap::DashMap;

use crate::rules::Level;
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

#[derive(Debug, Clone, Copy)]
struct OpenTask {
    task_id: TaskId,
    level: Level,
    opened_at_ms: i64,
    partition: i32,
}

#[derive(Debug)]
pub struct Dispatcher {
    open: DashMap<u64, OpenTask>,
    window_ms: i64,
    max_open: usize,
    /// Latest event time seen: the clock that expiry runs on.
    watermark_ms: AtomicI64,
    not_remembered: AtomicU64,
}

/// The partition of entries restored from the task topic.
const RESTORED: i32 = -1;

/// Hashes a callee number to the key the dispatcher stores.
pub fn callee_key(number: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(number.as_bytes())
}

impl Dispatcher {
    pub fn new(window: std::time::Duration, max_open: usize) -> Dispatcher {
        Dispatcher {
            open: DashMap::new(),
            window_ms: window.as_millis() as i64,
            max_open,
            watermark_ms: AtomicI64::new(i64::MIN),
            not_remembered: AtomicU64::new(0),
        }
    }

    /// Decides what an event at `level` for `callee` (see [`callee_key`]) becomes, and records
    /// the task it opens. `partition` is the input partition the event came from, so the state
    /// of a revoked partition can be dropped.
    pub fn decide(
        &self,
        callee: u64,
        level: Level,
        at_ms: i64,
        task_id: TaskId,
        partition: i32,
    ) -> Decision {
        self.watermark_ms.fetch_max(at_ms, Ordering::Relaxed);
        let fresh = OpenTask {
            task_id,
            level,
            opened_at_ms: at_ms,
            partition,
        };
        if let Some(mut entry) = self.open.get_mut(&callee) {
            let open = *entry;
            // A redelivered event must reproduce its own decision, not be suppressed by itself.
            if open.task_id == task_id {
                return Decision::New;
            }
            if at_ms - open.opened_at_ms < self.window_ms {
                if level > open.level {
                    *entry = fresh;
                    return Decision::Upgrade {
                        previous: open.task_id,
                    };
                }
                return Decision::Suppressed { open: open.task_id };
            }
            *entry = fresh;
            return Decision::New;
        }
        if self.open.len() >= self.max_open {
            self.purge_expired();
            if self.open.len() >= self.max_open {
                self.not_remembered.fetch_add(1, Ordering::Relaxed);
                return Decision::New;
            }
        }
        self.open.insert(callee, fresh);
        Decision::New
    }

    /// Records a task read back from the task topic as open (see `kafka::recover`). The
    /// latest task per callee wins; its input partition is unknown, so only expiry drops it.
    pub fn restore(&self, callee: u64, level: Level, at_ms: i64, task_id: TaskId) {
        self.watermark_ms.fetch_max(at_ms, Ordering::Relaxed);
        let restored = OpenTask {
            task_id,
            level,
            opened_at_ms: at_ms,
            partition: RESTORED,
        };
        self.open
            .entry(callee)
            .and_modify(|t| {
                if (at_ms, level) >= (t.opened_at_ms, t.level) {
                    *t = restored;
                }
            })
            .or_insert(restored);
    }

    /// Forgets tasks whose window has passed, by event time. Returns how many were dropped.
    ///
    /// Entries are kept for a second window beyond their own: the watermark is the latest
    /// event time over all partitions, and a partition lagging behind the others must still
    /// find the tasks its callees opened.
    pub fn purge_expired(&self) -> usize {
        let watermark = self.watermark_ms.load(Ordering::Relaxed);
        let before = self.open.len();
        self.open
            .retain(|_, t| watermark.saturating_sub(t.opened_at_ms) < 2 * self.window_ms);
        before - self.open.len()
    }

    /// Forgets the state of partitions this instance no longer owns.
    pub fn drop_partitions(&self, partitions: &[i32]) -> usize {
        let before = self.open.len();
        self.open.retain(|_, t| !partitions.contains(&t.partition));
        before - self.open.len()
    }

    /// Open tasks remembered now.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Tasks opened while the state was full, so not remembered for suppression.
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

    #[test]
    fn first_event_opens_a_task() {
        let d = dispatcher();
        assert_eq!(d.decide(1, Level::High, 0, id(1), 0), Decision::New);
        assert_eq!(d.open_count(), 1);
    }

    #[test]
    fn same_or_lower_level_inside_window_is_suppressed() {
        let d = dispatcher();
        d.decide(1, Level::High, 0, id(1), 0);
        assert_eq!(
            d.decide(1, Level::High, 10 * MIN, id(2), 0),
            Decision::Suppressed { open: id(1) }
        );
        assert_eq!(
            d.decide(1, Level::Medium, 29 * MIN, id(3), 0),
            Decision::Suppressed { open: id(1) }
        );
    }

    #[test]
    fn higher_level_inside_window_upgrades_the_open_task() {
        let d = dispatcher();
        d.decide(1, Level::Medium, 0, id(1), 0);
        assert_eq!(
            d.decide(1, Level::Critical, 5 * MIN, id(2), 0),
            Decision::Upgrade { previous: id(1) }
        );
        // The upgrade is now the open task.
        assert_eq!(
            d.decide(1, Level::High, 6 * MIN, id(3), 0),
            Decision::Suppressed { open: id(2) }
        );
    }

    #[test]
    fn event_after_window_opens_a_new_task() {
        let d = dispatcher();
        d.decide(1, Level::High, 0, id(1), 0);
        assert_eq!(d.decide(1, Level::High, 30 * MIN, id(2), 0), Decision::New);
    }

    #[test]
    fn redelivered_event_gets_the_same_decision() {
        let d = dispatcher();
        assert_eq!(d.decide(1, Level::High, 0, id(1), 0), Decision::New);
        assert_eq!(d.decide(1, Level::High, 0, id(1), 0), Decision::New);
    }

    #[test]
    fn callees_are_independent() {
        let d = dispatcher();
        d.decide(1, Level::High, 0, id(1), 0);
        assert_eq!(d.decide(2, Level::High, 0, id(2), 0), Decision::New);
    }

    #[test]
    fn purge_keeps_entries_a_lagging_partition_may_still_need() {
        let d = dispatcher();
        d.decide(1, Level::High, 0, id(1), 0);
        d.decide(2, Level::High, 20 * MIN, id(2), 0);
        d.decide(3, Level::High, 35 * MIN, id(3), 1);
        assert_eq!(d.purge_expired(), 0, "within two windows of the watermark");
        // Partition 0 lags: its callee 1 calls again 25 min after its task, still suppressed.
        assert_eq!(
            d.decide(1, Level::High, 25 * MIN, id(4), 0),
            Decision::Suppressed { open: id(1) }
        );
        d.decide(4, Level::High, 61 * MIN, id(5), 1);
        assert_eq!(d.purge_expired(), 1);
        assert_eq!(d.open_count(), 3);
    }

    #[test]
    fn restored_tasks_suppress_and_the_latest_wins() {
        let d = dispatcher();
        d.restore(1, Level::Medium, 0, id(1));
        d.restore(1, Level::High, 5 * MIN, id(2));
        d.restore(1, Level::Critical, 2 * MIN, id(3));
        assert_eq!(
            d.decide(1, Level::High, 10 * MIN, id(4), 0),
            Decision::Suppressed { open: id(2) }
        );
        // Restored entries belong to no partition: revocations do not drop them.
        assert_eq!(d.drop_partitions(&[0, 1, 2]), 0);
    }

    #[test]
    fn state_is_bounded_and_counts_what_it_could_not_remember() {
        let d = Dispatcher::new(Duration::from_secs(30 * 60), 2);
        d.decide(1, Level::High, 0, id(1), 0);
        d.decide(2, Level::High, 0, id(2), 0);
        assert_eq!(d.decide(3, Level::High, 0, id(3), 0), Decision::New);
        assert_eq!(d.open_count(), 2);
        assert_eq!(d.not_remembered(), 1);
        // Once the old entries expire there is room again.
        assert_eq!(d.decide(4, Level::High, 61 * MIN, id(4), 0), Decision::New);
        assert_eq!(d.open_count(), 1);
    }

    #[test]
    fn dropping_a_partition_forgets_its_callees() {
        let d = dispatcher();
        d.decide(1, Level::High, 0, id(1), 0);
        d.decide(2, Level::High, 0, id(2), 1);
        assert_eq!(d.drop_partitions(&[1]), 1);
        assert_eq!(d.decide(2, Level::High, MIN, id(5), 1), Decision::New);
    }

    #[test]
    fn callee_key_is_stable() {
        assert_eq!(callee_key("13812345678"), callee_key("13812345678"));
        assert_ne!(callee_key("13812345678"), callee_key("13812345679"));
    }
}
