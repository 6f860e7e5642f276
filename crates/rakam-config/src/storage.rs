//! Where events and metadata live: one variant per backend, each owning its
//! options and their defaults.
//!
//! ```toml
//! [storage]
//! backend = "embedded"        # or "postgres"
//! [storage.embedded]          # only the chosen backend's table may be set
//! data_dir = "./data"
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub enum StorageConfig {
    /// Files in a data directory: WAL, Parquet, a JSON catalog.
    Embedded(EmbeddedConfig),
    /// Everything in one PostgreSQL database (ADR 0006).
    Postgres(PostgresConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Where the catalog, WAL and Parquet files live.
    pub data_dir: PathBuf,
    /// `fsync`: acknowledge after fsync (survives power loss). `os`:
    /// acknowledge after the write reaches the OS (survives a crash of
    /// Rakam, not of the machine); faster on slow disks.
    pub durability: String,
    /// Flush a collection's in-memory tail to Parquet at this many rows...
    pub flush_rows: usize,
    /// ...or when its oldest row is this many seconds old.
    pub flush_interval_secs: u64,
    /// Size at which the write-ahead log starts a new segment.
    pub wal_segment_bytes: u64,
    /// Parquet files below this size are merged in the background...
    pub compaction_small_file_bytes: u64,
    /// ...once a collection has this many of them.
    pub compaction_min_files: usize,
    /// Memory all collections' unflushed tails may hold together; above it
    /// the largest tails are flushed at once, whatever their age, and above
    /// twice it appends wait for flushing (503 after 30 s).
    pub max_tail_bytes: usize,
    /// What start-up does with a damaged WAL or a missing segment:
    /// `refuse` (name the damage and stop) or `quarantine` (move damaged
    /// bytes to `wal/quarantine/`, keep every intact record, start, and say
    /// so in the log and in `/health`).
    pub wal_recovery: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host[:port]/database`. The user needs
    /// CREATEROLE and CREATE on the database: each project gets two schemas
    /// and a read-only role of its own.
    pub url: String,
    /// Connections kept for writes and metadata.
    pub pool_size: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            durability: "fsync".into(),
            flush_rows: 1_000_000,
            flush_interval_secs: 10,
            wal_segment_bytes: 128 << 20,
            compaction_small_file_bytes: 32 << 20,
            compaction_min_files: 8,
            max_tail_bytes: 512 << 20,
            wal_recovery: "refuse".into(),
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 16,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self::Embedded(EmbeddedConfig::default())
    }
}

/// The backends this build has, by their `storage.backend` name.
pub const BACKENDS: [&str; 2] = ["embedded", "postgres"];

impl StorageConfig {
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Postgres(_) => "postgres",
        }
    }

    /// The variant of this name with its defaults.
    pub fn default_for(backend: &str) -> Option<Self> {
        match backend {
            "embedded" => Some(Self::Embedded(EmbeddedConfig::default())),
            "postgres" => Some(Self::Postgres(PostgresConfig::default())),
            _ => None,
        }
    }

    /// Every variant's defaults as one table, to type environment values.
    pub(crate) fn all_defaults() -> toml::Table {
        let mut table = toml::Table::new();
        table.insert("backend".into(), toml::Value::String("embedded".into()));
        for name in BACKENDS {
            if let Some(config) = Self::default_for(name) {
                if let Ok(toml::Value::Table(mut rendered)) = toml::Value::try_from(&config) {
                    if let Some(options) = rendered.remove(name) {
                        table.insert(name.into(), options);
                    }
                }
            }
        }
        table
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Self::Embedded(embedded) => {
                if !matches!(embedded.wal_recovery.as_str(), "refuse" | "quarantine") {
                    return Err(format!(
                        "storage.embedded.wal_recovery must be \"refuse\" or \"quarantine\", not {:?}",
                        embedded.wal_recovery
                    ));
                }
                if !matches!(embedded.durability.as_str(), "fsync" | "os") {
                    return Err(format!(
                        "storage.embedded.durability must be \"fsync\" or \"os\", not {:?}",
                        embedded.durability
                    ));
                }
            }
            Self::Postgres(postgres) => {
                if postgres.url.trim().is_empty() {
                    return Err(
                        "storage.backend \"postgres\" needs storage.postgres.url (or --postgres-url)"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// The TOML form: the backend's name and its table.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StorageTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    embedded: Option<EmbeddedConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    postgres: Option<PostgresConfig>,
}

impl Serialize for StorageConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut table = StorageTable {
            backend: Some(self.backend_name().into()),
            ..StorageTable::default()
        };
        match self {
            Self::Embedded(options) => table.embedded = Some(options.clone()),
            Self::Postgres(options) => table.postgres = Some(options.clone()),
        }
        table.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StorageConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = StorageTable::deserialize(deserializer)?;
        let backend = table.backend.as_deref().unwrap_or("embedded");
        let other = |name: &str| {
            serde::de::Error::custom(format!(
                "storage.{name} is set, but storage.backend is {backend:?}"
            ))
        };
        match backend {
            "embedded" => {
                if table.postgres.is_some() {
                    return Err(other("postgres"));
                }
                Ok(Self::Embedded(table.embedded.unwrap_or_default()))
            }
            "postgres" => {
                if table.embedded.is_some() {
                    return Err(other("embedded"));
                }
                Ok(Self::Postgres(table.postgres.unwrap_or_default()))
            }
            other => Err(serde::de::Error::custom(format!(
                "storage.backend {other:?} is not available; this build has {}",
                BACKENDS.map(|b| format!("{b:?}")).join(" and ")
            ))),
        }
    }
}
