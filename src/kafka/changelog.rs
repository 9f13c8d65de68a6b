//! The open-task state, kept in Kafka so that it follows its partitions.
//!
//! As Kafka Streams keeps a state store per task, each input partition's open tasks are
//! written to the same-numbered partition of a compacted changelog topic (key: the callee's
//! 64-bit hash, never the number; value: the [`OpenTask`] as JSON with the input offset that
//! produced it). Whenever a partition is assigned (at start, or when another instance of the
//! group dies or scales in) its state is read back from its changelog partition before any of
//! its records are processed, and it is dropped when the partition goes. A changelog write is
//! one of the outputs of the record that caused it: the input offset is committed only once it
//! is acknowledged.
//!
//! The restore takes the state *as of the group's committed offset*: records written for
//! input offsets at or past it are skipped, because those input records are delivered again
//! and write them again. Restoring them would let a redelivered event meet state from its own
//! future (a task opened by a later event, a clock moved past its window) and decide
//! differently the second time. Compaction must not remove the last record below the
//! committed offset in favour of one above it, so the topic keeps every record for
//! [`MIN_COMPACTION_LAG`] before compacting.
//!
//! The service creates the topic itself when it is missing, with the input topic's partition
//! count and `cleanup.policy=compact`, and refuses to start when an existing one has fewer
//! partitions than the input.

use std::time::{Duration, Instant};

use rdkafka::message::Message;
use rdkafka::ClientConfig;
use tracing::info;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::store::{self, Changelog, Reader};
use crate::dispatch::{Dispatcher, OpenTask};
use crate::features::Windows;

pub use super::store::MIN_COMPACTION_LAG;

/// The open-task store's errors are the generic store's.
pub type ChangelogError = store::StoreError;

const WHAT: &str = "open-task state";

/// The changelog record key of a callee: its hash in hex.
pub fn key(callee: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    hex::encode_to_slice(callee.to_be_bytes(), &mut out).expect("16 hex digits for 8 bytes");
    out
}

fn parse_key(key: &[u8]) -> Option<u64> {
    let mut bytes = [0u8; 8];
    hex::decode_to_slice(key, &mut bytes).ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A changelog record value: the open task and the input offset whose processing wrote it
/// (absent in records of earlier versions, which restore as they are).
#[derive(Debug, Serialize, Deserialize)]
struct StateValue {
    #[serde(flatten)]
    task: OpenTask,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_offset: Option<i64>,
}

/// The changelog record value of an open task written while processing input offset
/// `source_offset`.
pub fn value(task: &OpenTask, source_offset: i64, out: &mut Vec<u8>) {
    let v = StateValue {
        task: *task,
        source_offset: Some(source_offset),
    };
    serde_json::to_writer(out, &v).expect("an open task always serializes");
}

/// What a restore read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub records: u64,
    /// Records written for input offsets at or past the committed one, left for redelivery.
    pub ahead: u64,
    /// Records this version cannot read (skipped and counted, never fatal).
    pub unreadable: u64,
}

/// Creates the state topic when missing and checks that it has a partition for every input
/// partition.
pub fn ensure_topic(
    client: &ClientConfig,
    input_topic: &str,
    state_topic: &str,
    replication: i32,
    timeout: Duration,
) -> Result<(), ChangelogError> {
    let log = Changelog {
        what: WHAT,
        topic: state_topic,
        config_key: "kafka.state_topic",
        source_topic: input_topic,
    };
    store::ensure_topic(client, log, replication, timeout).map(|_| ())
}

/// Reads the changelog partitions `partitions` from the beginning to their end into
/// `dispatcher`, as of the consumer group's committed offsets of the same partitions of
/// `input_topic` (see the module docs). Transient consume errors are retried until
/// `timeout`; a partition that does not finish in time is restored as far as it was read
/// (warned: some repeat calls may then get a second task, which is better than holding back
/// every warning of the partition).
pub fn restore(
    consumer_config: &ClientConfig,
    input_topic: &str,
    topic: &str,
    partitions: &[i32],
    dispatcher: &Dispatcher,
    windows: &Windows,
    timeout: Duration,
) -> Result<Restored, ChangelogError> {
    let mut found = Restored::default();
    for p in partitions {
        dispatcher.open_partition(*p);
    }
    if partitions.is_empty() {
        return Ok(found);
    }
    let reader = Reader::new(consumer_config, WHAT, topic)?;
    let resume_at = reader.resume_offsets(input_topic, partitions, timeout)?;
    let started = Instant::now();
    let mut latest: FxHashMap<(i32, u64), OpenTask> = FxHashMap::default();
    reader.read_to_end(partitions, timeout, |m| {
        let callee = m.key().and_then(parse_key);
        let value = m
            .payload()
            .and_then(|v| serde_json::from_slice::<StateValue>(v).ok());
        match (callee, value) {
            (Some(callee), Some(v)) => {
                let resume = resume_at.get(&m.partition()).copied().unwrap_or(i64::MAX);
                if v.source_offset.is_some_and(|o| o >= resume) {
                    found.ahead += 1;
                } else {
                    // The producer keeps order (idempotence, or one request in flight on
                    // the embedded broker), so log order is processing order: a later
                    // record for the callee supersedes an earlier one.
                    latest.insert((m.partition(), callee), v.task);
                    found.records += 1;
                }
            }
            _ => found.unreadable += 1,
        }
    })?;
    for ((partition, callee), task) in latest {
        // Every person's last task, even one long closed (compaction keeps it): what
        // `seconds_since_last_task` measures from. The dispatcher keeps the open ones.
        windows.task_made(callee, task.opened_at_ms, task.task_id.short());
        dispatcher.restore(partition, callee, task);
    }
    // Entries already past their window on the partition's own clock go straight away.
    dispatcher.purge_expired();
    info!(
        topic,
        partitions = ?partitions,
        records = found.records,
        ahead_of_commit = found.ahead,
        skipped = found.unreadable,
        open = dispatcher.open_count(),
        took_ms = started.elapsed().as_millis() as u64,
        "restored open tasks"
    );
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_hold_no_number() {
        let k = key(0x0123_4567_89ab_cdef);
        assert_eq!(&k, b"0123456789abcdef");
        assert_eq!(parse_key(&k), Some(0x0123_4567_89ab_cdef));
        assert_eq!(parse_key(b"13912345678"), None);
    }

    #[test]
    fn values_carry_their_source_offset_and_older_ones_still_read() {
        let task: OpenTask = serde_json::from_str(
            r#"{"task_id":"00000000000000000000000000000001","level":"high","opened_at_ms":5}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        value(&task, 42, &mut out);
        let back: StateValue = serde_json::from_slice(&out).unwrap();
        assert_eq!((back.task, back.source_offset), (task, Some(42)));
        let old: StateValue = serde_json::from_str(&serde_json::to_string(&task).unwrap()).unwrap();
        assert_eq!((old.task, old.source_offset), (task, None));
    }
}
