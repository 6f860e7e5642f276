//! `rakam_funnel(t, step_mask, exclusion_mask, spec)`: one user's funnel.
//!
//! `t` is the event time in milliseconds, bit `i` of `step_mask` says the
//! event matches step `i + 1`, bit `j` of `exclusion_mask` says it is the
//! event of exclusion `j`. The result is the times of the steps of the
//! user's counted attempt: its length is the furthest step reached.
//! Semantics (ADR 0005): an attempt starts at a step-1 event inside the
//! start range and takes, greedily, the earliest event of each next step
//! that is strictly later than the previous step and at most `window` ms
//! after the start. Events of the same millisecond never form two steps.
//! The counted attempt is the earliest-starting one that reaches the
//! furthest step without being disqualified by an exclusion.

use datafusion::arrow::datatypes::DataType;

use crate::event_rows::{Finisher, Row};
use crate::spec::{Spec, SpecError};

pub const NAME: &str = "rakam_funnel";
/// Bits of a BIGINT mask that can name a step or an exclusion.
pub const MAX_STEPS: usize = 62;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunnelMode {
    /// Steps in order; other events in between are allowed.
    Ordered,
    /// Steps in order; any other event of the funnel in between ends the attempt.
    Strict,
    /// Steps in any order inside the window.
    Any,
}

impl FunnelMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "ordered" => Some(Self::Ordered),
            "strict" => Some(Self::Strict),
            "any" => Some(Self::Any),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ordered => "ordered",
            Self::Strict => "strict",
            Self::Any => "any",
        }
    }
}

/// An exclusion: its event between step `from` and step `to` (1-based)
/// disqualifies the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exclusion {
    pub from: usize,
    pub to: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelSpec {
    pub steps: usize,
    pub window_ms: i64,
    pub mode: FunnelMode,
    /// Attempts start at or after this time (ms) ...
    pub start_from: i64,
    /// ... and before this time.
    pub start_to: i64,
    pub exclusions: Vec<Exclusion>,
}

impl FunnelSpec {
    /// The spec as the SQL literal the function reads.
    pub fn to_spec_string(&self) -> String {
        let exclusions: Vec<String> = self
            .exclusions
            .iter()
            .map(|e| format!("{}-{}", e.from, e.to))
            .collect();
        format!(
            "steps={};window={};mode={};start_from={};start_to={};exclude={}",
            self.steps,
            self.window_ms,
            self.mode.as_str(),
            self.start_from,
            self.start_to,
            exclusions.join(",")
        )
    }

    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let spec = Spec::parse(
            text,
            &[
                "steps",
                "window",
                "mode",
                "start_from",
                "start_to",
                "exclude",
            ],
        )?;
        let steps = usize::try_from(spec.required_int("steps")?).unwrap_or(0);
        if steps == 0 || steps > MAX_STEPS {
            return Err(SpecError(format!("steps must be 1..={MAX_STEPS}")));
        }
        let window_ms = spec.required_int("window")?;
        if window_ms < 0 {
            return Err(SpecError("window must not be negative".into()));
        }
        let mode = match spec.text("mode") {
            None => FunnelMode::Ordered,
            Some(m) => FunnelMode::parse(m)
                .ok_or_else(|| SpecError(format!("mode '{m}' is not ordered, strict or any")))?,
        };
        let mut exclusions = Vec::new();
        for part in spec.text("exclude").unwrap_or("").split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let parsed = part
                .split_once('-')
                .and_then(|(f, t)| Some((f.trim().parse().ok()?, t.trim().parse().ok()?)));
            match parsed {
                Some((from, to)) if from >= 1 && from < to && to <= steps => {
                    exclusions.push(Exclusion { from, to })
                }
                _ => {
                    return Err(SpecError(format!(
                        "exclusion '{part}' must be FROM-TO with 1 <= FROM < TO <= {steps}"
                    )))
                }
            }
        }
        if exclusions.len() > MAX_STEPS {
            return Err(SpecError(format!("at most {MAX_STEPS} exclusions")));
        }
        Ok(Self {
            steps,
            window_ms,
            mode,
            start_from: spec.int("start_from")?.unwrap_or(i64::MIN),
            start_to: spec.int("start_to")?.unwrap_or(i64::MAX),
            exclusions,
        })
    }

    fn all_steps(&self) -> i64 {
        if self.steps >= 63 {
            -1
        } else {
            (1i64 << self.steps) - 1
        }
    }

    /// The times of the counted attempt's steps; `rows` are sorted in place.
    pub fn evaluate(&self, rows: &mut [Row]) -> Vec<i64> {
        let mut out = Vec::new();
        self.evaluate_into(rows, &mut out);
        out
    }

    /// [`Self::evaluate`], appending to `out`; one chain buffer serves every
    /// attempt of the group.
    pub fn evaluate_into(&self, rows: &mut [Row], out: &mut Vec<i64>) {
        if !rows.is_sorted() {
            rows.sort_unstable();
        }
        let all = self.all_steps();
        let base = out.len();
        let mut chain: Vec<i64> = Vec::new();
        for (index, start) in rows.iter().enumerate() {
            if out.len() - base == self.steps {
                break;
            }
            let can_start = match self.mode {
                FunnelMode::Any => start.a & all != 0,
                _ => start.a & 1 != 0,
            };
            if !can_start || start.t < self.start_from || start.t >= self.start_to {
                continue;
            }
            let deadline = start.t.saturating_add(self.window_ms);
            chain.clear();
            match self.mode {
                FunnelMode::Any => self.any_order_chain(rows, start.t, deadline, &mut chain),
                _ => self.ordered_chain(rows, index, deadline, &mut chain),
            }
            if chain.len() > out.len() - base && !self.disqualified(rows, &chain, deadline) {
                out.truncate(base);
                out.extend_from_slice(&chain);
            }
        }
    }

    fn ordered_chain(&self, rows: &[Row], start: usize, deadline: i64, chain: &mut Vec<i64>) {
        let all = self.all_steps();
        let start_t = rows[start].t;
        chain.push(start_t);
        let mut j = start + 1;
        while j < rows.len() && rows[j].t == start_t {
            j += 1;
        }
        while j < rows.len() && rows[j].t <= deadline && chain.len() < self.steps {
            let t = rows[j].t;
            let group_end = j + rows[j..].iter().take_while(|r| r.t == t).count();
            let next_bit = 1i64 << chain.len();
            let group = &rows[j..group_end];
            if group.iter().any(|r| r.a & next_bit != 0) {
                chain.push(t);
            } else if self.mode == FunnelMode::Strict && group.iter().any(|r| r.a & all != 0) {
                break;
            }
            j = group_end;
        }
    }

    fn any_order_chain(&self, rows: &[Row], start_t: i64, deadline: i64, chain: &mut Vec<i64>) {
        let all = self.all_steps();
        let first = rows.partition_point(|r| r.t < start_t);
        let mut covered = 0i64;
        for row in rows[first..].iter().take_while(|r| r.t <= deadline) {
            let new = row.a & all & !covered;
            for _ in 0..new.count_ones() {
                chain.push(row.t);
            }
            covered |= new;
            if chain.len() >= self.steps {
                break;
            }
        }
    }

    fn disqualified(&self, rows: &[Row], chain: &[i64], deadline: i64) -> bool {
        self.exclusions.iter().enumerate().any(|(bit, ex)| {
            if chain.len() < ex.from {
                return false;
            }
            let low = chain[ex.from - 1];
            let (high, open_ended) = match chain.get(ex.to - 1) {
                Some(t) => (*t, false),
                None => (deadline, true),
            };
            let first = rows.partition_point(|r| r.t <= low);
            rows[first..]
                .iter()
                .take_while(|r| r.t < high || (open_ended && r.t == high))
                .any(|r| r.b & (1i64 << bit) != 0)
        })
    }
}

impl Finisher for FunnelSpec {
    fn finish_into(&self, rows: &mut [Row], out: &mut Vec<i64>) {
        self.evaluate_into(rows, out)
    }
}

crate::event_rows::rows_udaf!(
    FunnelUdaf,
    NAME,
    FunnelSpec,
    [
        DataType::Int64,
        DataType::Int64,
        DataType::Int64,
        DataType::Utf8
    ]
);
