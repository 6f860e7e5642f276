//! Fixtures for tests only (never a dependency of a shipped crate): a fresh
//! store (embedded, or PostgreSQL in a throw-away database) with one project
//! behind the real ingest path and query engine, and the driver of
//! expected-output files. Panics here are test failures, so `expect` is the
//! error handling.

pub mod expected;

use std::sync::Arc;

use rakam_ingest::{EventInput, IngestLimits, Ingester};
use rakam_query::{QueryEngine, QueryLimits};
use rakam_store_api::{Catalog, EventStore, ProjectInfo};
use rakam_store_embedded::{open, EmbeddedOptions};
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
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn EventStore>,
    pub project: ProjectInfo,
    pub ingester: Ingester,
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
        let (catalog, store, database): (Arc<dyn Catalog>, Arc<dyn EventStore>, _) = match backend {
            Backend::Embedded => {
                let (catalog, store) = open(EmbeddedOptions::new(dir.path()))
                    .await
                    .expect("open store");
                (catalog, store, None)
            }
            Backend::Postgres => {
                let database = TempDatabase::create("a test on PostgreSQL")?;
                let options = rakam_store_postgres::PgOptions::new(database.url.clone());
                let (catalog, store) = rakam_store_postgres::open(options)
                    .await
                    .expect("open PostgreSQL store");
                (catalog, store, Some(database))
            }
        };
        catalog.create_project(project).await.expect("project");
        let project = catalog
            .project(project)
            .await
            .expect("lookup")
            .expect("exists");
        Some(Self {
            _dir: dir,
            _database: database,
            ingester: Ingester::new(catalog.clone(), store.clone(), IngestLimits::default()),
            engine: QueryEngine::new(catalog.clone(), store.clone(), QueryLimits::default()),
            catalog,
            store,
            project,
        })
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
            .ingester
            .ingest(&self.project, inputs, true)
            .await
            .expect("ingest");
        assert!(
            outcome.failed.is_empty(),
            "ingest failed: {:?}",
            outcome.failed
        );
    }
}
