//! Caller windows on an input keyed by callee: the repartition by caller.
//!
//! The input is keyed (so partitioned) by callee: one caller's calls are spread over every
//! partition, so over every instance, and a caller-side window kept by the processor would
//! see only its own share of them. When an enabled rule reads a caller-side window, the
//! calls are regrouped the way Kafka Streams repartitions, through two internal topics:
//!
//! 1. **rekey** (group `<group_id>.rekey`): input → `kafka.by_caller_topic`, keyed by a hash
//!    of the caller's number (no number in the key), the record unchanged, its input
//!    partition and key in headers. A record that is not a valid event goes straight on to
//!    `kafka.with_caller_figures_topic` at its input partition, where the processor
//!    dead-letters it with the reason.
//! 2. **callers** (group `<group_id>.callers`): `kafka.by_caller_topic` → the caller
//!    windows (kept per partition of that topic) → `kafka.with_caller_figures_topic`, back at
//!    the call's input partition with its input key, the caller figures it saw in a header.
//! 3. The processor reads `kafka.with_caller_figures_topic` in place of the input: callee
//!    windows, scoring and dispatch as without the stages. Its partitions are the input's one
//!    for one, so open tasks and callee windows stay where they were.
//!
//! Each hop is at least once: it commits what it read only after the broker acknowledged
//! what it produced, so a crash repeats records rather than losing them. A repeated call is
//! counted once by the windows (they know the event) and a repeated task has the same id.
//! On assignment, the caller windows of new partitions are rebuilt from the by-caller topic
//! as the processor rebuilds its own from its input ([`super::window_replay`]). Every
//! instance runs both stages; each scales out with its own consumer group.
//!
//! The price: every call crosses the broker three times instead of once, and a task waits
//! for two more hops.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::offsets::PartitionOffsets;
use super::store::{self, StoreError};
use super::{consumer_config, producer_config, window_replay, KafkaSetupError};
use crate::config::KafkaConfig;
use crate::features::{Figures, Windows, MAX_FEATURES, NO_FIGURES};
use crate::metrics::Metrics;
use crate::phone::caller_key;
use crate::pipeline::Pipeline;

/// The caller figures a call saw: `(feature index, f64 little-endian)` for each figure.
pub const HEADER_CALLER_FIGURES: &str = "dissuade-caller-figures";
/// The input partition of a record on its way through the stages (decimal).
pub const HEADER_INPUT_PARTITION: &str = "dissuade-input-partition";
/// The input key of a record on its way through the stages (absent: it had none).
pub const HEADER_INPUT_KEY: &str = "dissuade-input-key";
/// The input offset of a record on its way through the stages (decimal): dead letters name
/// the input position, not the internal topic's.
pub const HEADER_INPUT_OFFSET: &str = "dissuade-input-offset";

/// Encodes the figures that are present (not NaN).
pub fn encode_figures(figures: &Figures, out: &mut Vec<u8>) {
    out.clear();
    for (i, f) in figures.iter().enumerate() {
        if !f.is_nan() {
            out.push(i as u8);
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
}

/// Decodes [`encode_figures`]; `None` for bytes it did not write.
pub fn decode_figures(bytes: &[u8]) -> Option<Figures> {
    if !bytes.len().is_multiple_of(9) {
        return None;
    }
    let mut figures = NO_FIGURES;
    for chunk in bytes.chunks_exact(9) {
        let slot = figures.get_mut(usize::from(chunk[0]))?;
        *slot = f64::from_le_bytes(chunk[1..].try_into().expect("8 bytes"));
    }
    Some(figures)
}

/// The caller figures a record of the with-caller-figures topic carries, if any.
pub fn caller_figures_of(m: &BorrowedMessage<'_>) -> Option<Figures> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == HEADER_CALLER_FIGURES)
        .and_then(|h| decode_figures(h.value?))
}

/// Running stages; [`Stages::join`] waits for both after the shutdown token is cancelled.
pub struct Stages {
    threads: Vec<(&'static str, JoinHandle<Result<(), String>>)>,
}

impl Stages {
    pub fn is_finished(&self) -> bool {
        self.threads.iter().any(|(_, t)| t.is_finished())
    }

    /// Waits for both stages; the first failure, named by its stage.
    pub fn join(self) -> Result<(), String> {
        let mut first = Ok(());
        for (name, t) in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err("thread panicked".into()))
                .map_err(|e| format!("by-caller stage {name}: {e}"));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// Creates the two internal topics when missing (with the input's partition count), then
/// starts both stages. The processor must then read `kafka.with_caller_figures_topic`.
pub fn spawn(
    cfg: &KafkaConfig,
    bootstrap: &str,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<Stages, KafkaSetupError> {
    ensure_topics(cfg, bootstrap).map_err(KafkaSetupError::ByCaller)?;
    let rules = pipeline.rules();
    let rekey = Step::Rekey {
        pipeline: pipeline.clone(),
        by_caller_topic: cfg.by_caller_topic.clone(),
        figures_topic: cfg.with_caller_figures_topic.clone(),
    };
    let callers = Step::Callers {
        windows: Box::new(Windows::for_callers(
            rules.features(),
            rules.window_limits(),
        )),
        pipeline: pipeline.clone(),
        figures_topic: cfg.with_caller_figures_topic.clone(),
        replay_config: group_config(cfg, bootstrap, "callers"),
        restore_timeout: cfg.restore_timeout,
        held: Mutex::default(),
    };
    let mut threads = Vec::new();
    for (step, topic) in [
        (rekey, cfg.input_topic.clone()),
        (callers, cfg.by_caller_topic.clone()),
    ] {
        let name = step.name();
        let hop = Arc::new(Hop {
            step,
            metrics: metrics.clone(),
            trackers: Mutex::default(),
            producer: producer_config(cfg, bootstrap)
                .create_with_context(HopDelivery::default())
                .map_err(KafkaSetupError::Client)?,
            drain_timeout: cfg.shutdown_timeout,
        });
        let consumer: BaseConsumer<HopContext> =
            super::with_statistics(group_config(cfg, bootstrap, name))
                .create_with_context(HopContext { hop: hop.clone() })
                .map_err(KafkaSetupError::Client)?;
        consumer
            .subscribe(&[&topic])
            .map_err(KafkaSetupError::Client)?;
        let commit_interval = cfg.commit_interval;
        let shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dissuade-{name}"))
            .spawn(move || run(&consumer, &hop, commit_interval, &shutdown))
            .map_err(KafkaSetupError::Thread)?;
        info!(stage = name, %topic, "by-caller stage started");
        threads.push((name, thread));
    }
    Ok(Stages { threads })
}

fn group_config(cfg: &KafkaConfig, bootstrap: &str, stage: &str) -> ClientConfig {
    let mut c = consumer_config(cfg, bootstrap);
    c.set("group.id", format!("{}.{stage}", cfg.group_id));
    c
}

/// Creates the by-caller and with-caller-figures topics when missing, with the input's
/// partition count; the latter must have a partition for every input partition.
fn ensure_topics(cfg: &KafkaConfig, bootstrap: &str) -> Result<(), StoreError> {
    let client = consumer_config(cfg, bootstrap);
    let probe: BaseConsumer = client.create().map_err(StoreError::Metadata)?;
    let timeout = cfg.shutdown_timeout.max(Duration::from_secs(10));
    let needed = store::partition_count(&probe, &cfg.input_topic, timeout)?
        .ok_or_else(|| StoreError::NoSourceTopic(cfg.input_topic.clone()))?;
    for (topic, config_key) in [
        (&cfg.by_caller_topic, "kafka.by_caller_topic"),
        (
            &cfg.with_caller_figures_topic,
            "kafka.with_caller_figures_topic",
        ),
    ] {
        match store::partition_count(&probe, topic, timeout)? {
            Some(found) if found < needed && topic == &cfg.with_caller_figures_topic => {
                return Err(StoreError::TooFewPartitions {
                    what: "calls with caller figures",
                    topic: topic.clone(),
                    source_topic: cfg.input_topic.clone(),
                    config_key,
                    found,
                    needed,
                });
            }
            Some(_) => {}
            None => store::create_topics(
                &client,
                "by-caller stage",
                &[topic],
                needed,
                cfg.topic_replication(),
                &[],
                timeout,
            )?,
        }
    }
    Ok(())
}

/// What a stage does with each record.
enum Step {
    Rekey {
        /// Decodes and checks records as the processor will: what it would dead-letter
        /// skips the caller windows.
        pipeline: Arc<Pipeline>,
        by_caller_topic: String,
        figures_topic: String,
    },
    Callers {
        pipeline: Arc<Pipeline>,
        windows: Box<Windows>,
        figures_topic: String,
        /// Consumer settings of this stage's group, for reading its windows back.
        replay_config: ClientConfig,
        restore_timeout: Duration,
        /// Partitions whose windows this instance holds.
        held: Mutex<HashSet<i32>>,
    },
}

/// Where and how a consumed record is produced again; its payload goes on unchanged.
struct Forward<'a> {
    topic: &'a str,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    headers: OwnedHeaders,
    outcome: &'static str,
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::Rekey { .. } => "rekey",
            Step::Callers { .. } => "callers",
        }
    }

    fn forward<'a>(&'a self, m: &BorrowedMessage<'_>, scratch: &mut Vec<u8>) -> Forward<'a> {
        let payload = m.payload().unwrap_or_default();
        match self {
            Step::Rekey {
                pipeline,
                by_caller_topic,
                figures_topic,
            } => {
                let (input_partition, input_offset) =
                    (m.partition().to_string(), m.offset().to_string());
                let mut headers = OwnedHeaders::new_with_capacity(3)
                    .insert(Header {
                        key: HEADER_INPUT_PARTITION,
                        value: Some(input_partition.as_bytes()),
                    })
                    .insert(Header {
                        key: HEADER_INPUT_OFFSET,
                        value: Some(input_offset.as_bytes()),
                    });
                if let Some(key) = m.key() {
                    headers = headers.insert(Header {
                        key: HEADER_INPUT_KEY,
                        value: Some(key),
                    });
                }
                match pipeline.admit(payload, now_ms()) {
                    Ok(event) => Forward {
                        topic: by_caller_topic,
                        partition: None,
                        key: Some(caller_key(&event.caller_number).to_be_bytes().to_vec()),
                        headers,
                        outcome: "forwarded",
                    },
                    Err(_) => Forward {
                        topic: figures_topic,
                        partition: Some(m.partition()),
                        key: m.key().map(<[u8]>::to_vec),
                        headers,
                        outcome: "invalid",
                    },
                }
            }
            Step::Callers {
                pipeline,
                windows,
                figures_topic,
                ..
            } => {
                let origin = input_origin(m);
                let outcome = match pipeline.admit(payload, now_ms()) {
                    Ok(event) => {
                        let figures =
                            pipeline
                                .rules()
                                .caller_figures(&event, windows, m.partition());
                        encode_figures(&figures, scratch);
                        "forwarded"
                    }
                    Err(_) => {
                        scratch.clear();
                        "invalid"
                    }
                };
                let position = origin.position.map(|(p, o)| (p.to_string(), o.to_string()));
                let mut headers = OwnedHeaders::new_with_capacity(3).insert(Header {
                    key: HEADER_CALLER_FIGURES,
                    value: Some(scratch.as_slice()),
                });
                if let Some((p, o)) = &position {
                    headers = headers
                        .insert(Header {
                            key: HEADER_INPUT_PARTITION,
                            value: Some(p.as_bytes()),
                        })
                        .insert(Header {
                            key: HEADER_INPUT_OFFSET,
                            value: Some(o.as_bytes()),
                        });
                }
                Forward {
                    topic: figures_topic,
                    // A record from outside the rekey stage, without its origin, goes by key.
                    partition: origin.partition,
                    key: origin.key,
                    headers,
                    outcome,
                }
            }
        }
    }

    /// Rebuilds the state of newly assigned partitions before their first record.
    fn assigned(&self, partitions: &[i32], topic: &str) {
        let Step::Callers {
            pipeline,
            windows,
            replay_config,
            restore_timeout,
            held,
            ..
        } = self
        else {
            return;
        };
        let new: Vec<i32> = {
            let mut held = held.lock().expect("held lock");
            let new = partitions
                .iter()
                .copied()
                .filter(|p| !held.contains(p))
                .collect();
            held.extend(partitions);
            new
        };
        let now_ms = now_ms();
        let replayed = window_replay::replay_span(
            replay_config,
            topic,
            &new,
            windows.span(),
            *restore_timeout,
            |m| match pipeline.admit(m.payload().unwrap_or_default(), now_ms) {
                Ok(event) => {
                    pipeline
                        .rules()
                        .caller_figures(&event, windows, m.partition());
                    true
                }
                Err(_) => false,
            },
        );
        if let Err(e) = replayed {
            warn!(
                error = %e,
                "caller windows not rebuilt; caller figures on these partitions start from the calls read from now on"
            );
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where a record on its way through the stages came from in the input.
#[derive(Debug, Default)]
struct Origin {
    partition: Option<i32>,
    /// Partition and offset, when both are known.
    position: Option<(i32, i64)>,
    key: Option<Vec<u8>>,
}

fn input_origin(m: &BorrowedMessage<'_>) -> Origin {
    let mut origin = Origin::default();
    let mut offset = None;
    fn number<T: std::str::FromStr>(v: Option<&[u8]>) -> Option<T> {
        std::str::from_utf8(v?).ok()?.parse().ok()
    }
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            match h.key {
                HEADER_INPUT_PARTITION => origin.partition = number(h.value),
                HEADER_INPUT_OFFSET => offset = number(h.value),
                HEADER_INPUT_KEY => origin.key = h.value.map(<[u8]>::to_vec),
                _ => {}
            }
        }
    }
    origin.position = origin.partition.zip(offset);
    origin
}

/// The input partition and offset a record of the with-caller-figures topic stands for.
pub fn input_position(m: &BorrowedMessage<'_>) -> Option<(i32, i64)> {
    input_origin(m).position
}

type Tracker = Arc<Mutex<PartitionOffsets>>;

/// One stage: its step, its producer and the offsets it may commit.
struct Hop {
    step: Step,
    metrics: Arc<Metrics>,
    trackers: Mutex<HashMap<i32, Tracker>>,
    producer: ThreadedProducer<HopDelivery>,
    drain_timeout: Duration,
}

impl Hop {
    fn committable(&self, topic: &str, partitions: Option<&[i32]>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (p, t) in self.trackers.lock().expect("trackers lock").iter() {
            if partitions.is_some_and(|ps| !ps.contains(p)) {
                continue;
            }
            if let Some(o) = t.lock().expect("offsets lock").committable() {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(o));
            }
        }
        tpl
    }
}

/// The first delivery the broker finally refused: the stage stops without committing it.
#[derive(Default)]
struct HopDelivery {
    failed: Mutex<Option<String>>,
}

impl ClientContext for HopDelivery {}

impl ProducerContext for HopDelivery {
    type DeliveryOpaque = Box<(Tracker, i64)>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Box<(Tracker, i64)>) {
        let (tracker, offset) = *d;
        let mut offsets = tracker.lock().expect("offsets lock");
        match result {
            Ok(_) => offsets.acknowledged(offset),
            Err((e, _)) => {
                offsets.failed(offset);
                self.failed
                    .lock()
                    .expect("failed lock")
                    .get_or_insert_with(|| format!("the broker did not accept a record: {e}"));
            }
        }
    }
}

struct HopContext {
    hop: Arc<Hop>,
}

impl ClientContext for HopContext {
    fn stats(&self, stats: rdkafka::statistics::Statistics) {
        let hop = &self.hop;
        let held = hop.trackers.lock().expect("trackers lock");
        // One topic per stage; as the processor, count what is not consumed yet.
        let lag: i64 = stats
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|(id, p)| held.contains_key(id) && p.hi_offset >= 0 && p.app_offset >= 0)
            .map(|(_, p)| (p.hi_offset - p.app_offset).max(0))
            .sum();
        hop.metrics.set_by_caller_lag(hop.step.name(), lag);
    }
}

impl ConsumerContext for HopContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let hop = &self.hop;
        let Some(topic) = tpl.elements().first().map(|e| e.topic().to_owned()) else {
            return;
        };
        let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        if hop.producer.flush(hop.drain_timeout).is_err() {
            warn!(
                stage = hop.step.name(),
                "revocation: records not all delivered in time; they will be repeated"
            );
        }
        let offsets = hop.committable(&topic, Some(&revoked));
        if offsets.count() > 0 {
            if let Err(e) = consumer.commit(&offsets, CommitMode::Sync) {
                warn!(stage = hop.step.name(), error = %e, "commit on revocation failed");
            }
        }
        let mut trackers = hop.trackers.lock().expect("trackers lock");
        for p in &revoked {
            trackers.remove(p);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let hop = &self.hop;
                let Some(topic) = tpl.elements().first().map(|e| e.topic().to_owned()) else {
                    return;
                };
                let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                {
                    let mut trackers = hop.trackers.lock().expect("trackers lock");
                    for p in &assigned {
                        trackers.insert(*p, Tracker::default());
                    }
                }
                hop.step.assigned(&assigned, &topic);
                info!(stage = hop.step.name(), partitions = ?assigned, "partitions assigned");
            }
            Rebalance::Error(e) => {
                warn!(stage = self.hop.step.name(), error = %e, "rebalance error")
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

fn run(
    consumer: &BaseConsumer<HopContext>,
    hop: &Hop,
    commit_interval: Duration,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let name = hop.step.name();
    let mut scratch = Vec::with_capacity(MAX_FEATURES * 9);
    let mut last_commit = Instant::now();
    let mut failure = None;
    let mut topic = String::new();
    'poll: while !shutdown.is_cancelled() {
        if let Some(f) = hop
            .producer
            .context()
            .failed
            .lock()
            .expect("failed lock")
            .clone()
        {
            failure = Some(f);
            break;
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                if topic.is_empty() {
                    topic = m.topic().to_owned();
                }
                let Some(tracker) = hop
                    .trackers
                    .lock()
                    .expect("trackers lock")
                    .get(&m.partition())
                    .cloned()
                else {
                    continue;
                };
                let out = hop.step.forward(&m, &mut scratch);
                tracker
                    .lock()
                    .expect("offsets lock")
                    .processed(m.offset(), 1);
                let mut record =
                    BaseRecord::with_opaque_to(out.topic, Box::new((tracker, m.offset())))
                        .payload(m.payload().unwrap_or_default())
                        .headers(out.headers);
                if let Some(key) = &out.key {
                    record = record.key(key.as_slice());
                }
                if let Some(p) = out.partition {
                    record = record.partition(p);
                }
                loop {
                    match hop.producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            if shutdown.is_cancelled() {
                                break 'poll;
                            }
                            record = r;
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        Err((e, r)) => {
                            let (tracker, offset) = *r.delivery_opaque;
                            tracker.lock().expect("offsets lock").failed(offset);
                            failure = Some(format!("producing to {}: {e}", out.topic));
                            break 'poll;
                        }
                    }
                }
                hop.metrics.by_caller_record(name, out.outcome);
            }
            Some(Err(e)) => warn!(stage = name, error = %e, "consume error"),
            None => {}
        }
        if last_commit.elapsed() >= commit_interval && !topic.is_empty() {
            commit(consumer, hop, &topic, CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    if hop.producer.flush(hop.drain_timeout).is_err() {
        warn!(
            stage = name,
            "stopping: records not all delivered in time; they will be repeated"
        );
    }
    if !topic.is_empty() {
        commit(consumer, hop, &topic, CommitMode::Sync);
    }
    consumer.unsubscribe();
    info!(stage = name, "by-caller stage stopped");
    match failure.or_else(|| {
        hop.producer
            .context()
            .failed
            .lock()
            .expect("failed lock")
            .clone()
    }) {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

fn commit(consumer: &BaseConsumer<HopContext>, hop: &Hop, topic: &str, mode: CommitMode) {
    let tpl = hop.committable(topic, None);
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, mode) {
            warn!(stage = hop.step.name(), error = %e, "offset commit failed; the next commit covers it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_survive_the_header() {
        let mut figures = NO_FIGURES;
        figures[0] = 5.0;
        figures[3] = 0.25;
        figures[15] = 1e9;
        let mut bytes = Vec::new();
        encode_figures(&figures, &mut bytes);
        assert_eq!(bytes.len(), 27);
        let back = decode_figures(&bytes).unwrap();
        for (i, (a, b)) in figures.iter().zip(&back).enumerate() {
            assert!(a.to_bits() == b.to_bits(), "slot {i}: {a} vs {b}");
        }
    }

    #[test]
    fn foreign_header_bytes_are_not_figures() {
        assert!(decode_figures(&[1, 2, 3]).is_none());
        let mut bytes = vec![16];
        bytes.extend_from_slice(&1.0f64.to_le_bytes());
        assert!(
            decode_figures(&bytes).is_none(),
            "index past the last feature"
        );
        assert_eq!(decode_figures(&[]).map(|f| f[0].is_nan()), Some(true));
    }
}
