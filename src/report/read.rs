//! Reads a topic from its beginning up to the high watermarks captured before reading: a
//! snapshot, so the same topics give the same report however busy they are meanwhile.
//!
//! Partitions are assigned at explicit offsets, never subscribed: the report joins no
//! consumer group and commits nothing, so it cannot disturb the service's group.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReadError {
    // The Kafka error is in the message, not the source chain: its own chain repeats it.
    #[error("creating the Kafka consumer: {0}")]
    Client(KafkaError),
    #[error("topic {topic} does not exist")]
    NoSuchTopic { topic: String },
    #[error("topic {topic}: reading its partitions and offsets: {error}")]
    Metadata { topic: String, error: KafkaError },
    #[error("topic {topic}: reading: {error}")]
    Consume { topic: String, error: KafkaError },
    #[error(
        "topic {topic}: no record for {waited:?} with {remaining} of {total} records still to \
         read (is the broker reachable? were records deleted by retention meanwhile?)"
    )]
    Stalled {
        topic: String,
        waited: Duration,
        remaining: u64,
        total: u64,
    },
}

/// The offsets `[low, high)` of each partition of a topic at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub topic: String,
    /// partition → (low, high) watermarks.
    pub partitions: BTreeMap<i32, (i64, i64)>,
}

impl Snapshot {
    /// Records (offsets, strictly) in the snapshot.
    pub fn records(&self) -> u64 {
        self.partitions
            .values()
            .map(|(lo, hi)| (hi - lo).max(0) as u64)
            .sum()
    }
}

/// Captures the watermarks of every partition of `topic`.
pub fn snapshot(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Snapshot, ReadError> {
    let meta_err = |error| ReadError::Metadata {
        topic: topic.into(),
        error,
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(meta_err)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(ReadError::NoSuchTopic {
            topic: topic.into(),
        });
    };
    match t.error() {
        None => {}
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            return Err(ReadError::NoSuchTopic {
                topic: topic.into(),
            })
        }
        Some(e) => return Err(meta_err(KafkaError::MetadataFetch(e.into()))),
    }
    if t.partitions().is_empty() {
        return Err(ReadError::NoSuchTopic {
            topic: topic.into(),
        });
    }
    let mut partitions = BTreeMap::new();
    for p in t.partitions() {
        let marks = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(meta_err)?;
        partitions.insert(p.id(), marks);
    }
    Ok(Snapshot {
        topic: topic.into(),
        partitions,
    })
}

/// Calls `on_record` with the payload of every record of the snapshot, in offset order per
/// partition, and `progress(read, total)` about once a second. Fails when no record arrives
/// for `stall` while some are still expected. Returns the records read.
pub fn read(
    consumer: &BaseConsumer,
    snap: &Snapshot,
    stall: Duration,
    on_record: &mut dyn FnMut(&[u8]),
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, ReadError> {
    let total = snap.records();
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (&p, &(lo, hi)) in &snap.partitions {
        if hi > lo {
            remaining.insert(p, hi);
            tpl.add_partition_offset(&snap.topic, p, Offset::Offset(lo))
                .map_err(|error| ReadError::Consume {
                    topic: snap.topic.clone(),
                    error,
                })?;
        }
    }
    if remaining.is_empty() {
        progress(0, 0);
        return Ok(0);
    }
    let consume_err = |error| ReadError::Consume {
        topic: snap.topic.clone(),
        error,
    };
    consumer.assign(&tpl).map_err(consume_err)?;
    let mut read = 0u64;
    let mut last_record = Instant::now();
    let mut last_progress = Instant::now();
    while !remaining.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            // The end of a partition as it is now: at or past the snapshot's high watermark.
            // Offsets below it that never arrive (transaction markers) end here.
            Some(Err(KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
            }
            Some(Err(e)) => return Err(consume_err(e)),
            Some(Ok(m)) => {
                last_record = Instant::now();
                let Some(&hi) = remaining.get(&m.partition()) else {
                    continue;
                };
                if m.offset() < hi {
                    on_record(m.payload().unwrap_or_default());
                    read += 1;
                }
                if m.offset() + 1 >= hi {
                    remaining.remove(&m.partition());
                }
            }
        }
        if last_record.elapsed() > stall {
            return Err(ReadError::Stalled {
                topic: snap.topic.clone(),
                waited: stall,
                remaining: total.saturating_sub(read),
                total,
            });
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            progress(read, total);
            last_progress = Instant::now();
        }
    }
    consumer.unassign().map_err(consume_err)?;
    progress(read, total);
    Ok(read)
}
