use serde_json::{json, Value};

use crate::server::TestServer;

fn assert_error(response: &crate::server::Response, status: u16, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.body);
    let body: Value = serde_json::from_str(&response.body)
        .unwrap_or_else(|_| panic!("{what}: not JSON: {}", response.body));
    assert!(body["error"].is_string(), "{what}: {body}");
    assert!(body["error_code"].is_number(), "{what}: {body}");
}

#[test]
fn bad_requests_get_clear_errors_and_harm_nothing() {
    let server = TestServer::start_with(&[]);
    let keys = server.create_project("victim");
    assert_eq!(server.collect(&keys, "e", json!({"n": 1})).status, 200);

    let raw = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        server.request("POST", path, headers, Some(body))
    };
    assert_error(
        &raw("/event/collect", &[], b"{not json"),
        400,
        "malformed json",
    );
    assert_error(&raw("/event/collect", &[], b"[1,2]"), 400, "not an object");
    let wrong_types = json!({"collection": 5, "api": {"api_key": keys.write}, "properties": {}});
    assert_error(
        &server.post("/event/collect", &[], &wrong_types),
        400,
        "collection is a number",
    );
    let no_properties =
        json!({"collection": "e", "api": {"api_key": keys.write}, "properties": "x"});
    assert_error(
        &server.post("/event/collect", &[], &no_properties),
        400,
        "properties is a string",
    );
    let no_key = json!({"collection": "e", "properties": {}});
    assert_error(
        &server.post("/event/collect", &[], &no_key),
        403,
        "missing key",
    );
    let wrong_key = json!({"collection": "e", "api": {"api_key": "nope"}, "properties": {}});
    assert_error(
        &server.post("/event/collect", &[], &wrong_key),
        403,
        "wrong key",
    );
    let bad_name = json!({"collection": "e", "api": {"api_key": keys.write}, "properties": {"bad\u{7}name": 1}});
    let response = server.post("/event/collect", &[], &bad_name);
    assert_error(&response, 400, "invalid field name");
    assert!(
        response.body.contains("control characters"),
        "{}",
        response.body
    );
    let bad_time = json!({"collection": "e", "api": {"api_key": keys.write}, "properties": {"_time": "someday"}});
    assert_error(
        &server.post("/event/collect", &[], &bad_time),
        400,
        "bad time",
    );
    let reserved = json!({"collection": "e", "api": {"api_key": keys.write}, "properties": {"_server_time": 1}});
    assert_error(
        &server.post("/event/collect", &[], &reserved),
        400,
        "reserved name",
    );
    assert_error(
        &server.post("/query/execute", &[], &json!({"query": "SELECT 1"})),
        403,
        "query without key",
    );
    assert_error(
        &server.post("/query/execute", &[("read_key", &keys.read)], &json!({})),
        400,
        "no query",
    );
    assert_error(
        &raw(
            "/event/batch",
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            b"\x1f\x8b\x08\x00garbage",
        ),
        400,
        "corrupt gzip",
    );
    assert_error(
        &raw(
            "/event/bulk",
            &[
                ("content-type", "application/xml"),
                ("write_key", &keys.write),
            ],
            b"<a/>",
        ),
        415,
        "unknown content type",
    );
    let bad_line = b"{\"n\": 1}\n{\"n\": oops}\n";
    let response = raw(
        "/event/bulk?collection=e",
        &[
            ("content-type", "application/x-ndjson"),
            ("write_key", &keys.write),
        ],
        bad_line,
    );
    assert_error(&response, 400, "bad ndjson line");
    assert!(response.body.contains("line 2"), "{}", response.body);
    let unknown = server.get("/no/such/endpoint");
    assert_error(&unknown, 404, "unknown endpoint");
    assert_eq!(unknown.json()["error_code"], json!(1012));

    // Nothing of the above was stored, and the server still serves everyone.
    assert_eq!(server.count(&keys, "SELECT count(*) FROM e"), 1);
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn limits_are_enforced_with_named_errors() {
    let server = TestServer::start_with_env(
        &[],
        &[
            ("RAKAM_LIMITS__MAX_REQUEST_BYTES", "100000"),
            ("RAKAM_LIMITS__MAX_STRING_BYTES", "10000"),
        ],
    );
    let keys = server.create_project("limits");
    let large = "x".repeat(50_000);
    let event =
        json!({"collection": "e", "api": {"api_key": keys.write}, "properties": {"blob": large}});
    let response = server.post("/event/collect", &[], &event);
    assert_error(&response, 400, "string over the limit");
    assert!(
        response.body.contains("limits.max_string_bytes"),
        "{}",
        response.body
    );
    assert_eq!(
        server
            .collect(&keys, "e", json!({"blob": "x".repeat(10_000)}))
            .status,
        200
    );
    // The server answers from the declared length, before the body arrives.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    let head = "POST /event/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 150000\r\nConnection: close\r\n\r\n";
    std::io::Write::write_all(&mut stream, head.as_bytes()).expect("send head");
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("limits.max_request_bytes"), "{answer}");
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn metrics_are_exported() {
    let server = TestServer::start();
    let keys = server.create_project("metrics");
    assert_eq!(server.collect(&keys, "e", json!({})).status, 200);
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("rakam_http_requests_total"),
        "{}",
        metrics.body
    );
    for name in [
        "rakam_events_ingested_total",
        "rakam_query_memory_bytes",
        "rakam_inflight_request_bytes",
    ] {
        assert!(metrics.body.contains(name), "{name}: {}", metrics.body);
    }
}

/// Times no backend computes with are never stored as times: an event's
/// `_time` outside the years 1 to 9999 is a 400, another field's goes to
/// `_unmapped` under its name, and every time function keeps working on the
/// collection.
#[test]
fn hostile_times_never_poison_a_collection() {
    let server = TestServer::start();
    let keys = server.create_project("times");
    let ok = server.collect(&keys, "e", json!({"t": "2024-01-01T10:00:00Z", "n": 1}));
    assert_eq!(ok.status, 200, "{}", ok.body);
    for far in [json!(1e300), json!(-1e300), json!("99999-01-01T00:00:00Z")] {
        let refused = server.collect(&keys, "e", json!({"_time": far.clone(), "n": 2}));
        assert_eq!(refused.status, 400, "{far}: {}", refused.body);
    }
    for far in [
        json!("0000-06-01T00:00:00Z"),
        json!(1_000_000_000_000_000_000_i64),
    ] {
        let kept = server.collect(&keys, "e", json!({"t": far.clone(), "n": 3}));
        assert_eq!(kept.status, 200, "{far}: {}", kept.body);
    }
    let rows = server.query(
        &keys,
        "SELECT date_trunc('day', t), extract(year FROM t), date_trunc('month', _time), \
         count(*) FROM e GROUP BY 1, 2, 3 ORDER BY 4",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let unmapped = server.query(&keys, "SELECT _unmapped FROM e WHERE n = 3");
    assert_eq!(unmapped.len(), 2);
    for row in unmapped {
        assert!(
            row[0].as_str().is_some_and(|u| u.contains("\"t\"")),
            "{row:?}"
        );
    }
}

/// Integers beyond ±2^63 keep every digit: as text in a new column, in
/// `_unmapped` when the column holds numbers.
#[test]
fn integers_beyond_64_bits_keep_their_digits() {
    let server = TestServer::start();
    let keys = server.create_project("bigints");
    let huge = "123456789012345678901234567890";
    let body = format!(
        r#"{{"collection": "e", "api": {{"api_key": "{}"}}, "properties": {{"id": {huge}, "n": 1}}}}"#,
        keys.write
    );
    let sent = server.request(
        "POST",
        "/event/collect",
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    );
    assert_eq!(sent.status, 200, "{}", sent.body);
    let body = format!(
        r#"{{"collection": "e", "api": {{"api_key": "{}"}}, "properties": {{"n": -{huge}}}}}"#,
        keys.write
    );
    let sent = server.request(
        "POST",
        "/event/collect",
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    );
    assert_eq!(sent.status, 200, "{}", sent.body);
    let rows = server.query(
        &keys,
        "SELECT id, n, _unmapped FROM e ORDER BY _server_time",
    );
    assert_eq!(rows[0][0], json!(huge), "{rows:?}");
    assert_eq!(rows[0][1], json!(1));
    assert_eq!(rows[1][1], Value::Null);
    let unmapped = rows[1][2].as_str().unwrap_or_default();
    assert!(unmapped.contains(&format!("-{huge}")), "{rows:?}");
}
