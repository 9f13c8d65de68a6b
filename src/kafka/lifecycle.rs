//! The lifecycle on Kafka: task topic + feedback topic + a clock → [`Lifecycle`] per task
//! partition → escalations on the task topic, state on the lifecycle changelog, bad feedback
//! on the feedback dead-letter topic, at least once.
//!
//! One consumer, in group `<kafka.group_id>.lifecycle`, reads the task topic and the feedback
//! topic with the `range` assignor: both topics have the same partition count and feedback is
//! keyed like tasks (by the task's assignee id), so partition *i* of both lands on one member
//! and a task's feedback meets its task's state. Everything runs on one thread: the
//! lifecycle is cheap next to the pipeline.
//!
//! Each task partition's [`Lifecycle`] is restored from the same-numbered partition of the
//! compacted changelog ([`super::store`]) when the partition is assigned, before any of its
//! records is processed, and dropped when it goes. The latest record per task wins: the
//! lifecycle is idempotent under replay (feedback fingerprints, escalation tiers in the
//! state, deterministic escalation ids), so uncommitted input is simply delivered again.
//!
//! An input offset is committed only once every output it caused (changelog records, a dead
//! letter) is acknowledged. Feedback naming a task not yet seen on its partition is held
//! (bounded) for `lifecycle.unknown_task_grace` while the task partition catches up; the
//! partition's offsets are not committed past it. Escalations come from the clock, not from
//! input: the changes that record them are written only once the escalations themselves are
//! acknowledged, so a restored state never claims an escalation the broker does not have (a
//! crash in between sends it again, with the same id).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::dead_letter::DeadLetter;
use super::offsets::PartitionOffsets;
use super::store::{self, Changelog, Reader, StoreError};
use super::{consumer_config, producer_config, KafkaSetupError};
use crate::config::Config;
use crate::grid::{GridDerived, GridMap};
use crate::http::Health;
use crate::lifecycle::{Change, Feedback, Lifecycle, LifecycleSettings, TrackedTask, Transition};
use crate::metrics::Metrics;
use crate::task::TaskId;

/// Milliseconds since the Unix epoch, UTC. The service reads the wall clock; tests pass one
/// they move by hand.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// Feedback records held per partition while their tasks are awaited; past this the oldest
/// is decided at once.
pub const MAX_HELD: usize = 10_000;

/// How often the lifecycle's clock moves when nothing is due sooner.
const TICK: Duration = Duration::from_secs(1);
/// Shortest time between two ticks, however much is due: a tick that escalates waits for the
/// broker to acknowledge its escalations (one flush of the producer), and ticking on every
/// poll while deadlines pass every few milliseconds held the consumer to a few dozen records
/// a second.
const MIN_TICK_GAP: Duration = Duration::from_millis(250);

const WHAT: &str = "task-lifecycle state";

/// The consumer group of the lifecycle: its own, beside the processor's, because it reads
/// other topics.
pub fn group_id(processor_group: &str) -> String {
    format!("{processor_group}.lifecycle")
}

/// Station id → its duty desk id, from the grid map in use: after a reload swaps the map,
/// new tasks escalate to the desks it names.
pub type StationDesks = GridDerived<FxHashMap<String, String>>;

/// [`StationDesks`] of the map `live` gives (the pipeline's).
pub fn station_desks(live: impl Fn() -> Arc<GridMap> + Send + Sync + 'static) -> StationDesks {
    GridDerived::new(live, |grid| {
        grid.stations()
            .iter()
            .map(|s| (s.station_id.clone(), s.duty_desk_id.clone()))
            .collect()
    })
}

/// What the lifecycle edge needs beyond the configuration.
pub struct LifecycleOptions {
    pub clock: Clock,
    /// Station id → duty desk id ([`station_desks`]).
    pub desks: StationDesks,
}

type Tracker = Arc<Mutex<PartitionOffsets>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Input {
    Task,
    Feedback,
}

impl Input {
    fn label(self) -> &'static str {
        match self {
            Input::Task => "task",
            Input::Feedback => "feedback",
        }
    }
}

/// What a delivery report is about: the input record it acknowledges, if any (escalations
/// and clock-driven changes acknowledge none).
struct Delivery {
    tracker: Option<Tracker>,
    offset: i64,
}

#[derive(Default)]
struct Fatal(Mutex<Option<String>>);

impl Fatal {
    fn set(&self, message: String) {
        self.0.lock().expect("fatal lock").get_or_insert(message);
    }

    fn get(&self) -> Option<String> {
        self.0.lock().expect("fatal lock").clone()
    }
}

struct DeliveryContext {
    fatal: Arc<Fatal>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Box<Delivery>) {
        match (result, &d.tracker) {
            (Ok(_), Some(t)) => t.lock().expect("offsets lock").acknowledged(d.offset),
            (Ok(_), None) => {}
            (Err((e, m)), t) => {
                if let Some(t) = t {
                    t.lock().expect("offsets lock").failed(d.offset);
                }
                // Lifecycle outputs are small records of ours: a refusal is about the cluster.
                self.fatal.set(format!(
                    "the broker did not accept a lifecycle output to {} (input offset {}): {e}",
                    m.topic(),
                    d.offset
                ));
            }
        }
    }
}

/// A feedback record waiting for its task.
struct Held {
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    task_id: TaskId,
    since_ms: i64,
}

struct Part {
    lifecycle: Lifecycle,
    held: VecDeque<Held>,
}

#[derive(Default)]
struct Edge {
    parts: BTreeMap<i32, Part>,
    trackers: HashMap<(Input, i32), Tracker>,
}

struct Shared {
    task_topic: String,
    feedback_topic: String,
    feedback_dlq_topic: String,
    lifecycle_topic: String,
    settings: LifecycleSettings,
    grace_ms: i64,
    max_record_bytes: usize,
    restore_config: ClientConfig,
    restore_timeout: Duration,
    drain_timeout: Duration,
    clock: Clock,
    desks: StationDesks,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    producer: ThreadedProducer<DeliveryContext>,
    fatal: Arc<Fatal>,
    edge: Mutex<Edge>,
}

/// A running lifecycle edge. Cancel its token to stop it; [`LifecycleHandle::join`] waits
/// for the final commit.
pub struct LifecycleHandle {
    thread: JoinHandle<Result<(), String>>,
}

impl LifecycleHandle {
    pub fn join(self) -> Result<(), String> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err("lifecycle thread panicked".into()))
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Checks and creates the topics (feedback and its dead letters with the task topic's
/// partition count, the compacted changelog), then joins the lifecycle group.
pub fn spawn(
    config: &Config,
    bootstrap: &str,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
    options: LifecycleOptions,
) -> Result<LifecycleHandle, KafkaSetupError> {
    let k = &config.kafka;
    health.lifecycle_restoring.store(true, Ordering::Relaxed);
    let restore_config = consumer_config(k, bootstrap);
    ensure_topics(config, &restore_config).map_err(KafkaSetupError::Lifecycle)?;
    let fatal = Arc::new(Fatal::default());
    let producer: ThreadedProducer<DeliveryContext> = producer_config(k, bootstrap)
        .create_with_context(DeliveryContext {
            fatal: fatal.clone(),
        })
        .map_err(KafkaSetupError::Client)?;
    let shared = Arc::new(Shared {
        task_topic: k.task_topic.clone(),
        feedback_topic: k.feedback_topic.clone(),
        feedback_dlq_topic: k.feedback_dlq_topic.clone(),
        lifecycle_topic: k.lifecycle_topic.clone(),
        settings: config.lifecycle_settings(),
        grace_ms: i64::try_from(config.lifecycle.unknown_task_grace.as_millis())
            .unwrap_or(i64::MAX),
        max_record_bytes: config.input.max_record_bytes,
        restore_config,
        restore_timeout: k.restore_timeout,
        drain_timeout: k.shutdown_timeout,
        clock: options.clock,
        desks: options.desks,
        metrics,
        health,
        producer,
        fatal,
        edge: Mutex::default(),
    });
    let mut cc = consumer_config(k, bootstrap);
    // After the pass-through properties: partition i of both topics must meet on one member.
    cc.set("group.id", group_id(&k.group_id))
        .set("partition.assignment.strategy", "range")
        .set("statistics.interval.ms", "0");
    let consumer: BaseConsumer<LifecycleCtx> = cc
        .create_with_context(LifecycleCtx {
            shared: shared.clone(),
        })
        .map_err(KafkaSetupError::Client)?;
    consumer
        .subscribe(&[&k.task_topic, &k.feedback_topic])
        .map_err(KafkaSetupError::Client)?;
    let commit_interval = k.commit_interval;
    let thread = std::thread::Builder::new()
        .name("dissuade-lifecycle".into())
        .spawn(move || poll_loop(consumer, shared, commit_interval, shutdown))
        .map_err(KafkaSetupError::Thread)?;
    Ok(LifecycleHandle { thread })
}

/// Creates the feedback topics with the task topic's partition count when missing, checks
/// that the feedback topic has exactly that count, and creates or checks the changelog.
fn ensure_topics(config: &Config, client: &ClientConfig) -> Result<(), StoreError> {
    let k = &config.kafka;
    let timeout = k.shutdown_timeout;
    let probe: BaseConsumer = client.create().map_err(StoreError::Metadata)?;
    let tasks = store::partition_count(&probe, &k.task_topic, timeout)?
        .ok_or_else(|| StoreError::NoSourceTopic(k.task_topic.clone()))?;
    store::create_topics(
        client,
        "feedback",
        &[&k.feedback_topic, &k.feedback_dlq_topic],
        tasks,
        k.topic_replication(),
        &[],
        timeout,
    )?;
    let feedback = store::partition_count(&probe, &k.feedback_topic, timeout)?
        .ok_or_else(|| StoreError::NoSourceTopic(k.feedback_topic.clone()))?;
    if feedback != tasks {
        return Err(StoreError::PartitionMismatch {
            topic: k.feedback_topic.clone(),
            config_key: "kafka.feedback_topic",
            found: feedback,
            source_topic: k.task_topic.clone(),
            needed: tasks,
        });
    }
    let log = Changelog {
        what: WHAT,
        topic: &k.lifecycle_topic,
        config_key: "kafka.lifecycle_topic",
        source_topic: &k.task_topic,
    };
    store::ensure_topic(client, log, k.topic_replication(), timeout)?;
    Ok(())
}

struct LifecycleCtx {
    shared: Arc<Shared>,
}

impl ClientContext for LifecycleCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "kafka client error (lifecycle)");
    }
}

impl ConsumerContext for LifecycleCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let s = &self.shared;
        let revoked = partitions_of(s, tpl);
        if s.producer.flush(s.drain_timeout).is_err() {
            warn!("lifecycle revocation: outputs not all delivered in time; their records will be redelivered");
        }
        let mut edge = s.edge.lock().expect("edge lock");
        let offsets = committable(s, &edge, Some(&revoked));
        commit(consumer, &offsets, CommitMode::Sync);
        for (input, p) in &revoked {
            edge.trackers.remove(&(*input, *p));
            if *input == Input::Task {
                edge.parts.remove(p);
            }
        }
        update_gauges(s, &edge);
        info!(partitions = ?revoked, "lifecycle partitions revoked after committing");
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let s = &self.shared;
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions_of(s, tpl);
                s.health.lifecycle_restoring.store(true, Ordering::Relaxed);
                let mut edge = s.edge.lock().expect("edge lock");
                for key in &assigned {
                    edge.trackers.entry(*key).or_default();
                }
                let new: Vec<i32> = assigned
                    .iter()
                    .filter(|(i, p)| *i == Input::Task && !edge.parts.contains_key(p))
                    .map(|(_, p)| *p)
                    .collect();
                match restore(s, &new) {
                    Ok(parts) => edge.parts.extend(parts),
                    Err(e) => {
                        // Without its state a partition would escalate tasks already closed:
                        // stop, and let a restart (or another member) try again.
                        s.fatal.set(format!("restoring lifecycle state: {e}"));
                    }
                }
                update_gauges(s, &edge);
                s.health.lifecycle_restoring.store(false, Ordering::Relaxed);
                info!(partitions = ?assigned, restored = ?new, "lifecycle partitions assigned");
            }
            Rebalance::Error(e) => warn!(error = %e, "lifecycle rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn partitions_of(s: &Shared, tpl: &TopicPartitionList) -> Vec<(Input, i32)> {
    tpl.elements()
        .iter()
        .filter_map(|e| {
            let input = if e.topic() == s.task_topic {
                Input::Task
            } else if e.topic() == s.feedback_topic {
                Input::Feedback
            } else {
                return None;
            };
            Some((input, e.partition()))
        })
        .collect()
}

/// Reads the changelog partitions of `partitions` back into fresh lifecycles.
fn restore(s: &Shared, partitions: &[i32]) -> Result<Vec<(i32, Part)>, StoreError> {
    let mut parts: BTreeMap<i32, Part> = partitions
        .iter()
        .map(|p| {
            (
                *p,
                Part {
                    lifecycle: Lifecycle::new(s.settings.clone()),
                    held: VecDeque::new(),
                },
            )
        })
        .collect();
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    let (mut records, mut unreadable) = (0u64, 0u64);
    let reader = Reader::new(&s.restore_config, WHAT, &s.lifecycle_topic)?;
    reader.read_to_end(partitions, s.restore_timeout, |m| {
        let Some(part) = parts.get_mut(&m.partition()) else {
            return;
        };
        match m.key().map(|k| Change::decode(k, m.payload())) {
            Some(Ok(change)) => {
                for t in part.lifecycle.restore(change) {
                    s.metrics.lifecycle.record(&t);
                }
                records += 1;
            }
            _ => unreadable += 1,
        }
    })?;
    s.metrics.lifecycle.restored.inc_by(records);
    // Entries evicted to fit max_tracked while restoring: their tombstones.
    for (p, part) in &mut parts {
        for change in part.lifecycle.take_changes() {
            produce_change(s, *p, &change, None, 0);
        }
    }
    info!(
        topic = %s.lifecycle_topic,
        partitions = ?partitions,
        records,
        skipped = unreadable,
        took_ms = started.elapsed().as_millis() as u64,
        "restored task lifecycles"
    );
    Ok(parts.into_iter().collect())
}

fn committable(s: &Shared, edge: &Edge, only: Option<&[(Input, i32)]>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (key, t) in &edge.trackers {
        if only.is_some_and(|o| !o.contains(key)) {
            continue;
        }
        if let Some(o) = t.lock().expect("offsets lock").committable() {
            let topic = match key.0 {
                Input::Task => &s.task_topic,
                Input::Feedback => &s.feedback_topic,
            };
            let _ = tpl.add_partition_offset(topic, key.1, Offset::Offset(o));
        }
    }
    tpl
}

fn commit(consumer: &BaseConsumer<LifecycleCtx>, tpl: &TopicPartitionList, mode: CommitMode) {
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(tpl, mode) {
        warn!(error = %e, "lifecycle offset commit failed; the next commit covers it");
    }
}

fn update_gauges(s: &Shared, edge: &Edge) {
    let m = &s.metrics.lifecycle;
    let (mut open, mut ack, mut overdue, mut held) = (0, 0, 0, 0);
    for part in edge.parts.values() {
        open += part.lifecycle.open();
        ack += part.lifecycle.acknowledged();
        overdue += part.lifecycle.overdue();
        held += part.held.len();
    }
    m.tasks.with_label_values(&["open"]).set(open as i64);
    m.tasks.with_label_values(&["acknowledged"]).set(ack as i64);
    m.tasks.with_label_values(&["overdue"]).set(overdue as i64);
    m.feedback_held.set(held as i64);
    m.assigned_partitions.set(edge.parts.len() as i64);
}

fn poll_loop(
    consumer: BaseConsumer<LifecycleCtx>,
    shared: Arc<Shared>,
    commit_interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), String> {
    info!(
        task_topic = %shared.task_topic,
        feedback_topic = %shared.feedback_topic,
        "lifecycle started"
    );
    let s = &*shared;
    let mut last_commit = Instant::now();
    let mut last_tick = Instant::now();
    let mut failure = None;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if let Some(f) = s.fatal.get() {
            failure = Some(f);
            break;
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let mut edge = s.edge.lock().expect("edge lock");
                let input = if m.topic() == s.task_topic {
                    Input::Task
                } else {
                    Input::Feedback
                };
                s.metrics
                    .lifecycle
                    .records
                    .with_label_values(&[input.label()])
                    .inc();
                let tracker = edge
                    .trackers
                    .entry((input, m.partition()))
                    .or_default()
                    .clone();
                let record = Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key(),
                    payload: m.payload(),
                    tracker,
                };
                match input {
                    Input::Task => on_task_record(s, &mut edge, &record),
                    Input::Feedback => on_feedback_record(s, &mut edge, &record),
                }
            }
            Some(Err(e)) => warn!(error = %e, "lifecycle consume error"),
            None => {}
        }
        let now = (s.clock)();
        let mut edge = s.edge.lock().expect("edge lock");
        let due = edge.parts.values().any(|p| {
            p.lifecycle.next_due_ms().is_some_and(|d| d <= now)
                || p.held
                    .front()
                    .is_some_and(|h| h.since_ms + s.grace_ms <= now)
        });
        let since = last_tick.elapsed();
        if (due && since >= MIN_TICK_GAP) || since >= TICK {
            tick(s, &mut edge, now);
            update_gauges(s, &edge);
            last_tick = Instant::now();
        }
        if last_commit.elapsed() >= commit_interval {
            commit(&consumer, &committable(s, &edge, None), CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    info!("lifecycle stopping: delivering outputs and committing");
    if s.producer.flush(s.drain_timeout).is_err() {
        warn!("lifecycle shutdown timeout: some outputs were not acknowledged; their records will be redelivered");
    }
    if failure.is_none() {
        failure = s.fatal.get();
    }
    {
        let edge = s.edge.lock().expect("edge lock");
        commit(&consumer, &committable(s, &edge, None), CommitMode::Sync);
    }
    consumer.unsubscribe();
    info!("lifecycle stopped");
    match failure {
        Some(f) => {
            error!(error = %f, "lifecycle failed");
            Err(f)
        }
        None => Ok(()),
    }
}

struct Record<'a> {
    partition: i32,
    offset: i64,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    tracker: Tracker,
}

fn on_task_record(s: &Shared, edge: &mut Edge, r: &Record<'_>) {
    let Edge { parts, trackers } = edge;
    let Some(part) = parts.get_mut(&r.partition) else {
        // Not restored (the restore failed and the service is stopping): leave it uncommitted.
        return;
    };
    let task = r
        .payload
        .ok_or_else(|| "record has no payload".to_string())
        .and_then(|p| TrackedTask::decode(p).map_err(|e| e.to_string()));
    let mut task = match task {
        Ok(t) => t,
        Err(e) => {
            s.metrics.lifecycle.task_records_skipped.inc();
            // The message is masked and bounded; the payload (the victim's number) is not logged.
            warn!(
                topic = %s.task_topic,
                partition = r.partition,
                offset = r.offset,
                error = %e,
                "skipping a task record the lifecycle cannot read (our own output: a bug or another writer)"
            );
            r.tracker
                .lock()
                .expect("offsets lock")
                .processed(r.offset, 0);
            return;
        }
    };
    task.station_desk = task
        .station_id
        .as_ref()
        .and_then(|id| s.desks.current().0.get(id).cloned());
    let transitions = part.lifecycle.on_task(task);
    emit(
        s,
        r.partition,
        part,
        &transitions,
        &r.tracker,
        r.offset,
        false,
    );
    // The task may be what held feedback was waiting for.
    if !part.held.is_empty() {
        let held_tracker = trackers
            .entry((Input::Feedback, r.partition))
            .or_default()
            .clone();
        release_held(s, r.partition, part, &held_tracker);
    }
}

fn on_feedback_record(s: &Shared, edge: &mut Edge, r: &Record<'_>) {
    let Some(part) = edge.parts.get_mut(&r.partition) else {
        // Its task partition is not restored (the restore failed and the service is
        // stopping): leave it uncommitted for the next owner.
        return;
    };
    let payload = r.payload.unwrap_or_default();
    if payload.is_empty() {
        let letter = DeadLetter {
            kind: "empty_record",
            field: None,
            message: "record has no payload",
            output_topic: None,
            original_size: 0,
        };
        dead_letter(
            s,
            r.partition,
            r.offset,
            r.key,
            payload,
            &letter,
            &r.tracker,
            false,
        );
        return;
    }
    let fb = match Feedback::decode(payload) {
        Ok(fb) => fb,
        Err(e) => {
            let message = e.to_string();
            let letter = DeadLetter {
                kind: e.kind(),
                field: e.field(),
                message: &message,
                output_topic: None,
                original_size: payload.len(),
            };
            dead_letter(
                s,
                r.partition,
                r.offset,
                r.key,
                payload,
                &letter,
                &r.tracker,
                false,
            );
            return;
        }
    };
    // Later feedback on a task with feedback waiting waits behind it, to keep its order.
    let waiting = part.held.iter().any(|h| h.task_id == fb.task_id);
    if waiting || part.lifecycle.resolve(fb.task_id).is_none() {
        if part.held.len() >= MAX_HELD {
            let oldest = part.held.pop_front().expect("a full buffer");
            decide_held(s, r.partition, part, oldest, &r.tracker);
        }
        r.tracker
            .lock()
            .expect("offsets lock")
            .processed(r.offset, 1);
        part.held.push_back(Held {
            offset: r.offset,
            key: r.key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            task_id: fb.task_id,
            since_ms: (s.clock)(),
        });
        return;
    }
    decide(
        s,
        r.partition,
        part,
        &fb,
        r.key,
        payload,
        r.offset,
        &r.tracker,
        false,
    );
}

/// Applies feedback, or dead-letters it with the reason the lifecycle gave.
#[allow(clippy::too_many_arguments)]
fn decide(
    s: &Shared,
    partition: i32,
    part: &mut Part,
    fb: &Feedback<'_>,
    key: Option<&[u8]>,
    payload: &[u8],
    offset: i64,
    tracker: &Tracker,
    held: bool,
) {
    match part.lifecycle.on_feedback(fb, key) {
        Ok(transitions) => emit(s, partition, part, &transitions, tracker, offset, held),
        Err(rejected) => {
            let message = rejected.to_string();
            let letter = DeadLetter {
                kind: rejected.kind(),
                field: None,
                message: &message,
                output_topic: None,
                original_size: payload.len(),
            };
            dead_letter(s, partition, offset, key, payload, &letter, tracker, held);
        }
    }
}

/// Decides a held record now (its task arrived, or its grace ran out: then it is
/// dead-lettered as `unknown_task`), and releases the hold on its offset.
fn decide_held(s: &Shared, partition: i32, part: &mut Part, h: Held, tracker: &Tracker) {
    match Feedback::decode(&h.payload) {
        Ok(fb) => decide(
            s,
            partition,
            part,
            &fb,
            h.key.as_deref(),
            &h.payload,
            h.offset,
            tracker,
            true,
        ),
        Err(_) => unreachable!("held feedback was decoded when it arrived"),
    }
    tracker.lock().expect("offsets lock").acknowledged(h.offset);
}

/// Decides every held record whose task is now known, in arrival order.
fn release_held(s: &Shared, partition: i32, part: &mut Part, tracker: &Tracker) {
    let mut i = 0;
    while i < part.held.len() {
        if part.lifecycle.resolve(part.held[i].task_id).is_some() {
            let h = part.held.remove(i).expect("index in range");
            decide_held(s, partition, part, h, tracker);
        } else {
            i += 1;
        }
    }
}

/// Writes a feedback dead letter (payload cut to `input.max_record_bytes`), counted as an
/// output of `offset`.
#[allow(clippy::too_many_arguments)]
fn dead_letter(
    s: &Shared,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    payload: &[u8],
    letter: &DeadLetter<'_>,
    tracker: &Tracker,
    held: bool,
) {
    s.metrics.lifecycle.record_rejected(letter.kind);
    {
        let mut o = tracker.lock().expect("offsets lock");
        if held {
            o.add_outputs(offset, 1);
        } else {
            o.processed(offset, 1);
        }
    }
    let cut = &payload[..payload.len().min(s.max_record_bytes)];
    let headers = letter.headers(&s.feedback_topic, partition, offset, cut.len());
    let delivery = Box::new(Delivery {
        tracker: Some(tracker.clone()),
        offset,
    });
    let mut record = BaseRecord::with_opaque_to(&s.feedback_dlq_topic, delivery)
        .payload(cut)
        .headers(headers);
    if let Some(k) = key {
        record = record.key(k);
    }
    send(s, record);
}

/// Moves every partition's clock to `now`: held feedback past its grace is decided, due
/// tasks go overdue and are escalated. Escalations are acknowledged before the changes that
/// record them are written (see the module docs).
fn tick(s: &Shared, edge: &mut Edge, now: i64) {
    let Edge { parts, trackers } = edge;
    for (p, part) in parts.iter_mut() {
        while part
            .held
            .front()
            .is_some_and(|h| h.since_ms.saturating_add(s.grace_ms) <= now)
        {
            let h = part.held.pop_front().expect("a front");
            let tracker = trackers.entry((Input::Feedback, *p)).or_default().clone();
            decide_held(s, *p, part, h, &tracker);
        }
        let transitions = part.lifecycle.advance(now);
        let mut escalated = 0;
        let mut buf = Vec::with_capacity(512);
        for t in &transitions {
            s.metrics.lifecycle.record(t);
            if let Transition::Escalated { escalation, .. } = t {
                buf.clear();
                escalation.encode_into(&mut buf);
                let delivery = Box::new(Delivery {
                    tracker: None,
                    offset: -1,
                });
                let record = BaseRecord::with_opaque_to(&s.task_topic, delivery)
                    .key(escalation.to_desk.as_bytes())
                    .payload(buf.as_slice());
                send(s, record);
                escalated += 1;
            }
        }
        if escalated > 0 {
            if s.producer.flush(s.drain_timeout).is_err() || s.fatal.get().is_some() {
                s.fatal.set(format!(
                    "{escalated} escalations of partition {p} were not acknowledged in time"
                ));
                return;
            }
            info!(partition = *p, escalated, "escalated overdue tasks");
        }
        for change in part.lifecycle.take_changes() {
            produce_change(s, *p, &change, None, 0);
        }
    }
}

/// Records, counts and writes what a record caused: the transitions' figures and the
/// changelog records, acknowledged against `offset` of `tracker`. `held`: the record was held
/// back, and is already counted as one pending output.
fn emit(
    s: &Shared,
    partition: i32,
    part: &mut Part,
    transitions: &[Transition],
    tracker: &Tracker,
    offset: i64,
    held: bool,
) {
    for t in transitions {
        s.metrics.lifecycle.record(t);
    }
    let changes = part.lifecycle.take_changes();
    {
        let mut o = tracker.lock().expect("offsets lock");
        if held {
            o.add_outputs(offset, changes.len() as u32);
        } else {
            o.processed(offset, changes.len() as u32);
        }
    }
    for change in &changes {
        produce_change(s, partition, change, Some(tracker), offset);
    }
}

fn produce_change(
    s: &Shared,
    partition: i32,
    change: &Change,
    tracker: Option<&Tracker>,
    offset: i64,
) {
    let key = change.key();
    let value = change.value();
    let delivery = Box::new(Delivery {
        tracker: tracker.cloned(),
        offset,
    });
    let mut record = BaseRecord::with_opaque_to(&s.lifecycle_topic, delivery)
        .partition(partition)
        .key(key.as_bytes());
    if let Some(v) = &value {
        record = record.payload(v.as_slice());
    }
    send(s, record);
}

/// Produces, waiting while the producer queue is full.
fn send<K: rdkafka::message::ToBytes + ?Sized>(
    s: &Shared,
    mut record: BaseRecord<'_, K, [u8], Box<Delivery>>,
) {
    loop {
        match s.producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, r)) => {
                let d = r.delivery_opaque;
                if let Some(t) = &d.tracker {
                    t.lock().expect("offsets lock").failed(d.offset);
                }
                s.fatal
                    .set(format!("producing a lifecycle output to {}: {e}", r.topic));
                return;
            }
        }
    }
}
