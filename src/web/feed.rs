//! Keeps the [`Board`] current: reads the task and feedback topics from their beginning
//! (every partition assigned, no group joined, nothing committed: each instance serving the
//! views sees the whole area) and tells the views what changed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::KafkaConfig;
use crate::task::TaskId;

use super::board::Board;

/// How often deadlines are checked when no record arrives.
const TICK: Duration = Duration::from_millis(500);

/// Starts the reader on a thread of its own; returns once both topics' partitions are
/// assigned (the board fills in the background).
pub fn spawn(
    kafka: &KafkaConfig,
    bootstrap: &str,
    board: Arc<Mutex<Board>>,
    changes: broadcast::Sender<TaskId>,
    board_tasks: prometheus::IntGauge,
    shutdown: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, rdkafka::error::KafkaError> {
    let mut cc = crate::kafka::consumer_config(kafka, bootstrap);
    cc.set("group.id", format!("dissuade-web-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cc.create()?;
    let missing = crate::kafka::assign_from_beginning(
        &consumer,
        &[&kafka.task_topic, &kafka.feedback_topic],
    )?;
    for topic in missing {
        warn!(%topic, "web views: the topic does not exist; its records will not be shown");
    }
    info!("web views reading the task and feedback topics");
    let task_topic = kafka.task_topic.clone();
    let handle = std::thread::Builder::new()
        .name("web-feed".into())
        .spawn(move || {
            let mut last_tick = Instant::now();
            while !shutdown.is_cancelled() {
                let mut changed = Vec::new();
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        if let Some(payload) = m.payload() {
                            let mut b = board.lock().expect("board lock");
                            if m.topic() == task_topic {
                                changed = b.add_task_record(payload);
                            } else {
                                changed.extend(b.add_feedback_record(payload));
                            }
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "web views: read error"),
                    None => {}
                }
                if last_tick.elapsed() >= TICK {
                    let now = chrono::Utc::now().timestamp_millis();
                    let mut b = board.lock().expect("board lock");
                    changed.extend(b.tick(now));
                    board_tasks.set(b.len() as i64);
                    drop(b);
                    last_tick = Instant::now();
                }
                for id in changed {
                    // No receiver (nobody watching) is fine.
                    let _ = changes.send(id);
                }
            }
        })
        .expect("spawning the web feed thread");
    Ok(handle)
}
