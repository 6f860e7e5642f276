//! Building blocks of the SQL the analyses generate: quoted names, checked
//! filter expressions and Rakam's time references.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{AnalysisError, Result};
use crate::scope::{floor_div_sql, week_sql, TimeScope, DAY_MS};

/// A double-quoted identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A single-quoted string literal.
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Checks that `text` is exactly one SQL expression and returns it in
/// parentheses, re-rendered from its syntax tree, so it can be placed in a
/// WHERE clause without changing the statement around it. What it may read
/// is then limited by the project session the statement runs in.
pub fn check_filter(field: &str, text: &str) -> Result<String> {
    let invalid = |why: String| AnalysisError::invalid(format!("{field} is invalid: {why}"));
    let dialect = GenericDialect {};
    // A filter deep enough to overflow the stack is refused from its
    // tokens, before it becomes a tree; the statement it is placed in is
    // checked again as a whole.
    rakam_query::check_nesting(text, &dialect).map_err(|error| {
        AnalysisError::Query(rakam_query::QueryError::TooComplex(format!(
            "{field}: {error}"
        )))
    })?;
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(|e| invalid(e.to_string()))?;
    let expr = parser.parse_expr().map_err(|e| invalid(e.to_string()))?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(invalid(format!(
            "unexpected {} after the expression",
            next.token
        )));
    }
    Ok(format!("({expr})"))
}

/// An optional filter, `TRUE` when absent or blank.
pub fn optional_filter(field: &str, text: Option<&str>) -> Result<String> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => check_filter(field, text),
        None => Ok("TRUE".into()),
    }
}

/// Rakam's time references (`segment` of funnels, REFERENCE groupings of
/// the event explorer): a label computed from an event's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeReference {
    HourOfDay,
    DayOfMonth,
    WeekOfYear,
    MonthOfYear,
    QuarterOfYear,
    DayPart,
    DayOfWeek,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl TimeReference {
    pub const ALL: [Self; 12] = [
        Self::HourOfDay,
        Self::DayOfMonth,
        Self::WeekOfYear,
        Self::MonthOfYear,
        Self::QuarterOfYear,
        Self::DayPart,
        Self::DayOfWeek,
        Self::Hour,
        Self::Day,
        Self::Week,
        Self::Month,
        Self::Year,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::HourOfDay => "HOUR_OF_DAY",
            Self::DayOfMonth => "DAY_OF_MONTH",
            Self::WeekOfYear => "WEEK_OF_YEAR",
            Self::MonthOfYear => "MONTH_OF_YEAR",
            Self::QuarterOfYear => "QUARTER_OF_YEAR",
            Self::DayPart => "DAY_PART",
            Self::DayOfWeek => "DAY_OF_WEEK",
            Self::Hour => "HOUR",
            Self::Day => "DAY",
            Self::Week => "WEEK",
            Self::Month => "MONTH",
            Self::Year => "YEAR",
        }
    }

    pub fn display_name(self) -> String {
        let lower = self.name().to_ascii_lowercase().replace('_', " ");
        let mut chars = lower.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    }

    /// "Date category" (cyclic) or "Date period" (a point on the calendar).
    pub fn category(self) -> &'static str {
        match self {
            Self::Hour | Self::Day | Self::Week | Self::Month | Self::Year => "Date period",
            _ => "Date category",
        }
    }

    /// Accepts the enum name or the display name (spaces or underscores,
    /// any case), as Rakam does.
    pub fn parse(text: &str) -> Option<Self> {
        let wanted = text.trim().to_ascii_uppercase().replace(' ', "_");
        Self::ALL.into_iter().find(|r| r.name() == wanted)
    }

    /// For the calendar periods (hours, days, Monday-weeks, months, years):
    /// the SQL of an event's period that is cheap per row and groups as the
    /// labels do (a number for the periods of a fixed length, the local
    /// start for months and years; no strings). The label is made once per
    /// group by [`Self::bucket_label_sql`].
    pub fn bucket_sql(self, scope: &TimeScope, column: &str) -> Option<String> {
        let local_ms = || scope.local_ms(column);
        let start = |unit: &str| format!("date_trunc('{unit}', {})", scope.local_timestamp(column));
        match self {
            Self::Hour => Some(floor_div_sql(&local_ms(), HOUR_MS)),
            Self::Day => Some(floor_div_sql(&local_ms(), DAY_MS)),
            Self::Week => Some(week_sql(&local_ms())),
            Self::Month => Some(start("month")),
            Self::Year => Some(start("year")),
            _ => None,
        }
    }

    /// The label of a bucket number made by [`Self::bucket_sql`]: the same
    /// text [`Self::label_sql`] gives for any event of the period.
    pub fn bucket_label_sql(self, bucket: &str) -> String {
        let start_ms = match self {
            // The bucket is the period's local start already.
            Self::Month | Self::Year => return self.label_of_local(bucket),
            Self::Hour => format!("{bucket} * {HOUR_MS}"),
            Self::Week => format!("({bucket} * 7 - 3) * {DAY_MS}"),
            _ => format!("{bucket} * {DAY_MS}"),
        };
        self.label_of_local(&format!(
            "arrow_cast({start_ms}, 'Timestamp(Millisecond, None)')"
        ))
    }

    /// SQL producing the label of `column` (a timestamp) in `scope`'s zone.
    pub fn label_sql(self, scope: &TimeScope, column: &str) -> String {
        self.label_of_local(&scope.local_timestamp(column))
    }

    /// The label of a local wall-clock timestamp `lt`.
    fn label_of_local(self, lt: &str) -> String {
        let part = |p: &str| format!("CAST(date_part('{p}', {lt}) AS BIGINT)");
        let date_of =
            |unit: &str| format!("CAST(CAST(date_trunc('{unit}', {lt}) AS DATE) AS VARCHAR)");
        match self {
            Self::HourOfDay => format!("lpad(CAST({} AS VARCHAR), 2, '0') || ':00'", part("hour")),
            Self::DayOfMonth => format!("CAST({} AS VARCHAR) || 'th day'", part("day")),
            Self::WeekOfYear => format!("CAST({} AS VARCHAR) || 'th week'", part("week")),
            Self::MonthOfYear => format!("to_char({lt}, '%B')"),
            Self::QuarterOfYear => format!("CAST({} AS VARCHAR) || 'th quarter'", part("quarter")),
            Self::DayOfWeek => format!("to_char({lt}, '%A')"),
            Self::DayPart => format!(
                "CASE WHEN {h} < 6 THEN 'Night' WHEN {h} < 12 THEN 'Morning' WHEN {h} < 18 THEN 'Afternoon' ELSE 'Evening' END",
                h = part("hour")
            ),
            Self::Hour => format!("to_char(date_trunc('hour', {lt}), '%Y-%m-%d %H:00')"),
            Self::Day => date_of("day"),
            Self::Week => date_of("week"),
            Self::Month => date_of("month"),
            Self::Year => date_of("year"),
        }
    }
}

const HOUR_MS: i64 = 3_600_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_one_expression() {
        assert_eq!(check_filter("f", "a = 1").ok().as_deref(), Some("(a = 1)"));
        assert!(check_filter("f", "a = 1) UNION SELECT (1").is_err());
        assert!(check_filter("f", "a = 1; DROP TABLE x").is_err());
        assert!(check_filter("f", "").is_err());
        assert!(check_filter("f", "a = 1 -- x").is_ok());
    }

    #[test]
    fn references_parse_by_either_name() {
        assert_eq!(
            TimeReference::parse("Hour of day"),
            Some(TimeReference::HourOfDay)
        );
        assert_eq!(
            TimeReference::parse("DAY_OF_WEEK"),
            Some(TimeReference::DayOfWeek)
        );
        assert_eq!(TimeReference::parse("fortnight"), None);
        assert_eq!(TimeReference::HourOfDay.display_name(), "Hour of day");
    }
}
