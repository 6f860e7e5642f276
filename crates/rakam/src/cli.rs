use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rakam_config::{Config, StorageConfig};

/// Rakam: self-hosted event analytics in one binary.
#[derive(Debug, Parser)]
#[command(name = "rakam", version)]
pub struct Arguments {
    /// TOML configuration file; keys are overridden by RAKAM_<SECTION>__<KEY>
    /// environment variables, then by flags.
    #[arg(long, global = true, env = "RAKAM_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Overrides {
    /// Address to listen on (server.listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory of the embedded store (storage.embedded.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// `embedded` or `postgres` (storage.backend).
    #[arg(long = "store")]
    pub store: Option<String>,
    /// Database of the postgres backend (storage.postgres.url).
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// `fsync` or `os` (storage.embedded.durability).
    #[arg(long)]
    pub durability: Option<String>,
    /// Lock key required to create projects (server.lock_key).
    #[arg(long)]
    pub lock_key: Option<String>,
    /// `refuse` or `quarantine`: starting on a damaged WAL
    /// (storage.embedded.wal_recovery).
    #[arg(long)]
    pub wal_recovery: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API.
    Serve(Overrides),
    /// Print the effective configuration (defaults < file < env < flags).
    Config(Overrides),
    /// Manage projects.
    Project {
        #[command(subcommand)]
        action: ProjectAction,
    },
    /// Inspect the embedded store's write-ahead log.
    Wal {
        #[command(subcommand)]
        action: WalAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum WalAction {
    /// Read every segment and report damage and missing segments, with the
    /// acknowledged appends they hold; changes nothing. Exits with 1 when
    /// the WAL is damaged (the server would refuse to start on it).
    Check {
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectAction {
    /// Create a project and print its keys. Talks to the running server when
    /// it holds the data directory, else opens the directory directly.
    Create {
        name: String,
        #[command(flatten)]
        overrides: Overrides,
    },
}

pub fn effective_config(
    config_file: Option<&std::path::Path>,
    overrides: &Overrides,
) -> anyhow::Result<Config> {
    let mut config = Config::load(config_file, std::env::vars())?;
    if let Some(listen) = &overrides.listen {
        config.server.listen = listen.clone();
    }
    if let Some(store) = &overrides.store {
        if store != config.storage.backend_name() {
            config.storage = StorageConfig::default_for(store).ok_or_else(|| {
                anyhow::anyhow!(
                    "--store {store:?} is not available; this build has {}",
                    rakam_config::BACKENDS.join(", ")
                )
            })?;
        }
    }
    let backend = config.storage.backend_name();
    let not_for = |flag: &str| {
        anyhow::anyhow!("{flag} does not apply to the {backend} backend (storage.backend)")
    };
    if let Some(data_dir) = &overrides.data_dir {
        match &mut config.storage {
            StorageConfig::Embedded(embedded) => embedded.data_dir = data_dir.clone(),
            _ => return Err(not_for("--data-dir")),
        }
    }
    if let Some(recovery) = &overrides.wal_recovery {
        match &mut config.storage {
            StorageConfig::Embedded(embedded) => embedded.wal_recovery = recovery.clone(),
            _ => return Err(not_for("--wal-recovery")),
        }
    }
    if let Some(durability) = &overrides.durability {
        match &mut config.storage {
            StorageConfig::Embedded(embedded) => embedded.durability = durability.clone(),
            _ => return Err(not_for("--durability")),
        }
    }
    if let Some(url) = &overrides.postgres_url {
        match &mut config.storage {
            StorageConfig::Postgres(postgres) => postgres.url = url.clone(),
            _ => return Err(not_for("--postgres-url")),
        }
    }
    if let Some(lock_key) = &overrides.lock_key {
        config.server.lock_key = lock_key.clone();
    }
    config.validate()?;
    Ok(config)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rakam-worker")
        // Query work runs on these threads; the statement guard's depth
        // limit is sized against this stack.
        .thread_stack_size(rakam_query::QUERY_THREAD_STACK_BYTES)
        .build()
        .context("starting the async runtime")
}

pub fn run(arguments: Arguments) -> anyhow::Result<()> {
    let config_file = arguments.config.as_deref();
    match arguments.command {
        Command::Serve(overrides) => {
            let config = effective_config(config_file, &overrides)?;
            crate::serve::init_logging();
            runtime()?.block_on(crate::serve::serve(config))
        }
        Command::Config(overrides) => {
            let config = effective_config(config_file, &overrides)?;
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Project {
            action: ProjectAction::Create { name, overrides },
        } => {
            let config = effective_config(config_file, &overrides)?;
            let keys = runtime()?.block_on(crate::serve::create_project(&config, &name))?;
            println!("{}", serde_json::to_string_pretty(&keys)?);
            Ok(())
        }
        Command::Wal {
            action: WalAction::Check { overrides },
        } => {
            let config = effective_config(config_file, &overrides)?;
            let healthy = crate::wal::check(&config)?;
            if !healthy {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
