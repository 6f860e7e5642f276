//! One tenant cannot starve the others: a query is stopped at its timeout
//! (CPU back to idle), when its client leaves and when the server stops;
//! its memory is bounded; a project's queries wait for its own slots; `_all`
//! plans in time linear in the collections. Timeouts here are short, so
//! each case runs in seconds.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{on_postgres, Keys, TestServer};

/// Enough rows that a self cross join with a regular expression runs for
/// minutes.
fn load_strings(server: &TestServer, keys: &Keys, rows: usize) {
    let events: Vec<Value> = (0..rows)
        .map(|i| json!({"collection": "big", "properties": {"s": format!("str{i:06}")}}))
        .collect();
    let response = server.batch(keys, events);
    assert_eq!(response.status, 200, "{}", response.body);
}

const RUNAWAY: &str = "SELECT count(*) FROM big a CROSS JOIN big b \
                       WHERE regexp_like(a.s || b.s, '^(str0+1.*){1,3}c$')";

fn query(server: &TestServer, keys: &Keys, sql: &str) -> crate::server::Response {
    server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": sql}),
    )
}

/// CPU the server burns over one second.
fn cpu_over_a_second(server: &TestServer) -> f64 {
    let before = server.cpu_seconds();
    std::thread::sleep(Duration::from_secs(1));
    server.cpu_seconds() - before
}

fn wait_until_idle(server: &TestServer, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    let mut used = cpu_over_a_second(server);
    while used > 0.25 && Instant::now() < deadline {
        used = cpu_over_a_second(server);
    }
    used
}

#[test]
fn a_runaway_query_stops_at_its_timeout_and_never_starves_ingest() {
    if on_postgres() {
        // PostgreSQL runs the statement in its own processes, under its own
        // statement_timeout; the embedded store's query threads are tested.
        return;
    }
    let server = TestServer::start_with_env(&[], &[("RAKAM_QUERY__STATEMENT_TIMEOUT_SECS", "3")]);
    let heavy = server.create_project("heavy");
    let other = server.create_project("other");
    load_strings(&server, &heavy, 20_000);
    std::thread::scope(|scope| {
        let runaway = scope.spawn(|| {
            let started = Instant::now();
            let response = query(&server, &heavy, RUNAWAY);
            (response, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        // Meanwhile another project collects, queries, and /health answers.
        for i in 0..10 {
            let started = Instant::now();
            assert_eq!(server.get("/health").status, 200);
            assert_eq!(server.collect(&other, "e", json!({"i": i})).status, 200);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "ingest waited {:?} behind a runaway query",
                started.elapsed()
            );
        }
        let (response, took) = runaway.join().expect("runaway query");
        assert_eq!(response.status, 408, "{}", response.body);
        assert_eq!(response.json()["error_code"], json!(4003));
        assert!(took < Duration::from_secs(6), "answered after {took:?}");
    });
    // Within a second on a quiet machine; the suite runs beside other tests.
    let idle = wait_until_idle(&server, Duration::from_secs(6));
    assert!(idle < 0.25, "still {idle:.2} CPU-s/s after the timeout");
    assert_eq!(server.count(&other, "SELECT count(*) FROM e"), 10);
}

#[test]
fn a_query_whose_client_leaves_or_whose_server_stops_is_ended() {
    if on_postgres() {
        return;
    }
    let mut server =
        TestServer::start_with_env(&[], &[("RAKAM_QUERY__STATEMENT_TIMEOUT_SECS", "600")]);
    let keys = server.create_project("leaving");
    load_strings(&server, &keys, 20_000);
    // The client gives up after a second.
    let gone = ureq::post(&server.url("/query/execute"))
        .set("read_key", &keys.read)
        .timeout(Duration::from_secs(1))
        .send_json(json!({"query": RUNAWAY}));
    assert!(gone.is_err(), "the runaway query answered");
    let idle = wait_until_idle(&server, Duration::from_secs(6));
    assert!(idle < 0.25, "still {idle:.2} CPU-s/s after the client left");

    // SIGTERM while a query runs: the server stops in seconds anyway.
    let url = server.url("/query/execute");
    let read = keys.read.clone();
    let running = std::thread::spawn(move || {
        ureq::post(&url)
            .set("read_key", &read)
            .timeout(Duration::from_secs(60))
            .send_json(json!({"query": RUNAWAY}))
            .map(|r| r.status())
            .unwrap_or_else(|e| match e {
                ureq::Error::Status(status, _) => status,
                ureq::Error::Transport(_) => 0,
            })
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        server.terminate(Duration::from_secs(10)),
        "the server did not stop within 10 s of SIGTERM with a query running"
    );
    let status = running.join().expect("query thread");
    assert!(status == 503 || status == 0, "status {status}");
}

#[test]
fn query_memory_is_bounded_with_a_clear_error() {
    let server =
        TestServer::start_with_env(&[], &[("RAKAM_QUERY__MEMORY_PER_QUERY_BYTES", "67108864")]);
    let keys = server.create_project("memory");
    assert_eq!(server.collect(&keys, "e", json!({"n": 1})).status, 200);
    if on_postgres() {
        // PostgreSQL computes the result; what Rakam holds of it is counted.
        let wide = (0..100)
            .map(|i| format!("{i} AS c{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let response = server.post(
            "/query/execute",
            &[("read_key", &keys.read)],
            &json!({"query": format!("SELECT {wide} FROM generate_series(1, 1000000)"), "limit": 1000000}),
        );
        assert_eq!(response.status, 400, "{}", response.body);
        assert_eq!(response.json()["error_code"], json!(4007));
        return;
    }
    let wide = (0..100)
        .map(|i| format!("{i} AS c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    // The wide result is refused as it is collected, and `repeat` or `lpad`
    // before they build their values: all well under a gigabyte.
    for (sql, rss_bound) in [
        (format!("SELECT {wide} FROM range(1000000)"), 1_000_000_000),
        (
            "SELECT repeat('x', 100000000) FROM range(10)".to_string(),
            1_000_000_000,
        ),
        (
            "SELECT lpad('x', 100000000) FROM range(10)".to_string(),
            1_000_000_000,
        ),
    ] {
        let response = server.post(
            "/query/execute",
            &[("read_key", &keys.read)],
            &json!({"query": sql, "limit": 1000000}),
        );
        assert_eq!(response.status, 400, "{}", response.body);
        let body = response.json();
        assert_eq!(body["error_code"], json!(4007), "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("query.memory_per_query_bytes")),
            "{body}"
        );
        assert!(
            server.rss_bytes() < rss_bound,
            "RSS {} after a refused query",
            server.rss_bytes()
        );
    }
    // A result that fits still comes back whole.
    assert_eq!(
        server
            .query_with_limit(&keys, "SELECT value FROM range(100000)", 100000)
            .len(),
        100000
    );
}

#[test]
fn a_project_waits_for_its_own_query_slots_only() {
    if on_postgres() {
        return;
    }
    let server = TestServer::start_with_env(
        &[],
        &[
            ("RAKAM_QUERY__STATEMENT_TIMEOUT_SECS", "3"),
            ("RAKAM_QUERY__MAX_CONCURRENT_PER_PROJECT", "1"),
        ],
    );
    let busy = server.create_project("busy");
    let calm = server.create_project("calm");
    load_strings(&server, &busy, 20_000);
    assert_eq!(server.collect(&calm, "e", json!({"n": 1})).status, 200);
    std::thread::scope(|scope| {
        let first = scope.spawn(|| query(&server, &busy, RUNAWAY));
        std::thread::sleep(Duration::from_millis(500));
        // Another project's query runs at once...
        let started = Instant::now();
        assert_eq!(server.count(&calm, "SELECT count(*) FROM e"), 1);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // ...while this project's second query waits for the first's slot,
        // which frees when the first is stopped at its timeout.
        let started = Instant::now();
        let second = query(&server, &busy, "SELECT count(*) FROM big");
        assert_eq!(second.status, 200, "{}", second.body);
        assert!(
            started.elapsed() > Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(first.join().expect("first").status, 408);
    });
    // The slot is free again.
    assert_eq!(server.count(&busy, "SELECT count(*) FROM big"), 20_000);
}

#[test]
fn all_collections_plans_in_linear_time_and_collections_are_limited() {
    // PostgreSQL creates a partitioned table and a view per collection,
    // tens of milliseconds each here: fewer of them there.
    let collections: usize = if on_postgres() { 100 } else { 400 };
    let limit = collections.to_string();
    let server = TestServer::start_with_env(
        &[],
        &[("RAKAM_LIMITS__MAX_COLLECTIONS_PER_PROJECT", limit.as_str())],
    );
    let keys = server.create_project("many");
    let events: Vec<Value> = (0..collections)
        .map(|i| json!({"collection": format!("c{i}"), "properties": {format!("f{i}"): i, "shared": i}}))
        .collect();
    let response = server.batch(&keys, events);
    assert_eq!(response.status, 200, "{}", response.body);
    let started = Instant::now();
    assert_eq!(
        server.count(&keys, "SELECT count(*) FROM _all"),
        collections as i64
    );
    assert_eq!(
        server.count(
            &keys,
            "SELECT sum(shared) FROM _all WHERE _collection IN ('c7', 'c9')"
        ),
        16
    );
    let last = collections - 1;
    assert_eq!(
        server.count(
            &keys,
            &format!("SELECT count(f{last}) FROM _all WHERE _collection = 'c{last}'")
        ),
        1
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "_all over {collections} collections took {took:?}"
    );

    let over = server.collect(&keys, "one_too_many", json!({"n": 1}));
    assert_eq!(over.status, 400, "{}", over.body);
    assert_eq!(over.json()["error_code"], json!(3007));
    assert!(
        over.body.contains("max_collections_per_project"),
        "{}",
        over.body
    );
    // Existing collections still take events.
    assert_eq!(server.collect(&keys, "c1", json!({"n": 1})).status, 200);
}

#[test]
fn explain_shows_no_paths_or_ids_and_metrics_need_a_token() {
    let server = TestServer::start_with_env(&[], &[("RAKAM_SERVER__METRICS_TOKEN", "s3cret")]);
    let keys = server.create_project("explained");
    assert_eq!(server.collect(&keys, "e", json!({"n": 1})).status, 200);
    let plan = server.post(
        "/query/execute",
        &[("read_key", &keys.read)],
        &json!({"query": "EXPLAIN SELECT * FROM e WHERE n > 0"}),
    );
    assert_eq!(plan.status, 200, "{}", plan.body);
    let data_dir = server.data_dir().to_string_lossy().to_string();
    assert!(!plan.body.contains(&data_dir), "{}", plan.body);
    if let Ok(entries) = std::fs::read_dir(server.data_dir().join("tables")) {
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().to_string();
            assert!(!plan.body.contains(&id), "{}", plan.body);
        }
    }

    assert_eq!(server.get("/metrics").status, 403);
    let wrong = server.request("GET", "/metrics", &[("authorization", "Bearer nope")], None);
    assert_eq!(wrong.status, 403);
    let right = server.request(
        "GET",
        "/metrics",
        &[("authorization", "Bearer s3cret")],
        None,
    );
    assert_eq!(right.status, 200);
    assert!(right.body.contains("rakam_"), "{}", right.body);
}

#[test]
fn a_same_host_proxy_is_not_taken_for_a_local_client() {
    let server = TestServer::start();
    assert_eq!(server.get("/metrics").status, 200);
    let proxied = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(
        server.request("GET", "/metrics", &proxied, None).status,
        403
    );
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(&proxied);
    let create = server.request(
        "POST",
        "/project/create",
        &headers,
        Some(br#"{"name": "sneaky"}"#),
    );
    assert_eq!(create.status, 403, "{}", create.body);

    let strict = TestServer::start_with_env(&[], &[("RAKAM_SERVER__TRUST_LOOPBACK", "false")]);
    let refused = strict.post("/project/create", &[], &json!({"name": "local"}));
    assert_eq!(refused.status, 403, "{}", refused.body);
}
