//! A fresh store (embedded or PostgreSQL) with one project, the real ingest
//! path and the analyzer the HTTP API uses.

use rakam_analysis::{AnalysisKind, Analyzer};
use rakam_test_support::{Backend, TestStore};
use serde_json::{Map, Value};

pub struct Harness {
    store: TestStore,
    analyzer: Analyzer,
}

impl Harness {
    pub async fn new() -> Self {
        Self::on(Backend::Embedded)
            .await
            .expect("the embedded store is always available")
    }

    pub async fn on(backend: Backend) -> Option<Self> {
        let store = TestStore::on(backend, "analysis").await?;
        let analyzer = Analyzer::new(store.engine.clone());
        Some(Self { store, analyzer })
    }

    pub async fn ingest(&self, collection: &str, events: Vec<Map<String, Value>>) {
        self.store.ingest(collection, events).await;
    }

    /// Runs `kind` (`funnel`, `retention`, `explore`, `statistics`, `flow`)
    /// with a JSON request, as the HTTP routes do.
    pub async fn analyze(&self, kind: &str, request: Value) -> Result<Value, String> {
        let kind = AnalysisKind::parse(kind).unwrap_or_else(|| panic!("unknown analysis {kind}"));
        self.analyzer
            .run(kind, &self.store.snapshot().await, request)
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
