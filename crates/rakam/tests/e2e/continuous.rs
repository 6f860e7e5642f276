//! Continuous queries (`/continuous-query/*`, `continuous.<name>` in SQL)
//! through the real binary.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{Keys, Response, TestServer};

fn master(server: &TestServer, keys: &Keys, path: &str, body: Value) -> Response {
    server.post(path, &[("master_key", &keys.master)], &body)
}

fn read(server: &TestServer, keys: &Keys, path: &str, body: Value) -> Response {
    server.post(path, &[("read_key", &keys.read)], &body)
}

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
