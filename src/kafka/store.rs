//! A state store kept in Kafka, after Kafka Streams' changelogged stores: every change to a
//! partition's state is written to the same-numbered partition of a compacted changelog
//! topic, and whenever a partition is assigned its state is read back from there before any
//! of its records are processed.
//!
//! This module holds what every such store shares: creating the changelog topic (with
//! `cleanup.policy=compact`, and one partition per partition of the topic whose records it
//! follows) and reading changelog partitions from the beginning to their end. What a record
//! means, and which of them win, is the store's own business: the open-task store
//! ([`super::changelog`]) takes its state as of the committed input offset, the lifecycle
//! store ([`super::lifecycle`]) the latest record per key.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use thiserror::Error;
use tracing::{info, warn};

/// How long a changelog keeps every record before compaction may drop superseded ones:
/// longer than an instance stays down with uncommitted work, so that compaction cannot drop
/// the last record a restore needs in favour of a newer one.
pub const MIN_COMPACTION_LAG: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("reading topic metadata: {0}")]
    Metadata(#[source] KafkaError),
    #[error("topic {0} does not exist: create it, or start with --create-topics")]
    NoSourceTopic(String),
    #[error(
        "{what} topic {topic} has {found} partitions but topic {source_topic} has {needed}: \
         each partition of {source_topic} needs its own; delete {topic} or name another in \
         {config_key}"
    )]
    TooFewPartitions {
        what: &'static str,
        topic: String,
        source_topic: String,
        config_key: &'static str,
        found: usize,
        needed: usize,
    },
    #[error(
        "topic {topic} has {found} partitions but topic {source_topic} has {needed}: they must \
         have the same count, so that partition i of both meets on one instance; give {topic} \
         {needed} partitions or name another in {config_key}"
    )]
    PartitionMismatch {
        topic: String,
        config_key: &'static str,
        found: usize,
        source_topic: String,
        needed: usize,
    },
    #[error("creating {what} topic {topic}: {reason}")]
    Create {
        what: &'static str,
        topic: String,
        reason: String,
    },
    #[error("reading the committed offsets of {topic}: {source}")]
    Committed {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("reading {what} back from {topic}: {source}")]
    Restore {
        what: &'static str,
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// A changelog topic and the topic whose partitions it follows.
#[derive(Debug, Clone, Copy)]
pub struct Changelog<'a> {
    /// What the store holds, for logs and errors ("open-task state").
    pub what: &'static str,
    pub topic: &'a str,
    /// The config key naming `topic`, for errors.
    pub config_key: &'static str,
    /// Partition *p* of this topic writes to partition *p* of the changelog.
    pub source_topic: &'a str,
}

/// The partition count of `topic`, `None` when it does not exist.
pub fn partition_count(
    probe: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Option<usize>, StoreError> {
    let md = probe
        .fetch_metadata(Some(topic), timeout)
        .map_err(StoreError::Metadata)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0))
}

/// Creates `topics` with `partitions` each when missing (an existing one is left alone),
/// with `settings` as topic configuration.
pub fn create_topics(
    client: &ClientConfig,
    what: &'static str,
    topics: &[&str],
    partitions: usize,
    replication: i32,
    settings: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), StoreError> {
    let admin: AdminClient<DefaultClientContext> = client.create().map_err(StoreError::Metadata)?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            settings.iter().fold(
                NewTopic::new(t, partitions as i32, TopicReplication::Fixed(replication)),
                |topic, (k, v)| topic.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let results = futures::executor::block_on(admin.create_topics(&new, &opts))
        .map_err(StoreError::Metadata)?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(StoreError::Create {
                    what,
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Creates the changelog topic when missing, compacted and with the source topic's partition
/// count, and checks that an existing one has a partition for every source partition.
/// Returns the source topic's partition count.
pub fn ensure_topic(
    client: &ClientConfig,
    log: Changelog<'_>,
    replication: i32,
    timeout: Duration,
) -> Result<usize, StoreError> {
    let probe: BaseConsumer = client.create().map_err(StoreError::Metadata)?;
    let needed = partition_count(&probe, log.source_topic, timeout)?
        .ok_or_else(|| StoreError::NoSourceTopic(log.source_topic.into()))?;
    match partition_count(&probe, log.topic, timeout)? {
        Some(found) if found >= needed => return Ok(needed),
        Some(found) => {
            return Err(StoreError::TooFewPartitions {
                what: log.what,
                topic: log.topic.into(),
                source_topic: log.source_topic.into(),
                config_key: log.config_key,
                found,
                needed,
            })
        }
        None => {}
    }
    let lag_ms = MIN_COMPACTION_LAG.as_millis().to_string();
    create_topics(
        client,
        log.what,
        &[log.topic],
        needed,
        replication,
        &[
            ("cleanup.policy", "compact"),
            ("min.compaction.lag.ms", &lag_ms),
        ],
        timeout,
    )?;
    info!(
        topic = log.topic,
        partitions = needed,
        what = log.what,
        "created a changelog topic"
    );
    Ok(needed)
}

/// A consumer for reading changelogs back: manual assignment, no commits, the end of a
/// partition reported as an event.
pub struct Reader {
    consumer: BaseConsumer<EndIsNotAnError>,
    what: &'static str,
    topic: String,
}

impl Reader {
    pub fn new(
        consumer_config: &ClientConfig,
        what: &'static str,
        topic: &str,
    ) -> Result<Reader, StoreError> {
        let mut config = consumer_config.clone();
        config
            .set("enable.auto.commit", "false")
            // The end of each partition is taken from fetch responses, not ListOffsets: the
            // embedded broker (tansu 0.6) can report a log end short of the real one.
            .set("enable.partition.eof", "true")
            // Lag statistics are the services' business; here they would only be logged.
            .set("statistics.interval.ms", "0");
        let consumer = config
            .create_with_context(EndIsNotAnError { what })
            .map_err(|source| StoreError::Restore {
                what,
                topic: topic.into(),
                source,
            })?;
        Ok(Reader {
            consumer,
            what,
            topic: topic.into(),
        })
    }

    /// The consumer, for other look-ups on the same connection (committed offsets).
    pub fn consumer(&self) -> &BaseConsumer<EndIsNotAnError> {
        &self.consumer
    }

    /// Reads `partitions` from their beginning to their end, handing each record to `f` in
    /// log order. Transient consume errors are retried until `timeout`; returns the
    /// partitions that did not reach their end in time (warned: the caller restores what
    /// was read).
    pub fn read_to_end(
        &self,
        partitions: &[i32],
        timeout: Duration,
        f: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<Vec<i32>, StoreError> {
        let ranges: Vec<(i32, Offset, i64)> = partitions
            .iter()
            .map(|p| (*p, Offset::Beginning, i64::MAX))
            .collect();
        self.read_ranges(&ranges, timeout, f)
    }

    /// Reads each `(partition, from, until)`: from `from` up to the record before offset
    /// `until` (or the partition's end), handing each record to `f` in log order; as
    /// [`Reader::read_to_end`] otherwise.
    pub fn read_ranges(
        &self,
        ranges: &[(i32, Offset, i64)],
        timeout: Duration,
        mut f: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<Vec<i32>, StoreError> {
        let err = |source| StoreError::Restore {
            what: self.what,
            topic: self.topic.clone(),
            source,
        };
        let mut assignment = TopicPartitionList::new();
        let mut remaining = Vec::new();
        for &(p, from, until) in ranges {
            if matches!(from, Offset::Offset(o) if o >= until) {
                continue;
            }
            assignment
                .add_partition_offset(&self.topic, p, from)
                .map_err(err)?;
            remaining.push(p);
        }
        if remaining.is_empty() {
            return Ok(remaining);
        }
        let until = |p: i32| ranges.iter().find(|r| r.0 == p).map_or(i64::MAX, |r| r.2);
        self.consumer.assign(&assignment).map_err(err)?;
        let started = Instant::now();
        while !remaining.is_empty() {
            if started.elapsed() > timeout {
                warn!(
                    topic = %self.topic,
                    what = self.what,
                    partitions_unfinished = ?remaining,
                    "restore timed out; going on with what was read"
                );
                break;
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => remaining.retain(|r| *r != p),
                Some(Err(e)) => {
                    warn!(topic = %self.topic, what = self.what, error = %e, "consume error while restoring; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Some(Ok(m)) => {
                    let end = until(m.partition());
                    if m.offset() < end {
                        f(&m);
                    }
                    if m.offset() + 1 >= end {
                        remaining.retain(|r| *r != m.partition());
                    }
                }
            }
        }
        let _ = self.consumer.unassign();
        Ok(remaining)
    }

    /// Where a consumer group resumes each of `partitions` of `topic`: its committed
    /// offset, or the partition's first offset when nothing is committed
    /// (`auto.offset.reset=earliest`).
    pub fn resume_offsets(
        &self,
        group_topic: &str,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<FxHashMap<i32, i64>, StoreError> {
        let err = |source| StoreError::Committed {
            topic: group_topic.into(),
            source,
        };
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(group_topic, *p);
        }
        let committed = self.consumer.committed_offsets(tpl, timeout).map_err(err)?;
        let mut out = FxHashMap::default();
        for e in committed.elements() {
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => {
                    self.consumer
                        .fetch_watermarks(group_topic, e.partition(), timeout)
                        .map_err(err)?
                        .0
                }
            };
            out.insert(e.partition(), at);
        }
        Ok(out)
    }
}

/// Reaching the end of a partition is how a restore knows it is done, not a client error.
pub struct EndIsNotAnError {
    what: &'static str,
}

impl ClientContext for EndIsNotAnError {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            warn!(error = %error, reason, what = self.what, "kafka client error during a changelog restore");
        }
    }
}

impl ConsumerContext for EndIsNotAnError {}
