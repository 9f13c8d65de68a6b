//! The views' read model: every task on the task topic with where its story stands after
//! the feedback topic, kept current as records arrive, and the area's reach figures (the
//! same aggregation `dissuade report` runs). No I/O: [`super::feed`] feeds it.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{Datelike, TimeZone};
use serde::{Deserialize, Serialize};

use crate::lifecycle::feedback::{Feedback, Outcome};
use crate::privacy::mask_phone;
use crate::report::{Aggregator, Dimension, FeedbackRecord, Report, Row, TaskTopicRecord, Window};
use crate::rules::Level;
use crate::task::TaskId;

use super::auth::Scope;

/// How long a closed or upgraded task stays on the board (recent outcomes per cell).
const CLOSED_KEPT_MS: i64 = 24 * 3600 * 1000;
/// Feedback entries kept per task for its detail.
const FEEDBACK_KEPT: usize = 20;
/// Beijing time: the centre's day and month.
const BEIJING_S: i32 = 8 * 3600;

/// Where a task's story stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    Acknowledged,
    NotReached,
    Upgraded,
    Closed,
}

/// A task as the lists show it (`Task` in docs/web.md): the number masked.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub task_id: TaskId,
    pub kind: &'static str,
    pub level: Level,
    pub score: i32,
    pub created_at: i64,
    pub deadline: i64,
    pub grid_id: Option<String>,
    pub grid_name: Option<String>,
    pub station_id: Option<String>,
    pub assignee_id: String,
    pub victim: String,
    pub state: State,
    pub outcome: Option<&'static str>,
    pub overdue: bool,
    pub escalated_tier: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct FeedbackView {
    pub at: i64,
    pub actor_id: String,
    pub outcome: &'static str,
    pub reason: Option<&'static str>,
    pub note: Option<String>,
}

/// Everything the board keeps of a task.
#[derive(Debug, Clone)]
pub struct Entry {
    pub view: TaskView,
    /// The full number: only the task's detail shows it, to those who must call.
    pub victim_number: String,
    pub script: String,
    pub reasons: Vec<String>,
    pub also_notify: Vec<String>,
    /// Desks the task was escalated to, tier by tier.
    pub escalated_to: Vec<String>,
    pub feedback: Vec<FeedbackView>,
    pub closed_at: Option<i64>,
}

impl Entry {
    pub fn visible_to(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Centre => true,
            Scope::Station(s) => self.view.station_id.as_deref() == Some(s),
            Scope::Officer(o) => self.view.assignee_id == *o || self.also_notify.contains(o),
        }
    }

    fn is_open(&self) -> bool {
        !matches!(self.view.state, State::Closed | State::Upgraded)
    }
}

#[derive(Deserialize)]
struct RawTask<'a> {
    task_id: TaskId,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    upgrade_of: Option<TaskId>,
    #[serde(default)]
    escalation_of: Option<TaskId>,
    #[serde(default)]
    tier: Option<u8>,
    #[serde(borrow)]
    created_at: Cow<'a, str>,
    #[serde(borrow)]
    deadline: Cow<'a, str>,
    level: Level,
    #[serde(default)]
    score: i32,
    #[serde(default)]
    reasons: Vec<RawReason>,
    #[serde(default)]
    victim: Option<RawVictim>,
    #[serde(default)]
    grid: Option<RawGrid>,
    assignee: RawParty,
    #[serde(default)]
    also_notify: Vec<RawParty>,
    #[serde(default)]
    script: String,
}

#[derive(Deserialize)]
struct RawReason {
    reason: String,
}

#[derive(Deserialize)]
struct RawVictim {
    number: String,
}

#[derive(Deserialize, Default)]
struct RawGrid {
    #[serde(default)]
    grid_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    station_id: Option<String>,
}

#[derive(Deserialize)]
struct RawParty {
    id: String,
}

fn millis(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The reach figures of one period: its start, and the aggregation of the tasks created
/// since.
struct Period {
    from_ms: i64,
    agg: Aggregator,
}

impl Period {
    fn new(from_ms: i64) -> Period {
        Period {
            from_ms,
            agg: Aggregator::new(Window {
                from_ms: Some(from_ms),
                to_ms: None,
            }),
        }
    }
}

/// Midnight and the 1st of the month, Beijing time, before `now_ms`.
fn period_starts(now_ms: i64) -> (i64, i64) {
    let tz = chrono::FixedOffset::east_opt(BEIJING_S).expect("a valid offset");
    let now = tz
        .timestamp_millis_opt(now_ms)
        .single()
        .expect("a valid time");
    let day = now.date_naive().and_hms_opt(0, 0, 0).expect("midnight");
    let month = day.with_day(1).expect("the 1st");
    let ms = |t: chrono::NaiveDateTime| {
        tz.from_local_datetime(&t)
            .single()
            .expect("no DST in Beijing")
            .timestamp_millis()
    };
    (ms(day), ms(month))
}

/// The figures of an area today and this month.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub today: Row,
    pub month: Row,
}

pub struct Board {
    tasks: HashMap<TaskId, Entry>,
    /// An upgraded task or an escalation id → the task that carries the story on.
    next: HashMap<TaskId, TaskId>,
    deadlines: BinaryHeap<Reverse<(i64, TaskId)>>,
    today: Period,
    month: Period,
    /// Station id → district code, for the figures.
    districts: HashMap<String, String>,
    now_ms: i64,
}

impl Board {
    pub fn new(now_ms: i64, districts: HashMap<String, String>) -> Board {
        let (day, month) = period_starts(now_ms);
        Board {
            tasks: HashMap::new(),
            next: HashMap::new(),
            deadlines: BinaryHeap::new(),
            today: Period::new(day),
            month: Period::new(month),
            districts,
            now_ms,
        }
    }

    /// Station id → district code, after a reload changed the stations.
    pub fn set_districts(&mut self, districts: HashMap<String, String>) {
        self.districts = districts;
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn get(&self, id: TaskId) -> Option<&Entry> {
        self.tasks.get(&id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.tasks.values()
    }

    /// The task that carries `id`'s story now (itself, unless upgraded or an escalation).
    fn head(&self, mut id: TaskId) -> TaskId {
        // Bounded: a story has a handful of upgrades and two escalations.
        for _ in 0..64 {
            match self.next.get(&id) {
                Some(&n) => id = n,
                None => break,
            }
        }
        id
    }

    /// A record of the task topic; returns the tasks whose view changed. Records the board
    /// cannot read are skipped (the lifecycle dead-letters bad feedback; bad tasks cannot
    /// come from the processor).
    pub fn add_task_record(&mut self, bytes: &[u8]) -> Vec<TaskId> {
        if let Ok(r) = TaskTopicRecord::decode(bytes) {
            match r {
                TaskTopicRecord::Task(t) => {
                    self.today.agg.add_task(t.clone());
                    self.month.agg.add_task(t);
                }
                TaskTopicRecord::Escalation(e) => {
                    self.today.agg.add_escalation(e);
                    self.month.agg.add_escalation(e);
                }
            }
        }
        let Ok(raw) = serde_json::from_slice::<RawTask<'_>>(bytes) else {
            return Vec::new();
        };
        let (Some(created_at), Some(deadline)) = (millis(&raw.created_at), millis(&raw.deadline))
        else {
            return Vec::new();
        };
        if raw.kind == "escalation" {
            let Some(of) = raw.escalation_of else {
                return Vec::new();
            };
            self.next.insert(raw.task_id, of);
            let head = self.head(of);
            let Some(e) = self.tasks.get_mut(&head) else {
                return Vec::new();
            };
            let tier = raw.tier.unwrap_or(1);
            if tier <= e.view.escalated_tier {
                return Vec::new();
            }
            e.view.escalated_tier = tier;
            e.escalated_to.push(raw.assignee.id);
            return vec![head];
        }
        if self.tasks.contains_key(&raw.task_id) {
            return Vec::new(); // a redelivery
        }
        let mut changed = vec![raw.task_id];
        if let Some(old) = raw.upgrade_of {
            self.next.insert(old, raw.task_id);
            if let Some(e) = self.tasks.get_mut(&old) {
                e.view.state = State::Upgraded;
                e.view.overdue = false;
                e.closed_at = Some(created_at);
                changed.push(old);
            }
        }
        let grid = raw.grid.unwrap_or_default();
        let number = raw.victim.map(|v| v.number).unwrap_or_default();
        let entry = Entry {
            view: TaskView {
                task_id: raw.task_id,
                kind: if raw.kind == "upgrade" {
                    "upgrade"
                } else {
                    "new"
                },
                level: raw.level,
                score: raw.score,
                created_at,
                deadline,
                grid_id: grid.grid_id,
                grid_name: grid.name,
                station_id: grid.station_id,
                assignee_id: raw.assignee.id,
                victim: mask_phone(&number),
                state: State::Open,
                outcome: None,
                overdue: deadline < self.now_ms,
                escalated_tier: 0,
            },
            victim_number: number,
            script: raw.script,
            reasons: raw.reasons.into_iter().map(|r| r.reason).collect(),
            also_notify: raw.also_notify.into_iter().map(|p| p.id).collect(),
            escalated_to: Vec::new(),
            feedback: Vec::new(),
            closed_at: None,
        };
        self.deadlines.push(Reverse((deadline, raw.task_id)));
        self.tasks.insert(raw.task_id, entry);
        changed
    }

    /// A record of the feedback topic; returns the task whose view changed, if any.
    pub fn add_feedback_record(&mut self, bytes: &[u8]) -> Option<TaskId> {
        let fb = Feedback::decode(bytes).ok()?;
        let record = FeedbackRecord::from(&fb);
        self.today.agg.add_feedback(record);
        self.month.agg.add_feedback(record);
        let head = self.head(fb.task_id);
        let e = self.tasks.get_mut(&head)?;
        let reason = match fb.outcome {
            Outcome::NotReached(r) => Some(r.as_str()),
            _ => None,
        };
        let view = FeedbackView {
            at: fb.at_ms,
            actor_id: fb.actor_id.into_owned(),
            outcome: fb.outcome.as_str(),
            reason,
            note: fb.note.map(Cow::into_owned),
        };
        if e.feedback.len() == FEEDBACK_KEPT {
            e.feedback.remove(0);
        }
        e.feedback.push(view);
        if !e.is_open() {
            return Some(head);
        }
        match fb.outcome {
            Outcome::Acknowledged => {
                if e.view.state == State::Open {
                    e.view.state = State::Acknowledged;
                }
            }
            Outcome::NotReached(_) => e.view.state = State::NotReached,
            closing => {
                e.view.state = State::Closed;
                e.view.outcome = Some(closing.as_str());
                e.view.overdue = false;
                e.closed_at = Some(fb.at_ms);
            }
        }
        Some(head)
    }

    /// Moves the clock: tasks whose deadline passed turn overdue, closed tasks past their
    /// time leave, and the figures start a new day or month. Returns the tasks that changed.
    pub fn tick(&mut self, now_ms: i64) -> Vec<TaskId> {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        let mut changed = Vec::new();
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if deadline >= now {
                break;
            }
            self.deadlines.pop();
            if let Some(e) = self.tasks.get_mut(&id) {
                if e.is_open() && !e.view.overdue {
                    e.view.overdue = true;
                    changed.push(id);
                }
            }
        }
        let before = self.tasks.len();
        self.tasks
            .retain(|_, e| e.closed_at.is_none_or(|c| now - c < CLOSED_KEPT_MS));
        if self.tasks.len() != before {
            let tasks = &self.tasks;
            self.next.retain(|_, to| tasks.contains_key(to));
        }
        let (day, month) = period_starts(now);
        if day != self.today.from_ms {
            self.today = Period::new(day);
        }
        if month != self.month.from_ms {
            self.month = Period::new(month);
        }
        changed
    }

    /// The figures of `scope`'s area (an officer sees its station's), today and this month.
    pub fn figures(&self, scope: &Scope, officer_station: Option<&str>) -> Figures {
        let pick = |r: Report| -> Row {
            let key = match scope {
                Scope::Centre => None,
                Scope::Station(s) => Some(s.as_str()),
                Scope::Officer(_) => officer_station,
            };
            match key {
                None => r.total,
                Some(k) => r
                    .rows
                    .into_iter()
                    .find(|row| row.key == k)
                    .unwrap_or_else(|| empty_row(k)),
            }
        };
        Figures {
            today: pick(
                self.today
                    .agg
                    .report(Dimension::Station, self.now_ms, &self.districts),
            ),
            month: pick(
                self.month
                    .agg
                    .report(Dimension::Station, self.now_ms, &self.districts),
            ),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

fn empty_row(key: &str) -> Row {
    Row {
        key: key.to_string(),
        name: None,
        tasks: 0,
        people: 0,
        reached: 0,
        reach_rate: None,
        median_first_contact_s: None,
        p90_first_contact_s: None,
        overdue: 0,
        escalated: 0,
        false_alarms: 0,
        losses_cny: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_480_200_000; // 2026-11-24T00:30:00Z
    const MIN: i64 = 60_000;

    fn rfc(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    fn id(n: u8) -> TaskId {
        TaskId([n; 16])
    }

    fn task(n: u8, station: &str, officer: &str, upgrade_of: Option<u8>) -> Vec<u8> {
        let upgrade = upgrade_of
            .map(|o| format!(r#""upgrade_of":"{}","#, id(o)))
            .unwrap_or_default();
        format!(
            r#"{{"task_id":"{}","event_id":"e{n}","kind":"{}",{upgrade}"created_at":"{}","occurred_at":"{}","deadline":"{}","level":"high","score":60,"reasons":[{{"rule_id":"r","reason":"called 34 people","score":60}}],"victim":{{"number":"13800138{n:03}","location":null}},"grid":{{"match":"inside","grid_id":"{station}-001","name":"cell","station_id":"{station}","station_name":"s"}},"assignee":{{"kind":"officer","id":"{officer}"}},"also_notify":[{{"kind":"officer","id":"{officer}-gw"}}],"script":"hang up","rules_version":"v"}}"#,
            id(n),
            if upgrade_of.is_some() { "upgrade" } else { "new" },
            rfc(T0),
            rfc(T0),
            rfc(T0 + 10 * MIN),
        )
        .into_bytes()
    }

    fn feedback(n: u8, actor: &str, outcome: &str) -> Vec<u8> {
        format!(
            r#"{{"task_id":"{}","actor_id":"{actor}","at":{},"outcome":"{outcome}"}}"#,
            id(n),
            T0 + MIN
        )
        .into_bytes()
    }

    fn board() -> Board {
        Board::new(T0, HashMap::new())
    }

    #[test]
    fn feedback_moves_a_task_through_its_states_and_keeps_the_number_out_of_the_view() {
        let mut b = board();
        assert_eq!(
            b.add_task_record(&task(1, "120101-01", "po-1", None)),
            [id(1)]
        );
        let e = b.get(id(1)).unwrap();
        assert_eq!(e.view.victim, "138****8001");
        assert_eq!(e.victim_number, "13800138001");
        assert_eq!(e.reasons, ["called 34 people"]);
        assert!(!serde_json::to_string(&e.view)
            .unwrap()
            .contains("13800138001"));
        assert_eq!(
            b.add_feedback_record(&feedback(1, "po-1", "acknowledged")),
            Some(id(1))
        );
        assert_eq!(b.get(id(1)).unwrap().view.state, State::Acknowledged);
        b.add_feedback_record(&feedback(1, "po-1", "reached_by_phone"));
        let v = &b.get(id(1)).unwrap().view;
        assert_eq!(
            (v.state, v.outcome),
            (State::Closed, Some("reached_by_phone"))
        );
        // A later report does not reopen it.
        b.add_feedback_record(&feedback(1, "po-1", "not_reached\",\"reason\":\"no_answer"));
        assert_eq!(b.get(id(1)).unwrap().view.state, State::Closed);
        assert_eq!(b.get(id(1)).unwrap().feedback.len(), 3);
    }

    #[test]
    fn an_upgrade_carries_the_story_and_escalations_raise_the_tier() {
        let mut b = board();
        b.add_task_record(&task(1, "120101-01", "po-1", None));
        let changed = b.add_task_record(&task(2, "120101-01", "po-1", Some(1)));
        assert_eq!(changed, [id(2), id(1)]);
        assert_eq!(b.get(id(1)).unwrap().view.state, State::Upgraded);
        // Feedback naming the old id reaches the upgrade.
        assert_eq!(
            b.add_feedback_record(&feedback(1, "po-1", "acknowledged")),
            Some(id(2))
        );
        let esc = format!(
            r#"{{"task_id":"{}","kind":"escalation","escalation_of":"{}","tier":1,"created_at":"{}","deadline":"{}","level":"high","assignee":{{"kind":"duty_desk","id":"desk-120101-01"}}}}"#,
            id(9),
            id(2),
            rfc(T0 + 10 * MIN),
            rfc(T0 + 10 * MIN)
        );
        assert_eq!(b.add_task_record(esc.as_bytes()), [id(2)]);
        let e = b.get(id(2)).unwrap();
        assert_eq!(
            (e.view.escalated_tier, e.escalated_to.as_slice()),
            (1, &["desk-120101-01".to_string()][..])
        );
        // A desk's report on the escalation id closes the story.
        b.add_feedback_record(&feedback(9, "desk-120101-01", "false_alarm"));
        assert_eq!(b.get(id(2)).unwrap().view.outcome, Some("false_alarm"));
    }

    #[test]
    fn deadlines_turn_open_tasks_overdue_and_closed_ones_leave_after_a_day() {
        let mut b = board();
        b.add_task_record(&task(1, "120101-01", "po-1", None));
        b.add_task_record(&task(2, "120101-01", "po-1", None));
        b.add_feedback_record(&feedback(2, "po-1", "reached_in_person"));
        assert!(b.tick(T0 + 5 * MIN).is_empty());
        assert_eq!(b.tick(T0 + 11 * MIN), [id(1)]);
        assert!(b.get(id(1)).unwrap().view.overdue);
        assert!(!b.get(id(2)).unwrap().view.overdue);
        b.tick(T0 + MIN + CLOSED_KEPT_MS + 1);
        assert!(b.get(id(2)).is_none());
        assert!(b.get(id(1)).is_some(), "open tasks stay");
    }

    #[test]
    fn scopes_see_their_area_and_figures_count_it() {
        let mut b = board();
        b.add_task_record(&task(1, "120101-01", "po-1", None));
        b.add_task_record(&task(2, "120102-01", "po-2", None));
        b.add_feedback_record(&feedback(1, "po-1", "reached_in_person"));
        let a = Scope::Station("120101-01".into());
        let seen: Vec<_> = b
            .entries()
            .filter(|e| e.visible_to(&a))
            .map(|e| e.view.task_id)
            .collect();
        assert_eq!(seen, [id(1)]);
        assert!(b
            .get(id(1))
            .unwrap()
            .visible_to(&Scope::Officer("po-1-gw".into())));
        assert!(!b
            .get(id(2))
            .unwrap()
            .visible_to(&Scope::Officer("po-1".into())));
        let f = b.figures(&a, None);
        assert_eq!((f.today.tasks, f.today.reached, f.month.tasks), (1, 1, 1));
        let all = b.figures(&Scope::Centre, None);
        assert_eq!((all.today.tasks, all.today.reached), (2, 1));
        let none = b.figures(&Scope::Station("120103-01".into()), None);
        assert_eq!(none.today.tasks, 0);
    }

    #[test]
    fn the_periods_start_at_beijing_midnight_and_on_the_first() {
        // 2026-11-24T00:30Z is 08:30 in Beijing on the 24th.
        let (day, month) = period_starts(T0);
        assert_eq!(rfc(day), "2026-11-23T16:00:00.000Z");
        assert_eq!(rfc(month), "2026-10-31T16:00:00.000Z");
    }
}
