//! Rakam's configuration: one TOML file, every key overridable by an
//! environment variable `RAKAM_<SECTION>__<KEY>` (for example
//! `RAKAM_SERVER__LISTEN`; nested tables add a part:
//! `RAKAM_STORAGE__EMBEDDED__DATA_DIR`), then by command-line flags. Precedence:
//! defaults < file < environment < flags. Unknown keys are errors, so a
//! typo never silently falls back to a default.

mod storage;
mod stream;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use storage::{EmbeddedConfig, PostgresConfig, StorageConfig, BACKENDS};
pub use stream::StreamConfig;

pub const ENV_PREFIX: &str = "RAKAM_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub query: QueryConfig,
    pub stream: StreamConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port the HTTP API listens on.
    pub listen: String,
    /// When set, `/project/create` and `/project/list` need it. When empty,
    /// only clients on the loopback interface may create projects.
    pub lock_key: String,
    /// Whether, without a lock key, clients on this machine that do not come
    /// through a proxy may create and list projects and read `/metrics`.
    pub trust_loopback: bool,
    /// When set, `/metrics` needs `Authorization: Bearer <token>`; when
    /// empty, only clients on this machine may read it (see
    /// `trust_loopback`).
    pub metrics_token: String,
    /// Whether `/project/delete` may delete a project and all its data.
    pub allow_project_deletion: bool,
    /// A client must send a request's headers within this many seconds; a
    /// new connection that sends nothing, and an idle keep-alive one, are
    /// closed after it too.
    pub header_read_timeout_secs: u64,
    /// A request's whole body must arrive within this many seconds of the
    /// handler starting to read it (408 and the connection closed after).
    pub body_read_timeout_secs: u64,
    /// Connections one client address may hold open at once; more are
    /// answered 503 and closed.
    pub max_connections_per_client: usize,
    /// Addresses (or CIDR ranges) of proxies whose `X-Forwarded-For` names
    /// the client; from any other peer the header is ignored.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest body of `/event/collect` and `/event/batch` (413 above).
    pub max_request_bytes: usize,
    /// Largest body of `/event/bulk`, after gzip decompression (413 above).
    pub max_bulk_bytes: usize,
    /// Largest single event (400 above).
    pub max_event_bytes: usize,
    /// Most events in one request (413 above).
    pub max_batch_events: usize,
    /// Most top-level properties in one event (400 above).
    pub max_properties_per_event: usize,
    /// Longest string value; strings are never truncated, a longer one is a 400.
    pub max_string_bytes: usize,
    /// New fields beyond this many columns in a collection go to `_unmapped`.
    pub max_columns_per_collection: usize,
    /// Collections a project may have; an event for a new collection beyond
    /// it is refused with a 400 naming this limit.
    pub max_collections_per_project: usize,
    /// Request bytes (after decompression) all collection requests may hold
    /// at once; a request that would go over is answered 503 with
    /// `Retry-After`. At least `max_bulk_bytes`.
    pub max_inflight_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Rows returned when a query request names no limit.
    pub default_limit: u64,
    /// The largest limit a query may ask for.
    pub max_limit: u64,
    /// A statement running longer is cancelled.
    pub statement_timeout_secs: u64,
    /// Memory all running queries may hold together; a query that needs
    /// more fails with a clear error instead of exhausting the machine.
    pub memory_limit_bytes: u64,
    /// Memory one query may hold: sorts, joins and aggregations (which
    /// spill to disk first), the result it collects and its encoding.
    pub memory_per_query_bytes: u64,
    /// Queries one project may run at once; more wait for a slot within
    /// their statement timeout.
    pub max_concurrent_per_project: usize,
    /// Threads queries run on, apart from ingest (0: one per core).
    pub threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9999".into(),
            lock_key: String::new(),
            trust_loopback: true,
            metrics_token: String::new(),
            allow_project_deletion: true,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 120,
            max_connections_per_client: 256,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_bulk_bytes: 256 << 20,
            max_event_bytes: 1 << 20,
            max_batch_events: 10_000_000,
            max_properties_per_event: 1000,
            max_string_bytes: 1 << 20,
            max_columns_per_collection: 1000,
            max_collections_per_project: 1000,
            max_inflight_bytes: 512 << 20,
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            default_limit: 50_000,
            max_limit: 1_000_000,
            statement_timeout_secs: 300,
            memory_limit_bytes: 4 << 30,
            memory_per_query_bytes: 1 << 30,
            max_concurrent_per_project: 4,
            threads: 0,
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then `RAKAM_*__*` variables from
    /// `environment`.
    pub fn load(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut document = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let mut defaults = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        defaults.insert(
            "storage".into(),
            toml::Value::Table(StorageConfig::all_defaults()),
        );
        for (name, raw) in environment {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            if parts.len() < 2 {
                continue;
            }
            let mut default = Some(&defaults);
            for part in &parts[..parts.len() - 1] {
                default = default
                    .and_then(|t| t.get(part))
                    .and_then(toml::Value::as_table);
            }
            let key = &parts[parts.len() - 1];
            let value = typed_like(default.and_then(|t| t.get(key)), &raw).ok_or_else(|| {
                ConfigError::Invalid(format!("{name}={raw:?} is not a valid value"))
            })?;
            let mut table = &mut document;
            for part in &parts[..parts.len() - 1] {
                let entry = table
                    .entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(inner) = entry else {
                    return Err(ConfigError::Invalid(format!("{part} must be a table")));
                };
                table = inner;
            }
            table.insert(key.clone(), value);
        }
        let config: Config = document
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.storage.validate().map_err(ConfigError::Invalid)?;
        self.stream.validate().map_err(ConfigError::Invalid)?;
        for proxy in &self.server.trusted_proxies {
            if parse_network(proxy).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "server.trusted_proxies: {proxy:?} is not an IP address or CIDR range"
                )));
            }
        }
        for (key, seconds) in [
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            (
                "server.body_read_timeout_secs",
                self.server.body_read_timeout_secs,
            ),
        ] {
            if !(1..=86_400).contains(&seconds) {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be between 1 and 86400 seconds, not {seconds}"
                )));
            }
        }
        if self.server.max_connections_per_client == 0 {
            return Err(ConfigError::Invalid(
                "server.max_connections_per_client must be at least 1".into(),
            ));
        }
        let largest_body = self
            .limits
            .max_bulk_bytes
            .max(self.limits.max_request_bytes);
        if self.limits.max_inflight_bytes < largest_body {
            return Err(ConfigError::Invalid(format!(
                "limits.max_inflight_bytes ({}) must be at least the largest request body ({largest_body}, limits.max_bulk_bytes / max_request_bytes)",
                self.limits.max_inflight_bytes
            )));
        }
        if self.query.default_limit > self.query.max_limit {
            return Err(ConfigError::Invalid(
                "query.default_limit is above query.max_limit".into(),
            ));
        }
        if self.query.memory_per_query_bytes > self.query.memory_limit_bytes {
            return Err(ConfigError::Invalid(
                "query.memory_per_query_bytes is above query.memory_limit_bytes".into(),
            ));
        }
        if self.query.max_concurrent_per_project == 0 {
            return Err(ConfigError::Invalid(
                "query.max_concurrent_per_project must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }
}

/// An IP address or a CIDR range (`10.0.0.0/8`), as the address and the
/// prefix length.
pub fn parse_network(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (address, prefix) = match text.trim().split_once('/') {
        Some((address, prefix)) => (address, Some(prefix.parse::<u8>().ok()?)),
        None => (text.trim(), None),
    };
    let address: std::net::IpAddr = address.parse().ok()?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(bits);
    (prefix <= bits).then_some((address, prefix))
}

/// Parses an environment value as the type the key has by default.
fn typed_like(default: Option<&toml::Value>, raw: &str) -> Option<toml::Value> {
    Some(match default {
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_string()))
                .collect(),
        ),
        Some(toml::Value::Integer(_)) => toml::Value::Integer(raw.trim().parse().ok()?),
        Some(toml::Value::Float(_)) => toml::Value::Float(raw.trim().parse().ok()?),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return None,
        }),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("rakam.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"0.0.0.0:1\"\n[query]\nmax_limit = 10\ndefault_limit = 5\n",
        )
        .expect("write");
        let config = Config::load(
            Some(&file),
            env(&[
                ("RAKAM_QUERY__MAX_LIMIT", "20"),
                ("RAKAM_SERVER__LOCK_KEY", "12345"),
                ("RAKAM_REQUIRE_SERVICES", "1"),
                ("OTHER", "x"),
            ]),
        )
        .expect("load");
        assert_eq!(config.server.listen, "0.0.0.0:1");
        assert_eq!(config.query.max_limit, 20);
        assert_eq!(config.query.default_limit, 5);
        assert_eq!(config.server.lock_key, "12345");
        assert_eq!(config.storage, StorageConfig::default());
    }

    #[test]
    fn mistakes_are_errors() {
        assert!(Config::load(None, env(&[("RAKAM_QUERY__MAX_LIMIT", "many")])).is_err());
        assert!(Config::load(None, env(&[("RAKAM_QUERY__NO_SUCH_KEY", "1")])).is_err());
        let maybe = env(&[("RAKAM_STORAGE__EMBEDDED__DURABILITY", "maybe")]);
        assert!(Config::load(None, maybe).is_err());
        assert!(Config::load(None, env(&[("RAKAM_STORAGE__DATA_DIR", "/x")])).is_err());
        let bad_proxy = env(&[("RAKAM_SERVER__TRUSTED_PROXIES", "10.0.0.0/33")]);
        assert!(Config::load(None, bad_proxy).is_err());
        assert!(Config::load(None, env(&[("RAKAM_STORAGE__BACKEND", "postgres")])).is_err());
        assert!(Config::load(None, env(&[("RAKAM_STORAGE__BACKEND", "oracle")])).is_err());
        assert!(Config::load(None, env(&[("RAKAM_SERVER__BODY_READ_TIMEOUT_SECS", "0")])).is_err());
        let forever = env(&[("RAKAM_SERVER__HEADER_READ_TIMEOUT_SECS", "86401")]);
        assert!(Config::load(None, forever).is_err());
        let none = env(&[("RAKAM_SERVER__MAX_CONNECTIONS_PER_CLIENT", "0")]);
        assert!(Config::load(None, none).is_err());
        let postgres = Config::load(
            None,
            env(&[
                ("RAKAM_STORAGE__BACKEND", "postgres"),
                ("RAKAM_STORAGE__POSTGRES__URL", "postgres://localhost/rakam"),
                ("RAKAM_SERVER__TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16"),
            ]),
        )
        .expect("postgres with a URL");
        match &postgres.storage {
            StorageConfig::Postgres(options) => {
                assert_eq!(options.url, "postgres://localhost/rakam");
                assert_eq!(options.pool_size, 16);
            }
            other => panic!("not postgres: {other:?}"),
        }
        assert_eq!(
            postgres.server.trusted_proxies,
            ["10.0.0.1", "192.168.0.0/16"]
        );
        let both = dir_with("[storage]\nbackend = \"embedded\"\n[storage.postgres]\nurl = \"x\"\n");
        assert!(Config::load(Some(&both.1), Vec::new()).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[server]\nlistne = \"x\"\n").expect("write");
        assert!(Config::load(Some(&file), Vec::new()).is_err());
    }

    fn dir_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("rakam.toml");
        std::fs::write(&file, text).expect("write");
        (dir, file)
    }

    #[test]
    fn printed_config_loads_back() {
        let postgres = Config {
            storage: StorageConfig::Postgres(PostgresConfig {
                url: "postgres://localhost/x".into(),
                pool_size: 3,
            }),
            ..Config::default()
        };
        let printed = dir_with(&postgres.to_toml());
        assert_eq!(
            Config::load(Some(&printed.1), Vec::new()).expect("load"),
            postgres
        );
        let config = Config::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("printed.toml");
        std::fs::write(&file, config.to_toml()).expect("write");
        assert_eq!(Config::load(Some(&file), Vec::new()).expect("load"), config);
    }
}
