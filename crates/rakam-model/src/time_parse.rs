//! ISO-8601 parsing for dates and timestamps. A timestamp without a zone is
//! read as UTC, as Rakam does.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Times Rakam keeps: the years 1 to 9999, which every backend and every
/// date function handles. A time outside them is never clamped: as a value
/// it fits no time column (it goes to `_unmapped` under its field name), as
/// an event's `_time` it is a 400.
pub const EARLIEST_TIME_MS: i64 = -62_135_596_800_000;
pub const LATEST_TIME_MS: i64 = 253_402_300_799_999;
const EARLIEST_DAY: i32 = -719_162;
const LATEST_DAY: i32 = 2_932_896;

/// Whether epoch milliseconds fall in the years 1 to 9999.
pub fn is_supported_time(millis: i64) -> bool {
    (EARLIEST_TIME_MS..=LATEST_TIME_MS).contains(&millis)
}

/// `yyyy-MM-dd` to days since the Unix epoch (years 1 to 9999).
pub fn parse_date(text: &str) -> Option<i32> {
    if text.len() != 10 {
        return None;
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let days = chrono::Datelike::num_days_from_ce(&date) - UNIX_EPOCH_DAYS_FROM_CE;
    (EARLIEST_DAY..=LATEST_DAY).contains(&days).then_some(days)
}

/// An ISO-8601 / RFC 3339 instant, or `yyyy-MM-dd[ T]HH:mm[:ss[.fff]]` in
/// UTC, or a bare date (midnight UTC), to epoch milliseconds.
pub fn parse_timestamp_millis(text: &str) -> Option<i64> {
    parse_any_timestamp_millis(text).filter(|&millis| is_supported_time(millis))
}

fn parse_any_timestamp_millis(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.len() < 10 {
        return None;
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(instant) = DateTime::parse_from_str(text, format) {
            return Some(instant.timestamp_millis());
        }
    }
    let without_zulu = text.strip_suffix('Z').unwrap_or(text);
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(without_zulu, format) {
            return Some(naive.and_utc().timestamp_millis());
        }
    }
    parse_date(text).map(|days| i64::from(days) * rakam_common::time::MILLIS_PER_DAY)
}

/// Whether a string should create a TIMESTAMP column: Rakam's rule of more
/// than 12 characters that parse as a date-time.
pub(crate) fn looks_like_timestamp(text: &str) -> bool {
    text.len() > 12
        && text.as_bytes().get(4) == Some(&b'-')
        && parse_timestamp_millis(text).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-01-01"), Some(19723));
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(parse_date("2024-1-01"), None);
    }

    #[test]
    fn timestamps() {
        let expected = Some(1_704_067_200_000);
        assert_eq!(parse_timestamp_millis("2024-01-01T00:00:00Z"), expected);
        assert_eq!(parse_timestamp_millis("2024-01-01T00:00:00.000Z"), expected);
        assert_eq!(
            parse_timestamp_millis("2024-01-01T01:00:00+01:00"),
            expected
        );
        assert_eq!(parse_timestamp_millis("2024-01-01 00:00:00"), expected);
        assert_eq!(parse_timestamp_millis("2024-01-01T00:00"), expected);
        assert_eq!(parse_timestamp_millis("2024-01-01"), expected);
        assert_eq!(
            parse_timestamp_millis("2024-01-01T00:00:00.123Z"),
            Some(1_704_067_200_123)
        );
        assert_eq!(parse_timestamp_millis("yesterday"), None);
        assert!(looks_like_timestamp("2024-01-01T10:00:00Z"));
        assert!(!looks_like_timestamp("2024-01-01"));
        assert!(!looks_like_timestamp("hello world, how are you"));
    }
}
