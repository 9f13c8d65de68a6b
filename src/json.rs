//! JSON strings as bytes: shared by the event scanner and the task writer, which both skip
//! serde_json where a record has the plain shape.

/// A one in every byte of a word: multiplied by a byte, that byte in every lane.
pub(crate) const ONES: u64 = u64::from_ne_bytes([1; 8]);

/// How many bytes of `bytes` a JSON string holds as they are: the run before the first
/// quote, backslash or control character (or all of them), eight bytes at a time. These
/// are exactly the bytes serde_json escapes.
pub(crate) fn plain_run(bytes: &[u8]) -> usize {
    const HIGH: u64 = ONES << 7;
    // `(v - ONES) & !v & HIGH` marks the zero bytes of `v`; a borrow can also mark a byte
    // above a marked one, never below, so the lowest mark is exact.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut done = 0;
    for chunk in bytes.chunks_exact(8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let found =
            zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\'))) | control;
        if found != 0 {
            return done + (found.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
    done + bytes[done..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_byte_a_string_cannot_hold_as_it_is() {
        let plain = |s: &str| plain_run(s.as_bytes());
        assert_eq!(plain(""), 0);
        assert_eq!(plain("abc"), 3);
        assert_eq!(plain("abcdefghijklmnop"), 16);
        for (i, stop) in ["\"", "\\", "\n", "\u{1f}", "\0"].iter().enumerate() {
            for at in [0, 3, 7, 8, 13] {
                let s = format!("{}{stop}\"tail", "x".repeat(at));
                assert_eq!(plain(&s), at, "stop {i} at {at}");
            }
        }
        // Bytes just above a stop and non-ASCII text are plain.
        assert_eq!(plain(" !#[]~\u{7f}é漢字\""), " !#[]~\u{7f}é漢字".len());
    }
}
