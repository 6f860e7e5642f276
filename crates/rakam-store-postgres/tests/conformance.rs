//! The shared event-store conformance suite, run on PostgreSQL: each test
//! gets a database of its own, dropped afterwards.

use std::sync::Arc;

use async_trait::async_trait;
use rakam_store_api::conformance::StoreFactory;
use rakam_store_api::{event_store_conformance_tests, Catalog, EventStore};
use rakam_store_postgres::testing::TempDatabase;
use rakam_store_postgres::{open, PgOptions};

struct PostgresFactory {
    database: TempDatabase,
}

impl PostgresFactory {
    fn new() -> Option<Self> {
        TempDatabase::create("the PostgreSQL conformance suite").map(|database| Self { database })
    }
}

#[async_trait]
impl StoreFactory for PostgresFactory {
    async fn open(&self) -> (Arc<dyn Catalog>, Arc<dyn EventStore>) {
        let mut options = PgOptions::new(self.database.url.clone());
        options.pool_size = 4;
        let (catalog, store) = open(options).await.expect("open PostgreSQL store");
        (catalog, store)
    }
}

event_store_conformance_tests!(PostgresFactory::new());
