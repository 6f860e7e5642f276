//! Continuous queries (`/continuous-query/*`, `continuous.<name>` in SQL)
//! through the real binary.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{master, read, Keys, TestServer};

fn pageviews(server: &TestServer, keys: &Keys, events: &[(&str, i64)]) {
    let events = events
        .iter()
        .map(|(url, n)| {
            json!({"collection": "pageview", "properties": {"url": url, "n": n, "_user": format!("u{n}")}})
        })
        .collect();
    let response = server.batch(keys, events);
    assert_eq!(response.status, 200, "{}", response.body);
}

fn create(server: &TestServer, keys: &Keys, name: &str, query: &str, replay: bool) {
    let response = master(
        server,
        keys,
        "/continuous-query/create",
        json!({"continuous_query": {"table_name": name, "name": name, "query": query}, "replay": replay}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
}

/// Rows with numbers as f64 (integers come back as either on some paths).
fn rows(server: &TestServer, keys: &Keys, sql: &str) -> Vec<Vec<Value>> {
    server
        .query(keys, sql)
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|v| v.as_f64().map_or(v, |f| json!(f)))
                .collect()
        })
        .collect()
}

/// Equal, numbers within a relative 1e-9 (PostgreSQL computes an average
/// in NUMERIC, DataFusion in DOUBLE).
fn assert_same(left: &[Vec<Value>], right: &[Vec<Value>]) {
    let same = left.len() == right.len()
        && left.iter().zip(right).all(|(a, b)| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| match (x.as_f64(), y.as_f64()) {
                        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                        _ => x == y,
                    })
        });
    assert!(same, "{left:?} != {right:?}");
}

const BY_URL: &str = "SELECT url, count(*) AS hits, sum(n) AS total, max(n) AS peak, avg(n) AS mean FROM pageview GROUP BY url";
const READ: &str = "SELECT url, hits, total, peak, mean FROM continuous.by_url ORDER BY url";
const SCRATCH: &str = "SELECT url, count(*) AS hits, sum(n) AS total, max(n) AS peak, avg(n) AS mean FROM pageview GROUP BY url ORDER BY url";

#[test]
fn continuous_queries_are_created_read_tested_and_deleted() {
    let server = TestServer::start();
    let keys = server.create_project("continuous");
    pageviews(&server, &keys, &[("/a", 1), ("/a", 2), ("/b", 3)]);
    let body = json!({"continuous_query": {"table_name": "by_url", "name": "By page", "query": BY_URL, "partition_keys": ["url"]}, "replay": true});
    assert_eq!(
        read(&server, &keys, "/continuous-query/create", body.clone()).status,
        403,
        "creating takes the master key"
    );
    let created = master(&server, &keys, "/continuous-query/create", body.clone());
    assert_eq!(created.status, 200, "{}", created.body);
    let again = master(&server, &keys, "/continuous-query/create", body);
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(again.json()["error_code"], 3011);

    // Current at once: every acknowledged event is in the answer.
    assert_same(&rows(&server, &keys, READ), &rows(&server, &keys, SCRATCH));
    pageviews(&server, &keys, &[("/b", 10), ("/c", 4)]);
    assert_same(&rows(&server, &keys, READ), &rows(&server, &keys, SCRATCH));
    assert_eq!(rows(&server, &keys, READ).len(), 3);

    let listed = read(&server, &keys, "/continuous-query/list", json!({})).json();
    assert_eq!(listed[0]["table_name"], "by_url", "{listed}");
    assert_eq!(listed[0]["name"], "By page");
    assert_eq!(listed[0]["partition_keys"], json!(["url"]));
    assert_eq!(listed[0]["replay"], true);
    let views = read(&server, &keys, "/materialized-view/list", json!({})).json();
    assert_eq!(
        views,
        json!([]),
        "a continuous query is not a materialized view"
    );
    let got = read(
        &server,
        &keys,
        "/continuous-query/get",
        json!({"table_name": "by_url"}),
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["query"], BY_URL);
    let schema = read(
        &server,
        &keys,
        "/continuous-query/schema",
        json!({"names": ["by_url"]}),
    )
    .json();
    let fields: Vec<&str> = schema[0]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(fields, ["url", "hits", "total", "peak", "mean"]);
    // The schema (from the partials' columns, rows unread) is what a query
    // of the result returns.
    let metadata = read(
        &server,
        &keys,
        "/query/metadata",
        json!({"query": "SELECT * FROM continuous.by_url"}),
    )
    .json();
    assert_eq!(schema[0]["fields"], metadata, "{metadata}");

    let tested = read(
        &server,
        &keys,
        "/continuous-query/test",
        json!({"query": "SELECT count(*) FROM pageview"}),
    );
    assert_eq!((tested.status, tested.body.as_str()), (200, "true"));
    let refused = read(
        &server,
        &keys,
        "/continuous-query/test",
        json!({"query": "SELECT count(DISTINCT url) FROM pageview"}),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["error_code"], 4010);
    assert!(
        refused.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("approx_distinct")),
        "{}",
        refused.body
    );

    let deleted = master(
        &server,
        &keys,
        "/continuous-query/delete",
        json!({"table_name": "by_url"}),
    );
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let gone = read(
        &server,
        &keys,
        "/continuous-query/get",
        json!({"table_name": "by_url"}),
    );
    assert_eq!(gone.status, 404, "{}", gone.body);
    assert_eq!(gone.json()["error_code"], 3010);
    let query = server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": READ}),
    );
    assert!(query.status >= 400, "{}", query.body);
}

#[test]
fn approximate_distinct_counts_are_maintained() {
    let server = TestServer::start();
    let keys = server.create_project("distinct");
    let first: Vec<(&str, i64)> = (0..40).map(|n| ("/a", n)).collect();
    pageviews(&server, &keys, &first);
    create(
        &server,
        &keys,
        "people",
        "SELECT url, approx_distinct(_user) AS people FROM pageview GROUP BY url",
        true,
    );
    let second: Vec<(&str, i64)> = (20..90).map(|n| ("/a", n)).collect();
    pageviews(&server, &keys, &second);
    let read = rows(&server, &keys, "SELECT people FROM continuous.people");
    let estimate = read[0][0].as_f64().expect("a number");
    assert!((estimate - 90.0).abs() <= 2.0, "{estimate} people, not 90");
}

#[test]
fn continuous_queries_count_every_event_once_across_crashes() {
    let mut server = TestServer::start();
    let keys = server.create_project("crashing");
    pageviews(&server, &keys, &[("/p0", 0)]);
    create(&server, &keys, "by_url", BY_URL, true);
    let urls = ["/p0", "/p1", "/p2"];
    for round in 0..10_i64 {
        let events: Vec<(&str, i64)> = (0..=round)
            .map(|i| (urls[(i % 3) as usize], round * 10 + i))
            .collect();
        pageviews(&server, &keys, &events);
        // Refreshes run in the background every few seconds: crashes land
        // between acknowledgements and refresh commits.
        std::thread::sleep(Duration::from_millis(700));
        if round == 4 || round == 8 {
            server.crash_and_restart();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = read(
            &server,
            &keys,
            "/continuous-query/get",
            json!({"table_name": "by_url"}),
        )
        .json();
        if got["refreshes"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never refreshed: {got}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_same(&rows(&server, &keys, READ), &rows(&server, &keys, SCRATCH));
    assert_eq!(server.count(&keys, "SELECT count(*) FROM pageview"), 56);
}

#[test]
fn realtime_reports_count_by_slide_and_dimension() {
    let server = TestServer::start();
    let keys = server.create_project("realtime");
    pageviews(&server, &keys, &[("/a", 1)]);
    let report = json!({
        "name": "Live pages", "table_name": "live", "collections": ["pageview"],
        "measures": [{"column": "n", "aggregation": "COUNT"},
                     {"column": "n", "aggregation": "SUM"},
                     {"column": "_user", "aggregation": "APPROXIMATE_UNIQUE"}],
        "dimensions": ["url"],
    });
    let created = master(&server, &keys, "/realtime/create", report.clone());
    assert_eq!(created.status, 200, "{}", created.body);
    // Reports count what arrives after their creation.
    std::thread::sleep(Duration::from_millis(20));
    pageviews(&server, &keys, &[("/a", 2), ("/a", 3), ("/b", 4)]);
    let get = |body: Value| {
        let response = read(&server, &keys, "/realtime/get", body);
        assert_eq!(response.status, 200, "{}", response.body);
        response.json()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let range = |measure: Value, aggregate: bool| {
        json!({"table_name": "live", "measure": measure, "dimensions": ["url"],
               "aggregate": aggregate, "date_start": now - 600, "date_end": now + 600})
    };
    let counted = get(range(json!({"column": "n", "aggregation": "COUNT"}), true));
    assert_eq!(counted["slideInterval"], 10);
    assert_eq!(
        counted["result"],
        json!([["/a", 2], ["/b", 1]]),
        "{counted}"
    );
    let summed = get(range(json!({"column": "n", "aggregation": "SUM"}), true));
    assert_eq!(summed["result"], json!([["/a", 5], ["/b", 4]]), "{summed}");
    let people = get(range(
        json!({"column": "_user", "aggregation": "APPROXIMATE_UNIQUE"}),
        true,
    ));
    assert_eq!(people["result"], json!([["/a", 2], ["/b", 1]]), "{people}");
    // Per slide: [slide start (epoch s), url, value], adding up to the same.
    let slides = get(range(json!({"column": "n", "aggregation": "COUNT"}), false));
    let rows = slides["result"].as_array().expect("rows");
    assert!(
        rows.iter().all(|r| r[0].as_i64().expect("time") % 10 == 0),
        "{slides}"
    );
    let total: i64 = rows.iter().map(|r| r[2].as_i64().expect("count")).sum();
    assert_eq!(total, 3, "{slides}");
    // Rakam's default window: the two minutes before the last full slide.
    let window =
        get(json!({"table_name": "live", "measure": {"column": "n", "aggregation": "COUNT"}}));
    assert_eq!(
        window["end"].as_i64().expect("end") - window["start"].as_i64().expect("start"),
        120
    );

    let listed = read(&server, &keys, "/realtime/list", json!({})).json();
    assert_eq!(listed[0]["table_name"], "live", "{listed}");
    assert_eq!(listed[0]["measures"], report["measures"]);
    for (body, why) in [
        (
            json!({"table_name": "live", "measure": {"column": "n", "aggregation": "MAXIMUM"}}),
            "a measure the report does not have",
        ),
        (
            json!({"table_name": "live", "measure": {"column": "n", "aggregation": "COUNT"}, "dimensions": ["country"]}),
            "a dimension the report does not have",
        ),
    ] {
        let response = read(&server, &keys, "/realtime/get", body);
        assert_eq!(response.status, 400, "{why}: {}", response.body);
    }
    let bad = master(
        &server,
        &keys,
        "/realtime/create",
        json!({"name": "x", "table_name": "x", "collections": ["pageview"],
               "measures": [{"column": "url", "aggregation": "COUNT"}], "dimensions": ["url"]}),
    );
    assert_eq!(
        bad.status, 400,
        "a column both measured and a dimension: {}",
        bad.body
    );
    let deleted = master(
        &server,
        &keys,
        "/realtime/delete",
        json!({"table_name": "live"}),
    );
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        read(&server, &keys, "/realtime/list", json!({})).json(),
        json!([])
    );
    let gone = read(
        &server,
        &keys,
        "/realtime/get",
        json!({"table_name": "live", "measure": {"column": "n", "aggregation": "COUNT"}}),
    );
    assert_eq!(gone.status, 404, "{}", gone.body);
}

/// A continuous query of a project that received nothing since its last
/// refresh is not refreshed again (every 5 s for nothing); one event
/// brings the refreshes back.
#[test]
fn idle_continuous_queries_are_not_refreshed() {
    let server = TestServer::start();
    let keys = server.create_project("idle");
    pageviews(&server, &keys, &[("/a", 1)]);
    create(
        &server,
        &keys,
        "hits",
        "SELECT url, count(*) AS hits FROM pageview GROUP BY url",
        true,
    );
    let refreshes = || {
        read(
            &server,
            &keys,
            "/continuous-query/get",
            json!({"table_name": "hits"}),
        )
        .json()["refreshes"]
            .as_u64()
            .unwrap_or(0)
    };
    let wait_above = |floor: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = refreshes();
            if now > floor {
                return now;
            }
            assert!(Instant::now() < deadline, "no refresh past {floor}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let built = wait_above(0);
    pageviews(&server, &keys, &[("/b", 2)]);
    let after_ingest = wait_above(built);
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(refreshes(), after_ingest, "refreshed with nothing new");
    pageviews(&server, &keys, &[("/c", 3)]);
    wait_above(after_ingest);
    assert_same(
        &rows(
            &server,
            &keys,
            "SELECT url, hits FROM continuous.hits ORDER BY url",
        ),
        &rows(
            &server,
            &keys,
            "SELECT url, count(*) FROM pageview GROUP BY url ORDER BY url",
        ),
    );
}
