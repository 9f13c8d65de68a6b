//! Phone numbers are personal data: they reach the officer who must call and nowhere else.
//! Everything that goes to logs, metric labels or error messages passes through here.

use std::borrow::Cow;

/// Masks a phone number for display: `13812345678` → `138****5678`. Short or odd inputs are
/// masked entirely rather than risk showing most of a number.
pub fn mask_phone(number: &str) -> String {
    let mut out = String::with_capacity(number.len().max(4));
    mask_phone_into(&mut out, number);
    out
}

/// [`mask_phone`] appended to `out` (task reasons name the caller this way, per task).
pub fn mask_phone_into(out: &mut String, number: &str) {
    let chars = number.chars().count();
    if chars < 8 {
        out.extend(std::iter::repeat_n('*', chars.max(4)));
        return;
    }
    let at = |n: usize| {
        number
            .char_indices()
            .nth(n)
            .map_or(number.len(), |(i, _)| i)
    };
    out.push_str(&number[..at(3)]);
    out.push_str("****");
    out.push_str(&number[at(chars - 4)..]);
}

/// Masks every run of seven or more digits in free text (parser messages quote the offending
/// value, which may be a phone number). A run may be written with separators, as people and
/// systems write phone numbers: `139 1234 5678`, `139-1234-5678`, `139.1234.5678`,
/// `(010) 1234 5678`, `+86 139 1234 5678`; full-width digits (`１３９…`) count as digits.
/// Digits join when at most one space, dash or dot, plus at most one parenthesis, lies
/// between them. Text with nothing to mask is returned as it is, without allocating.
pub fn mask_digits(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        let Some(len) = digit_at(text, i) else {
            i += char_len_at(text, i);
            continue;
        };
        let start = i;
        let mut end = i + len;
        let mut digits = 1;
        loop {
            // Digits right after `end`, then a separator gap followed by a digit.
            while let Some(len) = digit_at(text, end) {
                end += len;
                digits += 1;
            }
            match gap_then_digit(text, end) {
                Some(next) => end = next,
                None => break,
            }
        }
        if digits >= 7 {
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buf.push_str(&text[copied..start]);
            push_masked_run(buf, &text[start..end], digits);
            copied = end;
        }
        i = end;
    }
    match out {
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            Cow::Owned(buf)
        }
        None => Cow::Borrowed(text),
    }
}

/// The byte length of the digit at byte `i` (ASCII `0`-`9` or full-width `０`-`９`).
fn digit_at(text: &str, i: usize) -> Option<usize> {
    match text.as_bytes().get(i..)? {
        [b'0'..=b'9', ..] => Some(1),
        // U+FF10..=U+FF19 in UTF-8: EF BC 90..=99.
        [0xEF, 0xBC, 0x90..=0x99, ..] => Some(3),
        _ => None,
    }
}

fn char_len_at(text: &str, i: usize) -> usize {
    text[i..].chars().next().map_or(1, char::len_utf8)
}

/// If a separator gap starts at byte `i` and a digit follows it, the byte where that digit
/// starts.
fn gap_then_digit(text: &str, i: usize) -> Option<usize> {
    let (mut plain, mut parens, mut j) = (0, 0, i);
    while let Some(&b) = text.as_bytes().get(j) {
        match b {
            b' ' | b'-' | b'.' if plain == 0 => plain += 1,
            b'(' | b')' if parens == 0 => parens += 1,
            _ => break,
        }
        j += 1;
    }
    (j > i && digit_at(text, j).is_some()).then_some(j)
}

/// Writes `run` (`digits` digits with separators) masked: the first three digits and the
/// last four stay, as in [`mask_phone`]; a shorter run is masked entirely.
fn push_masked_run(buf: &mut String, run: &str, digits: usize) {
    if digits < 8 {
        buf.extend(std::iter::repeat_n('*', digits));
        return;
    }
    let mut seen = 0;
    let mut head_end = 0;
    let mut tail_start = run.len();
    let mut i = 0;
    while i < run.len() {
        match digit_at(run, i) {
            Some(len) => {
                seen += 1;
                if seen == 3 {
                    head_end = i + len;
                }
                if seen == digits - 3 {
                    tail_start = i;
                }
                i += len;
            }
            None => i += char_len_at(run, i),
        }
    }
    buf.push_str(&run[..head_end]);
    buf.push_str("****");
    buf.push_str(&run[tail_start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_mobile_number_keeping_prefix_and_last_four() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("+8613812345678"), "+86****5678");
    }

    #[test]
    fn masks_short_numbers_entirely() {
        assert_eq!(mask_phone("110"), "****");
        assert_eq!(mask_phone("1234567"), "*******");
    }

    #[test]
    fn masks_long_digit_runs_in_free_text() {
        assert_eq!(
            mask_digits("invalid type: integer `13812345678`, expected a string at line 1"),
            "invalid type: integer `138****5678`, expected a string at line 1"
        );
        assert_eq!(mask_digits("line 12 column 345"), "line 12 column 345");
    }

    #[test]
    fn masks_numbers_written_with_separators() {
        for (text, masked) in [
            ("call 139 1234 5678 now", "call 139****5678 now"),
            ("call 139-1234-5678 now", "call 139****5678 now"),
            ("call 139.1234.5678 now", "call 139****5678 now"),
            ("call (010) 1234 5678 now", "call (010****5678 now"),
            ("call (010)12345678 now", "call (010****5678 now"),
            ("call +86 139 1234 5678 now", "call +86 1****5678 now"),
            ("call +86-10-1234-5678", "call +86-1****5678"),
            ("`139 1234 5678`", "`139****5678`"),
            // Seven digits with separators are masked entirely, like seven in a row.
            ("ext 123-4567.", "ext *******."),
        ] {
            assert_eq!(mask_digits(text), masked, "{text}");
        }
    }

    #[test]
    fn masks_full_width_digits() {
        assert_eq!(
            mask_digits("号码１３９１２３４５６７８。"),
            "号码１３９****５６７８。"
        );
        assert_eq!(
            mask_digits("１３９ １２３４ ５６７８"),
            "１３９****５６７８"
        );
        assert_eq!(mask_digits("１２３４５６"), "１２３４５６");
    }

    #[test]
    fn leaves_short_groups_and_wide_gaps_alone() {
        for text in [
            "line 12 column 345",
            "12 34 56",
            "1234  5678",
            "call at 10:30, room 1234-56",
            "v1.2.3",
            "",
        ] {
            assert!(matches!(mask_digits(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn mask_phone_counts_characters_not_bytes() {
        assert_eq!(mask_phone("１３９１２３４５６７８"), "１３９****５６７８");
        assert_eq!(mask_phone("电话号码"), "****");
    }
}
