use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rakam_config::Config;
use rakam_ingest::{IngestLimits, Ingester};
use rakam_query::{QueryEngine, QueryLimits};
use rakam_store_api::{Catalog, EventStore, ProjectKeys};
use rakam_store_embedded::{Durability, EmbeddedOptions, FileCatalog, DATA_DIR_IN_USE};
use rakam_store_postgres::PgOptions;
use tracing_subscriber::EnvFilter;

pub fn init_logging() {
    let filter = EnvFilter::try_from_env("RAKAM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn embedded_options(config: &Config) -> EmbeddedOptions {
    let storage = &config.storage;
    let mut options = EmbeddedOptions::new(&storage.data_dir);
    options.durability = if storage.durability == "os" {
        Durability::Os
    } else {
        Durability::Fsync
    };
    options.flush_rows = storage.flush_rows;
    options.flush_interval = Duration::from_secs(storage.flush_interval_secs);
    options.wal_segment_bytes = storage.wal_segment_bytes;
    options.compaction_small_file_bytes = storage.compaction_small_file_bytes;
    options.compaction_min_files = storage.compaction_min_files;
    options.max_columns_per_collection = storage.max_columns_per_collection;
    options
}

fn postgres_options(config: &Config) -> PgOptions {
    let mut options = PgOptions::new(config.storage.postgres_url.clone());
    options.max_columns_per_collection = config.storage.max_columns_per_collection;
    options.pool_size = config.storage.postgres_pool_size;
    options.statement_timeout = Duration::from_secs(config.query.statement_timeout_secs);
    options
}

async fn open_postgres(config: &Config) -> anyhow::Result<(Arc<dyn Catalog>, Arc<dyn EventStore>)> {
    let (catalog, store) = rakam_store_postgres::open(postgres_options(config))
        .await
        .context("opening the PostgreSQL store")?;
    Ok((catalog, store))
}

async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Catalog>, Arc<dyn EventStore>)> {
    if config.storage.backend == "postgres" {
        return open_postgres(config).await;
    }
    let (catalog, store): (Arc<FileCatalog>, _) =
        rakam_store_embedded::open(embedded_options(config))
            .await
            .with_context(|| {
                format!(
                    "opening the embedded store in {}",
                    config.storage.data_dir.display()
                )
            })?;
    Ok((catalog, store))
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let (catalog, event_store) = open_store(&config).await?;
    tracing::info!(backend = %config.storage.backend, "store opened");
    let limits = &config.limits;
    let ingester = Ingester::new(
        catalog.clone(),
        event_store.clone(),
        IngestLimits {
            max_event_bytes: limits.max_event_bytes,
            max_batch_events: limits.max_batch_events,
            max_properties_per_event: limits.max_properties_per_event,
            max_string_bytes: limits.max_string_bytes,
        },
    );
    let query = QueryEngine::new(
        catalog.clone(),
        event_store.clone(),
        QueryLimits {
            default_limit: config.query.default_limit,
            max_limit: config.query.max_limit,
            statement_timeout: Duration::from_secs(config.query.statement_timeout_secs),
            memory_limit_bytes: config.query.memory_limit_bytes,
        },
    );
    if config.server.lock_key.is_empty() {
        tracing::warn!("server.lock_key is not set: only clients on this machine (loopback) may create projects");
    }
    let listen = config.server.listen.clone();
    let server_limits = rakam_http::ServerLimits {
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
        max_connections_per_client: config.server.max_connections_per_client,
    };
    let state = rakam_http::AppState {
        config: Arc::new(config),
        analysis: rakam_analysis::Analyzer::new(catalog.clone(), query.clone()),
        catalog,
        store: event_store.clone(),
        ingester,
        query,
        metrics: rakam_http::install_metrics_recorder(),
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "rakam is listening");
    rakam_http::serve(
        listener,
        rakam_http::router(state),
        server_limits,
        shutdown_signal(),
    )
    .await;
    tracing::info!("shutting down: flushing the store");
    event_store.shutdown().await.context("flushing the store")?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// Creates a project in the data directory, or through the running server
/// when it holds the directory; on PostgreSQL, in the database.
pub async fn create_project(config: &Config, name: &str) -> anyhow::Result<ProjectKeys> {
    // PostgreSQL is shared by design: create the project in it directly.
    if config.storage.backend == "postgres" {
        let (catalog, store) = open_postgres(config).await?;
        let keys = catalog.create_project(name).await?;
        store.shutdown().await?;
        return Ok(keys);
    }
    match rakam_store_embedded::open(embedded_options(config)).await {
        Ok((catalog, store)) => {
            let keys = catalog.create_project(name).await?;
            store.shutdown().await?;
            Ok(keys)
        }
        Err(error) if error.to_string().contains(DATA_DIR_IN_USE) => {
            let url = format!("http://{}/project/create", config.server.listen);
            let body = serde_json::json!({"name": name, "lock_key": config.server.lock_key});
            let keys = tokio::task::spawn_blocking(move || -> anyhow::Result<ProjectKeys> {
                let response = ureq::post(&url)
                    .send_json(body)
                    .map_err(|e| match e {
                        ureq::Error::Status(_, response) => {
                            anyhow::anyhow!(response.into_string().unwrap_or_default())
                        }
                        other => anyhow::anyhow!(other),
                    })
                    .context("asking the running server to create the project")?;
                Ok(response.into_json()?)
            })
            .await??;
            Ok(keys)
        }
        Err(error) => Err(error.into()),
    }
}
