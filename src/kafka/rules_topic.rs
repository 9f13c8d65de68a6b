//! Rule files published to a fleet: a reader of the rules topic (every partition from the
//! beginning, no group, so every instance sees every record) that hands each new rule file
//! to the reloader, which checks it and makes it live as it would a changed file
//! ([`crate::reload`]). Once a file has arrived on the topic it replaces the local rules
//! file; a restart reads the topic again, so an instance that restarts runs what the fleet
//! runs. `dissuade rules --publish` writes the records: the file's text as the value, key
//! `rules`.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::KafkaConfig;
use crate::reload::{Published, ReloadHandle};

/// The key `dissuade rules --publish` writes: one key, so a compacted topic keeps the latest.
pub const KEY: &str = "rules";

/// Starts the reader on a thread of its own. The receiver hears once the records already on
/// the topic have been applied (or none was there): start processing after it, so that an
/// instance never scores with a rules file the fleet has replaced.
pub fn spawn(
    kafka: &KafkaConfig,
    bootstrap: &str,
    reload: ReloadHandle,
    shutdown: CancellationToken,
) -> Result<(std::thread::JoinHandle<()>, oneshot::Receiver<()>), rdkafka::error::KafkaError> {
    let mut cc = super::consumer_config(kafka, bootstrap);
    cc.set("group.id", format!("dissuade-rules-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cc.create()?;
    let topic = kafka.rules_topic.clone();
    for missing in super::assign_from_beginning(&consumer, &[&topic])? {
        warn!(topic = %missing, "rules topic: it does not exist; the rules file stays the rules");
    }
    // Where the records already published end, per partition.
    let mut behind: HashMap<i32, i64> = HashMap::new();
    let partitions = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
        if high > low {
            behind.insert(p, high);
        }
    }
    info!(%topic, "rules topic: following rule files published to it");
    let (caught_up_tx, caught_up) = oneshot::channel();
    let mut caught_up_tx = Some(caught_up_tx);
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
                        Ok(m) => {
                            if behind
                                .get(&m.partition())
                                .is_some_and(|&end| m.offset() + 1 >= end)
                            {
                                behind.remove(&m.partition());
                            }
                            match std::str::from_utf8(m.payload().unwrap_or_default()) {
                                Ok(text) => {
                                    latest = Some(Published {
                                        origin: format!(
                                            "{} partition {} offset {}",
                                            m.topic(),
                                            m.partition(),
                                            m.offset()
                                        ),
                                        text: text.to_owned(),
                                    })
                                }
                                Err(_) => warn!(
                                    partition = m.partition(),
                                    offset = m.offset(),
                                    "rules topic: skipped a record that is not UTF-8 text"
                                ),
                            }
                        }
                        Err(e) => warn!(error = %e, "rules topic: read error"),
                    }
                }
                if let Some(published) = latest {
                    if !reload.publish_blocking(published) {
                        break;
                    }
                }
                if behind.is_empty() {
                    if let Some(tx) = caught_up_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        })
        .expect("spawning the rules-topic thread");
    Ok((handle, caught_up))
}
