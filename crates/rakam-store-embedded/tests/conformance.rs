//! The shared event-store conformance suite, run on the embedded store.

use std::sync::Arc;

use async_trait::async_trait;
use rakam_store_api::conformance::StoreFactory;
use rakam_store_api::{event_store_conformance_tests, Catalog, EventStore};
use rakam_store_embedded::{open, EmbeddedOptions};

struct EmbeddedFactory {
    dir: tempfile::TempDir,
}

impl EmbeddedFactory {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
}

#[async_trait]
impl StoreFactory for EmbeddedFactory {
    async fn open(&self) -> (Arc<dyn Catalog>, Arc<dyn EventStore>) {
        let mut options = EmbeddedOptions::new(self.dir.path());
        // Small thresholds so the suite also exercises flush and compaction.
        options.flush_rows = 50;
        options.compaction_min_files = 3;
        let (catalog, store) = open(options).await.expect("open embedded store");
        (catalog, store)
    }
}

event_store_conformance_tests!(Some(EmbeddedFactory::new()));
