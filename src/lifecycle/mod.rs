//! The second half of the loop: what happens to a dissuasion task after it is sent.
//!
//! Officers and duty desks write one feedback record per action ([`feedback`]). Every task is
//! `open` → `acknowledged` → closed (by a reaching or terminal [`Outcome`]), or `overdue` when
//! its deadline passes with no closing outcome. An overdue task is escalated once to its
//! station's duty desk (tier 1) and, if still not closed `second_escalation_after` past the
//! deadline, once to the centre's desk (tier 2). Upgrades carry the story of the task they
//! raise.
//!
//! [`Lifecycle`] is a pure state machine for one input partition, after Flink's keyed state
//! with a timer per key: tasks, feedback and a clock go in, [`Transition`]s come out, and
//! nothing here does I/O or reads the wall clock. Tasks and their feedback share a partition
//! because both are keyed by the assignee id. Deadlines sit in a queue ordered by due time,
//! so [`Lifecycle::advance`] touches only what is due. Memory is bounded by `max_tracked`,
//! and entries are held in a compact form rather than as their changelog values (see
//! `entry.rs`): about 170 bytes per open task in `examples/lifecycle_memory.rs`.
//!
//! Every state change is available as a [`Change`] (the task's [`TaskState`], or a tombstone)
//! for a compacted changelog keyed by task id; [`Lifecycle::restore`] rebuilds the partition
//! from it, counters and deadline queue included. Escalation tiers live in the state, so
//! replaying input after a restore never escalates twice, and escalation ids are
//! deterministic, so a downstream consumer can drop a repeat that slipped through anyway.

mod entry;
mod escalation;
pub mod feedback;
mod state;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use thiserror::Error;

use crate::privacy::mask_digits;
use crate::rules::Level;
use crate::task::TaskId;

pub use escalation::Escalation;
pub use feedback::{Feedback, FeedbackError, NotReachedReason, Outcome};
pub use state::{
    Change, ClosedState, Status, TaskKind, TaskRecordError, TaskState, TrackedState, TrackedTask,
};

use entry::{owned, Closed, Entry, PartiesView, Pool, Tracked};
use state::{push_bounded, MAX_CHAIN, MAX_SEEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleSettings {
    /// After the deadline, how long until an unclosed task goes to the centre's desk.
    pub second_escalation_after: Duration,
    /// The anti-fraud centre's duty desk: tier 2, and tier 1 when a task has no station desk
    /// or is assigned to it.
    pub centre_desk: String,
    /// How long a closed task is remembered, compactly, to recognise late or duplicate
    /// feedback.
    pub closed_retention: Duration,
    /// After the last escalation, how long an unclosed task is kept before it expires.
    pub unclosed_retention: Duration,
    /// Most tasks remembered on one partition, closed records included (at least 1).
    pub max_tracked: usize,
}

/// Something that happened to a task. Each names the task whose changelog entry changed
/// (see [`Lifecycle::take_changes`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Opened {
        task_id: TaskId,
        level: Level,
        deadline_ms: i64,
    },
    /// `task_id` replaced the tracked task `from` and carries on its story.
    Upgraded {
        task_id: TaskId,
        from: TaskId,
        status: Status,
        deadline_ms: i64,
    },
    /// `first` is false when an earlier acknowledgement was already recorded.
    Acknowledged {
        task_id: TaskId,
        by: String,
        at_ms: i64,
        first: bool,
        status: Status,
    },
    /// A `not_reached` report; the task stays as it was.
    Attempted {
        task_id: TaskId,
        by: String,
        at_ms: i64,
        reason: NotReachedReason,
        attempts: u16,
    },
    Closed {
        task_id: TaskId,
        outcome: Outcome,
        by: String,
        at_ms: i64,
        key: String,
        level: Level,
        created_at_ms: i64,
        deadline_ms: i64,
        acknowledged_at_ms: Option<i64>,
        /// When the person was first reached, for reached outcomes.
        first_contact_ms: Option<i64>,
        attempts: u16,
        /// Escalations sent before it closed.
        tier: u8,
    },
    Overdue {
        task_id: TaskId,
        since_ms: i64,
    },
    /// Write `escalation` to the task topic, keyed by `escalation.to_desk`.
    Escalated {
        task_id: TaskId,
        escalation: Escalation,
    },
    /// Unclosed `unclosed_retention` after its last escalation: no longer watched.
    Expired {
        task_id: TaskId,
        tier: u8,
    },
    /// Dropped at `max_tracked`; `was` is `None` for a closed record.
    Evicted {
        task_id: TaskId,
        was: Option<Status>,
    },
    /// A closed record past `closed_retention`.
    Forgotten {
        task_id: TaskId,
    },
}

impl Transition {
    pub fn task_id(&self) -> TaskId {
        match self {
            Transition::Opened { task_id, .. }
            | Transition::Upgraded { task_id, .. }
            | Transition::Acknowledged { task_id, .. }
            | Transition::Attempted { task_id, .. }
            | Transition::Closed { task_id, .. }
            | Transition::Overdue { task_id, .. }
            | Transition::Escalated { task_id, .. }
            | Transition::Expired { task_id, .. }
            | Transition::Evicted { task_id, .. }
            | Transition::Forgotten { task_id } => *task_id,
        }
    }

    /// A short, bounded name: a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Transition::Opened { .. } => "opened",
            Transition::Upgraded { .. } => "upgraded",
            Transition::Acknowledged { .. } => "acknowledged",
            Transition::Attempted { .. } => "attempted",
            Transition::Closed { .. } => "closed",
            Transition::Overdue { .. } => "overdue",
            Transition::Escalated { .. } => "escalated",
            Transition::Expired { .. } => "expired",
            Transition::Evicted { .. } => "evicted",
            Transition::Forgotten { .. } => "forgotten",
        }
    }
}

/// Why valid feedback was not applied. Messages carry ids, masked like free text, never a
/// phone number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejected {
    #[error(
        "task {task_id} is not known on this partition (never seen, or expired, evicted or \
         forgotten)"
    )]
    UnknownTask { task_id: TaskId },
    #[error("feedback on task {task_id} must be keyed by the task's assignee id `{expected}`")]
    WrongKey { task_id: TaskId, expected: String },
    #[error(
        "`{actor}` may not report on task {task_id}: not its assignee, a copied officer, its \
         station's desk or the centre's desk"
    )]
    NotAuthorized { task_id: TaskId, actor: String },
    #[error("task {task_id} was closed earlier as {outcome}")]
    Closed { task_id: TaskId, outcome: String },
}

impl Rejected {
    /// A short, bounded name for the rejection: a metric label and a dead-letter header.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejected::UnknownTask { .. } => "unknown_task",
            Rejected::WrongKey { .. } => "wrong_key",
            Rejected::NotAuthorized { .. } => "not_authorized",
            Rejected::Closed { .. } => "closed",
        }
    }
}

#[derive(Debug)]
struct Slot {
    entry: Entry,
    /// Insertion order for eviction; a queue item with another sequence number is stale.
    seq: u64,
}

/// The lifecycle of the tasks of one input partition.
#[derive(Debug)]
pub struct Lifecycle {
    centre_desk: Arc<str>,
    second_ms: i64,
    closed_ms: i64,
    unclosed_ms: i64,
    max_tracked: usize,
    entries: FxHashMap<TaskId, Slot>,
    pool: Pool,
    /// Earlier ids of upgraded tasks and escalation ids, to the entry that carries them.
    aliases: FxHashMap<TaskId, TaskId>,
    /// (due_ms, task id) of each entry's next timer. An item that no longer matches its
    /// entry's next due time is stale and skipped when it comes up.
    due: BinaryHeap<Reverse<(i64, [u8; 16])>>,
    /// (seq, id) of unclosed entries, oldest first: eviction order.
    tracked_age: VecDeque<(u64, TaskId)>,
    /// (seq, id) of closed records, oldest first: evicted before any unclosed task.
    closed_age: VecDeque<(u64, TaskId)>,
    next_seq: u64,
    /// Unclosed entries per [`Status`], in declaration order.
    counts: [usize; 3],
    closed: usize,
    evicted: u64,
    evicted_closed: u64,
    now_ms: i64,
    changed: Vec<TaskId>,
    changed_set: FxHashSet<TaskId>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn status_index(s: Status) -> usize {
    match s {
        Status::Open => 0,
        Status::Acknowledged => 1,
        Status::Overdue => 2,
    }
}

impl Lifecycle {
    pub fn new(settings: LifecycleSettings) -> Lifecycle {
        Lifecycle {
            centre_desk: settings.centre_desk.into(),
            second_ms: millis(settings.second_escalation_after),
            closed_ms: millis(settings.closed_retention),
            unclosed_ms: millis(settings.unclosed_retention),
            max_tracked: settings.max_tracked.max(1),
            entries: FxHashMap::default(),
            pool: Pool::default(),
            aliases: FxHashMap::default(),
            due: BinaryHeap::new(),
            tracked_age: VecDeque::new(),
            closed_age: VecDeque::new(),
            next_seq: 0,
            counts: [0; 3],
            closed: 0,
            evicted: 0,
            evicted_closed: 0,
            now_ms: i64::MIN,
            changed: Vec::new(),
            changed_set: FxHashSet::default(),
        }
    }

    /// Starts tracking a task read from the task topic.
    ///
    /// An upgrade of a tracked task replaces it and inherits its story: status,
    /// acknowledgement, attempts, first contact, escalation tier, who responded, and the
    /// earlier of the two deadlines; feedback naming the old id then reaches the new one. An
    /// upgrade of an unknown or closed task opens fresh. A task id already known (a
    /// redelivery, or an id an upgrade has replaced) changes nothing, and nor does an
    /// escalation record: this service wrote it, and the escalated task's own entry carries
    /// the escalation.
    pub fn on_task(&mut self, task: TrackedTask) -> Vec<Transition> {
        if task.kind == TaskKind::Escalation || self.resolve(task.task_id).is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let previous = task.upgrade_of.and_then(|p| self.resolve(p)).filter(|p| {
            matches!(
                self.entries.get(p),
                Some(Slot {
                    entry: Entry::Tracked(_),
                    ..
                })
            )
        });
        let entry = match previous.and_then(|p| Some((p, self.take(p, true)?))) {
            Some((from, Entry::Tracked(prev))) => {
                let entry = inherit(&mut self.pool, from, prev, &task);
                out.push(Transition::Upgraded {
                    task_id: task.task_id,
                    from,
                    status: entry.status,
                    deadline_ms: entry.deadline_ms,
                });
                entry
            }
            _ => {
                self.make_room(&mut out);
                out.push(Transition::Opened {
                    task_id: task.task_id,
                    level: task.level,
                    deadline_ms: task.deadline_ms,
                });
                fresh(&mut self.pool, &task, &[])
            }
        };
        self.put(task.task_id, Entry::Tracked(entry), true);
        out
    }

    /// Applies one feedback record whose Kafka key was `key`.
    ///
    /// The same record delivered again (same actor, time and outcome) is a no-op, also after
    /// the task closed. Otherwise feedback on a closed task is rejected, as is feedback keyed
    /// other than by the task's assignee id, or from an actor who is not the assignee, a
    /// copied officer, the station's desk or the centre's desk.
    pub fn on_feedback(
        &mut self,
        fb: &Feedback<'_>,
        key: Option<&[u8]>,
    ) -> Result<Vec<Transition>, Rejected> {
        let id = self.resolve(fb.task_id).ok_or(Rejected::UnknownTask {
            task_id: fb.task_id,
        })?;
        let fingerprint = fb.fingerprint();
        let t = match &self.entries[&id].entry {
            Entry::Closed(c) if c.seen.contains(&fingerprint) => return Ok(Vec::new()),
            Entry::Closed(c) => {
                return Err(Rejected::Closed {
                    task_id: id,
                    outcome: owned(&c.outcome),
                })
            }
            Entry::Tracked(t) => t,
        };
        if key != Some(t.parties.key.as_bytes()) {
            return Err(Rejected::WrongKey {
                task_id: id,
                expected: mask_digits(&t.parties.key).into_owned(),
            });
        }
        if !self.may_report(t, &fb.actor_id) {
            return Err(Rejected::NotAuthorized {
                task_id: id,
                actor: mask_digits(&fb.actor_id).into_owned(),
            });
        }
        if t.story().seen.contains(&fingerprint) {
            return Ok(Vec::new());
        }
        let mut t = t.clone();
        if !t.story().responded.iter().any(|r| **r == *fb.actor_id) {
            let actor = self.shared_actor(&t, &fb.actor_id);
            t.story_mut().responded.push(actor);
        }
        push_bounded(&mut t.story_mut().seen, fingerprint, MAX_SEEN);
        let by = fb.actor_id.clone().into_owned();
        let transition = match fb.outcome {
            Outcome::Acknowledged => {
                let story = t.story_mut();
                let first = story.acknowledged_at_ms.is_none();
                if first {
                    story.acknowledged_at_ms = Some(fb.at_ms);
                }
                if t.status == Status::Open {
                    t.status = Status::Acknowledged;
                }
                let status = t.status;
                self.put(id, Entry::Tracked(t), true);
                Transition::Acknowledged {
                    task_id: id,
                    by,
                    at_ms: fb.at_ms,
                    first,
                    status,
                }
            }
            Outcome::NotReached(reason) => {
                let story = t.story_mut();
                story.attempts = story.attempts.saturating_add(1);
                let attempts = story.attempts;
                self.put(id, Entry::Tracked(t), true);
                Transition::Attempted {
                    task_id: id,
                    by,
                    at_ms: fb.at_ms,
                    reason,
                    attempts,
                }
            }
            outcome => {
                let mut story = t.story.take().unwrap_or_default();
                if outcome.is_reached() && story.first_contact_ms.is_none() {
                    story.first_contact_ms = Some(fb.at_ms);
                }
                let closed = Closed {
                    key: t.parties.key.clone(),
                    outcome: self.pool.str(outcome.as_str()),
                    closed_at_ms: self.now_ms.max(fb.at_ms),
                    tier: t.tier,
                    supersedes: std::mem::take(&mut story.supersedes).into_boxed_slice(),
                    seen: std::mem::take(&mut story.seen).into_boxed_slice(),
                };
                self.put(id, Entry::Closed(Box::new(closed)), true);
                Transition::Closed {
                    task_id: id,
                    outcome,
                    by,
                    at_ms: fb.at_ms,
                    key: owned(&t.parties.key),
                    level: t.level,
                    created_at_ms: t.created_at_ms,
                    deadline_ms: t.deadline_ms,
                    acknowledged_at_ms: story.acknowledged_at_ms,
                    first_contact_ms: story.first_contact_ms,
                    attempts: story.attempts,
                    tier: t.tier,
                }
            }
        };
        Ok(vec![transition])
    }

    /// Moves the partition's clock to `now_ms` (it never goes back) and fires what is due:
    /// overdue tasks and their escalations, expiry of unclosed tasks, forgetting of closed
    /// records. Costs O(log n) per due item, whatever the number of entries.
    pub fn advance(&mut self, now_ms: i64) -> Vec<Transition> {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        let mut out = Vec::new();
        while let Some(&Reverse((due, raw))) = self.due.peek() {
            if due > now {
                break;
            }
            self.due.pop();
            let id = TaskId(raw);
            let Some(slot) = self.entries.get(&id) else {
                continue;
            };
            if self.next_due(&slot.entry) != due {
                continue;
            }
            match &slot.entry {
                Entry::Closed(_) => {
                    self.take(id, true);
                    out.push(Transition::Forgotten { task_id: id });
                }
                Entry::Tracked(t) => {
                    let t = t.clone();
                    self.fire(id, t, now, &mut out);
                }
            }
        }
        out
    }

    /// The next escalation, expiry or forgetting of a tracked task.
    fn fire(&mut self, id: TaskId, mut t: Tracked, now: i64, out: &mut Vec<Transition>) {
        let to_desk = if t.tier == 0 {
            match &t.parties.station_desk {
                Some(desk) if *desk != t.parties.key && *desk != self.centre_desk => desk.clone(),
                _ => self.centre_desk.clone(),
            }
        } else if t.tier == 1 && !self.escalated_to_centre(&t) {
            self.centre_desk.clone()
        } else {
            self.take(id, true);
            out.push(Transition::Expired {
                task_id: id,
                tier: t.tier,
            });
            return;
        };
        let deadline_ms = t.deadline_ms;
        if t.tier == 0 {
            t.status = Status::Overdue;
            t.story_mut().overdue_since_ms = Some(deadline_ms);
            out.push(Transition::Overdue {
                task_id: id,
                since_ms: deadline_ms,
            });
        }
        t.tier += 1;
        t.story_mut().last_escalated_ms = Some(now);
        let story = t.story();
        let root = story.supersedes.first().copied().unwrap_or(id);
        let escalation = Escalation {
            escalation_id: Escalation::id_for(root, t.tier),
            of: id,
            tier: t.tier,
            to_desk: owned(&to_desk),
            created_at_ms: t.created_at_ms,
            deadline_ms,
            overdue_since_ms: story.overdue_since_ms.unwrap_or(deadline_ms),
            not_responded: not_responded(&t),
            acknowledged_at_ms: story.acknowledged_at_ms,
            attempts: story.attempts,
            original_key: owned(&t.parties.key),
            station_id: t.parties.station_id.as_deref().map(str::to_owned),
            level: t.level,
        };
        t.story_mut().escalated_to.push(to_desk);
        self.put(id, Entry::Tracked(t), true);
        out.push(Transition::Escalated {
            task_id: id,
            escalation,
        });
    }

    /// Rebuilds the partition from one changelog record: a later record for a task replaces
    /// an earlier one, a tombstone removes it, as compaction would. Counters, the deadline
    /// queue and the aliases follow. Restored entries are not reported as changes; entries
    /// evicted to stay within `max_tracked` are.
    pub fn restore(&mut self, change: Change) -> Vec<Transition> {
        let mut out = Vec::new();
        match change.state {
            None => {
                self.take(change.task_id, false);
            }
            Some(state) => {
                let id = state.task_id();
                if !self.entries.contains_key(&id) {
                    self.make_room(&mut out);
                }
                let entry = self.pool.entry(state);
                self.put(id, entry, false);
            }
        }
        out
    }

    /// The changelog records for every task changed since the last call, each task once
    /// with its current state (`None`: a tombstone).
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.changed_set.clear();
        let entries = &self.entries;
        self.changed
            .drain(..)
            .map(|task_id| Change {
                task_id,
                state: entries.get(&task_id).map(|s| s.entry.to_state(task_id)),
            })
            .collect()
    }

    /// The entry stored under exactly `task_id` (no alias resolution), as its changelog
    /// value: built on each call, the lifecycle keeps a more compact form.
    pub fn state_of(&self, task_id: TaskId) -> Option<TaskState> {
        self.entries
            .get(&task_id)
            .map(|s| s.entry.to_state(task_id))
    }

    /// The id of the entry that feedback naming `task_id` reaches: itself, the upgrade that
    /// replaced it, or the task an escalation id was sent for.
    pub fn resolve(&self, task_id: TaskId) -> Option<TaskId> {
        if self.entries.contains_key(&task_id) {
            return Some(task_id);
        }
        self.aliases.get(&task_id).copied()
    }

    /// Every entry as its changelog value, in no particular order: for reports.
    pub fn states(&self) -> impl Iterator<Item = TaskState> + '_ {
        self.entries.iter().map(|(id, s)| s.entry.to_state(*id))
    }

    /// When [`Lifecycle::advance`] next has something to do, at the earliest (it may find
    /// the item stale): lets the edge sleep until then.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.due.peek().map(|Reverse((due, _))| *due)
    }

    /// The clock as last advanced (`i64::MIN` before the first call).
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    pub fn open(&self) -> usize {
        self.counts[status_index(Status::Open)]
    }

    pub fn acknowledged(&self) -> usize {
        self.counts[status_index(Status::Acknowledged)]
    }

    pub fn overdue(&self) -> usize {
        self.counts[status_index(Status::Overdue)]
    }

    /// Closed records remembered.
    pub fn closed(&self) -> usize {
        self.closed
    }

    /// Unclosed tasks evicted at `max_tracked`: tasks no longer watched, whose escalation
    /// may be missed.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Closed records evicted at `max_tracked` before their retention ran out.
    pub fn evicted_closed(&self) -> u64 {
        self.evicted_closed
    }

    fn may_report(&self, t: &Tracked, actor: &str) -> bool {
        let p = &*t.parties;
        actor == &*p.key
            || actor == &*self.centre_desk
            || p.station_desk.as_deref() == Some(actor)
            || p.may_report.iter().any(|m| &**m == actor)
    }

    /// `actor`, one of those [`Lifecycle::may_report`] lets report on `t`, as a shared string.
    fn shared_actor(&mut self, t: &Tracked, actor: &str) -> Arc<str> {
        let p = &*t.parties;
        std::iter::once(&p.key)
            .chain(&p.may_report)
            .chain(&p.station_desk)
            .chain(std::iter::once(&self.centre_desk))
            .find(|m| &***m == actor)
            .cloned()
            .unwrap_or_else(|| self.pool.str(actor))
    }

    fn escalated_to_centre(&self, t: &Tracked) -> bool {
        t.story().escalated_to.contains(&self.centre_desk)
    }

    fn next_due(&self, entry: &Entry) -> i64 {
        match entry {
            Entry::Closed(c) => c.closed_at_ms.saturating_add(self.closed_ms),
            Entry::Tracked(t) if t.tier == 0 => t.deadline_ms,
            Entry::Tracked(t) if t.tier == 1 && !self.escalated_to_centre(t) => t
                .story()
                .overdue_since_ms
                .unwrap_or(t.deadline_ms)
                .saturating_add(self.second_ms),
            Entry::Tracked(t) => t
                .story()
                .last_escalated_ms
                .unwrap_or(t.deadline_ms)
                .saturating_add(self.unclosed_ms),
        }
    }

    fn count(&mut self, entry: &Entry, add: bool) {
        let counter = match entry {
            Entry::Tracked(t) => &mut self.counts[status_index(t.status)],
            Entry::Closed(_) => &mut self.closed,
        };
        if add {
            *counter += 1;
        } else {
            *counter -= 1;
        }
    }

    fn mark_changed(&mut self, task_id: TaskId) {
        if self.changed_set.insert(task_id) {
            self.changed.push(task_id);
        }
    }

    /// Ids that resolve to `entry`, stored under `task_id`: the chain it superseded and its
    /// escalations.
    fn aliases_of(task_id: TaskId, entry: &Entry) -> impl Iterator<Item = TaskId> + '_ {
        let root = entry.root(task_id);
        entry
            .supersedes()
            .iter()
            .copied()
            .chain((1..=entry.tier()).map(move |tier| Escalation::id_for(root, tier)))
    }

    /// Stores `entry` under `id`, replacing any entry there, and keeps counters, aliases,
    /// the deadline queue and the eviction order in step.
    fn put(&mut self, id: TaskId, entry: Entry, changed: bool) {
        let due = self.next_due(&entry);
        let is_closed = entry.status().is_none();
        self.count(&entry, true);
        for alias in Self::aliases_of(id, &entry) {
            self.aliases.insert(alias, id);
        }
        let old = self.entries.remove(&id);
        if let Some(old) = &old {
            self.count(&old.entry, false);
        }
        let seq = match old {
            Some(old) if old.entry.status().is_none() == is_closed => {
                if self.next_due(&old.entry) != due {
                    self.due.push(Reverse((due, id.0)));
                }
                old.seq
            }
            _ => {
                self.due.push(Reverse((due, id.0)));
                let seq = self.next_seq;
                self.next_seq += 1;
                let queue = if is_closed {
                    &mut self.closed_age
                } else {
                    &mut self.tracked_age
                };
                queue.push_back((seq, id));
                seq
            }
        };
        self.entries.insert(id, Slot { entry, seq });
        if changed {
            self.mark_changed(id);
        }
        self.compact_queues();
    }

    /// Removes the entry stored under `task_id` and the aliases that point to it.
    fn take(&mut self, task_id: TaskId, changed: bool) -> Option<Entry> {
        let slot = self.entries.remove(&task_id)?;
        self.count(&slot.entry, false);
        for alias in Self::aliases_of(task_id, &slot.entry) {
            if self.aliases.get(&alias) == Some(&task_id) {
                self.aliases.remove(&alias);
            }
        }
        if changed {
            self.mark_changed(task_id);
        }
        Some(slot.entry)
    }

    /// At `max_tracked`, evicts the oldest closed record, or failing that the oldest
    /// unclosed task.
    fn make_room(&mut self, out: &mut Vec<Transition>) {
        while self.entries.len() >= self.max_tracked {
            let victim = self.pop_live(true).or_else(|| self.pop_live(false));
            let Some(id) = victim else { return };
            let entry = self.take(id, true).expect("a live queue item has an entry");
            let was = entry.status();
            match was {
                Some(_) => self.evicted += 1,
                None => self.evicted_closed += 1,
            }
            out.push(Transition::Evicted { task_id: id, was });
        }
    }

    /// Pops the oldest live item of the closed or the unclosed eviction queue.
    fn pop_live(&mut self, closed: bool) -> Option<TaskId> {
        loop {
            let queue = if closed {
                &mut self.closed_age
            } else {
                &mut self.tracked_age
            };
            let (seq, id) = queue.pop_front()?;
            if self.entries.get(&id).is_some_and(|s| s.seq == seq) {
                return Some(id);
            }
        }
    }

    /// Drops stale items from the eviction queues once they outnumber live entries: without
    /// this, a partition that never reaches `max_tracked` would keep one item per task ever
    /// seen.
    fn compact_queues(&mut self) {
        let limit = 2 * self.entries.len() + 64;
        if self.tracked_age.len() + self.closed_age.len() > limit {
            let entries = &self.entries;
            let live = |&(seq, id): &(u64, TaskId)| entries.get(&id).is_some_and(|s| s.seq == seq);
            self.tracked_age.retain(live);
            self.closed_age.retain(live);
        }
        if self.due.len() > limit {
            // Items of removed entries drain as their time comes; this caps them before that.
            let due = std::mem::take(&mut self.due);
            self.due = due
                .into_iter()
                .filter(|Reverse((at, raw))| {
                    self.entries
                        .get(&TaskId(*raw))
                        .is_some_and(|s| self.next_due(&s.entry) == *at)
                })
                .collect();
        }
    }
}

/// A new task, its `may_report` without repeats, followed by those of `also` it lacks.
fn fresh(pool: &mut Pool, task: &TrackedTask, also: &[Arc<str>]) -> Tracked {
    let mut may_report: SmallVec<[&str; 8]> = SmallVec::new();
    for m in task
        .may_report
        .iter()
        .map(String::as_str)
        .chain(also.iter().map(|m| &**m))
    {
        if !may_report.contains(&m) {
            may_report.push(m);
        }
    }
    let parties = pool.parties(&PartiesView {
        key: &task.key,
        station_id: task.station_id.as_deref(),
        station_desk: task.station_desk.as_deref(),
        may_report: &may_report,
    });
    Tracked {
        parties,
        created_at_ms: task.created_at_ms,
        deadline_ms: task.deadline_ms,
        status: Status::Open,
        level: task.level,
        tier: 0,
        story: None,
    }
}

/// The upgrade `task` carrying on the story of `prev`, stored under `prev_id`.
fn inherit(pool: &mut Pool, prev_id: TaskId, prev: Tracked, task: &TrackedTask) -> Tracked {
    // Officers on the earlier task may still report on it by its old id.
    let mut next = fresh(pool, task, &prev.parties.may_report);
    next.status = prev.status;
    next.deadline_ms = next.deadline_ms.min(prev.deadline_ms);
    next.tier = prev.tier;
    let mut story = prev.story.unwrap_or_default();
    if story.supersedes.len() >= MAX_CHAIN {
        // Keep the root: escalation ids derive from it.
        story.supersedes.remove(1);
    }
    story.supersedes.push(prev_id);
    next.story = Some(story);
    next
}

/// Who was asked to act and gave no feedback: the assignee, the copied officers and the
/// desks already escalated to.
fn not_responded(t: &Tracked) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let story = t.story();
    let asked = std::iter::once(&t.parties.key)
        .chain(&t.parties.may_report[..])
        .chain(&story.escalated_to);
    for who in asked {
        if !story.responded.contains(who) && !out.iter().any(|o| **o == **who) {
            out.push(owned(who));
        }
    }
    out
}

#[cfg(test)]
mod tests;
