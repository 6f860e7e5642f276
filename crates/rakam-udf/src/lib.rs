//! Rakam's aggregate functions for DataFusion. Each one gathers a user's
//! events (`(time, a, b)` rows of integers) in one hash-aggregation pass and
//! computes the user's answer at the end, the way ClickHouse's
//! `windowFunnel` and `retention` do, instead of self-joins.
//!
//! - [`funnel`]: `rakam_funnel(t, step_mask, exclusion_mask, spec)` → the
//!   times of the steps of the user's counted attempt.
//! - [`retention`]: `rakam_retention(period, flags, spec)` → the user's
//!   (cohort, lead) pairs.
//! - [`flow`]: `rakam_flow(t, label, anchor_flag, spec)` → the labels of the
//!   user's path from (or to) the anchor event.
//!
//! - [`hll`]: `rakam_hll_sketch`, `rakam_hll_merge` and `rakam_hll_estimate`,
//!   a HyperLogLog whose sketches can be stored and merged later.
//!
//! All are registered in every query session, so they can be called from
//! SQL as well as by the analysis endpoints.

mod arena;
mod event_rows;
pub mod flow;
pub mod funnel;
pub mod hll;
pub mod retention;
mod spec;

use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::SessionContext;

pub use event_rows::Row;
pub use spec::SpecError;

/// Registers every Rakam aggregate function in `context`.
pub fn register_all(context: &SessionContext) {
    for udaf in all() {
        context.register_udaf(udaf);
    }
    for udf in hll::udfs() {
        context.register_udf(udf);
    }
}

pub fn all() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(funnel::FunnelUdaf::new()),
        AggregateUDF::from(retention::RetentionUdaf::new()),
        AggregateUDF::from(flow::FlowUdaf::new()),
        AggregateUDF::from(hll::SketchUdaf::sketch()),
        AggregateUDF::from(hll::SketchUdaf::merge()),
    ]
}
