//! What the lifecycle remembers per task, in the owned, serializable form the state changelog
//! carries (keyed by task id), and the task input the Kafka edge builds from a task record.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::rules::Level;
use crate::task::TaskId;

/// Earlier ids remembered per task chain. Dispatch upgrades a task at most three times
/// (low → medium → high → critical); the margin covers a chain restarted by a new rule set.
pub(super) const MAX_CHAIN: usize = 8;
/// Feedback fingerprints remembered per task, enough to recognise every record of a task's
/// ordinary story (ack, a few attempts, the close) when it is replayed.
pub(super) const MAX_SEEN: usize = 16;

/// The `kind` of a record on the task topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    New,
    /// Raises the level of an open task (`upgrade_of`).
    Upgrade,
    /// Written by the lifecycle itself to a duty desk; never tracked as a task of its own.
    Escalation,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::New => "new",
            TaskKind::Upgrade => "upgrade",
            TaskKind::Escalation => "escalation",
        }
    }

    pub fn from_name(name: &str) -> Option<TaskKind> {
        [TaskKind::New, TaskKind::Upgrade, TaskKind::Escalation]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A task as the lifecycle needs it, built by the edge from a record on the task topic and
/// the grid map (for the station's desk).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedTask {
    pub task_id: TaskId,
    pub kind: TaskKind,
    pub upgrade_of: Option<TaskId>,
    pub created_at_ms: i64,
    pub deadline_ms: i64,
    pub level: Level,
    /// The assignee id: the task's Kafka key, and the key its feedback must carry.
    pub key: String,
    pub station_id: Option<String>,
    /// The duty desk of the task's station, if the station is known.
    pub station_desk: Option<String>,
    /// Who may report on the task: the assignee and the `also_notify` officers.
    pub may_report: Vec<String>,
}

/// A task record the lifecycle cannot read. The message is bounded and masked: task records
/// carry the victim's number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("task record cannot be tracked: {0}")]
pub struct TaskRecordError(pub String);

impl TaskRecordError {
    /// A metric label and dead-letter header, like the feedback errors' kinds.
    pub fn kind(&self) -> &'static str {
        "bad_task_record"
    }
}

#[derive(Deserialize)]
struct RawTask<'a> {
    task_id: TaskId,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    upgrade_of: Option<TaskId>,
    #[serde(deserialize_with = "crate::event::de_timestamp")]
    created_at: i64,
    #[serde(deserialize_with = "crate::event::de_timestamp")]
    deadline: i64,
    level: Level,
    assignee: RawParty,
    #[serde(default)]
    grid: Option<RawGrid>,
    #[serde(default)]
    also_notify: Vec<RawParty>,
}

#[derive(Deserialize)]
struct RawParty {
    id: String,
}

#[derive(Deserialize)]
struct RawGrid {
    #[serde(default)]
    station_id: Option<String>,
}

impl TrackedTask {
    /// Reads the fields the lifecycle needs from a record on the task topic: a task written
    /// by [`crate::task::Task::encode_into`] or an escalation written by
    /// [`super::Escalation::encode_into`]. The victim is never read. `station_desk` comes out
    /// `None`: the edge looks it up in the grid map by `station_id`.
    pub fn decode(bytes: &[u8]) -> Result<TrackedTask, TaskRecordError> {
        let raw: RawTask<'_> = serde_json::from_slice(bytes)
            .map_err(|e| TaskRecordError(crate::event::bounded_reason(&e.to_string())))?;
        let kind = TaskKind::from_name(&raw.kind).ok_or_else(|| {
            TaskRecordError(format!(
                "unknown kind `{}`",
                crate::event::bounded_reason(&raw.kind)
            ))
        })?;
        let key = raw.assignee.id;
        let mut may_report = Vec::with_capacity(1 + raw.also_notify.len());
        may_report.push(key.clone());
        may_report.extend(raw.also_notify.into_iter().map(|p| p.id));
        Ok(TrackedTask {
            task_id: raw.task_id,
            kind,
            upgrade_of: raw.upgrade_of,
            created_at_ms: raw.created_at,
            deadline_ms: raw.deadline,
            level: raw.level,
            key,
            station_id: raw.grid.and_then(|g| g.station_id),
            station_desk: None,
            may_report,
        })
    }
}

/// Where an unclosed task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Acknowledged,
    /// The deadline passed with no closing outcome. An acknowledgement after that is
    /// recorded (`acknowledged_at_ms`) but the task stays overdue.
    Overdue,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Overdue => "overdue",
        }
    }
}

/// The full state of a task that is not closed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedState {
    pub task_id: TaskId,
    /// Ids this task upgraded, the chain's first task first. Feedback naming any of them
    /// lands here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<TaskId>,
    pub status: Status,
    pub key: String,
    pub level: Level,
    pub created_at_ms: i64,
    pub deadline_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station_desk: Option<String>,
    pub may_report: Vec<String>,
    /// Actors who gave any accepted feedback, in order of their first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub responded: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_contact_ms: Option<i64>,
    /// `not_reached` reports so far.
    #[serde(default)]
    pub attempts: u16,
    /// Escalations sent: 0, 1 (station desk, or the centre when there is no station desk)
    /// or 2 (centre).
    #[serde(default)]
    pub tier: u8,
    /// The desks escalated to, in tier order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalated_to: Vec<String>,
    /// The deadline that had passed when the task went overdue (an upgrade may move the
    /// deadline later on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_since_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_escalated_ms: Option<i64>,
    /// Fingerprints of accepted feedback (see [`super::Feedback::fingerprint`]), oldest
    /// first, so a redelivered record is a no-op.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<u64>,
}

/// What is left of a closed task: enough to tell a late or duplicate record from a new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedState {
    pub task_id: TaskId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<TaskId>,
    pub key: String,
    /// The closing outcome's name (see [`super::Outcome::as_str`]).
    pub outcome: String,
    /// The lifecycle's time when it closed (the later of its clock and the feedback's own
    /// time): retention runs from here.
    pub closed_at_ms: i64,
    /// Escalations that were sent, so their ids still resolve to this task.
    #[serde(default)]
    pub tier: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<u64>,
}

/// One task's entry in the state changelog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    Tracked(TrackedState),
    Closed(ClosedState),
}

impl TaskState {
    pub fn task_id(&self) -> TaskId {
        match self {
            TaskState::Tracked(t) => t.task_id,
            TaskState::Closed(c) => c.task_id,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            TaskState::Tracked(t) => &t.key,
            TaskState::Closed(c) => &c.key,
        }
    }

    pub(super) fn supersedes(&self) -> &[TaskId] {
        match self {
            TaskState::Tracked(t) => &t.supersedes,
            TaskState::Closed(c) => &c.supersedes,
        }
    }

    /// The first task of the chain: escalation ids derive from it, so that they stay the
    /// same across upgrades.
    pub fn root(&self) -> TaskId {
        self.supersedes().first().copied().unwrap_or(self.task_id())
    }

    /// The unclosed status, or `None` for a closed record.
    pub fn status(&self) -> Option<Status> {
        match self {
            TaskState::Tracked(t) => Some(t.status),
            TaskState::Closed(_) => None,
        }
    }

    /// The changelog value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a task state always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<TaskState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// One record for the state changelog: the task's current state, or `None` for a tombstone
/// (the task is no longer remembered, or its id now names an upgrade's entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub task_id: TaskId,
    pub state: Option<TaskState>,
}

impl Change {
    /// The changelog key: the task id's 32 hex digits, as tasks carry it.
    pub fn key(&self) -> String {
        self.task_id.to_string()
    }

    /// The changelog value; `None` is a tombstone.
    pub fn value(&self) -> Option<Vec<u8>> {
        self.state.as_ref().map(TaskState::encode)
    }

    /// Reads a changelog record back for [`super::Lifecycle::restore`].
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Change, serde_json::Error> {
        let task_id = std::str::from_utf8(key)
            .ok()
            .and_then(TaskId::parse)
            .ok_or_else(|| {
                <serde_json::Error as serde::de::Error>::custom(
                    "changelog key is not a task id of 32 hex digits",
                )
            })?;
        let state = value.map(TaskState::decode).transpose()?;
        Ok(Change { task_id, state })
    }
}

/// Appends `item` to a bounded list, dropping the oldest at the bound.
pub(super) fn push_bounded<T>(list: &mut Vec<T>, item: T, max: usize) {
    if list.len() >= max {
        list.remove(0);
    }
    list.push(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TaskId {
        TaskId([n; 16])
    }

    #[test]
    fn states_round_trip_through_the_changelog_encoding() {
        let tracked = TaskState::Tracked(TrackedState {
            task_id: id(2),
            supersedes: vec![id(1)],
            status: Status::Overdue,
            key: "TJ-HX-0012".into(),
            level: Level::High,
            created_at_ms: 1,
            deadline_ms: 2,
            station_id: Some("hx".into()),
            station_desk: Some("desk-hx".into()),
            may_report: vec!["TJ-HX-0012".into()],
            responded: vec!["TJ-HX-0012".into()],
            acknowledged_at_ms: Some(3),
            first_contact_ms: None,
            attempts: 1,
            tier: 1,
            escalated_to: vec!["desk-hx".into()],
            overdue_since_ms: Some(2),
            last_escalated_ms: Some(4),
            seen: vec![u64::MAX, 7],
        });
        let closed = TaskState::Closed(ClosedState {
            task_id: id(3),
            supersedes: vec![],
            key: "k".into(),
            outcome: "false_alarm".into(),
            closed_at_ms: 9,
            tier: 0,
            seen: vec![1],
        });
        for state in [tracked, closed] {
            assert_eq!(TaskState::decode(&state.encode()).unwrap(), state);
        }
    }

    #[test]
    fn a_closed_record_is_compact() {
        let closed = TaskState::Closed(ClosedState {
            task_id: id(3),
            supersedes: vec![],
            key: "TJ-HX-0012".into(),
            outcome: "reached_by_phone".into(),
            closed_at_ms: 1_795_481_100_000,
            tier: 0,
            seen: vec![u64::MAX],
        });
        let json = String::from_utf8(closed.encode()).unwrap();
        assert_eq!(
            json,
            r#"{"state":"closed","task_id":"03030303030303030303030303030303","key":"TJ-HX-0012","outcome":"reached_by_phone","closed_at_ms":1795481100000,"tier":0,"seen":[18446744073709551615]}"#
        );
    }

    #[test]
    fn a_task_record_decodes_to_what_the_lifecycle_tracks() {
        use crate::grid::{MatchKind, Officer, Role};
        use crate::task::{Assignee, GridRef, Notify, Task, Victim};
        let officer = |id: &str, role| Officer {
            officer_id: id.into(),
            name: "张警官".into(),
            role,
            phone: "13900000000".into(),
        };
        let (cop, aux) = (
            officer("TJ-HX-0012", Role::CommunityOfficer),
            officer("TJ-HX-0012-A", Role::Auxiliary),
        );
        let (assignee, also_notify, script) = (
            serde_json::value::to_raw_value(&Assignee::Officer(&cop)).unwrap(),
            serde_json::value::to_raw_value(&[Notify(&aux)]).unwrap(),
            serde_json::value::to_raw_value("").unwrap(),
        );
        let task = Task {
            task_id: id(2),
            event_id: "e-1",
            kind: "upgrade",
            upgrade_of: Some(id(1)),
            created_at: 1_795_480_200_000,
            occurred_at: 1_795_480_100_000,
            deadline: 1_795_482_000_000,
            level: Level::Critical,
            score: 90,
            reasons: Vec::new(),
            victim: Victim {
                number: "13812345678",
                age: Some(71),
                location: None,
            },
            grid: GridRef {
                match_kind: MatchKind::Inside,
                grid_id: Some("hx-01"),
                name: None,
                station_id: Some("hx"),
                station_name: None,
                distance_m: None,
            },
            assignee: &assignee,
            also_notify: &also_notify,
            fraud_type: None,
            script: &script,
            rules_version: "v1",
        };
        let mut bytes = Vec::new();
        task.encode_into(&mut bytes);
        assert_eq!(
            TrackedTask::decode(&bytes).unwrap(),
            TrackedTask {
                task_id: id(2),
                kind: TaskKind::Upgrade,
                upgrade_of: Some(id(1)),
                created_at_ms: 1_795_480_200_000,
                deadline_ms: 1_795_482_000_000,
                level: Level::Critical,
                key: "TJ-HX-0012".into(),
                station_id: Some("hx".into()),
                station_desk: None,
                may_report: vec!["TJ-HX-0012".into(), "TJ-HX-0012-A".into()],
            }
        );
    }

    #[test]
    fn an_escalation_record_decodes_as_an_escalation() {
        let e = super::super::Escalation {
            escalation_id: id(9),
            of: id(2),
            tier: 1,
            to_desk: "desk-hx".into(),
            created_at_ms: 1,
            deadline_ms: 2,
            overdue_since_ms: 2,
            not_responded: vec![],
            acknowledged_at_ms: None,
            attempts: 0,
            original_key: "TJ-HX-0012".into(),
            station_id: None,
            level: Level::High,
        };
        let mut bytes = Vec::new();
        e.encode_into(&mut bytes);
        let t = TrackedTask::decode(&bytes).unwrap();
        assert_eq!(
            (t.task_id, t.kind, t.key.as_str()),
            (id(9), TaskKind::Escalation, "desk-hx")
        );
    }

    #[test]
    fn a_bad_task_record_error_masks_numbers() {
        let err = TrackedTask::decode(
            br#"{"task_id":"02020202020202020202020202020202","kind":"new","created_at":1,"deadline":2,"level":"high","assignee":{"id":13812345678}}"#,
        )
        .unwrap_err();
        assert_eq!(err.kind(), "bad_task_record");
        assert!(!err.to_string().contains("13812345678"), "{err}");
        assert!(err.to_string().contains("138****5678"), "{err}");
    }

    #[test]
    fn a_change_without_state_is_a_tombstone() {
        let change = Change {
            task_id: id(1),
            state: None,
        };
        assert_eq!(change.key(), "01010101010101010101010101010101");
        assert_eq!(change.value(), None);
        assert_eq!(
            Change::decode(change.key().as_bytes(), None).unwrap(),
            change
        );
        assert!(Change::decode(b"not an id", None).is_err());
    }
}
