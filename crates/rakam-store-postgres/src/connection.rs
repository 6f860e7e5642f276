//! Connections: one pool as the configured user (writes, DDL, metadata) and
//! one small pool per project as that project's read-only role (queries).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use parking_lot::Mutex;
use rakam_store_api::{Result, StoreError};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user[:password]@host[:port]/database`. The user creates
    /// schemas and one role per project, so it needs CREATEROLE and CREATE
    /// on the database.
    pub url: String,
    pub catalog_limits: rakam_store_api::CatalogLimits,
    /// Connections of the writing pool.
    pub pool_size: usize,
    /// Connections each project's query pool may open.
    pub reader_pool_size: usize,
    /// How long a schema change waits for the table lock before it gives up
    /// and retries, so a long query cannot stall ingestion behind it.
    pub ddl_lock_timeout: Duration,
    /// `statement_timeout` of queries and scans.
    pub statement_timeout: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            catalog_limits: rakam_store_api::CatalogLimits::default(),
            pool_size: 16,
            reader_pool_size: 4,
            ddl_lock_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub options: PgOptions,
    pub(crate) base: tokio_postgres::Config,
    admin: Pool,
    readers: Mutex<HashMap<String, Pool>>,
}

pub(crate) fn pg_error(context: &str) -> impl FnOnce(tokio_postgres::Error) -> StoreError + '_ {
    move |error| classify(context, &error)
}

/// A READ ONLY transaction under `statement_timeout`, as every query and
/// scan of a project's role runs.
pub(crate) async fn begin_read_only(
    client: &mut Object,
    timeout: Duration,
) -> Result<deadpool_postgres::Transaction<'_>> {
    let transaction = client
        .transaction()
        .await
        .map_err(pg_error("starting a query"))?;
    transaction
        .batch_execute(&format!(
            "SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {}",
            timeout.as_millis().max(1)
        ))
        .await
        .map_err(pg_error("starting a read-only transaction"))?;
    Ok(transaction)
}

/// How a lock wait that hit `lock_timeout` ends its message (ours, so the
/// check does not depend on the server's language).
const LOCK_WAIT: &str = "timed out waiting for a lock";

/// Whether an error is a lock wait that hit `lock_timeout` (worth a retry).
pub(crate) fn is_lock_timeout(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(message) if message.ends_with(LOCK_WAIT))
}

pub(crate) fn classify(context: &str, error: &tokio_postgres::Error) -> StoreError {
    let Some(db) = error.as_db_error() else {
        return StoreError::Unavailable(format!("{context}: {error}"));
    };
    let code = db.code();
    if code == &SqlState::LOCK_NOT_AVAILABLE {
        return StoreError::Unavailable(format!("{context}: {LOCK_WAIT}"));
    }
    // The server is busy or going away: worth a retry, not the client's fault.
    if [
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::T_R_SERIALIZATION_FAILURE,
    ]
    .contains(code)
    {
        return StoreError::Unavailable(format!("{context}: {}", db.message()));
    }
    StoreError::Data(format!("{context}: {}", db.message()))
}

fn pool(config: tokio_postgres::Config, size: usize, recycling: RecyclingMethod) -> Result<Pool> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: recycling,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Unavailable(format!("PostgreSQL pool: {e}")))
}

impl Shared {
    pub async fn connect(options: PgOptions) -> Result<Self> {
        let base = tokio_postgres::Config::from_str(&options.url).map_err(|e| {
            StoreError::Unavailable(format!(
                "invalid PostgreSQL URL {:?}: {e}",
                redact(&options.url)
            ))
        })?;
        let admin = pool(base.clone(), options.pool_size, RecyclingMethod::Fast)?;
        let shared = Self {
            options,
            base,
            admin,
            readers: Mutex::new(HashMap::new()),
        };
        // Fail at start-up, with the address, rather than on the first request.
        let client = shared.admin().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(pg_error("checking the PostgreSQL connection"))?;
        Ok(shared)
    }

    pub async fn admin(&self) -> Result<Object> {
        self.admin.get().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                redact(&self.options.url)
            ))
        })
    }

    /// A connection logged in as the project's read-only role. Connections
    /// are reset (`RESET ALL`, advisory locks released, …) before reuse, so
    /// nothing one query sets leaks into the next.
    pub async fn reader(&self, project_id: &str) -> Result<Object> {
        let existing = self.readers.lock().get(project_id).cloned();
        let pool = match existing {
            Some(pool) => pool,
            None => {
                let row = self
                    .admin()
                    .await?
                    .query_opt(
                        "SELECT reader_role, reader_password FROM rakam_meta.projects WHERE id = $1",
                        &[&project_id],
                    )
                    .await
                    .map_err(pg_error("reading the project's role"))?
                    .ok_or_else(|| StoreError::ProjectNotFound(project_id.to_string()))?;
                let (role, password): (String, String) = (row.get(0), row.get(1));
                let mut config = self.base.clone();
                config.user(&role).password(password);
                let pool = pool(
                    config,
                    self.options.reader_pool_size,
                    RecyclingMethod::Clean,
                )?;
                self.readers
                    .lock()
                    .entry(project_id.to_string())
                    .or_insert(pool)
                    .clone()
            }
        };
        pool.get().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL as the project's reader: {e}"
            ))
        })
    }

    /// Closes connections unused for `max_idle`, so projects that are not
    /// being queried hold no connection (PostgreSQL's `max_connections` is
    /// shared by every project's pool).
    pub fn close_idle(&self, max_idle: Duration) {
        let pools: Vec<Pool> = self.readers.lock().values().cloned().collect();
        for pool in pools.iter().chain(std::iter::once(&self.admin)) {
            pool.retain(|_, metrics| metrics.last_used() < max_idle);
        }
    }

    pub fn forget_reader(&self, project_id: &str) {
        if let Some(pool) = self.readers.lock().remove(project_id) {
            pool.close();
        }
    }

    pub fn close(&self) {
        for (_, pool) in self.readers.lock().drain() {
            pool.close();
        }
        self.admin.close();
    }
}

/// The URL without its password, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let Some(database) = crate::testing::TempDatabase::create("the idle-connection test")
        else {
            return;
        };
        let shared = Shared::connect(PgOptions::new(database.url.clone()))
            .await
            .expect("connect");
        assert_eq!(shared.admin.status().size, 1);
        shared.close_idle(Duration::from_secs(60));
        assert_eq!(
            shared.admin.status().size,
            1,
            "a connection in use recently stays"
        );
        shared.close_idle(Duration::ZERO);
        assert_eq!(shared.admin.status().size, 0);
        shared.close();
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://rakam:secret@db:5432/x"),
            "postgres://rakam:***@db:5432/x"
        );
        assert_eq!(
            super::redact("postgres://rakam@db/x"),
            "postgres://rakam@db/x"
        );
    }
}
