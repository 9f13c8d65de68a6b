//! Rule files published to a fleet: a reader of the rules topic (every partition from the
//! beginning, no group, so every instance sees every record) that hands each new rule file
//! to the reloader, which checks it and makes it live as it would a changed file
//! ([`crate::reload`]). Once a file has arrived on the topic it replaces the local rules
//! file; a restart reads the topic again, so an instance that restarts runs what the fleet
//! runs. `dissuade rules --publish` writes the records: the file's text as the value, key
//! `rules`.

use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::store::{partition_count, Reader, StoreError};
use crate::config::KafkaConfig;
use crate::reload::{Published, ReloadHandle};

/// The key `dissuade rules --publish` writes: one key, so a compacted topic keeps the latest.
pub const KEY: &str = "rules";

/// The rule files on the topic now, the latest first (see [`crate::reload::starting_rules`]).
/// Read when the service starts, so that it starts on what the fleet runs.
pub fn published(kafka: &KafkaConfig, bootstrap: &str) -> Result<Vec<Published>, StoreError> {
    let client = super::consumer_config(kafka, bootstrap);
    let probe: BaseConsumer = client.create().map_err(StoreError::Metadata)?;
    let topic = &kafka.rules_topic;
    let Some(partitions) = partition_count(&probe, topic, kafka.restore_timeout)? else {
        return Ok(Vec::new());
    };
    let reader = Reader::new(&client, "published rules", topic)?;
    let all: Vec<i32> = (0..partitions as i32).collect();
    let mut found = Vec::new();
    reader.read_to_end(&all, kafka.restore_timeout, |m| {
        if let Some(p) = published_of(m) {
            found.push((m.timestamp().to_millis().unwrap_or(0), p));
        }
    })?;
    found.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

fn published_of(m: &BorrowedMessage<'_>) -> Option<Published> {
    match std::str::from_utf8(m.payload().unwrap_or_default()) {
        Ok(text) => Some(Published {
            origin: format!(
                "{} partition {} offset {}",
                m.topic(),
                m.partition(),
                m.offset()
            ),
            text: text.to_owned(),
        }),
        Err(_) => {
            warn!(
                partition = m.partition(),
                offset = m.offset(),
                "rules topic: skipped a record that is not UTF-8 text"
            );
            None
        }
    }
}

/// Starts the reader on a thread of its own. It reads the topic from the beginning: the
/// records the service started on are found unchanged.
pub fn spawn(
    kafka: &KafkaConfig,
    bootstrap: &str,
    reload: ReloadHandle,
    shutdown: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, rdkafka::error::KafkaError> {
    let mut cc = super::consumer_config(kafka, bootstrap);
    cc.set("group.id", format!("dissuade-rules-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cc.create()?;
    let topic = kafka.rules_topic.clone();
    for missing in super::assign_from_beginning(&consumer, &[&topic])? {
        warn!(topic = %missing, "rules topic: it does not exist; the rules file stays the rules");
    }
    info!(%topic, "rules topic: following rule files published to it");
    let handle = std::thread::Builder::new()
        .name("rules-topic".into())
        .spawn(move || {
            while !shutdown.is_cancelled() {
                // Only the latest of the records waiting is applied: on start the topic may
                // hold every version ever published.
                let mut latest = None;
                let mut wait = Duration::from_millis(200);
                while let Some(polled) = consumer.poll(wait) {
                    wait = Duration::ZERO;
                    match polled {
                        Ok(m) => latest = published_of(&m).or(latest),
                        Err(e) => warn!(error = %e, "rules topic: read error"),
                    }
                }
                if let Some(published) = latest {
                    if !reload.publish_blocking(published) {
                        break;
                    }
                }
            }
        })
        .expect("spawning the rules-topic thread");
    Ok(handle)
}
