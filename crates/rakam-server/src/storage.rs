//! The backend a config names, assembled from its parts. Adding a backend
//! is one crate, one `StorageConfig` variant and one arm here.

use std::time::Duration;

use rakam_config::{Config, EmbeddedConfig, PostgresConfig, StorageConfig};
use rakam_store_api::{Backend, CatalogLimits, Result};
use rakam_store_embedded::{Durability, EmbeddedOptions, WalRecovery};
use rakam_store_postgres::PgOptions;

pub async fn open_backend(config: &Config) -> Result<Backend> {
    match &config.storage {
        StorageConfig::Embedded(options) => {
            rakam_store_embedded::open_backend(embedded_options(options, config)).await
        }
        StorageConfig::Postgres(options) => {
            rakam_store_postgres::open_backend(postgres_options(options, config)).await
        }
    }
}

pub fn embedded_options(embedded: &EmbeddedConfig, config: &Config) -> EmbeddedOptions {
    let mut options = EmbeddedOptions::new(&embedded.data_dir);
    options.durability = if embedded.durability == "os" {
        Durability::Os
    } else {
        Durability::Fsync
    };
    options.flush_rows = embedded.flush_rows;
    options.flush_interval = Duration::from_secs(embedded.flush_interval_secs);
    options.wal_segment_bytes = embedded.wal_segment_bytes;
    options.compaction_small_file_bytes = embedded.compaction_small_file_bytes;
    options.compaction_min_files = embedded.compaction_min_files;
    options.max_tail_bytes = embedded.max_tail_bytes;
    options.wal_recovery = if embedded.wal_recovery == "quarantine" {
        WalRecovery::Quarantine
    } else {
        WalRecovery::Refuse
    };
    options.catalog_limits = CatalogLimits::from(&config.limits);
    options
}

pub fn postgres_options(postgres: &PostgresConfig, config: &Config) -> PgOptions {
    let mut options = PgOptions::new(postgres.url.clone());
    options.catalog_limits = CatalogLimits::from(&config.limits);
    options.pool_size = postgres.pool_size;
    options.statement_timeout = Duration::from_secs(config.query.statement_timeout_secs);
    options
}
