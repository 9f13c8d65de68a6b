//! Live changes to the number lists: a reader of the lists topic (every partition from the
//! beginning, no group, so every instance applies every change) that adds numbers to and
//! removes them from the live lists while the service runs; a reload keeps them (see
//! [`Pipeline::install`]). The files stay the base: a restart reads them, then the whole
//! topic again.
//!
//! A record's value: `{"list": "known_fraud_numbers", "number": "+852 5123 9901", "op":
//! "add"}` (or `"remove"`). Key it by the number, so that changes to one number stay in
//! order. A record that is not such a change is counted and skipped; logs never show its
//! number.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::rules::RuleSet;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    list: String,
    number: String,
    op: Op,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Add,
    Remove,
}

/// What became of one record of the lists topic (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Not a change record, or its number is not a number.
    Invalid,
    /// Names a list the rule set does not declare.
    UnknownList,
}

impl Applied {
    pub const ALL: [Applied; 3] = [Applied::Applied, Applied::Invalid, Applied::UnknownList];

    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Applied => "applied",
            Applied::Invalid => "invalid",
            Applied::UnknownList => "unknown_list",
        }
    }
}

/// Applies one record of the lists topic to `rules`' lists.
pub fn apply(rules: &RuleSet, payload: &[u8]) -> Applied {
    let Ok(change) = serde_json::from_slice::<Change>(payload) else {
        return Applied::Invalid;
    };
    let Some(list) = rules.list(&change.list) else {
        return Applied::UnknownList;
    };
    if list.apply(&change.number, matches!(change.op, Op::Add)) {
        Applied::Applied
    } else {
        Applied::Invalid
    }
}

/// Starts the reader on a thread of its own, once the topic's partitions are assigned.
pub fn spawn(
    kafka: &KafkaConfig,
    bootstrap: &str,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, rdkafka::error::KafkaError> {
    let mut cc = super::consumer_config(kafka, bootstrap);
    cc.set("group.id", format!("dissuade-lists-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cc.create()?;
    let topic = kafka.lists_topic.clone();
    for missing in super::assign_from_beginning(&consumer, &[&topic])? {
        warn!(topic = %missing, "number lists: the lists topic does not exist; the lists stay as their files");
    }
    info!(%topic, "number lists: applying changes from the lists topic");
    let handle = std::thread::Builder::new()
        .name("number-lists".into())
        .spawn(move || {
            let mut last_export = Instant::now();
            metrics.export_lists(&pipeline.rules());
            while !shutdown.is_cancelled() {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let result = pipeline.apply_list_change(m.payload().unwrap_or_default());
                        if result != Applied::Applied {
                            warn!(
                                partition = m.partition(),
                                offset = m.offset(),
                                result = result.as_str(),
                                "number lists: skipped a record of the lists topic"
                            );
                        }
                        metrics.list_change(result);
                    }
                    Some(Err(e)) => warn!(error = %e, "number lists: read error"),
                    None => {}
                }
                if last_export.elapsed() >= Duration::from_secs(1) {
                    metrics.export_lists(&pipeline.rules());
                    last_export = Instant::now();
                }
            }
        })
        .expect("spawning the number-lists thread");
    Ok(handle)
}
