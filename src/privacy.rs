//! Phone numbers are personal data: they reach the officer who must call and nowhere else.
//! Everything that goes to logs, metric labels or error messages passes through here.

use std::borrow::Cow;

/// Masks a phone number for display: `13812345678` → `138****5678`. Short or odd inputs are
/// masked entirely rather than risk showing most of a number.
pub fn mask_phone(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() < 8 {
        return "*".repeat(chars.len().max(4));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// Masks every run of seven or more digits in free text (parser messages quote the offending
/// value, which may be a phone number).
pub fn mask_digits(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start >= 7 {
                let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
                buf.push_str(&text[copied..start]);
                buf.push_str(&mask_phone(&text[start..i]));
                copied = i;
            }
        } else {
            i += 1;
        }
    }
    match out {
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            Cow::Owned(buf)
        }
        None => Cow::Borrowed(text),
    }
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
}
