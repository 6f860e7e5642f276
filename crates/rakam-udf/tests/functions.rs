//! The per-user semantics of Rakam's aggregate functions on hand-made
//! event lists, and the same functions through SQL (grouped, partitioned
//! and merged) on a random table, checked against direct evaluation.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use proptest::prelude::*;
use rakam_udf::flow::{Direction, FlowSpec};
use rakam_udf::funnel::{Exclusion, FunnelMode, FunnelSpec};
use rakam_udf::retention::{CohortKind, RetentionSpec};
use rakam_udf::Row;

fn row(t: i64, a: i64) -> Row {
    Row { t, a, b: 0 }
}

fn funnel(steps: usize, window_ms: i64, mode: FunnelMode) -> FunnelSpec {
    FunnelSpec {
        steps,
        window_ms,
        mode,
        start_from: i64::MIN,
        start_to: i64::MAX,
        exclusions: Vec::new(),
    }
}

#[test]
fn ordered_funnel_takes_the_earliest_next_step_inside_the_window() {
    let spec = funnel(3, 10, FunnelMode::Ordered);
    // step1 at 0, step2 at 4 and 6, step3 at 11 (outside 0+10) and 12.
    let mut rows = vec![row(0, 1), row(6, 2), row(4, 2), row(11, 4), row(12, 4)];
    assert_eq!(spec.evaluate(&mut rows), vec![0, 4]);
    // A later start (step1 at 5) reaches step 3 at 11 via step2 at 6.
    rows.push(row(5, 1));
    assert_eq!(spec.evaluate(&mut rows), vec![5, 6, 11]);
}

#[test]
fn events_of_one_millisecond_never_make_two_steps() {
    let spec = funnel(2, 100, FunnelMode::Ordered);
    let mut rows = vec![row(7, 1), row(7, 2)];
    assert_eq!(spec.evaluate(&mut rows), vec![7]);
    // One event matching both steps is step 1 only, too.
    let mut rows = vec![row(7, 3)];
    assert_eq!(spec.evaluate(&mut rows), vec![7]);
    let mut rows = vec![row(7, 3), row(8, 3)];
    assert_eq!(spec.evaluate(&mut rows), vec![7, 8]);
}

#[test]
fn the_window_is_inclusive_and_starts_inside_the_range_only() {
    let mut spec = funnel(2, 10, FunnelMode::Ordered);
    assert_eq!(spec.evaluate(&mut [row(0, 1), row(10, 2)]), vec![0, 10]);
    spec.start_from = 1;
    assert_eq!(
        spec.evaluate(&mut [row(0, 1), row(10, 2)]),
        Vec::<i64>::new()
    );
    spec.start_to = 5;
    assert_eq!(spec.evaluate(&mut [row(4, 1), row(9, 2)]), vec![4, 9]);
    assert_eq!(
        spec.evaluate(&mut [row(5, 1), row(9, 2)]),
        Vec::<i64>::new()
    );
}

#[test]
fn strict_funnels_stop_at_another_funnel_event() {
    let spec = funnel(3, 100, FunnelMode::Strict);
    // 1, 3 (another step), 2: strict breaks; ordered would not.
    let mut rows = vec![row(0, 1), row(1, 4), row(2, 2), row(3, 4)];
    assert_eq!(spec.evaluate(&mut rows), vec![0]);
    assert_eq!(
        funnel(3, 100, FunnelMode::Ordered).evaluate(&mut rows),
        vec![0, 2, 3]
    );
    // Events of no step (exclusion-only rows, mask 0) do not break it.
    let mut rows = vec![row(0, 1), row(1, 0), row(2, 2), row(3, 4)];
    assert_eq!(spec.evaluate(&mut rows), vec![0, 2, 3]);
}

#[test]
fn any_order_funnels_count_distinct_steps_in_the_window() {
    let spec = funnel(3, 10, FunnelMode::Any);
    let mut rows = vec![row(0, 4), row(3, 4), row(5, 1), row(20, 2)];
    assert_eq!(spec.evaluate(&mut rows), vec![0, 5]);
    let mut rows = vec![row(0, 4), row(5, 1), row(9, 2)];
    assert_eq!(spec.evaluate(&mut rows), vec![0, 5, 9]);
}

#[test]
fn an_exclusion_between_steps_disqualifies_the_attempt() {
    let mut spec = funnel(3, 100, FunnelMode::Ordered);
    spec.exclusions = vec![Exclusion { from: 1, to: 2 }];
    let excluded = Row { t: 5, a: 0, b: 1 };
    // 1 at 0, exclusion at 5, 2 at 10, 3 at 20: the only attempt is out.
    let mut rows = vec![row(0, 1), excluded, row(10, 2), row(20, 4)];
    assert_eq!(spec.evaluate(&mut rows), Vec::<i64>::new());
    // A second attempt after the exclusion counts.
    rows.push(row(6, 1));
    assert_eq!(spec.evaluate(&mut rows), vec![6, 10, 20]);
    // An exclusion at the same millisecond as a step is not between steps.
    let mut rows = vec![row(0, 1), Row { t: 0, a: 0, b: 1 }, row(10, 2)];
    assert_eq!(spec.evaluate(&mut rows), vec![0, 10]);
    // Not reaching `to`: an exclusion anywhere in the window disqualifies.
    let mut rows = vec![row(0, 1), Row { t: 90, a: 0, b: 1 }];
    assert_eq!(spec.evaluate(&mut rows), Vec::<i64>::new());
    let mut rows = vec![row(0, 1), Row { t: 101, a: 0, b: 1 }];
    assert_eq!(spec.evaluate(&mut rows), vec![0]);
}

#[test]
fn specs_round_trip_and_reject_nonsense() {
    let mut spec = funnel(4, 60_000, FunnelMode::Strict);
    spec.start_from = 5;
    spec.start_to = 9;
    spec.exclusions = vec![Exclusion { from: 1, to: 4 }, Exclusion { from: 2, to: 3 }];
    assert_eq!(FunnelSpec::parse(&spec.to_spec_string()).ok(), Some(spec));
    for bad in [
        "steps=0;window=1",
        "steps=2",
        "steps=2;window=-1",
        "steps=2;window=1;mode=sideways",
        "steps=2;window=1;exclude=2-1",
        "steps=2;window=1;exclude=1-3",
        "steps=2;window=1;colour=red",
        "steps",
    ] {
        assert!(FunnelSpec::parse(bad).is_err(), "{bad} was accepted");
    }
    let retention = RetentionSpec {
        kind: CohortKind::Recurring,
        periods: 30,
    };
    assert_eq!(
        RetentionSpec::parse(&retention.to_spec_string()).ok(),
        Some(retention)
    );
    assert!(RetentionSpec::parse("kind=first").is_err());
    let flow = FlowSpec {
        direction: Direction::Previous,
        depth: 3,
        window_ms: 10,
        session_gap_ms: Some(4),
    };
    assert_eq!(FlowSpec::parse(&flow.to_spec_string()).ok(), Some(flow));
    assert!(FlowSpec::parse("depth=21;window=1").is_err());
}

fn unpacked(values: Vec<i64>) -> Vec<(i64, i64)> {
    values.into_iter().map(RetentionSpec::unpack).collect()
}

#[test]
fn retention_first_time_and_recurring_cohorts() {
    // periods: first action (1) in 10 and 12, returns (2) in 11, 12, 14.
    let rows = [row(10, 1), row(11, 2), row(12, 3), row(14, 2), row(14, 2)];
    let first = RetentionSpec {
        kind: CohortKind::FirstTime,
        periods: 3,
    };
    assert_eq!(
        unpacked(first.evaluate(&mut rows.clone())),
        vec![(10, -1), (10, 0), (10, 1)]
    );
    let recurring = RetentionSpec {
        kind: CohortKind::Recurring,
        periods: 3,
    };
    assert_eq!(
        unpacked(recurring.evaluate(&mut rows.clone())),
        vec![(10, -1), (10, 0), (10, 1), (12, -1), (12, 1)]
    );
    // A first action before the range removes a first-time user.
    let mut before = rows.to_vec();
    before.push(row(3, 4));
    assert!(first.evaluate(&mut before).is_empty());
    assert_eq!(RetentionSpec::unpack(RetentionSpec::pack(-5, 7)), (-5, 7));
}

#[test]
fn flows_follow_the_first_anchor_or_lead_to_the_last() {
    let anchor = |t, a| Row { t, a, b: 1 };
    let rows = [
        row(0, 5),
        anchor(10, 1),
        row(12, 2),
        row(12, 3),
        anchor(30, 1),
        row(31, 4),
    ];
    let next = FlowSpec {
        direction: Direction::Next,
        depth: 2,
        window_ms: 100,
        session_gap_ms: None,
    };
    assert_eq!(next.evaluate(&mut rows.clone()), vec![1, 2, 3]);
    let gap = FlowSpec {
        session_gap_ms: Some(5),
        depth: 10,
        ..next.clone()
    };
    assert_eq!(gap.evaluate(&mut rows.clone()), vec![1, 2, 3]);
    let previous = FlowSpec {
        direction: Direction::Previous,
        depth: 10,
        window_ms: 25,
        session_gap_ms: None,
    };
    assert_eq!(previous.evaluate(&mut rows.clone()), vec![1, 3, 2, 1]);
    assert!(next.evaluate(&mut [row(1, 2)]).is_empty());
}

/// A random table of (user, t, step mask) and the same function through
/// SQL on 4 partitions of small batches, which exercises partial
/// aggregation, state serialisation and merging.
fn table(rows: &[(i64, i64, i64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("u", DataType::Int64, false),
        Field::new("t", DataType::Int64, false),
        Field::new("m", DataType::Int64, false),
        Field::new("x", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let column =
        |f: fn(&(i64, i64, i64)) -> i64| Arc::new(Int64Array::from_iter_values(rows.iter().map(f)));
    RecordBatch::try_new(
        schema,
        vec![
            column(|r| r.0),
            column(|r| r.1),
            column(|r| r.2),
            column(|_| 0),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| format!("u{}", r.0)),
            )),
        ],
    )
    .expect("batch")
}

/// A session over `rows` in four partitions: partial states per partition
/// merged, or (with `skip_partial`) every row turned into its own state.
fn session(rows: &[(i64, i64, i64)], skip_partial: bool) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(4)
        .with_batch_size(8);
    if skip_partial {
        let execution = &mut config.options_mut().execution;
        execution.skip_partial_aggregation_probe_rows_threshold = 1;
        execution.skip_partial_aggregation_probe_ratio_threshold = 0.0;
    }
    let ctx = SessionContext::new_with_config(config);
    rakam_udf::register_all(&ctx);
    let batch = table(rows);
    let parts: Vec<Vec<RecordBatch>> = (0..4)
        .map(|p| {
            let len = batch.num_rows();
            let (from, to) = (len * p / 4, len * (p + 1) / 4);
            vec![batch.slice(from, to - from)]
        })
        .collect();
    let mem = MemTable::try_new(batch.schema(), parts).expect("table");
    ctx.register_table("events", Arc::new(mem))
        .expect("register");
    ctx
}

async fn sql_funnels(
    rows: &[(i64, i64, i64)],
    spec: &str,
    skip_partial: bool,
) -> BTreeMap<i64, Vec<i64>> {
    let ctx = session(rows, skip_partial);
    let sql = format!("SELECT u, rakam_funnel(t, m, x, '{spec}') FROM events GROUP BY u");
    let batches = ctx
        .sql(&sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let mut out = BTreeMap::new();
    for batch in batches {
        let users = batch.column(0).as_primitive::<Int64Type>();
        let lists = batch.column(1).as_list::<i32>();
        for i in 0..batch.num_rows() {
            let values = lists.value(i);
            let values = values.as_primitive::<Int64Type>();
            out.insert(
                users.value(i),
                (0..values.len()).map(|j| values.value(j)).collect(),
            );
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn sql_aggregation_equals_direct_evaluation(
        rows in prop::collection::vec((0i64..6, 0i64..40, 0i64..8), 0..120),
        mode in prop::sample::select(vec!["ordered", "strict", "any"]),
        skip_partial in any::<bool>(),
    ) {
        let spec_text = format!("steps=3;window=15;mode={mode}");
        let spec = FunnelSpec::parse(&spec_text).expect("spec");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let actual = runtime.block_on(sql_funnels(&rows, &spec_text, skip_partial));
        let mut expected = BTreeMap::new();
        for user in rows.iter().map(|r| r.0).collect::<std::collections::BTreeSet<_>>() {
            let mut mine: Vec<Row> = rows.iter().filter(|r| r.0 == user).map(|r| row(r.1, r.2)).collect();
            expected.insert(user, spec.evaluate(&mut mine));
        }
        prop_assert_eq!(actual, expected);
    }
}

/// The proptest above covers `convert_to_state` only if DataFusion really
/// skips partial aggregation when told to.
#[tokio::test]
async fn skipping_partial_aggregation_really_converts_rows_to_states() {
    let rows: Vec<(i64, i64, i64)> = (0..64).map(|i| (i, i, 1)).collect();
    let ctx = session(&rows, true);
    let sql = "EXPLAIN ANALYZE SELECT u, rakam_funnel(t, m, x, 'steps=1;window=1') FROM events GROUP BY u";
    let batches = ctx
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    let skipped = text
        .split("skipped_aggregation_rows=")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum::<u64>();
    assert!(skipped > 0, "no rows skipped partial aggregation:\n{text}");
}

#[tokio::test]
async fn a_spec_that_is_not_a_constant_is_an_error() {
    let ctx = SessionContext::new();
    rakam_udf::register_all(&ctx);
    let batch = table(&[(1, 1, 1)]);
    let mem = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("table");
    ctx.register_table("events", Arc::new(mem))
        .expect("register");
    for sql in [
        "SELECT rakam_funnel(t, m, x, name) FROM events",
        "SELECT rakam_funnel(t, m, x, 'steps=0;window=1') FROM events",
    ] {
        let result = match ctx.sql(sql).await {
            Ok(frame) => frame.collect().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(result.is_err(), "{sql} ran");
    }
    let ok = ctx
        .sql("SELECT rakam_funnel(t, m, x, 'steps=1;window=1') AS s FROM events")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    assert_eq!(ok[0].column(0).as_list::<i32>().value(0).len(), 1);
    assert!(!ok[0].column(0).is_null(0));
}
