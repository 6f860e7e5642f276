//! On random event streams (random people, times with ties, collections,
//! properties and time zones) every analysis must agree exactly with the
//! simple reference implementations in `simple/`.

mod common;
mod simple;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use rakam_test_support::{available, Backend};
use serde_json::{json, Map, Value};
use simple::{Event, Filter, Kind, Mode, Range, Unit};

const COLLECTIONS: [&str; 3] = ["a", "b", "c"];
/// Where a case's events fall: from a Friday (`base_ms`), on 60 slots either
/// 2 hours apart (five days, many ties and same-day steps) or 19 hours apart
/// (into mid-February: several weeks, a month boundary, returns after the
/// range, first actions before it); requests ask from the Monday after it
/// for 24 days. One era straddles 1970, where truncating integer division
/// once put a time in the period after its own.
#[derive(Debug, Clone, Copy)]
struct Era {
    base_ms: i64,
    start: &'static str,
    end: &'static str,
}

const ERAS: [Era; 2] = [
    // 2023-12-29T00:00:00Z
    Era {
        base_ms: 1_703_808_000_000,
        start: "2024-01-01",
        end: "2024-01-24",
    },
    // 1969-12-26T00:00:00Z
    Era {
        base_ms: -518_400_000,
        start: "1969-12-29",
        end: "1970-01-21",
    },
];
const SLOTS_MS: [i64; 2] = [2 * 3_600_000, 19 * 3_600_000];

fn event(base_ms: i64, slot_ms: i64) -> impl Strategy<Value = Event> {
    (
        0usize..3,
        0u32..24,
        0i64..60,
        prop::option::of(prop::sample::select(vec!["de", "fr", "us"])),
        0i64..10,
    )
        .prop_map(move |(c, user, slot, country, value)| Event {
            collection: COLLECTIONS[c],
            user: format!("u{user}"),
            t: base_ms + slot * slot_ms,
            country,
            value,
        })
}

/// Random events in a random era, plus one of each collection so every
/// column exists.
fn events() -> impl Strategy<Value = (Era, Vec<Event>)> {
    (
        prop::sample::select(ERAS.to_vec()),
        prop::sample::select(SLOTS_MS.to_vec()),
    )
        .prop_flat_map(|(era, slot_ms)| {
            (
                Just(era),
                prop::collection::vec(event(era.base_ms, slot_ms), 0..160),
            )
        })
        .prop_map(|(era, mut events)| {
            for collection in COLLECTIONS {
                events.push(Event {
                    collection,
                    user: "u0".into(),
                    t: era.base_ms + 3 * 86_400_000,
                    country: Some("de"),
                    value: 5,
                });
            }
            (era, events)
        })
}

fn zone() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![Tz::UTC, Tz::America__New_York, Tz::Asia__Kolkata])
}

fn kind() -> impl Strategy<Value = Kind> {
    (
        prop::sample::select(COLLECTIONS.to_vec()),
        prop::sample::select(vec![
            Filter::All,
            Filter::All,
            Filter::ValueAbove3,
            Filter::CountryDe,
        ]),
    )
}

fn kind_json(kind: &Kind, filter_key: &str) -> Value {
    let mut out = Map::new();
    out.insert("collection".into(), json!(kind.0));
    if let Some(sql) = kind.1.sql() {
        out.insert(filter_key.into(), json!(sql));
    }
    Value::Object(out)
}

/// Every other case runs on PostgreSQL (when a server answers), so each
/// property is checked on both backends' scans.
async fn load(events: &[Event]) -> common::Harness {
    static CASES: AtomicUsize = AtomicUsize::new(0);
    static POSTGRES: OnceLock<bool> = OnceLock::new();
    let on_postgres = CASES.fetch_add(1, Ordering::Relaxed) % 2 == 1
        && *POSTGRES.get_or_init(|| available(Backend::Postgres, "half of the property cases"));
    let harness = if on_postgres {
        common::Harness::on(Backend::Postgres)
            .await
            .expect("PostgreSQL was available a moment ago")
    } else {
        common::Harness::new().await
    };
    for collection in COLLECTIONS {
        let rows = events
            .iter()
            .filter(|e| e.collection == collection)
            .map(|e| {
                let time = DateTime::<Utc>::from_timestamp_millis(e.t).expect("valid test data");
                let mut p = Map::new();
                p.insert(
                    "_time".into(),
                    json!(time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
                );
                p.insert("_user".into(), json!(e.user));
                p.insert("value".into(), json!(e.value));
                if let Some(country) = e.country {
                    p.insert("country".into(), json!(country));
                }
                p
            })
            .collect();
        harness.ingest(collection, rows).await;
    }
    harness
}

fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("valid test data")
        .block_on(future)
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        (None, None) => true,
        _ => false,
    }
}

fn funnel_case() -> impl Strategy<Value = (simple::Funnel, Tz, bool)> {
    (
        prop::collection::vec(kind(), 1..4),
        prop::collection::vec((kind(), 1usize..4, 1usize..4), 0..2),
        prop::option::of(prop::sample::select(vec![1i64, 3, 24])),
        prop::sample::select(vec![Mode::Ordered, Mode::Strict, Mode::Any]),
        any::<bool>(),
        zone(),
        any::<bool>(),
    )
        .prop_map(|(steps, exclusions, hours, mode, by_country, tz, series)| {
            let n = steps.len();
            let exclusions = exclusions
                .into_iter()
                .filter_map(|(k, a, b)| {
                    let (from, to) = (a.min(b), a.max(b).min(n));
                    (from < to).then_some((k, from, to))
                })
                .collect();
            let funnel = simple::Funnel {
                steps,
                exclusions,
                window: hours.map(|h| h * 3_600_000),
                mode,
                by_country,
            };
            (funnel, tz, series && !by_country)
        })
}

fn funnel_request(f: &simple::Funnel, era: Era, tz: Tz, series: bool) -> Value {
    let mode = match f.mode {
        Mode::Ordered => "ordered",
        Mode::Strict => "strict",
        Mode::Any => "any",
    };
    let mut request = json!({
        "steps": f.steps.iter().map(|k| kind_json(k, "filterExpression")).collect::<Vec<_>>(),
        "exclusions": f.exclusions.iter().map(|(k, from, to)| {
            let mut x = kind_json(k, "filterExpression");
            x["fromStep"] = json!(from);
            x["toStep"] = json!(to);
            x
        }).collect::<Vec<_>>(),
        "mode": mode,
        "startDate": era.start, "endDate": era.end, "timezone": tz.name(),
    });
    if let Some(ms) = f.window {
        request["window"] = json!({"value": ms / 3_600_000, "type": "HOUR"});
    }
    if f.by_country {
        request["dimension"] = json!("country");
    }
    if series {
        request["timeSeries"] = json!("DAY");
    }
    request
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn funnels_agree_with_the_reference((era, events) in events(), (funnel, tz, series) in funnel_case()) {
        let request = funnel_request(&funnel, era, tz, series);
        let answer = run(async { load(&events).await.analyze("funnel", request.clone()).await })
            .map_err(|e| TestCaseError::fail(format!("{request}: {e}")))?;
        let range = Range::new(era.start, era.end, tz);
        let attempts = funnel.attempts(&events, &range);
        let n = funnel.steps.len();
        let rows = answer["result"].as_array().cloned().unwrap_or_default();
        if funnel.by_country {
            let mut per_value: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for ((_, country), chain) in &attempts {
                let counts = per_value
                    .entry(country.map_or("(not set)".into(), str::to_string))
                    .or_insert_with(|| vec![0; n]);
                for count in counts.iter_mut().take(chain.len()) {
                    *count += 1;
                }
            }
            let mut values: Vec<(String, Vec<i64>)> = per_value.into_iter().collect();
            values.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then_with(|| a.0.cmp(&b.0)));
            let expected: Vec<Value> = values
                .iter()
                .flat_map(|(label, counts)| {
                    counts.iter().enumerate().map(move |(i, c)| json!([format!("Step {}", i + 1), label, c]))
                })
                .collect();
            prop_assert_eq!(rows, expected, "{}", request);
            return Ok(());
        }
        let expected: Vec<Value> = (1..=n)
            .map(|i| json!([format!("Step {i}"), attempts.values().filter(|c| c.len() >= i).count()]))
            .collect();
        prop_assert_eq!(&rows, &expected, "{}", request);
        for i in 2..=n {
            let seconds: Vec<f64> = attempts
                .values()
                .filter(|c| c.len() >= i)
                .map(|c| (c[i - 1] - c[i - 2]) as f64 / 1000.0)
                .collect();
            let average = (!seconds.is_empty()).then(|| seconds.iter().sum::<f64>() / seconds.len() as f64);
            let step = &answer["steps"][i - 1];
            prop_assert!(close(step["median_seconds_from_previous"].as_f64(), simple::median(seconds)), "{} {}", request, step);
            prop_assert!(close(step["average_seconds_from_previous"].as_f64(), average), "{} {}", request, step);
        }
        if series {
            let mut per_day: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for chain in attempts.values() {
                let day = range.local(chain[0]).date().format("%Y-%m-%d").to_string();
                let counts = per_day.entry(day).or_insert_with(|| vec![0; n]);
                for count in counts.iter_mut().take(chain.len()) {
                    *count += 1;
                }
            }
            let expected: Vec<Value> = per_day.iter().map(|(d, c)| json!({"date": d, "counts": c})).collect();
            prop_assert_eq!(answer["series"].as_array().cloned().unwrap_or_default(), expected, "{}", request);
        }
    }

    #[test]
    fn retention_agrees_with_the_reference(
        (era, events) in events(),
        first in kind(),
        returning in prop::option::of(kind()),
        unit in prop::sample::select(vec![Unit::Day, Unit::Week, Unit::Month]),
        first_time in any::<bool>(),
        periods in 0i64..4,
        by_country in any::<bool>(),
        tz in zone(),
    ) {
        let retention = simple::Retention { first, returning, unit, first_time, periods, by_country };
        let mut request = json!({
            "first_action": kind_json(&retention.first, "filter"),
            "date_unit": match unit { Unit::Day => "DAY", Unit::Week => "WEEK", Unit::Month => "MONTH" },
            "kind": if first_time { "first_time" } else { "recurring" },
            "period": periods,
            "startDate": era.start, "endDate": era.end, "timezone": tz.name(),
        });
        if let Some(k) = &retention.returning {
            request["returning_action"] = kind_json(k, "filter");
        }
        if by_country {
            request["dimension"] = json!("country");
        }
        let answer = run(async { load(&events).await.analyze("retention", request.clone()).await })
            .map_err(|e| TestCaseError::fail(format!("{request}: {e}")))?;
        let expected: Vec<Value> = retention
            .cells(&events, &Range::new(era.start, era.end, tz))
            .into_iter()
            .map(|((key, lead), count)| json!([key, if lead < 0 { Value::Null } else { json!(lead) }, count]))
            .collect();
        prop_assert_eq!(answer["result"].as_array().cloned().unwrap_or_default(), expected, "{}", request);
    }
}

/// An event with its group and segment labels.
type Labelled<'a> = (Option<String>, Option<String>, &'a Event);

#[derive(Debug, Clone)]
enum Axis {
    Column(&'static str),
    Reference(&'static str),
}

impl Axis {
    fn json(&self) -> Value {
        match self {
            Axis::Column(c) => json!({"type": "COLUMN", "value": c}),
            Axis::Reference(r) => json!({"type": "REFERENCE", "value": r}),
        }
    }

    fn label(&self, e: &Event, range: &Range) -> Option<String> {
        match self {
            Axis::Column("_collection") => Some(e.collection.to_string()),
            Axis::Column("_user") => Some(e.user.clone()),
            Axis::Column(_) => e.country.map(str::to_string),
            Axis::Reference(r) => Some(simple::time_label(r, range.local(e.t))),
        }
    }
}

fn axis() -> impl Strategy<Value = Axis> {
    prop::sample::select(vec![
        Axis::Column("_collection"),
        Axis::Column("_user"),
        Axis::Column("country"),
        Axis::Reference("HOUR_OF_DAY"),
        Axis::Reference("DAY_OF_WEEK"),
        Axis::Reference("HOUR"),
        Axis::Reference("DAY"),
        Axis::Reference("WEEK"),
        Axis::Reference("MONTH"),
        Axis::Reference("YEAR"),
        Axis::Reference("DAY_PART"),
        Axis::Reference("MONTH_OF_YEAR"),
    ])
}

fn measure(aggregation: &str, rows: &[&Event]) -> Value {
    let values = rows.iter().map(|e| e.value);
    match aggregation {
        "COUNT" => json!(rows.len()),
        "COUNT_UNIQUE" => json!(rows
            .iter()
            .map(|e| &e.user)
            .collect::<std::collections::BTreeSet<_>>()
            .len()),
        "SUM" => json!(values.sum::<i64>()),
        "MINIMUM" => json!(values.min()),
        "MAXIMUM" => json!(values.max()),
        "AVERAGE" => json!(values.sum::<i64>() as f64 / rows.len() as f64),
        other => panic!("{other}"),
    }
}

/// Keeps the `limit` labels with the largest measure; the rest become "Others".
fn fold(
    labels: Vec<Option<String>>,
    values: BTreeMap<Option<String>, Value>,
    limit: usize,
) -> Option<Vec<Option<String>>> {
    if labels.len() <= limit {
        return None;
    }
    let mut ranked: Vec<(f64, Option<String>)> = labels
        .into_iter()
        .map(|l| (values[&l].as_f64().unwrap_or(f64::NEG_INFINITY), l))
        .collect();
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0).then_with(|| match (&a.1, &b.1) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, _) => std::cmp::Ordering::Greater,
            (_, None) => std::cmp::Ordering::Less,
            (x, y) => x.cmp(y),
        })
    });
    Some(ranked.into_iter().take(limit).map(|(_, l)| l).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn segmentation_agrees_with_the_reference(
        (era, events) in events(),
        collections in prop::sample::subsequence(COLLECTIONS.to_vec(), 1..=3),
        aggregation in prop::sample::select(vec!["COUNT", "COUNT_UNIQUE", "SUM", "MINIMUM", "MAXIMUM", "AVERAGE"]),
        grouping in prop::option::of(axis()),
        segment in prop::option::of(axis()),
        filter in prop::sample::select(vec![Filter::All, Filter::ValueAbove3, Filter::CountryDe]),
        tz in zone(),
        limits in prop::option::of((1usize..4, 1usize..4)),
    ) {
        let column = match aggregation { "COUNT" => None, "COUNT_UNIQUE" => Some("_user"), _ => Some("value") };
        let mut request = json!({
            "collections": collections,
            "measure": {"aggregation": aggregation, "column": column},
            "startDate": era.start, "endDate": era.end, "timezone": tz.name(),
        });
        if let Some(g) = &grouping { request["grouping"] = g.json(); }
        if let Some(s) = &segment { request["segment"] = s.json(); }
        if let Some(sql) = filter.sql() { request["filterExpression"] = json!(sql); }
        if let Some((g, s)) = limits {
            request["groupLimit"] = json!(g);
            request["segmentLimit"] = json!(s);
        }
        let (group_limit, segment_limit) = limits.unwrap_or((15, 20));
        let answer = run(async { load(&events).await.analyze("explore", request.clone()).await })
            .map_err(|e| TestCaseError::fail(format!("{request}: {e}")))?;

        let range = Range::new(era.start, era.end, tz);
        let segment = segment.unwrap_or(Axis::Column("_collection"));
        let rows: Vec<&Event> = events
            .iter()
            .filter(|e| collections.contains(&e.collection) && e.t >= range.start && e.t < range.end && filter.matches(e))
            .collect();
        let labelled: Vec<Labelled> = rows
            .iter()
            .map(|e| (grouping.as_ref().and_then(|g| g.label(e, &range)), segment.label(e, &range), *e))
            .collect();
        let ranked = |axis: Option<&Axis>, pick: fn(&Labelled) -> Option<String>, limit| {
            if !matches!(axis, Some(Axis::Column(_))) {
                return None;
            }
            let mut groups: BTreeMap<Option<String>, Vec<&Event>> = BTreeMap::new();
            for row in &labelled {
                groups.entry(pick(row)).or_default().push(row.2);
            }
            let values = groups.iter().map(|(k, v)| (k.clone(), measure(aggregation, v))).collect();
            fold(groups.keys().cloned().collect(), values, limit)
        };
        let top_groups = ranked(grouping.as_ref(), |r| r.0.clone(), group_limit);
        let top_segments = ranked(Some(&segment), |r| r.1.clone(), segment_limit);
        let others = |label: Option<String>, top: &Option<Vec<Option<String>>>| match top {
            Some(keep) if !keep.contains(&label) => Some("Others".to_string()),
            _ => label,
        };
        let mut cells: BTreeMap<(Option<String>, Option<String>), Vec<&Event>> = BTreeMap::new();
        for (g, s, e) in &labelled {
            cells.entry((others(g.clone(), &top_groups), others(s.clone(), &top_segments))).or_default().push(e);
        }
        let expected: Vec<Value> = cells
            .iter()
            .map(|((g, s), v)| match grouping {
                Some(_) => json!([g, s, measure(aggregation, v)]),
                None => json!([s, measure(aggregation, v)]),
            })
            .collect();
        let actual = answer["result"].as_array().cloned().unwrap_or_default();
        prop_assert_eq!(actual.len(), expected.len(), "{} {:?}", request, actual);
        for (a, e) in actual.iter().zip(&expected) {
            let same = a.as_array().zip(e.as_array()).is_some_and(|(a, e)| {
                a.len() == e.len() && a.iter().zip(e).all(|(x, y)| match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => close(Some(x), Some(y)),
                    _ => x == y,
                })
            });
            prop_assert!(same, "{}: {} != {}", request, a, e);
        }
        prop_assert_eq!(answer["grouped"].as_bool(), Some(top_groups.is_some() || top_segments.is_some()));
    }

    #[test]
    fn flows_agree_with_the_reference(
        (era, events) in events(),
        anchor in kind(),
        next in any::<bool>(),
        depth in 1usize..5,
        window_hours in prop::sample::select(vec![2i64, 6, 48]),
        gap_hours in prop::option::of(prop::sample::select(vec![2i64, 4])),
        tz in zone(),
    ) {
        let flow = simple::Flow {
            anchor,
            next,
            depth,
            window: window_hours * 3_600_000,
            gap: gap_hours.map(|h| h * 3_600_000),
            collections: COLLECTIONS.to_vec(),
        };
        let mut request = json!({
            "depth": depth,
            "window": {"value": window_hours, "type": "HOUR"},
            "startDate": era.start, "endDate": era.end, "timezone": tz.name(),
        });
        request[if next { "startEvent" } else { "endEvent" }] = kind_json(&flow.anchor, "filterExpression");
        if let Some(h) = gap_hours {
            request["sessionGap"] = json!({"value": h, "type": "HOUR"});
        }
        let answer = run(async { load(&events).await.analyze("flow", request.clone()).await })
            .map_err(|e| TestCaseError::fail(format!("{request}: {e}")))?;
        let mut edges: BTreeMap<(usize, &str, &str), i64> = BTreeMap::new();
        let mut nodes: BTreeMap<(usize, &str), (i64, i64)> = BTreeMap::new();
        for path in flow.paths(&events, &Range::new(era.start, era.end, tz)) {
            for step in 1..=depth.min(path.len()) {
                let node = nodes.entry((step, path[step - 1])).or_default();
                node.0 += 1;
                match path.get(step) {
                    Some(target) => *edges.entry((step, path[step - 1], target)).or_default() += 1,
                    None => node.1 += 1,
                }
            }
            if path.len() == depth + 1 {
                nodes.entry((depth + 1, path[depth])).or_default().0 += 1;
            }
        }
        let mut expected: Vec<((usize, &str, &str), i64)> = edges.into_iter().collect();
        expected.sort_by(|a, b| a.0 .0.cmp(&b.0 .0).then(b.1.cmp(&a.1)).then_with(|| a.0.cmp(&b.0)));
        let expected: Vec<Value> = expected.iter().map(|((s, a, b), n)| json!([s, a, b, n])).collect();
        prop_assert_eq!(answer["result"].as_array().cloned().unwrap_or_default(), expected, "{}", request);
        let expected_nodes: Vec<Value> = nodes
            .iter()
            .map(|((step, event), (users, dropoff))| json!({"step": step, "event": event, "users": users, "dropoff": dropoff}))
            .collect();
        prop_assert_eq!(answer["nodes"].as_array().cloned().unwrap_or_default(), expected_nodes, "{}", request);
    }
}
