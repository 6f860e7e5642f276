//! Names and magic fields as Rakam's clients send them: collection names
//! are any text, field names keep `$` and `:`, `_ip`/`_user_agent`/
//! `_referrer` are instructions rather than data, and `_user` has one type
//! per project and is a column of every collection.

use serde_json::{json, Value};

use crate::server::TestServer;

fn schema(server: &TestServer, keys: &crate::server::Keys) -> Value {
    let response = server.post("/project/schema", &[("read_key", &keys.read)], &json!({}));
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

fn column_type(schema: &Value, collection: &str, column: &str) -> Option<String> {
    schema
        .as_array()?
        .iter()
        .find(|c| c["name"] == json!(collection))?["fields"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == json!(column))
        .map(|f| f["type"].as_str().unwrap_or_default().to_string())
}

#[test]
fn collection_names_are_any_text_lower_cased() {
    let mut server = TestServer::start();
    let keys = server.create_project("names");
    for (collection, n) in [("Order Completed", 1), ("page-view", 2), ("_private", 3)] {
        let response = server.collect(&keys, collection, json!({"n": n}));
        assert_eq!(response.status, 200, "{collection}: {}", response.body);
    }
    let listed = server.post(
        "/project/collection",
        &[("read_key", &keys.read)],
        &json!({}),
    );
    assert_eq!(
        listed.json(),
        json!(["_private", "order completed", "page-view"])
    );
    assert_eq!(
        server.count(&keys, "SELECT sum(n) FROM \"order completed\""),
        1
    );
    assert_eq!(server.count(&keys, "SELECT sum(n) FROM \"page-view\""), 2);
    assert_eq!(server.count(&keys, "SELECT sum(n) FROM \"_private\""), 3);
    // Read again from the stored files (a graceful stop writes the log out):
    // a directory named for "order completed" is read as it is named.
    server.restart_gracefully();
    assert_eq!(
        server.count(&keys, "SELECT sum(n) FROM \"order completed\""),
        1
    );
    assert_eq!(
        server.count(
            &keys,
            "SELECT count(*) FROM _all WHERE _collection = 'order completed'"
        ),
        1
    );
    for (bad, why) in [("", "empty"), ("_all", "reserved"), ("a\u{1}b", "control")] {
        let response = server.collect(&keys, bad, json!({"n": 1}));
        assert_eq!(response.status, 400, "{why}: {}", response.body);
    }
    let funnel = server.post(
        "/funnel/analyze",
        &[("read_key", &keys.read)],
        &json!({
            "steps": [{"collection": "Order Completed"}, {"collection": "page-view"}],
            "startDate": "2000-01-01", "endDate": "2100-01-01"
        }),
    );
    assert_eq!(funnel.status, 200, "{}", funnel.body);
}

#[test]
fn field_names_keep_what_rakam_keeps() {
    let server = TestServer::start();
    let keys = server.create_project("fields");
    let response = server.collect(
        &keys,
        "e",
        json!({"$browser": "Firefox", "a:b": 7, "pageUrl": "/x"}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let rows = server.query(&keys, "SELECT \"$browser\", \"a:b\", page_url FROM e");
    assert_eq!(rows, vec![vec![json!("Firefox"), json!(7), json!("/x")]]);
    let batch = json!({"api": {"api_key": keys.write}, "events": [
        {"collection": "e", "properties": {"$os": "Linux"}},
        {"collection": "e", "properties": {"ok": 1}}
    ]});
    let response = server.post("/event/batch", &[], &batch);
    assert_eq!(response.status, 200, "{}", response.body);
}

#[test]
fn magic_fields_are_context_not_columns() {
    let server = TestServer::start();
    let keys = server.create_project("magic");
    let response = server.collect(
        &keys,
        "visit",
        json!({"_ip": true, "_user_agent": "Mozilla/5.0", "_referrer": "https://example.com/", "n": 1}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let described = schema(&server, &keys);
    for magic in ["_ip", "_user_agent", "_referrer"] {
        assert_eq!(
            column_type(&described, "visit", magic),
            None,
            "{magic} was stored"
        );
    }
    assert_eq!(server.count(&keys, "SELECT count(*) FROM visit"), 1);
    let bad = server.collect(&keys, "visit", json!({"_ip": "not an address"}));
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[test]
fn user_has_one_type_per_project_in_every_collection() {
    let server = TestServer::start();
    let keys = server.create_project("users");
    assert_eq!(
        server.collect(&keys, "signup", json!({"_user": 42})).status,
        200
    );
    assert_eq!(
        server
            .collect(&keys, "pageview", json!({"url": "/"}))
            .status,
        200
    );
    let response = server.collect(&keys, "purchase", json!({"_user": "abc", "amount": 3}));
    assert_eq!(response.status, 200, "{}", response.body);
    let described = schema(&server, &keys);
    for collection in ["signup", "pageview", "purchase"] {
        assert_eq!(
            column_type(&described, collection, "_user").as_deref(),
            Some("LONG"),
            "{collection}: {described}"
        );
    }
    // The text id does not fit the project's type: kept, not dropped.
    let kept = server.query(
        &keys,
        "SELECT _user IS NULL, _unmapped IS NOT NULL FROM purchase",
    );
    assert_eq!(kept, vec![vec![json!(true), json!(true)]]);
}
