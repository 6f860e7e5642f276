//! The typed decoder against the general path on random events: whenever
//! it takes a request, the general path would have stored exactly the same
//! rows, changed no schema and kept nothing in `_unmapped`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::new_null_array;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use rakam_model::{CollectionSchema, Column, FieldType};
use rakam_store_api::{ProjectId, ProjectInfo, ProjectSnapshot};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{decode_ndjson_typed, Decline};
use crate::build::build_batch;
use crate::pipeline::{plan_columns, prepare_all};
use crate::prepare::PreparedEvent;
use crate::user_column::settle_user_column;
use crate::{decode_ndjson, IngestLimits, RequestContext};

const SERVER_TIME: i64 = 1_750_000_000_000;

fn column(name: &str, field_type: FieldType) -> Column {
    Column {
        name: name.into(),
        field_type,
    }
}

fn project() -> ProjectSnapshot {
    let pageview = CollectionSchema {
        columns: vec![
            column("_user", FieldType::String),
            column("s", FieldType::String),
            column("n", FieldType::Long),
            column("d", FieldType::Double),
            column("b", FieldType::Boolean),
            column("day", FieldType::Date),
            column("ts", FieldType::Timestamp),
            column("tags", FieldType::Array(Box::new(FieldType::String))),
            column("$browser", FieldType::String),
            column("page_url", FieldType::String),
        ],
    };
    let signup = CollectionSchema {
        columns: vec![
            column("_user", FieldType::String),
            column("n", FieldType::Double),
            column("s", FieldType::String),
        ],
    };
    ProjectSnapshot {
        project: ProjectInfo {
            name: "p".into(),
            id: ProjectId::new("p"),
            created_at_ms: 0,
        },
        version: 3,
        collections: [
            ("pageview".to_string(), Arc::new(pageview)),
            ("signup".to_string(), Arc::new(signup)),
        ]
        .into_iter()
        .collect(),
    }
}

fn limits() -> IngestLimits {
    IngestLimits {
        max_string_bytes: 64,
        max_properties_per_event: 12,
        max_event_bytes: 2_000,
        max_batch_events: 100,
        ..IngestLimits::default()
    }
}

/// What the general path stores for a body, or why the typed decoder must
/// not take it.
fn general(
    body: &[u8],
    project: &ProjectSnapshot,
    limits: &IngestLimits,
) -> Result<Vec<(String, RecordBatch)>, &'static str> {
    let inputs = decode_ndjson(body, Some("pageview"), limits).map_err(|_| "refused")?;
    general_of(inputs, project, limits)
}

pub(super) fn general_of(
    inputs: Vec<crate::EventInput>,
    project: &ProjectSnapshot,
    limits: &IngestLimits,
) -> Result<Vec<(String, RecordBatch)>, &'static str> {
    let prepared = prepare_all(
        inputs.into_iter().map(Ok).collect(),
        SERVER_TIME,
        limits,
        &RequestContext::default(),
        &[],
    );
    let mut by_collection: BTreeMap<String, Vec<PreparedEvent>> = BTreeMap::new();
    for event in prepared {
        let event = event.map_err(|_| "refused")?;
        by_collection
            .entry(event.collection.clone())
            .or_default()
            .push(event);
    }
    let mut batches = Vec::new();
    for (collection, events) in by_collection {
        let schema = project.schema(&collection).ok_or("new collection")?;
        let mut requested = plan_columns(Some(schema), &events);
        settle_user_column(project, Some(schema), &mut requested);
        if !requested.is_empty() {
            return Err("evolves the schema");
        }
        let built = build_batch(schema, events, SERVER_TIME).map_err(|_| "refused")?;
        if built.unmapped_rows > 0 {
            return Err("keeps values in _unmapped");
        }
        batches.push((collection, built.batch));
    }
    Ok(batches)
}

/// Raw JSON of values that fit their column as they are.
fn fitting(rng: &mut StdRng, name: &str) -> String {
    let pick = |rng: &mut StdRng, options: &[&str]| {
        options[rng.random_range(0..options.len())].to_string()
    };
    if rng.random_bool(0.1) {
        return "null".into();
    }
    match name {
        "s" | "_user" | "$browser" | "page_url" => pick(
            rng,
            &[
                "\"abc\"",
                "\"a\\\"b\"",
                "\"\\u00e9t\\u00e9 \\ud83d\\ude00\"",
                "\"\"",
                "\"line\\nbreak\"",
                "\"caf\u{e9}\"",
                "12",
                "-3",
                "true",
                "false",
            ],
        ),
        "n" => pick(
            rng,
            &["0", "42", "-7", "9007199254740993", "1.0", "-2.0", "1e3"],
        ),
        "d" => pick(
            rng,
            &[
                "1.5",
                "-0.25",
                "3",
                "1e10",
                "0.1",
                "2.2250738585072014e-308",
                "-9007199254740992",
            ],
        ),
        "b" => pick(rng, &["true", "false"]),
        "day" => pick(rng, &["\"2024-01-02\"", "\"1969-12-31\""]),
        "ts" => pick(
            rng,
            &[
                "\"2024-01-02T03:04:05Z\"",
                "1700000000000",
                "\"2024-01-02 03:04:05\"",
                "\"2024-01-02T03:04:05.123+02:00\"",
            ],
        ),
        _ => "null".into(),
    }
}

/// Raw JSON of values that need the general path's other rules.
const WILD_VALUES: &[&str] = &[
    "{\"a\":1}",
    "{}",
    "[1,2]",
    "[\"x\"]",
    "[]",
    "18446744073709551615",
    "123456789012345678901234",
    "-9223372036854775809",
    "1e19",
    "-0",
    "-0.0",
    "0.0",
    "1e300",
    "2.5",
    "\"not a date\"",
    "\"12\"",
    "1.5",
    "true",
    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
    "\"9999-12-31T23:59:59Z\"",
    "-62135596800001",
    "253402300799999",
];

const WILD_NAMES: &[&str] = &[
    "PageUrl",
    "new_field",
    "_ip",
    "_server_time",
    "_unmapped",
    "a b",
    "",
    "\u{e9}",
    "_time",
    "N",
    "tags",
];

const TIMES: &[&str] = &[
    "1700000000000",
    "\"2024-01-02T03:04:05Z\"",
    "\"1700000000000\"",
    "1.7e12",
    "1700000000000.6",
    "null",
    "true",
    "1e300",
    "\"soon\"",
    "-62135596800001",
    "18446744073709551615",
    "\" 42 \"",
];

fn event(rng: &mut StdRng, wild: f64) -> String {
    let columns = [
        "s", "n", "d", "b", "day", "ts", "_user", "$browser", "page_url",
    ];
    let mut fields = Vec::new();
    for _ in 0..rng.random_range(0..6) {
        let name = if rng.random_bool(wild / 2.0) {
            WILD_NAMES[rng.random_range(0..WILD_NAMES.len())]
        } else {
            columns[rng.random_range(0..columns.len())]
        };
        let repeated = fields.iter().any(|field: &String| {
            field.starts_with(&format!("{}:", serde_json::to_string(name).expect("name")))
        });
        if repeated && wild == 0.0 {
            continue;
        }
        let value = if rng.random_bool(wild) {
            WILD_VALUES[rng.random_range(0..WILD_VALUES.len())].to_string()
        } else {
            fitting(rng, name)
        };
        fields.push(format!(
            "{}:{value}",
            serde_json::to_string(name).expect("name")
        ));
    }
    if rng.random_bool(0.5) {
        fields.push(format!(
            "\"_time\":{}",
            TIMES[rng.random_range(0..TIMES.len())]
        ));
    }
    let properties = format!("{{{}}}", fields.join(","));
    match rng.random_range(0..10) {
        0..=3 => properties,
        4..=6 => format!("{{\"collection\":\"pageview\",\"properties\":{properties}}}"),
        7 => format!("{{\"properties\":{properties},\"collection\":\"PageView\"}}"),
        8 => {
            let collection = ["signup", "newcoll", "_all", "bad name\u{1}"][rng.random_range(0..4)];
            format!(
                "{{\"collection\":{},\"properties\":{properties}}}",
                serde_json::to_string(collection).expect("name")
            )
        }
        _ => {
            let api = ["null", "{\"upload_time\":1}", "5"][rng.random_range(0..3)];
            format!("{{\"collection\":\"pageview\",\"api\":{api},\"properties\":{properties}}}")
        }
    }
}

fn body(rng: &mut StdRng, wild: f64) -> String {
    (0..rng.random_range(1..5))
        .map(|_| event(rng, wild))
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(body: &str, project: &ProjectSnapshot, limits: &IngestLimits) -> bool {
    let typed = decode_ndjson_typed(
        body.as_bytes(),
        Some("pageview"),
        project,
        limits,
        SERVER_TIME,
    );
    let Ok(typed) = typed else {
        return false;
    };
    match general(body.as_bytes(), project, limits) {
        Ok(expected) => assert_eq!(typed.batches, expected, "{body}"),
        Err(why) => panic!("the typed decoder took a body whose general path {why}:\n{body}"),
    }
    true
}

#[test]
fn the_typed_decoder_stores_what_the_general_path_would() {
    let (project, limits) = (project(), limits());
    let mut rng = StdRng::seed_from_u64(13);
    let mut taken = 0;
    let rounds = 20_000;
    for _ in 0..rounds {
        taken += usize::from(check(&body(&mut rng, 0.15), &project, &limits));
    }
    // Not vacuous: a good share of the random bodies took the typed path.
    assert!(
        taken > rounds / 10,
        "typed decoder took {taken} of {rounds}"
    );
}

/// Whether a body made with `wild` 0 has only events that fit.
fn fits(body: &str) -> bool {
    let times_ok = !TIMES[3..]
        .iter()
        .any(|bad| body.contains(&format!("\"_time\":{bad}")));
    // `signup` has other columns than the fields made for `pageview`.
    let no_other_collection = ["newcoll", "\"_all\"", "bad name", "signup"]
        .iter()
        .all(|other| !body.contains(other));
    let no_api = !body.contains("\"api\":{") && !body.contains("\"api\":5");
    times_ok && no_other_collection && no_api
}

#[test]
fn fitting_events_always_take_the_typed_path() {
    let (project, limits) = (project(), limits());
    let mut rng = StdRng::seed_from_u64(17);
    let mut checked = 0;
    for _ in 0..2_000 {
        let body = body(&mut rng, 0.0);
        if fits(&body) {
            assert!(check(&body, &project, &limits), "declined: {body}");
            checked += 1;
        }
    }
    assert!(checked > 500, "{checked}");
}

/// Each collection's rows in one batch of all its columns (absent columns
/// null), so batches cut differently compare by their rows.
fn rows_by_collection(
    batches: &[(String, RecordBatch)],
    project: &ProjectSnapshot,
) -> BTreeMap<String, RecordBatch> {
    let mut grouped: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    for (collection, batch) in batches {
        let schema = project
            .schema(collection)
            .expect("collection")
            .arrow_schema();
        let columns = schema
            .fields()
            .iter()
            .map(|field| match batch.column_by_name(field.name()) {
                Some(column) => column.clone(),
                None => new_null_array(field.data_type(), batch.num_rows()),
            })
            .collect();
        let aligned = RecordBatch::try_new(schema, columns).expect("aligned");
        grouped.entry(collection.clone()).or_default().push(aligned);
    }
    grouped
        .into_iter()
        .map(|(collection, batches)| {
            let schema = batches[0].schema();
            (
                collection,
                concat_batches(&schema, &batches).expect("concat"),
            )
        })
        .collect()
}

#[test]
fn large_bodies_decoded_in_parallel_store_the_same_rows() {
    let project = project();
    let limits = IngestLimits {
        max_batch_events: 100_000,
        ..limits()
    };
    let mut rng = StdRng::seed_from_u64(19);
    let mut lines = Vec::new();
    while lines.len() < 12_000 {
        let line = event(&mut rng, 0.0);
        if fits(&line) {
            lines.push(line);
        }
    }
    let body = lines.join("\n");
    let typed = decode_ndjson_typed(
        body.as_bytes(),
        Some("pageview"),
        &project,
        &limits,
        SERVER_TIME,
    )
    .expect("typed");
    assert_eq!(typed.events, lines.len());
    let expected = general(body.as_bytes(), &project, &limits).expect("general");
    assert_eq!(
        rows_by_collection(&typed.batches, &project),
        rows_by_collection(&expected, &project)
    );
}

#[test]
fn odd_input_is_declined_without_harm() {
    let (project, limits) = (project(), limits());
    let decline = |body: &[u8]| {
        decode_ndjson_typed(body, Some("pageview"), &project, &limits, SERVER_TIME)
            .expect_err("declined")
    };
    let deep = format!("{{\"s\":{}{}}}", "[".repeat(500_000), "]".repeat(500_000));
    assert_eq!(decline(deep.as_bytes()), Decline::Limit);
    let unlimited = IngestLimits::default();
    let decline_unlimited = |body: &[u8]| {
        decode_ndjson_typed(body, Some("pageview"), &project, &unlimited, SERVER_TIME)
            .expect_err("declined")
    };
    // Deep nesting stops at its first level: no recursion, no stack.
    for deep in [deep.clone(), format!("{{\"s\":{}", "[".repeat(900_000))] {
        let project = project.clone();
        let result = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                decode_ndjson_typed(
                    deep.as_bytes(),
                    Some("pageview"),
                    &project,
                    &IngestLimits::default(),
                    SERVER_TIME,
                )
                .expect_err("declined")
            })
            .expect("thread")
            .join()
            .expect("no overflow");
        assert!(
            matches!(result, Decline::Value | Decline::Malformed),
            "{result:?}"
        );
    }
    // Text the general path refuses is never skipped unchecked.
    for refused in [
        &b"{\"s\":\"x\",\"api\":[\"\xff\"]}"[..],
        b"{\"s\":\"x\",\"api\":[\"\\uZZZZ\",1e999]}",
        b"{\"collection\":\"pageview\",\"properties\":{\"s\":\"x\"},\"meta\":[[[[1]]]]}",
    ] {
        decline_unlimited(refused);
    }
    // Numbers of hundreds of digits, which the parser rounds wrongly.
    let long_mantissa = format!("{{\"n\":1{}e-10000}}", "0".repeat(1010));
    assert_eq!(decline_unlimited(long_mantissa.as_bytes()), Decline::Value);
    assert_eq!(decline(b"{\"d\":-0}"), Decline::Value);
    assert_eq!(decline(b"{\"d\":-0.0}"), Decline::Value);
    assert!(check("{\"d\":0.0}", &project, &limits));
    assert!(check("{\"n\":-0}", &project, &limits));
    assert_eq!(decline(b"{\"s\":\"\xff\"}"), Decline::Malformed);
    assert_eq!(decline(b"{\"s\":\"a\"} trailing"), Decline::Malformed);
    assert_eq!(decline(b"[{\"s\":\"a\"}]"), Decline::Format);
    assert_eq!(decline(b"{\"s\":\"a\",\"s\":\"b\"}"), Decline::Duplicate);
    assert_eq!(decline(b"{\"new\":1}"), Decline::Field);
    assert_eq!(decline(b"{\"n\":1.5}"), Decline::Value);
    assert!(check("{\"n\":1}\n\r\n{\"s\":\"x\"}\r", &project, &limits));
}

#[test]
fn a_large_body_reports_the_reason_of_the_part_that_declined() {
    let project = project();
    let limits = IngestLimits {
        max_batch_events: 100_000,
        ..limits()
    };
    let mut lines = vec!["{\"s\":\"abc\",\"n\":1}"; 12_000];
    // The first line of a later part: the parts before it stop early.
    lines[6_000] = "{\"s\":\"abc\",\"new_field\":1}";
    let body = lines.join("\n");
    let decline = decode_ndjson_typed(
        body.as_bytes(),
        Some("pageview"),
        &project,
        &limits,
        SERVER_TIME,
    )
    .expect_err("declined");
    assert_eq!(decline, Decline::Field);
}

#[path = "differential_batch.rs"]
mod batch;
