//! Kafka at the edges of the pipeline: the consumer-group service ([`processor`]), the
//! synthetic load generator ([`generate`]), topic administration, and the embedded broker
//! that makes the demo and tests self-contained ([`embedded`]).
//!
//! Every librdkafka property in the config passes through untouched, after the defaults set
//! here, so ops can use `security.protocol`, `sasl.*` and `ssl.*` without a code change.

pub mod bench;
pub mod by_caller;
pub mod changelog;
pub mod dead_letter;
#[cfg(feature = "embedded-broker")]
pub mod embedded;
pub mod generate;
pub mod lifecycle;
pub mod lists;
pub mod offsets;
pub mod processor;
pub mod rules_topic;
pub mod store;
pub mod window_replay;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use thiserror::Error;

use crate::config::KafkaConfig;

#[derive(Debug, Error)]
pub enum KafkaSetupError {
    #[error("creating a Kafka client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("`brokers = \"embedded\"` needs a build with the `embedded-broker` feature")]
    EmbeddedUnavailable,
    #[error("starting the embedded broker: {0}")]
    Embedded(String),
    #[error("open-task state topic: {0}")]
    State(#[source] changelog::ChangelogError),
    #[error("task lifecycle: {0}")]
    Lifecycle(#[source] store::StoreError),
    #[error("by-caller stage topics: {0}")]
    ByCaller(#[source] store::StoreError),
    #[error("exactly-once delivery: initialising the transactional producer: {0}")]
    Transactions(#[source] rdkafka::error::KafkaError),
    #[error("exactly-once delivery: {0}")]
    Transaction(String),
    #[error(
        "exactly-once delivery does not cover the by-caller stages yet: disable the rules \
         that read caller-side windows, or use delivery = \"at-least-once\""
    )]
    ExactlyOnceWithStages,
    #[error("starting the consumer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Assigns every partition of `topics` to `consumer` from the beginning (no group, nothing
/// committed: the reader sees the whole topic). Returns the topics that do not exist.
pub fn assign_from_beginning<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topics: &[&str],
) -> rdkafka::error::KafkaResult<Vec<String>> {
    use rdkafka::consumer::Consumer;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut missing = Vec::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = md
            .topics()
            .first()
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0);
        if partitions == 0 {
            missing.push((*topic).to_owned());
        }
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    Ok(missing)
}

/// Consumer settings: defaults tuned for throughput and at-least-once, then `properties`,
/// then `consumer_properties`.
pub fn consumer_config(cfg: &KafkaConfig, bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", &cfg.group_id)
        // Offsets are committed by the processor, only after outputs are acknowledged.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // The default 500 ms makes a consumer group idle between fetches (KAFKA-NOTES).
        .set("fetch.wait.max.ms", "5")
        // librdkafka 2.x waits this long before refetching a partition whose local queue was
        // over its threshold (default 1 s): a consumer that keeps up then idles in bursts.
        .set("fetch.queue.backoff.ms", "10");
    overlay(&mut c, &cfg.properties);
    overlay(&mut c, &cfg.consumer_properties);
    c
}

/// `config` with librdkafka statistics every second (unless the properties set an interval),
/// for a consumer whose context reads them (lag). Only such consumers ask: a client on the
/// default context logs every statistics report whole at INFO, a kilobyte a second per
/// client, whose counters can even look like phone numbers to a log scan.
pub fn with_statistics(mut config: ClientConfig) -> ClientConfig {
    if config.get("statistics.interval.ms").is_none() {
        config.set("statistics.interval.ms", "1000");
    }
    config
}

/// Producer settings: batched, idempotent-safe defaults, then `properties`, then
/// `producer_properties`.
pub fn producer_config(cfg: &KafkaConfig, bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("acks", "all")
        // Retries must not reorder batches: each officer's tasks arrive in order.
        .set("enable.idempotence", "true")
        .set(
            "queue.buffering.max.messages",
            cfg.max_in_flight.to_string(),
        )
        .set("batch.num.messages", "10000");
    if cfg.is_embedded() {
        // The embedded broker stalls idempotent producers: p99 ~350 ms at 5,000 to 50,000
        // events/s against ~25 ms without (BENCHMARKS.md, issue 10). One request in flight
        // keeps the order that idempotence kept (a retry cannot overtake a later batch); a
        // retried batch may be written twice, which at-least-once delivery allows anyway.
        c.set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1");
    }
    overlay(&mut c, &cfg.properties);
    overlay(&mut c, &cfg.producer_properties);
    c
}

fn overlay(c: &mut ClientConfig, props: &BTreeMap<String, String>) {
    for (k, v) in props {
        c.set(k, v);
    }
}

/// Creates the topics if they do not exist (an existing topic is fine).
pub async fn ensure_topics(
    cfg: &KafkaConfig,
    bootstrap: &str,
    topics: &[&str],
) -> Result<(), KafkaSetupError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    overlay(&mut c, &cfg.properties);
    let admin: AdminClient<DefaultClientContext> = c.create().map_err(KafkaSetupError::Client)?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                cfg.partitions,
                TopicReplication::Fixed(cfg.topic_replication()),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(KafkaSetupError::Client)?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}
