//! After random interleavings of ingestion, refreshes, failed refreshes and
//! restarts, every view equals its SELECT run from scratch on the raw
//! events: full views after a refresh, incremental views summed, real-time
//! views at any moment. Half of the cases run on PostgreSQL when it is
//! there.

mod common;

use common::{block_on, use_postgres, Location, URLS};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Step {
    /// Events as (url index, n).
    Ingest(Vec<(usize, i64)>),
    Refresh(usize),
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec((0..URLS.len(), -5_i64..50), 1..12).prop_map(Step::Ingest),
        3 => (0..3_usize).prop_map(Step::Refresh),
        1 => Just(Step::Restart),
    ]
}

const AGGREGATE: &str = "SELECT url, count(*) AS hits, sum(n) AS total FROM pageview GROUP BY url";
/// (name, incremental, real_time)
const VIEWS: [(&str, bool, bool); 3] = [
    ("full", false, false),
    ("inc", true, false),
    ("live", true, true),
];

async fn run(steps: Vec<Step>, on_postgres: bool) {
    let location = Location::new(on_postgres, "the view property test");
    let mut server = location.open().await;
    let project = server.create_project("viewed").await;
    // A first event makes the collection the views read.
    server.ingest(&project, &[(0, 1)]).await;
    let snapshot = server.snapshot(&project).await;
    for (name, incremental, real_time) in VIEWS {
        let request = json!({
            "table_name": name, "name": name, "query": AGGREGATE,
            "incremental": incremental, "real_time": real_time,
        });
        server
            .views
            .create(&snapshot, request)
            .await
            .expect("create");
    }
    let scratch = "SELECT url, count(*), sum(n) FROM pageview GROUP BY url ORDER BY url";
    let summed = |name: &str| {
        format!(
            "SELECT url, sum(hits), sum(total) FROM materialized.{name} GROUP BY url ORDER BY url"
        )
    };
    for step in steps {
        match step {
            Step::Ingest(events) => server.ingest(&project, &events).await,
            Step::Restart => {
                server.stop().await;
                server = location.open().await;
            }
            Step::Refresh(index) => {
                let (name, _, _) = VIEWS[index];
                let snapshot = server.snapshot(&project).await;
                server
                    .views
                    .refresh(&snapshot, name)
                    .await
                    .expect("refresh");
                let expected = server.rows(&project, scratch).await;
                assert_eq!(
                    server.rows(&project, &summed(name)).await,
                    expected,
                    "{name} after a refresh"
                );
            }
        }
        let expected = server.rows(&project, scratch).await;
        assert_eq!(
            server.rows(&project, &summed("live")).await,
            expected,
            "real-time view"
        );
    }
    for (name, _, _) in VIEWS {
        let snapshot = server.snapshot(&project).await;
        server
            .views
            .refresh(&snapshot, name)
            .await
            .expect("refresh");
        let expected = server.rows(&project, scratch).await;
        assert_eq!(
            server.rows(&project, &summed(name)).await,
            expected,
            "{name} at the end"
        );
    }
    server.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn views_equal_their_query_from_scratch(
        steps in prop::collection::vec(step(), 1..14),
        case in any::<u64>(),
    ) {
        block_on(run(steps, use_postgres(case, "half of the view property cases")));
    }
}

#[test]
fn a_view_reads_only_its_project() {
    block_on(async {
        let location = Location::new(false, "");
        let server = location.open().await;
        let mine = server.create_project("mine").await;
        let theirs = server.create_project("theirs").await;
        server.ingest(&mine, &[(0, 1)]).await;
        server.ingest(&theirs, &[(1, 2)]).await;
        let snapshot = server.snapshot(&mine).await;
        server
            .views
            .create(
                &snapshot,
                json!({"table_name": "v", "query": "SELECT url FROM pageview"}),
            )
            .await
            .expect("create");
        assert_eq!(
            server.rows(&mine, "SELECT * FROM materialized.v").await,
            [[json!("/a")]]
        );
        let snapshot = server.snapshot(&theirs).await;
        let other = server
            .engine
            .execute(&snapshot, "SELECT * FROM materialized.v", None)
            .await;
        assert!(other.is_err(), "another project's view was readable");
        server.stop().await;
    });
}
