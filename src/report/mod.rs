//! The reach figures the anti-fraud centre reports: tasks pushed, people at risk, people
//! reached, time to first contact, overdue, escalated, false alarms and losses, per district,
//! station, grid cell or rule; and the monthly per-station task list.
//!
//! [`record`] decodes the task and feedback topics' records, [`aggregate`] computes the
//! figures from them without I/O, [`format`] prints them, and [`read`] reads a snapshot of a
//! topic (up to the high watermarks captured at the start) without joining a consumer group.
//! [`run`] ties them together for `dissuade report` and the tests.

pub mod aggregate;
pub mod format;
pub mod read;
pub mod record;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::ClientConfig;
use thiserror::Error;

use crate::config::KafkaConfig;

pub use aggregate::{Aggregator, Dimension, Report, Row, StationList, Window};
pub use format::Format;
pub use read::ReadError;
pub use record::{FeedbackRecord, TaskTopicRecord};

#[derive(Debug, Error)]
pub enum ReportError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing the report: {0}")]
    Write(#[from] io::Error),
}

/// What to report, from where.
#[derive(Debug, Clone)]
pub struct Request {
    /// Consumer settings (see [`client_config`]).
    pub client: ClientConfig,
    pub task_topic: String,
    pub feedback_topic: String,
    pub window: Window,
    pub by: Dimension,
    pub format: Format,
    /// The instant deadlines are judged at: `--to`, or the time the report started.
    pub as_of_ms: i64,
    /// Station id → district code, from the grid map's stations file.
    pub districts: HashMap<String, String>,
    /// How long a read may wait for the next record before it gives up.
    pub stall_timeout: Duration,
}

/// What was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub task_records: u64,
    pub feedback_records: u64,
    /// Records that are not a task, escalation or valid feedback: skipped, not counted.
    pub skipped_task_records: u64,
    pub skipped_feedback_records: u64,
    pub tasks_in_window: usize,
    /// The feedback topic does not exist yet: no feedback was read.
    pub no_feedback_topic: bool,
}

/// Consumer settings for a report: the service's consumer settings and librdkafka properties
/// (security included), but a group of its own that never joins or commits, and end of
/// partition events to know when a partition is read.
pub fn client_config(kafka: &KafkaConfig, brokers: &str) -> ClientConfig {
    let mut c = crate::kafka::consumer_config(kafka, brokers);
    c.set(
        "group.id",
        format!("dissuade-report-{}", std::process::id()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("enable.partition.eof", "true")
    .set("statistics.interval.ms", "0")
    .set("fetch.wait.max.ms", "100");
    c
}

/// Reads both topics up to the watermarks captured at the start and writes the report to
/// `out`. `progress(topic, read, total)` is called about once a second during each read.
pub fn run(
    req: &Request,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Summary, ReportError> {
    let consumer: BaseConsumer = req.client.create().map_err(ReadError::Client)?;
    let timeout = req.stall_timeout;
    // Both snapshots before either read: feedback written while tasks are read is left out,
    // as are the tasks it would be about.
    let tasks = read::snapshot(&consumer, &req.task_topic, timeout)?;
    let feedback = match read::snapshot(&consumer, &req.feedback_topic, timeout) {
        Ok(s) => Some(s),
        Err(ReadError::NoSuchTopic { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let mut summary = Summary {
        no_feedback_topic: feedback.is_none(),
        ..Summary::default()
    };
    let mut agg = Aggregator::new(req.window);
    let mut skipped = 0u64;
    summary.task_records = read::read(
        &consumer,
        &tasks,
        timeout,
        &mut |payload| match TaskTopicRecord::decode(payload) {
            Ok(TaskTopicRecord::Task(t)) => agg.add_task(t),
            Ok(TaskTopicRecord::Escalation(e)) => agg.add_escalation(e),
            Err(e) => {
                if skipped == 0 {
                    tracing::warn!(topic = %req.task_topic, error = %e, "skipping records that are not tasks");
                }
                skipped += 1;
            }
        },
        &mut |read, total| progress(&req.task_topic, read, total),
    )?;
    summary.skipped_task_records = skipped;
    if let Some(feedback) = &feedback {
        let mut skipped = 0u64;
        summary.feedback_records = read::read(
            &consumer,
            feedback,
            timeout,
            &mut |payload| match FeedbackRecord::decode(payload) {
                Ok(fb) => agg.add_feedback(fb),
                Err(e) => {
                    if skipped == 0 {
                        tracing::warn!(topic = %req.feedback_topic, error = %e, "skipping invalid feedback records");
                    }
                    skipped += 1;
                }
            },
            &mut |read, total| progress(&req.feedback_topic, read, total),
        )?;
        summary.skipped_feedback_records = skipped;
    }
    summary.tasks_in_window = agg.task_count();
    match req.format {
        Format::StationList => {
            format::write_station_list(&agg.station_list(req.as_of_ms, &req.districts), out)?
        }
        f => {
            let report = agg.report(req.by, req.as_of_ms, &req.districts);
            match f {
                Format::Csv => format::write_csv(&report, out)?,
                Format::Json => format::write_json(&report, out)?,
                _ => format::write_table(&report, out)?,
            }
        }
    }
    Ok(summary)
}
