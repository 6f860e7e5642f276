//! `rakam_retention(period, flags, spec)`: one user's retention cohorts.
//!
//! `period` is the event's period number (day, week or month index in the
//! request's time zone). `flags`: bit 0 = a first-action event inside the
//! date range, bit 1 = a returning-action event, bit 2 = a first-action
//! event before the date range. Each result value packs a cohort period and
//! a lead as `cohort << 20 | (lead + 1)`: lead -1 marks membership of the
//! cohort, lead `k >= 0` a return in period `cohort + k + 1` (Rakam's
//! numbering: lead 0 is the first period after the cohort's).

use datafusion::arrow::datatypes::DataType;

use crate::event_rows::{Finisher, Row};
use crate::spec::{Spec, SpecError};

pub const NAME: &str = "rakam_retention";
pub const FIRST_ACTION: i64 = 1;
pub const RETURNING_ACTION: i64 = 2;
pub const FIRST_ACTION_BEFORE_RANGE: i64 = 4;
/// Bits of a packed value that hold `lead + 1`.
pub const LEAD_BITS: u32 = 20;
pub const MAX_PERIODS: i64 = (1 << LEAD_BITS) - 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CohortKind {
    /// A user's cohort is the period of their first first-action event ever.
    FirstTime,
    /// Every period with a first-action event is one of the user's cohorts.
    Recurring,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSpec {
    pub kind: CohortKind,
    pub periods: i64,
}

impl RetentionSpec {
    pub fn to_spec_string(&self) -> String {
        let kind = match self.kind {
            CohortKind::FirstTime => "first",
            CohortKind::Recurring => "recurring",
        };
        format!("kind={kind};periods={}", self.periods)
    }

    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let spec = Spec::parse(text, &["kind", "periods"])?;
        let kind = match spec.text("kind").unwrap_or("first") {
            "first" => CohortKind::FirstTime,
            "recurring" => CohortKind::Recurring,
            other => {
                return Err(SpecError(format!(
                    "kind '{other}' is not first or recurring"
                )))
            }
        };
        let periods = spec.required_int("periods")?;
        if !(0..=MAX_PERIODS).contains(&periods) {
            return Err(SpecError(format!("periods must be 0..={MAX_PERIODS}")));
        }
        Ok(Self { kind, periods })
    }

    pub fn pack(cohort: i64, lead: i64) -> i64 {
        (cohort << LEAD_BITS) | (lead + 1)
    }

    pub fn unpack(value: i64) -> (i64, i64) {
        (value >> LEAD_BITS, (value & ((1 << LEAD_BITS) - 1)) - 1)
    }

    pub fn evaluate(&self, rows: &mut [Row]) -> Vec<i64> {
        rows.sort_unstable();
        let mut cohorts: Vec<i64> = match self.kind {
            CohortKind::FirstTime => {
                if rows.iter().any(|r| r.a & FIRST_ACTION_BEFORE_RANGE != 0) {
                    Vec::new()
                } else {
                    rows.iter()
                        .find(|r| r.a & FIRST_ACTION != 0)
                        .map(|r| vec![r.t])
                        .unwrap_or_default()
                }
            }
            CohortKind::Recurring => rows
                .iter()
                .filter(|r| r.a & FIRST_ACTION != 0)
                .map(|r| r.t)
                .collect(),
        };
        cohorts.dedup();
        let mut returns: Vec<i64> = rows
            .iter()
            .filter(|r| r.a & RETURNING_ACTION != 0)
            .map(|r| r.t)
            .collect();
        returns.dedup();
        let mut out = Vec::new();
        for cohort in cohorts {
            out.push(Self::pack(cohort, -1));
            let first = returns.partition_point(|p| *p <= cohort);
            for period in returns[first..]
                .iter()
                .take_while(|p| **p <= cohort.saturating_add(self.periods))
            {
                out.push(Self::pack(cohort, period - cohort - 1));
            }
        }
        out
    }
}

impl Finisher for RetentionSpec {
    fn finish(&self, rows: &mut [Row]) -> Vec<i64> {
        self.evaluate(rows)
    }
}

crate::event_rows::rows_udaf!(
    RetentionUdaf,
    NAME,
    RetentionSpec,
    [DataType::Int64, DataType::Int64, DataType::Utf8]
);
