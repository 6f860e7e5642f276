//! The servers the property tests run: an embedded or PostgreSQL backend
//! with the ingest pipeline, the query engine and the views service, that
//! can be stopped and opened again on the same data.

#![allow(dead_code)]

use std::sync::OnceLock;

use rakam_ingest::{Atomicity, EventInput, IngestLimits, Pipeline, RequestContext};
use rakam_query::{QueryEngine, QueryLimits};
use rakam_store_api::{Backend, ProjectInfo, ProjectSnapshot};
use rakam_store_postgres::testing::TempDatabase;
use rakam_test_support::{available, Backend as Kind};
use rakam_views::Views;
use serde_json::{json, Map, Value};

pub const URLS: [&str; 4] = ["/a", "/b", "/c", "/d"];

pub struct Location {
    pub dir: tempfile::TempDir,
    pub database: Option<TempDatabase>,
}

pub struct Server {
    pub backend: Backend,
    pub pipeline: Pipeline,
    pub views: Views,
    pub engine: QueryEngine,
}

impl Location {
    pub async fn open(&self) -> Server {
        self.open_with(QueryLimits::from(&rakam_config::QueryConfig::default()))
            .await
    }

    /// The server with these query limits.
    pub async fn open_with(&self, limits: QueryLimits) -> Server {
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
        let engine = QueryEngine::new(&backend, limits).expect("engine");
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
    pub async fn stop(self) {
        self.views.stop().await;
        self.engine.stop();
        self.backend.sink.shutdown().await.expect("shutdown");
    }

    pub async fn ingest(&self, project: &ProjectInfo, events: &[(usize, i64)]) {
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

    pub async fn rows(&self, project: &ProjectInfo, sql: &str) -> Vec<Vec<Value>> {
        let snapshot = self.snapshot(project).await;
        let output = self.engine.execute(&snapshot, sql, None).await.expect(sql);
        as_rows(&output.batches)
    }

    pub async fn create_project(&self, name: &str) -> ProjectInfo {
        let (project, _) = self
            .backend
            .catalog
            .create_project(name)
            .await
            .expect("project");
        project
    }
}

/// Counts and sums come back as integers or floats depending on the
/// backend and the path; compare them as numbers.
pub fn normal(value: Value) -> Value {
    match value.as_f64() {
        Some(number) => json!(number),
        None => value,
    }
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

pub fn use_postgres(case: u64, what: &str) -> bool {
    static POSTGRES: OnceLock<bool> = OnceLock::new();
    case % 2 == 1 && *POSTGRES.get_or_init(|| available(Kind::Postgres, what))
}

impl Location {
    /// A new location: a temporary directory, and a new PostgreSQL database
    /// when `on_postgres`.
    pub fn new(on_postgres: bool, what: &str) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            database: on_postgres.then(|| TempDatabase::create(what).expect("database")),
        }
    }
}

impl Server {
    pub async fn snapshot(&self, project: &ProjectInfo) -> std::sync::Arc<ProjectSnapshot> {
        self.backend
            .catalog
            .snapshot(&project.id)
            .await
            .expect("snapshot")
    }

    /// Rows of a statement run in DataFusion on every backend.
    pub async fn rows_in_datafusion(&self, project: &ProjectInfo, sql: &str) -> Vec<Vec<Value>> {
        let snapshot = self.snapshot(project).await;
        let output = self
            .engine
            .execute_in_datafusion(&snapshot, sql, None)
            .await
            .expect(sql);
        as_rows(&output.batches)
    }
}

fn as_rows(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Vec<Vec<Value>> {
    rakam_query::rows_as_json(batches)
        .expect("json")
        .into_iter()
        .map(|row| row.into_iter().map(normal).collect())
        .collect()
}
