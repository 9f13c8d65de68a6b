//! Rebuilds the feature windows when input partitions are assigned, so that a restart or a
//! rebalance does not make an instance forget the calls just before it took over.
//!
//! Instead of a changelog of window state (what Kafka Streams would keep), the windows are a
//! function of the input itself: on assignment, each new partition's records from the span
//! of the longest window (plus the allowed lateness) before the group's committed offset are
//! read back and added to the windows, up to the record before that offset, which is then
//! processed as usual. No new topic is needed; the cost is reading that span of input once
//! per assignment, and the input topic must keep at least that span. The start is found by
//! record timestamp (`offsets_for_times`), so producers must stamp records near their event
//! time (Kafka's default, CreateTime).
//!
//! A replayed call that is already in a window (a partition coming back to this instance)
//! is recognised as a redelivery and not counted twice. `seconds_since_last_task` is taken
//! from the open-task changelog, which keeps each person's last task (see
//! [`super::changelog::restore`]).

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tracing::info;

use super::store::{Reader, StoreError};
use crate::pipeline::Pipeline;

const WHAT: &str = "feature windows";

/// What a replay read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Records added to the windows.
    pub calls: u64,
    /// Records that were not valid events (they were dead-lettered when processed).
    pub skipped: u64,
}

/// Reads `partitions` of `input_topic` back into `pipeline`'s windows (see the module docs).
/// Does nothing when the rule set keeps no window.
pub fn replay(
    consumer_config: &ClientConfig,
    input_topic: &str,
    partitions: &[i32],
    pipeline: &Pipeline,
    timeout: Duration,
) -> Result<Replayed, StoreError> {
    let windows = pipeline.windows();
    if windows.is_empty() {
        return Ok(Replayed::default());
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let found = replay_span(
        consumer_config,
        input_topic,
        partitions,
        windows.span(),
        timeout,
        |m| pipeline.replay_into_windows(m.payload().unwrap_or_default(), m.partition(), now_ms),
    )?;
    Ok(found)
}

/// Hands `add` every record of `partitions` of `topic` from `span` ago up to the offset the
/// consumer group of `consumer_config` has committed (where processing resumes). `add`
/// says whether the record was a call it kept.
pub fn replay_span(
    consumer_config: &ClientConfig,
    topic: &str,
    partitions: &[i32],
    span: Duration,
    timeout: Duration,
    mut add: impl FnMut(&BorrowedMessage<'_>) -> bool,
) -> Result<Replayed, StoreError> {
    let mut found = Replayed::default();
    if partitions.is_empty() {
        return Ok(found);
    }
    let reader = Reader::new(consumer_config, WHAT, topic)?;
    let resume_at = reader.resume_offsets(topic, partitions, timeout)?;
    let since_ms = chrono::Utc::now().timestamp_millis() - span.as_millis() as i64;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(since_ms))
            .map_err(|source| restore_error(topic, source))?;
    }
    let starts = reader
        .consumer()
        .offsets_for_times(tpl, timeout)
        .map_err(|source| restore_error(topic, source))?;
    let ranges: Vec<(i32, Offset, i64)> = starts
        .elements()
        .iter()
        .filter_map(|e| {
            let until = *resume_at.get(&e.partition())?;
            // No record as recent as `since`: nothing to replay on this partition.
            let from = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => return None,
            };
            Some((e.partition(), from, until))
        })
        .collect();
    let started = std::time::Instant::now();
    reader.read_ranges(&ranges, timeout, |m| {
        if add(m) {
            found.calls += 1;
        } else {
            found.skipped += 1;
        }
    })?;
    info!(
        topic,
        partitions = ?partitions,
        ranges = ?ranges.iter().map(|(p, from, until)| (*p, from.to_raw(), *until)).collect::<Vec<_>>(),
        calls = found.calls,
        skipped = found.skipped,
        took_ms = started.elapsed().as_millis() as u64,
        "rebuilt the feature windows"
    );
    Ok(found)
}

fn restore_error(topic: &str, source: rdkafka::error::KafkaError) -> StoreError {
    StoreError::Restore {
        what: WHAT,
        topic: topic.into(),
        source,
    }
}
