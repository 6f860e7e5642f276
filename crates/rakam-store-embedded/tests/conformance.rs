//! The shared conformance suite, run on the embedded backend as a whole.

use async_trait::async_trait;
use rakam_store_api::conformance::StoreFactory;
use rakam_store_api::{event_store_conformance_tests, Backend};
use rakam_store_embedded::{open_backend, EmbeddedOptions};

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

/// Small thresholds so the suite also exercises flush and compaction.
pub fn small_options(dir: &std::path::Path) -> EmbeddedOptions {
    let mut options = EmbeddedOptions::new(dir);
    options.flush_rows = 50;
    options.compaction_min_files = 3;
    options
}

#[async_trait]
impl StoreFactory for EmbeddedFactory {
    async fn open(&self) -> Backend {
        open_backend(small_options(self.dir.path()))
            .await
            .expect("open embedded store")
    }
}

event_store_conformance_tests!(Some(EmbeddedFactory::new()));
