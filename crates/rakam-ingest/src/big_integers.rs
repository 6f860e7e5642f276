//! Integer literals beyond ±2^63. The JSON parser would read them as
//! DOUBLE and drop digits without a trace; they are rewritten as strings
//! before parsing instead, so their digits are kept: in a STRING column,
//! or in `_unmapped` under their field name when the column is a number.
//! Bodies without a run of 19 digits (nearly all) are not copied.

use std::borrow::Cow;

/// Digits of the shortest integer that may not fit an i64.
const SHORTEST_HUGE_INTEGER: usize = 19;

/// Whether `token` is an integer (optionally negative) that no i64 holds.
pub fn is_integer_beyond_i64(token: &[u8]) -> bool {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(token)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .is_none()
}

fn has_long_digit_run(json: &[u8]) -> bool {
    let mut run = 0;
    for byte in json {
        if byte.is_ascii_digit() {
            run += 1;
            if run >= SHORTEST_HUGE_INTEGER {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// `json` with every integer literal beyond ±2^63 (outside strings) in
/// quotes. Invalid JSON stays invalid; the parser reports it.
pub(crate) fn quote_huge_integers(json: &[u8]) -> Cow<'_, [u8]> {
    if !has_long_digit_run(json) {
        return Cow::Borrowed(json);
    }
    let mut out = Vec::with_capacity(json.len() + 16);
    let mut index = 0;
    let mut in_string = false;
    while index < json.len() {
        let byte = json[index];
        if in_string {
            out.push(byte);
            match byte {
                b'\\' if index + 1 < json.len() => {
                    out.push(json[index + 1]);
                    index += 2;
                    continue;
                }
                b'"' => in_string = false,
                _ => {}
            }
            index += 1;
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                out.push(byte);
                index += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = index;
                index += 1;
                while index < json.len()
                    && matches!(json[index], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    index += 1;
                }
                let token = &json[start..index];
                if is_integer_beyond_i64(token) {
                    out.push(b'"');
                    out.extend_from_slice(token);
                    out.push(b'"');
                } else {
                    out.extend_from_slice(token);
                }
            }
            _ => {
                out.push(byte);
                index += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(json: &str) -> String {
        String::from_utf8(quote_huge_integers(json.as_bytes()).into_owned()).expect("utf-8")
    }

    #[test]
    fn only_integers_beyond_64_bits_are_quoted() {
        assert_eq!(
            quoted(
                r#"{"a": 123456789012345678901234567890, "b": -9223372036854775809, "c": 9223372036854775807}"#
            ),
            r#"{"a": "123456789012345678901234567890", "b": "-9223372036854775809", "c": 9223372036854775807}"#
        );
        // Floats, exponents, strings and escaped quotes are left alone.
        let untouched = r#"{"f": 12345678901234567890.5, "e": 1234567890123456789012e3, "s": "12345678901234567890123 \" 12345678901234567890123", "n": [1, 2]}"#;
        assert_eq!(quoted(untouched), untouched);
        assert!(matches!(
            quote_huge_integers(br#"{"a": 1}"#),
            Cow::Borrowed(_)
        ));
        assert!(is_integer_beyond_i64(b"18446744073709551616"));
        assert!(!is_integer_beyond_i64(b"-9223372036854775808"));
    }
}
