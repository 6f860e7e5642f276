//! Fixtures for tests only (never a dependency of a shipped crate): a fresh
//! embedded store with one project behind the real ingest path and query
//! engine, and the driver of expected-output files. Panics here are test
//! failures, so `expect` is the error handling.

pub mod expected;

use std::sync::Arc;

use rakam_ingest::{EventInput, IngestLimits, Ingester};
use rakam_query::{QueryEngine, QueryLimits};
use rakam_store_api::{Catalog, EventStore, ProjectInfo};
use rakam_store_embedded::{open, EmbeddedOptions};
use serde_json::{Map, Value};

/// An embedded store in a temporary directory (removed on drop) with one
/// project.
pub struct TestStore {
    _dir: tempfile::TempDir,
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn EventStore>,
    pub project: ProjectInfo,
    pub ingester: Ingester,
    pub engine: QueryEngine,
}

impl TestStore {
    pub async fn new(project: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (catalog, store) = open(EmbeddedOptions::new(dir.path()))
            .await
            .expect("open store");
        let catalog: Arc<dyn Catalog> = catalog;
        let store: Arc<dyn EventStore> = store;
        catalog.create_project(project).await.expect("project");
        let project = catalog
            .project(project)
            .await
            .expect("lookup")
            .expect("exists");
        Self {
            _dir: dir,
            ingester: Ingester::new(catalog.clone(), store.clone(), IngestLimits::default()),
            engine: QueryEngine::new(catalog.clone(), store.clone(), QueryLimits::default()),
            catalog,
            store,
            project,
        }
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
