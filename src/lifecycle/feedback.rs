//! The feedback contract: one JSON record per action an officer or a duty desk takes on a
//! dissuasion task, decoded with typed errors.
//!
//! Decoding borrows from the input buffer where it can, like [`crate::event::Event`]; a record
//! that fails is decoded a second time with path tracking to name the field it got wrong.
//! Error messages are bounded and never quote a phone number: the free-text `note` is where an
//! officer is most likely to write one.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use thiserror::Error;

use crate::event::{bounded_reason, de_timestamp, Location};
use crate::privacy::mask_digits;
use crate::task::TaskId;

/// Largest feedback record accepted, in bytes: a note and nine photo references fit with
/// room to spare, and photos travel as references, never as bytes.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Longest `actor_id`, in bytes.
pub const MAX_ACTOR_BYTES: usize = 64;
/// Longest `note`, in characters (a note is mostly Chinese: three bytes a character).
pub const MAX_NOTE_CHARS: usize = 500;
/// Most photo references on one record.
pub const MAX_PHOTOS: usize = 9;
/// Longest photo reference, in bytes.
pub const MAX_PHOTO_BYTES: usize = 256;

/// Why a `not_reached` attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotReachedReason {
    NoAnswer,
    WrongAddress,
    Refused,
    Moved,
    Other,
}

impl NotReachedReason {
    pub const ALL: [NotReachedReason; 5] = [
        NotReachedReason::NoAnswer,
        NotReachedReason::WrongAddress,
        NotReachedReason::Refused,
        NotReachedReason::Moved,
        NotReachedReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotReachedReason::NoAnswer => "no_answer",
            NotReachedReason::WrongAddress => "wrong_address",
            NotReachedReason::Refused => "refused",
            NotReachedReason::Moved => "moved",
            NotReachedReason::Other => "other",
        }
    }

    pub fn from_name(name: &str) -> Option<NotReachedReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// What the actor reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Seen and taken in hand; the person is not reached yet.
    Acknowledged,
    ReachedInPerson,
    ReachedByPhone,
    /// An attempt that did not reach the person; the task stays open.
    NotReached(NotReachedReason),
    /// Too late: the person had already transferred money.
    AlreadyDefrauded {
        loss_cny: Option<f64>,
    },
    FalseAlarm,
}

impl Outcome {
    /// Every outcome's name, to register metric labels up front.
    pub const NAMES: [&'static str; 6] = [
        "acknowledged",
        "reached_in_person",
        "reached_by_phone",
        "not_reached",
        "already_defrauded",
        "false_alarm",
    ];

    /// The outcome's name on the wire: a bounded metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Acknowledged => "acknowledged",
            Outcome::ReachedInPerson => "reached_in_person",
            Outcome::ReachedByPhone => "reached_by_phone",
            Outcome::NotReached(_) => "not_reached",
            Outcome::AlreadyDefrauded { .. } => "already_defrauded",
            Outcome::FalseAlarm => "false_alarm",
        }
    }

    /// Whether this outcome ends the task.
    pub fn is_closing(&self) -> bool {
        !matches!(self, Outcome::Acknowledged | Outcome::NotReached(_))
    }

    /// Whether the person was reached: these count toward "people reached" and define the
    /// time of first contact.
    pub fn is_reached(&self) -> bool {
        matches!(self, Outcome::ReachedInPerson | Outcome::ReachedByPhone)
    }

    /// The `not_reached` reason, if this is one.
    pub fn reason(&self) -> Option<NotReachedReason> {
        match self {
            Outcome::NotReached(r) => Some(*r),
            _ => None,
        }
    }
}

/// One feedback record, borrowing from the input buffer where JSON escapes allow.
#[derive(Clone, PartialEq)]
pub struct Feedback<'a> {
    pub task_id: TaskId,
    /// The officer or duty desk reporting.
    pub actor_id: Cow<'a, str>,
    /// When the actor says it happened, milliseconds since the Unix epoch, UTC.
    pub at_ms: i64,
    pub outcome: Outcome,
    pub note: Option<Cow<'a, str>>,
    /// References (object-store keys or URLs) to photos uploaded elsewhere.
    pub photos: Vec<Cow<'a, str>>,
    pub location: Option<Location>,
}

/// Masks digit runs in the note and photo references: an officer may write the person's
/// number there, and `{:?}` ends up in logs.
impl fmt::Debug for Feedback<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feedback")
            .field("task_id", &self.task_id)
            .field("actor_id", &mask_digits(&self.actor_id))
            .field("at_ms", &self.at_ms)
            .field("outcome", &self.outcome)
            .field("note", &self.note.as_deref().map(mask_digits))
            .field(
                "photos",
                &self
                    .photos
                    .iter()
                    .map(|p| mask_digits(p))
                    .collect::<Vec<_>>(),
            )
            .field("location", &self.location)
            .finish()
    }
}

/// Why a record is not valid feedback. Messages never carry a phone number.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FeedbackError {
    #[error("record is {size} bytes, larger than the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("record is not a JSON feedback object: {reason}")]
    Malformed { reason: String },
    #[error("missing required field `{field}`")]
    MissingField { field: String },
    #[error("field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("field `{field}` is out of range: {reason}")]
    OutOfRange { field: &'static str, reason: String },
    #[error(
        "unknown outcome `{value}`; expected one of acknowledged, reached_in_person, \
         reached_by_phone, not_reached, already_defrauded, false_alarm"
    )]
    UnknownOutcome { value: String },
}

impl FeedbackError {
    /// A short, bounded name for the error class: a metric label and a dead-letter header.
    pub fn kind(&self) -> &'static str {
        match self {
            FeedbackError::TooLarge { .. } => "too_large",
            FeedbackError::Malformed { .. } => "malformed",
            FeedbackError::MissingField { .. } => "missing_field",
            FeedbackError::InvalidField { .. } => "invalid_field",
            FeedbackError::OutOfRange { .. } => "out_of_range",
            FeedbackError::UnknownOutcome { .. } => "unknown_outcome",
        }
    }

    /// The field the error is about, where there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            FeedbackError::TooLarge { .. } | FeedbackError::Malformed { .. } => None,
            FeedbackError::MissingField { field } | FeedbackError::InvalidField { field, .. } => {
                Some(field)
            }
            FeedbackError::OutOfRange { field, .. } => Some(field),
            FeedbackError::UnknownOutcome { .. } => Some("outcome"),
        }
    }
}

#[derive(Deserialize)]
struct RawFeedback<'a> {
    #[serde(borrow)]
    task_id: Cow<'a, str>,
    #[serde(borrow)]
    actor_id: Cow<'a, str>,
    #[serde(deserialize_with = "de_timestamp")]
    at: i64,
    #[serde(borrow)]
    outcome: Cow<'a, str>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(default)]
    loss_cny: Option<f64>,
    #[serde(default, borrow)]
    note: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    photos: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    location: Option<Location>,
}

impl<'a> Feedback<'a> {
    /// Decodes and validates one record. Unknown fields are ignored.
    pub fn decode(bytes: &'a [u8]) -> Result<Feedback<'a>, FeedbackError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(FeedbackError::TooLarge {
                size: bytes.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        // serde would also accept a struct written as a JSON array of its fields.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(FeedbackError::Malformed {
                reason: "expected a JSON object".into(),
            });
        }
        let raw: RawFeedback<'a> = match serde_json::from_slice(bytes) {
            Ok(raw) => raw,
            Err(_) => return Err(explain_decode_failure(bytes)),
        };
        // Neither the task id nor the actor id is quoted back: either may be a phone number
        // typed into the wrong box.
        let task_id = TaskId::parse(&raw.task_id).ok_or_else(|| FeedbackError::InvalidField {
            field: "task_id".into(),
            reason: format!(
                "{} characters, not a task id of 32 hex digits",
                raw.task_id.chars().count()
            ),
        })?;
        if raw.actor_id.is_empty() || raw.actor_id.len() > MAX_ACTOR_BYTES {
            return Err(FeedbackError::InvalidField {
                field: "actor_id".into(),
                reason: format!(
                    "{} bytes, must be 1 to {MAX_ACTOR_BYTES}",
                    raw.actor_id.len()
                ),
            });
        }
        let outcome = outcome(&raw)?;
        if let Some(note) = &raw.note {
            // Bytes bound characters from above: most notes skip the count.
            if note.len() > MAX_NOTE_CHARS && note.chars().count() > MAX_NOTE_CHARS {
                return Err(FeedbackError::InvalidField {
                    field: "note".into(),
                    reason: format!(
                        "{} characters, longer than the limit of {MAX_NOTE_CHARS}",
                        note.chars().count()
                    ),
                });
            }
        }
        let photos = raw.photos.unwrap_or_default();
        if photos.len() > MAX_PHOTOS {
            return Err(FeedbackError::InvalidField {
                field: "photos".into(),
                reason: format!("{} references, more than {MAX_PHOTOS}", photos.len()),
            });
        }
        if let Some((i, p)) = photos
            .iter()
            .enumerate()
            .find(|(_, p)| p.is_empty() || p.len() > MAX_PHOTO_BYTES)
        {
            return Err(FeedbackError::InvalidField {
                field: format!("photos[{i}]"),
                reason: format!(
                    "a reference of {} bytes, must be 1 to {MAX_PHOTO_BYTES}",
                    p.len()
                ),
            });
        }
        if let Some(loc) = raw.location {
            check_location(loc)?;
        }
        Ok(Feedback {
            task_id,
            actor_id: raw.actor_id,
            at_ms: raw.at,
            outcome,
            note: raw.note,
            photos,
            location: raw.location,
        })
    }

    /// Identifies the record for de-duplication: the same actor reporting the same outcome
    /// at the same instant is a redelivery, not a second action.
    pub fn fingerprint(&self) -> u64 {
        let mut buf = Vec::with_capacity(self.actor_id.len() + 48);
        buf.extend_from_slice(self.actor_id.as_bytes());
        // A byte no UTF-8 string contains keeps `actor` + `outcome` boundaries unambiguous.
        buf.push(0xFF);
        buf.extend_from_slice(&self.at_ms.to_be_bytes());
        buf.extend_from_slice(self.outcome.as_str().as_bytes());
        if let Some(r) = self.outcome.reason() {
            buf.push(0xFF);
            buf.extend_from_slice(r.as_str().as_bytes());
        }
        xxhash_rust::xxh3::xxh3_64(&buf)
    }
}

fn outcome(raw: &RawFeedback<'_>) -> Result<Outcome, FeedbackError> {
    let name = raw.outcome.as_ref();
    let outcome = match name {
        "acknowledged" => Outcome::Acknowledged,
        "reached_in_person" => Outcome::ReachedInPerson,
        "reached_by_phone" => Outcome::ReachedByPhone,
        "already_defrauded" => Outcome::AlreadyDefrauded {
            loss_cny: raw.loss_cny,
        },
        "false_alarm" => Outcome::FalseAlarm,
        "not_reached" => {
            let Some(reason) = raw.reason.as_deref() else {
                return Err(FeedbackError::MissingField {
                    field: "reason".into(),
                });
            };
            let reason =
                NotReachedReason::from_name(reason).ok_or_else(|| FeedbackError::InvalidField {
                    field: "reason".into(),
                    reason: format!(
                        "`{}` is not one of no_answer, wrong_address, refused, moved, other",
                        bounded_value(reason)
                    ),
                })?;
            Outcome::NotReached(reason)
        }
        other => {
            return Err(FeedbackError::UnknownOutcome {
                value: bounded_value(other),
            })
        }
    };
    if raw.reason.is_some() && !matches!(outcome, Outcome::NotReached(_)) {
        return Err(FeedbackError::InvalidField {
            field: "reason".into(),
            reason: format!(
                "only allowed with outcome `not_reached`, not `{}`",
                outcome.as_str()
            ),
        });
    }
    if let Some(loss) = raw.loss_cny {
        if !(loss.is_finite() && loss >= 0.0) {
            return Err(FeedbackError::OutOfRange {
                field: "loss_cny",
                reason: mask_digits(&format!("{loss} is not a non-negative amount")).into_owned(),
            });
        }
    }
    Ok(outcome)
}

fn check_location(loc: Location) -> Result<(), FeedbackError> {
    if !(loc.lon.is_finite() && (-180.0..=180.0).contains(&loc.lon)) {
        return Err(FeedbackError::OutOfRange {
            field: "location.lon",
            reason: mask_digits(&format!("{} is not a longitude in [-180, 180]", loc.lon))
                .into_owned(),
        });
    }
    if !(loc.lat.is_finite() && (-90.0..=90.0).contains(&loc.lat)) {
        return Err(FeedbackError::OutOfRange {
            field: "location.lat",
            reason: mask_digits(&format!("{} is not a latitude in [-90, 90]", loc.lat))
                .into_owned(),
        });
    }
    Ok(())
}

/// A value quoted in an error: masked and cut to a few dozen characters.
fn bounded_value(value: &str) -> String {
    const MAX: usize = 40;
    let masked = mask_digits(value);
    match masked.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &masked[..cut]),
        None => masked.into_owned(),
    }
}

/// Decodes again with path tracking so the error names the field the record got wrong.
fn explain_decode_failure(bytes: &[u8]) -> FeedbackError {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let err = match serde_path_to_error::deserialize::<_, RawFeedback>(&mut de) {
        Ok(_) => {
            // The value parsed but trailing input did not.
            return FeedbackError::Malformed {
                reason: match de.end() {
                    Err(e) => bounded_reason(&e.to_string()),
                    Ok(()) => "record could not be decoded".into(),
                },
            };
        }
        Err(err) => err,
    };
    let path = err.path().to_string();
    // The top level has no field name: a non-object record is malformed as a whole.
    let top_level = matches!(path.as_str(), "." | "?" | "");
    let inner = err.into_inner();
    let message = bounded_reason(&inner.to_string());
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        let field = if top_level {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return FeedbackError::MissingField { field };
    }
    if inner.is_data() && !top_level {
        return FeedbackError::InvalidField {
            field: path,
            reason: message,
        };
    }
    FeedbackError::Malformed { reason: message }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = "0123456789abcdef0123456789abcdef";

    fn record(outcome_fields: &str) -> String {
        format!(
            r#"{{"task_id":"{TASK}","actor_id":"TJ-HX-0012","at":"2026-11-24T08:45:00+08:00",{outcome_fields}}}"#
        )
    }

    fn decode_err(json: &str) -> FeedbackError {
        Feedback::decode(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn decodes_every_outcome() {
        for (fields, expected) in [
            (r#""outcome":"acknowledged""#, Outcome::Acknowledged),
            (r#""outcome":"reached_in_person""#, Outcome::ReachedInPerson),
            (r#""outcome":"reached_by_phone""#, Outcome::ReachedByPhone),
            (
                r#""outcome":"not_reached","reason":"wrong_address""#,
                Outcome::NotReached(NotReachedReason::WrongAddress),
            ),
            (
                r#""outcome":"already_defrauded","loss_cny":38000.5"#,
                Outcome::AlreadyDefrauded {
                    loss_cny: Some(38000.5),
                },
            ),
            (
                r#""outcome":"already_defrauded""#,
                Outcome::AlreadyDefrauded { loss_cny: None },
            ),
            (r#""outcome":"false_alarm""#, Outcome::FalseAlarm),
        ] {
            let json = record(fields);
            let fb = Feedback::decode(json.as_bytes()).unwrap();
            assert_eq!(fb.outcome, expected, "{fields}");
            assert_eq!(fb.task_id, TaskId::parse(TASK).unwrap());
            assert_eq!(fb.actor_id, "TJ-HX-0012");
            assert_eq!(fb.at_ms, 1_795_481_100_000);
        }
    }

    #[test]
    fn every_not_reached_reason_decodes() {
        for reason in NotReachedReason::ALL {
            let json = record(&format!(
                r#""outcome":"not_reached","reason":"{}""#,
                reason.as_str()
            ));
            assert_eq!(
                Feedback::decode(json.as_bytes()).unwrap().outcome,
                Outcome::NotReached(reason)
            );
        }
    }

    #[test]
    fn closing_and_reached_follow_the_contract() {
        let closing: Vec<_> = [
            Outcome::Acknowledged,
            Outcome::ReachedInPerson,
            Outcome::ReachedByPhone,
            Outcome::NotReached(NotReachedReason::Moved),
            Outcome::AlreadyDefrauded { loss_cny: None },
            Outcome::FalseAlarm,
        ]
        .iter()
        .map(|o| (o.as_str(), o.is_closing(), o.is_reached()))
        .collect();
        assert_eq!(
            closing,
            [
                ("acknowledged", false, false),
                ("reached_in_person", true, true),
                ("reached_by_phone", true, true),
                ("not_reached", false, false),
                ("already_defrauded", true, false),
                ("false_alarm", true, false),
            ]
        );
    }

    #[test]
    fn optional_fields_decode_and_unknown_fields_are_ignored() {
        let json = format!(
            r#"{{"task_id":"{}","actor_id":"desk-hx","at":1795481100000,"outcome":"reached_in_person",
            "note":"已上门劝阻，老人已知情","photos":["s3://fb/1.jpg","s3://fb/2.jpg"],
            "location":{{"lon":117.2,"lat":39.13}},"app_version":"2.1"}}"#,
            TASK.to_uppercase()
        );
        let fb = Feedback::decode(json.as_bytes()).unwrap();
        assert_eq!(fb.task_id, TaskId::parse(TASK).unwrap());
        assert_eq!(fb.at_ms, 1_795_481_100_000);
        assert_eq!(fb.note.as_deref(), Some("已上门劝阻，老人已知情"));
        assert_eq!(fb.photos, ["s3://fb/1.jpg", "s3://fb/2.jpg"]);
        assert_eq!(
            fb.location,
            Some(Location {
                lon: 117.2,
                lat: 39.13
            })
        );
    }

    #[test]
    fn a_record_over_16_kib_is_too_large() {
        let json = record(&format!(
            r#""outcome":"acknowledged","note":"{}""#,
            "x".repeat(20_000)
        ));
        let err = decode_err(&json);
        assert_eq!(
            err,
            FeedbackError::TooLarge {
                size: json.len(),
                max: MAX_RECORD_BYTES
            }
        );
        assert_eq!(err.kind(), "too_large");
    }

    #[test]
    fn a_note_is_bounded_in_characters_not_bytes() {
        // 500 Chinese characters are 1,500 bytes: allowed.
        let json = record(&format!(
            r#""outcome":"acknowledged","note":"{}""#,
            "劝".repeat(500)
        ));
        assert!(Feedback::decode(json.as_bytes()).is_ok());
        let json = record(&format!(
            r#""outcome":"acknowledged","note":"{}""#,
            "劝".repeat(501)
        ));
        let err = decode_err(&json);
        assert_eq!(err.field(), Some("note"));
        assert_eq!(err.kind(), "invalid_field");
        assert!(err.to_string().contains("501 characters"), "{err}");
    }

    #[test]
    fn a_bad_task_id_is_an_invalid_field_not_quoted() {
        let json = record(r#""outcome":"acknowledged""#).replace(TASK, "13812345678");
        let err = decode_err(&json);
        assert_eq!(err.field(), Some("task_id"));
        assert_eq!(err.kind(), "invalid_field");
        assert!(!format!("{err} {err:?}").contains("13812345678"));
    }

    #[test]
    fn an_unknown_outcome_is_its_own_kind() {
        let err = decode_err(&record(r#""outcome":"dissuaded""#));
        assert_eq!(
            err,
            FeedbackError::UnknownOutcome {
                value: "dissuaded".into()
            }
        );
        assert_eq!(err.kind(), "unknown_outcome");
        assert_eq!(err.field(), Some("outcome"));
    }

    #[test]
    fn not_reached_needs_a_known_reason() {
        let err = decode_err(&record(r#""outcome":"not_reached""#));
        assert_eq!(
            err,
            FeedbackError::MissingField {
                field: "reason".into()
            }
        );
        let err = decode_err(&record(r#""outcome":"not_reached","reason":"asleep""#));
        assert_eq!(err.field(), Some("reason"));
        assert_eq!(err.kind(), "invalid_field");
    }

    #[test]
    fn a_reason_with_another_outcome_is_invalid() {
        let err = decode_err(&record(r#""outcome":"false_alarm","reason":"no_answer""#));
        assert_eq!(err.field(), Some("reason"));
        assert_eq!(err.kind(), "invalid_field");
    }

    #[test]
    fn missing_required_fields_are_named() {
        for field in ["task_id", "actor_id", "at", "outcome"] {
            let mut value: serde_json::Value =
                serde_json::from_str(&record(r#""outcome":"acknowledged""#)).unwrap();
            value.as_object_mut().unwrap().remove(field);
            let err = decode_err(&value.to_string());
            assert_eq!(
                err,
                FeedbackError::MissingField {
                    field: field.into()
                }
            );
            assert_eq!(err.kind(), "missing_field");
        }
    }

    #[test]
    fn actor_ids_are_bounded_and_not_empty() {
        let json = record(r#""outcome":"acknowledged""#);
        let err = decode_err(&json.replace("TJ-HX-0012", ""));
        assert_eq!(err.field(), Some("actor_id"));
        let err = decode_err(&json.replace("TJ-HX-0012", &"a".repeat(65)));
        assert_eq!(err.field(), Some("actor_id"));
        assert!(err.to_string().contains("65 bytes"), "{err}");
    }

    #[test]
    fn bad_timestamps_and_locations_name_their_field() {
        let err = decode_err(
            &record(r#""outcome":"acknowledged""#).replace("2026-11-24T08:45:00+08:00", "soon"),
        );
        assert_eq!(err.field(), Some("at"));
        assert_eq!(err.kind(), "invalid_field");
        let err = decode_err(&record(
            r#""outcome":"acknowledged","location":{"lon":117,"lat":91}"#,
        ));
        assert_eq!(err.field(), Some("location.lat"));
        assert_eq!(err.kind(), "out_of_range");
        let err = decode_err(&record(
            r#""outcome":"acknowledged","location":{"lon":"east","lat":39}"#,
        ));
        assert_eq!(err.field(), Some("location.lon"));
    }

    #[test]
    fn a_loss_must_be_a_non_negative_amount() {
        let err = decode_err(&record(r#""outcome":"already_defrauded","loss_cny":-5"#));
        assert_eq!(err.field(), Some("loss_cny"));
        assert_eq!(err.kind(), "out_of_range");
        let err = decode_err(&record(
            r#""outcome":"already_defrauded","loss_cny":"lots""#,
        ));
        assert_eq!(err.field(), Some("loss_cny"));
    }

    #[test]
    fn photos_are_bounded_references() {
        let ten: Vec<String> = (0..10).map(|i| format!("\"p{i}\"")).collect();
        let err = decode_err(&record(&format!(
            r#""outcome":"acknowledged","photos":[{}]"#,
            ten.join(",")
        )));
        assert_eq!(err.field(), Some("photos"));
        let err = decode_err(&record(&format!(
            r#""outcome":"acknowledged","photos":["ok","{}"]"#,
            "p".repeat(257)
        )));
        assert_eq!(err.field(), Some("photos[1]"));
        let err = decode_err(&record(r#""outcome":"acknowledged","photos":[[255,216]]"#));
        assert_eq!(err.field(), Some("photos[0]"));
    }

    #[test]
    fn a_phone_number_in_the_note_never_reaches_errors_or_debug_output() {
        const PHONE: &str = "13812345678";
        // Too long, with the number in it.
        let note = format!("已联系 {PHONE}，{}", "劝".repeat(500));
        let err = decode_err(&record(&format!(
            r#""outcome":"acknowledged","note":"{note}""#
        )));
        assert_eq!(err.field(), Some("note"));
        assert!(!format!("{err} {err:?}").contains(PHONE), "{err:?}");
        // The wrong type: the parser quotes the value.
        let err = decode_err(&record(&format!(
            r#""outcome":"acknowledged","note":{PHONE}"#
        )));
        assert_eq!(err.field(), Some("note"));
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(PHONE), "{shown}");
        assert!(shown.contains("138****5678"), "{shown}");
        // An unknown outcome quoting the number.
        let err = decode_err(&record(&format!(r#""outcome":"called {PHONE}""#)));
        assert!(!format!("{err} {err:?}").contains(PHONE), "{err:?}");
        // A valid record: the note keeps the number for the desk, debug output masks it.
        let json = record(&format!(
            r#""outcome":"acknowledged","note":"已联系 {PHONE}""#
        ));
        let fb = Feedback::decode(json.as_bytes()).unwrap();
        assert_eq!(fb.note.as_deref(), Some("已联系 13812345678"));
        assert!(!format!("{fb:?}").contains(PHONE), "{fb:?}");
    }

    #[test]
    fn parser_messages_are_bounded() {
        let err = decode_err(&record(&format!(
            r#""outcome":"acknowledged","location":"{}""#,
            "x".repeat(5000)
        )));
        assert_eq!(err.field(), Some("location"));
        assert!(err.to_string().len() < 300, "{}", err.to_string().len());
        let err = decode_err(&record(&format!(r#""outcome":"{}""#, "y".repeat(5000))));
        assert!(err.to_string().len() < 300, "{}", err.to_string().len());
    }

    #[test]
    fn unparsable_records_are_malformed() {
        for json in [
            "",
            "not json",
            "[1,2]",
            &format!("{} trailing", record(r#""outcome":"acknowledged""#)),
        ] {
            assert_eq!(decode_err(json).kind(), "malformed", "{json}");
        }
    }

    #[test]
    fn fingerprints_tell_redeliveries_from_new_actions() {
        let json = record(r#""outcome":"not_reached","reason":"no_answer""#);
        let a = Feedback::decode(json.as_bytes()).unwrap();
        let again = Feedback::decode(json.as_bytes()).unwrap();
        assert_eq!(a.fingerprint(), again.fingerprint());
        let other_reason = json.replace("no_answer", "refused");
        let b = Feedback::decode(other_reason.as_bytes()).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        let later = json.replace("08:45:00", "08:46:00");
        let c = Feedback::decode(later.as_bytes()).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
