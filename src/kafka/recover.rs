//! Rebuilds the one-open-task state from the task topic when the service starts.
//!
//! The task topic is the durable record of which people already have an open task. Without
//! reading it back, a restarted (or newly started) instance would open a second task for a
//! person called again within the suppression window.

use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use tracing::{info, warn};

use crate::dispatch::{callee_key, Dispatcher};
use crate::rules::Level;
use crate::task::TaskId;

#[derive(Deserialize)]
struct RecoveredTask<'a> {
    #[serde(borrow)]
    task_id: &'a str,
    level: Level,
    #[serde(borrow)]
    occurred_at: &'a str,
    #[serde(borrow)]
    victim: RecoveredVictim<'a>,
}

#[derive(Deserialize)]
struct RecoveredVictim<'a> {
    #[serde(borrow)]
    number: std::borrow::Cow<'a, str>,
}

/// What recovery found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Task records read back.
    pub read: u64,
    /// Records that were not tasks this version can read (skipped).
    pub unreadable: u64,
}

/// Reads the task topic's records of the last `2 × window` (by record timestamp) up to its
/// current end, and records each task as open in `dispatcher`.
pub fn recover_open_tasks(
    consumer_config: &ClientConfig,
    task_topic: &str,
    window: Duration,
    dispatcher: &Dispatcher,
    timeout: Duration,
) -> Result<Recovered, KafkaError> {
    let mut config = consumer_config.clone();
    config
        .set("enable.auto.commit", "false")
        // The end of each partition is taken from fetch responses: the embedded broker
        // (tansu 0.6) answers ListOffsets(latest) with the newest batch's base offset + 1,
        // which can be short of the real end.
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<EndIsNotAnError> = config.create_with_context(EndIsNotAnError)?;
    let metadata = consumer.fetch_metadata(Some(task_topic), timeout)?;
    let Some(topic) = metadata.topics().iter().find(|t| t.name() == task_topic) else {
        return Ok(Recovered::default());
    };
    let partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    if partitions.is_empty() {
        return Ok(Recovered::default());
    }
    let since_ms = chrono::Utc::now().timestamp_millis() - 2 * window.as_millis() as i64;
    // Start at the window where the broker can tell; otherwise at the beginning, skipping
    // older records by timestamp below.
    let mut assignment = TopicPartitionList::new();
    let mut by_time = TopicPartitionList::new();
    for p in &partitions {
        assignment.add_partition_offset(task_topic, *p, Offset::Beginning)?;
        by_time.add_partition_offset(task_topic, *p, Offset::Offset(since_ms))?;
    }
    if let Ok(starts) = consumer.offsets_for_times(by_time, timeout) {
        for e in starts.elements() {
            if let Offset::Offset(o) = e.offset() {
                assignment.set_partition_offset(task_topic, e.partition(), Offset::Offset(o))?;
            }
        }
    }
    consumer.assign(&assignment)?;

    let mut found = Recovered::default();
    let mut remaining = partitions;
    let deadline = Instant::now() + timeout;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            warn!(
                partitions_unfinished = remaining.len(),
                "task recovery timed out; some open tasks may be opened again"
            );
            break;
        }
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                remaining.retain(|r| *r != p);
                continue;
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(m)) => m,
        };
        if m.timestamp().to_millis().is_some_and(|t| t < since_ms) {
            continue;
        }
        match m.payload().and_then(restore_one) {
            Some((key, level, at, id)) => {
                dispatcher.restore(key, level, at, id);
                found.read += 1;
            }
            None => found.unreadable += 1,
        }
    }
    info!(
        topic = task_topic,
        tasks = found.read,
        skipped = found.unreadable,
        open = dispatcher.open_count(),
        "recovered open tasks from the task topic"
    );
    Ok(found)
}

/// Reaching the end of a partition is how recovery knows it is done, not a client error.
struct EndIsNotAnError;

impl ClientContext for EndIsNotAnError {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            warn!(error = %error, reason, "kafka client error during task recovery");
        }
    }
}

impl ConsumerContext for EndIsNotAnError {}

fn restore_one(payload: &[u8]) -> Option<(u64, Level, i64, TaskId)> {
    let t: RecoveredTask = serde_json::from_slice(payload).ok()?;
    let at = chrono::DateTime::parse_from_rfc3339(t.occurred_at)
        .ok()?
        .timestamp_millis();
    let id = TaskId::parse(t.task_id)?;
    Some((callee_key(&t.victim.number), t.level, at, id))
}
