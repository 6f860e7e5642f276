use serde_json::{json, Value};

use crate::server::{on_postgres, TestServer};

/// A statement that runs far longer than a second on either engine.
fn slow_query() -> &'static str {
    if on_postgres() {
        "SELECT count(*) FROM generate_series(1, 100000000000) a WHERE a % 7 = 3"
    } else {
        "SELECT count(*) FROM range(100000000000) a WHERE a.value % 7 = 3"
    }
}

fn seeded() -> (TestServer, crate::server::Keys) {
    let server = TestServer::start();
    let keys = server.create_project("analytics");
    let batch = json!({
        "api": {"api_key": keys.write},
        "events": [
            {"collection": "pageview", "properties": {"_time": 1704067200000_i64, "_user": "a", "url": "/x"}},
            {"collection": "pageview", "properties": {"_time": 1704067201000_i64, "_user": "b", "url": "/y"}},
            {"collection": "purchase", "properties": {"_time": 1704067202000_i64, "_user": "a", "amount": 9.5}}
        ]
    });
    assert_eq!(server.post("/event/batch", &[], &batch).status, 200);
    (server, keys)
}

#[test]
fn execute_returns_rakam_shape_and_all_unions_collections() {
    let (server, keys) = seeded();
    let response = server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": "SELECT _collection, _user, url, amount FROM _all ORDER BY _time;"}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(
        body["metadata"][0],
        json!({"name": "_collection", "type": "STRING", "descriptiveName": "Collection"})
    );
    assert_eq!(body["metadata"][3]["type"], json!("DOUBLE"));
    assert_eq!(
        body["result"],
        json!([
            ["pageview", "a", "/x", null],
            ["pageview", "b", "/y", null],
            ["purchase", "a", null, 9.5]
        ])
    );
    assert!(body["properties"]["executionTimeInMillis"].is_number());
    let qualified = server.query(&keys, "SELECT count(*) FROM collection.pageview");
    assert_eq!(qualified[0][0], json!(2));
}

#[test]
fn limits_apply_by_default_and_on_request() {
    let (server, keys) = seeded();
    let limited = server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": "SELECT * FROM _all", "limit": 1}),
    );
    assert_eq!(limited.json()["result"].as_array().map(Vec::len), Some(1));
    let over = server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": "SELECT 1", "limit": 2_000_000}),
    );
    assert_eq!(over.status, 400, "{}", over.body);
    assert_eq!(over.json()["error_code"], json!(4004));
    let sql_over = server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": "SELECT 1 LIMIT 5000000"}),
    );
    assert_eq!(sql_over.status, 400);
}

#[test]
fn sql_errors_carry_message_and_position() {
    let (server, keys) = seeded();
    let response = server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": "SELECT url\nFROM pageview WHER x"}),
    );
    assert_eq!(response.status, 400, "{}", response.body);
    let body = response.json();
    assert_eq!(body["error_code"], json!(4001));
    assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(body["position"]["line"], json!(2));
    let unknown = server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": "SELECT nope FROM pageview"}),
    );
    assert_eq!(unknown.status, 400);
    assert!(unknown.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("nope"));
    assert_eq!(unknown.json()["position"]["column"], json!(8));
}

#[test]
fn only_reads_run() {
    let (server, keys) = seeded();
    for sql in [
        "DROP TABLE pageview",
        "DELETE FROM pageview",
        "INSERT INTO pageview (url) VALUES ('z')",
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT * FROM pageview) TO '/tmp/leak.csv'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT * INTO copy FROM pageview",
        "SELECT 1; DROP TABLE pageview",
    ] {
        let response = server.post(
            "/query/execute",
            &[("read_key", &keys.read)],
            &json!({"query": sql}),
        );
        assert!(
            (400..500).contains(&response.status),
            "{sql}: {} {}",
            response.status,
            response.body
        );
    }
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/passwd'",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM datafusion.public.pageview",
        "SHOW TABLES",
    ] {
        let response = server.post(
            "/query/execute",
            &[("read_key", &keys.read)],
            &json!({"query": sql}),
        );
        assert!(
            (400..500).contains(&response.status),
            "{sql}: {} {}",
            response.status,
            response.body
        );
    }
    assert!(!std::path::Path::new("/tmp/leak.csv").exists());
    assert_eq!(server.count(&keys, "SELECT count(*) FROM pageview"), 2);
    let explain = server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": "EXPLAIN SELECT count(*) FROM pageview"}),
    );
    assert_eq!(explain.status, 200, "{}", explain.body);
}

#[test]
fn export_and_metadata() {
    let (server, keys) = seeded();
    let sql = "SELECT _user, url FROM pageview ORDER BY _user";
    let csv = server.post(
        "/query/export",
        &[("read_key", &keys.read)],
        &json!({"query": sql, "export_type": "CSV"}),
    );
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(csv.body, "_user,url\na,/x\nb,/y\n");
    let ndjson = server.post(
        "/query/export",
        &[("read_key", &keys.read)],
        &json!({"query": sql, "export_type": "NDJSON"}),
    );
    assert_eq!(
        ndjson.body,
        "{\"_user\":\"a\",\"url\":\"/x\"}\n{\"_user\":\"b\",\"url\":\"/y\"}\n"
    );
    let json_export = server.post(
        "/query/export",
        &[("read_key", &keys.read)],
        &json!({"query": sql, "export_type": "JSON"}),
    );
    let parsed: Value = serde_json::from_str(&json_export.body).expect("json");
    assert_eq!(
        parsed,
        json!([{"_user": "a", "url": "/x"}, {"_user": "b", "url": "/y"}])
    );
    let metadata = server.post(
        "/query/metadata",
        &[("read_key", &keys.read)],
        &json!({"query": "SELECT amount, _time FROM purchase"}),
    );
    assert_eq!(metadata.status, 200, "{}", metadata.body);
    let types: Vec<_> = metadata
        .json()
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["type"].clone())
        .collect();
    assert_eq!(types, vec![json!("DOUBLE"), json!("TIMESTAMP")]);

    // CSV has no arrays: an array column is exported as its JSON text.
    assert_eq!(
        server
            .collect(&keys, "tagged", json!({"tags": ["a", "b,c"]}))
            .status,
        200
    );
    let csv = server.post(
        "/query/export",
        &[("read_key", &keys.read)],
        &json!({"query": "SELECT tags FROM tagged", "export_type": "CSV"}),
    );
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(csv.body, "tags\n\"[\"\"a\"\",\"\"b,c\"\"]\"\n");

    // Results of many batches stream into one well-formed file.
    let digits = (0..100)
        .map(|d| format!("({d})"))
        .collect::<Vec<_>>()
        .join(", ");
    let many = format!(
        "SELECT a.x * 100 + b.x AS n FROM (VALUES {digits}) AS a(x), (VALUES {digits}) AS b(x) ORDER BY n"
    );
    for (format, parse) in [
        (
            "CSV",
            (|body: &str| {
                body.lines()
                    .skip(1)
                    .map(|l| l.parse::<i64>().ok())
                    .collect::<Vec<_>>()
            }) as fn(&str) -> Vec<Option<i64>>,
        ),
        ("NDJSON", |body: &str| {
            body.lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l)
                        .ok()
                        .and_then(|v| v["n"].as_i64())
                })
                .collect()
        }),
        ("JSON", |body: &str| {
            serde_json::from_str::<Vec<Value>>(body)
                .unwrap_or_default()
                .iter()
                .map(|v| v["n"].as_i64())
                .collect()
        }),
    ] {
        let export = server.post(
            "/query/export",
            &[("read_key", &keys.read)],
            &json!({"query": many, "export_type": format, "limit": 20_000}),
        );
        assert_eq!(export.status, 200, "{format}: {}", export.body);
        let expected: Vec<Option<i64>> = (0..10_000).map(Some).collect();
        assert_eq!(parse(&export.body), expected, "{format}");
    }
    // A failure before the first row is still an error response.
    let failed = server.post(
        "/query/export",
        &[("read_key", &keys.read)],
        &json!({"query": "SELECT 1 / 0 AS n", "export_type": "CSV"}),
    );
    assert_eq!(failed.status, 400, "{}", failed.body);
    assert_eq!(failed.json()["error_code"], json!(4001));
}

#[test]
fn acknowledged_events_are_visible_at_once() {
    let server = TestServer::start();
    let keys = server.create_project("fresh");
    for n in 0..20 {
        assert_eq!(server.collect(&keys, "tick", json!({"n": n})).status, 200);
        assert_eq!(server.count(&keys, "SELECT count(*) FROM tick"), n + 1);
    }
}

#[test]
fn long_queries_are_cancelled_at_the_statement_timeout() {
    let server = TestServer::start_with_env(&[], &[("RAKAM_QUERY__STATEMENT_TIMEOUT_SECS", "1")]);
    let keys = server.create_project("slow");
    let started = std::time::Instant::now();
    let response = server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": slow_query()}),
    );
    assert_eq!(response.status, 408, "{}", response.body);
    assert_eq!(response.json()["error_code"], json!(4003));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // The server is still responsive afterwards.
    assert_eq!(server.query(&keys, "SELECT 1")[0][0], json!(1));
}
