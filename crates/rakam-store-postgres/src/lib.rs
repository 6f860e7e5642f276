//! The PostgreSQL backend: everything stored in, and queried by, one
//! PostgreSQL server the user already runs (ADR 0006).
//!
//! ```text
//! append ─▶ partitions ensured ─▶ binary COPY of every batch in one transaction ─▶ COMMIT ─▶ ack
//! evolve ─▶ project row locked ─▶ ALTER TABLE … ADD COLUMN ─▶ views rebuilt ─▶ COMMIT
//! query  ─▶ the project's read-only role ─▶ READ ONLY transaction + statement_timeout ─▶ rows ─▶ Arrow
//! ```

mod arrow_rows;
mod barrier;
mod catalog;
mod catalog_cache;
mod connection;
mod copy_in;
mod ddl;
mod migrations;
mod names;
mod native_sql;
mod numeric;
mod provider;
mod store;
pub mod testing;
mod view_snapshot;
mod views;

pub use catalog::PgCatalog;
pub use connection::PgOptions;
pub use store::PgStore;
pub use views::PgViews;

use std::sync::Arc;
use std::time::Duration;

use rakam_store_api::{Backend, Capabilities, Result};

/// Connections unused this long are closed.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Connects, applies pending migrations, and returns the catalog and store.
pub async fn open(options: PgOptions) -> Result<(Arc<PgCatalog>, Arc<PgStore>)> {
    let shared = Arc::new(connection::Shared::connect(options).await?);
    migrations::apply(&shared).await?;
    let weak = Arc::downgrade(&shared);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(MAX_IDLE / 2).await;
            match weak.upgrade() {
                Some(shared) => shared.close_idle(MAX_IDLE),
                None => break,
            }
        }
    });
    Ok((
        Arc::new(PgCatalog::new(shared.clone())),
        Arc::new(PgStore::new(shared)),
    ))
}

/// The PostgreSQL backend as a whole: catalog, sink, tables and SQL engine
/// in the database.
pub async fn open_backend(options: PgOptions) -> Result<Backend> {
    let (catalog, store) = open(options).await?;
    Ok(Backend {
        name: "postgres",
        catalog,
        sink: store.clone(),
        native_sql: Some(store.native_sql()),
        views: store.views(),
        tables: store,
        capabilities: Capabilities {
            replayable_log: false,
            shared_catalog: true,
        },
    })
}
