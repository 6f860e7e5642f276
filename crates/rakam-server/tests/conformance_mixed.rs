//! The conformance suite on a mixed assembly: the PostgreSQL catalog (as a
//! cluster shares it) with the embedded store's sink and tables (as the
//! data would live elsewhere). It is the shape of the Kafka + S3 deployment.

use async_trait::async_trait;
use rakam_store_api::conformance::StoreFactory;
use rakam_store_api::{event_store_conformance_tests, Backend, Capabilities};
use rakam_store_embedded::EmbeddedOptions;
use rakam_store_postgres::testing::TempDatabase;
use rakam_store_postgres::PgOptions;

struct MixedFactory {
    database: TempDatabase,
    dir: tempfile::TempDir,
}

impl MixedFactory {
    fn new() -> Option<Self> {
        let database = TempDatabase::create("the mixed-assembly conformance suite")?;
        Some(Self {
            database,
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }
}

#[async_trait]
impl StoreFactory for MixedFactory {
    async fn open(&self) -> Backend {
        let mut options = PgOptions::new(self.database.url.clone());
        options.pool_size = 4;
        let (catalog, _postgres_data) = rakam_store_postgres::open(options)
            .await
            .expect("open the PostgreSQL catalog");
        let mut embedded = EmbeddedOptions::new(self.dir.path());
        embedded.flush_rows = 50;
        embedded.compaction_min_files = 3;
        let store = rakam_store_embedded::open(embedded, catalog.clone())
            .await
            .expect("open the embedded data");
        let mut backend = store.backend("postgres catalog + embedded data", catalog);
        backend.capabilities = Capabilities {
            replayable_log: true,
            shared_catalog: true,
        };
        backend
    }
}

event_store_conformance_tests!(MixedFactory::new());
