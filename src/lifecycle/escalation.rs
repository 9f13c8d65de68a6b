//! An escalation: an overdue task handed to a duty desk, written to the task topic keyed by
//! the desk's id, so the desk receives it like any other task.

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use crate::rules::Level;
use crate::task::TaskId;

#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// Deterministic (see [`Escalation::id_for`]): a replayed escalation has the same id.
    pub escalation_id: TaskId,
    /// The task now carrying the story (the latest upgrade).
    pub of: TaskId,
    /// 1: the station's duty desk (or the centre's, when there is none); 2: the centre's.
    pub tier: u8,
    /// The desk to tell: the Kafka key of the escalation record.
    pub to_desk: String,
    pub created_at_ms: i64,
    pub deadline_ms: i64,
    pub overdue_since_ms: i64,
    /// Who was asked and gave no feedback: the assignee and copied officers, and at tier 2
    /// the desk escalated to at tier 1.
    pub not_responded: Vec<String>,
    /// When the task was acknowledged, if it was: overdue despite someone taking it in hand.
    pub acknowledged_at_ms: Option<i64>,
    pub attempts: u16,
    /// The task's assignee id: the key feedback on the task must carry, desks included.
    pub original_key: String,
    pub station_id: Option<String>,
    pub level: Level,
}

impl Escalation {
    /// The id of the `tier` escalation of the chain that started with task `root`.
    ///
    /// Task ids hash an event id, a UTF-8 string, with the callee's key as seed; this input
    /// starts with 0xFF, which no UTF-8 string contains, so an escalation id can only equal
    /// an event-derived id by a 128-bit hash collision.
    pub fn id_for(root: TaskId, tier: u8) -> TaskId {
        let mut input = [0u8; 19];
        input[..3].copy_from_slice(&[0xFF, b'E', tier]);
        input[3..].copy_from_slice(&root.0);
        TaskId(xxhash_rust::xxh3::xxh3_128_with_seed(&input, u64::from(tier)).to_be_bytes())
    }

    /// Appends the escalation's JSON, shaped like a task (`task_id`, `kind: "escalation"`,
    /// `assignee`), to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("an escalation always serializes");
    }
}

impl Serialize for Escalation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Desk<'a>(&'a str);
        impl Serialize for Desk<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut st = s.serialize_struct("Assignee", 2)?;
                st.serialize_field("kind", "duty_desk")?;
                st.serialize_field("id", self.0)?;
                st.end()
            }
        }
        let mut st = s.serialize_struct("Escalation", 14)?;
        st.serialize_field("task_id", &self.escalation_id)?;
        st.serialize_field("kind", "escalation")?;
        st.serialize_field("escalation_of", &self.of)?;
        st.serialize_field("tier", &self.tier)?;
        st.serialize_field("created_at", &Rfc3339(self.created_at_ms))?;
        st.serialize_field("deadline", &Rfc3339(self.deadline_ms))?;
        st.serialize_field("overdue_since", &Rfc3339(self.overdue_since_ms))?;
        st.serialize_field("level", &self.level)?;
        st.serialize_field("assignee", &Desk(&self.to_desk))?;
        st.serialize_field("original_assignee", &self.original_key)?;
        st.serialize_field("station_id", &self.station_id)?;
        st.serialize_field("not_responded", &self.not_responded)?;
        st.serialize_field("acknowledged_at", &self.acknowledged_at_ms.map(Rfc3339))?;
        st.serialize_field("attempts", &self.attempts)?;
        st.end()
    }
}

struct Rfc3339(i64);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            None => s.serialize_i64(self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_ids_are_deterministic_per_tier_and_unlike_task_ids() {
        let root = TaskId::for_event("e-1", "13912345678");
        assert_eq!(Escalation::id_for(root, 1), Escalation::id_for(root, 1));
        assert_ne!(Escalation::id_for(root, 1), Escalation::id_for(root, 2));
        assert_ne!(Escalation::id_for(root, 1), root);
        let other = TaskId::for_event("e-2", "13912345678");
        assert_ne!(Escalation::id_for(root, 1), Escalation::id_for(other, 1));
    }

    #[test]
    fn encodes_like_a_task_for_the_desk() {
        let e = Escalation {
            escalation_id: TaskId([1; 16]),
            of: TaskId([2; 16]),
            tier: 1,
            to_desk: "desk-hx".into(),
            created_at_ms: 1_795_480_200_000,
            deadline_ms: 1_795_480_200_000,
            overdue_since_ms: 1_795_480_200_000,
            not_responded: vec!["TJ-HX-0012".into()],
            acknowledged_at_ms: None,
            attempts: 0,
            original_key: "TJ-HX-0012".into(),
            station_id: Some("hx".into()),
            level: Level::High,
        };
        let mut out = Vec::new();
        e.encode_into(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["task_id"], "01010101010101010101010101010101");
        assert_eq!(v["kind"], "escalation");
        assert_eq!(v["escalation_of"], "02020202020202020202020202020202");
        assert_eq!(v["assignee"]["kind"], "duty_desk");
        assert_eq!(v["assignee"]["id"], "desk-hx");
        assert_eq!(v["overdue_since"], "2026-11-24T00:30:00.000Z");
        assert_eq!(v["level"], "high");
        assert_eq!(v["not_responded"][0], "TJ-HX-0012");
        assert_eq!(v["acknowledged_at"], serde_json::Value::Null);
    }
}
