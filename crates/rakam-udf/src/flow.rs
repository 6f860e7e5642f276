//! `rakam_flow(t, label, anchor, spec)`: one user's path.
//!
//! `label` numbers the event's kind (the caller maps names to numbers),
//! `anchor` is 1 for events that may anchor the path (the start event
//! inside the date range). With `direction=next` the path is the first
//! anchor and the `depth` events after it; with `direction=previous`, the
//! last anchor and the `depth` events before it. A path stops at the window
//! (ms from the anchor) and, with `session_gap`, at the first gap between
//! consecutive events longer than that. Events of one millisecond are
//! ordered by label.

use datafusion::arrow::datatypes::DataType;

use crate::event_rows::{Finisher, Row};
use crate::spec::{Spec, SpecError};

pub const NAME: &str = "rakam_flow";
pub const MAX_DEPTH: i64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Next,
    Previous,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    pub direction: Direction,
    pub depth: usize,
    pub window_ms: i64,
    pub session_gap_ms: Option<i64>,
}

impl FlowSpec {
    pub fn to_spec_string(&self) -> String {
        let direction = match self.direction {
            Direction::Next => "next",
            Direction::Previous => "previous",
        };
        let mut text = format!(
            "direction={direction};depth={};window={}",
            self.depth, self.window_ms
        );
        if let Some(gap) = self.session_gap_ms {
            text.push_str(&format!(";session_gap={gap}"));
        }
        text
    }

    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let spec = Spec::parse(text, &["direction", "depth", "window", "session_gap"])?;
        let direction = match spec.text("direction").unwrap_or("next") {
            "next" => Direction::Next,
            "previous" => Direction::Previous,
            other => {
                return Err(SpecError(format!(
                    "direction '{other}' is not next or previous"
                )))
            }
        };
        let depth = spec.required_int("depth")?;
        if !(1..=MAX_DEPTH).contains(&depth) {
            return Err(SpecError(format!("depth must be 1..={MAX_DEPTH}")));
        }
        let window_ms = spec.required_int("window")?;
        let session_gap_ms = spec.int("session_gap")?;
        if window_ms < 0 || session_gap_ms.is_some_and(|g| g < 0) {
            return Err(SpecError(
                "window and session_gap must not be negative".into(),
            ));
        }
        Ok(Self {
            direction,
            depth: usize::try_from(depth).unwrap_or(1),
            window_ms,
            session_gap_ms,
        })
    }

    fn continues(&self, anchor_t: i64, previous_t: i64, t: i64) -> bool {
        (t - anchor_t).abs() <= self.window_ms
            && self
                .session_gap_ms
                .is_none_or(|gap| (t - previous_t).abs() <= gap)
    }

    pub fn evaluate(&self, rows: &mut [Row]) -> Vec<i64> {
        rows.sort_unstable_by_key(|r| (r.t, r.a, std::cmp::Reverse(r.b)));
        let anchor = match self.direction {
            Direction::Next => rows.iter().position(|r| r.b & 1 != 0),
            Direction::Previous => rows.iter().rposition(|r| r.b & 1 != 0),
        };
        let Some(anchor) = anchor else {
            return Vec::new();
        };
        let anchor_t = rows[anchor].t;
        let mut path = vec![rows[anchor].a];
        let mut previous_t = anchor_t;
        let others: Box<dyn Iterator<Item = &Row>> = match self.direction {
            Direction::Next => Box::new(rows[anchor + 1..].iter()),
            Direction::Previous => Box::new(rows[..anchor].iter().rev()),
        };
        for row in others {
            if path.len() > self.depth || !self.continues(anchor_t, previous_t, row.t) {
                break;
            }
            path.push(row.a);
            previous_t = row.t;
        }
        path
    }
}

impl Finisher for FlowSpec {
    fn finish_into(&self, rows: &mut [Row], out: &mut Vec<i64>) {
        out.extend(self.evaluate(rows))
    }
}

crate::event_rows::rows_udaf!(
    FlowUdaf,
    NAME,
    FlowSpec,
    [
        DataType::Int64,
        DataType::Int64,
        DataType::Int64,
        DataType::Utf8
    ]
);
