//! The date range and time zone of a request, and the SQL that puts an
//! event's time into the user's calendar.

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::error::{AnalysisError, Result};

/// `[start_ms, end_ms)` in UTC milliseconds: from `startDate` 00:00 to the
/// end of `endDate` (inclusive, as Rakam), both in the request's time zone.
#[derive(Debug, Clone)]
pub struct TimeScope {
    pub start_ms: i64,
    pub end_ms: i64,
    pub tz: Tz,
}

fn parse_date(field: &str, text: &str) -> Result<NaiveDate> {
    let date_part = text.get(..10).unwrap_or(text);
    NaiveDate::parse_from_str(date_part, "%Y-%m-%d")
        .map_err(|_| AnalysisError::invalid(format!("{field} {text:?} is not a date (yyyy-MM-dd)")))
}

fn local_midnight_ms(tz: &Tz, date: NaiveDate) -> Result<i64> {
    let midnight = date
        .and_hms_opt(0, 0, 0)
        .ok_or_else(|| AnalysisError::invalid("invalid date"))?;
    // A zone may skip midnight (DST); the earliest valid instant after it counts.
    let local = tz
        .from_local_datetime(&midnight)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
        })
        .ok_or_else(|| AnalysisError::invalid(format!("{date} has no midnight in {tz}")))?;
    Ok(local.timestamp_millis())
}

/// The date range and time zone every analysis request carries (Rakam's
/// field names, snake_case accepted too).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DateRange {
    #[serde(default, rename = "startDate", alias = "start_date")]
    pub start_date: Option<String>,
    #[serde(default, rename = "endDate", alias = "end_date")]
    pub end_date: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
}

impl DateRange {
    pub fn scope(&self) -> Result<TimeScope> {
        TimeScope::parse(
            self.start_date.as_deref(),
            self.end_date.as_deref(),
            self.timezone.as_deref(),
        )
    }
}

/// A length of time as Rakam writes it: `{"value": 7, "type": "DAY"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Span {
    pub value: i64,
    #[serde(rename = "type")]
    pub unit: String,
}

impl Span {
    /// Milliseconds; `field` names the request field in errors. A month is
    /// 30 days (a window, not a calendar period).
    pub fn to_ms(&self, field: &str) -> Result<i64> {
        const UNITS: [(&str, i64); 6] = [
            ("SECOND", 1_000),
            ("MINUTE", 60_000),
            ("HOUR", 3_600_000),
            ("DAY", DAY_MS),
            ("WEEK", 7 * DAY_MS),
            ("MONTH", 30 * DAY_MS),
        ];
        let unit = self.unit.to_ascii_uppercase();
        let Some((_, unit_ms)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            let names: Vec<&str> = UNITS.iter().map(|(name, _)| *name).collect();
            return Err(AnalysisError::invalid(format!(
                "{field}.type {unit:?} is not one of {}",
                names.join(", ")
            )));
        };
        if self.value <= 0 {
            return Err(AnalysisError::invalid(format!(
                "{field}.value must be positive"
            )));
        }
        self.value
            .checked_mul(*unit_ms)
            .ok_or_else(|| AnalysisError::invalid(format!("{field} is too long")))
    }
}

impl TimeScope {
    pub fn parse(start: Option<&str>, end: Option<&str>, timezone: Option<&str>) -> Result<Self> {
        let tz: Tz = match timezone.map(str::trim).filter(|t| !t.is_empty()) {
            None => Tz::UTC,
            Some(name) => name.parse().map_err(|_| {
                AnalysisError::invalid(format!("timezone {name:?} is not an IANA time zone name"))
            })?,
        };
        let start =
            start.ok_or_else(|| AnalysisError::invalid("startDate body parameter is required"))?;
        let end =
            end.ok_or_else(|| AnalysisError::invalid("endDate body parameter is required"))?;
        let (start, end) = (parse_date("startDate", start)?, parse_date("endDate", end)?);
        if end < start {
            return Err(AnalysisError::invalid(format!(
                "endDate {end} is before startDate {start}"
            )));
        }
        let after_end = end
            .checked_add_days(Days::new(1))
            .ok_or_else(|| AnalysisError::invalid("endDate is out of range"))?;
        Ok(Self {
            start_ms: local_midnight_ms(&tz, start)?,
            end_ms: local_midnight_ms(&tz, after_end)?,
            tz,
        })
    }

    pub fn is_utc(&self) -> bool {
        self.tz == Tz::UTC
    }

    /// `_time` between the start and the end, the end moved `extra_ms` later
    /// (a funnel's later steps may fall inside the window after the range).
    pub fn time_predicate(&self, extra_ms: i64) -> String {
        format!(
            "_time >= {} AND _time < {}",
            timestamp_literal(self.start_ms),
            timestamp_literal(self.end_ms.saturating_add(extra_ms))
        )
    }

    /// `_time` before the start (first-time retention cohorts look back).
    pub fn before_start_predicate(&self) -> String {
        format!("_time < {}", timestamp_literal(self.start_ms))
    }

    /// The event's wall-clock time in the request's zone, as a naive
    /// timestamp (milliseconds).
    pub fn local_timestamp(&self, column: &str) -> String {
        if self.is_utc() {
            format!("arrow_cast({column}, 'Timestamp(Millisecond, None)')")
        } else {
            format!(
                "to_local_time(arrow_cast({column}, 'Timestamp(Millisecond, Some(\"{}\"))'))",
                self.tz.name()
            )
        }
    }

    /// The event's wall-clock time in the request's zone as epoch-like ms.
    pub fn local_ms(&self, column: &str) -> String {
        if self.is_utc() {
            format!("CAST({column} AS BIGINT)")
        } else {
            format!("CAST({} AS BIGINT)", self.local_timestamp(column))
        }
    }
}

/// A UTC instant as a SQL literal comparable with `_time`.
pub fn timestamp_literal(ms: i64) -> String {
    let instant = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    format!("TIMESTAMP '{}'", instant.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
}

/// Calendar units of retention cohorts and time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodUnit {
    Day,
    Week,
    Month,
}

pub(crate) const DAY_MS: i64 = 86_400_000;

/// Days added to a time before an integer division, so that the dividend is
/// never negative: SQL's division truncates toward zero, which would put a
/// time before 1970 in the period after its own. More than the days from
/// year 1 (the earliest `_time` stored) to 1970 plus one for time zones, and
/// a multiple of 7 so that weeks move by whole weeks.
const SHIFT_DAYS: i64 = 770_000;

/// SQL for the floor of `ms / unit_ms` (a unit dividing a day), for any
/// `ms` from year 1 on.
pub(crate) fn floor_div_sql(ms: &str, unit_ms: i64) -> String {
    let shift = SHIFT_DAYS * DAY_MS;
    format!("(({ms} + {shift}) / {unit_ms} - {})", shift / unit_ms)
}

/// SQL numbering the Monday-week of local milliseconds `ms`: 1970-01-01 was
/// a Thursday, so shifting by 3 days starts weeks on Monday.
pub(crate) fn week_sql(ms: &str) -> String {
    let shift = SHIFT_DAYS * DAY_MS;
    format!(
        "((({ms} + {shift}) / {DAY_MS} + 3) / 7 - {})",
        SHIFT_DAYS / 7
    )
}

impl PeriodUnit {
    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_uppercase().as_str() {
            "DAY" => Ok(Self::Day),
            "WEEK" => Ok(Self::Week),
            "MONTH" => Ok(Self::Month),
            _ => Err(AnalysisError::invalid(format!(
                "date unit {text:?} is not DAY, WEEK or MONTH"
            ))),
        }
    }

    /// SQL numbering the period of `column` (a timestamp) in `scope`'s zone:
    /// days and Monday-weeks since 1970-01-01, months since year 0.
    pub fn period_sql(self, scope: &TimeScope, column: &str) -> String {
        let local_ms = scope.local_ms(column);
        match self {
            Self::Day => floor_div_sql(&local_ms, DAY_MS),
            Self::Week => week_sql(&local_ms),
            Self::Month => {
                let local = scope.local_timestamp(column);
                format!(
                    "(CAST(date_part('year', {local}) AS BIGINT) * 12 + CAST(date_part('month', {local}) AS BIGINT) - 1)"
                )
            }
        }
    }

    /// The first day of a period number, as `yyyy-MM-dd`.
    pub fn period_start(self, period: i64) -> String {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let date = match self {
            Self::Day => epoch.checked_add_signed(chrono::Duration::days(period)),
            Self::Week => epoch.checked_add_signed(chrono::Duration::days(period * 7 - 3)),
            Self::Month => i32::try_from(period.div_euclid(12)).ok().and_then(|year| {
                NaiveDate::from_ymd_opt(year, (period.rem_euclid(12) + 1) as u32, 1)
            }),
        };
        date.map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| period.to_string())
    }

    /// The period number of a UTC instant in `tz` (for tests and labels).
    pub fn period_of(self, tz: &Tz, ms: i64) -> i64 {
        let local = tz
            .timestamp_millis_opt(ms)
            .single()
            .map(|t| t.naive_local())
            .unwrap_or_default();
        let days = local.and_utc().timestamp_millis().div_euclid(DAY_MS);
        match self {
            Self::Day => days,
            Self::Week => (days + 3).div_euclid(7),
            Self::Month => i64::from(local.year()) * 12 + i64::from(local.month0()),
        }
    }
}
