//! The shared conformance suite, run on PostgreSQL: each test gets a
//! database of its own, dropped afterwards.

use async_trait::async_trait;
use rakam_store_api::conformance::StoreFactory;
use rakam_store_api::{event_store_conformance_tests, Backend};
use rakam_store_postgres::testing::TempDatabase;
use rakam_store_postgres::{open_backend, PgOptions};

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
    async fn open(&self) -> Backend {
        let mut options = PgOptions::new(self.database.url.clone());
        options.pool_size = 4;
        open_backend(options).await.expect("open PostgreSQL store")
    }
}

event_store_conformance_tests!(PostgresFactory::new());
