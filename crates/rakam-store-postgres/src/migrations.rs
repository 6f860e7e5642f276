//! Versioned migrations of the metadata schema. Each runs once, in its own
//! transaction, recorded in `rakam_meta.schema_migrations`; servers that
//! start together serialise on an advisory lock, so one applies and the
//! others find the work done.

use rakam_store_api::{Result, StoreError};

use crate::connection::{pg_error, Shared};

/// Append only: a released migration is never edited.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "projects, keys, collections and columns",
    r#"
CREATE TABLE rakam_meta.projects (
    name text PRIMARY KEY,
    id text NOT NULL UNIQUE,
    created_at_ms bigint NOT NULL,
    reader_role text NOT NULL,
    reader_password text NOT NULL
);
CREATE TABLE rakam_meta.api_keys (
    key_hash text PRIMARY KEY,
    project_id text NOT NULL REFERENCES rakam_meta.projects (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('master', 'read', 'write'))
);
CREATE TABLE rakam_meta.collections (
    project_id text NOT NULL REFERENCES rakam_meta.projects (id) ON DELETE CASCADE,
    name text NOT NULL,
    PRIMARY KEY (project_id, name)
);
CREATE TABLE rakam_meta.columns (
    project_id text NOT NULL,
    collection text NOT NULL,
    position integer NOT NULL,
    name text NOT NULL,
    type text NOT NULL,
    first_type text NOT NULL,
    PRIMARY KEY (project_id, collection, name),
    FOREIGN KEY (project_id, collection)
        REFERENCES rakam_meta.collections (project_id, name) ON DELETE CASCADE
);
REVOKE ALL ON SCHEMA rakam_meta FROM PUBLIC;
"#,
)];

/// Advisory lock key of the migration runner ("rakammig" as bytes).
const MIGRATION_LOCK: i64 = 0x7261_6b61_6d6d_6967;

pub(crate) async fn apply(shared: &Shared) -> Result<()> {
    let mut client = shared.admin().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error("waiting for the migration lock"))?;
    let outcome = apply_locked(&mut client).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    outcome
}

async fn apply_locked(client: &mut deadpool_postgres::Object) -> Result<()> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS rakam_meta;
             CREATE TABLE IF NOT EXISTS rakam_meta.schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await
        .map_err(pg_error("creating the metadata schema"))?;
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM rakam_meta.schema_migrations",
            &[],
        )
        .await
        .map_err(pg_error("reading the schema version"))?;
    let current: i32 = row.get(0);
    let known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    if current > known {
        return Err(StoreError::Data(format!(
            "the database is at metadata version {current}, but this rakam knows only up to {known}: upgrade rakam"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        let transaction = client
            .transaction()
            .await
            .map_err(pg_error("starting a migration"))?;
        transaction
            .batch_execute(sql)
            .await
            .map_err(pg_error(&format!("migration {version} ({name})")))?;
        transaction
            .execute(
                "INSERT INTO rakam_meta.schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await
            .map_err(pg_error("recording a migration"))?;
        transaction
            .commit()
            .await
            .map_err(pg_error("committing a migration"))?;
        tracing::info!(version, name, "applied PostgreSQL metadata migration");
    }
    Ok(())
}
