//! Backtests: history replayed through a baseline and a candidate rule set, what the
//! candidate would have done differently, and, with the truth about each event, how right
//! each rule set is (precision and recall per rule and per level).
//!
//! Each rule set runs in a pipeline of its own over the events in the order given, as one
//! uninterrupted instance would see them: windows, suppression and upgrades included.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::lifecycle::Outcome as FeedbackOutcome;
use crate::pipeline::{Action, Outcome, Pipeline};
use crate::report::record::{EscalationRecord, FeedbackRecord, TaskRecord};
use crate::rules::{Level, RuleSet};
use crate::task::TaskId;

/// What a rule set made of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub level: Level,
    /// Indexes into the set's rules of those that fired.
    pub fired: Vec<u16>,
    /// Whether the event became a task (new or upgrade); a suppressed repeat did not.
    pub task: bool,
    /// The person's key (callee hash), for counting people.
    pub callee: u64,
}

impl Verdict {
    /// What `outcome` says of the event; `None` when it was rejected. `callee` is the
    /// person's key, for counting people (0 when not counted).
    pub fn of(outcome: &Outcome, callee: u64) -> Option<Verdict> {
        match outcome {
            Outcome::Rejected(_) => None,
            Outcome::Scored(s) => Some(Verdict {
                level: s.level,
                fired: s.fired.to_vec(),
                task: matches!(s.action, Action::Task(_)),
                callee,
            }),
        }
    }
}

/// Runs `events` through `pipeline`; `None` for a record it rejects.
pub fn replay<'a>(
    pipeline: &Pipeline,
    events: impl IntoIterator<Item = &'a [u8]>,
    now_ms: i64,
) -> Vec<Option<Verdict>> {
    let mut buf = Vec::with_capacity(4096);
    events
        .into_iter()
        .map(|payload| {
            buf.clear();
            let callee = callee_of(payload);
            Verdict::of(&pipeline.process(payload, 0, now_ms, &mut buf), callee)
        })
        .collect()
}

fn callee_of(payload: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Callee<'a> {
        #[serde(borrow)]
        callee_number: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Callee<'_>>(payload)
        .ok()
        .and_then(|c| c.callee_number)
        .and_then(|n| {
            crate::phone::canonical(&n)
                .ok()
                .map(|c| crate::dispatch::callee_key(&c))
        })
        .unwrap_or(0)
}

/// Labels from the officers: the outcome each task was closed with, as the truth about the
/// events the tasks were made for. Reached (in person or by phone) and already defrauded
/// say the event was fraud; a false alarm says it was not. An upgrade or an escalation is
/// part of its task's story: the story's last closing outcome labels every event in it.
/// Events no task was made for, and tasks not closed, get no label: precision per rule is
/// over what officers saw, and recall only over the fraud the live rules found.
#[derive(Debug, Default)]
pub struct FeedbackLabels {
    event_of: HashMap<TaskId, String>,
    /// Upgrade → the task it upgraded, escalation → the task it escalated.
    parent: HashMap<TaskId, TaskId>,
    /// Task id named by feedback → (time, order read, fraud) of its latest closing outcome.
    closing: HashMap<TaskId, (i64, u64, bool)>,
    read: u64,
}

impl FeedbackLabels {
    pub fn add_task(&mut self, t: &TaskRecord) {
        if let Some(prev) = t.upgrade_of {
            self.parent.insert(t.task_id, prev);
        }
        if !t.event_id.is_empty() {
            self.event_of.insert(t.task_id, t.event_id.clone());
        }
    }

    pub fn add_escalation(&mut self, e: &EscalationRecord) {
        self.parent.insert(e.escalation_id, e.escalation_of);
    }

    pub fn add_feedback(&mut self, fb: &FeedbackRecord) {
        let fraud = match fb.outcome {
            FeedbackOutcome::ReachedInPerson
            | FeedbackOutcome::ReachedByPhone
            | FeedbackOutcome::AlreadyDefrauded { .. } => true,
            FeedbackOutcome::FalseAlarm => false,
            FeedbackOutcome::Acknowledged | FeedbackOutcome::NotReached(_) => return,
        };
        self.read += 1;
        let entry = (fb.at_ms, self.read, fraud);
        let latest = self.closing.entry(fb.task_id).or_insert(entry);
        if (entry.0, entry.1) > (latest.0, latest.1) {
            *latest = entry;
        }
    }

    /// The first task of the story `id` belongs to.
    fn root(&self, mut id: TaskId) -> TaskId {
        // Bounded: a cycle in bad records must not hang the backtest.
        for _ in 0..64 {
            match self.parent.get(&id) {
                Some(&p) => id = p,
                None => break,
            }
        }
        id
    }

    /// Event id → fraud or not, for the events of closed stories.
    pub fn labels(&self) -> HashMap<String, bool> {
        let mut by_story: HashMap<TaskId, (i64, u64, bool)> = HashMap::new();
        for (&id, &c) in &self.closing {
            let story = by_story.entry(self.root(id)).or_insert(c);
            if (c.0, c.1) > (story.0, story.1) {
                *story = c;
            }
        }
        self.event_of
            .iter()
            .filter_map(|(&id, event)| {
                by_story
                    .get(&self.root(id))
                    .map(|&(_, _, fraud)| (event.clone(), fraud))
            })
            .collect()
    }
}

/// One rule across the two sets.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RuleLine {
    pub id: String,
    /// Its score in the baseline and the candidate (`None`: absent or disabled there).
    pub score: [Option<i32>; 2],
    /// Events it fired on.
    pub fired: [u64; 2],
    /// Of those, labelled fraud (with labels).
    pub fraud: [u64; 2],
    /// Tasks the candidate adds where this rule's part in the score changed, tasks it
    /// removes, and tasks whose level changes.
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
}

/// Detection at one level: events scored at or above it.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LevelLine {
    pub level: &'static str,
    pub detected: [u64; 2],
    pub fraud: [u64; 2],
}

/// The comparison of a baseline and a candidate over the same events.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub events: u64,
    pub rejected: u64,
    /// Events labelled fraud (0 without labels), and of the labelled, how many labels
    /// matched no event.
    pub labelled: u64,
    pub fraud_events: u64,
    pub tasks: [u64; 2],
    /// Tasks made for fraud events.
    pub tasks_on_fraud: [u64; 2],
    /// People called by fraud, and of them, those reached by at least one task.
    pub fraud_people: u64,
    pub fraud_people_reached: [u64; 2],
    pub added: u64,
    pub removed: u64,
    pub level_up: u64,
    pub level_down: u64,
    /// Of those changes, the ones where every rule played the same part in both sets: they
    /// come from earlier events (a task the other set made covers this event, or this one
    /// upgrades it), so no rule line counts them.
    pub from_earlier_events: u64,
    pub rules: Vec<RuleLine>,
    pub levels: Vec<LevelLine>,
}

/// Compares the two replays of the same events. `labels` maps event ids to the truth;
/// `ids` are the events' ids in order (`None` for records without one).
pub fn compare(
    sets: [&RuleSet; 2],
    verdicts: [&[Option<Verdict>]; 2],
    ids: &[Option<String>],
    labels: Option<&HashMap<String, bool>>,
) -> Report {
    let mut c = Comparison::new(sets);
    for (n, id) in ids.iter().enumerate() {
        let truth = labels.and_then(|l| id.as_ref().and_then(|id| l.get(id)).copied());
        c.add([verdicts[0][n].as_ref(), verdicts[1][n].as_ref()], truth);
    }
    c.report()
}

/// The running comparison of two rule sets, one event at a time: what [`compare`] reports
/// for a replay, and what shadow rules report while the service runs.
pub struct Comparison {
    r: Report,
    /// Each set's rules by index → their line in `r.rules`.
    lines_of: [Vec<usize>; 2],
    scores: [Vec<i32>; 2],
    fraud_people: HashSet<u64>,
    reached: [HashSet<u64>; 2],
}

impl Comparison {
    pub fn new(sets: [&RuleSet; 2]) -> Comparison {
        // Rules by id across the sets, in baseline order, then the candidate's new ones.
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut lines: Vec<RuleLine> = Vec::new();
        let mut lines_of = [Vec::new(), Vec::new()];
        for (s, set) in sets.iter().enumerate() {
            for rule in set.rules() {
                let i = *index.entry(&rule.id).or_insert_with(|| {
                    lines.push(RuleLine {
                        id: rule.id.clone(),
                        ..RuleLine::default()
                    });
                    lines.len() - 1
                });
                lines[i].score[s] = rule.enabled.then_some(rule.score);
                lines_of[s].push(i);
            }
        }
        let levels = Level::ALL[1..]
            .iter()
            .map(|l| LevelLine {
                level: l.as_str(),
                ..LevelLine::default()
            })
            .collect();
        Comparison {
            r: Report {
                rules: lines,
                levels,
                ..Report::default()
            },
            lines_of,
            scores: sets.map(|set| set.rules().iter().map(|r| r.score).collect()),
            fraud_people: HashSet::new(),
            reached: [HashSet::new(), HashSet::new()],
        }
    }

    /// Adds one event: each set's verdict (`None`: rejected) and, when known, whether it
    /// was fraud.
    pub fn add(&mut self, pair: [Option<&Verdict>; 2], truth: Option<bool>) {
        let r = &mut self.r;
        r.events += 1;
        let (Some(b), Some(c)) = (pair[0], pair[1]) else {
            r.rejected += 1;
            return;
        };
        if truth.is_some() {
            r.labelled += 1;
        }
        let fraud = truth == Some(true);
        if fraud {
            r.fraud_events += 1;
            self.fraud_people.insert(b.callee);
        }
        for (s, v) in [b, c].into_iter().enumerate() {
            if v.task {
                r.tasks[s] += 1;
                if fraud {
                    r.tasks_on_fraud[s] += 1;
                    self.reached[s].insert(v.callee);
                }
            }
            for &rule in &v.fired {
                let line = &mut r.rules[self.lines_of[s][usize::from(rule)]];
                line.fired[s] += 1;
                line.fraud[s] += u64::from(fraud);
            }
            for l in &mut r.levels {
                if v.level >= level_named(l.level) {
                    l.detected[s] += 1;
                    l.fraud[s] += u64::from(fraud);
                }
            }
        }
        let change = match (b.task, c.task) {
            (false, true) => Change::Added,
            (true, false) => Change::Removed,
            (true, true) if b.level != c.level => Change::Level,
            _ => return,
        };
        match change {
            Change::Added => r.added += 1,
            Change::Removed => r.removed += 1,
            Change::Level if c.level > b.level => r.level_up += 1,
            Change::Level => r.level_down += 1,
        }
        // The rules whose part in this event's score differs between the sets.
        let part = |s: usize, v: &Verdict| -> HashMap<usize, i32> {
            v.fired
                .iter()
                .map(|&rule| {
                    let rule = usize::from(rule);
                    (self.lines_of[s][rule], self.scores[s][rule])
                })
                .collect()
        };
        let (pb, pc) = (part(0, b), part(1, c));
        if pb == pc {
            r.from_earlier_events += 1;
        }
        for (i, line) in r.rules.iter_mut().enumerate() {
            if pb.get(&i) != pc.get(&i) {
                match change {
                    Change::Added => line.added += 1,
                    Change::Removed => line.removed += 1,
                    Change::Level => line.changed += 1,
                }
            }
        }
    }

    /// The comparison so far.
    pub fn report(&self) -> Report {
        let mut r = self.r.clone();
        r.fraud_people = self.fraud_people.len() as u64;
        r.fraud_people_reached = [self.reached[0].len() as u64, self.reached[1].len() as u64];
        r
    }
}

#[derive(Clone, Copy)]
enum Change {
    Added,
    Removed,
    Level,
}

fn level_named(name: &str) -> Level {
    Level::ALL
        .into_iter()
        .find(|l| l.as_str() == name)
        .unwrap_or(Level::None)
}

/// `part / whole` as a share, `None` when `whole` is 0.
pub fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS: &str = "[levels]\nlow = 20\nmedium = 40\nhigh = 60\ncritical = 90\n";

    fn set(rules: &str) -> RuleSet {
        RuleSet::from_toml_str(&format!("{LEVELS}{rules}"), "t.toml").unwrap()
    }

    fn v(level: Level, fired: &[u16], task: bool, callee: u64) -> Option<Verdict> {
        Some(Verdict {
            level,
            fired: fired.to_vec(),
            task,
            callee,
        })
    }

    #[test]
    fn differences_and_precision_recall_are_counted_per_rule_and_level() {
        let rule = |id: &str, score: i32, enabled: bool| {
            format!(
                "[[rule]]\nid = \"{id}\"\ndescription = \"d\"\nreason = \"r\"\nscore = {score}\n\
                 enabled = {enabled}\nwhen = \"call_minutes >= 1\"\n"
            )
        };
        // Baseline: a (50), b (30). Candidate: a (50), b disabled, c (20) new.
        let base = set(&[rule("a", 50, true), rule("b", 30, true)].concat());
        let cand = set(&[
            rule("a", 50, true),
            rule("b", 30, false),
            rule("c", 20, true),
        ]
        .concat());
        // Candidate indexes: a 0, b 1 (never fires), c 2.
        let baseline = [
            v(Level::High, &[0, 1], true, 1), // e1: a+b = 80 high, a task
            v(Level::Low, &[1], false, 2),    // e2: b = 30 low, no task
            v(Level::Medium, &[0], true, 3),  // e3: a = 50
            None,                             // e4: rejected
            v(Level::None, &[], false, 1),    // e5: nothing
        ];
        let candidate = [
            v(Level::Medium, &[0], true, 1),  // e1: a = 50, level down
            v(Level::None, &[], false, 2),    // e2: b gone
            v(Level::High, &[0, 2], true, 3), // e3: a+c = 70, level up
            None,                             // e4
            v(Level::Low, &[2], false, 1),    // e5: c = 20
        ];
        let ids: Vec<Option<String>> = (1..=5).map(|i| Some(format!("e{i}"))).collect();
        // e1 and e3 are fraud, e2 and e5 are not; e4 has no label.
        let labels: HashMap<String, bool> =
            [("e1", true), ("e2", false), ("e3", true), ("e5", false)]
                .into_iter()
                .map(|(k, f)| (k.to_string(), f))
                .collect();
        let r = compare([&base, &cand], [&baseline, &candidate], &ids, Some(&labels));
        assert_eq!(
            (r.events, r.rejected, r.labelled, r.fraud_events),
            (5, 1, 4, 2)
        );
        assert_eq!(r.tasks, [2, 2]);
        assert_eq!(r.tasks_on_fraud, [2, 2]);
        assert_eq!((r.fraud_people, r.fraud_people_reached), (2, [2, 2]));
        assert_eq!((r.added, r.removed, r.level_up, r.level_down), (0, 0, 1, 1));
        assert_eq!(r.from_earlier_events, 0);
        let line = |id: &str| r.rules.iter().find(|l| l.id == id).unwrap().clone();
        let (a, b, c) = (line("a"), line("b"), line("c"));
        assert_eq!(
            (a.score, a.fired, a.fraud),
            ([Some(50), Some(50)], [2, 2], [2, 2])
        );
        assert_eq!(
            (b.score, b.fired, b.fraud),
            ([Some(30), None], [2, 0], [1, 0])
        );
        assert_eq!(
            (c.score, c.fired, c.fraud),
            ([None, Some(20)], [0, 2], [0, 1])
        );
        // e1's level changed through b, e3's through c; a's part never changed.
        assert_eq!((a.changed, b.changed, c.changed), (0, 1, 1));
        // Level >= medium: baseline e1, e3 (both fraud); candidate e1, e3.
        let medium = r.levels.iter().find(|l| l.level == "medium").unwrap();
        assert_eq!((medium.detected, medium.fraud), ([2, 2], [2, 2]));
        // Level >= low: baseline e1, e2, e3; candidate e1, e3, e5.
        let low = &r.levels[0];
        assert_eq!(
            (low.level, low.detected, low.fraud),
            ("low", [3, 3], [2, 2])
        );
        assert_eq!(share(1, 4), Some(0.25));
        assert_eq!(share(1, 0), None);
    }
}

#[cfg(test)]
mod feedback_label_tests {
    use super::*;
    use crate::lifecycle::NotReachedReason;

    fn id(n: u8) -> TaskId {
        TaskId([n; 16])
    }

    fn task(n: u8, event: &str, upgrade_of: Option<u8>) -> TaskRecord {
        TaskRecord {
            task_id: id(n),
            event_id: event.into(),
            upgrade_of: upgrade_of.map(id),
            created_at_ms: 0,
            deadline_ms: 0,
            level: Level::High,
            person: 0,
            victim_masked: String::new(),
            grid_id: None,
            grid_name: None,
            station_id: None,
            station_name: None,
            assignee_id: "po-1".into(),
            rule_ids: Vec::new(),
        }
    }

    fn fb(n: u8, at_ms: i64, outcome: FeedbackOutcome) -> FeedbackRecord {
        FeedbackRecord {
            task_id: id(n),
            at_ms,
            outcome,
            fingerprint: at_ms as u64,
        }
    }

    /// A story's last closing outcome labels every event in it, whichever of its ids the
    /// feedback names; outcomes that close nothing label nothing.
    #[test]
    fn closing_outcomes_label_the_events_of_their_task_story() {
        let mut l = FeedbackLabels::default();
        // Story 1: task 1, upgraded by 2, escalated as 9; a false alarm reported on the
        // escalation, then (later) reached on the upgrade.
        l.add_task(&task(1, "e1", None));
        l.add_task(&task(2, "e2", Some(1)));
        l.add_escalation(&EscalationRecord {
            escalation_id: id(9),
            escalation_of: id(1),
            tier: 1,
        });
        l.add_feedback(&fb(9, 100, FeedbackOutcome::FalseAlarm));
        l.add_feedback(&fb(2, 200, FeedbackOutcome::ReachedByPhone));
        // Story 3: closed as a false alarm after an attempt.
        l.add_task(&task(3, "e3", None));
        l.add_feedback(&fb(
            3,
            50,
            FeedbackOutcome::NotReached(NotReachedReason::NoAnswer),
        ));
        l.add_feedback(&fb(3, 60, FeedbackOutcome::FalseAlarm));
        // Story 4: already defrauded. Story 5: only acknowledged, so no label.
        l.add_task(&task(4, "e4", None));
        l.add_feedback(&fb(
            4,
            10,
            FeedbackOutcome::AlreadyDefrauded { loss_cny: None },
        ));
        l.add_task(&task(5, "e5", None));
        l.add_feedback(&fb(5, 10, FeedbackOutcome::Acknowledged));

        let labels = l.labels();
        let expected: HashMap<String, bool> =
            [("e1", true), ("e2", true), ("e3", false), ("e4", true)]
                .into_iter()
                .map(|(e, f)| (e.to_string(), f))
                .collect();
        assert_eq!(labels, expected);
    }
}
