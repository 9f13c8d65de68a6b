//! A decoder for events as the anti-fraud centre writes nearly all of them: the contract's own
//! fields, strings without escapes, plain decimal numbers. It answers `None` for anything
//! else (an escape, an exponent, more digits than an `f64` holds exactly, a field it does not
//! know, a repeated field, bad syntax) and the record then goes through serde_json, which
//! decides. So it can only disagree with serde_json about speed, never about what a record
//! says or whether it is valid: the property tests below hold the two to the same answer.
//!
//! Why not serde_json alone: decoding was 30 % of the time of an event (372 ns of 1.26 µs on
//! the synthetic mix, 2026-11-26), most of it in the generic visitor machinery. sonic-rs,
//! tried on the same records, was slower than serde_json for these small objects
//! (BENCHMARKS.md, "Decoding, encoding and windows made cheaper").

use std::borrow::Cow;

use super::{CallerFlag, CallerFlags, Location, RawEvent, FIELDS};
use crate::json::{plain_run, ONES};

/// Powers of ten an `f64` holds exactly: dividing an exact significand by one of them is
/// correctly rounded, as serde_json (and `str::parse`) round.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Significant digits below 2^53: such a significand converts to `f64` exactly.
const MAX_DIGITS: u32 = 15;

/// Decodes `text` when it has the plain shape, or `None` (then ask serde_json).
pub(super) fn raw_event(text: &str) -> Option<RawEvent<'_>> {
    compact(text).or_else(|| any_order(text))
}

/// Reads a record written as the producers write nearly all of them: the fields in the
/// contract's order, no whitespace. Straight-line code, one key compare per field present
/// and none for a field absent at the end; `None` for any other shape, which
/// [`any_order`] then reads. The loop's whitespace skips, repeated-field bits and dispatch
/// on the field were a tenth of the decoder's instructions on the synthetic mix.
fn compact(text: &str) -> Option<RawEvent<'_>> {
    let mut s = Scanner::new(text);
    s.expect(b'{')?;
    // Whether another field follows the last value (a `,`, not the closing `}`).
    let mut more = true;
    // Each field's reader is written out here and again in `any_order`'s match: sharing
    // that match (a loop over the keys, or a call per field into it, the values kept in
    // `Fields`) cost 170 to 240 more instructions an event (callgrind, 2026-11-27).
    macro_rules! field {
        ($field:ident, $value:expr) => {
            if more && s.key(Field::$field) {
                let value = $value?;
                more = s.separator()?;
                Some(value)
            } else {
                None
            }
        };
    }
    let event_id = field!(EventId, s.string())?;
    let occurred_at = field!(OccurredAt, s.timestamp())?;
    let caller_number = field!(CallerNumber, s.string())?;
    let callee_number = field!(CalleeNumber, s.string())?;
    let callee_location = field!(CalleeLocation, s.or_null(Scanner::location)).flatten();
    let cell_id = field!(CellId, s.or_null(Scanner::string)).flatten();
    let call_duration_s = field!(CallDurationS, s.decimal())?;
    let caller_flags = field!(CallerFlags, s.or_null(Scanner::flags)).flatten();
    let callee_age = field!(CalleeAge, s.or_null(Scanner::age)).flatten();
    let callee_prior_victim = field!(CalleePriorVictim, s.or_null(Scanner::boolean)).flatten();
    let sms_with_link = field!(SmsWithLink, s.or_null(Scanner::boolean)).flatten();
    let fraud_type_hint = field!(FraudTypeHint, s.or_null(Scanner::string)).flatten();
    // A field left over (out of order, unknown or repeated), or bytes after the object.
    if more || s.at != s.bytes.len() {
        return None;
    }
    Some(RawEvent {
        event_id: Cow::Borrowed(event_id),
        occurred_at,
        caller_number: Cow::Borrowed(caller_number),
        callee_number: Cow::Borrowed(callee_number),
        callee_location,
        cell_id: cell_id.map(Cow::Borrowed),
        call_duration_s,
        caller_flags: caller_flags.unwrap_or_default(),
        callee_age,
        callee_prior_victim,
        sms_with_link,
        fraud_type_hint: fraud_type_hint.map(Cow::Borrowed),
    })
}

/// Reads a record with the fields in any order and whitespace anywhere JSON allows it.
fn any_order(text: &str) -> Option<RawEvent<'_>> {
    let mut s = Scanner::new(text);
    let mut f = Fields::default();
    let mut seen = 0u16;
    s.skip_ws();
    s.expect(b'{')?;
    // Producers write the fields in one order, compactly: the keys after the last one read
    // are tried in that order, each with its colon, as a few word compares. Anything else
    // (another order, spaces around the colon) is scanned and looked up.
    let mut expected = 0;
    loop {
        s.skip_ws();
        let rest = &s.bytes[s.at..];
        let field = match Field::KEYS[expected..].iter().position(|k| k.starts(rest)) {
            Some(i) => {
                let key = &Field::KEYS[expected + i];
                s.at += key.len;
                key.field
            }
            None => {
                let field = Field::named(s.string()?)?;
                s.skip_ws();
                s.expect(b':')?;
                field
            }
        };
        expected = field as usize + 1;
        let bit = 1u16 << field as u16;
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        s.skip_ws();
        match field {
            Field::EventId => f.event_id = Some(s.string()?),
            Field::OccurredAt => f.occurred_at = Some(s.timestamp()?),
            Field::CallerNumber => f.caller_number = Some(s.string()?),
            Field::CalleeNumber => f.callee_number = Some(s.string()?),
            Field::CalleeLocation => f.callee_location = s.or_null(Scanner::location)?,
            Field::CellId => f.cell_id = s.or_null(Scanner::string)?,
            Field::CallDurationS => f.call_duration_s = Some(s.decimal()?),
            Field::CallerFlags => f.caller_flags = s.or_null(Scanner::flags)?.unwrap_or_default(),
            Field::CalleeAge => f.callee_age = s.or_null(Scanner::age)?,
            Field::CalleePriorVictim => f.callee_prior_victim = s.or_null(Scanner::boolean)?,
            Field::SmsWithLink => f.sms_with_link = s.or_null(Scanner::boolean)?,
            Field::FraudTypeHint => f.fraud_type_hint = s.or_null(Scanner::string)?,
        }
        s.skip_ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.skip_ws();
    if s.at != s.bytes.len() {
        return None;
    }
    Some(RawEvent {
        event_id: Cow::Borrowed(f.event_id?),
        occurred_at: f.occurred_at?,
        caller_number: Cow::Borrowed(f.caller_number?),
        callee_number: Cow::Borrowed(f.callee_number?),
        callee_location: f.callee_location,
        cell_id: f.cell_id.map(Cow::Borrowed),
        call_duration_s: f.call_duration_s?,
        caller_flags: f.caller_flags,
        callee_age: f.callee_age,
        callee_prior_victim: f.callee_prior_victim,
        sms_with_link: f.sms_with_link,
        fraud_type_hint: f.fraud_type_hint.map(Cow::Borrowed),
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Field {
    EventId,
    OccurredAt,
    CallerNumber,
    CalleeNumber,
    CalleeLocation,
    CellId,
    CallDurationS,
    CallerFlags,
    CalleeAge,
    CalleePriorVictim,
    SmsWithLink,
    FraudTypeHint,
}

impl Field {
    /// The fields of [`FIELDS`], in its order, each key as it is written compactly.
    const KEYS: [Key; 12] = [
        Key::new(b"\"event_id\":", Field::EventId),
        Key::new(b"\"occurred_at\":", Field::OccurredAt),
        Key::new(b"\"caller_number\":", Field::CallerNumber),
        Key::new(b"\"callee_number\":", Field::CalleeNumber),
        Key::new(b"\"callee_location\":", Field::CalleeLocation),
        Key::new(b"\"cell_id\":", Field::CellId),
        Key::new(b"\"call_duration_s\":", Field::CallDurationS),
        Key::new(b"\"caller_flags\":", Field::CallerFlags),
        Key::new(b"\"callee_age\":", Field::CalleeAge),
        Key::new(b"\"callee_prior_victim\":", Field::CalleePriorVictim),
        Key::new(b"\"sms_with_link\":", Field::SmsWithLink),
        Key::new(b"\"fraud_type_hint\":", Field::FraudTypeHint),
    ];

    fn named(name: &str) -> Option<Field> {
        let i = FIELDS.iter().position(|f| *f == name)?;
        Some(Field::KEYS[i].field)
    }
}

/// A key with its colon, `"name":`, as little-endian words: the record is compared with it
/// eight bytes at a time, the last word overlapping the others, inline, where `starts_with`
/// made a `memcmp` call per field.
struct Key {
    field: Field,
    len: usize,
    /// The words at 0, 8 (used when longer than 16 bytes) and `len - 8`.
    words: [u64; 3],
}

impl Key {
    const fn new(written: &'static [u8], field: Field) -> Key {
        let len = written.len();
        assert!(len > 8 && len <= 24);
        Key {
            field,
            len,
            words: [
                word(written, 0),
                if len > 16 { word(written, 8) } else { 0 },
                word(written, len - 8),
            ],
        }
    }

    /// Whether `rest` starts with this key.
    #[inline(always)]
    fn starts(&self, rest: &[u8]) -> bool {
        let Some(head) = rest.get(..self.len) else {
            return false;
        };
        let at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("eight bytes"));
        at(0) == self.words[0]
            && at(self.len - 8) == self.words[2]
            && (self.len <= 16 || at(8) == self.words[1])
    }
}

/// The eight bytes of `bytes` from `at`, little-endian.
const fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = 0;
    let mut i = 0;
    while i < 8 {
        w |= (bytes[at + i] as u64) << (8 * i);
        i += 1;
    }
    w
}

#[derive(Default)]
struct Fields<'a> {
    event_id: Option<&'a str>,
    occurred_at: Option<i64>,
    caller_number: Option<&'a str>,
    callee_number: Option<&'a str>,
    callee_location: Option<Location>,
    cell_id: Option<&'a str>,
    call_duration_s: Option<f64>,
    caller_flags: CallerFlags,
    callee_age: Option<u8>,
    callee_prior_victim: Option<bool>,
    sms_with_link: Option<bool>,
    fraud_type_hint: Option<&'a str>,
}

struct Scanner<'a> {
    /// The record, already checked to be UTF-8: strings are slices of it.
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    /// Whether `field`'s key and colon, written compactly, come next; read past them.
    #[inline(always)]
    fn key(&mut self, field: Field) -> bool {
        let key = &Field::KEYS[field as usize];
        let found = key.starts(&self.bytes[self.at..]);
        self.at += if found { key.len } else { 0 };
        found
    }

    /// What ends a value in an object: `,` (another field follows: `true`) or `}`.
    #[inline(always)]
    fn separator(&mut self) -> Option<bool> {
        match self.next()? {
            b',' => Some(true),
            b'}' => Some(false),
            _ => None,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    /// Whether a `-` is next, read past it.
    fn minus(&mut self) -> bool {
        let found = self.peek() == Some(b'-');
        self.at += usize::from(found);
        found
    }

    /// `null` as `Some(None)`; otherwise what `value` reads, as `Some(Some(_))`.
    #[inline(always)]
    fn or_null<T>(&mut self, value: fn(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.literal(b"null") {
            Some(None)
        } else {
            value(self).map(Some)
        }
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        self.at += plain_run(&self.bytes[start..]);
        self.expect(b'"')?;
        // Quotes are ASCII, so both ends are character boundaries of the checked text.
        Some(&self.text[start..self.at - 1])
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.literal(b"true") {
            Some(true)
        } else if self.literal(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// Digits of an integer part (no leading zero unless it is `0`): the value and how many.
    #[inline(always)]
    fn digits(&mut self) -> Option<(u64, u32)> {
        let (value, count) = leading_digits(&self.bytes[self.at..], 0)?;
        if count > 1 && self.bytes[self.at] == b'0' {
            return None;
        }
        self.at += count;
        Some((value, count as u32))
    }

    /// A number without fraction or exponent, as serde_json reads it into an integer.
    fn integer(&mut self) -> Option<(bool, u64, u32)> {
        let negative = self.minus();
        let (value, count) = self.digits()?;
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some((negative, value, count))
    }

    /// Epoch milliseconds, or an RFC 3339 string.
    fn timestamp(&mut self) -> Option<i64> {
        if let Some(ms) = self.epoch_ms() {
            return Some(ms);
        }
        if self.peek()? == b'"' {
            let text = self.string()?;
            return chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.timestamp_millis());
        }
        let (negative, value, count) = self.integer()?;
        // serde_json reads `-0` as a float, which a timestamp refuses.
        if count > 18 || (negative && value == 0) {
            return None;
        }
        let value = value as i64;
        Some(if negative { -value } else { value })
    }

    /// Epoch milliseconds as they are written, 9 to 15 digits (every instant from 1970-01-02
    /// to the year 33658), read as two words inline, where the general path through
    /// [`Scanner::integer`] and [`long_digits`] took some 200 instructions. `None` (and
    /// nothing read) for any other number, which the general path then reads.
    #[inline(always)]
    fn epoch_ms(&mut self) -> Option<i64> {
        let chunk = self.bytes.get(self.at..self.at + 16)?;
        let word = |at: usize| u64::from_le_bytes(chunk[at..at + 8].try_into().expect("eight"));
        let (high, low) = (word(0), word(8));
        let run = digit_run(low);
        if digit_run(high) != 8 || !(1..8).contains(&run) || chunk[0] == b'0' {
            return None;
        }
        // serde_json reads a number with a fraction or an exponent as a float.
        if matches!(chunk[8 + run], b'.' | b'e' | b'E') {
            return None;
        }
        self.at += 8 + run;
        let value = eight_digits(high, 8) * POW10_U64[run] + eight_digits(low, run);
        Some(value as i64)
    }

    fn age(&mut self) -> Option<u8> {
        match self.integer()? {
            (false, value, _) => u8::try_from(value).ok(),
            (true, ..) => None,
        }
    }

    /// A decimal of at most [`MAX_DIGITS`] digits without exponent: the significand is exact,
    /// so one division by an exact power of ten rounds it as serde_json does.
    fn decimal(&mut self) -> Option<f64> {
        let negative = self.minus();
        let (mut significand, mut count) = self.digits()?;
        let mut scale = 0;
        if self.peek() == Some(b'.') {
            self.at += 1;
            (significand, scale) = leading_digits(&self.bytes[self.at..], significand)?;
            self.at += scale;
            count += scale as u32;
        }
        if count > MAX_DIGITS || matches!(self.peek(), Some(b'e' | b'E')) {
            return None;
        }
        // Below 10^15, so as an `i64` too, which converts in one instruction where a `u64`
        // takes six on x86-64 without AVX-512.
        let magnitude = significand as i64 as f64 / POW10[scale];
        Some(if negative { -magnitude } else { magnitude })
    }

    fn location(&mut self) -> Option<Location> {
        // As the producers write it, `{"lon":…,"lat":…}`: two compares for the keys, where
        // reading each as a string and matching it cost some 180 instructions a location.
        // Any other shape is read again from the `{` as any object.
        let start = self.at;
        if let Some(location) = self.compact_location() {
            return Some(location);
        }
        self.at = start;
        self.expect(b'{')?;
        let (mut lon, mut lat) = (None, None);
        loop {
            self.skip_ws();
            let slot = match self.string()? {
                "lon" => &mut lon,
                "lat" => &mut lat,
                _ => return None,
            };
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            if slot.replace(self.decimal()?).is_some() {
                return None;
            }
            self.skip_ws();
            match self.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        Some(Location {
            lon: lon?,
            lat: lat?,
        })
    }

    fn compact_location(&mut self) -> Option<Location> {
        if !self.literal(b"{\"lon\":") {
            return None;
        }
        let lon = self.decimal()?;
        if !self.literal(b",\"lat\":") {
            return None;
        }
        let lat = self.decimal()?;
        self.expect(b'}')?;
        Some(Location { lon, lat })
    }

    /// A list of flag names; names the rules do not know yet are ignored, as by serde.
    fn flags(&mut self) -> Option<CallerFlags> {
        self.expect(b'[')?;
        let mut flags = CallerFlags::default();
        self.skip_ws();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(flags);
        }
        loop {
            self.skip_ws();
            if let Some(flag) = CallerFlag::from_name(self.string()?) {
                flags = flags.with(flag);
            }
            self.skip_ws();
            match self.next()? {
                b',' => continue,
                b']' => return Some(flags),
                _ => return None,
            }
        }
    }
}

/// The run of ASCII digits `bytes` starts with, appended to `value`, and its length: `None`
/// for no digit or more than 19. (Past 19 digits in all the value wraps; callers refuse
/// more than [`MAX_DIGITS`] anyway.) Eight bytes at a time while eight are left: a
/// timestamp's 13 digits are two steps, not 13.
///
/// Inline, with the common case first: a run shorter than eight bytes with eight bytes to
/// read (every number of an event but its timestamp) is a handful of instructions where a
/// call with the general loop cost some eighty.
#[inline(always)]
fn leading_digits(bytes: &[u8], value: u64) -> Option<(u64, usize)> {
    if let Some(chunk) = bytes.get(..8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let run = digit_run(x);
        if run < 8 {
            if run == 0 {
                return None;
            }
            let value = value
                .wrapping_mul(POW10_U64[run])
                .wrapping_add(eight_digits(x, run));
            return Some((value, run));
        }
    }
    long_digits(bytes, value)
}

/// [`leading_digits`] for a run of eight digits or more, or near the end of `bytes`.
#[inline(never)]
fn long_digits(bytes: &[u8], mut value: u64) -> Option<(u64, usize)> {
    let mut count = 0;
    while let Some(chunk) = bytes.get(count..count + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let run = digit_run(x);
        if run > 0 {
            value = value
                .wrapping_mul(POW10_U64[run])
                .wrapping_add(eight_digits(x, run));
        }
        count += run;
        if run < 8 || count > 19 {
            return (1..=19).contains(&count).then_some((value, count));
        }
    }
    for &b in &bytes[count..] {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
        count += 1;
    }
    (1..=19).contains(&count).then_some((value, count))
}

const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// How many of the eight bytes in `x` (the first in the lowest byte) are digits before the
/// first that is not.
fn digit_run(x: u64) -> usize {
    // A byte is a digit when its high nibble is 3 both as it is and with 6 added (which
    // carries into the high nibble from `:` up). A carry out of a byte only reaches the
    // bytes above it, after the first non-digit, so the lowest mark is exact.
    let high = |v: u64| (v & (ONES * 0xf0)) ^ (ONES * 0x30);
    let not_digit = high(x) | high(x.wrapping_add(ONES * 6));
    (not_digit.trailing_zeros() / 8) as usize
}

/// The value of the first `run` (1 to 8) bytes of `x`, all digits, the first the most
/// significant: the digits are moved to the top (the bytes below them become leading
/// zeros) and combined in pairs, fours and eights with three multiplications.
fn eight_digits(x: u64, run: usize) -> u64 {
    // No byte below `run` borrows: they are all at least `0`.
    let v = x.wrapping_sub(ONES * u64::from(b'0')) << (64 - 8 * run);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let pairs = v & 0x0000_00ff_0000_00ff;
    let pairs_above = (v >> 16) & 0x0000_00ff_0000_00ff;
    pairs
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(pairs_above.wrapping_mul(1 + (10_000 << 32)))
        >> 32
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::*;

    /// What serde_json makes of `text`, as the fallback path runs it.
    fn by_serde(text: &str) -> Option<RawEvent<'_>> {
        serde_json::from_str::<RawEvent>(text).ok()
    }

    /// The scanner's answer, when it gives one, is serde_json's; `Debug` so that `-0.0` and
    /// `0.0` differ.
    fn agrees(text: &str) -> Result<(), TestCaseError> {
        for fast in [raw_event(text), compact(text)].into_iter().flatten() {
            let slow = by_serde(text);
            prop_assert!(
                slow.is_some(),
                "scanner accepted what serde refuses: {text}"
            );
            prop_assert_eq!(
                format!("{fast:?}"),
                format!("{:?}", slow.unwrap()),
                "{}",
                text
            );
        }
        Ok(())
    }

    const PLAIN: &str = r#"{"event_id":"e-1","occurred_at":1795480200000,
        "caller_number":"+85251234567","callee_number":"13812345678",
        "callee_location":{"lon":117.196623,"lat":39.132584},"cell_id":"460-00-4123-1001",
        "call_duration_s":742,"caller_flags":["overseas","spoofed_official","not_yet_known"],
        "callee_age":71,"callee_prior_victim":false,"sms_with_link":true,
        "fraud_type_hint":"impersonate_police"}"#;

    /// [`PLAIN`] as the producers write it: no whitespace.
    const COMPACT: &str = r#"{"event_id":"e-1","occurred_at":1795480200000,"caller_number":"+85251234567","callee_number":"13812345678","callee_location":{"lon":117.196623,"lat":39.132584},"cell_id":"460-00-4123-1001","call_duration_s":742,"caller_flags":["overseas","spoofed_official","not_yet_known"],"callee_age":71,"callee_prior_victim":false,"sms_with_link":true,"fraud_type_hint":"impersonate_police"}"#;

    #[test]
    fn reads_a_compact_record_in_straight_line() {
        let squeezed: String = PLAIN.split_whitespace().collect();
        assert_eq!(squeezed, COMPACT);
        let fast = compact(COMPACT).expect("compact shape");
        assert_eq!(
            format!("{fast:?}"),
            format!("{:?}", by_serde(COMPACT).unwrap())
        );
        // Whitespace, or the fields in another order, are left to the general reader.
        assert!(compact(PLAIN).is_none());
        let moved =
            COMPACT
                .replacen("\"callee_age\":71,", "", 1)
                .replacen('{', "{\"callee_age\":71,", 1);
        assert!(compact(&moved).is_none());
        assert!(any_order(&moved).is_some());
        // Every optional field left out (one at a time: the property tests below).
        let bare = r#"{"event_id":"e","occurred_at":1,"caller_number":"1","callee_number":"2","call_duration_s":0}"#;
        assert_eq!(
            format!("{:?}", compact(bare)),
            format!("{:?}", by_serde(bare))
        );
        assert!(compact(bare).is_some());
    }

    #[test]
    fn each_field_is_in_its_place() {
        for (i, key) in Field::KEYS.iter().enumerate() {
            assert_eq!(key.field as usize, i);
            let written = format!("\"{}\":", FIELDS[i]);
            assert_eq!(key.len, written.len());
            assert!(key.starts(written.as_bytes()));
            assert!(key.starts(format!("{written}1}}").as_bytes()));
            assert!(!key.starts(&written.as_bytes()[..key.len - 1]));
            // A difference in any byte is seen.
            for at in 0..key.len {
                let mut other = written.clone().into_bytes();
                other[at] ^= 0x20;
                assert!(!key.starts(&other), "{written} changed at {at}");
            }
            assert_eq!(Field::named(FIELDS[i]), Some(key.field));
        }
    }

    #[test]
    fn reads_runs_of_digits_eight_at_a_time_as_one_at_a_time() {
        let slow = |bytes: &[u8], start: u64| {
            let n = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            let v = bytes[..n].iter().fold(start, |v, &b| {
                v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
            });
            (1..=19).contains(&n).then_some((v, n))
        };
        let mut cases: Vec<Vec<u8>> = vec![];
        for n in 0..=21 {
            let digits: Vec<u8> = (0..n).map(|i| b"9081726354"[i % 10]).collect();
            for tail in [&b""[..], b"}", b".5,", b"\xff\xfa", b"/", b":", b"0\x00"] {
                cases.push([&digits[..], tail, b"        "].concat());
                cases.push([&digits[..], tail].concat());
            }
            cases.push(vec![b'9'; n]);
            cases.push(vec![b'0'; n]);
        }
        for bytes in &cases {
            for start in [0, 7, u64::MAX / 3] {
                assert_eq!(
                    leading_digits(bytes, start),
                    slow(bytes, start),
                    "{bytes:?}"
                );
            }
        }
    }

    #[test]
    fn reads_a_plain_record_as_serde_does() {
        let fast = raw_event(PLAIN).expect("plain shape");
        assert_eq!(
            format!("{fast:?}"),
            format!("{:?}", by_serde(PLAIN).unwrap())
        );
        assert_eq!(fast.callee_location.unwrap().lon, 117.196623);
        assert_eq!(fast.call_duration_s, 742.0);
    }

    #[test]
    fn every_synthetic_event_takes_the_fast_path() {
        let cells = crate::grid::CellTable::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grid/cell-table.csv"),
        )
        .expect("sample cell table");
        let mut synth = crate::synth::Synth::new(&cells, crate::synth::SynthConfig::default());
        let mut bytes = Vec::new();
        for i in 0..20_000 {
            bytes.clear();
            synth.next_event(1_795_480_200_000 + i * 10, &mut bytes);
            let text = std::str::from_utf8(&bytes).unwrap();
            assert!(compact(text).is_some(), "{text}");
            agrees(text).unwrap();
        }
    }

    #[test]
    fn leaves_what_it_does_not_read_to_serde() {
        for text in [
            // An unknown field, an escape, an exponent, a repeated field, a float timestamp.
            PLAIN.replacen("\"event_id\"", "\"extra\":1,\"event_id\"", 1),
            PLAIN.replacen("e-1", "e\\u002d1", 1),
            PLAIN.replacen("742", "7.42e2", 1),
            PLAIN.replacen("\"cell_id\"", "\"callee_age\":70,\"cell_id\"", 1),
            PLAIN.replacen("1795480200000", "1795480200000.0", 1),
            PLAIN.replacen("1795480200000", "-0", 1),
            PLAIN.replacen("117.196623", "117.1966230000000001", 1),
            PLAIN.replacen("}", "},", 1),
        ] {
            assert!(raw_event(&text).is_none(), "{text}");
        }
    }

    /// Any JSON value, a few levels deep, with the awkward cases near at hand.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u8>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            (-1_000_000_000i64..1_000_000_000, 0..12u32)
                .prop_map(|(m, s)| Value::from(m as f64 / 10f64.powi(s as i32))),
            Just(json!("2026-11-24T08:30:00+08:00")),
            Just(json!({"lon": 117.2, "lat": 39.13})),
            Just(json!(["overseas", "voip"])),
            "[ -~]{0,12}".prop_map(Value::from),
            proptest::collection::vec(any::<char>(), 0..12)
                .prop_map(|c| Value::from(c.into_iter().collect::<String>())),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::vec(("lon|lat|[a-z]{1,3}", inner), 0..3)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// The plain record with one field replaced by any value or removed.
    fn one_field_changed() -> impl Strategy<Value = String> {
        (0..FIELDS.len(), proptest::option::of(value())).prop_map(|(i, v)| {
            let mut event: Value = serde_json::from_str(PLAIN).unwrap();
            match v {
                Some(v) => event[FIELDS[i]] = v,
                None => _ = event.as_object_mut().unwrap().remove(FIELDS[i]),
            }
            event.to_string()
        })
    }

    /// [`COMPACT`], in the contract's order, with one field replaced by any value or
    /// removed.
    fn one_field_changed_in_order() -> impl Strategy<Value = String> {
        (0..FIELDS.len(), proptest::option::of(value())).prop_map(|(i, v)| {
            let event: Value = serde_json::from_str(COMPACT).unwrap();
            let fields: Vec<String> = FIELDS
                .iter()
                .enumerate()
                .filter_map(|(j, name)| {
                    let value = if j == i {
                        v.clone()?
                    } else {
                        event[*name].clone()
                    };
                    Some(format!("{}:{value}", Value::from(*name)))
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        })
    }

    /// `base` with a few bytes replaced, inserted or removed: syntax the serializer never
    /// writes.
    fn bytes_changed(base: &'static str) -> impl Strategy<Value = String> {
        let edit = (
            0..base.len(),
            0..3u8,
            prop::sample::select(b" \t\n{}[]:,\"\\-+.0123456789eEnulltruefalse".to_vec()),
        );
        proptest::collection::vec(edit, 1..4).prop_map(|edits| {
            let mut bytes = base.as_bytes().to_vec();
            for (at, how, b) in edits {
                let at = at.min(bytes.len().saturating_sub(1));
                match how {
                    0 => bytes[at] = b,
                    1 => bytes.insert(at, b),
                    _ => _ = bytes.remove(at),
                }
            }
            String::from_utf8(bytes).expect("ASCII edits of an ASCII record")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn agrees_with_serde_on_changed_fields(text in one_field_changed()) {
            agrees(&text)?;
        }

        #[test]
        fn agrees_with_serde_on_changed_fields_in_order(text in one_field_changed_in_order()) {
            agrees(&text)?;
        }

        #[test]
        fn agrees_with_serde_on_changed_bytes(text in bytes_changed(PLAIN)) {
            agrees(&text)?;
        }

        #[test]
        fn agrees_with_serde_on_changed_compact_bytes(text in bytes_changed(COMPACT)) {
            agrees(&text)?;
        }

        #[test]
        fn agrees_with_serde_on_numbers_written_any_way(
            field in prop::sample::select(vec!["1795480200000", "742", "117.196623", "39.132584", "71"]),
            number in "-?0{0,2}[0-9]{0,17}(\\.[0-9]{0,17})?([eE][-+]?[0-9]{1,2})?",
        ) {
            agrees(&PLAIN.replacen(field, &number, 1))?;
            agrees(&COMPACT.replacen(field, &number, 1))?;
        }
    }
}
