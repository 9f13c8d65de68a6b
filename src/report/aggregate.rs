//! The figures, from decoded records: no Kafka, no clock, no formatting.
//!
//! Records go in in any order ([`Aggregator::add_task`], [`Aggregator::add_escalation`],
//! [`Aggregator::add_feedback`]); [`Aggregator::report`] and [`Aggregator::station_list`]
//! then compute from what was read. The result depends only on the set of records and the
//! `as_of` instant, never on read order or hashing, so the same topics give the same report.
//!
//! A **story** is a task and the upgrades that raised it (`upgrade_of`), as the lifecycle
//! tracks it: feedback naming any id of the story, or one of its escalation ids, belongs to
//! the whole story. Tasks are counted one by one; people by a hash of their number.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::lifecycle::Outcome;
use crate::rules::Level;
use crate::task::TaskId;

use super::record::{EscalationRecord, FeedbackRecord, TaskRecord};

/// What a report's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// The district of the task's station (`district_code` in the stations file).
    District,
    Station,
    Grid,
    /// Each rule that fired: a task with three reasons counts in three rows.
    Rule,
}

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::District => "district",
            Dimension::Station => "station",
            Dimension::Grid => "grid",
            Dimension::Rule => "rule",
        }
    }
}

/// Which tasks a report covers, by `created_at`: `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

impl Window {
    pub fn contains(&self, t_ms: i64) -> bool {
        self.from_ms.is_none_or(|f| t_ms >= f) && self.to_ms.is_none_or(|t| t_ms < t)
    }
}

/// The row key of tasks without a station or grid (no grid matched: the fallback desk).
pub const NONE_KEY: &str = "(none)";
/// The district of a station missing from the stations file.
pub const UNKNOWN_KEY: &str = "(unknown)";

/// Longest upgrade chain followed: dispatch upgrades at most three times, and a loop in
/// corrupt input must not hang the report.
const MAX_CHAIN: usize = 16;

/// What the feedback says about a task id, or, merged, about a story.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Facts {
    first_reached_ms: Option<i64>,
    /// (at, read sequence, outcome name) of the earliest closing feedback; the sequence
    /// only breaks ties of equal `at`, and is merged by minimum, so read order across
    /// partitions cannot change the result.
    closing: Option<(i64, u64, &'static str)>,
    acknowledged: bool,
    attempts: u32,
    /// Reported losses in fen (0.01 CNY): integer sums do not depend on their order.
    loss_fen: i64,
}

impl Facts {
    fn merge(&mut self, o: &Facts) {
        self.first_reached_ms = min_opt(self.first_reached_ms, o.first_reached_ms);
        self.closing = match (self.closing, o.closing) {
            (Some(a), Some(b)) => Some(if (b.0, b.1) < (a.0, a.1) { b } else { a }),
            (a, b) => a.or(b),
        };
        self.acknowledged |= o.acknowledged;
        self.attempts += o.attempts;
        self.loss_fen += o.loss_fen;
    }

    fn closed_by(&self, t_ms: i64) -> bool {
        self.closing.is_some_and(|(at, _, _)| at <= t_ms)
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Collects records; see the module documentation.
#[derive(Debug, Default)]
pub struct Aggregator {
    window: Window,
    /// Every task id on the topic, in the window or not: redeliveries are counted once.
    seen: FxHashSet<TaskId>,
    /// Task id → the id it upgraded, and escalation id → the task it escalated, for every
    /// record read: a story may begin before the window.
    parent: FxHashMap<TaskId, TaskId>,
    /// Upgraded task id → when its earliest upgrade was created.
    superseded_at: FxHashMap<TaskId, i64>,
    /// The tasks created in the window, in read order.
    tasks: Vec<TaskRecord>,
    escalated: FxHashSet<TaskId>,
    feedback: FxHashMap<TaskId, Facts>,
    fingerprints: FxHashSet<(TaskId, u64)>,
    feedback_seq: u64,
}

impl Aggregator {
    pub fn new(window: Window) -> Aggregator {
        Aggregator {
            window,
            ..Aggregator::default()
        }
    }

    /// Adds a task record; a task id already read (a redelivery) is ignored.
    pub fn add_task(&mut self, t: TaskRecord) {
        if !self.seen.insert(t.task_id) {
            return;
        }
        if let Some(prev) = t.upgrade_of {
            self.parent.insert(t.task_id, prev);
            let at = self.superseded_at.entry(prev).or_insert(t.created_at_ms);
            *at = (*at).min(t.created_at_ms);
        }
        if self.window.contains(t.created_at_ms) {
            self.tasks.push(t);
        }
    }

    pub fn add_escalation(&mut self, e: EscalationRecord) {
        self.parent.insert(e.escalation_id, e.escalation_of);
        self.escalated.insert(e.escalation_of);
    }

    /// Adds a feedback record; the same record read again (same actor, time and outcome on
    /// the same task) is ignored, as the lifecycle ignores it.
    pub fn add_feedback(&mut self, fb: FeedbackRecord) {
        if !self.fingerprints.insert((fb.task_id, fb.fingerprint)) {
            return;
        }
        self.feedback_seq += 1;
        let seq = self.feedback_seq;
        let mut f = Facts::default();
        match fb.outcome {
            Outcome::Acknowledged => f.acknowledged = true,
            Outcome::NotReached(_) => f.attempts = 1,
            Outcome::AlreadyDefrauded { loss_cny } => {
                f.loss_fen = loss_cny.map_or(0, |l| (l * 100.0).round() as i64);
            }
            Outcome::ReachedInPerson | Outcome::ReachedByPhone | Outcome::FalseAlarm => {}
        }
        if fb.outcome.is_reached() {
            f.first_reached_ms = Some(fb.at_ms);
        }
        if fb.outcome.is_closing() {
            f.closing = Some((fb.at_ms, seq, fb.outcome.as_str()));
        }
        self.feedback.entry(fb.task_id).or_default().merge(&f);
    }

    /// Tasks read in the window.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    fn root(&self, mut id: TaskId) -> TaskId {
        for _ in 0..MAX_CHAIN {
            match self.parent.get(&id) {
                Some(p) => id = *p,
                None => break,
            }
        }
        id
    }

    /// What each story's feedback says, keyed by the story's first id.
    fn stories(&self) -> FxHashMap<TaskId, Facts> {
        let mut stories: FxHashMap<TaskId, Facts> = FxHashMap::default();
        for (id, f) in &self.feedback {
            stories.entry(self.root(*id)).or_default().merge(f);
        }
        stories
    }

    /// Judges each task in the window.
    fn judged(&self, as_of_ms: i64) -> Vec<Judged<'_>> {
        let stories = self.stories();
        self.tasks
            .iter()
            .map(|t| {
                let root = self.root(t.task_id);
                let facts = stories.get(&root).copied().unwrap_or_default();
                let superseded_at = self.superseded_at.get(&t.task_id).copied();
                // An upgraded task is judged on its own deadline only if that passed before
                // the upgrade took over the story.
                let overdue = t.deadline_ms < as_of_ms
                    && !facts.closed_by(t.deadline_ms)
                    && superseded_at.is_none_or(|s| t.deadline_ms < s);
                Judged {
                    task: t,
                    root,
                    facts,
                    superseded: superseded_at.is_some(),
                    overdue,
                    escalated: self.escalated.contains(&t.task_id),
                }
            })
            .collect()
    }

    /// The figures per row of `by`, with tasks overdue as of `as_of_ms`. `districts` maps
    /// station ids to district codes.
    pub fn report(
        &self,
        by: Dimension,
        as_of_ms: i64,
        districts: &HashMap<String, String>,
    ) -> Report {
        let judged = self.judged(as_of_ms);
        let mut rows: BTreeMap<String, Acc> = BTreeMap::new();
        let mut total = Acc::default();
        for j in &judged {
            total.add(j);
            for (key, name) in keys(j.task, by, districts) {
                let acc = rows.entry(key).or_default();
                if acc.name.is_none() {
                    acc.name = name;
                }
                acc.add(j);
            }
        }
        Report {
            by,
            window: self.window,
            as_of_ms,
            rows: rows.into_iter().map(|(k, acc)| acc.finish(k)).collect(),
            total: total.finish("total".into()),
        }
    }

    /// Every station's tasks in the window, open items first, with overdue judged as of
    /// `as_of_ms`.
    pub fn station_list(&self, as_of_ms: i64, districts: &HashMap<String, String>) -> StationList {
        let mut stations: BTreeMap<String, StationTasks> = BTreeMap::new();
        for j in self.judged(as_of_ms) {
            let t = j.task;
            let station_id = t.station_id.clone().unwrap_or_else(|| NONE_KEY.into());
            let entry = stations
                .entry(station_id.clone())
                .or_insert_with(|| StationTasks {
                    district: t
                        .station_id
                        .as_ref()
                        .and_then(|s| districts.get(s).cloned()),
                    station_id,
                    name: None,
                    open: 0,
                    overdue: 0,
                    items: Vec::new(),
                });
            if entry.name.is_none() {
                entry.name = t.station_name.clone();
            }
            let closing = j.facts.closing;
            let open = closing.is_none() && !j.superseded;
            let state = if j.superseded {
                "upgraded"
            } else if let Some((_, _, outcome)) = closing {
                outcome
            } else if j.facts.acknowledged {
                "acknowledged"
            } else if j.facts.attempts > 0 {
                "not_reached"
            } else {
                "open"
            };
            entry.open += usize::from(open);
            entry.overdue += usize::from(j.overdue);
            entry.items.push(ListItem {
                task_id: t.task_id,
                created_at_ms: t.created_at_ms,
                level: t.level,
                grid_id: t.grid_id.clone(),
                assignee_id: t.assignee_id.clone(),
                victim: t.victim_masked.clone(),
                state,
                closed_at_ms: closing.map(|c| c.0),
                deadline_ms: t.deadline_ms,
                overdue: j.overdue,
                open,
            });
        }
        let mut stations: Vec<StationTasks> = stations.into_values().collect();
        for s in &mut stations {
            s.items.sort_by(|a, b| {
                (!a.open, a.created_at_ms, a.task_id.0).cmp(&(
                    !b.open,
                    b.created_at_ms,
                    b.task_id.0,
                ))
            });
        }
        StationList {
            window: self.window,
            as_of_ms,
            stations,
        }
    }
}

struct Judged<'a> {
    task: &'a TaskRecord,
    root: TaskId,
    facts: Facts,
    superseded: bool,
    overdue: bool,
    escalated: bool,
}

fn keys(
    t: &TaskRecord,
    by: Dimension,
    districts: &HashMap<String, String>,
) -> Vec<(String, Option<String>)> {
    match by {
        Dimension::District => vec![(
            match &t.station_id {
                None => NONE_KEY.into(),
                Some(s) => districts
                    .get(s)
                    .cloned()
                    .unwrap_or_else(|| UNKNOWN_KEY.into()),
            },
            None,
        )],
        Dimension::Station => vec![(
            t.station_id.clone().unwrap_or_else(|| NONE_KEY.into()),
            t.station_name.clone(),
        )],
        Dimension::Grid => vec![(
            t.grid_id.clone().unwrap_or_else(|| NONE_KEY.into()),
            t.grid_name.clone(),
        )],
        Dimension::Rule => {
            let mut ids: Vec<&String> = t.rule_ids.iter().collect();
            ids.sort();
            ids.dedup();
            if ids.is_empty() {
                return vec![(NONE_KEY.into(), None)];
            }
            ids.into_iter().map(|r| (r.clone(), None)).collect()
        }
    }
}

#[derive(Default)]
struct Acc {
    name: Option<String>,
    tasks: u64,
    people: FxHashSet<u64>,
    reached: FxHashSet<u64>,
    /// Story → (earliest creation of its tasks in the row, its facts).
    stories: FxHashMap<TaskId, (i64, Facts)>,
    overdue: u64,
    escalated: u64,
    false_alarms: u64,
}

impl Acc {
    fn add(&mut self, j: &Judged<'_>) {
        self.tasks += 1;
        self.people.insert(j.task.person);
        if j.facts.first_reached_ms.is_some() {
            self.reached.insert(j.task.person);
        }
        let story = self
            .stories
            .entry(j.root)
            .or_insert((j.task.created_at_ms, j.facts));
        story.0 = story.0.min(j.task.created_at_ms);
        self.overdue += u64::from(j.overdue);
        self.escalated += u64::from(j.escalated);
        self.false_alarms +=
            u64::from(matches!(j.facts.closing, Some((_, _, o)) if o == "false_alarm"));
    }

    fn finish(self, key: String) -> Row {
        let mut contact: Vec<i64> = self
            .stories
            .values()
            .filter_map(|(created, f)| f.first_reached_ms.map(|r| (r - created).max(0)))
            .collect();
        contact.sort_unstable();
        let people = self.people.len() as u64;
        let reached = self.reached.len() as u64;
        Row {
            key,
            name: self.name,
            tasks: self.tasks,
            people,
            reached,
            reach_rate: (people > 0).then(|| (reached as f64 / people as f64 * 1e4).round() / 1e4),
            median_first_contact_s: nearest_rank(&contact, 0.5).map(|ms| ms as f64 / 1000.0),
            p90_first_contact_s: nearest_rank(&contact, 0.9).map(|ms| ms as f64 / 1000.0),
            overdue: self.overdue,
            escalated: self.escalated,
            false_alarms: self.false_alarms,
            losses_cny: self.stories.values().map(|(_, f)| f.loss_fen).sum::<i64>() as f64 / 100.0,
        }
    }
}

/// The nearest-rank percentile of sorted samples: always one of the samples.
fn nearest_rank(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The figures per row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(serialize_with = "ser_dimension")]
    pub by: Dimension,
    #[serde(skip)]
    pub window: Window,
    #[serde(skip)]
    pub as_of_ms: i64,
    pub rows: Vec<Row>,
    pub total: Row,
}

fn ser_dimension<S: serde::Serializer>(d: &Dimension, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}

/// One row: see `docs/report.md` for the definitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub key: String,
    pub name: Option<String>,
    /// Task records pushed (new and upgrades), each task id once.
    pub tasks: u64,
    /// Distinct people at risk.
    pub people: u64,
    /// Distinct people with a reached feedback on their story.
    pub reached: u64,
    /// `reached / people`, to four decimals.
    pub reach_rate: Option<f64>,
    pub median_first_contact_s: Option<f64>,
    pub p90_first_contact_s: Option<f64>,
    pub overdue: u64,
    pub escalated: u64,
    pub false_alarms: u64,
    pub losses_cny: f64,
}

/// The monthly per-station task list.
#[derive(Debug, Clone, PartialEq)]
pub struct StationList {
    pub window: Window,
    pub as_of_ms: i64,
    pub stations: Vec<StationTasks>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StationTasks {
    pub station_id: String,
    pub name: Option<String>,
    pub district: Option<String>,
    pub open: usize,
    pub overdue: usize,
    /// Open items first, then by creation time.
    pub items: Vec<ListItem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListItem {
    pub task_id: TaskId,
    pub created_at_ms: i64,
    pub level: Level,
    pub grid_id: Option<String>,
    pub assignee_id: String,
    /// Masked: a printed list must not carry full numbers.
    pub victim: String,
    /// `open`, `acknowledged`, `not_reached` (attempted, still open), `upgraded` (a later
    /// task carries the story), or the closing outcome.
    pub state: &'static str,
    pub closed_at_ms: Option<i64>,
    pub deadline_ms: i64,
    pub overdue: bool,
    /// Neither closed nor upgraded: the station still has to act.
    pub open: bool,
}
