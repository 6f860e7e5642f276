//! Statements an attacker would send: deep enough to overflow a stack, or
//! wide enough to make planning run away. Each gets a 400, and the server
//! keeps serving everyone else. Runs on both backends: PostgreSQL parses
//! client SQL in its own dialect.

use serde_json::{json, Value};

use crate::server::{Keys, TestServer};

fn chain(term: &str, separator: &str, count: usize) -> String {
    vec![term; count].join(separator)
}

fn assert_too_complex(server: &TestServer, keys: &Keys, path: &str, body: &Value, what: &str) {
    let response = server.post(path, &[("read_key", &keys.read)], body);
    assert_eq!(response.status, 400, "{path} {what}…: {}", response.body);
    let code = response.json()["error_code"].clone();
    assert_eq!(code, json!(4006), "{path} {what}…: {}", response.body);
}

fn assert_serving(server: &mut TestServer, keys: &Keys) {
    assert!(server.is_running(), "the server died");
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(server.count(keys, "SELECT count(*) FROM e"), 1);
}

/// Statements that overflowed a worker's stack (and their deeper
/// versions, up to the 1 MiB query body limit), through every path that
/// parses SQL.
#[test]
fn statements_too_deep_or_wide_get_a_400_and_the_server_keeps_serving() {
    let mut server = TestServer::start();
    let keys = server.create_project("deep");
    assert_eq!(server.collect(&keys, "e", json!({"n": 1})).status, 200);
    let joins: Vec<String> = (1..2000)
        .map(|i| format!("JOIN e AS t{i} ON true"))
        .collect();
    let ctes: Vec<String> = (1..1000)
        .map(|i| format!("a{i} AS (SELECT * FROM a{})", i - 1))
        .collect();
    let doubling: Vec<String> = (1..30)
        .map(|i| {
            format!(
                "d{i} AS (SELECT * FROM d{p} UNION ALL SELECT * FROM d{p})",
                p = i - 1
            )
        })
        .collect();
    let statements = [
        format!("SELECT {}", chain("1", "+", 1000)),
        format!("SELECT {}", chain("1", "+", 499_000)),
        format!("SELECT 1 WHERE {}", chain("true", " AND ", 1000)),
        format!("SELECT 1 WHERE {}", chain("1=1", " AND ", 100_000)),
        chain("SELECT 1", " UNION ALL ", 1000),
        chain("SELECT 1", " UNION ALL ", 50_000),
        format!("SELECT count(*) FROM e AS t0 {}", joins.join(" ")),
        format!("SELECT count(*) FROM {}", chain("e", ", ", 2000)),
        format!("SELECT {}1{}", "(".repeat(1000), ")".repeat(1000)),
        format!("SELECT {}1", "- ".repeat(100_000)),
        format!("SELECT 1{}", "::BIGINT".repeat(50_000)),
        format!("SELECT {}1{}", "abs(".repeat(5000), ")".repeat(5000)),
        format!(
            "WITH a0 AS (SELECT * FROM e), {} SELECT * FROM a999",
            ctes.join(", ")
        ),
        format!(
            "WITH d0 AS (SELECT * FROM e), {} SELECT count(*) FROM d29",
            doubling.join(", ")
        ),
    ];
    for sql in &statements {
        assert!(sql.len() < 1 << 20, "{} bytes", sql.len());
        let head: String = sql.chars().take(60).collect();
        for path in ["/query/execute", "/query/metadata", "/query/export"] {
            let body = json!({"query": sql});
            assert_too_complex(&server, &keys, path, &body, &head);
        }
        assert_serving(&mut server, &keys);
    }

    // What the guard lets through, the server runs.
    let near_limit = [
        (format!("SELECT {}", chain("1", "+", 450)), 450),
        (
            format!(
                "SELECT count(*) FROM ({}) AS u",
                chain("SELECT 1", " UNION ALL ", 450)
            ),
            450,
        ),
        (
            format!(
                "SELECT count(*) FROM e WHERE {}",
                chain("n = 1", " AND ", 200)
            ),
            1,
        ),
        (
            format!(
                "SELECT count(*) FROM e AS t0 {}",
                (1..60)
                    .map(|i| format!("JOIN e AS t{i} ON true"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            1,
        ),
        (format!("SELECT {}1{}", "(".repeat(45), ")".repeat(45)), 1),
    ];
    for (sql, expected) in &near_limit {
        let head: String = sql.chars().take(60).collect();
        let rows = server.query(&keys, sql);
        assert_eq!(rows[0][0], json!(expected), "{head}…");
    }

    for filter in [
        chain("n = 1", " AND ", 1000),
        chain("1", "+", 200_000) + " > 0",
        format!("{}n = 1{}", "(".repeat(1000), ")".repeat(1000)),
    ] {
        for (path, body) in [
            (
                "/funnel/analyze",
                json!({
                    "steps": [{"collection": "e", "filterExpression": filter}],
                    "startDate": "2024-01-01", "endDate": "2030-01-01"
                }),
            ),
            (
                "/event-explorer/analyze",
                json!({
                    "measure": {"column": null, "aggregation": "COUNT"},
                    "grouping": null, "segment": null, "filterExpression": filter,
                    "collections": ["e"], "startDate": "2024-01-01", "endDate": "2030-01-01"
                }),
            ),
        ] {
            assert_too_complex(&server, &keys, path, &body, "filter");
        }
        assert_serving(&mut server, &keys);
    }
}
