use serde_json::json;

use crate::server::TestServer;

#[test]
fn two_projects_cannot_see_each_other() {
    let server = TestServer::start();
    let alpha = server.create_project("alpha");
    let beta = server.create_project("beta");
    assert_eq!(
        server.collect(&alpha, "secret", json!({"v": 1})).status,
        200
    );
    assert_eq!(
        server.collect(&beta, "public_data", json!({"v": 2})).status,
        200
    );

    for sql in [
        "SELECT * FROM secret",
        "SELECT * FROM alpha.secret",
        "SELECT * FROM rakam.alpha.secret",
    ] {
        let response = server.post(
            "/query/execute",
            &[("read_key", &beta.read)],
            &json!({"query": sql}),
        );
        assert!(
            (400..500).contains(&response.status),
            "{sql}: {}",
            response.body
        );
    }
    let all = server.query(&beta, "SELECT count(*), min(_collection) FROM _all");
    assert_eq!(all[0], vec![json!(1), json!("public_data")]);
    let collections = server.post(
        "/project/collection",
        &[("read_key", &beta.read)],
        &json!({}),
    );
    assert_eq!(collections.json(), json!(["public_data"]));
}

#[test]
fn keys_grant_what_their_kind_allows() {
    let server = TestServer::start();
    let keys = server.create_project("keys");
    assert_eq!(server.collect(&keys, "e", json!({})).status, 200);
    // A write key cannot read; a read key cannot write; a master key can do both.
    let read_with_write = server.post(
        "/query/execute",
        &[("read_key", &keys.write)],
        &json!({"query": "SELECT 1"}),
    );
    assert_eq!(read_with_write.status, 403);
    let write_with_read = server.post(
        "/event/collect",
        &[],
        &json!({"collection": "e", "api": {"api_key": keys.read}, "properties": {}}),
    );
    assert_eq!(write_with_read.status, 403);
    let master_reads = server.post(
        "/query/execute",
        &[("master_key", &keys.master)],
        &json!({"query": "SELECT count(*) FROM e"}),
    );
    assert_eq!(master_reads.status, 200, "{}", master_reads.body);
    let master_writes = server.post(
        "/event/collect",
        &[],
        &json!({"collection": "e", "api": {"api_key": keys.master}, "properties": {}}),
    );
    assert_eq!(master_writes.status, 200);
    let by_query_parameter = server.post(
        &format!("/project/collection?read_key={}", keys.read),
        &[],
        &json!({}),
    );
    assert_eq!(by_query_parameter.status, 200);

    let more = server.post(
        "/project/create-api-keys",
        &[("master_key", &keys.master)],
        &json!({}),
    );
    assert_eq!(more.status, 200);
    let new_read = more.json()["read_key"].as_str().expect("key").to_string();
    assert_eq!(
        server
            .post(
                "/project/collection",
                &[("read_key", &new_read)],
                &json!({})
            )
            .status,
        200
    );

    let listed = server.post("/project/list", &[], &json!({}));
    assert_eq!(listed.json(), json!(["keys"]));
    let deleted = server.request(
        "DELETE",
        "/project/delete",
        &[("master_key", &keys.master)],
        None,
    );
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        server
            .post(
                "/project/collection",
                &[("read_key", &keys.read)],
                &json!({})
            )
            .status,
        403
    );
}

#[test]
fn a_lock_key_guards_project_creation() {
    let server = TestServer::start_with(&["--lock-key", "s3cret"]);
    assert_eq!(
        server
            .post("/project/create", &[], &json!({"name": "p"}))
            .status,
        403
    );
    assert_eq!(
        server
            .post(
                "/project/create",
                &[],
                &json!({"name": "p", "lock_key": "wrong"})
            )
            .status,
        403
    );
    assert_eq!(
        server
            .post(
                "/project/create",
                &[],
                &json!({"name": "p", "lock_key": "s3cret"})
            )
            .status,
        200
    );
    assert_eq!(
        server
            .post(
                "/project/create",
                &[],
                &json!({"name": "p", "lock_key": "s3cret"})
            )
            .status,
        400
    );
}

#[test]
fn schema_add_declares_fields() {
    let server = TestServer::start();
    let keys = server.create_project("declared");
    let response = server.post(
        "/project/schema/add",
        &[("master_key", &keys.master)],
        &json!({"collection": "order", "fields": [{"name": "totalPrice", "type": "DOUBLE"}, {"name": "items", "type": "ARRAY_STRING"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let names: Vec<_> = response
        .json()
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert!(names.contains(&json!("total_price")) && names.contains(&json!("items")));
    // An integer now lands in the declared DOUBLE column.
    assert_eq!(
        server
            .collect(&keys, "order", json!({"totalPrice": 3}))
            .status,
        200
    );
    assert_eq!(
        server.query(&keys, "SELECT total_price FROM \"order\"")[0][0],
        json!(3.0)
    );
    let conflict = server.post(
        "/project/schema/add",
        &[("master_key", &keys.master)],
        &json!({"collection": "order", "fields": [{"name": "items", "type": "LONG"}]}),
    );
    assert_eq!(conflict.status, 400, "{}", conflict.body);
    let bad_type = server.post(
        "/project/schema/add",
        &[("master_key", &keys.master)],
        &json!({"collection": "order", "fields": [{"name": "x", "type": "MAP_STRING"}]}),
    );
    assert_eq!(bad_type.status, 400);
}
