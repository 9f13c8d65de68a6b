//! Windowed features: figures about the recent behaviour of the caller and of the callee
//! ("this number called 34 different elderly people in the last 10 minutes"), kept per key
//! over sliding event-time windows and handed to the rules as numbers.
//!
//! The rule file declares each feature (`[[feature]]`: key side, aggregate, window, an
//! optional `where`); [`Windows`] holds the state. For every event, before it is scored, the
//! call is added to its caller's and its callee's windows and the features are read back,
//! the call itself included. Everything is exact: counts, sums and distinct counts are kept
//! as running aggregates over the calls in the window, so memory grows with the calls inside
//! the longest window, bounded per key by `max_calls_per_key` (see `config/rules.toml`).
//!
//! Event time, not arrival: a key's windows end at the latest event time seen for it. A call
//! older than that by more than the allowed lateness is scored but not counted (it would
//! change figures that later calls have already been judged by).

mod presence;
mod window;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::table::{KeyTable, SlotHint};
use presence::Presence;
use window::{Admitted, Call, KeyWindow, SideFeature};

/// At most this many features per rule set: their figures travel in a fixed array.
pub const MAX_FEATURES: usize = 16;

/// The figure of each feature for one event, by feature index; NaN where there is none
/// (no rule set feature at that index, or no previous task for `seconds_since_last_task`).
pub type Figures = [f64; MAX_FEATURES];

pub const NO_FIGURES: Figures = [f64::NAN; MAX_FEATURES];

/// Whose calls a feature looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySide {
    /// The calling number's calls (to anyone).
    Caller,
    /// The calls received by the person at risk.
    Callee,
}

impl KeySide {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySide::Caller => "caller",
            KeySide::Callee => "callee",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Calls in the window (those matching `where`, when given).
    Count,
    /// Different other parties in the window: callees of a caller, callers of a callee.
    Distinct,
    /// Total call duration in seconds.
    SumDurationS,
    /// The share (0..=1) of the window's calls that match `where`.
    Share,
    /// Seconds since the last task for this person, if one was made within the window.
    SecondsSinceLastTask,
}

impl Aggregate {
    pub const ALL: [Aggregate; 5] = [
        Aggregate::Count,
        Aggregate::Distinct,
        Aggregate::SumDurationS,
        Aggregate::Share,
        Aggregate::SecondsSinceLastTask,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Distinct => "distinct",
            Aggregate::SumDurationS => "sum_duration_s",
            Aggregate::Share => "share",
            Aggregate::SecondsSinceLastTask => "seconds_since_last_task",
        }
    }
}

/// One declared feature, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    pub id: String,
    pub description: String,
    pub key: KeySide,
    pub aggregate: Aggregate,
    pub window: Duration,
    /// The `where` condition as written, if any.
    pub filter: Option<String>,
    /// Whether an enabled rule reads it (in its condition or its reason). Windows are kept
    /// only for used features: a declared feature that nothing reads costs nothing.
    pub used: bool,
}

/// How windows treat late calls and busy keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    pub allowed_lateness: Duration,
    pub max_calls_per_key: usize,
}

impl Default for WindowLimits {
    fn default() -> WindowLimits {
        WindowLimits {
            allowed_lateness: Duration::from_secs(60),
            max_calls_per_key: 10_000,
        }
    }
}

/// A call as the windows need it; numbers are already hashed (see
/// [`crate::dispatch::callee_key`]).
#[derive(Debug, Clone, Copy)]
pub struct CallFacts {
    pub at_ms: i64,
    pub event: u64,
    pub caller: u64,
    pub callee: u64,
    pub duration_s: f64,
    /// Bit `i`: the call matches the `where` of feature `i`.
    pub filters: u16,
    /// The input partition the call came from: callee windows are kept per partition.
    pub partition: i32,
}

/// Counters of what the windows did, for `/metrics`.
#[derive(Debug, Default)]
pub struct WindowCounters {
    pub late: AtomicU64,
    pub duplicates: AtomicU64,
    /// Calls dropped before their time because their key held `max_calls_per_key`.
    pub truncated: AtomicU64,
}

const SHARDS: usize = 64;
/// Partition clocks kept; partitions beyond share slots (their keys then expire by the
/// later of two clocks).
const CLOCKS: usize = 1024;

/// The keys of one side, sharded so that worker threads rarely meet on a lock.
struct Side {
    features: Vec<SideFeature>,
    longest_ms: i64,
    /// When every feature counts only the calls matching its `where` (and none is a
    /// `share`), the filter bits of the side's features: a call matching none of them changes
    /// no figure, so it is not kept and makes no key. Zero otherwise.
    ///
    /// In the sample rules the callee side counts flagged callers only: most people are
    /// never called by a flagged number and then hold nothing (and each call costs a lookup,
    /// not an insert into a table of every callee).
    kept_filters: u16,
    shards: Vec<Mutex<Shard>>,
    /// Where each shard's table is, to prefetch a key's slot without the shard's lock.
    hints: Vec<Arc<SlotHint>>,
    /// The keys the shards may hold, when calls can be left out (`kept_filters`): a call
    /// left out whose key holds nothing then takes no lock.
    held: Option<Presence>,
}

impl Side {
    fn new(features: Vec<SideFeature>) -> Side {
        let all_filtered = features
            .iter()
            .all(|f| f.filtered && f.aggregate != Aggregate::Share);
        let kept_filters = if all_filtered {
            features.iter().fold(0, |m, f| m | 1 << f.index)
        } else {
            0
        };
        let (shards, hints) = locked_shards(|s: &Shard| s.keys.hint());
        Side {
            longest_ms: features.iter().map(|f| f.window_ms).max().unwrap_or(0),
            kept_filters,
            held: (kept_filters != 0).then(|| Presence::new(SHARDS)),
            features,
            hints,
            shards,
        }
    }

    /// Starts loading what observing a call of `key` reads first (see [`Windows::prefetch`]).
    /// `kept`: the call will be kept (so its key looked up or inserted) whatever the key
    /// holds now.
    fn prefetch(&self, key: u64, kept: bool) {
        if self.features.is_empty() {
            return;
        }
        let shard = shard_of(key);
        // Most keys hold nothing: their bit (in 128 KiB, against a table of up to hundreds of
        // MiB) says so, and no slot is fetched for them.
        if kept || self.held.as_ref().is_none_or(|h| h.may_hold(shard, key)) {
            self.hints[shard].prefetch(key);
        }
    }

    /// Whether `filters` (a call's) leave the call out of every feature of the side.
    fn ignores(&self, filters: u16) -> bool {
        self.kept_filters != 0 && filters & self.kept_filters == 0
    }
}

/// The windows of one shard of a side's keys, and how many calls they hold between them (kept
/// as they change, so that the once-a-second metrics need not visit every key).
#[derive(Default)]
struct Shard {
    keys: KeyTable<KeyWindow>,
    calls: usize,
}

/// [`SHARDS`] empty shards, each behind its lock, and where each one's table is (`hint`).
fn locked_shards<T: Default>(
    hint: impl Fn(&T) -> Arc<SlotHint>,
) -> (Vec<Mutex<T>>, Vec<Arc<SlotHint>>) {
    let shards: Vec<T> = (0..SHARDS).map(|_| T::default()).collect();
    let hints = shards.iter().map(hint).collect();
    (shards.into_iter().map(Mutex::new).collect(), hints)
}

/// The shard of a key. The low bits feed the map's own hashing; shard on the high ones.
fn shard_of(key: u64) -> usize {
    (key >> 58) as usize % SHARDS
}

/// The callee side's key of a person: per partition, like the open tasks (see
/// [`Windows::observe`]).
fn callee_window(callee: u64, partition: i32) -> u64 {
    callee ^ (i64::from(partition) as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// `clock.fetch_max(at)`, skipped unless `at` is more than [`CLOCK_STEP_MS`] later: x86 has
/// no atomic max, so it is a compare-and-swap loop, which was a third of the cost of
/// observing a call, and on live traffic nearly every call is later than the last.
fn raise(clock: &AtomicI64, at: i64) {
    if at > clock.load(Ordering::Relaxed).saturating_add(CLOCK_STEP_MS) {
        clock.fetch_max(at, Ordering::Relaxed);
    }
}

/// How far event time moves before the clocks do. The clocks only decide when idle keys
/// are forgotten (see [`Windows::expire_idle`]): lagging by up to this keeps a key that
/// long past its last window, and never drops one early.
const CLOCK_STEP_MS: i64 = 1_000;

fn clock_slot(partition: i32) -> u16 {
    (partition.rem_euclid(CLOCKS as i32)) as u16
}

/// The last two tasks made for a person: a redelivered event must not see its own task.
#[derive(Debug, Clone, Copy, Default)]
struct LastTasks {
    latest: (i64, u64),
    before: Option<(i64, u64)>,
}

/// The window state of one rule set's features.
pub struct Windows {
    caller: Side,
    callee: Side,
    /// `seconds_since_last_task` features: (figure index, window).
    since_task: Vec<(u8, i64)>,
    last_tasks: Vec<Mutex<KeyTable<LastTasks>>>,
    last_task_hints: Vec<Arc<SlotHint>>,
    /// The people `last_tasks` may hold: most never had a task. (None in tests only.)
    tasked: Option<Presence>,
    limits: WindowLimits,
    lateness_ms: i64,
    /// The latest event time seen on any key, to within [`CLOCK_STEP_MS`]: idle caller keys
    /// expire against it.
    watermark: AtomicI64,
    /// The latest event time seen per input partition (slot `partition % CLOCKS`), to
    /// within [`CLOCK_STEP_MS`]: idle callee keys expire against their partition's, so that
    /// a partition read back or behind the others after a restart keeps the windows its next
    /// calls need.
    clocks: Vec<AtomicI64>,
    /// Calls observed (nearly: see [`Windows::observe`]): a shard of idle keys is swept every
    /// [`SWEEP_STEP`] calls.
    observed: AtomicU64,
    /// Exports of the metrics so far: each sweeps the next shard.
    exported: AtomicUsize,
    pub counters: WindowCounters,
}

/// Every key is looked at by a sweep once per this many calls; once per million keeps the
/// sweeps under a few per cent of the work.
const SWEEP_EVERY: u64 = 1 << 20;
/// The sweep goes a shard at a time: one shard of each table every this many calls. All at
/// once, it held up the call that started it for every key in memory (tens of milliseconds
/// at hundreds of thousands of keys).
const SWEEP_STEP: u64 = SWEEP_EVERY / SHARDS as u64;

impl Windows {
    pub fn new(specs: &[FeatureSpec], limits: WindowLimits) -> Windows {
        let side = |key| {
            specs
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.used && s.key == key && s.aggregate != Aggregate::SecondsSinceLastTask
                })
                .map(|(i, s)| SideFeature {
                    index: i as u8,
                    aggregate: s.aggregate,
                    window_ms: s.window.as_millis() as i64,
                    filtered: s.filter.is_some(),
                })
                .collect::<Vec<_>>()
        };
        let (last_tasks, last_task_hints) = locked_shards(KeyTable::hint);
        Windows {
            caller: Side::new(side(KeySide::Caller)),
            callee: Side::new(side(KeySide::Callee)),
            since_task: specs
                .iter()
                .enumerate()
                .filter(|(_, s)| s.used && s.aggregate == Aggregate::SecondsSinceLastTask)
                .map(|(i, s)| (i as u8, s.window.as_millis() as i64))
                .collect(),
            last_tasks,
            last_task_hints,
            tasked: Some(Presence::new(SHARDS)),
            limits,
            lateness_ms: limits.allowed_lateness.as_millis() as i64,
            watermark: AtomicI64::new(i64::MIN),
            clocks: (0..CLOCKS).map(|_| AtomicI64::new(i64::MIN)).collect(),
            observed: AtomicU64::new(0),
            exported: AtomicUsize::new(0),
            counters: WindowCounters::default(),
        }
    }

    /// The windows of the by-caller stage (see `kafka::by_caller`): only the caller-side
    /// features of `specs`, fed by [`Windows::observe_by_caller`].
    ///
    /// They are kept as the callee side of their own `Windows`, because that side is keyed,
    /// clocked and expired per partition, which is what caller windows partitioned by the
    /// by-caller topic need; `observe_by_caller` hands the call over with its two parties
    /// swapped, and the figures land at the features' own indexes.
    pub fn for_callers(specs: &[FeatureSpec], limits: WindowLimits) -> Windows {
        let swapped: Vec<FeatureSpec> = specs
            .iter()
            .map(|s| FeatureSpec {
                used: s.used && s.key == KeySide::Caller,
                key: KeySide::Callee,
                ..s.clone()
            })
            .collect();
        Windows::new(&swapped, limits)
    }

    /// The windows of `specs` without the caller side: the processor's, when caller figures
    /// arrive with each record from the by-caller stage.
    pub fn without_callers(specs: &[FeatureSpec], limits: WindowLimits) -> Windows {
        let callee_only: Vec<FeatureSpec> = specs
            .iter()
            .map(|s| FeatureSpec {
                used: s.used && s.key == KeySide::Callee,
                ..s.clone()
            })
            .collect();
        Windows::new(&callee_only, limits)
    }

    /// The same windows looking every key up through its lock: what the presence bits
    /// must not change.
    #[cfg(test)]
    fn without_presence(mut self) -> Windows {
        self.caller.held = None;
        self.callee.held = None;
        self.tasked = None;
        self
    }

    /// Whether caller-side features are kept here.
    pub fn keeps_callers(&self) -> bool {
        !self.caller.features.is_empty()
    }

    /// Adds a call to the caller windows of [`Windows::for_callers`] and writes the caller
    /// figures into `out`. `call.partition` is the by-caller topic's partition.
    pub fn observe_by_caller(&self, call: &CallFacts, out: &mut Figures) {
        let swapped = CallFacts {
            caller: call.callee,
            callee: call.caller,
            ..*call
        };
        self.observe(&swapped, call.event, out);
    }

    /// Whether no feature is kept (then [`Windows::observe`] does nothing).
    pub fn is_empty(&self) -> bool {
        self.caller.features.is_empty()
            && self.callee.features.is_empty()
            && self.since_task.is_empty()
    }

    /// Adds a call to its caller's and callee's windows and writes every feature's figure,
    /// this call included, into `out`. `own_task` is the id the event's task would have: a
    /// task it already made (it is being redelivered) is not "the last task".
    pub fn observe(&self, call: &CallFacts, own_task: u64, out: &mut Figures) {
        // The lookups below wait for memory one after another: start them all at once.
        self.caller
            .prefetch(call.caller, !self.caller.ignores(call.filters));
        self.callee.prefetch(
            callee_window(call.callee, call.partition),
            !self.callee.ignores(call.filters),
        );
        self.prefetch_last_task(call.callee);
        raise(&self.watermark, call.at_ms);
        let clock = clock_slot(call.partition);
        if !self.callee.features.is_empty() {
            raise(&self.clocks[usize::from(clock)], call.at_ms);
        }
        // A load and a store, not a locked increment on every call: a call counted at the
        // same moment on another thread may be lost, which only moves the sweep a little.
        let observed = self.observed.load(Ordering::Relaxed).wrapping_add(1);
        self.observed.store(observed, Ordering::Relaxed);
        if observed.is_multiple_of(SWEEP_STEP) {
            self.expire_shard((observed / SWEEP_STEP) as usize % SHARDS);
        }
        self.observe_side(&self.caller, call.caller, call.callee, 0, call, out);
        // Per partition, like the open tasks: the input is keyed by callee, so a person's
        // calls are one partition's, read in order, and a restart or a rebalance rebuilds
        // exactly what processing saw. (A callee whose number the producer keyed in two
        // spellings lands on two partitions, and has two windows as it has two open-task
        // entries.)
        let callee_key = callee_window(call.callee, call.partition);
        self.observe_side(&self.callee, callee_key, call.caller, clock, call, out);
        if !self.since_task.is_empty() {
            let shard = shard_of(call.callee);
            let may_hold = self
                .tasked
                .as_ref()
                .is_none_or(|t| t.may_hold(shard, call.callee));
            let last = if may_hold {
                self.last_tasks[shard]
                    .lock()
                    .expect("last-task lock")
                    .get(call.callee)
                    .copied()
            } else {
                None
            };
            let previous = last.and_then(|l| {
                if l.latest.1 == own_task {
                    l.before
                } else {
                    Some(l.latest)
                }
            });
            for &(index, window_ms) in &self.since_task {
                out[index as usize] = match previous {
                    Some((at, _)) if call.at_ms >= at && call.at_ms - at <= window_ms => {
                        ((call.at_ms - at) / 1000) as f64
                    }
                    _ => f64::NAN,
                };
            }
        }
    }

    /// Starts loading what observing a call to `callee` on `partition` will read first: the
    /// callee's window slot and last task, where their presence bits say they may exist.
    /// The processor calls it for the next record (the input is keyed by callee) before it
    /// works on the current one, so that those reads from memory overlap that work instead
    /// of following it.
    pub fn prefetch(&self, callee: u64, partition: i32) {
        self.callee
            .prefetch(callee_window(callee, partition), false);
        self.prefetch_last_task(callee);
    }

    fn prefetch_last_task(&self, callee: u64) {
        if self.since_task.is_empty() {
            return;
        }
        let shard = shard_of(callee);
        if self
            .tasked
            .as_ref()
            .is_none_or(|t| t.may_hold(shard, callee))
        {
            self.last_task_hints[shard].prefetch(callee);
        }
    }

    fn observe_side(
        &self,
        side: &Side,
        key: u64,
        other: u64,
        clock: u16,
        call: &CallFacts,
        out: &mut Figures,
    ) {
        if side.features.is_empty() {
            return;
        }
        let entry = Call {
            ts: call.at_ms,
            event: call.event,
            other,
            duration_ms: (call.duration_s * 1000.0).clamp(0.0, f64::from(u32::MAX)) as u32,
            filters: call.filters,
        };
        let shard_index = shard_of(key);
        let ignored = side.ignores(call.filters);
        let holds_nothing = || {
            side.held
                .as_ref()
                .is_some_and(|h| !h.may_hold(shard_index, key))
        };
        if ignored && holds_nothing() {
            KeyWindow::empty_figures(&side.features, out);
            return;
        }
        let mut shard = side.shards[shard_index].lock().expect("window lock");
        let Shard { keys, calls } = &mut *shard;
        if ignored {
            // Figures as if the call were kept: the key's windows move on to its time.
            match keys.get_mut(key) {
                Some(window) => {
                    let before = window.len();
                    if !window.advance(&side.features, entry.ts, self.lateness_ms) {
                        self.counters.late.fetch_add(1, Ordering::Relaxed);
                    }
                    *calls = *calls + window.len() - before;
                    window.figures(&side.features, out);
                }
                None => KeyWindow::empty_figures(&side.features, out),
            }
            return;
        }
        if let Some(held) = &side.held {
            held.insert(shard_index, key);
        }
        let window = keys.get_or_insert_with(key, || KeyWindow::new(side.features.len(), clock));
        let before = window.len();
        let (admitted, dropped) = window.offer(
            &side.features,
            entry,
            self.lateness_ms,
            self.limits.max_calls_per_key,
        );
        *calls = *calls + window.len() - before;
        match admitted {
            Admitted::Counted => {}
            Admitted::Late => _ = self.counters.late.fetch_add(1, Ordering::Relaxed),
            Admitted::Duplicate => _ = self.counters.duplicates.fetch_add(1, Ordering::Relaxed),
        }
        if dropped > 0 {
            self.counters
                .truncated
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        window.figures(&side.features, out);
    }

    /// Remembers that a task was made for `callee` (for `seconds_since_last_task`).
    pub fn task_made(&self, callee: u64, at_ms: i64, task: u64) {
        if self.since_task.is_empty() {
            return;
        }
        let shard = shard_of(callee);
        let mut map = self.last_tasks[shard].lock().expect("last-task lock");
        if let Some(tasked) = &self.tasked {
            tasked.insert(shard, callee);
        }
        // A person new here gets this task as their latest, which the test below then keeps.
        let last = map.get_or_insert_with(callee, || LastTasks {
            latest: (at_ms, task),
            before: None,
        });
        if last.latest.1 != task {
            last.before = Some(last.latest);
            last.latest = (at_ms, task);
        }
    }

    /// Takes over the last tasks `previous` remembers, when these windows keep them too:
    /// new windows for a changed rule set must not forget who was just visited.
    pub fn adopt_last_tasks(&self, previous: &Windows) {
        if self.since_task.is_empty() {
            return;
        }
        for (shard, (mine, theirs)) in self.last_tasks.iter().zip(&previous.last_tasks).enumerate()
        {
            let theirs = theirs.lock().expect("last-task lock");
            let mut mine = mine.lock().expect("last-task lock");
            for (key, last) in theirs.iter() {
                *mine.get_or_insert_with(key, LastTasks::default) = *last;
            }
            if let Some(tasked) = &self.tasked {
                tasked.rebuild(shard, mine.keys());
            }
        }
    }

    /// Forgets keys whose latest call is outside every window: caller keys by the latest
    /// event time seen anywhere, callee keys by that of their partition. Returns how many
    /// keys were dropped.
    pub fn expire_idle(&self) -> usize {
        (0..SHARDS).map(|index| self.expire_shard(index)).sum()
    }

    /// [`Windows::expire_idle`] for the keys of one shard (of each side and of the last
    /// tasks).
    fn expire_shard(&self, index: usize) -> usize {
        let now = self.watermark.load(Ordering::Relaxed);
        if now == i64::MIN {
            return 0;
        }
        let mut dropped = 0;
        for (side, per_partition) in [(&self.caller, false), (&self.callee, true)] {
            let span = side.longest_ms + self.lateness_ms;
            let mut shard = side.shards[index].lock().expect("window lock");
            let Shard { keys, calls } = &mut *shard;
            let before = keys.len();
            keys.retain(|_, w| {
                let clock = if per_partition {
                    self.clocks[usize::from(w.clock)].load(Ordering::Relaxed)
                } else {
                    now
                };
                let keep = w.latest > clock.saturating_sub(span);
                if !keep {
                    *calls -= w.len();
                }
                keep
            });
            dropped += before - keys.len();
            if let Some(held) = &side.held {
                held.rebuild(index, keys.keys());
            }
        }
        let longest = self.since_task.iter().map(|&(_, w)| w).max().unwrap_or(0);
        let horizon = now.saturating_sub(longest);
        let mut map = self.last_tasks[index].lock().expect("last-task lock");
        map.retain(|_, l| l.latest.0 > horizon);
        if let Some(tasked) = &self.tasked {
            tasked.rebuild(index, map.keys());
        }
        dropped
    }

    /// How far back in event time the windows look: the longest window and the lateness.
    /// Rebuilding them after a restart reads this much history.
    pub fn span(&self) -> std::time::Duration {
        let longest = self.caller.longest_ms.max(self.callee.longest_ms);
        std::time::Duration::from_millis((longest + self.lateness_ms) as u64)
    }

    /// Keys held and calls held, per side: (caller keys, caller calls, callee keys, callee
    /// calls).
    pub fn size(&self) -> (usize, usize, usize, usize) {
        self.count(|shard| shard.calls)
    }

    /// [`Windows::size`] counted key by key: what the running counts must equal.
    #[cfg(test)]
    fn size_by_visit(&self) -> (usize, usize, usize, usize) {
        self.count(|shard| shard.keys.iter().map(|(_, w)| w.len()).sum())
    }

    /// Keys per side, and calls per side as `calls` counts them in a shard.
    fn count(&self, calls: impl Fn(&Shard) -> usize) -> (usize, usize, usize, usize) {
        let side = |side: &Side| {
            side.shards.iter().fold((0, 0), |(k, c), s| {
                let shard = s.lock().expect("window lock");
                (k + shard.keys.len(), c + calls(&shard))
            })
        };
        let ((a, b), (c, d)) = (side(&self.caller), side(&self.callee));
        (a, b, c, d)
    }

    /// Sweeps the next shard of idle keys and brings the window metrics up to date. Called
    /// once a second: besides the sweeps that calls make (see [`Windows::observe`]), every
    /// key is looked at once a minute (64 shards) however light the traffic. Sweeping every
    /// key here took the caller ~100 ms at a million keys.
    pub fn export(&self, metrics: &crate::metrics::Metrics) {
        if self.is_empty() {
            return;
        }
        self.expire_shard(self.exported.fetch_add(1, Ordering::Relaxed) % SHARDS);
        let (caller_keys, caller_calls, callee_keys, callee_calls) = self.size();
        for (side, keys, calls) in [
            ("caller", caller_keys, caller_calls),
            ("callee", callee_keys, callee_calls),
        ] {
            metrics
                .window_keys
                .with_label_values(&[side])
                .set(keys as i64);
            metrics
                .window_calls
                .with_label_values(&[side])
                .set(calls as i64);
        }
        let c = &self.counters;
        for (counter, total) in [
            (&metrics.window_late, &c.late),
            (&metrics.window_duplicates, &c.duplicates),
            (&metrics.window_truncated, &c.truncated),
        ] {
            counter.inc_by(total.load(Ordering::Relaxed).saturating_sub(counter.get()));
        }
    }
}

#[cfg(test)]
mod tests;
