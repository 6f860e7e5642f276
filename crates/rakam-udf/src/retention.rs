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
        let mut out = Vec::new();
        self.evaluate_into(rows, &mut out);
        out
    }

    /// [`Self::evaluate`], appending to `out` without allocating.
    pub fn evaluate_into(&self, rows: &mut [Row], out: &mut Vec<i64>) {
        if !rows.is_sorted() {
            rows.sort_unstable();
        }
        if self.kind == CohortKind::FirstTime
            && rows.iter().any(|r| r.a & FIRST_ACTION_BEFORE_RANGE != 0)
        {
            return;
        }
        let mut previous_cohort = None;
        for row in rows.iter() {
            if row.a & FIRST_ACTION == 0 || previous_cohort == Some(row.t) {
                continue;
            }
            let cohort = row.t;
            previous_cohort = Some(cohort);
            out.push(Self::pack(cohort, -1));
            let first = rows.partition_point(|r| r.t <= cohort);
            let mut previous_return = None;
            for r in rows[first..]
                .iter()
                .take_while(|r| r.t <= cohort.saturating_add(self.periods))
            {
                if r.a & RETURNING_ACTION != 0 && previous_return != Some(r.t) {
                    out.push(Self::pack(cohort, r.t - cohort - 1));
                    previous_return = Some(r.t);
                }
            }
            if self.kind == CohortKind::FirstTime {
                return;
            }
        }
    }
}

impl Finisher for RetentionSpec {
    fn finish_into(&self, rows: &mut [Row], out: &mut Vec<i64>) {
        self.evaluate_into(rows, out)
    }
}

crate::event_rows::rows_udaf!(
    RetentionUdaf,
    NAME,
    RetentionSpec,
    [DataType::Int64, DataType::Int64, DataType::Utf8]
);
