//! Fixtures for tests only (never a dependency of a shipped crate): a fresh
//! store (embedded, or PostgreSQL in a throw-away database) with one project
//! behind the real ingest path and query engine, and the driver of
//! expected-output files. Panics here are test failures, so `expect` is the
//! error handling.

pub mod expected;

use std::sync::Arc;

use rakam_ingest::{Atomicity, EventInput, IngestLimits, Pipeline, RequestContext};
use rakam_query::{QueryEngine, QueryLimits};
use rakam_store_api::{Catalog, ProjectInfo, ProjectSnapshot};
use rakam_store_embedded::{open_backend, EmbeddedOptions};
use rakam_store_postgres::testing::TempDatabase;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Postgres,
}

/// Whether tests can use `backend`. PostgreSQL's absence is reported
/// loudly (and is a failure under `RAKAM_REQUIRE_SERVICES=1`).
pub fn available(backend: Backend, purpose: &str) -> bool {
    match backend {
        Backend::Embedded => true,
        Backend::Postgres => TempDatabase::create(purpose).is_some(),
    }
}

/// A store with one project, in a temporary directory or database that
/// is removed on drop.
pub struct TestStore {
    _dir: tempfile::TempDir,
    _database: Option<TempDatabase>,
    pub backend: rakam_store_api::Backend,
    pub catalog: Arc<dyn Catalog>,
    pub project: ProjectInfo,
    pub pipeline: Pipeline,
    pub engine: QueryEngine,
}

impl TestStore {
    /// On the embedded store.
    pub async fn new(project: &str) -> Self {
        Self::on(Backend::Embedded, project)
            .await
            .expect("the embedded store is always available")
    }

    /// On `backend`; `None` when it is PostgreSQL and no server answers
    /// (after a loud message; a failure when services are required).
    pub async fn on(backend: Backend, project: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (assembled, database) = match backend {
            Backend::Embedded => {
                let assembled = open_backend(EmbeddedOptions::new(dir.path()))
                    .await
                    .expect("open store");
                (assembled, None)
            }
            Backend::Postgres => {
                let database = TempDatabase::create("a test on PostgreSQL")?;
                let options = rakam_store_postgres::PgOptions::new(database.url.clone());
                let assembled = rakam_store_postgres::open_backend(options)
                    .await
                    .expect("open PostgreSQL store");
                (assembled, Some(database))
            }
        };
        let catalog = assembled.catalog.clone();
        let (project, _keys) = catalog.create_project(project).await.expect("project");
        Some(Self {
            _dir: dir,
            _database: database,
            pipeline: Pipeline::new(
                catalog.clone(),
                assembled.sink.clone(),
                IngestLimits::default(),
            ),
            engine: QueryEngine::new(
                &assembled,
                QueryLimits::from(&rakam_config::QueryConfig::default()),
            )
            .expect("query engine"),
            backend: assembled,
            catalog,
            project,
        })
    }

    /// The project's metadata now, as one request would read it.
    pub async fn snapshot(&self) -> Arc<ProjectSnapshot> {
        self.catalog
            .snapshot(&self.project.id)
            .await
            .expect("snapshot")
    }

    /// Ingests events (properties objects) into `collection` through the
    /// real ingest path, durably; any refused event fails the test.
    pub async fn ingest(&self, collection: &str, events: Vec<Map<String, Value>>) {
        let inputs = events
            .into_iter()
            .map(|properties| {
                Ok(EventInput {
                    collection: collection.to_string(),
                    properties,
                    upload_time: None,
                })
            })
            .collect();
        let outcome = self
            .pipeline
            .ingest(
                &self.snapshot().await,
                inputs,
                &RequestContext::default(),
                Atomicity::AllOrNothing,
            )
            .await
            .expect("ingest");
        assert!(
            outcome.failed.is_empty(),
            "ingest failed: {:?}",
            outcome.failed
        );
    }
}
