use std::io::Write;

use serde_json::{json, Value};

use crate::server::TestServer;

fn field_types(
    server: &TestServer,
    keys: &crate::server::Keys,
    collection: &str,
) -> Vec<(String, String)> {
    let response = server.post(
        "/project/schema",
        &[("read_key", &keys.read)],
        &json!({"names": [collection]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()[0]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or("").to_string(),
                f["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn collect_evolve_and_query() {
    let server = TestServer::start();
    let keys = server.create_project("shop");
    let first = server.collect(
        &keys,
        "PageView",
        json!({
            "_time": "2024-01-02T10:00:00Z",
            "_user": "u1",
            "pageUrl": "/home",
            "price": 10,
            "tags": ["a", "b"],
            "visitedOn": "2024-01-02",
            "seenAt": "2024-01-02T09:00:00Z",
            "premium": true,
            "userInfo": {"firstName": "Ada", "age": 36}
        }),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body.trim(), "1");

    let types = field_types(&server, &keys, "pageview");
    let expect = [
        ("_time", "TIMESTAMP"),
        ("_user", "STRING"),
        ("page_url", "STRING"),
        ("price", "LONG"),
        ("tags", "ARRAY_STRING"),
        ("visited_on", "DATE"),
        ("seen_at", "TIMESTAMP"),
        ("premium", "BOOLEAN"),
        ("user_info_first_name", "STRING"),
        ("user_info_age", "LONG"),
        ("_unmapped", "STRING"),
    ];
    for (name, field_type) in expect {
        assert!(
            types.iter().any(|(n, t)| n == name && t == field_type),
            "{name} {field_type} missing in {types:?}"
        );
    }

    // A fraction widens the LONG column; old rows are read as DOUBLE.
    assert_eq!(
        server
            .collect(&keys, "pageview", json!({"price": 10.5, "_user": "u2"}))
            .status,
        200
    );
    assert!(field_types(&server, &keys, "pageview").contains(&("price".into(), "DOUBLE".into())));
    let rows = server.query(&keys, "SELECT sum(price), count(*) FROM pageview");
    assert_eq!(rows[0], vec![json!(20.5), json!(2)]);

    // A value that fits no column is kept aside, never zeroed.
    assert_eq!(
        server
            .collect(
                &keys,
                "pageview",
                json!({"price": "cheap", "premium": "yes"})
            )
            .status,
        200
    );
    let rows = server.query(
        &keys,
        "SELECT price, premium, _unmapped FROM pageview WHERE _unmapped IS NOT NULL",
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], Value::Null);
    let unmapped: Value =
        serde_json::from_str(rows[0][2].as_str().expect("json text")).expect("json");
    assert_eq!(unmapped, json!({"price": "cheap", "premium": "yes"}));
    let schema = server.post("/project/schema", &[("read_key", &keys.read)], &json!({}));
    assert_eq!(schema.json()[0]["unmapped_rows"], json!(1));
    assert_eq!(schema.json()[0]["rows"], json!(3));

    // Nested objects are queryable as flattened columns; lists as lists.
    let rows = server.query(
        &keys,
        "SELECT user_info_first_name, tags[1], visited_on, _time FROM pageview WHERE _user = 'u1'",
    );
    assert_eq!(
        rows[0],
        vec![
            json!("Ada"),
            json!("a"),
            json!("2024-01-02"),
            json!("2024-01-02T10:00:00.000Z")
        ]
    );

    // Long strings are stored whole.
    let long_text = "x".repeat(5_000);
    assert_eq!(
        server
            .collect(&keys, "pageview", json!({"page_url": long_text}))
            .status,
        200
    );
    let rows = server.query(&keys, "SELECT max(length(page_url)) FROM pageview");
    assert_eq!(rows[0][0], json!(5000));
}

#[test]
fn a_new_field_is_a_column_for_every_event_of_the_request() {
    let server = TestServer::start();
    let keys = server.create_project("evolve");
    let batch = json!({
        "api": {"api_key": keys.write},
        "events": [
            {"collection": "signup", "properties": {"plan": "free"}},
            {"collection": "signup", "properties": {"plan": "pro", "seats": 3}},
            {"collection": "signup", "properties": {"seats": 2.5}}
        ]
    });
    let response = server.post("/event/batch", &[], &batch);
    assert_eq!(response.status, 200, "{}", response.body);
    let rows = server.query(
        &keys,
        "SELECT plan, seats FROM signup ORDER BY seats NULLS FIRST",
    );
    assert_eq!(
        rows,
        vec![
            vec![json!("free"), Value::Null],
            vec![json!(null), json!(2.5)],
            vec![json!("pro"), json!(3.0)]
        ]
    );
}

#[test]
fn concurrent_requests_agree_on_one_column() {
    let server = TestServer::start();
    let keys = server.create_project("race");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = server.url("/event/collect");
            let key = keys.write.clone();
            std::thread::spawn(move || {
                let value = if i % 2 == 0 { json!("text") } else { json!(i) };
                let body = json!({"collection": "c", "api": {"api_key": key}, "properties": {"contested": value}});
                ureq::post(&url).send_json(body).map(|r| r.status()).unwrap_or(0)
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().expect("thread"), 200);
    }
    let total = server.count(&keys, "SELECT count(*) FROM c");
    let kept = server.count(
        &keys,
        "SELECT count(*) FROM c WHERE contested IS NOT NULL OR _unmapped IS NOT NULL",
    );
    assert_eq!((total, kept), (8, 8));
}

#[test]
fn batch_partial_failure_is_409_with_the_failed_indexes() {
    let server = TestServer::start();
    let keys = server.create_project("partial");
    let batch = json!({
        "api": {"api_key": keys.write},
        "events": [
            {"collection": "ok", "properties": {"n": 1}},
            {"collection": "ok", "properties": {"_time": "not a time"}},
            {"collection": "", "properties": {}},
            {"collection": "ok", "properties": {"n": 2}}
        ]
    });
    let response = server.post("/event/batch", &[], &batch);
    assert_eq!(response.status, 409, "{}", response.body);
    assert_eq!(response.json()["failed"], json!([1, 2]));
    assert_eq!(server.count(&keys, "SELECT count(*) FROM ok"), 2);
}

#[test]
fn bulk_ndjson_csv_and_gzip() {
    let server = TestServer::start();
    let keys = server.create_project("bulk");
    let ndjson =
        "{\"collection\":\"view\",\"properties\":{\"_time\":1704067200000,\"n\":1}}\n{\"n\":2}\n";
    let response = server.request(
        "POST",
        "/event/bulk?collection=view",
        &[
            ("content-type", "Application/X-NDJSON; charset=utf-8"),
            ("write_key", &keys.write),
        ],
        Some(ndjson.as_bytes()),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(server.count(&keys, "SELECT sum(n) FROM view"), 3);

    // Older clients commit after a bulk load; the events are committed
    // already, so the answer is success, with the master key only.
    let commit = json!({"collections": null});
    let response = server.post(
        "/event/bulk/commit",
        &[("master_key", &keys.master)],
        &commit,
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["success"], json!(true));
    let response = server.post(
        "/event/bulk/commit",
        &[("master_key", &keys.write)],
        &commit,
    );
    assert_eq!(response.status, 403, "{}", response.body);

    let csv =
        "_time,city,visits\n2024-01-01T00:00:00Z,Paris,3\n2024-01-02T00:00:00Z,\"Rome, IT\",4\n";
    let response = server.request(
        "POST",
        "/event/bulk?collection=visit&use_header=true",
        &[("content-type", "text/csv"), ("master_key", &keys.master)],
        Some(csv.as_bytes()),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let positional = "1704240000000;Oslo;5\n";
    let response = server.request(
        "POST",
        "/event/bulk?collection=visit&column_separator=;",
        &[("content-type", "text/csv"), ("master_key", &keys.master)],
        Some(positional.as_bytes()),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let rows = server.query(&keys, "SELECT city, visits FROM visit ORDER BY _time");
    assert_eq!(
        rows,
        vec![
            vec![json!("Paris"), json!("3")],
            vec![json!("Rome, IT"), json!("4")],
            vec![json!("Oslo"), json!("5")]
        ]
    );

    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let batch = json!({"api": {"api_key": keys.write}, "events": [{"collection": "zipped", "properties": {"ok": true}}]});
    encoder
        .write_all(batch.to_string().as_bytes())
        .expect("gzip");
    let compressed = encoder.finish().expect("gzip");
    let response = server.request(
        "POST",
        "/event/batch",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        Some(&compressed),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(server.count(&keys, "SELECT count(*) FROM zipped"), 1);
}

#[test]
fn pixel_and_cors() {
    let server = TestServer::start();
    let keys = server.create_project("pixel");
    let path = format!(
        "/event/pixel?collection=open&api.api_key={}&prop.email_id=42&prop._time=1704067200000",
        keys.write
    );
    let response = server.get(&path);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.content_type, "image/gif");
    let rows = server.query(&keys, "SELECT email_id, _time FROM open");
    assert_eq!(
        rows[0],
        vec![json!("42"), json!("2024-01-01T00:00:00.000Z")]
    );

    let preflight = server.request(
        "OPTIONS",
        "/event/collect",
        &[
            ("origin", "https://shop.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type,write_key"),
        ],
        None,
    );
    assert!(preflight.status < 300, "{}", preflight.status);
    let simple = server.request(
        "POST",
        "/event/collect",
        &[
            ("origin", "https://shop.example"),
            ("content-type", "text/plain"),
        ],
        Some(
            json!({"collection": "c", "api": {"api_key": keys.write}, "properties": {}})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(simple.status, 200, "{}", simple.body);
}

#[test]
fn clock_skew_and_server_time() {
    let server = TestServer::start();
    let keys = server.create_project("skew");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    // The client's clock is one hour behind.
    let client_now = now - 3_600_000;
    let body = json!({
        "collection": "e",
        "api": {"api_key": keys.write, "upload_time": client_now},
        "properties": {"_time": client_now - 1000}
    });
    assert_eq!(server.post("/event/collect", &[], &body).status, 200);
    let sql = if crate::server::on_postgres() {
        "SELECT (extract(epoch FROM _time) * 1000)::bigint, (extract(epoch FROM _server_time) * 1000)::bigint FROM e"
    } else {
        "SELECT CAST(_time AS BIGINT), CAST(_server_time AS BIGINT) FROM (SELECT arrow_cast(_time, 'Int64') AS _time, arrow_cast(_server_time, 'Int64') AS _server_time FROM e)"
    };
    let rows = server.query(&keys, sql);
    let event_time = rows[0][0].as_i64().expect("time");
    let server_time = rows[0][1].as_i64().expect("server time");
    assert!(
        (server_time - now).abs() < 60_000,
        "server time {server_time} vs {now}"
    );
    assert!(
        (event_time - (server_time - 1000)).abs() < 5_000,
        "{event_time} vs {server_time}"
    );
}
