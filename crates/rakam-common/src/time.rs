//! Time is kept as signed milliseconds since the Unix epoch, UTC, everywhere.

use std::time::{SystemTime, UNIX_EPOCH};

pub const MILLIS_PER_DAY: i64 = 86_400_000;

/// Wall-clock now in epoch milliseconds.
pub fn now_millis() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        Err(before_epoch) => {
            -i64::try_from(before_epoch.duration().as_millis()).unwrap_or(i64::MAX)
        }
    }
}
