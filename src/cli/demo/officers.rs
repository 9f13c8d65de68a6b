//! The demo's simulated officers and desks: they read the task topic like any officer's app,
//! decide what to do with each task ([`super::plan`]) and write real feedback records to the
//! real feedback topic, keyed by the task's assignee id, at the planned times.
//!
//! Their consumer assigns every task partition itself at the topic's end (no group, nothing
//! committed), so the service's groups never see it and an existing topic's old tasks are
//! left alone. One thread polls the task topic and writes what is due, in time order; one
//! producer with the service's settings (and so its partitioner) keeps each assignee's
//! records in order.
//!
//! The lifecycle dead-letters a report on a closed task, so the simulation keeps one story
//! per chain of tasks (a task, its upgrades, its escalations) and lets at most one actor
//! close it: a desk answers an escalation only when no officer is going to close the task.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::plan::{desk_plan, officer_plan, EscalationView, Plan, Step, TaskView};
use crate::config::Config;
use crate::kafka::{consumer_config, producer_config};
use crate::task::TaskId;

/// Chains of tasks remembered, oldest forgotten first: enough for any demo's upgrades and
/// escalations (a task's story lasts its SLA plus two escalation intervals).
const MAX_STORIES: usize = 1_000_000;

/// What the officers have done, for the demo's line and totals.
#[derive(Debug, Default)]
pub struct OfficerCounters {
    /// Feedback records the broker acknowledged.
    pub written: AtomicU64,
    pub failed: AtomicU64,
    /// Task records the officers could not read (none are expected: they are ours).
    pub unreadable: AtomicU64,
}

pub struct Officers {
    pub counters: Arc<OfficerCounters>,
    thread: JoinHandle<()>,
}

impl Officers {
    /// Waits for the officers to stop (after the shutdown token is cancelled) and to deliver
    /// what they already sent.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Starts the officers on the task topic's current end. The feedback topic must exist.
pub fn spawn(
    config: &Config,
    bootstrap: &str,
    seed: u64,
    shutdown: CancellationToken,
) -> anyhow::Result<Officers> {
    let k = &config.kafka;
    let mut cc = consumer_config(k, bootstrap);
    // Never joined (partitions are assigned by hand) nor committed: a name that says whose.
    cc.set("group.id", format!("{}.demo-officers", k.group_id))
        .set("statistics.interval.ms", "0");
    let consumer: BaseConsumer = cc.create().context("officers' consumer")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(&k.task_topic), timeout)
        .context("officers: task topic metadata")?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    anyhow::ensure!(partitions > 0, "officers: no task topic `{}`", k.task_topic);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(&k.task_topic, p, timeout)
            .context("officers: task topic offsets")?;
        tpl.add_partition_offset(&k.task_topic, p, Offset::Offset(high))
            .expect("a valid offset");
    }
    consumer.assign(&tpl).context("officers: assigning")?;
    let counters = Arc::new(OfficerCounters::default());
    let producer: ThreadedProducer<Delivered> = producer_config(k, bootstrap)
        .create_with_context(Delivered(counters.clone()))
        .context("officers' producer")?;
    let sim = Simulation {
        seed,
        second_after: config.lifecycle.second_escalation_after,
        stories: FxHashMap::default(),
        story_age: VecDeque::new(),
        story_state: FxHashMap::default(),
        next_story: 0,
        due: BTreeMap::new(),
        next_seq: 0,
    };
    let topic = k.feedback_topic.clone();
    let c = counters.clone();
    let thread = std::thread::Builder::new()
        .name("demo-officers".into())
        .spawn(move || run(consumer, producer, topic, sim, c, shutdown))
        .context("officers' thread")?;
    Ok(Officers { counters, thread })
}

struct Delivered(Arc<OfficerCounters>);

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.written.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                warn!(error = %e, "officers: feedback not delivered");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// A feedback record waiting for its time.
struct Pending {
    task_id: TaskId,
    key: String,
    step: Step,
}

/// What is planned for one chain of tasks.
#[derive(Debug, Default, Clone, Copy)]
struct Story {
    /// Somebody is going to close it.
    closing: bool,
    /// When its last planned report is due.
    last_step_ms: i64,
}

/// The officers' memory: stories by task id, and what is due when.
struct Simulation {
    seed: u64,
    second_after: Duration,
    /// Task, upgrade and escalation ids → their chain.
    stories: FxHashMap<TaskId, u64>,
    story_age: VecDeque<TaskId>,
    story_state: FxHashMap<u64, Story>,
    next_story: u64,
    /// (due ms, sequence): the sequence keeps a plan's steps in order when they are all late.
    due: BTreeMap<(i64, u64), Pending>,
    next_seq: u64,
}

impl Simulation {
    /// Plans the answer to one record of the task topic, seen at `now_ms`.
    fn on_record(&mut self, record: Record, now_ms: i64) {
        match record {
            Record::Task(task) => {
                if self.stories.contains_key(&task.task_id) {
                    return; // redelivered
                }
                // An upgrade carries on its task's story: whatever is planned reaches it by
                // the old id. Planning again could report on a task that story closes.
                if let Some(story) = task.upgrade_of.and_then(|p| self.stories.get(&p).copied()) {
                    self.remember(task.task_id, story);
                    return;
                }
                let story = self.next_story;
                self.next_story += 1;
                self.remember(task.task_id, story);
                let plan = officer_plan(&mut self.rng_for(task.task_id), &task);
                self.schedule(story, plan);
            }
            Record::Escalation(esc) => {
                if self.stories.contains_key(&esc.task_id) {
                    return;
                }
                let Some(story) = self.stories.get(&esc.escalation_of).copied() else {
                    return; // a task from before the demo's officers started
                };
                self.remember(esc.task_id, story);
                // A forgotten story counts as closing: better a desk that stays silent than
                // a report on a closed task.
                let Some(state) = self.story_state.get(&story).copied() else {
                    return;
                };
                if state.closing {
                    return;
                }
                // An upgrade can bring the deadline forward, past reports the officers
                // still have planned: the desk acts after them, or its close would get
                // them dead-lettered as `closed`.
                let start = now_ms.max(state.last_step_ms + 1_000);
                let plan = desk_plan(
                    &mut self.rng_for(esc.task_id),
                    &esc,
                    start,
                    self.second_after,
                );
                self.schedule(story, plan);
            }
        }
    }

    /// The RNG of one task: the decision depends on the seed and the task, not on the order
    /// records arrive in.
    fn rng_for(&self, task_id: TaskId) -> SmallRng {
        SmallRng::seed_from_u64(self.seed ^ xxhash_rust::xxh3::xxh3_64(&task_id.0))
    }

    fn remember(&mut self, task_id: TaskId, story: u64) {
        if self.story_age.len() >= MAX_STORIES {
            if let Some(story) = self
                .story_age
                .pop_front()
                .and_then(|old| self.stories.remove(&old))
            {
                // Its later ids then find no state, and the desks leave them alone.
                self.story_state.remove(&story);
            }
        }
        self.stories.insert(task_id, story);
        self.story_age.push_back(task_id);
    }

    fn schedule(&mut self, story: u64, plan: Plan) {
        let state = self.story_state.entry(story).or_default();
        state.closing |= plan.closes();
        if let Some(last) = plan.steps.last() {
            state.last_step_ms = state.last_step_ms.max(last.at_ms);
        }
        for step in plan.steps {
            self.next_seq += 1;
            self.due.insert(
                (step.at_ms, self.next_seq),
                Pending {
                    task_id: plan.task_id,
                    key: plan.key.clone(),
                    step,
                },
            );
        }
    }

    fn next_due(&self) -> Option<i64> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    fn pop_due(&mut self, now_ms: i64) -> Option<Pending> {
        let (&(at, seq), _) = self.due.iter().next()?;
        (at <= now_ms).then(|| self.due.remove(&(at, seq)).expect("present"))
    }
}

fn run(
    consumer: BaseConsumer,
    producer: ThreadedProducer<Delivered>,
    topic: String,
    mut sim: Simulation,
    counters: Arc<OfficerCounters>,
    shutdown: CancellationToken,
) {
    'outer: while !shutdown.is_cancelled() {
        let now = crate::cli::now_ms();
        while let Some(p) = sim.pop_due(now) {
            let payload = p.step.encode(p.task_id, now.max(p.step.at_ms));
            let mut record = BaseRecord::to(&topic).key(p.key.as_str()).payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        if shutdown.is_cancelled() {
                            break 'outer;
                        }
                        record = r;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err((e, _)) => {
                        warn!(error = %e, "officers: feedback not sent");
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
        let wait = sim
            .next_due()
            .map_or(100, |due| (due - crate::cli::now_ms()).clamp(0, 100));
        let mut timeout = Duration::from_millis(wait as u64);
        // Drain what has arrived, then go back to what is due.
        for _ in 0..1_000 {
            let Some(message) = consumer.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "officers: reading the task topic");
                    break;
                }
            };
            match message.payload().map(Record::decode) {
                Some(Ok(record)) => sim.on_record(record, crate::cli::now_ms()),
                _ => {
                    counters.unreadable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if producer.flush(Duration::from_secs(5)).is_err() {
        warn!("officers: feedback still undelivered at shutdown");
    }
}

/// A record on the task topic, as far as officers read it: never the victim.
enum Record {
    Task(TaskView),
    Escalation(EscalationView),
}

#[derive(Deserialize)]
struct RawRecord {
    task_id: TaskId,
    kind: String,
    #[serde(default)]
    upgrade_of: Option<TaskId>,
    #[serde(default)]
    escalation_of: Option<TaskId>,
    #[serde(default)]
    tier: Option<u8>,
    created_at: String,
    deadline: String,
    assignee: RawParty,
    #[serde(default)]
    also_notify: Vec<RawParty>,
    #[serde(default)]
    original_assignee: Option<String>,
}

#[derive(Deserialize)]
struct RawParty {
    id: String,
}

impl Record {
    fn decode(bytes: &[u8]) -> Result<Record, ()> {
        let raw: RawRecord = serde_json::from_slice(bytes).map_err(|_| ())?;
        let ms = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|_| ())
        };
        if raw.kind == "escalation" {
            return Ok(Record::Escalation(EscalationView {
                task_id: raw.task_id,
                escalation_of: raw.escalation_of.ok_or(())?,
                tier: raw.tier.ok_or(())?,
                desk: raw.assignee.id,
                original_assignee: raw.original_assignee.ok_or(())?,
            }));
        }
        Ok(Record::Task(TaskView {
            task_id: raw.task_id,
            upgrade_of: raw.upgrade_of,
            created_at_ms: ms(&raw.created_at)?,
            deadline_ms: ms(&raw.deadline)?,
            assignee: raw.assignee.id,
            also_notify: raw.also_notify.into_iter().map(|p| p.id).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Escalation;

    fn sim() -> Simulation {
        Simulation {
            seed: 3,
            second_after: Duration::from_secs(72),
            stories: FxHashMap::default(),
            story_age: VecDeque::new(),
            story_state: FxHashMap::default(),
            next_story: 0,
            due: BTreeMap::new(),
            next_seq: 0,
        }
    }

    fn task(i: u32, upgrade_of: Option<TaskId>) -> TaskView {
        TaskView {
            task_id: TaskId::for_event(&format!("ev-{i}"), "13912345678"),
            upgrade_of,
            created_at_ms: 1_000_000,
            deadline_ms: 1_012_000,
            assignee: "po-1".into(),
            also_notify: vec![],
        }
    }

    fn escalation_of(t: &TaskView, tier: u8) -> EscalationView {
        EscalationView {
            task_id: Escalation::id_for(t.task_id, tier),
            escalation_of: t.task_id,
            tier,
            desk: "desk-1".into(),
            original_assignee: t.assignee.clone(),
        }
    }

    fn drain(sim: &mut Simulation) -> Vec<Pending> {
        std::iter::from_fn(|| sim.pop_due(i64::MAX)).collect()
    }

    #[test]
    fn desks_answer_only_escalations_of_tasks_nobody_is_closing() {
        let mut sim = sim();
        let (mut desk_records, mut skipped) = (0, 0);
        for i in 0..400 {
            let t = task(i, None);
            sim.on_record(Record::Task(t.clone()), 1_000_000);
            let officers_close = sim.story_state[&sim.stories[&t.task_id]].closing;
            drain(&mut sim);
            sim.on_record(Record::Escalation(escalation_of(&t, 1)), 1_013_000);
            let desk = drain(&mut sim);
            if officers_close {
                assert!(desk.is_empty());
                skipped += 1;
            }
            for p in &desk {
                assert_eq!(p.key, "po-1");
                assert_eq!(p.step.actor, "desk-1");
                assert_eq!(p.task_id, Escalation::id_for(t.task_id, 1));
            }
            desk_records += desk.len();
        }
        assert!(
            skipped > 250 && desk_records > 0,
            "{skipped} {desk_records}"
        );
    }

    #[test]
    fn a_desk_acts_after_the_reports_the_officers_still_have_planned() {
        let mut sim = sim();
        let mut checked = 0;
        for i in 0..400 {
            let t = task(i, None);
            sim.on_record(Record::Task(t.clone()), 1_000_000);
            let officers = drain(&mut sim);
            if officers.is_empty() || officers.iter().any(|p| p.step.outcome.is_closing()) {
                continue;
            }
            let last = officers.iter().map(|p| p.step.at_ms).max().unwrap();
            // Escalated early, as when an upgrade brought the deadline forward.
            sim.on_record(Record::Escalation(escalation_of(&t, 1)), 1_001_000);
            for p in drain(&mut sim) {
                assert!(p.step.at_ms > last, "{} <= {last}", p.step.at_ms);
                checked += 1;
            }
        }
        assert!(checked > 0);
    }

    #[test]
    fn an_upgrade_carries_on_its_story_and_a_redelivery_changes_nothing() {
        let mut sim = sim();
        let t = task(1, None);
        sim.on_record(Record::Task(t.clone()), 1_000_000);
        let planned = sim.due.len();
        sim.on_record(Record::Task(t.clone()), 1_000_001);
        sim.on_record(Record::Task(task(2, Some(t.task_id))), 1_000_002);
        assert_eq!(sim.due.len(), planned);
        assert_eq!(sim.stories[&t.task_id], sim.stories[&task(2, None).task_id]);
    }

    #[test]
    fn late_steps_come_out_in_plan_order() {
        let mut sim = sim();
        for i in 0..50 {
            sim.on_record(Record::Task(task(i, None)), 1_000_000);
        }
        let mut last: FxHashMap<TaskId, i64> = FxHashMap::default();
        for p in drain(&mut sim) {
            let prev = last.insert(p.task_id, p.step.at_ms);
            assert!(prev.is_none_or(|t| t < p.step.at_ms));
        }
    }

    #[test]
    fn reads_tasks_and_escalations_as_the_service_writes_them() {
        let task = br#"{"task_id":"1c29ae8e748e24e88057003578a1188f","event_id":"e","kind":"upgrade","upgrade_of":"2c29ae8e748e24e88057003578a1188f","created_at":"2026-11-24T08:45:00.000Z","occurred_at":"2026-11-24T08:44:59.000Z","deadline":"2026-11-24T08:55:00.000Z","level":"critical","victim":{"number":"13912345678"},"assignee":{"kind":"officer","id":"po-1","name":"n","role":"community_officer","phone":"13000000000"},"also_notify":[{"kind":"officer","id":"aux-1"}]}"#;
        let Ok(Record::Task(t)) = Record::decode(task) else {
            panic!("a task")
        };
        assert_eq!(t.deadline_ms - t.created_at_ms, 600_000);
        assert_eq!(t.also_notify, ["aux-1"]);
        assert!(t.upgrade_of.is_some());
        let esc = Escalation {
            escalation_id: Escalation::id_for(t.task_id, 1),
            of: t.task_id,
            tier: 1,
            to_desk: "desk-1".into(),
            created_at_ms: t.created_at_ms,
            deadline_ms: t.deadline_ms,
            overdue_since_ms: t.deadline_ms,
            not_responded: vec!["po-1".into()],
            acknowledged_at_ms: None,
            attempts: 0,
            original_key: "po-1".into(),
            station_id: None,
            level: crate::rules::Level::Critical,
        };
        let mut bytes = Vec::new();
        esc.encode_into(&mut bytes);
        let Ok(Record::Escalation(e)) = Record::decode(&bytes) else {
            panic!("an escalation")
        };
        assert_eq!(
            (
                e.escalation_of,
                e.tier,
                e.desk.as_str(),
                e.original_assignee.as_str()
            ),
            (t.task_id, 1, "desk-1", "po-1")
        );
    }
}
