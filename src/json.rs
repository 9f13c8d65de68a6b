//! JSON strings as bytes: shared by the event scanner and the task writer, which both skip
//! serde_json where a record has the plain shape.

/// A one in every byte of a word: multiplied by a byte, that byte in every lane.
pub(crate) const ONES: u64 = u64::from_ne_bytes([1; 8]);

/// How many bytes of `bytes` a JSON string holds as they are: the run before the first
/// quote, backslash or control character (or all of them), sixteen bytes at a time, then
/// eight. These are exactly the bytes serde_json escapes.
pub(crate) fn plain_run(bytes: &[u8]) -> usize {
    // Sixteen bytes at a time first, where SSE2 (part of every x86-64 CPU) compares them at
    // once: most strings of an event end within the first sixteen.
    #[cfg(target_arch = "x86_64")]
    let done = {
        let mut done = 0;
        while let Some(chunk) = bytes.get(done..done + 16) {
            let found = stops16(chunk.try_into().expect("sixteen bytes"));
            if found != 0 {
                return done + found.trailing_zeros() as usize;
            }
            done += 16;
        }
        done
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    done + plain_run8(&bytes[done..])
}

/// A bit for each of the sixteen bytes that is a quote, a backslash or a control character.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn stops16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: the load reads the sixteen bytes of `chunk`, unaligned loads allowed; the
    // other intrinsics are SSE2, which every x86-64 CPU has.
    unsafe {
        let x = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
        // Unsigned `x <= 0x1f`: the smaller of the two is `x` itself.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

/// [`plain_run`] eight bytes at a time.
fn plain_run8(bytes: &[u8]) -> usize {
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
        assert_eq!(plain(&"abcdefghijklmnop".repeat(3)), 48);
        assert_eq!(plain(&"x".repeat(21)), 21);
        for (i, stop) in ["\"", "\\", "\n", "\u{1f}", "\0"].iter().enumerate() {
            for at in [0, 3, 7, 8, 13, 15, 16, 17, 24, 31, 32, 40] {
                let s = format!("{}{stop}\"tail", "x".repeat(at));
                assert_eq!(plain(&s), at, "stop {i} at {at}");
            }
        }
        // Bytes just above a stop and non-ASCII text are plain.
        assert_eq!(plain(" !#[]~\u{7f}é漢字\""), " !#[]~\u{7f}é漢字".len());
    }
}
