//! After random interleavings of ingestion, refreshes, failed refreshes and
//! restarts, every view equals its SELECT run from scratch on the raw
//! events: full views after a refresh, incremental views summed, real-time
//! views at any moment. Half of the cases run on PostgreSQL when it is
//! there.

use std::sync::OnceLock;

use proptest::prelude::*;
use rakam_ingest::{Atomicity, EventInput, IngestLimits, Pipeline, RequestContext};
use rakam_query::{QueryEngine, QueryLimits};
use rakam_store_api::{Backend, ProjectInfo};
use rakam_store_postgres::testing::TempDatabase;
use rakam_test_support::{available, Backend as Kind};
use rakam_views::Views;
use serde_json::{json, Map, Value};

const URLS: [&str; 4] = ["/a", "/b", "/c", "/d"];

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

struct Location {
    dir: tempfile::TempDir,
    database: Option<TempDatabase>,
}

struct Server {
    backend: Backend,
    pipeline: Pipeline,
    views: Views,
    engine: QueryEngine,
}

impl Location {
    async fn open(&self) -> Server {
        let backend = match &self.database {
            None => rakam_store_embedded::open_backend(rakam_store_embedded::EmbeddedOptions::new(
                self.dir.path(),
            ))
            .await
            .expect("open embedded"),
            Some(database) => rakam_store_postgres::open_backend(
                rakam_store_postgres::PgOptions::new(database.url.clone()),
            )
            .await
            .expect("open postgres"),
        };
        let pipeline = Pipeline::new(
            backend.catalog.clone(),
            backend.sink.clone(),
            IngestLimits::default(),
        );
        let engine = QueryEngine::new(
            &backend,
            QueryLimits::from(&rakam_config::QueryConfig::default()),
        )
        .expect("engine");
        let views = Views::new(
            backend.views.clone(),
            backend.sink.clone(),
            backend.catalog.clone(),
            engine.clone(),
        );
        views.start().await.expect("views start");
        Server {
            backend,
            pipeline,
            views,
            engine,
        }
    }
}

impl Server {
    async fn stop(self) {
        self.views.stop().await;
        self.engine.stop();
        self.backend.sink.shutdown().await.expect("shutdown");
    }

    async fn ingest(&self, project: &ProjectInfo, events: &[(usize, i64)]) {
        let snapshot = self
            .backend
            .catalog
            .snapshot(&project.id)
            .await
            .expect("snapshot");
        let inputs = events
            .iter()
            .map(|(url, n)| {
                let mut properties = Map::new();
                properties.insert("url".into(), json!(URLS[*url]));
                properties.insert("n".into(), json!(n));
                Ok(EventInput {
                    collection: "pageview".into(),
                    properties,
                    upload_time: None,
                })
            })
            .collect();
        let outcome = self
            .pipeline
            .ingest(
                &snapshot,
                inputs,
                &RequestContext::default(),
                Atomicity::AllOrNothing,
            )
            .await
            .expect("ingest");
        assert!(outcome.failed.is_empty());
    }

    async fn rows(&self, project: &ProjectInfo, sql: &str) -> Vec<Vec<Value>> {
        let snapshot = self
            .backend
            .catalog
            .snapshot(&project.id)
            .await
            .expect("snapshot");
        let output = self.engine.execute(&snapshot, sql, None).await.expect(sql);
        rakam_query::rows_as_json(&output.batches)
            .expect("json")
            .into_iter()
            .map(|row| row.into_iter().map(normal).collect())
            .collect()
    }
}

/// Counts and sums come back as integers or floats depending on the
/// backend and the path; compare them as numbers.
fn normal(value: Value) -> Value {
    match value.as_f64() {
        Some(number) => json!(number),
        None => value,
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn use_postgres(case: u64) -> bool {
    static POSTGRES: OnceLock<bool> = OnceLock::new();
    case % 2 == 1
        && *POSTGRES.get_or_init(|| available(Kind::Postgres, "half of the view property cases"))
}

async fn run(steps: Vec<Step>, on_postgres: bool) {
    let location = Location {
        dir: tempfile::tempdir().expect("tempdir"),
        database: if on_postgres {
            Some(TempDatabase::create("the view property test").expect("database"))
        } else {
            None
        },
    };
    let mut server = location.open().await;
    let (project, _) = server
        .backend
        .catalog
        .create_project("viewed")
        .await
        .expect("project");
    // A first event makes the collection the views read.
    server.ingest(&project, &[(0, 1)]).await;
    let snapshot = server
        .backend
        .catalog
        .snapshot(&project.id)
        .await
        .expect("snapshot");
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
                let snapshot = server
                    .backend
                    .catalog
                    .snapshot(&project.id)
                    .await
                    .expect("snapshot");
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
        let snapshot = server
            .backend
            .catalog
            .snapshot(&project.id)
            .await
            .expect("snapshot");
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
        block_on(run(steps, use_postgres(case)));
    }
}

#[test]
fn a_view_reads_only_its_project() {
    block_on(async {
        let location = Location {
            dir: tempfile::tempdir().expect("tempdir"),
            database: None,
        };
        let server = location.open().await;
        let (mine, _) = server
            .backend
            .catalog
            .create_project("mine")
            .await
            .expect("project");
        let (theirs, _) = server
            .backend
            .catalog
            .create_project("theirs")
            .await
            .expect("project");
        server.ingest(&mine, &[(0, 1)]).await;
        server.ingest(&theirs, &[(1, 2)]).await;
        let snapshot = server
            .backend
            .catalog
            .snapshot(&mine.id)
            .await
            .expect("snapshot");
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
        let snapshot = server
            .backend
            .catalog
            .snapshot(&theirs.id)
            .await
            .expect("snapshot");
        let other = server
            .engine
            .execute(&snapshot, "SELECT * FROM materialized.v", None)
            .await;
        assert!(other.is_err(), "another project's view was readable");
        server.stop().await;
    });
}
