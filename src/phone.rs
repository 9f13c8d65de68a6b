//! Phone numbers in one canonical form, so that one person is one key.
//!
//! The anti-fraud centre's feeds write the same number as `13912345678`, `+8613912345678`,
//! `0086 139-1234-5678` or with full-width digits. Suppression, task ids and the officer's
//! call all use the canonical form:
//!
//! - mainland China numbers in the national form an officer dials: mobiles as 11 digits
//!   starting `1[3-9]`, landlines as `0` + area code + number (10–12 digits);
//! - any other country in E.164: `+`, country code and number, 8–15 digits.
//!
//! Anything else (letters, a service number, a number of the wrong length) is not a number an
//! officer can call, and is rejected with a reason that never repeats the number itself.

use std::borrow::Cow;

use thiserror::Error;

/// Why a callee number cannot be made canonical. Messages never quote the number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PhoneError {
    #[error("contains `{0}`, which is not a digit, `+` or a separator")]
    BadCharacter(char),
    #[error("has no digits")]
    Empty,
    #[error("`+` may only start the number")]
    MisplacedPlus,
    #[error("is {0} digits long: a mainland mobile has 11 digits starting 13-19")]
    BadMobile(usize),
    #[error("is {0} digits long: a mainland landline has 10-12 digits starting with 0")]
    BadLandline(usize),
    #[error("is {0} digits long: an international number has 8-15 digits after `+`")]
    BadInternational(usize),
    #[error("is not a mainland mobile (1…), landline (0…) or international (+…) number")]
    Unrecognised,
}

/// The canonical form of `raw` (see the module documentation). Borrows when `raw` is already
/// canonical, which is the common case on the hot path.
pub fn canonical(raw: &str) -> Result<Cow<'_, str>, PhoneError> {
    if is_canonical_mobile(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut digits = String::with_capacity(raw.len().min(24));
    let mut plus = false;
    for c in raw.chars() {
        match c {
            '0'..='9' => digits.push(c),
            // Full-width digits, as typed by Chinese input methods.
            '０'..='９' => digits.push(char::from(b'0' + (c as u32 - '０' as u32) as u8)),
            '+' | '＋' if digits.is_empty() && !plus => plus = true,
            '+' | '＋' => return Err(PhoneError::MisplacedPlus),
            ' ' | '-' | '.' | '(' | ')' | '\u{3000}' | '－' | '（' | '）' => {}
            other => return Err(PhoneError::BadCharacter(other)),
        }
        if digits.len() > 20 {
            return Err(PhoneError::Unrecognised);
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }
    let national = if plus {
        match digits.strip_prefix("86") {
            Some(rest) => rest.to_owned(),
            None => {
                return match digits.len() {
                    8..=15 => Ok(Cow::Owned(format!("+{digits}"))),
                    n => Err(PhoneError::BadInternational(n)),
                }
            }
        }
    } else if let Some(rest) = digits.strip_prefix("0086") {
        rest.to_owned()
    } else if let Some(rest) = digits.strip_prefix("00") {
        // International dialling prefix from the mainland: 00 + country code.
        return match rest.len() {
            8..=15 => Ok(Cow::Owned(format!("+{rest}"))),
            n => Err(PhoneError::BadInternational(n)),
        };
    } else if digits.len() == 13 && digits.starts_with("861") {
        digits[2..].to_owned()
    } else {
        digits
    };
    national_form(national).map(Cow::Owned)
}

/// A mainland number without country code, checked and with a domestic trunk `0` restored on
/// landlines written after `+86` (`+86 22 1234 5678` is dialled `022 1234 5678`).
fn national_form(n: String) -> Result<String, PhoneError> {
    match n.as_bytes().first() {
        Some(b'1') => {
            if is_canonical_mobile(n.as_bytes()) {
                Ok(n)
            } else {
                Err(PhoneError::BadMobile(n.len()))
            }
        }
        Some(b'0') => match n.len() {
            10..=12 => Ok(n),
            len => Err(PhoneError::BadLandline(len)),
        },
        Some(b'2'..=b'9') if (9..=11).contains(&n.len()) => {
            let with_trunk = format!("0{n}");
            Ok(with_trunk)
        }
        Some(_) => Err(PhoneError::Unrecognised),
        None => Err(PhoneError::Empty),
    }
}

/// Whether `b` is already canonical: a mainland mobile, a landline with its trunk `0`, or an
/// international number other than +86. Checked without allocating: callers are often
/// landlines or abroad, and lists look every caller up.
fn is_canonical_form(b: &[u8]) -> bool {
    let digits = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
    match b {
        [b'+', rest @ ..] => {
            (8..=15).contains(&rest.len()) && digits(rest) && !rest.starts_with(b"86")
        }
        [b'0', second, ..] => *second != b'0' && (10..=12).contains(&b.len()) && digits(b),
        _ => is_canonical_mobile(b),
    }
}

/// Whether `b` is already a canonical mainland mobile: the common case, checked inline by
/// callers before [`canonical`].
#[inline]
pub fn is_canonical_mobile(b: &[u8]) -> bool {
    b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit)
}

/// The key a number list stores for `raw`: the hash of its canonical form, so that every way
/// of writing a number finds it; for a service number that is no callable number (`95588`,
/// `110`), the hash of its digits. `None` when it is neither. A 64-bit hash: among 10 million
/// entries the chance that a number not on the list collides with one on it is below 1e-12
/// per lookup.
pub fn list_key(raw: &str) -> Option<u64> {
    let hash = |b: &[u8]| xxhash_rust::xxh3::xxh3_64(b);
    if is_canonical_form(raw.as_bytes()) {
        return Some(hash(raw.as_bytes()));
    }
    if let Ok(c) = canonical(raw) {
        return Some(hash(c.as_bytes()));
    }
    let digits: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{3000}'))
        .collect();
    ((3..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| hash(digits.as_bytes()))
}

/// The key a caller's windows are kept under, and the by-caller topic's record key: its
/// [`list_key`], so that a number written two ways (`+86 139 1234 5678`, `13912345678`) is
/// one caller; the hash of the number as written when it has no canonical form. For a
/// number already canonical it is the hash of the number itself, as
/// [`crate::dispatch::callee_key`] gives.
pub fn caller_key(raw: &str) -> u64 {
    caller_key_with(list_key(raw), raw)
}

/// [`caller_key`] of `raw` when its [`list_key`] is known already.
pub fn caller_key_with(list_key: Option<u64>, raw: &str) -> u64 {
    list_key.unwrap_or_else(|| xxhash_rust::xxh3::xxh3_64(raw.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        canonical(raw).unwrap().into_owned()
    }

    #[test]
    fn one_mobile_written_many_ways_is_one_number() {
        for raw in [
            "13912345678",
            "+8613912345678",
            "+86 139 1234 5678",
            "008613912345678",
            "8613912345678",
            "139 1234 5678",
            "139-1234-5678",
            "１３９１２３４５６７８",
            "（+86）139.1234.5678",
        ] {
            assert_eq!(ok(raw), "13912345678", "{raw}");
        }
    }

    #[test]
    fn canonical_mobiles_are_borrowed() {
        assert!(matches!(canonical("13912345678"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn landlines_keep_their_trunk_zero() {
        assert_eq!(ok("022-2345-6789"), "02223456789");
        assert_eq!(ok("+86 22 2345 6789"), "02223456789");
        assert_eq!(ok("(010) 1234 5678"), "01012345678");
    }

    #[test]
    fn other_countries_are_e164() {
        assert_eq!(ok("+852 5123 4567"), "+85251234567");
        assert_eq!(ok("00852 5123 4567"), "+85251234567");
    }

    #[test]
    fn what_an_officer_cannot_call_is_rejected_without_quoting_it() {
        for (raw, err) in [
            ("not a phone", PhoneError::BadCharacter('n')),
            ("", PhoneError::Empty),
            ("1391234567", PhoneError::BadMobile(10)),
            ("12912345678", PhoneError::BadMobile(11)),
            ("139+12345678", PhoneError::MisplacedPlus),
            ("+1234", PhoneError::BadInternational(4)),
            ("0221234", PhoneError::BadLandline(7)),
            ("95588", PhoneError::Unrecognised),
        ] {
            let e = canonical(raw).unwrap_err();
            assert_eq!(e, err, "{raw}");
            if raw.len() > 4 {
                assert!(!e.to_string().contains(raw), "{e}");
            }
        }
    }

    #[test]
    fn a_list_key_finds_a_number_however_it_is_written() {
        let key = list_key("13912345678").unwrap();
        for raw in [
            "+86 139 1234 5678",
            "008613912345678",
            "１３９１２３４５６７８",
        ] {
            assert_eq!(list_key(raw), Some(key), "{raw}");
        }
        assert_eq!(list_key("0085251234567"), list_key("+852 5123 4567"));
        assert_eq!(list_key("955-88"), list_key("95588"));
        assert!(list_key("95588").is_some() && list_key("110") != list_key("95588"));
        assert_eq!(list_key("call me"), None);
        // The allocation-free path agrees with the canonical form.
        for raw in ["+85251234567", "02212345678", "075523456789", "13912345678"] {
            assert!(is_canonical_form(raw.as_bytes()), "{raw}");
            assert_eq!(canonical(raw).unwrap(), raw);
        }
        for raw in ["+8613912345678", "0085251234567", "0221234567"] {
            assert!(
                !is_canonical_form(raw.as_bytes()) || canonical(raw).unwrap() == raw,
                "{raw}"
            );
        }
        assert_eq!(list_key("12"), None);
    }
}
