//! After random interleavings of ingestion, refreshes, compactions and
//! restarts, every continuous query read at any moment equals its SELECT
//! run from scratch on the raw events (its approximate distinct count
//! equals the same sketch computed from scratch), and so does a real-time
//! report over the events received since its creation. Half of the cases run on
//! PostgreSQL when it is there.

mod common;

use common::{block_on, use_postgres, Location, Server, URLS};
use proptest::prelude::*;
use rakam_store_api::ProjectInfo;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
enum Step {
    /// Events as (url index, n).
    Ingest(Vec<(usize, i64)>),
    Refresh(usize),
    Compact(usize),
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec((0..URLS.len(), -5_i64..50), 1..12).prop_map(Step::Ingest),
        2 => (0..QUERIES.len()).prop_map(Step::Refresh),
        1 => (0..QUERIES.len()).prop_map(Step::Compact),
        1 => Just(Step::Restart),
    ]
}

/// (name, the continuous query, the same from scratch)
const QUERIES: [(&str, &str, &str); 3] = [
    (
        "by_url",
        "SELECT url, count(*) AS hits, sum(n) AS total, min(n) AS lo, max(n) AS hi, avg(n) AS mean, approx_distinct(n) AS values FROM pageview GROUP BY url",
        "SELECT url, count(*) AS hits, sum(n) AS total, min(n) AS lo, max(n) AS hi, avg(n) AS mean, rakam_hll_estimate(rakam_hll_sketch(n)) AS values FROM pageview GROUP BY url",
    ),
    (
        "overall",
        "SELECT count(*) AS events, sum(n) FILTER (WHERE n > 10) AS big FROM pageview",
        "SELECT count(*) AS events, sum(n) FILTER (WHERE n > 10) AS big FROM pageview",
    ),
    (
        "busy",
        "SELECT upper(url) AS page, count(*) * 2 AS twice FROM pageview WHERE n >= 0 GROUP BY url HAVING count(*) > 1",
        "SELECT upper(url) AS page, count(*) * 2 AS twice FROM pageview WHERE n >= 0 GROUP BY url HAVING count(*) > 1",
    ),
];

async fn create(server: &Server, project: &ProjectInfo, name: &str, query: &str, replay: bool) {
    let snapshot = server.snapshot(project).await;
    server
        .views
        .create_continuous(
            &snapshot,
            json!({"continuous_query": {"table_name": name, "name": name, "query": query}, "replay": replay}),
        )
        .await
        .expect("create");
}

async fn check_all(server: &Server, project: &ProjectInfo, moment: &str) {
    for (name, _, scratch) in QUERIES {
        let expected = server
            .rows_in_datafusion(project, &format!("{scratch} ORDER BY 1"))
            .await;
        let read = server
            .rows(
                project,
                &format!("SELECT * FROM continuous.{name} ORDER BY 1"),
            )
            .await;
        assert_eq!(read, expected, "{name} {moment}");
    }
    check_realtime(server, project, moment).await;
}

/// The real-time report over every slide equals the query from scratch
/// over the events received after its creation.
async fn check_realtime(server: &Server, project: &ProjectInfo, moment: &str) {
    let created = server
        .views
        .get_continuous(&project.id, "live")
        .await
        .expect("get")["created_at"]
        .as_i64()
        .expect("created_at");
    let expected = server
        .rows_in_datafusion(
            project,
            &format!("SELECT url, sum(n) FROM pageview WHERE _server_time > to_timestamp_millis({created}) GROUP BY url ORDER BY 1"),
        )
        .await;
    let snapshot = server.snapshot(project).await;
    let now = created / 1000;
    let answer = server
        .views
        .query_realtime(
            &snapshot,
            json!({"table_name": "live", "measure": {"column": "n", "aggregation": "SUM"},
                   "dimensions": ["url"], "aggregate": true,
                   "date_start": now - 60, "date_end": now + 3600}),
        )
        .await
        .expect("realtime");
    let read: Vec<Vec<Value>> = answer["result"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .cloned()
                .map(common::normal)
                .collect()
        })
        .collect();
    assert_eq!(read, expected, "real-time report {moment}");
}

async fn run(steps: Vec<Step>, on_postgres: bool) {
    let location = Location::new(on_postgres, "the continuous query property test");
    let mut server = location.open().await;
    let project = server.create_project("continuous").await;
    server.ingest(&project, &[(0, 1), (1, 20)]).await;
    for (name, query, _) in QUERIES {
        create(&server, &project, name, query, true).await;
    }
    let snapshot = server.snapshot(&project).await;
    server
        .views
        .create_realtime(
            &snapshot,
            json!({"name": "live", "table_name": "live", "collections": ["pageview"],
                   "measures": [{"column": "n", "aggregation": "SUM"}], "dimensions": ["url"]}),
        )
        .await
        .expect("realtime");
    check_all(&server, &project, "after creation").await;
    for step in steps {
        match &step {
            Step::Ingest(events) => server.ingest(&project, events).await,
            Step::Restart => {
                server.stop().await;
                server = location.open().await;
            }
            Step::Refresh(index) => {
                let snapshot = server.snapshot(&project).await;
                server
                    .views
                    .refresh_continuous(&snapshot, QUERIES[*index].0)
                    .await
                    .expect("refresh");
            }
            Step::Compact(index) => {
                let snapshot = server.snapshot(&project).await;
                server
                    .views
                    .compact_continuous(&snapshot, QUERIES[*index].0)
                    .await
                    .expect("compact");
            }
        }
        check_all(&server, &project, &format!("after {step:?}")).await;
    }
    server.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn continuous_queries_equal_their_query_from_scratch(
        steps in prop::collection::vec(step(), 1..14),
        case in any::<u64>(),
    ) {
        block_on(run(steps, use_postgres(case, "half of the continuous query property cases")));
    }
}

/// Each query that cannot be maintained is refused with its reason.
#[test]
fn unmaintainable_queries_are_refused_with_the_reason() {
    block_on(async {
        let location = Location::new(false, "");
        let server = location.open().await;
        let project = server.create_project("refused").await;
        server.ingest(&project, &[(0, 1)]).await;
        let snapshot = server.snapshot(&project).await;
        for (query, reason) in [
            (
                "SELECT count(DISTINCT url) FROM pageview",
                "approx_distinct",
            ),
            (
                "SELECT median(n) FROM pageview",
                "median() cannot be maintained",
            ),
            (
                "SELECT url, n FROM pageview GROUP BY url",
                "column n is neither in GROUP BY",
            ),
            (
                "SELECT url FROM pageview",
                "column url is neither in GROUP BY",
            ),
            (
                "SELECT count(*) FROM pageview ORDER BY 1",
                "ORDER BY and LIMIT",
            ),
            (
                "SELECT count(*) FROM pageview LIMIT 3",
                "ORDER BY and LIMIT",
            ),
            (
                "SELECT count(*) FROM pageview a JOIN pageview b ON a.n = b.n",
                "joins",
            ),
            (
                "SELECT count(*) FROM (SELECT * FROM pageview) t",
                "not a subquery",
            ),
            (
                "SELECT count(*) FROM pageview WHERE n IN (SELECT n FROM pageview)",
                "subqueries",
            ),
            (
                "SELECT row_number() OVER () FROM pageview",
                "window functions",
            ),
            ("WITH t AS (SELECT 1) SELECT count(*) FROM pageview", "WITH"),
            ("SELECT * FROM pageview", "*"),
            ("SELECT count(*) FROM nosuch", "nosuch"),
            ("SELECT count(*) FROM materialized.x", "collection"),
            (
                "SELECT count(*) AS a, sum(n) AS a FROM pageview",
                "same name",
            ),
            ("SELECT count(*) AS \"$a0\" FROM pageview", "starts with $"),
        ] {
            let error = server
                .views
                .check_continuous(&snapshot, query)
                .await
                .expect_err(query);
            assert!(
                error.to_string().contains(reason),
                "{query}: {error} does not say {reason:?}"
            );
        }
        // A chain deep enough to overflow a parser's stack is refused by the
        // checks every statement gets, before it becomes a tree.
        let deep = format!(
            "SELECT count(*) FROM pageview WHERE n = {}1",
            "1+".repeat(300_000)
        );
        let error = server
            .views
            .check_continuous(&snapshot, &deep)
            .await
            .expect_err("a 300,000-deep expression");
        assert!(!error.to_string().is_empty());
        // A real-time report's filter is one expression, not SQL to paste.
        let injected = server
            .views
            .create_realtime(
                &snapshot,
                json!({"name": "r", "table_name": "r", "collections": ["pageview"],
                       "measures": [{"column": "n", "aggregation": "SUM"}],
                       "filter": "n > 0) GROUP BY url --"}),
            )
            .await
            .expect_err("a filter that closes the WHERE");
        assert!(
            injected.to_string().contains("one SQL expression"),
            "{injected}"
        );
        // A continuous query cannot pass for a real-time report.
        server
            .views
            .create_continuous(
                &snapshot,
                json!({"table_name": "posing", "query": "SELECT count(*) AS c FROM pageview",
                       "options": {"realtime": {"table_name": "posing", "measures": []}}}),
            )
            .await
            .expect("create");
        assert!(server
            .views
            .list_realtime(&project.id)
            .await
            .expect("list")
            .is_empty());
        server.stop().await;
    });
}

/// Without `replay`, a continuous query counts only the events received
/// after its creation; with it, the whole collection.
#[test]
fn replay_decides_whether_history_counts() {
    block_on(async {
        let location = Location::new(false, "");
        let server = location.open().await;
        let project = server.create_project("replayed").await;
        server.ingest(&project, &[(0, 1), (1, 2), (2, 3)]).await;
        let query = "SELECT count(*) AS events, sum(n) AS total FROM pageview";
        create(&server, &project, "history", query, true).await;
        create(&server, &project, "fresh", query, false).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        server.ingest(&project, &[(3, 10)]).await;
        let read = |name: &'static str| {
            let (server, project) = (&server, &project);
            async move {
                server
                    .rows(project, &format!("SELECT * FROM continuous.{name}"))
                    .await
            }
        };
        assert_eq!(read("history").await, [[json!(4.0), json!(16.0)]]);
        assert_eq!(read("fresh").await, [[json!(1.0), json!(10.0)]]);
        let described = server
            .views
            .get_continuous(&project.id, "fresh")
            .await
            .expect("get");
        assert_eq!(described["replay"], Value::Bool(false));
        assert_eq!(described["query"], json!(query));
        assert!(
            server
                .views
                .list(&project.id)
                .await
                .expect("list")
                .is_empty(),
            "a continuous query is not a materialized view"
        );
        server.stop().await;
    });
}

/// A real-time report read within a query's memory: over it, an error,
/// not a server out of memory.
#[test]
fn realtime_reports_are_read_within_the_query_memory() {
    block_on(async {
        let location = Location::new(false, "");
        let limits = rakam_query::QueryLimits {
            memory_per_query_bytes: 16 * 1024,
            ..rakam_query::QueryLimits::from(&rakam_config::QueryConfig::default())
        };
        let server = location.open_with(limits).await;
        let project = server.create_project("bounded").await;
        server.ingest(&project, &[(0, 1)]).await;
        let snapshot = server.snapshot(&project).await;
        server
            .views
            .create_realtime(
                &snapshot,
                json!({"name": "wide", "table_name": "wide", "collections": ["pageview"],
                       "measures": [{"column": "n", "aggregation": "SUM"}], "dimensions": ["n2"]}),
            )
            .await
            .expect_err("no column n2 yet");
        server
            .views
            .create_realtime(
                &snapshot,
                json!({"name": "wide", "table_name": "wide", "collections": ["pageview"],
                       "measures": [{"column": "url", "aggregation": "COUNT"}], "dimensions": ["n"]}),
            )
            .await
            .expect("create");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        // 20,000 groups (one per value of n) in the window.
        let events: Vec<(usize, i64)> = (0..20_000).map(|n| (n % 4, n as i64)).collect();
        server.ingest(&project, &events).await;
        let error = server
            .views
            .query_realtime(
                &snapshot,
                json!({"table_name": "wide", "measure": {"column": "url", "aggregation": "COUNT"},
                       "dimensions": ["n"], "aggregate": true,
                       "date_start": now - 600, "date_end": now + 600}),
            )
            .await
            .expect_err("20,000 groups in 16 KiB");
        assert!(
            error.to_string().to_lowercase().contains("memory")
                || error.to_string().contains("Resources exhausted"),
            "{error}"
        );
        server.stop().await;
    });
}
