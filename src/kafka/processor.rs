//! The consumer-group service: input topic → pipeline → task topic, bad records → dead-letter
//! topic, at least once; or exactly once with `kafka.delivery = "exactly-once"`, where each
//! checkpoint commits the outputs and the input offsets in one Kafka transaction.
//!
//! One thread polls the consumer and hands each record to a worker chosen by partition, so a
//! partition's records are processed in order. Workers run the pipeline and produce without
//! waiting; the producer's delivery callback acknowledges each output to its partition's
//! [`PartitionOffsets`], and the poll thread commits what those allow. Bounded channels and
//! the producer queue give backpressure: when the broker is slow, consumption slows.
//!
//! On revocation the processor finishes the records it has, waits for their outputs and
//! commits before the partitions go; the open-task state of partitions that did not come
//! back is dropped, and that of newly assigned partitions is restored from the state
//! changelog ([`super::changelog`]) before their first record is processed.
//!
//! An output the broker refuses as a record (too large, invalid) is dead-lettered in its
//! place, cut to fit; only errors about the cluster stop the processor. A graceful stop takes
//! at most `shutdown_timeout` in all: what is not done by then is not committed, and is
//! redelivered.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::offsets::PartitionOffsets;
use super::{
    by_caller, changelog, consumer_config, producer_config, window_replay, with_statistics,
    KafkaSetupError,
};
use crate::config::{self, KafkaConfig};
use crate::features::Figures;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::pipeline::{Action, Laps, NoTimer, Outcome, Pipeline, Stage, Worker};

pub use super::dead_letter::{
    DeadLetter, HEADER_ERROR, HEADER_ERROR_FIELD, HEADER_ERROR_KIND, HEADER_ORIGINAL_SIZE,
    HEADER_OUTPUT_TOPIC, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC,
    HEADER_TRUNCATED, OUTPUT_REJECTED,
};

/// One event in 64 has its stages timed.
const STAGE_SAMPLE_MASK: u64 = 63;

type Tracker = Arc<Mutex<PartitionOffsets>>;

/// The first fatal problem (an output the broker finally refused); the service stops on it
/// without committing past it, so a restart redelivers the affected records.
#[derive(Default)]
struct Fatal(Mutex<Option<String>>);

impl Fatal {
    fn set(&self, message: String) {
        let mut f = self.0.lock().expect("fatal lock");
        f.get_or_insert(message);
    }

    fn get(&self) -> Option<String> {
        self.0.lock().expect("fatal lock").clone()
    }
}

/// Which output a delivery report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// A task; its event time gives the end-to-end latency.
    Task { occurred_at_ms: i64 },
    /// A dead letter; `bare` when it is already the payload-less last resort.
    DeadLetter { bare: bool },
    /// An open-task changelog record.
    State,
}

/// What the producer hands back with each delivery report.
struct Delivery {
    offsets: Tracker,
    partition: i32,
    offset: i64,
    /// The input partition and offset, when the record came through the by-caller stages.
    origin: Option<(i32, i64)>,
    output: Output,
}

/// An output the broker refused as a record, to be dead-lettered by the poll thread (the
/// delivery callback cannot produce).
struct Refused {
    delivery: Box<Delivery>,
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    error: String,
}

type RefusedQueue = Arc<Mutex<Vec<Refused>>>;

/// Errors about one record, not about the cluster: the record is dead-lettered instead.
fn is_about_the_record(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTimestamp
        )
    )
}

struct DeliveryContext {
    metrics: Arc<Metrics>,
    fatal: Arc<Fatal>,
    refused: RefusedQueue,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Box<Delivery>) {
        self.metrics.in_flight.dec();
        match result {
            Ok(_) => {
                d.offsets
                    .lock()
                    .expect("offsets lock")
                    .acknowledged(d.offset);
                if let Output::Task { occurred_at_ms } = d.output {
                    self.metrics.tasks_delivered.inc();
                    let now_us = chrono::Utc::now().timestamp_micros();
                    self.metrics.observe_end_to_end(
                        now_us.saturating_sub(occurred_at_ms * 1000).max(0) as u64,
                    );
                }
            }
            Err((e, m)) if is_about_the_record(e) => {
                self.refused.lock().expect("refused lock").push(Refused {
                    topic: m.topic().to_owned(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    error: e.to_string(),
                    delivery: d,
                });
            }
            Err((e, _)) => {
                d.offsets.lock().expect("offsets lock").failed(d.offset);
                self.metrics.delivery_failures.inc();
                self.fatal.set(format!(
                    "the broker did not accept an output of partition {} offset {}: {e}",
                    d.partition, d.offset
                ));
            }
        }
    }
}

/// State shared by the poll thread, the workers and the rebalance callbacks.
struct Shared {
    input_topic: String,
    /// The topic dead letters name as their source: the input, also when the processor
    /// reads the by-caller stages' output (records then carry their input position).
    source_topic: String,
    task_topic: String,
    dlq_topic: String,
    state_topic: String,
    /// Consumer settings for reading the state changelog back.
    restore_config: rdkafka::ClientConfig,
    restore_timeout: Duration,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    producer: ThreadedProducer<DeliveryContext>,
    /// `kafka.delivery = "exactly-once"`: the producer is transactional and a transaction is
    /// open between checkpoints.
    transactional: bool,
    /// Whether a transaction is open (exactly once).
    in_transaction: std::sync::atomic::AtomicBool,
    trackers: Mutex<HashMap<i32, Tracker>>,
    /// Bumped on every assignment change so the poll thread refreshes its tracker cache.
    generation: AtomicU64,
    /// Partitions revoked and not yet known to come back.
    revoked: Mutex<HashSet<i32>>,
    dispatched: AtomicU64,
    processed: AtomicU64,
    max_in_flight: usize,
    drain_timeout: Duration,
    /// Set when a graceful stop begins: every wait after it ends by then.
    stop_by: Mutex<Option<Instant>>,
    fatal: Arc<Fatal>,
    refused: RefusedQueue,
    /// Per broker: responses received, and when that count last moved.
    broker_heard: Mutex<HashMap<String, (u64, Instant)>>,
}

/// A broker that has answered nothing for this long counts as unreachable.
const BROKER_SILENCE: Duration = Duration::from_secs(10);

impl Shared {
    fn tracker(&self, partition: i32) -> Tracker {
        self.trackers
            .lock()
            .expect("trackers lock")
            .entry(partition)
            .or_default()
            .clone()
    }

    /// The deadline of a wait of `timeout` starting now, or of the graceful stop if sooner.
    fn deadline(&self, timeout: Duration) -> Instant {
        let own = Instant::now() + timeout;
        match *self.stop_by.lock().expect("stop lock") {
            Some(stop) => own.min(stop),
            None => own,
        }
    }

    fn past_stop(&self) -> bool {
        self.stop_by
            .lock()
            .expect("stop lock")
            .is_some_and(|stop| Instant::now() >= stop)
    }

    /// Waits until the workers have processed every dispatched record and the producer has
    /// delivered every output (dead-lettering refused ones), up to the drain timeout.
    fn drain(&self) -> bool {
        let deadline = self.deadline(self.drain_timeout);
        while self.processed.load(Ordering::Acquire) < self.dispatched.load(Ordering::Acquire) {
            if Instant::now() > deadline {
                return false;
            }
            self.reroute_refused();
            std::thread::sleep(Duration::from_millis(1));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let flushed = self.producer.flush(left).is_ok();
            if !self.reroute_refused() {
                return flushed;
            }
        }
    }

    /// Dead-letters the outputs the broker refused as records. Returns whether there were any.
    fn reroute_refused(&self) -> bool {
        let refused = std::mem::take(&mut *self.refused.lock().expect("refused lock"));
        let any = !refused.is_empty();
        for r in refused {
            self.reroute(r);
        }
        any
    }

    fn reroute(&self, r: Refused) {
        self.metrics.outputs_rejected.inc();
        let d = r.delivery;
        warn!(
            topic = %r.topic,
            partition = d.partition,
            offset = d.offset,
            error = %r.error,
            "the broker refused an output as a record; dead-lettering it instead"
        );
        match d.output {
            Output::DeadLetter { bare: true } => {
                d.offsets.lock().expect("offsets lock").failed(d.offset);
                self.metrics.delivery_failures.inc();
                self.fatal.set(format!(
                    "the broker refused even a payload-less dead letter for partition {} \
                     offset {}: {}",
                    d.partition, d.offset, r.error
                ));
            }
            Output::DeadLetter { bare: false } => {
                let message = format!(
                    "the broker refused this dead letter ({}); its payload was dropped: \
                     the record is at this partition and offset of the input topic",
                    r.error
                );
                let letter = DeadLetter {
                    kind: OUTPUT_REJECTED,
                    field: None,
                    message: &message,
                    output_topic: None,
                    original_size: r.payload.len(),
                };
                self.send_dead_letter(d, r.key.as_deref(), &[], &letter, true);
            }
            Output::Task { .. } | Output::State => {
                let message = format!("the broker refused this output to {}: {}", r.topic, r.error);
                let letter = DeadLetter {
                    kind: OUTPUT_REJECTED,
                    field: None,
                    message: &message,
                    output_topic: Some(&r.topic),
                    original_size: r.payload.len(),
                };
                self.send_dead_letter(d, r.key.as_deref(), &r.payload, &letter, false);
            }
        }
    }

    /// Produces a dead letter with its headers, the payload cut to `input.max_record_bytes`.
    /// `d` names the input record it stands for and its tracker entry.
    fn send_dead_letter(
        &self,
        mut d: Box<Delivery>,
        key: Option<&[u8]>,
        payload: &[u8],
        letter: &DeadLetter<'_>,
        bare: bool,
    ) {
        let max = self.pipeline.input().max_record_bytes;
        let cut = &payload[..payload.len().min(max)];
        let headers = match d.origin {
            Some((partition, offset)) => {
                letter.headers(&self.source_topic, partition, offset, cut.len())
            }
            None => letter.headers(&self.input_topic, d.partition, d.offset, cut.len()),
        };
        d.output = Output::DeadLetter { bare };
        let mut record = BaseRecord::with_opaque_to(&self.dlq_topic, d)
            .payload(cut)
            .headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        produce(self, record);
    }

    /// Offsets ready to commit for `partitions` (all assigned ones when `None`).
    fn committable(&self, partitions: Option<&[i32]>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (p, t) in self.trackers.lock().expect("trackers lock").iter() {
            if partitions.is_some_and(|ps| !ps.contains(p)) {
                continue;
            }
            if let Some(o) = t.lock().expect("offsets lock").committable() {
                let _ = tpl.add_partition_offset(&self.input_topic, *p, Offset::Offset(o));
            }
        }
        tpl
    }

    /// Commits `tpl`; the result is counted by the commit callback, which librdkafka
    /// invokes for synchronous and asynchronous commits alike.
    fn commit(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        tpl: &TopicPartitionList,
        mode: CommitMode,
    ) {
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = consumer.commit(tpl, mode) {
            warn!(error = %e, "offset commit failed; the next commit covers it");
        }
    }

    /// Makes what has been processed durable: at least once, commits the input offsets of
    /// `partitions` (all when `None`); exactly once, commits the open transaction with every
    /// assigned partition's offsets and begins the next. `drained` says whether every
    /// dispatched record's outputs were delivered first: a transaction is committed only
    /// then, so that it holds the outputs of exactly the offsets it commits; otherwise it is
    /// aborted and the processor stops (its state is ahead of what was committed, and a
    /// restart resumes from the last transaction).
    fn checkpoint(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        partitions: Option<&[i32]>,
        mode: CommitMode,
        drained: bool,
    ) {
        if !self.transactional {
            self.commit(consumer, &self.committable(partitions), mode);
            return;
        }
        // Nothing open: a failure aborted it, or the shutdown committed it before leaving the
        // group (whose revocation comes here last).
        if self.fatal.get().is_some() || !self.in_transaction.load(Ordering::Acquire) {
            return;
        }
        let result = if drained {
            self.commit_transaction(consumer)
        } else {
            Err("outputs were not all delivered in time".to_string())
        };
        let ended = result.and_then(|()| self.begin_transaction());
        if let Err(e) = ended {
            self.abort_transaction();
            self.fatal.set(format!(
                "exactly-once: {e}; the transaction was aborted, and a restart resumes from \
                 the last committed one"
            ));
        }
    }

    fn begin_transaction(&self) -> Result<(), String> {
        self.producer
            .begin_transaction()
            .map_err(|e| format!("beginning a transaction: {e}"))?;
        self.in_transaction.store(true, Ordering::Release);
        Ok(())
    }

    /// Sends the committable input offsets to the open transaction and commits it.
    fn commit_transaction(&self, consumer: &BaseConsumer<ConsumerCtx>) -> Result<(), String> {
        let timeout = self.deadline(self.drain_timeout);
        let left = || timeout.saturating_duration_since(Instant::now());
        let offsets = self.committable(None);
        if offsets.count() > 0 {
            let group = consumer
                .group_metadata()
                .ok_or("the consumer has no group metadata")?;
            self.producer
                .send_offsets_to_transaction(&offsets, &group, left())
                .map_err(|e| format!("sending the input offsets to the transaction: {e}"))?;
        }
        self.producer
            .commit_transaction(left())
            .map_err(|e| format!("committing the transaction: {e}"))?;
        self.in_transaction.store(false, Ordering::Release);
        self.metrics
            .transactions
            .with_label_values(&["committed"])
            .inc();
        Ok(())
    }

    /// Aborts the open transaction, if there is one.
    fn abort_transaction(&self) {
        if !self.in_transaction.swap(false, Ordering::AcqRel) {
            return;
        }
        self.metrics
            .transactions
            .with_label_values(&["aborted"])
            .inc();
        let left = self
            .deadline(self.drain_timeout)
            .saturating_duration_since(Instant::now());
        if let Err(e) = self.producer.abort_transaction(left) {
            warn!(error = %e, "aborting the transaction failed; the broker aborts it when this producer's id is next used or its timeout passes");
        }
    }
}

struct ConsumerCtx {
    shared: Arc<Shared>,
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        let s = &self.shared;
        // Every second. A broker that is gone is not UP; one that is frozen stays UP for a
        // minute (until librdkafka's socket timeout) but stops answering, while a live one
        // answers the consumer's fetches at least every fetch.wait.max.ms.
        let now = Instant::now();
        let mut heard = s.broker_heard.lock().expect("broker lock");
        let up = stats.brokers.values().any(|b| {
            let last = heard.entry(b.name.clone()).or_insert((b.rx, now));
            if b.rx != last.0 {
                *last = (b.rx, now);
            }
            b.state == "UP" && now.duration_since(last.1) < BROKER_SILENCE
        });
        s.health.broker_reachable.store(up, Ordering::Relaxed);
        let Some(topic) = stats.topics.get(&s.input_topic) else {
            return;
        };
        let owned = s.trackers.lock().expect("trackers lock");
        for (id, p) in &topic.partitions {
            // librdkafka's `consumer_lag` counts from the committed offset, which trails by
            // up to a commit interval; ops want what is not consumed yet.
            let lag = if p.hi_offset >= 0 && p.app_offset >= 0 {
                (p.hi_offset - p.app_offset).max(0)
            } else {
                p.consumer_lag
            };
            if owned.contains_key(id) && lag >= 0 {
                s.metrics
                    .consumer_lag
                    .with_label_values(&[&id.to_string()])
                    .set(lag);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.shared
                .health
                .broker_reachable
                .store(false, Ordering::Relaxed);
        }
        warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let s = &self.shared;
        let revoked: Vec<i32> = tpl
            .elements_for_topic(&s.input_topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let drained = s.drain();
        if !drained {
            warn!(
                "revocation: outputs not all delivered in time; their records will be redelivered"
            );
        }
        if s.transactional && consumer.assignment_lost() {
            // The group has given these partitions to another member already (this one's
            // session ran out): committing their offsets now would race the new owner.
            s.abort_transaction();
            s.fatal.set(
                "exactly-once: the group took this instance's partitions (its session ran \
                 out); the open transaction was aborted, and a restart resumes from the last \
                 committed one"
                    .into(),
            );
        }
        s.checkpoint(consumer, Some(&revoked), CommitMode::Sync, drained);
        let mut trackers = s.trackers.lock().expect("trackers lock");
        for p in &revoked {
            trackers.remove(p);
            let _ = s
                .metrics
                .consumer_lag
                .remove_label_values(&[&p.to_string()]);
        }
        s.metrics.assigned_partitions.set(trackers.len() as i64);
        s.health
            .partitions_assigned
            .store(trackers.len(), Ordering::Relaxed);
        drop(trackers);
        s.revoked.lock().expect("revoked lock").extend(&revoked);
        s.generation.fetch_add(1, Ordering::Release);
        info!(partitions = ?revoked, "partitions revoked after committing processed offsets");
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let s = &self.shared;
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned: Vec<i32> = tpl
                    .elements_for_topic(&s.input_topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                let mut trackers = s.trackers.lock().expect("trackers lock");
                for p in &assigned {
                    trackers.insert(*p, Tracker::default());
                }
                s.metrics.assigned_partitions.set(trackers.len() as i64);
                s.health
                    .partitions_assigned
                    .store(trackers.len(), Ordering::Relaxed);
                drop(trackers);
                let gone: Vec<i32> = {
                    let mut revoked = s.revoked.lock().expect("revoked lock");
                    let gone = revoked
                        .iter()
                        .filter(|p| !assigned.contains(p))
                        .copied()
                        .collect();
                    revoked.clear();
                    gone
                };
                let dispatcher = s.pipeline.dispatcher();
                let dropped = dispatcher.drop_partitions(&gone);
                // Partitions kept through the rebalance keep their state; new ones read theirs
                // back before their first record is polled.
                let new: Vec<i32> = assigned
                    .iter()
                    .copied()
                    .filter(|p| !dispatcher.holds(*p))
                    .collect();
                match changelog::restore(
                    &s.restore_config,
                    &s.input_topic,
                    &s.state_topic,
                    &new,
                    dispatcher,
                    &s.pipeline.windows(),
                    s.restore_timeout,
                ) {
                    Ok(r) => s.metrics.state_restored.inc_by(r.records),
                    Err(e) => warn!(
                        error = %e,
                        "open tasks not restored; repeat calls on these partitions may get a second task"
                    ),
                }
                // After the open tasks: the windows take their last-task times from them.
                if let Err(e) = window_replay::replay(
                    &s.restore_config,
                    &s.input_topic,
                    &new,
                    &s.pipeline,
                    s.restore_timeout,
                ) {
                    warn!(
                        error = %e,
                        "feature windows not rebuilt; figures on these partitions start from the calls read from now on"
                    );
                }
                s.generation.fetch_add(1, Ordering::Release);
                info!(partitions = ?assigned, restored = ?new, dropped_open_tasks = dropped, "partitions assigned");
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _: &TopicPartitionList) {
        let label = if result.is_ok() { "ok" } else { "error" };
        self.shared
            .metrics
            .commits
            .with_label_values(&[label])
            .inc();
    }
}

/// A consumed record, handed to a worker.
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    /// From the by-caller stage, when the rules read caller-side windows.
    caller_figures: Option<Figures>,
    /// Its input partition and offset, from the by-caller stages.
    origin: Option<(i32, i64)>,
    offsets: Tracker,
}

/// A running processor. Cancel its token to stop it; [`ProcessorHandle::join`] waits for the
/// drain and final commit.
pub struct ProcessorHandle {
    thread: JoinHandle<Result<(), String>>,
    stages: Option<by_caller::Stages>,
}

impl ProcessorHandle {
    /// Waits for the processor and its by-caller stages, if any (after the shutdown token
    /// is cancelled).
    pub fn join(self) -> Result<(), String> {
        let processed = self
            .thread
            .join()
            .unwrap_or_else(|_| Err("processor thread panicked".into()));
        let staged = self.stages.map_or(Ok(()), by_caller::Stages::join);
        processed.and(staged)
    }

    /// Whether the processor or one of its stages has stopped.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
            || self
                .stages
                .as_ref()
                .is_some_and(by_caller::Stages::is_finished)
    }
}

/// Starts the processor: creates the state topic when missing, then subscribes to the input
/// topic as a member of the configured group. When `pipeline` takes its caller figures from
/// the records ([`Pipeline::take_caller_figures_from_records`]), the by-caller stages are
/// started first and the processor reads their output in place of the input.
pub fn spawn(
    cfg: &KafkaConfig,
    bootstrap: &str,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<ProcessorHandle, KafkaSetupError> {
    if !pipeline.caller_figures_in_records() {
        return spawn_on(cfg, bootstrap, pipeline, metrics, health, shutdown, None);
    }
    if cfg.delivery == config::Delivery::ExactlyOnce {
        return Err(KafkaSetupError::ExactlyOnceWithStages);
    }
    let stages = by_caller::spawn(
        cfg,
        bootstrap,
        pipeline.clone(),
        metrics.clone(),
        shutdown.clone(),
    )?;
    let staged = KafkaConfig {
        input_topic: cfg.with_caller_figures_topic.clone(),
        ..cfg.clone()
    };
    let stop = shutdown.clone();
    spawn_on(
        &staged,
        bootstrap,
        pipeline,
        metrics,
        health,
        shutdown,
        Some((stages, cfg.input_topic.clone())),
    )
    .inspect_err(|_| stop.cancel())
}

fn spawn_on(
    cfg: &KafkaConfig,
    bootstrap: &str,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
    stages: Option<(by_caller::Stages, String)>,
) -> Result<ProcessorHandle, KafkaSetupError> {
    let (stages, source_topic) = match stages {
        Some((stages, input)) => (Some(stages), input),
        None => (None, cfg.input_topic.clone()),
    };
    let fatal = Arc::new(Fatal::default());
    let refused = RefusedQueue::default();
    let mut producer_settings = producer_config(cfg, bootstrap);
    let transactional = match (cfg.delivery, &cfg.transactional_id) {
        (config::Delivery::ExactlyOnce, Some(id)) => {
            // Only this producer is transactional: the service's other producers (lifecycle,
            // web, stages) would fence it if they shared its id. Transactions need the
            // idempotent producer, whatever the overlays say.
            producer_settings
                .set("transactional.id", id)
                .set("enable.idempotence", "true");
            true
        }
        _ => false,
    };
    let producer: ThreadedProducer<DeliveryContext> = producer_settings
        .create_with_context(DeliveryContext {
            metrics: metrics.clone(),
            fatal: fatal.clone(),
            refused: refused.clone(),
        })
        .map_err(KafkaSetupError::Client)?;
    if transactional {
        // Fences an earlier producer with this id (a crashed predecessor) and aborts what it
        // left open, so its half-done outputs never become visible.
        producer
            .init_transactions(cfg.shutdown_timeout)
            .map_err(KafkaSetupError::Transactions)?;
    }
    let restore_config = consumer_config(cfg, bootstrap);
    changelog::ensure_topic(
        &restore_config,
        &cfg.input_topic,
        &cfg.state_topic,
        cfg.topic_replication(),
        cfg.shutdown_timeout,
    )
    .map_err(KafkaSetupError::State)?;
    let shared = Arc::new(Shared {
        input_topic: cfg.input_topic.clone(),
        source_topic,
        task_topic: cfg.task_topic.clone(),
        dlq_topic: cfg.dlq_topic.clone(),
        state_topic: cfg.state_topic.clone(),
        restore_config,
        restore_timeout: cfg.restore_timeout,
        pipeline,
        metrics,
        health,
        producer,
        transactional,
        in_transaction: Default::default(),
        trackers: Mutex::default(),
        generation: AtomicU64::new(0),
        revoked: Mutex::default(),
        dispatched: AtomicU64::new(0),
        processed: AtomicU64::new(0),
        max_in_flight: cfg.max_in_flight,
        drain_timeout: cfg.shutdown_timeout,
        stop_by: Mutex::default(),
        fatal,
        refused,
        broker_heard: Mutex::default(),
    });
    if transactional {
        shared
            .begin_transaction()
            .map_err(KafkaSetupError::Transaction)?;
    }
    let consumer: BaseConsumer<ConsumerCtx> = with_statistics(consumer_config(cfg, bootstrap))
        .create_with_context(ConsumerCtx {
            shared: shared.clone(),
        })
        .map_err(KafkaSetupError::Client)?;
    consumer
        .subscribe(&[&cfg.input_topic])
        .map_err(KafkaSetupError::Client)?;

    let workers = match cfg.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        n => n,
    };
    let commit_interval = cfg.commit_interval;
    let thread = std::thread::Builder::new()
        .name("dissuade-consumer".into())
        .spawn(move || poll_loop(consumer, shared, workers, commit_interval, shutdown))
        .map_err(KafkaSetupError::Thread)?;
    Ok(ProcessorHandle { thread, stages })
}

/// Installs a reloaded set whose features changed, after filling its windows from the input
/// as a restart would: every record dispatched so far is finished and committed, so the
/// replay up to the committed offsets holds exactly the calls processed, and processing
/// resumes on the new set after them.
fn install_with_windows(
    consumer: &BaseConsumer<ConsumerCtx>,
    shared: &Shared,
    candidate: crate::pipeline::Candidate,
) {
    let started = Instant::now();
    let drained = shared.drain();
    if !drained {
        warn!("reload: records still in flight after the drain timeout; the new windows may miss them");
    }
    shared.checkpoint(consumer, None, CommitMode::Sync, drained);
    let partitions: Vec<i32> = shared
        .trackers
        .lock()
        .expect("trackers lock")
        .keys()
        .copied()
        .collect();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let pipeline = &shared.pipeline;
    let replayed = window_replay::replay_span(
        &shared.restore_config,
        &shared.input_topic,
        &partitions,
        candidate.windows_span(),
        shared.restore_timeout,
        |m| {
            pipeline.replay_into_candidate(
                &candidate,
                m.payload().unwrap_or_default(),
                m.partition(),
                now_ms,
            )
        },
    );
    match replayed {
        Ok(r) => info!(
            calls = r.calls,
            took_ms = started.elapsed().as_millis() as u64,
            "reload: new windows filled from the input; the new set is live"
        ),
        Err(e) => warn!(
            error = %e,
            "reload: new windows not filled; the new set is live and its figures start from the calls read from now on"
        ),
    }
    pipeline.install(candidate);
    shared.metrics.live_changed(&pipeline.live());
}

fn poll_loop(
    consumer: BaseConsumer<ConsumerCtx>,
    shared: Arc<Shared>,
    workers: usize,
    commit_interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let (senders, worker_threads): (Vec<SyncSender<Record>>, Vec<_>) = (0..workers)
        .map(|i| {
            let (tx, rx) = sync_channel::<Record>(2048);
            let shared = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("dissuade-worker-{i}"))
                .spawn(move || work(rx, &shared))
                .expect("spawn worker thread");
            (tx, t)
        })
        .unzip();
    info!(workers, topic = %shared.input_topic, "processor started");

    let mut cache: HashMap<i32, Tracker> = HashMap::new();
    let mut cache_generation = u64::MAX;
    let mut last_commit = Instant::now();
    let mut last_housekeeping = Instant::now();
    let mut failure = None;
    let figures_in_records = shared.pipeline.caller_figures_in_records();
    'poll: loop {
        if shutdown.is_cancelled() {
            break;
        }
        if let Some(f) = shared.fatal.get() {
            failure = Some(f);
            break;
        }
        shared.reroute_refused();
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let generation = shared.generation.load(Ordering::Acquire);
                if generation != cache_generation {
                    cache.clear();
                    cache_generation = generation;
                }
                let partition = m.partition();
                let offsets = cache
                    .entry(partition)
                    .or_insert_with(|| shared.tracker(partition))
                    .clone();
                let mut record = Record {
                    partition,
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    caller_figures: if figures_in_records {
                        by_caller::caller_figures_of(&m)
                    } else {
                        None
                    },
                    origin: if figures_in_records {
                        by_caller::input_position(&m)
                    } else {
                        None
                    },
                    offsets,
                };
                let tx = &senders[partition as usize % workers];
                shared.dispatched.fetch_add(1, Ordering::Release);
                loop {
                    match tx.try_send(record) {
                        Ok(()) => break,
                        Err(TrySendError::Full(r)) => {
                            record = r;
                            if shutdown.is_cancelled() {
                                // Not processed, so not committed: it is redelivered.
                                shared.dispatched.fetch_sub(1, Ordering::Release);
                                break 'poll;
                            }
                            shared.reroute_refused();
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        Err(TrySendError::Disconnected(_)) => {
                            failure = Some("a pipeline worker stopped".to_string());
                            break 'poll;
                        }
                    }
                }
            }
            Some(Err(e)) => warn!(error = %e, "consume error"),
            None => {}
        }
        if last_commit.elapsed() >= commit_interval {
            // A transaction must hold every output of the offsets it commits: wait for the
            // records in hand first (the poll thread dispatches nothing meanwhile).
            let drained = !shared.transactional || shared.drain();
            shared.checkpoint(&consumer, None, CommitMode::Async, drained);
            last_commit = Instant::now();
        }
        if last_housekeeping.elapsed() >= Duration::from_secs(1) {
            let dispatcher = shared.pipeline.dispatcher();
            dispatcher.purge_expired();
            let metrics = &shared.metrics;
            metrics.open_tasks.set(dispatcher.open_count() as i64);
            catch_up(&metrics.not_remembered, dispatcher.not_remembered());
            catch_up(&metrics.evicted, dispatcher.evicted());
            shared.pipeline.windows().export(metrics);
            if let Some(candidate) = shared.pipeline.take_pending() {
                install_with_windows(&consumer, &shared, candidate);
            }
            last_housekeeping = Instant::now();
        }
    }

    // One deadline for the whole stop: the drain, the workers, the final commit and the
    // revocation that leaving the group triggers all end by it.
    *shared.stop_by.lock().expect("stop lock") = Some(Instant::now() + shared.drain_timeout);
    info!("processor stopping: finishing in-flight records");
    let drained = shared.drain();
    drop(senders);
    for t in worker_threads {
        let _ = t.join();
    }
    if failure.is_none() {
        failure = shared.fatal.get();
    }
    if !shared.transactional {
        shared.commit(&consumer, &shared.committable(None), CommitMode::Sync);
    } else if failure.is_none() && drained {
        if let Err(e) = shared.commit_transaction(&consumer) {
            shared.abort_transaction();
            failure = Some(format!("exactly-once: {e}; the transaction was aborted"));
        }
    } else {
        shared.abort_transaction();
    }
    if !drained {
        warn!("shutdown timeout: some outputs were not acknowledged; their records will be redelivered");
    }
    consumer.unsubscribe();
    info!("processor stopped");
    match failure {
        Some(f) => {
            error!(error = %f, "processor failed");
            Err(f)
        }
        None => Ok(()),
    }
}

/// Raises a counter to a total kept elsewhere.
fn catch_up(counter: &prometheus::IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn work(rx: Receiver<Record>, shared: &Shared) {
    let mut buf = Vec::with_capacity(4096);
    let mut state_buf = Vec::with_capacity(256);
    let mut shadow_buf = Vec::new();
    let mut seq: u64 = 0;
    let mut worker = shared.pipeline.worker();
    let mut next = rx.recv().ok();
    while let Some(record) = next.take() {
        // The record after this one, when it is already waiting: its window state starts
        // loading now, while this one is processed.
        next = rx.try_recv().ok();
        if let Some(Record {
            key: Some(key),
            partition,
            ..
        }) = &next
        {
            worker.prefetch(key, *partition);
        }
        // Past the stop deadline, records are left unprocessed (so uncommitted) for the
        // next owner of their partition.
        if !shared.past_stop() {
            seq += 1;
            let timed = seq & STAGE_SAMPLE_MASK == 0;
            process_record(
                shared,
                &mut worker,
                &record,
                [&mut buf, &mut state_buf, &mut shadow_buf],
                timed,
            );
        }
        shared.processed.fetch_add(1, Ordering::Release);
        if next.is_none() {
            next = rx.recv().ok();
        }
    }
}

/// `buffers`: the task's, the state record's and the shadow rules' scratch.
fn process_record(
    shared: &Shared,
    worker: &mut Worker<'_>,
    r: &Record,
    buffers: [&mut Vec<u8>; 3],
    timed: bool,
) {
    let [buf, state_buf, shadow_buf] = buffers;
    let metrics = &shared.metrics;
    let Some(payload) = r.payload.as_deref().filter(|p| !p.is_empty()) else {
        metrics.events_consumed.inc();
        metrics.record_dead_letter("empty_record");
        let letter = DeadLetter {
            kind: "empty_record",
            field: None,
            message: "record has no payload",
            output_topic: None,
            original_size: 0,
        };
        dead_letter(shared, r, &letter);
        return;
    };
    buf.clear();
    let now = chrono::Utc::now().timestamp_millis();
    let key = r.key.as_deref();
    let figures = r.caller_figures.as_ref();
    let outcome = if timed {
        let mut laps = Laps::start();
        let o = worker.process_timed(payload, key, figures, r.partition, now, buf, &mut laps);
        for stage in Stage::ALL {
            if let Some(d) = laps.laps[stage as usize] {
                metrics.observe_stage(stage, d);
            }
        }
        o
    } else {
        worker.process_timed(payload, key, figures, r.partition, now, buf, &mut NoTimer)
    };
    metrics.record(&outcome);
    if let Some(shadow) = worker.shadow() {
        if let Some(d) = shadow.observe(
            &shared.pipeline,
            &outcome,
            payload,
            r.partition,
            now,
            shadow_buf,
        ) {
            metrics.shadow_event(d);
        }
    }
    match outcome {
        Outcome::Rejected(e) => {
            let message = e.to_string();
            let letter = DeadLetter {
                kind: e.kind(),
                field: e.field(),
                message: &message,
                output_topic: None,
                original_size: payload.len(),
            };
            dead_letter(shared, r, &letter);
        }
        Outcome::Scored(s) => {
            if s.key_matches != Some(true) {
                metrics.key_mismatches.inc();
            }
            match s.action {
                Action::Task(t) => {
                    let outputs = 1 + u32::from(t.state.is_some());
                    r.offsets
                        .lock()
                        .expect("offsets lock")
                        .processed(r.offset, outputs);
                    let task = BaseRecord::with_opaque_to(
                        &shared.task_topic,
                        delivery(
                            r,
                            Output::Task {
                                occurred_at_ms: s.occurred_at_ms,
                            },
                        ),
                    )
                    .key(t.key.as_bytes())
                    .payload(buf.as_slice());
                    produce(shared, task);
                    if let Some((callee, open)) = t.state {
                        state_buf.clear();
                        changelog::value(&open, r.offset, state_buf);
                        let key = changelog::key(callee);
                        let state = BaseRecord::with_opaque_to(
                            &shared.state_topic,
                            delivery(r, Output::State),
                        )
                        .partition(r.partition)
                        .key(&key[..])
                        .payload(state_buf.as_slice());
                        produce(shared, state);
                    }
                }
                Action::BelowThreshold | Action::Suppressed { .. } => {
                    r.offsets
                        .lock()
                        .expect("offsets lock")
                        .processed(r.offset, 0);
                }
            }
        }
    }
}

fn delivery(r: &Record, output: Output) -> Box<Delivery> {
    Box::new(Delivery {
        offsets: r.offsets.clone(),
        partition: r.partition,
        offset: r.offset,
        origin: r.origin,
        output,
    })
}

fn dead_letter(shared: &Shared, r: &Record, letter: &DeadLetter<'_>) {
    r.offsets
        .lock()
        .expect("offsets lock")
        .processed(r.offset, 1);
    let payload = r.payload.as_deref().unwrap_or_default();
    shared.send_dead_letter(
        delivery(r, Output::DeadLetter { bare: false }),
        r.key.as_deref(),
        payload,
        letter,
        false,
    );
}

/// Produces without waiting for delivery; waits only while the producer queue is full or
/// `max_in_flight` outputs are unacknowledged, and never past the stop deadline. An output
/// refused at once for its own sake (too large) is dead-lettered instead.
fn produce<K: rdkafka::message::ToBytes + ?Sized>(
    shared: &Shared,
    mut record: BaseRecord<'_, K, [u8], Box<Delivery>>,
) {
    while shared.metrics.in_flight.get() as usize >= shared.max_in_flight {
        if shared.past_stop() {
            // Left unacknowledged, so its record is not committed and is redelivered.
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    shared.metrics.in_flight.inc();
    loop {
        match shared.producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if shared.past_stop() {
                    shared.metrics.in_flight.dec();
                    return;
                }
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, r)) if is_about_the_record(&e) => {
                shared.metrics.in_flight.dec();
                shared.reroute(Refused {
                    topic: r.topic.to_owned(),
                    key: r.key.map(|k| k.to_bytes().to_vec()),
                    payload: r.payload.map(<[u8]>::to_vec).unwrap_or_default(),
                    error: e.to_string(),
                    delivery: r.delivery_opaque,
                });
                return;
            }
            Err((e, r)) => {
                shared.metrics.in_flight.dec();
                let d = r.delivery_opaque;
                d.offsets.lock().expect("offsets lock").failed(d.offset);
                shared.metrics.delivery_failures.inc();
                shared.fatal.set(format!(
                    "producing an output of partition {} offset {}: {e}",
                    d.partition, d.offset
                ));
                return;
            }
        }
    }
}
