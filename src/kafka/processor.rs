//! The consumer-group service: input topic → pipeline → task topic, bad records → dead-letter
//! topic, at least once.
//!
//! One thread polls the consumer and hands each record to a worker chosen by partition, so a
//! partition's records are processed in order. Workers run the pipeline and produce without
//! waiting; the producer's delivery callback acknowledges each output to its partition's
//! [`PartitionOffsets`], and the poll thread commits what those allow. Bounded channels and
//! the producer queue give backpressure: when the broker is slow, consumption slows.
//!
//! On revocation the processor finishes the records it has, waits for their outputs and
//! commits before the partitions go; the suppression state of partitions that did not come
//! back is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::offsets::PartitionOffsets;
use super::{consumer_config, producer_config, KafkaSetupError};
use crate::config::KafkaConfig;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::pipeline::{Action, Laps, Outcome, Pipeline, Stage};

/// Dead-letter headers: why the record was rejected and where it came from.
pub const HEADER_ERROR: &str = "dissuade.error";
pub const HEADER_ERROR_KIND: &str = "dissuade.error.kind";
pub const HEADER_ERROR_FIELD: &str = "dissuade.error.field";
pub const HEADER_SOURCE_TOPIC: &str = "dissuade.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "dissuade.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "dissuade.source.offset";

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

/// What the producer hands back with each delivery report.
struct Delivery {
    offsets: Tracker,
    offset: i64,
    /// Event time of a task, for end-to-end latency; `None` for dead letters.
    occurred_at_ms: Option<i64>,
}

struct DeliveryContext {
    metrics: Arc<Metrics>,
    fatal: Arc<Fatal>,
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
                if let Some(at) = d.occurred_at_ms {
                    self.metrics.tasks_delivered.inc();
                    let now_us = chrono::Utc::now().timestamp_micros();
                    self.metrics
                        .observe_end_to_end(now_us.saturating_sub(at * 1000).max(0) as u64);
                }
            }
            Err((e, _)) => {
                d.offsets.lock().expect("offsets lock").failed(d.offset);
                self.metrics.delivery_failures.inc();
                self.fatal.set(format!(
                    "the broker did not accept an output of offset {}: {e}",
                    d.offset
                ));
            }
        }
    }
}

/// State shared by the poll thread, the workers and the rebalance callbacks.
struct Shared {
    input_topic: String,
    task_topic: String,
    dlq_topic: String,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    producer: ThreadedProducer<DeliveryContext>,
    trackers: Mutex<HashMap<i32, Tracker>>,
    /// Bumped on every assignment change so the poll thread refreshes its tracker cache.
    generation: AtomicU64,
    /// Partitions revoked and not yet known to come back.
    revoked: Mutex<HashSet<i32>>,
    dispatched: AtomicU64,
    processed: AtomicU64,
    max_in_flight: usize,
    drain_timeout: Duration,
    fatal: Arc<Fatal>,
}

impl Shared {
    fn tracker(&self, partition: i32) -> Tracker {
        self.trackers
            .lock()
            .expect("trackers lock")
            .entry(partition)
            .or_default()
            .clone()
    }

    /// Waits until the workers have processed every dispatched record and the producer has
    /// delivered every output, up to the drain timeout.
    fn drain(&self) -> bool {
        let deadline = Instant::now() + self.drain_timeout;
        while self.processed.load(Ordering::Acquire) < self.dispatched.load(Ordering::Acquire) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.producer.flush(left).is_ok()
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
}

struct ConsumerCtx {
    shared: Arc<Shared>,
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        let s = &self.shared;
        if stats.brokers.values().any(|b| b.state == "UP") {
            s.health.broker_reachable.store(true, Ordering::Relaxed);
        }
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
        if !s.drain() {
            warn!(
                "revocation: outputs not all delivered in time; their records will be redelivered"
            );
        }
        let offsets = s.committable(Some(&revoked));
        s.commit(consumer, &offsets, CommitMode::Sync);
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
                let dropped = s.pipeline.dispatcher().drop_partitions(&gone);
                s.generation.fetch_add(1, Ordering::Release);
                info!(partitions = ?assigned, dropped_open_tasks = dropped, "partitions assigned");
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
    offsets: Tracker,
}

/// A running processor. Cancel its token to stop it; [`ProcessorHandle::join`] waits for the
/// drain and final commit.
pub struct ProcessorHandle {
    thread: JoinHandle<Result<(), String>>,
}

impl ProcessorHandle {
    pub fn join(self) -> Result<(), String> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err("processor thread panicked".into()))
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Starts the processor: subscribes to the input topic as a member of the configured group.
pub fn spawn(
    cfg: &KafkaConfig,
    bootstrap: &str,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<ProcessorHandle, KafkaSetupError> {
    let fatal = Arc::new(Fatal::default());
    let producer: ThreadedProducer<DeliveryContext> = producer_config(cfg, bootstrap)
        .create_with_context(DeliveryContext {
            metrics: metrics.clone(),
            fatal: fatal.clone(),
        })
        .map_err(KafkaSetupError::Client)?;
    let shared = Arc::new(Shared {
        input_topic: cfg.input_topic.clone(),
        task_topic: cfg.task_topic.clone(),
        dlq_topic: cfg.dlq_topic.clone(),
        pipeline,
        metrics,
        health,
        producer,
        trackers: Mutex::default(),
        generation: AtomicU64::new(0),
        revoked: Mutex::default(),
        dispatched: AtomicU64::new(0),
        processed: AtomicU64::new(0),
        max_in_flight: cfg.max_in_flight,
        drain_timeout: cfg.shutdown_timeout,
        fatal,
    });
    let recovered = super::recover::recover_open_tasks(
        &consumer_config(cfg, bootstrap),
        &cfg.task_topic,
        shared.pipeline.dispatch_window(),
        shared.pipeline.dispatcher(),
        cfg.shutdown_timeout,
    );
    if let Err(e) = recovered {
        warn!(error = %e, "could not read open tasks back from the task topic; repeat calls may get a second task");
    }
    let consumer: BaseConsumer<ConsumerCtx> = consumer_config(cfg, bootstrap)
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
    Ok(ProcessorHandle { thread })
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
    'poll: loop {
        if shutdown.is_cancelled() {
            break;
        }
        if let Some(f) = shared.fatal.get() {
            failure = Some(f);
            break;
        }
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
            shared.commit(&consumer, &shared.committable(None), CommitMode::Async);
            last_commit = Instant::now();
        }
        if last_housekeeping.elapsed() >= Duration::from_secs(1) {
            let dispatcher = shared.pipeline.dispatcher();
            dispatcher.purge_expired();
            let metrics = &shared.metrics;
            metrics.open_tasks.set(dispatcher.open_count() as i64);
            let full = dispatcher.not_remembered();
            metrics
                .not_remembered
                .inc_by(full.saturating_sub(metrics.not_remembered.get()));
            last_housekeeping = Instant::now();
        }
    }

    info!("processor stopping: finishing in-flight records");
    let drained = shared.drain();
    drop(senders);
    for t in worker_threads {
        let _ = t.join();
    }
    if failure.is_none() {
        failure = shared.fatal.get();
    }
    shared.commit(&consumer, &shared.committable(None), CommitMode::Sync);
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

fn work(rx: Receiver<Record>, shared: &Shared) {
    let mut buf = Vec::with_capacity(4096);
    let mut seq: u64 = 0;
    for record in rx {
        seq += 1;
        process_record(shared, &record, &mut buf, seq & STAGE_SAMPLE_MASK == 0);
        shared.processed.fetch_add(1, Ordering::Release);
    }
}

fn process_record(shared: &Shared, r: &Record, buf: &mut Vec<u8>, timed: bool) {
    let metrics = &shared.metrics;
    let Some(payload) = r.payload.as_deref().filter(|p| !p.is_empty()) else {
        metrics.events_consumed.inc();
        metrics.record_dead_letter("empty_record");
        dead_letter(shared, r, "empty_record", None, "record has no payload");
        return;
    };
    buf.clear();
    let now = chrono::Utc::now().timestamp_millis();
    let outcome = if timed {
        let mut laps = Laps::start();
        let o = shared
            .pipeline
            .process_timed(payload, r.partition, now, buf, &mut laps);
        for stage in Stage::ALL {
            if let Some(d) = laps.laps[stage as usize] {
                metrics.observe_stage(stage, d);
            }
        }
        o
    } else {
        shared.pipeline.process(payload, r.partition, now, buf)
    };
    metrics.record(&outcome);
    match outcome {
        Outcome::Rejected(e) => {
            dead_letter(shared, r, e.kind(), e.field(), &e.to_string());
        }
        Outcome::Scored(s) => match s.action {
            Action::Task(t) => {
                let record = BaseRecord::with_opaque_to(
                    &shared.task_topic,
                    Box::new(Delivery {
                        offsets: r.offsets.clone(),
                        offset: r.offset,
                        occurred_at_ms: Some(s.occurred_at_ms),
                    }),
                )
                .key(t.key.as_bytes())
                .payload(buf.as_slice());
                r.offsets
                    .lock()
                    .expect("offsets lock")
                    .processed(r.offset, 1);
                produce(shared, record);
            }
            Action::BelowThreshold | Action::Suppressed { .. } => {
                r.offsets
                    .lock()
                    .expect("offsets lock")
                    .processed(r.offset, 0);
            }
        },
    }
}

fn dead_letter(shared: &Shared, r: &Record, kind: &str, field: Option<&str>, message: &str) {
    let partition = r.partition.to_string();
    let offset = r.offset.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: HEADER_ERROR,
            value: Some(message),
        })
        .insert(Header {
            key: HEADER_ERROR_KIND,
            value: Some(kind),
        })
        .insert(Header {
            key: HEADER_SOURCE_TOPIC,
            value: Some(shared.input_topic.as_str()),
        })
        .insert(Header {
            key: HEADER_SOURCE_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: HEADER_SOURCE_OFFSET,
            value: Some(offset.as_str()),
        });
    if let Some(field) = field {
        headers = headers.insert(Header {
            key: HEADER_ERROR_FIELD,
            value: Some(field),
        });
    }
    let empty: &[u8] = &[];
    let mut record = BaseRecord::with_opaque_to(
        &shared.dlq_topic,
        Box::new(Delivery {
            offsets: r.offsets.clone(),
            offset: r.offset,
            occurred_at_ms: None,
        }),
    )
    .payload(r.payload.as_deref().unwrap_or(empty))
    .headers(headers);
    if let Some(k) = r.key.as_deref() {
        record = record.key(k);
    }
    r.offsets
        .lock()
        .expect("offsets lock")
        .processed(r.offset, 1);
    produce(shared, record);
}

/// Produces without waiting for delivery; waits only while the producer queue is full or
/// `max_in_flight` outputs are unacknowledged.
fn produce<K: rdkafka::message::ToBytes + ?Sized>(
    shared: &Shared,
    mut record: BaseRecord<'_, K, [u8], Box<Delivery>>,
) {
    while shared.metrics.in_flight.get() as usize >= shared.max_in_flight {
        std::thread::sleep(Duration::from_micros(100));
    }
    shared.metrics.in_flight.inc();
    loop {
        match shared.producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, r)) => {
                shared.metrics.in_flight.dec();
                let offset = r.delivery_opaque.offset;
                r.delivery_opaque
                    .offsets
                    .lock()
                    .expect("offsets lock")
                    .failed(offset);
                shared.metrics.delivery_failures.inc();
                shared
                    .fatal
                    .set(format!("producing an output of offset {offset}: {e}"));
                return;
            }
        }
    }
}
