//! The dissuasion task: what the community officer receives.
//!
//! A task is encoded straight from borrowed parts of the event, the rule set and the grid map;
//! nothing is copied into an intermediate owned struct on the way to JSON.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::ScriptsConfig;
use crate::event::Location;
use crate::grid::{GridMap, MatchKind, Officer};
use crate::rules::Level;

/// Deterministic task identity: a 128-bit hash of the event id and the canonical callee
/// number, so a replayed or redelivered event yields the same id and downstream can
/// de-duplicate, while two people in events that reuse one event id never share a task id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub [u8; 16]);

/// An event's hashed identities, computed once for all the stages that need them: its
/// callee's key (see [`crate::dispatch::callee_key`]) and the id of the task it would make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKeys {
    pub callee: u64,
    pub task: TaskId,
}

impl EventKeys {
    pub fn of(event_id: &str, callee_number: &str) -> EventKeys {
        let callee = crate::dispatch::callee_key(callee_number);
        EventKeys {
            callee,
            task: TaskId::for_event_of(event_id, callee),
        }
    }
}

impl TaskId {
    pub fn for_event(event_id: &str, callee: &str) -> TaskId {
        EventKeys::of(event_id, callee).task
    }

    /// [`TaskId::for_event`] from the callee's key (see [`crate::dispatch::callee_key`]),
    /// which the pipeline has at hand: the key seeds the hash of the event id.
    pub fn for_event_of(event_id: &str, callee_key: u64) -> TaskId {
        TaskId(xxhash_rust::xxh3::xxh3_128_with_seed(event_id.as_bytes(), callee_key).to_be_bytes())
    }

    /// The first 8 bytes: enough to tell one event's task from another's in a window.
    pub fn short(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("8 of 16 bytes"))
    }

    /// Parses the 32-hex-digit form that tasks carry.
    pub fn parse(hex_id: &str) -> Option<TaskId> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(hex_id, &mut bytes).ok()?;
        Some(TaskId(bytes))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        hex::encode_to_slice(self.0, &mut buf).expect("32 hex digits for 16 bytes");
        f.write_str(std::str::from_utf8(&buf).expect("hex is ASCII"))
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TaskId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TaskId::parse(&s).ok_or_else(|| serde::de::Error::custom("a task id is 32 hex digits"))
    }
}

#[derive(Debug, Serialize)]
pub struct Reason<'a> {
    pub rule_id: &'a str,
    pub reason: String,
    pub score: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationSource {
    /// Coordinates carried by the event.
    Event,
    /// Resolved from the event's base-station `cell_id`.
    CellId,
}

#[derive(Debug, Serialize)]
pub struct VictimLocation {
    pub lon: f64,
    pub lat: f64,
    pub source: LocationSource,
}

#[derive(Debug, Serialize)]
pub struct Victim<'a> {
    /// The one place the full number appears: the officer must call it.
    pub number: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<u8>,
    pub location: Option<VictimLocation>,
}

#[derive(Debug, Serialize)]
pub struct GridRef<'a> {
    #[serde(rename = "match")]
    pub match_kind: MatchKind,
    pub grid_id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub station_id: Option<&'a str>,
    pub station_name: Option<&'a str>,
    /// Distance to the cell for `snapped` matches, in metres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
}

/// Who must act: the grid's community officer, or a duty desk.
#[derive(Debug)]
pub enum Assignee<'a> {
    Officer(&'a Officer),
    /// The station's duty desk (grid has no community officer) or the fallback desk
    /// (no grid matched).
    DutyDesk {
        desk_id: &'a str,
    },
}

impl Assignee<'_> {
    /// The Kafka key for the task: tasks for one assignee stay in order on one partition.
    pub fn id(&self) -> &str {
        match self {
            Assignee::Officer(o) => &o.officer_id,
            Assignee::DutyDesk { desk_id } => desk_id,
        }
    }
}

impl Serialize for Assignee<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Assignee::Officer(o) => serialize_officer(o, "officer", s),
            Assignee::DutyDesk { desk_id } => {
                let mut st = s.serialize_struct("Assignee", 2)?;
                st.serialize_field("kind", "duty_desk")?;
                st.serialize_field("id", desk_id)?;
                st.end()
            }
        }
    }
}

/// A roster member to copy on the task (auxiliary officer, grid workers).
#[derive(Debug)]
pub struct Notify<'a>(pub &'a Officer);

impl Serialize for Notify<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_officer(self.0, "officer", s)
    }
}

fn serialize_officer<S: Serializer>(o: &Officer, kind: &str, s: S) -> Result<S::Ok, S::Error> {
    let mut st = s.serialize_struct("Officer", 5)?;
    st.serialize_field("kind", kind)?;
    st.serialize_field("id", &o.officer_id)?;
    st.serialize_field("name", &o.name)?;
    st.serialize_field("role", o.role.as_str())?;
    st.serialize_field("phone", &o.phone)?;
    st.end()
}

/// A dissuasion task, borrowing from the event and the loaded configuration.
#[derive(Debug, Serialize)]
pub struct Task<'a> {
    pub task_id: TaskId,
    pub event_id: &'a str,
    /// `new`, or `upgrade` when it raises the level of an open task (see `upgrade_of`).
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_of: Option<TaskId>,
    #[serde(serialize_with = "rfc3339_ms")]
    pub created_at: i64,
    #[serde(serialize_with = "rfc3339_ms")]
    pub occurred_at: i64,
    #[serde(serialize_with = "rfc3339_ms")]
    pub deadline: i64,
    pub level: Level,
    pub score: i32,
    pub reasons: Vec<Reason<'a>>,
    pub victim: Victim<'a>,
    pub grid: GridRef<'a>,
    /// [`Recipients`]' rendered JSON.
    pub assignee: &'a RawValue,
    pub also_notify: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraud_type: Option<&'a str>,
    pub script: &'a RawValue,
    pub rules_version: &'a str,
}

/// JSON rendered once and spliced into every task that carries it: the same script and the
/// same names went through serde_json's escaping for every task of a fraud type or a cell,
/// which was most of the cost of encoding one (BENCHMARKS.md).
fn rendered<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("a string or a roster serializes")
}

/// The dissuasion scripts of `[scripts]`, rendered.
pub struct Scripts {
    default: Box<RawValue>,
    by_fraud_type: HashMap<String, Box<RawValue>>,
}

impl Scripts {
    pub fn new(config: &ScriptsConfig) -> Scripts {
        Scripts {
            default: rendered(&config.default),
            by_fraud_type: config
                .by_fraud_type
                .iter()
                .map(|(t, script)| (t.clone(), rendered(script)))
                .collect(),
        }
    }

    /// The script for a fraud type hint; the default one for none or one without its own.
    pub fn for_fraud_type(&self, hint: Option<&str>) -> &RawValue {
        hint.and_then(|h| self.by_fraud_type.get(h))
            .unwrap_or(&self.default)
    }
}

/// Who a task goes to: its Kafka key and the `assignee` and `also_notify` of its JSON.
pub struct Recipients {
    /// The assignee's id (see [`Assignee::id`]); shared, as each task's Kafka key.
    pub key: Arc<str>,
    pub assignee: Box<RawValue>,
    pub also_notify: Box<RawValue>,
}

impl Recipients {
    /// The cell's community officer, copying the rest of its roster; its station's duty desk
    /// when it has no community officer.
    pub fn of_cell(grid: &GridMap, cell: usize) -> Recipients {
        let officer = grid.community_officer(cell);
        let assignee = match officer {
            Some(o) => Assignee::Officer(o),
            None => Assignee::DutyDesk {
                desk_id: &grid.station_of(cell).duty_desk_id,
            },
        };
        let also_notify: Vec<Notify> = grid
            .roster(cell)
            .iter()
            .filter(|o| !officer.is_some_and(|a| std::ptr::eq(*o, a)))
            .map(Notify)
            .collect();
        Recipients {
            key: assignee.id().into(),
            assignee: rendered(&assignee),
            also_notify: rendered(&also_notify),
        }
    }

    /// A duty desk alone (the fallback desk, for locations no cell holds).
    pub fn desk(desk_id: &str) -> Recipients {
        Recipients {
            key: desk_id.into(),
            assignee: rendered(&Assignee::DutyDesk { desk_id }),
            also_notify: rendered(&Vec::<Notify>::new()),
        }
    }
}

/// The [`Recipients`] of each cell of one grid map, rendered on the cell's first task.
pub struct CellRecipients {
    cells: Vec<OnceLock<Recipients>>,
}

impl CellRecipients {
    pub fn new(grid: &GridMap) -> CellRecipients {
        CellRecipients {
            cells: (0..grid.cells().len()).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The recipients of `cell` of `grid`, the map these were made for.
    pub fn of(&self, grid: &GridMap, cell: usize) -> &Recipients {
        self.cells[cell].get_or_init(|| Recipients::of_cell(grid, cell))
    }
}

impl Task<'_> {
    /// Appends the task's JSON to `out`: the bytes `serde_json::to_writer` writes for the
    /// derived `Serialize` (a property test holds the two to that), without running
    /// serde_json's escaping, a table lookup per byte, over strings that need none: that was
    /// most of the cost of a task.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer { out, first: true };
        w.begin(b'{');
        w.key("task_id");
        w.task_id(self.task_id);
        w.key("event_id");
        w.str(self.event_id);
        w.key("kind");
        w.str(self.kind);
        if let Some(previous) = self.upgrade_of {
            w.key("upgrade_of");
            w.task_id(previous);
        }
        for (name, ms) in [
            ("created_at", self.created_at),
            ("occurred_at", self.occurred_at),
            ("deadline", self.deadline),
        ] {
            w.key(name);
            w.time(ms);
        }
        w.key("level");
        w.serde(&self.level);
        w.key("score");
        w.serde(&self.score);
        w.key("reasons");
        w.begin(b'[');
        for r in &self.reasons {
            w.element();
            w.begin(b'{');
            w.key("rule_id");
            w.str(r.rule_id);
            w.key("reason");
            w.str(&r.reason);
            w.key("score");
            w.serde(&r.score);
            w.end(b'}');
        }
        w.end(b']');
        w.key("victim");
        w.begin(b'{');
        w.key("number");
        w.str(self.victim.number);
        if let Some(age) = self.victim.age {
            w.key("age");
            w.serde(&age);
        }
        w.key("location");
        w.serde(&self.victim.location);
        w.end(b'}');
        w.key("grid");
        w.begin(b'{');
        w.key("match");
        w.serde(&self.grid.match_kind);
        for (name, value) in [
            ("grid_id", self.grid.grid_id),
            ("name", self.grid.name),
            ("station_id", self.grid.station_id),
            ("station_name", self.grid.station_name),
        ] {
            w.key(name);
            match value {
                Some(v) => w.str(v),
                None => w.out.extend_from_slice(b"null"),
            }
        }
        if let Some(d) = self.grid.distance_m {
            w.key("distance_m");
            w.serde(&d);
        }
        w.end(b'}');
        for (name, raw) in [
            ("assignee", self.assignee),
            ("also_notify", self.also_notify),
        ] {
            w.key(name);
            w.out.extend_from_slice(raw.get().as_bytes());
        }
        if let Some(t) = self.fraud_type {
            w.key("fraud_type");
            w.str(t);
        }
        w.key("script");
        w.out.extend_from_slice(self.script.get().as_bytes());
        w.key("rules_version");
        w.str(self.rules_version);
        w.end(b'}');
    }
}

/// Compact JSON into a buffer, for [`Task::encode_into`]. `first`: no member or element has
/// been written yet in the innermost object or array open.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Writer<'_> {
    fn begin(&mut self, bracket: u8) {
        self.out.push(bracket);
        self.first = true;
    }

    /// Closes the innermost object or array; its parent has a member (the one it is).
    fn end(&mut self, bracket: u8) {
        self.out.push(bracket);
        self.first = false;
    }

    fn element(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
    }

    /// A member's name (the task's names need no escaping).
    fn key(&mut self, name: &str) {
        self.element();
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, s: &str) {
        if crate::json::plain_run(s.as_bytes()) == s.len() {
            self.out.push(b'"');
            self.out.extend_from_slice(s.as_bytes());
            self.out.push(b'"');
        } else {
            self.serde(s);
        }
    }

    fn task_id(&mut self, id: TaskId) {
        let mut hex = [0u8; 34];
        hex[0] = b'"';
        hex[33] = b'"';
        hex::encode_to_slice(id.0, &mut hex[1..33]).expect("32 hex digits for 16 bytes");
        self.out.extend_from_slice(&hex);
    }

    /// Epoch milliseconds as [`rfc3339`] writes them: by [`rfc3339_millis`] for years 1970
    /// to 9999, by chrono beyond.
    fn time(&mut self, ms: i64) {
        match u64::try_from(ms) {
            Ok(after_epoch) if after_epoch < FAST_TIME_END_MS => {
                self.out.push(b'"');
                self.out.extend_from_slice(&rfc3339_millis(after_epoch));
                self.out.push(b'"');
            }
            _ => match rfc3339(ms) {
                Some(text) => self.str(&text),
                None => self.serde(&ms),
            },
        }
    }

    /// Anything else, as serde_json writes it (numbers, enums, the victim's location).
    fn serde<T: Serialize + ?Sized>(&mut self, value: &T) {
        serde_json::to_writer(&mut *self.out, value).expect("a task's parts serialize");
    }
}

/// 10000-01-01T00:00:00Z: [`rfc3339_millis`] writes four-digit years only.
const FAST_TIME_END_MS: u64 = 253_402_300_800_000;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds after the epoch below [`FAST_TIME_END_MS`],
/// into a fixed buffer. A task carries three times, and writing them through `fmt` (chrono
/// or humantime) was a third of the cost of encoding a task: this is the same calendar
/// arithmetic (days to a civil date, as in Howard Hinnant's `civil_from_days`) without it.
fn rfc3339_millis(ms: u64) -> [u8; 24] {
    let (days, ms) = (ms / 86_400_000, ms % 86_400_000);
    // Days since 0000-03-01, so that a leap day ends its year; eras of 400 years.
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    let mut t = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            t[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, ms / 3_600_000);
    put(14, 2, ms / 60_000 % 60);
    put(17, 2, ms / 1_000 % 60);
    put(20, 3, ms % 1_000);
    t
}

fn rfc3339_ms<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    match rfc3339(*ms) {
        Some(text) => s.serialize_str(&text),
        None => s.serialize_i64(*ms),
    }
}

/// Epoch milliseconds as a UTC RFC 3339 time; `None` out of chrono's range (written as the
/// number then). The fixed RFC 3339 writer, not a format string: a task has three times and
/// the format-string path was an eighth of the cost of encoding one.
fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Reads back the fields of an encoded task that consumers and tests look at.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct TaskSummary {
    pub task_id: String,
    pub event_id: String,
    pub kind: String,
    pub upgrade_of: Option<String>,
    pub level: Level,
    pub score: i32,
    pub grid: GridSummary,
    pub assignee: AssigneeSummary,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct GridSummary {
    #[serde(rename = "match")]
    pub match_kind: String,
    pub grid_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct AssigneeSummary {
    pub kind: String,
    pub id: String,
}

/// The victim location a task was built with, also used by the pipeline.
pub(crate) fn victim_location(loc: Location, source: LocationSource) -> VictimLocation {
    VictimLocation {
        lon: loc.lon,
        lat: loc.lat,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_is_deterministic_and_distinct() {
        const A: &str = "13912345678";
        assert_eq!(TaskId::for_event("e-1", A), TaskId::for_event("e-1", A));
        assert_ne!(TaskId::for_event("e-1", A), TaskId::for_event("e-2", A));
        // One event id reused for two people: two tasks.
        assert_ne!(
            TaskId::for_event("e-1", A),
            TaskId::for_event("e-1", "13912345679")
        );
        let id = TaskId::for_event("e-1", A);
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(TaskId::parse(&id.to_string()), Some(id));
        assert_eq!(TaskId::parse("not hex"), None);
    }

    #[test]
    fn timestamps_encode_as_utc_rfc3339() {
        #[derive(Serialize)]
        struct T(#[serde(serialize_with = "rfc3339_ms")] i64);
        assert_eq!(
            serde_json::to_string(&T(1_795_480_200_123)).unwrap(),
            "\"2026-11-24T00:30:00.123Z\""
        );
        // The task writer's times, at the ends of its fixed writer's range and beyond, are
        // the serde form's.
        let end = FAST_TIME_END_MS as i64;
        for ms in [
            i64::MIN,
            -1,
            0,
            1,
            1_795_480_200_000,
            1_795_480_200_123,
            end - 1,
            end,
            end + 1,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            Writer {
                out: &mut out,
                first: true,
            }
            .time(ms);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&T(ms)).unwrap(),
                "{ms}"
            );
        }
    }

    #[test]
    fn fixed_time_writer_agrees_with_chrono_on_every_day() {
        // Every day of 1970-2599 (leap years, centuries, 2000 and 2400 among them) at a
        // time of day that moves through the hours, and the last millisecond of each.
        for day in 0..230_000u64 {
            for ms in [
                day * 86_400_000 + day * 997 % 86_400_000,
                (day + 1) * 86_400_000 - 1,
            ] {
                let chrono = rfc3339(ms as i64).unwrap();
                assert_eq!(std::str::from_utf8(&rfc3339_millis(ms)).unwrap(), chrono);
            }
        }
    }

    mod writer {
        use proptest::prelude::*;

        use super::super::*;

        /// Text with what needs escaping near at hand: quotes, backslashes, controls, DEL,
        /// and text beyond ASCII.
        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9_-]{0,24}",
                proptest::collection::vec(
                    prop::sample::select(vec![
                        'a', '"', '\\', '\n', '\u{1}', '\u{7f}', 'é', '警', ' '
                    ]),
                    0..24
                )
                .prop_map(|c| c.into_iter().collect()),
                proptest::collection::vec(any::<char>(), 0..12)
                    .prop_map(|c| c.into_iter().collect()),
            ]
        }

        fn number() -> impl Strategy<Value = f64> {
            prop_oneof![any::<f64>(), -180.0..180.0f64, Just(0.0), Just(-0.0)]
        }

        #[derive(Debug, Clone)]
        struct Parts {
            strings: Vec<String>,
            options: Vec<bool>,
            numbers: Vec<f64>,
            ints: (i32, i64, i64, u8, u8),
            ids: ([u8; 16], [u8; 16]),
            reasons: Vec<(String, String, i32)>,
        }

        fn parts() -> impl Strategy<Value = Parts> {
            (
                proptest::collection::vec(text(), 11),
                proptest::collection::vec(any::<bool>(), 9),
                proptest::collection::vec(number(), 3),
                (
                    any::<i32>(),
                    // Any time, and times at both ends of the fixed time writer's range.
                    prop_oneof![
                        any::<i64>(),
                        0i64..253_402_300_800_000,
                        -1_000i64..1_000,
                        253_402_300_700_000i64..253_402_300_900_000,
                    ],
                    -1i64..4_000_000_000_000,
                    any::<u8>(),
                    0..5u8,
                ),
                (any::<[u8; 16]>(), any::<[u8; 16]>()),
                proptest::collection::vec((text(), text(), any::<i32>()), 0..4),
            )
                .prop_map(|(strings, options, numbers, ints, ids, reasons)| Parts {
                    strings,
                    options,
                    numbers,
                    ints,
                    ids,
                    reasons,
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn writes_what_serde_json_writes_for_the_derived_form(p in parts()) {
                let s = &p.strings;
                let o = &p.options;
                fn opt(on: bool, v: &str) -> Option<&str> {
                    on.then_some(v)
                }
                let raw = |v: &str| serde_json::value::to_raw_value(v).unwrap();
                let (assignee, also_notify, script) = (raw(&s[8]), raw(&s[9]), raw(&s[10]));
                let level = [Level::None, Level::Low, Level::Medium, Level::High, Level::Critical]
                    [usize::from(p.ints.4)];
                let task = Task {
                    task_id: TaskId(p.ids.0),
                    event_id: &s[0],
                    kind: if o[0] { "upgrade" } else { "new" },
                    upgrade_of: o[0].then_some(TaskId(p.ids.1)),
                    created_at: p.ints.1,
                    occurred_at: p.ints.2,
                    deadline: p.ints.2.wrapping_add(600_000),
                    level,
                    score: p.ints.0,
                    reasons: p
                        .reasons
                        .iter()
                        .map(|(id, reason, score)| Reason {
                            rule_id: id,
                            reason: reason.clone(),
                            score: *score,
                        })
                        .collect(),
                    victim: Victim {
                        number: &s[1],
                        age: o[1].then_some(p.ints.3),
                        location: o[2].then_some(VictimLocation {
                            lon: p.numbers[0],
                            lat: p.numbers[1],
                            source: if o[3] { LocationSource::Event } else { LocationSource::CellId },
                        }),
                    },
                    grid: GridRef {
                        match_kind: MatchKind::ALL[usize::from(p.ints.3 % 3)],
                        grid_id: opt(o[4], &s[2]),
                        name: opt(o[5], &s[3]),
                        station_id: opt(o[6], &s[4]),
                        station_name: opt(o[7], &s[5]),
                        distance_m: o[8].then_some(p.numbers[2]),
                    },
                    assignee: &assignee,
                    also_notify: &also_notify,
                    fraud_type: opt(o[1], &s[6]),
                    script: &script,
                    rules_version: &s[7],
                };
                let mut written = Vec::new();
                task.encode_into(&mut written);
                let derived = serde_json::to_vec(&task).unwrap();
                prop_assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&derived));
            }
        }
    }
}
