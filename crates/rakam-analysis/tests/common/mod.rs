//! A fresh embedded store in a temporary directory, with one project, the
//! real ingest path and the analyzer the HTTP API uses.

use std::sync::Arc;

use rakam_analysis::{AnalysisKind, Analyzer};
use rakam_ingest::{EventInput, IngestLimits, Ingester};
use rakam_query::{QueryEngine, QueryLimits};
use rakam_store_api::{Catalog, EventStore, ProjectInfo};
use rakam_store_embedded::{open, EmbeddedOptions};
use serde_json::{Map, Value};

pub struct Harness {
    _dir: tempfile::TempDir,
    pub project: ProjectInfo,
    ingester: Ingester,
    pub analyzer: Analyzer,
}

impl Harness {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (catalog, store) = open(EmbeddedOptions::new(dir.path()))
            .await
            .expect("open store");
        let catalog: Arc<dyn Catalog> = catalog;
        let store: Arc<dyn EventStore> = store;
        catalog.create_project("analysis").await.expect("project");
        let project = catalog
            .project("analysis")
            .await
            .expect("lookup")
            .expect("exists");
        let engine = QueryEngine::new(catalog.clone(), store.clone(), QueryLimits::default());
        Self {
            _dir: dir,
            project,
            ingester: Ingester::new(catalog.clone(), store, IngestLimits::default()),
            analyzer: Analyzer::new(catalog, engine),
        }
    }

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

    /// Runs `kind` (`funnel`, `retention`, `explore`, `statistics`, `flow`)
    /// with a JSON request, as the HTTP routes do.
    pub async fn analyze(&self, kind: &str, request: Value) -> Result<Value, String> {
        let kind = AnalysisKind::parse(kind).unwrap_or_else(|| panic!("unknown analysis {kind}"));
        self.analyzer
            .run(kind, &self.project, request)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The answer without the parts that vary between runs (timings).
// Each test binary compiles this module; not every one uses every helper.
#[allow(dead_code)]
pub fn stable(mut answer: Value) -> Value {
    if let Some(object) = answer.as_object_mut() {
        object.remove("properties");
    }
    answer
}
