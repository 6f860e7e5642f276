use anyhow::Context;
use rakam_config::{Config, StorageConfig};
use rakam_server::{Rakam, ServiceError};
use rakam_store_api::{ProjectKeys, StoreError};
use tracing_subscriber::EnvFilter;

pub fn init_logging() {
    let filter = EnvFilter::try_from_env("RAKAM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let rakam = Rakam::open(config.clone())
        .await
        .with_context(|| opening(&config))?;
    if config.server.lock_key.is_empty() {
        tracing::warn!("server.lock_key is not set: only clients on this machine (loopback) may create projects");
    }
    let listen = config.server.listen.clone();
    let server_limits = rakam_http::ServerLimits {
        header_read_timeout: std::time::Duration::from_secs(config.server.header_read_timeout_secs),
        max_connections_per_client: config.server.max_connections_per_client,
    };
    let state = rakam_http::AppState::new(rakam.clone(), rakam_http::install_metrics_recorder());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "rakam is listening");
    let stopping = rakam.clone();
    let signal = async move {
        shutdown_signal().await;
        // Running queries end at once instead of holding shutdown up.
        stopping.stop_queries();
        // Live streams never end by themselves.
        stopping.close_streams();
    };
    rakam_http::serve(listener, rakam_http::router(state), server_limits, signal).await;
    tracing::info!("shutting down: flushing the store");
    rakam.shutdown().await.context("flushing the store")?;
    Ok(())
}

fn opening(config: &Config) -> String {
    match &config.storage {
        StorageConfig::Embedded(embedded) => format!(
            "opening the embedded store in {}",
            embedded.data_dir.display()
        ),
        StorageConfig::Postgres(_) => "opening the PostgreSQL store".into(),
    }
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

/// Creates a project through the service; when a running server holds the
/// embedded data directory, asks that server instead.
pub async fn create_project(config: &Config, name: &str) -> anyhow::Result<ProjectKeys> {
    match Rakam::open(config.clone()).await {
        Ok(rakam) => {
            let keys = rakam.create_project(name).await;
            rakam.shutdown().await?;
            Ok(keys?)
        }
        Err(ServiceError::Store(StoreError::InUse(_))) => {
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
        Err(error) => Err(anyhow::Error::new(error).context(opening(config))),
    }
}
