//! The in-memory form of an entry. [`TaskState`] is what the changelog carries; a partition
//! holds up to `max_tracked` entries (a million by default), most of them open tasks no one
//! has reported on yet, so this form is sized for those. The strings that repeat across tasks
//! (assignee, station, desk and copied officers are the same for every task of a grid cell)
//! are shared through the partition's [`Pool`], and what a task only gains from feedback,
//! escalation or an upgrade sits in one [`Story`] box, absent until then.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use smallvec::SmallVec;

use super::state::{ClosedState, Status, TaskState, TrackedState};
use crate::rules::Level;
use crate::task::TaskId;

/// A shared string as a `String`. Not `to_string`: for `Arc<str>` that goes through
/// `Display`, several times slower than a copy.
pub(super) fn owned(s: &Arc<str>) -> String {
    String::from(&**s)
}

/// Who a task concerns and who may report on it, shared by every task with the same ones.
#[derive(Debug)]
pub(super) struct Parties {
    pub key: Arc<str>,
    pub station_id: Option<Arc<str>>,
    pub station_desk: Option<Arc<str>>,
    pub may_report: Box<[Arc<str>]>,
}

impl Parties {
    fn is(&self, view: &PartiesView<'_>) -> bool {
        *self.key == *view.key
            && self.station_id.as_deref() == view.station_id
            && self.station_desk.as_deref() == view.station_desk
            && self.may_report.len() == view.may_report.len()
            && self
                .may_report
                .iter()
                .zip(view.may_report)
                .all(|(a, b)| **a == **b)
    }
}

/// [`Parties`] as borrowed from a task or a changelog record, to look up without allocating.
pub(super) struct PartiesView<'a> {
    pub key: &'a str,
    pub station_id: Option<&'a str>,
    pub station_desk: Option<&'a str>,
    pub may_report: &'a [&'a str],
}

impl PartiesView<'_> {
    fn hash(&self) -> u64 {
        let mut h = FxHasher::default();
        self.key.hash(&mut h);
        self.station_id.hash(&mut h);
        self.station_desk.hash(&mut h);
        self.may_report.hash(&mut h);
        h.finish()
    }
}

/// A task that is not closed yet.
#[derive(Debug, Clone)]
pub(super) struct Tracked {
    pub parties: Arc<Parties>,
    pub created_at_ms: i64,
    pub deadline_ms: i64,
    pub status: Status,
    pub level: Level,
    pub tier: u8,
    pub story: Option<Box<Story>>,
}

/// The fields of [`TrackedState`] that stay empty until feedback, an escalation or an
/// upgrade.
#[derive(Debug, Clone, Default)]
pub(super) struct Story {
    pub supersedes: Vec<TaskId>,
    pub responded: Vec<Arc<str>>,
    pub escalated_to: Vec<Arc<str>>,
    pub seen: Vec<u64>,
    pub acknowledged_at_ms: Option<i64>,
    pub first_contact_ms: Option<i64>,
    pub overdue_since_ms: Option<i64>,
    pub last_escalated_ms: Option<i64>,
    pub attempts: u16,
}

impl Story {
    fn is_empty(&self) -> bool {
        self.supersedes.is_empty()
            && self.responded.is_empty()
            && self.escalated_to.is_empty()
            && self.seen.is_empty()
            && self.acknowledged_at_ms.is_none()
            && self.first_contact_ms.is_none()
            && self.overdue_since_ms.is_none()
            && self.last_escalated_ms.is_none()
            && self.attempts == 0
    }
}

const NO_STORY: &Story = &Story {
    supersedes: Vec::new(),
    responded: Vec::new(),
    escalated_to: Vec::new(),
    seen: Vec::new(),
    acknowledged_at_ms: None,
    first_contact_ms: None,
    overdue_since_ms: None,
    last_escalated_ms: None,
    attempts: 0,
};

impl Tracked {
    pub fn story(&self) -> &Story {
        self.story.as_deref().unwrap_or(NO_STORY)
    }

    pub fn story_mut(&mut self) -> &mut Story {
        self.story.get_or_insert_with(Box::default)
    }

    fn to_state(&self, task_id: TaskId) -> TrackedState {
        let p = &*self.parties;
        let s = self.story();
        let strings = |v: &[Arc<str>]| v.iter().map(owned).collect();
        TrackedState {
            task_id,
            supersedes: s.supersedes.clone(),
            status: self.status,
            key: owned(&p.key),
            level: self.level,
            created_at_ms: self.created_at_ms,
            deadline_ms: self.deadline_ms,
            station_id: p.station_id.as_deref().map(str::to_owned),
            station_desk: p.station_desk.as_deref().map(str::to_owned),
            may_report: strings(&p.may_report),
            responded: strings(&s.responded),
            acknowledged_at_ms: s.acknowledged_at_ms,
            first_contact_ms: s.first_contact_ms,
            attempts: s.attempts,
            tier: self.tier,
            escalated_to: strings(&s.escalated_to),
            overdue_since_ms: s.overdue_since_ms,
            last_escalated_ms: s.last_escalated_ms,
            seen: s.seen.clone(),
        }
    }
}

/// What is left of a closed task. Boxed in [`Entry`]: it is larger than an open task's
/// entry, and closed records are the fewer.
#[derive(Debug, Clone)]
pub(super) struct Closed {
    pub key: Arc<str>,
    pub outcome: Arc<str>,
    pub closed_at_ms: i64,
    pub tier: u8,
    pub supersedes: Box<[TaskId]>,
    pub seen: Box<[u64]>,
}

#[derive(Debug, Clone)]
pub(super) enum Entry {
    Tracked(Tracked),
    Closed(Box<Closed>),
}

impl Entry {
    /// The unclosed status, or `None` for a closed record.
    pub fn status(&self) -> Option<Status> {
        match self {
            Entry::Tracked(t) => Some(t.status),
            Entry::Closed(_) => None,
        }
    }

    pub fn supersedes(&self) -> &[TaskId] {
        match self {
            Entry::Tracked(t) => &t.story().supersedes,
            Entry::Closed(c) => &c.supersedes,
        }
    }

    pub fn tier(&self) -> u8 {
        match self {
            Entry::Tracked(t) => t.tier,
            Entry::Closed(c) => c.tier,
        }
    }

    /// See [`TaskState::root`].
    pub fn root(&self, task_id: TaskId) -> TaskId {
        self.supersedes().first().copied().unwrap_or(task_id)
    }

    /// The changelog value of the entry stored under `task_id`.
    pub fn to_state(&self, task_id: TaskId) -> TaskState {
        match self {
            Entry::Tracked(t) => TaskState::Tracked(t.to_state(task_id)),
            Entry::Closed(c) => TaskState::Closed(ClosedState {
                task_id,
                supersedes: c.supersedes.to_vec(),
                key: owned(&c.key),
                outcome: owned(&c.outcome),
                closed_at_ms: c.closed_at_ms,
                tier: c.tier,
                seen: c.seen.to_vec(),
            }),
        }
    }
}

/// The strings and [`Parties`] the entries of one partition share. What no entry uses any
/// more is dropped in sweeps, each after the pool has doubled since the last, so the pool
/// stays proportional to what is live at amortised O(1) per insertion.
#[derive(Debug, Default)]
pub(super) struct Pool {
    strings: FxHashSet<Arc<str>>,
    /// By [`PartiesView::hash`]; a hash shared by different parties is rare, not wrong.
    parties: FxHashMap<u64, SmallVec<[Arc<Parties>; 1]>>,
    parties_len: usize,
    sweep_at: usize,
}

impl Pool {
    pub fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        self.sweep_if_due();
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    pub fn parties(&mut self, view: &PartiesView<'_>) -> Arc<Parties> {
        let hash = view.hash();
        if let Some(found) = self
            .parties
            .get(&hash)
            .and_then(|same| same.iter().find(|p| p.is(view)))
        {
            return found.clone();
        }
        self.sweep_if_due();
        let parties = Arc::new(Parties {
            key: self.str(view.key),
            station_id: view.station_id.map(|s| self.str(s)),
            station_desk: view.station_desk.map(|s| self.str(s)),
            may_report: view.may_report.iter().map(|m| self.str(m)).collect(),
        });
        self.parties.entry(hash).or_default().push(parties.clone());
        self.parties_len += 1;
        parties
    }

    fn sweep_if_due(&mut self) {
        if self.strings.len() + self.parties_len < self.sweep_at {
            return;
        }
        // Parties first: they hold strings.
        self.parties.retain(|_, same| {
            same.retain(|p| Arc::strong_count(p) > 1);
            !same.is_empty()
        });
        self.parties_len = self.parties.values().map(SmallVec::len).sum();
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.sweep_at = 2 * (self.strings.len() + self.parties_len) + 1024;
    }

    /// A changelog value in the in-memory form.
    pub fn entry(&mut self, state: TaskState) -> Entry {
        match state {
            TaskState::Tracked(t) => {
                let may_report: SmallVec<[&str; 8]> =
                    t.may_report.iter().map(String::as_str).collect();
                let parties = self.parties(&PartiesView {
                    key: &t.key,
                    station_id: t.station_id.as_deref(),
                    station_desk: t.station_desk.as_deref(),
                    may_report: &may_report,
                });
                let story = Story {
                    supersedes: t.supersedes,
                    responded: t.responded.iter().map(|s| self.str(s)).collect(),
                    escalated_to: t.escalated_to.iter().map(|s| self.str(s)).collect(),
                    seen: t.seen,
                    acknowledged_at_ms: t.acknowledged_at_ms,
                    first_contact_ms: t.first_contact_ms,
                    overdue_since_ms: t.overdue_since_ms,
                    last_escalated_ms: t.last_escalated_ms,
                    attempts: t.attempts,
                };
                Entry::Tracked(Tracked {
                    parties,
                    created_at_ms: t.created_at_ms,
                    deadline_ms: t.deadline_ms,
                    status: t.status,
                    level: t.level,
                    tier: t.tier,
                    story: (!story.is_empty()).then(|| Box::new(story)),
                })
            }
            TaskState::Closed(c) => Entry::Closed(Box::new(Closed {
                key: self.str(&c.key),
                outcome: self.str(&c.outcome),
                closed_at_ms: c.closed_at_ms,
                tier: c.tier,
                supersedes: c.supersedes.into_boxed_slice(),
                seen: c.seen.into_boxed_slice(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_task_entry_stays_small() {
        // The map stores entries inline, with up to half of its buckets empty: each byte
        // here costs up to two per task.
        assert!(
            std::mem::size_of::<Entry>() <= 40,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn the_pool_shares_equal_parties_and_drops_unused_ones_in_sweeps() {
        fn view(key: &str) -> PartiesView<'_> {
            PartiesView {
                key,
                station_id: Some("hx"),
                station_desk: None,
                may_report: &["a", "b"],
            }
        }
        let mut pool = Pool::default();
        let a = pool.parties(&view("k"));
        assert!(Arc::ptr_eq(&a, &pool.parties(&view("k"))));
        assert!(!Arc::ptr_eq(&a, &pool.parties(&view("other"))));
        for i in 0..5000 {
            drop(pool.parties(&view(&i.to_string())));
        }
        assert!(pool.parties_len < 3000, "{}", pool.parties_len);
        assert!(
            Arc::ptr_eq(&a, &pool.parties(&view("k"))),
            "kept while used"
        );
    }
}
