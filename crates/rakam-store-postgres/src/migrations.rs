//! Versioned migrations of the metadata schema. Each runs once, recorded in
//! `rakam_meta.schema_migrations`. Pending migrations run in one transaction
//! that first locks that table, so servers that start together apply them
//! once: the others wait, then find the work done. (A table lock rather than
//! an advisory lock: projects' read-only roles cannot touch `rakam_meta`,
//! but they could hold any advisory lock.)

use rakam_store_api::{Result, StoreError};

use tokio_postgres::error::SqlState;

use crate::connection::{pg_error, Shared};

/// Append only: a released migration is never edited.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
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
    ),
    (
        2,
        "a metadata version per project, for cached snapshots",
        "ALTER TABLE rakam_meta.projects ADD COLUMN version bigint NOT NULL DEFAULT 1;",
    ),
    (
        3,
        "materialized views and the server-time barrier of their refreshes",
        r#"
CREATE TABLE rakam_meta.materialized_views (
    project_id text NOT NULL REFERENCES rakam_meta.projects (id) ON DELETE CASCADE,
    table_name text NOT NULL,
    definition jsonb NOT NULL,
    state jsonb NOT NULL,
    columns jsonb,
    PRIMARY KEY (project_id, table_name)
);
CREATE TABLE rakam_meta.server_time_barriers (
    project_id text PRIMARY KEY REFERENCES rakam_meta.projects (id) ON DELETE CASCADE,
    barrier_ms bigint NOT NULL
);
"#,
    ),
];

pub(crate) async fn apply(shared: &Shared) -> Result<()> {
    let mut client = shared.admin().await?;
    create_bookkeeping(&client).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(pg_error("starting migrations"))?;
    transaction
        .batch_execute("LOCK TABLE rakam_meta.schema_migrations IN EXCLUSIVE MODE")
        .await
        .map_err(pg_error("waiting for the migration lock"))?;
    let row = transaction
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
        tracing::info!(version, name, "applying PostgreSQL metadata migration");
    }
    transaction
        .commit()
        .await
        .map_err(pg_error("committing migrations"))?;
    Ok(())
}

/// The schema and the version table. Two servers creating them at the same
/// moment can collide even with IF NOT EXISTS; the loser finds them made.
async fn create_bookkeeping(client: &deadpool_postgres::Object) -> Result<()> {
    let mut attempt = 0;
    loop {
        let created = client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS rakam_meta;
                 CREATE TABLE IF NOT EXISTS rakam_meta.schema_migrations (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );",
            )
            .await;
        match created {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 3 && error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                attempt += 1;
            }
            Err(error) => return Err(pg_error("creating the metadata schema")(error)),
        }
    }
}
