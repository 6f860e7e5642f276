use serde_json::{json, Value};

use crate::server::{Keys, TestServer};

/// Two people on 2024-01-01: a signs up, adds to cart and buys; b only
/// signs up. a comes back a week later.
fn seeded() -> (TestServer, Keys) {
    let server = TestServer::start();
    let keys = server.create_project("shop");
    let event = |collection: &str, user: &str, time: &str| json!({"collection": collection, "properties": {"_user": user, "_time": time, "country": "de"}});
    let batch = json!({
        "api": {"api_key": keys.write},
        "events": [
            event("signup", "a", "2024-01-01T10:00:00Z"),
            event("add_to_cart", "a", "2024-01-01T10:10:00Z"),
            event("purchase", "a", "2024-01-01T10:40:00Z"),
            event("signup", "b", "2024-01-01T11:00:00Z"),
            event("pageview", "a", "2024-01-08T09:00:00Z"),
        ]
    });
    assert_eq!(server.post("/event/batch", &[], &batch).status, 200);
    (server, keys)
}

fn analyze(server: &TestServer, keys: &Keys, path: &str, body: Value) -> Value {
    let response = server.post(path, &[("read_key", &keys.read)], &body);
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    response.json()
}

#[test]
fn funnel_retention_segmentation_and_flow_over_http() {
    let (server, keys) = seeded();
    let funnel = analyze(
        &server,
        &keys,
        "/funnel/analyze",
        json!({
            "steps": [{"collection": "signup"}, {"collection": "add_to_cart"}, {"collection": "purchase"}],
            "window": {"value": 1, "type": "HOUR"},
            "startDate": "2024-01-01", "endDate": "2024-01-07"
        }),
    );
    assert_eq!(
        funnel["result"],
        json!([["Step 1", 2], ["Step 2", 1], ["Step 3", 1]])
    );
    assert_eq!(
        funnel["steps"][2]["median_seconds_from_previous"],
        json!(1800.0)
    );
    assert!(funnel["properties"]["executionTimeInMillis"].is_number());

    let retention = analyze(
        &server,
        &keys,
        "/retention/analyze",
        json!({
            "first_action": {"collection": "signup"},
            "returning_action": {"collection": "pageview"},
            "date_unit": "WEEK", "period": 2,
            "startDate": "2024-01-01", "endDate": "2024-01-07"
        }),
    );
    assert_eq!(
        retention["result"],
        json!([["2024-01-01", null, 2], ["2024-01-01", 0, 1]])
    );

    let explorer = analyze(
        &server,
        &keys,
        "/event-explorer/analyze",
        json!({
            "collections": ["signup", "purchase"],
            "measure": {"column": "_user", "aggregation": "COUNT_UNIQUE"},
            "startDate": "2024-01-01", "endDate": "2024-01-07"
        }),
    );
    assert_eq!(explorer["result"], json!([["purchase", 1], ["signup", 2]]));
    let statistics = analyze(
        &server,
        &keys,
        "/event-explorer/statistics",
        json!({
            "startDate": "2024-01-01", "endDate": "2024-01-31"
        }),
    );
    assert_eq!(
        statistics["result"],
        json!([
            ["add_to_cart", 1],
            ["pageview", 1],
            ["purchase", 1],
            ["signup", 2]
        ])
    );

    let flow = analyze(
        &server,
        &keys,
        "/flow/analyze",
        json!({
            "startEvent": {"collection": "signup"}, "depth": 2,
            "startDate": "2024-01-01", "endDate": "2024-01-07"
        }),
    );
    assert_eq!(
        flow["result"],
        json!([
            [1, "signup", "add_to_cart", 1],
            [2, "add_to_cart", "purchase", 1]
        ])
    );

    let segments = server.get(&format!("/funnel/segments?read_key={}", keys.read));
    assert_eq!(segments.status, 200);
    assert!(segments.json()["TIMESTAMP"]
        .as_array()
        .is_some_and(|v| v.len() == 12));
    let extra = server.get(&format!(
        "/event-explorer/extra_dimensions?read_key={}",
        keys.read
    ));
    assert_eq!(extra.status, 200);
    assert!(extra.json()["Date period"].is_array());
}

#[test]
fn analysis_needs_a_read_key_and_rejects_bad_requests() {
    let (server, keys) = seeded();
    let body = json!({"steps": [{"collection": "signup"}], "startDate": "2024-01-01", "endDate": "2024-01-07"});
    let anonymous = server.post("/funnel/analyze", &[], &body);
    // Key errors are 403, as everywhere in the API (Rakam's status).
    assert_eq!(anonymous.status, 403, "{}", anonymous.body);
    assert_eq!(anonymous.json()["error_code"], 2001);
    let write_only = server.post("/funnel/analyze", &[("read_key", &keys.write)], &body);
    assert_eq!(write_only.status, 403, "{}", write_only.body);
    let master = server.post("/funnel/analyze", &[("master_key", &keys.master)], &body);
    assert_eq!(master.status, 200, "{}", master.body);

    let cases = [
        (
            "/funnel/analyze",
            json!({"steps": [{"collection": "signup", "filterExpression": "1) OR (1"}], "startDate": "2024-01-01", "endDate": "2024-01-07"}),
            "filterExpression is invalid",
        ),
        (
            "/funnel/analyze",
            json!({"steps": [{"collection": "signup", "filterExpression": "nope = 1"}], "startDate": "2024-01-01", "endDate": "2024-01-07"}),
            "nope",
        ),
        (
            "/funnel/analyze",
            json!({"steps": [], "startDate": "2024-01-01", "endDate": "2024-01-07"}),
            "at least one step",
        ),
        (
            "/retention/analyze",
            json!({"first_action": {"collection": "signup"}, "date_unit": "DAY", "startDate": "2024-01-08", "endDate": "2024-01-01"}),
            "before startDate",
        ),
        (
            "/event-explorer/analyze",
            json!({"collections": ["signup"], "measure": {"aggregation": "COUNT"}, "filterExpression": "country = 'de'; DROP TABLE signup", "startDate": "2024-01-01", "endDate": "2024-01-07"}),
            "is invalid",
        ),
        (
            "/flow/analyze",
            json!({"startEvent": {"collection": "nowhere"}, "startDate": "2024-01-01", "endDate": "2024-01-07"}),
            "does not exist",
        ),
    ];
    for (path, body, needle) in cases {
        let response = server.post(path, &[("read_key", &keys.read)], &body);
        assert_eq!(response.status, 400, "{path} {body}: {}", response.body);
        let error = response.json();
        assert!(
            error["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{path}: {error}"
        );
        assert!(error["error_code"].is_number(), "{error}");
    }
    let malformed = server.request(
        "POST",
        "/funnel/analyze",
        &[("read_key", &keys.read)],
        Some(b"{not json"),
    );
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    // The data is untouched by all of the above.
    assert_eq!(server.count(&keys, "SELECT count(*) FROM signup"), 2);
}
