//! What only the PostgreSQL backend has to show: processes sharing one
//! database, its table layout, and isolation the database enforces even
//! for a client that bypasses Rakam's SQL guard.

use std::thread;

use serde_json::{json, Value};
use tokio_postgres::NoTls;

use rakam_store_postgres::testing::TempDatabase;

use crate::server::{binary, TestServer};

/// Runs statements on their own connection; each result is its rows as
/// text, or the server's error message.
fn run_sql(url: &str, statements: &[&str]) -> Vec<Result<Vec<Vec<String>>, String>> {
    let url = url.to_string();
    let statements: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
            tokio::spawn(connection);
            let mut results = Vec::new();
            for sql in statements {
                let outcome = client.simple_query(&sql).await.map(|messages| {
                    messages
                        .into_iter()
                        .filter_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                                (0..row.len())
                                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                                    .collect(),
                            ),
                            _ => None,
                        })
                        .collect()
                });
                results.push(outcome.map_err(|e| {
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |db| db.message().to_string())
                }));
            }
            results
        })
    })
    .join()
    .expect("sql thread")
}

fn admin_url(server: &TestServer) -> String {
    server.database.as_ref().expect("postgres").url.clone()
}

/// The URL of `project`'s read-only role, and the project's schema name.
fn reader(server: &TestServer, project: &str) -> (String, String) {
    let admin = admin_url(server);
    let rows = run_sql(
        &admin,
        &[&format!(
            "SELECT reader_role, reader_password, id FROM rakam_meta.projects WHERE name = '{project}'"
        )],
    );
    let row = rows[0].as_ref().expect("project row")[0].clone();
    let (_, rest) = admin.split_once("://").expect("url");
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let url = format!("postgres://{}:{}@{host_and_db}", row[0], row[1]);
    (url, format!("rakam_{}", &row[2][..16]))
}

#[test]
fn two_servers_on_one_database_agree() {
    let first = TestServer::start();
    let second = TestServer::start_sharing(&first);
    let keys = first.create_project("shared");
    let writers: Vec<_> = (0..4_usize)
        .map(|writer| {
            let url = if writer % 2 == 0 {
                first.url("/event/batch")
            } else {
                second.url("/event/batch")
            };
            let key = keys.write.clone();
            thread::spawn(move || {
                for round in 0..25 {
                    let events: Vec<Value> = (0..20)
                        .map(|i| {
                            // Writer 1 sends fractions into the column writer 0
                            // starts as LONG: the widening races the inserts.
                            let amount = if writer == 1 {
                                json!(i as f64 + 0.5)
                            } else {
                                json!(i)
                            };
                            json!({"collection": "order", "properties": {
                                "n": round * 20 + i,
                                "amount": amount,
                                format!("w{writer}_{}", round % 3): "x",
                            }})
                        })
                        .collect();
                    let response = ureq::post(&url)
                        .send_json(json!({"api": {"api_key": key}, "events": events}));
                    assert!(
                        matches!(response, Ok(ref r) if r.status() == 200),
                        "{response:?}"
                    );
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    for server in [&first, &second] {
        assert_eq!(server.count(&keys, "SELECT count(*) FROM \"order\""), 2_000);
        let fractional = server.query(&keys, "SELECT sum(amount) FROM \"order\"");
        // 4 writers x 25 rounds x sum(0..20) = 19,000, plus 500 x 0.5 from writer 1.
        assert_eq!(fractional[0][0].as_f64(), Some(19_250.0));
    }
    let schema = |server: &TestServer| {
        server
            .post("/project/schema", &[("read_key", &keys.read)], &json!({}))
            .json()
    };
    assert_eq!(schema(&first), schema(&second));
    let text = schema(&first).to_string();
    assert!(text.contains("w3_2") && text.contains("DOUBLE"), "{text}");
}

#[test]
fn events_land_in_monthly_partitions_with_brin() {
    let server = TestServer::start();
    let keys = server.create_project("layout");
    for time in ["2024-01-15T10:00:00Z", "2024-03-02T00:00:00Z"] {
        assert_eq!(
            server
                .collect(&keys, "visit", json!({"_time": time}))
                .status,
            200
        );
    }
    let (_, schema) = reader(&server, "layout");
    let rows = run_sql(
        &admin_url(&server),
        &[
            &format!(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent
                 JOIN pg_namespace n ON n.oid = p.relnamespace
                 WHERE n.nspname = '{schema}_data' AND p.relname = 'visit' AND c.relkind = 'r' ORDER BY 1"
            ),
            &format!(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = '{schema}_data' AND indexdef LIKE '%USING brin (_time)%'"
            ),
        ],
    );
    let partitions: Vec<String> = rows[0]
        .as_ref()
        .expect("partitions")
        .iter()
        .map(|r| r[0].clone())
        .collect();
    // Each month that received events, and the month after it, made ahead
    // of time so a new month rarely waits for the table's lock.
    assert_eq!(
        partitions,
        [
            "visit$2024_01",
            "visit$2024_02",
            "visit$2024_03",
            "visit$2024_04"
        ]
    );
    // The partitioned parent's index and one per partition.
    assert_eq!(rows[1].as_ref().expect("indexes")[0][0], "5");
}

#[test]
fn the_database_itself_keeps_projects_apart() {
    let server = TestServer::start();
    let alpha = server.create_project("alpha");
    let beta = server.create_project("beta");
    assert_eq!(
        server.collect(&alpha, "secret", json!({"v": 1})).status,
        200
    );
    assert_eq!(server.collect(&beta, "mine", json!({"v": 2})).status, 200);
    let (_, alpha_schema) = reader(&server, "alpha");
    let (beta_url, beta_schema) = reader(&server, "beta");
    // A client holding beta's role bypasses Rakam's guard entirely.
    let results = run_sql(
        &beta_url,
        &[
            "SELECT count(*) FROM mine",
            &format!("SELECT count(*) FROM {alpha_schema}.secret"),
            &format!("SELECT count(*) FROM {alpha_schema}_data.secret"),
            &format!("SELECT count(*) FROM {beta_schema}_data.mine"),
            "SELECT count(*) FROM rakam_meta.api_keys",
            "SELECT set_config('role', 'postgres', false)",
            "SET ROLE postgres",
            "CREATE TABLE stolen (a int)",
            "INSERT INTO mine (_time, _server_time) VALUES (now(), now())",
            // Schema changes and migrations lock rows and tables of
            // rakam_meta, which a project's role cannot lock or even see.
            "SELECT 1 FROM rakam_meta.projects FOR UPDATE",
            "BEGIN; LOCK TABLE rakam_meta.schema_migrations",
            "ROLLBACK",
            "SELECT count(*) FROM mine",
        ],
    );
    assert_eq!(results[0], Ok(vec![vec!["1".to_string()]]));
    for (index, outcome) in results.iter().enumerate().take(11).skip(1) {
        assert!(
            outcome.is_err(),
            "statement {index} was allowed: {outcome:?}"
        );
    }
    assert!(
        matches!(&results[10], Err(message) if message.contains("permission denied")),
        "{:?}",
        results[10]
    );
    assert_eq!(results[12], Ok(vec![vec!["1".to_string()]]));

    // The same attempts through Rakam are refused, and leave nothing behind
    // on the pooled connection the next query gets.
    for sql in [
        "SELECT set_config('role', 'postgres', false)",
        "SELECT * FROM pg_catalog.pg_authid",
        "SELECT * FROM pg_roles",
        "SELECT * FROM rakam_meta.projects",
        &format!("SELECT * FROM {alpha_schema}.secret"),
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
    let moved = server.post(
        "/query/execute",
        &[("read_key", &beta.read)],
        &json!({"query": "SELECT set_config('search_path', 'public', false)"}),
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
    for _ in 0..4 {
        assert_eq!(server.count(&beta, "SELECT count(*) FROM mine"), 1);
    }
}

#[test]
fn the_cli_creates_projects_in_the_database() {
    let server = TestServer::start();
    let output = std::process::Command::new(binary())
        .args([
            "project",
            "create",
            "cli_made",
            "--store",
            "postgres",
            "--postgres-url",
            &admin_url(&server),
        ])
        .env("RAKAM_LOG", "warn")
        .env_remove("RAKAM_CONFIG")
        .output()
        .expect("run rakam project create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let keys: Value = serde_json::from_slice(&output.stdout).expect("keys as JSON");
    let write = keys["write_key"].as_str().expect("write key");
    let response = server.post(
        "/event/collect",
        &[],
        &json!({"collection": "e", "api": {"api_key": write}, "properties": {"a": 1}}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
}

#[test]
fn names_postgresql_would_cut_and_values_it_cannot_hold() {
    let server = TestServer::start();
    let keys = server.create_project("names");
    // A 63-byte field: widening it adds a physical column whose name must be
    // shortened, not cut into the old one.
    let edge = "f".repeat(63);
    assert_eq!(
        server
            .collect(&keys, "e", json!({ edge.as_str(): 1 }))
            .status,
        200
    );
    assert_eq!(
        server
            .collect(&keys, "e", json!({ edge.as_str(): 1.5 }))
            .status,
        200
    );
    let sum = server.query(&keys, &format!("SELECT sum({edge}) FROM e"));
    assert_eq!(sum[0][0].as_f64(), Some(2.5));
    // Longer than PostgreSQL keeps: kept whole in _unmapped.
    let long = "g".repeat(70);
    assert_eq!(
        server
            .collect(&keys, "e", json!({ long.as_str(): "kept" }))
            .status,
        200
    );
    let unmapped = server.query(&keys, "SELECT _unmapped FROM e WHERE _unmapped IS NOT NULL");
    assert_eq!(unmapped.len(), 1);
    assert!(unmapped[0][0].as_str().expect("json").contains(&long));
    // A 60-byte collection: its monthly partitions still get distinct names.
    let collection = "c".repeat(60);
    for time in ["2024-01-10T00:00:00Z", "2024-02-10T00:00:00Z"] {
        assert_eq!(
            server
                .collect(&keys, &collection, json!({"_time": time}))
                .status,
            200
        );
    }
    assert_eq!(
        server.count(&keys, &format!("SELECT count(*) FROM {collection}")),
        2
    );
    // Longer than 63 bytes: refused with a reason, nothing stored.
    let refused = server.collect(&keys, &"d".repeat(70), json!({"a": 1}));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("63 bytes"), "{}", refused.body);
    // PostgreSQL's text cannot hold U+0000: a 400 naming the field.
    let nul = server.collect(&keys, "e", json!({"note": "a\u{0}b"}));
    assert_eq!(nul.status, 400, "{}", nul.body);
    assert!(nul.body.contains("note"), "{}", nul.body);
    // A limit of 0 means no rows, not all of them.
    assert!(server
        .query_with_limit(&keys, "SELECT * FROM e", 0)
        .is_empty());
}

/// The documented privileges are enough: a user with CREATEROLE that owns
/// the database (no superuser) runs everything, deletion included.
#[test]
fn a_createrole_user_owning_the_database_is_enough() {
    let owner = format!("rakam_owner_{}", std::process::id());
    // Declared before the database, so dropped after it (the role owns it),
    // even when an assertion fails.
    let _owner_role = DropRole(owner.clone());
    let Some(database) = TempDatabase::create("the CREATEROLE-only test") else {
        return;
    };
    let name = database
        .url
        .rsplit('/')
        .next()
        .expect("database name")
        .to_string();
    let setup = run_sql(
        &database.url,
        &[
            &format!("CREATE ROLE {owner} LOGIN CREATEROLE"),
            &format!("ALTER DATABASE {name} OWNER TO {owner}"),
        ],
    );
    assert!(setup.iter().all(Result::is_ok), "{setup:?}");
    let url = database.url.replacen("postgres@", &format!("{owner}@"), 1);
    {
        let server = TestServer::start_on_postgres(&url);
        let keys = server.create_project("plain");
        assert_eq!(server.collect(&keys, "e", json!({"v": 1})).status, 200);
        assert_eq!(server.collect(&keys, "e", json!({"v": 1.5})).status, 200);
        assert_eq!(
            server.query(&keys, "SELECT sum(v) FROM e")[0][0].as_f64(),
            Some(2.5)
        );
        let role = run_sql(
            &database.url,
            &["SELECT reader_role FROM rakam_meta.projects WHERE name = 'plain'"],
        );
        let role = role[0].as_ref().expect("role")[0][0].clone();
        let deleted = server.post(
            "/project/delete",
            &[("master_key", &keys.master)],
            &json!({}),
        );
        assert_eq!(deleted.status, 200, "{}", deleted.body);
        let left = run_sql(
            &database.url,
            &[&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
            )],
        );
        assert_eq!(left[0], Ok(vec![vec!["0".to_string()]]));
    }
}

struct DropRole(String);

impl Drop for DropRole {
    fn drop(&mut self) {
        let _ = run_sql(
            &rakam_store_postgres::testing::admin_url(),
            &[&format!("DROP ROLE IF EXISTS {}", self.0)],
        );
    }
}
