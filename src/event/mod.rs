//! The suspicious-call event: the input contract, decoded from one JSON record.
//!
//! Decoding borrows strings from the input buffer, so the hot path allocates nothing for a
//! well-formed record. A record that fails is decoded a second time with path tracking to name
//! the offending field; only bad records pay for that.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use thiserror::Error;

mod scan;

use crate::phone::{self, PhoneError};
use crate::privacy::{mask_digits, mask_phone};

/// Bounds on one input record, so that one oversized record can neither exhaust memory nor
/// produce a dead letter the broker refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest record accepted, in bytes.
    pub max_record_bytes: usize,
    /// Longest string field accepted (ids, numbers, cell id, fraud type), in bytes.
    pub max_field_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 64 * 1024,
            max_field_bytes: 256,
        }
    }
}

/// Longest explanation an error carries: parser messages quote the offending value, which
/// may be most of the record.
const MAX_REASON_CHARS: usize = 160;

/// A point in WGS84 degrees.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
pub struct Location {
    pub lon: f64,
    pub lat: f64,
}

/// Signals the anti-fraud centre attaches to the calling number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CallerFlag {
    Blacklisted = 0,
    Overseas,
    Voip,
    SpoofedOfficial,
    SpoofedBank,
    NewSim,
    HighFrequency,
    Forwarded,
}

impl CallerFlag {
    pub const ALL: [CallerFlag; 8] = [
        CallerFlag::Blacklisted,
        CallerFlag::Overseas,
        CallerFlag::Voip,
        CallerFlag::SpoofedOfficial,
        CallerFlag::SpoofedBank,
        CallerFlag::NewSim,
        CallerFlag::HighFrequency,
        CallerFlag::Forwarded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CallerFlag::Blacklisted => "blacklisted",
            CallerFlag::Overseas => "overseas",
            CallerFlag::Voip => "voip",
            CallerFlag::SpoofedOfficial => "spoofed_official",
            CallerFlag::SpoofedBank => "spoofed_bank",
            CallerFlag::NewSim => "new_sim",
            CallerFlag::HighFrequency => "high_frequency",
            CallerFlag::Forwarded => "forwarded",
        }
    }

    pub fn from_name(name: &str) -> Option<CallerFlag> {
        CallerFlag::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A set of [`CallerFlag`]s as a bitset, so rule conditions test flags with one AND.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallerFlags(pub u16);

impl CallerFlags {
    pub fn with(mut self, flag: CallerFlag) -> Self {
        self.0 |= 1 << flag as u8;
        self
    }

    pub fn contains(self, flag: CallerFlag) -> bool {
        self.0 & (1 << flag as u8) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = CallerFlag> {
        CallerFlag::ALL
            .into_iter()
            .filter(move |f| self.contains(*f))
    }
}

/// One suspicious call, as written by the anti-fraud centre.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    /// Milliseconds since the Unix epoch, UTC.
    pub occurred_at_ms: i64,
    pub caller_number: Cow<'a, str>,
    pub callee_number: Cow<'a, str>,
    pub callee_location: Option<Location>,
    pub cell_id: Option<Cow<'a, str>>,
    pub call_duration_s: f64,
    pub caller_flags: CallerFlags,
    pub callee_age: Option<u8>,
    pub callee_prior_victim: Option<bool>,
    pub sms_with_link: Option<bool>,
    pub fraud_type_hint: Option<Cow<'a, str>>,
}

/// Why a record is not a valid event. Messages never carry a phone number.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EventError {
    #[error("record is {size} bytes, larger than the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("record is not a JSON event object: {reason}")]
    Malformed { reason: String },
    #[error("missing required field `{field}`")]
    MissingField { field: String },
    #[error("field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("field `{field}` is out of range: {reason}")]
    OutOfRange { field: &'static str, reason: String },
}

impl EventError {
    /// A short, bounded name for the error class: a metric label and a dead-letter header.
    pub fn kind(&self) -> &'static str {
        match self {
            EventError::TooLarge { .. } => "too_large",
            EventError::Malformed { .. } => "malformed",
            EventError::MissingField { .. } => "missing_field",
            EventError::InvalidField { .. } => "invalid_field",
            EventError::OutOfRange { .. } => "out_of_range",
        }
    }

    /// The field the error is about, where there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            EventError::TooLarge { .. } | EventError::Malformed { .. } => None,
            EventError::MissingField { field } | EventError::InvalidField { field, .. } => {
                Some(field)
            }
            EventError::OutOfRange { field, .. } => Some(field),
        }
    }
}

/// The contract's fields, in the order producers write them.
pub const FIELDS: [&str; 12] = [
    "event_id",
    "occurred_at",
    "caller_number",
    "callee_number",
    "callee_location",
    "cell_id",
    "call_duration_s",
    "caller_flags",
    "callee_age",
    "callee_prior_victim",
    "sms_with_link",
    "fraud_type_hint",
];

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct RawEvent<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(deserialize_with = "de_timestamp")]
    occurred_at: i64,
    #[serde(borrow)]
    caller_number: Cow<'a, str>,
    #[serde(borrow)]
    callee_number: Cow<'a, str>,
    #[serde(default)]
    callee_location: Option<Location>,
    #[serde(default, borrow)]
    cell_id: Option<Cow<'a, str>>,
    call_duration_s: f64,
    #[serde(default, deserialize_with = "de_flags")]
    caller_flags: CallerFlags,
    #[serde(default)]
    callee_age: Option<u8>,
    #[serde(default)]
    callee_prior_victim: Option<bool>,
    #[serde(default)]
    sms_with_link: Option<bool>,
    #[serde(default, borrow)]
    fraud_type_hint: Option<Cow<'a, str>>,
}

impl<'a> Event<'a> {
    /// Decodes and validates one record under the default [`Limits`]. Unknown fields are
    /// ignored; the callee number comes out canonical (see [`crate::phone`]).
    pub fn decode(bytes: &'a [u8]) -> Result<Event<'a>, EventError> {
        Self::decode_with(bytes, &Limits::default())
    }

    /// [`Event::decode`] under `limits`.
    pub fn decode_with(bytes: &'a [u8], limits: &Limits) -> Result<Event<'a>, EventError> {
        if bytes.len() > limits.max_record_bytes {
            return Err(EventError::TooLarge {
                size: bytes.len(),
                max: limits.max_record_bytes,
            });
        }
        // serde would also accept a struct written as a JSON array of its fields.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(EventError::Malformed {
                reason: "expected a JSON object".into(),
            });
        }
        // One UTF-8 check of the whole record, then a parser that trusts it: reading the
        // bytes checks every string on its own, a tenth of the cost of decoding an event.
        // simdutf8 checks a typical record in 13 ns where `str::from_utf8` took 20.
        let parsed = simdutf8::basic::from_utf8(bytes).ok().and_then(|text| {
            scan::raw_event(text).or_else(|| serde_json::from_str::<RawEvent<'a>>(text).ok())
        });
        let Some(raw) = parsed else {
            return Err(explain_decode_failure(bytes));
        };
        let mut event = Event {
            event_id: raw.event_id,
            occurred_at_ms: raw.occurred_at,
            caller_number: raw.caller_number,
            callee_number: raw.callee_number,
            callee_location: raw.callee_location,
            cell_id: raw.cell_id,
            call_duration_s: raw.call_duration_s,
            caller_flags: raw.caller_flags,
            callee_age: raw.callee_age,
            callee_prior_victim: raw.callee_prior_victim,
            sms_with_link: raw.sms_with_link,
            fraud_type_hint: raw.fraud_type_hint,
        };
        // A field cannot be longer than the record: most records skip the length checks.
        if bytes.len() > limits.max_field_bytes {
            event.check_field_lengths(limits)?;
        }
        event.validate()?;
        if !phone::is_canonical_mobile(event.callee_number.as_bytes()) {
            let canonical = phone::canonical(&event.callee_number)
                .map_err(|e| callee_error(&event.callee_number, e))?
                .into_owned();
            event.callee_number = Cow::Owned(canonical);
        }
        Ok(event)
    }

    fn check_field_lengths(&self, limits: &Limits) -> Result<(), EventError> {
        for (field, value) in [
            ("event_id", Some(&self.event_id)),
            ("caller_number", Some(&self.caller_number)),
            ("callee_number", Some(&self.callee_number)),
            ("cell_id", self.cell_id.as_ref()),
            ("fraud_type_hint", self.fraud_type_hint.as_ref()),
        ] {
            if let Some(v) = value.filter(|v| v.len() > limits.max_field_bytes) {
                return Err(EventError::InvalidField {
                    field: field.into(),
                    reason: format!(
                        "{} bytes, longer than the limit of {} bytes",
                        v.len(),
                        limits.max_field_bytes
                    ),
                });
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), EventError> {
        if self.event_id.is_empty() {
            return Err(EventError::InvalidField {
                field: "event_id".into(),
                reason: "must not be empty".into(),
            });
        }
        if self.callee_number.is_empty() {
            return Err(EventError::InvalidField {
                field: "callee_number".into(),
                reason: "must not be empty".into(),
            });
        }
        if !(self.call_duration_s.is_finite() && self.call_duration_s >= 0.0) {
            return Err(EventError::OutOfRange {
                field: "call_duration_s",
                reason: mask_digits(&format!(
                    "{} is not a non-negative duration",
                    self.call_duration_s
                ))
                .into_owned(),
            });
        }
        if let Some(loc) = self.callee_location {
            if !(loc.lon.is_finite() && (-180.0..=180.0).contains(&loc.lon)) {
                return Err(EventError::OutOfRange {
                    field: "callee_location.lon",
                    reason: mask_digits(&format!("{} is not a longitude in [-180, 180]", loc.lon))
                        .into_owned(),
                });
            }
            if !(loc.lat.is_finite() && (-90.0..=90.0).contains(&loc.lat)) {
                return Err(EventError::OutOfRange {
                    field: "callee_location.lat",
                    reason: mask_digits(&format!("{} is not a latitude in [-90, 90]", loc.lat))
                        .into_owned(),
                });
            }
        }
        if let Some(age) = self.callee_age {
            if age > 130 {
                return Err(EventError::OutOfRange {
                    field: "callee_age",
                    reason: format!("{age} is not an age in [0, 130]"),
                });
            }
        }
        Ok(())
    }
}

fn callee_error(raw: &str, e: PhoneError) -> EventError {
    EventError::InvalidField {
        field: "callee_number".into(),
        reason: format!("`{}` {e}", mask_phone(raw)),
    }
}

/// Cuts a parser message to [`MAX_REASON_CHARS`] and masks digit runs in it. Shared by every
/// decoder of a contract (events, feedback, task records).
pub(crate) fn bounded_reason(message: &str) -> String {
    let masked = mask_digits(message);
    match masked.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &masked[..cut], masked.len()),
        None => masked.into_owned(),
    }
}

/// Decodes again with path tracking so the error names the field the record got wrong.
fn explain_decode_failure(bytes: &[u8]) -> EventError {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let err = match serde_path_to_error::deserialize::<_, RawEvent>(&mut de) {
        Ok(_) => {
            // The value parsed but trailing input did not.
            return match de.end() {
                Err(e) => EventError::Malformed {
                    reason: bounded_reason(&e.to_string()),
                },
                Ok(()) => EventError::Malformed {
                    reason: "record could not be decoded".into(),
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
    if let Some(field) = missing_field_name(&message) {
        let field = if top_level {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return EventError::MissingField { field };
    }
    if inner.is_data() && !top_level {
        return EventError::InvalidField {
            field: path,
            reason: message,
        };
    }
    EventError::Malformed { reason: message }
}

fn missing_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// An RFC 3339 timestamp or epoch milliseconds: how every contract writes a time.
pub(crate) fn de_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct TsVisitor;
    impl Visitor<'_> for TsVisitor {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an RFC 3339 timestamp or epoch milliseconds")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("epoch milliseconds out of range"))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|e| E::custom(format!("not an RFC 3339 timestamp ({e})")))
        }
    }
    d.deserialize_any(TsVisitor)
}

fn de_flags<'de, D: Deserializer<'de>>(d: D) -> Result<CallerFlags, D::Error> {
    struct FlagsVisitor;
    impl<'de> Visitor<'de> for FlagsVisitor {
        type Value = CallerFlags;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of caller flag names")
        }
        fn visit_unit<E: de::Error>(self) -> Result<CallerFlags, E> {
            Ok(CallerFlags::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CallerFlags, A::Error> {
            let mut flags = CallerFlags::default();
            // Flags the centre adds before the rules know them are ignored, not rejected:
            // rejecting would hold back a warning over a signal no rule can use yet.
            while let Some(name) = seq.next_element::<Cow<'de, str>>()? {
                if let Some(flag) = CallerFlag::from_name(&name) {
                    flags = flags.with(flag);
                }
            }
            Ok(flags)
        }
    }
    d.deserialize_any(FlagsVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"event_id":"e-1","occurred_at":"2026-11-24T08:30:00+08:00",
        "caller_number":"+85251234567","callee_number":"13812345678",
        "callee_location":{"lon":117.2,"lat":39.13},"cell_id":"460-00-4123-1001",
        "call_duration_s":742,"caller_flags":["overseas","spoofed_official","not_yet_known"],
        "callee_age":71,"callee_prior_victim":false,"sms_with_link":true,
        "fraud_type_hint":"impersonate_police","extra":{"ignored":[1,2,3]}}"#;

    fn decode_err(json: &str) -> EventError {
        Event::decode(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn decodes_every_field_and_ignores_unknown_ones() {
        let e = Event::decode(FULL.as_bytes()).unwrap();
        assert_eq!(e.event_id, "e-1");
        assert_eq!(e.occurred_at_ms, 1_795_480_200_000);
        assert_eq!(e.callee_number, "13812345678");
        assert_eq!(
            e.callee_location,
            Some(Location {
                lon: 117.2,
                lat: 39.13
            })
        );
        assert_eq!(e.cell_id.as_deref(), Some("460-00-4123-1001"));
        assert_eq!(e.call_duration_s, 742.0);
        assert_eq!(
            e.caller_flags,
            CallerFlags::default()
                .with(CallerFlag::Overseas)
                .with(CallerFlag::SpoofedOfficial)
        );
        assert_eq!(e.callee_age, Some(71));
        assert_eq!(e.callee_prior_victim, Some(false));
        assert_eq!(e.sms_with_link, Some(true));
        assert_eq!(e.fraud_type_hint.as_deref(), Some("impersonate_police"));
    }

    #[test]
    fn accepts_epoch_milliseconds_and_absent_optionals() {
        let e = Event::decode(
            br#"{"event_id":"e","occurred_at":1795480200000,"caller_number":"1","callee_number":"13912345678","call_duration_s":3.5}"#,
        )
        .unwrap();
        assert_eq!(e.occurred_at_ms, 1_795_480_200_000);
        assert_eq!(e.callee_location, None);
        assert_eq!(e.caller_flags, CallerFlags::default());
        assert_eq!(e.callee_age, None);
    }

    #[test]
    fn missing_required_field_is_named() {
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","call_duration_s":1}"#,
        );
        assert_eq!(
            err,
            EventError::MissingField {
                field: "callee_number".into()
            }
        );
        assert_eq!(err.kind(), "missing_field");
    }

    #[test]
    fn wrong_type_names_the_field_and_masks_the_value() {
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":13812345678,"call_duration_s":1}"#,
        );
        match &err {
            EventError::InvalidField { field, reason } => {
                assert_eq!(field, "callee_number");
                assert!(reason.contains("138****5678"), "{reason}");
                assert!(!reason.contains("13812345678"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_timestamp_is_an_invalid_field() {
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":"yesterday","caller_number":"1","callee_number":"13912345678","call_duration_s":1}"#,
        );
        assert_eq!(err.field(), Some("occurred_at"));
        assert_eq!(err.kind(), "invalid_field");
    }

    #[test]
    fn nested_wrong_type_names_the_path() {
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"13912345678","call_duration_s":1,"callee_location":{"lon":"east","lat":39}}"#,
        );
        assert_eq!(err.field(), Some("callee_location.lon"));
    }

    #[test]
    fn out_of_range_coordinates_are_rejected() {
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"13912345678","call_duration_s":1,"callee_location":{"lon":117,"lat":95.5}}"#,
        );
        assert_eq!(err.field(), Some("callee_location.lat"));
        assert_eq!(err.kind(), "out_of_range");
    }

    #[test]
    fn nan_written_as_string_is_a_wrong_type() {
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"13912345678","call_duration_s":1,"callee_location":{"lon":"NaN","lat":39}}"#,
        );
        assert_eq!(err.field(), Some("callee_location.lon"));
    }

    #[test]
    fn negative_duration_and_absurd_age_are_out_of_range() {
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"13912345678","call_duration_s":-4}"#,
        );
        assert_eq!(err.field(), Some("call_duration_s"));
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"13912345678","call_duration_s":4,"callee_age":200}"#,
        );
        assert_eq!(err.field(), Some("callee_age"));
    }

    #[test]
    fn empty_callee_is_invalid() {
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"","call_duration_s":4}"#,
        );
        assert_eq!(err.field(), Some("callee_number"));
    }

    #[test]
    fn callee_numbers_come_out_canonical() {
        for raw in ["+8613912345678", "139 1234 5678", "0086-139-1234-5678"] {
            let json = format!(
                r#"{{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"{raw}","call_duration_s":4}}"#
            );
            let e = Event::decode(json.as_bytes()).unwrap();
            assert_eq!(e.callee_number, "13912345678", "{raw}");
        }
    }

    #[test]
    fn a_callee_no_officer_could_call_is_rejected() {
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"not a phone","call_duration_s":4}"#,
        );
        assert_eq!(err.field(), Some("callee_number"));
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"1391234567","call_duration_s":4}"#,
        );
        assert!(err.to_string().contains("10 digits"), "{err}");
        assert!(!err.to_string().contains("1391234567"), "{err}");
    }

    #[test]
    fn oversized_records_and_fields_are_rejected_with_bounded_messages() {
        let limits = Limits {
            max_record_bytes: 4096,
            max_field_bytes: 32,
        };
        let huge = format!(
            r#"{{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"13912345678","call_duration_s":4,"callee_age":"{}"}}"#,
            "x".repeat(5000)
        );
        let err = Event::decode_with(huge.as_bytes(), &limits).unwrap_err();
        assert_eq!(
            err,
            EventError::TooLarge {
                size: huge.len(),
                max: 4096
            }
        );

        // Within the record limit, a wrong type quoting a long value is cut short.
        let long = huge.replace(&"x".repeat(5000), &"x".repeat(3000));
        let err = Event::decode_with(long.as_bytes(), &limits).unwrap_err();
        assert_eq!(err.field(), Some("callee_age"));
        assert!(err.to_string().len() < 300, "{}", err.to_string().len());

        let id = format!(
            r#"{{"event_id":"{}","occurred_at":1,"caller_number":"1","callee_number":"13912345678","call_duration_s":4}}"#,
            "e".repeat(33)
        );
        let err = Event::decode_with(id.as_bytes(), &limits).unwrap_err();
        assert_eq!(err.field(), Some("event_id"));
        assert!(err.to_string().contains("33 bytes"), "{err}");
    }

    #[test]
    fn out_of_range_messages_mask_what_may_be_a_number() {
        let err = decode_err(
            r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"13912345678","call_duration_s":4,"callee_location":{"lon":13912345678,"lat":39}}"#,
        );
        assert!(!err.to_string().contains("13912345678"), "{err}");
    }

    #[test]
    fn unparsable_records_are_malformed() {
        assert_eq!(decode_err("not json").kind(), "malformed");
        assert_eq!(decode_err("[1,2]").kind(), "malformed");
        assert_eq!(decode_err("").kind(), "malformed");
        assert_eq!(
            decode_err(r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"13912345678","call_duration_s":1} trailing"#).kind(),
            "malformed"
        );
    }
}
