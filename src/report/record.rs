//! The records a report reads, decoded into the few owned fields it counts with.
//!
//! The victim's number is read only to hash it (distinct people) and to mask it (the station
//! list); neither the number nor anything quoting it is kept.

use std::borrow::Cow;

use serde::Deserialize;
use thiserror::Error;

use crate::lifecycle::{Feedback, Outcome};
use crate::privacy::{mask_digits, mask_phone};
use crate::rules::Level;
use crate::task::TaskId;

/// A dissuasion task (`kind` `new` or `upgrade`) as the report needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub task_id: TaskId,
    /// The event it was made for (feedback outcomes label it: see
    /// [`crate::backtest::FeedbackLabels`]).
    pub event_id: String,
    pub upgrade_of: Option<TaskId>,
    pub created_at_ms: i64,
    pub deadline_ms: i64,
    pub level: Level,
    /// A hash of the victim's canonical number (see [`crate::dispatch::callee_key`]): counts
    /// distinct people without keeping numbers.
    pub person: u64,
    /// The victim's number masked (`138****5678`), for the station list.
    pub victim_masked: String,
    pub grid_id: Option<String>,
    pub grid_name: Option<String>,
    pub station_id: Option<String>,
    pub station_name: Option<String>,
    pub assignee_id: String,
    /// The rules that fired, in the task's order.
    pub rule_ids: Vec<String>,
}

/// An escalation record on the task topic: only which task it escalates matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscalationRecord {
    /// The escalation's own id: a desk's feedback may name it.
    pub escalation_id: TaskId,
    pub escalation_of: TaskId,
    pub tier: u8,
}

/// One record of the task topic.
// Decoded one at a time and matched at once: boxing the task would allocate per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum TaskTopicRecord {
    Task(TaskRecord),
    Escalation(EscalationRecord),
}

/// One feedback record, reduced to what the figures use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedbackRecord {
    pub task_id: TaskId,
    pub at_ms: i64,
    pub outcome: Outcome,
    /// Tells a redelivered record from a second action (see [`Feedback::fingerprint`]).
    pub fingerprint: u64,
}

impl From<&Feedback<'_>> for FeedbackRecord {
    fn from(fb: &Feedback<'_>) -> FeedbackRecord {
        FeedbackRecord {
            task_id: fb.task_id,
            at_ms: fb.at_ms,
            outcome: fb.outcome,
            fingerprint: fb.fingerprint(),
        }
    }
}

impl FeedbackRecord {
    /// Decodes a record of the feedback topic with the service's own contract.
    pub fn decode(bytes: &[u8]) -> Result<FeedbackRecord, RecordError> {
        Feedback::decode(bytes)
            .map(|fb| FeedbackRecord::from(&fb))
            .map_err(|e| RecordError(e.to_string()))
    }
}

/// A record the report cannot read; it is skipped and counted. The message is bounded and
/// masked: task records carry the victim's number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct RecordError(pub String);

impl RecordError {
    fn new(message: &str) -> RecordError {
        const MAX: usize = 160;
        let masked = mask_digits(message);
        RecordError(match masked.char_indices().nth(MAX) {
            Some((cut, _)) => format!("{}…", &masked[..cut]),
            None => masked.into_owned(),
        })
    }
}

#[derive(Deserialize)]
struct RawRecord<'a> {
    task_id: TaskId,
    #[serde(default)]
    event_id: String,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    upgrade_of: Option<TaskId>,
    #[serde(default)]
    escalation_of: Option<TaskId>,
    #[serde(default)]
    tier: Option<u8>,
    #[serde(borrow)]
    created_at: Cow<'a, str>,
    #[serde(borrow)]
    deadline: Cow<'a, str>,
    level: Level,
    #[serde(default)]
    reasons: Vec<RawReason>,
    #[serde(default, borrow)]
    victim: Option<RawVictim<'a>>,
    #[serde(default)]
    grid: Option<RawGrid>,
    assignee: RawParty,
}

#[derive(Deserialize)]
struct RawReason {
    rule_id: String,
}

#[derive(Deserialize)]
struct RawVictim<'a> {
    #[serde(borrow)]
    number: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RawGrid {
    #[serde(default)]
    grid_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    station_id: Option<String>,
    #[serde(default)]
    station_name: Option<String>,
}

#[derive(Deserialize)]
struct RawParty {
    id: String,
}

impl TaskTopicRecord {
    /// Decodes a task written by [`crate::task::Task::encode_into`] or an escalation written
    /// by [`crate::lifecycle::Escalation::encode_into`].
    pub fn decode(bytes: &[u8]) -> Result<TaskTopicRecord, RecordError> {
        let raw: RawRecord<'_> =
            serde_json::from_slice(bytes).map_err(|e| RecordError::new(&e.to_string()))?;
        match raw.kind.as_ref() {
            "escalation" => {
                let escalation_of = raw.escalation_of.ok_or_else(|| {
                    RecordError::new("an escalation record without `escalation_of`")
                })?;
                Ok(TaskTopicRecord::Escalation(EscalationRecord {
                    escalation_id: raw.task_id,
                    escalation_of,
                    tier: raw.tier.unwrap_or(1),
                }))
            }
            "new" | "upgrade" => {
                let victim = raw
                    .victim
                    .ok_or_else(|| RecordError::new("a task without `victim`"))?;
                let grid = raw.grid.unwrap_or(RawGrid {
                    grid_id: None,
                    name: None,
                    station_id: None,
                    station_name: None,
                });
                Ok(TaskTopicRecord::Task(TaskRecord {
                    task_id: raw.task_id,
                    event_id: raw.event_id,
                    upgrade_of: raw.upgrade_of,
                    created_at_ms: timestamp("created_at", &raw.created_at)?,
                    deadline_ms: timestamp("deadline", &raw.deadline)?,
                    level: raw.level,
                    person: crate::dispatch::callee_key(&victim.number),
                    victim_masked: mask_phone(&victim.number),
                    grid_id: grid.grid_id,
                    grid_name: grid.name,
                    station_id: grid.station_id,
                    station_name: grid.station_name,
                    assignee_id: raw.assignee.id,
                    rule_ids: raw.reasons.into_iter().map(|r| r.rule_id).collect(),
                }))
            }
            other => Err(RecordError::new(&format!("unknown kind `{other}`"))),
        }
    }
}

fn timestamp(field: &str, value: &str) -> Result<i64, RecordError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| RecordError::new(&format!("field `{field}`: not an RFC 3339 time ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1c29ae8e748e24e88057003578a1188f";

    #[test]
    fn reads_a_task_without_keeping_the_number() {
        let json = format!(
            r#"{{"task_id":"{ID}","event_id":"e01","kind":"new","created_at":"2026-11-24T00:00:20.000Z",
            "occurred_at":"2026-11-24T00:00:00.000Z","deadline":"2026-11-24T00:10:00.000Z",
            "level":"critical","score":110,
            "reasons":[{{"rule_id":"a","reason":"r","score":60}},{{"rule_id":"b","reason":"r","score":50}}],
            "victim":{{"number":"13800000001","location":null}},
            "grid":{{"match":"inside","grid_id":"g1","name":"n","station_id":"s1","station_name":"sn"}},
            "assignee":{{"kind":"officer","id":"po-1"}},"also_notify":[],"script":"x","rules_version":"v"}}"#
        );
        let TaskTopicRecord::Task(t) = TaskTopicRecord::decode(json.as_bytes()).unwrap() else {
            panic!("a task");
        };
        assert_eq!(t.task_id, TaskId::parse(ID).unwrap());
        assert_eq!(t.created_at_ms, 1_795_478_420_000);
        assert_eq!(t.deadline_ms, 1_795_479_000_000);
        assert_eq!(t.person, crate::dispatch::callee_key("13800000001"));
        assert_eq!(t.victim_masked, "138****0001");
        assert_eq!(t.rule_ids, ["a", "b"]);
        assert_eq!(t.station_id.as_deref(), Some("s1"));
        assert!(!format!("{t:?}").contains("13800000001"));
    }

    #[test]
    fn reads_an_escalation() {
        let json = format!(
            r#"{{"task_id":"{ID}","kind":"escalation","escalation_of":"{}","tier":2,
            "created_at":"2026-11-24T00:00:20.000Z","deadline":"2026-11-24T00:10:00.000Z",
            "overdue_since":"2026-11-24T00:10:00.000Z","level":"high",
            "assignee":{{"kind":"duty_desk","id":"desk"}}}}"#,
            "0".repeat(32)
        );
        assert_eq!(
            TaskTopicRecord::decode(json.as_bytes()).unwrap(),
            TaskTopicRecord::Escalation(EscalationRecord {
                escalation_id: TaskId::parse(ID).unwrap(),
                escalation_of: TaskId([0; 16]),
                tier: 2
            })
        );
    }

    #[test]
    fn errors_never_quote_a_number() {
        let err = TaskTopicRecord::decode(br#"{"task_id":13812345678}"#).unwrap_err();
        assert!(!err.to_string().contains("13812345678"), "{err}");
    }
}
