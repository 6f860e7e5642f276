//! Schema changes. Every change of a project's tables or views happens in a
//! transaction that first locks the project's metadata row, so server
//! processes sharing the database apply them one at a time and each reads
//! the columns the previous one committed.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use rakam_model::{FieldType, COLLECTION_COLUMN};
use rakam_store_api::{Result, StoreError};

use crate::connection::{is_lock_timeout, pg_error};
use crate::names::{
    data_schema, data_table, literal, next_month, partition, physical_column, quote, reader_role,
    sql_type, view, view_schema,
};

/// A column as the metadata records it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredColumn {
    pub name: String,
    pub field_type: FieldType,
    /// The type the column was created with; its physical column keeps the
    /// column's bare name.
    pub first_type: FieldType,
}

impl StoredColumn {
    pub fn physical(&self) -> String {
        physical_column(&self.name, &self.field_type, &self.first_type)
    }

    /// The view's expression: the current physical column, falling back to
    /// the first one (cast) for rows written before the widening.
    fn select_expression(&self) -> String {
        let physical = self.physical();
        let current = quote(&physical);
        if self.field_type == self.first_type {
            if physical == self.name {
                current
            } else {
                format!("{current} AS {}", quote(&self.name))
            }
        } else {
            format!(
                "coalesce({current}, {}::{}) AS {}",
                quote(&physical_column(
                    &self.name,
                    &self.first_type,
                    &self.first_type
                )),
                sql_type(&self.field_type),
                quote(&self.name)
            )
        }
    }
}

/// Serialises the project's schema changes: a row lock on its metadata row,
/// held until the transaction ends. Not an advisory lock, which any role
/// (a project's reader too) could take and hold to block schema changes.
pub(crate) async fn lock_project(client: &impl GenericClient, project_id: &str) -> Result<()> {
    client
        .execute(
            "SELECT 1 FROM rakam_meta.projects WHERE id = $1 FOR NO KEY UPDATE",
            &[&project_id],
        )
        .await
        .map_err(pg_error("waiting for the project's schema lock"))?;
    Ok(())
}

/// The collection's columns in order; `None` when the project has no such
/// collection. One round trip: this runs for every ingest request.
pub(crate) async fn load_columns(
    client: &impl GenericClient,
    project_id: &str,
    collection: &str,
) -> Result<Option<Vec<StoredColumn>>> {
    let rows = client
        .query(
            "SELECT col.name, col.type, col.first_type
             FROM rakam_meta.collections c
             LEFT JOIN rakam_meta.columns col
               ON col.project_id = c.project_id AND col.collection = c.name
             WHERE c.project_id = $1 AND c.name = $2
             ORDER BY col.position",
            &[&project_id, &collection],
        )
        .await
        .map_err(pg_error("reading a collection's columns"))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        // A collection without columns yet is one row of nulls.
        let Some(name) = row.get::<_, Option<String>>(0) else {
            continue;
        };
        columns.push(stored_column(name, row.get(1), row.get(2))?);
    }
    Ok(Some(columns))
}

/// A column from its metadata row.
pub(crate) fn stored_column(
    name: String,
    field_type: String,
    first_type: String,
) -> Result<StoredColumn> {
    let parse = |text: String| {
        FieldType::parse(&text)
            .map_err(|_| StoreError::Data(format!("unknown column type {text:?} in metadata")))
    };
    Ok(StoredColumn {
        name,
        field_type: parse(field_type)?,
        first_type: parse(first_type)?,
    })
}

/// Starts a schema change: a transaction whose lock waits give up after
/// `lock_timeout`, so a long query cannot queue every writer behind it.
pub(crate) async fn begin_schema_change(
    client: &mut deadpool_postgres::Object,
    lock_timeout: std::time::Duration,
) -> Result<deadpool_postgres::Transaction<'_>> {
    let transaction = client
        .transaction()
        .await
        .map_err(pg_error("starting a schema change"))?;
    transaction
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = {}",
            lock_timeout.as_millis().max(1)
        ))
        .await
        .map_err(pg_error("setting the lock timeout"))?;
    Ok(transaction)
}

/// Runs `change` again (up to five times, backing off) while it fails only
/// because a lock wait hit `lock_timeout`.
pub(crate) async fn retry_on_lock_timeout<T, F, Fut>(what: &str, mut change: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0_u64;
    loop {
        match change().await {
            Err(error) if is_lock_timeout(&error) && attempt < 5 => {
                attempt += 1;
                tracing::warn!(what, attempt, "waited too long for a lock; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            other => return other,
        }
    }
}

async fn database_name(client: &impl GenericClient) -> Result<String> {
    Ok(client
        .query_one("SELECT current_database()", &[])
        .await
        .map_err(pg_error("reading the database name"))?
        .get(0))
}

pub(crate) async fn create_project_objects(
    client: &impl GenericClient,
    project_id: &str,
    password: &str,
) -> Result<()> {
    let role = quote(&reader_role(project_id));
    let views = quote(&view_schema(project_id));
    let database = database_name(client).await?;
    let sql = format!(
        "CREATE SCHEMA {views};
         CREATE SCHEMA {data};
         CREATE ROLE {role} LOGIN NOINHERIT PASSWORD {password};
         ALTER ROLE {role} SET search_path = {views};
         ALTER ROLE {role} SET default_transaction_read_only = on;
         ALTER ROLE {role} SET timezone = 'UTC';
         ALTER ROLE {role} SET standard_conforming_strings = on;
         GRANT CONNECT ON DATABASE {database} TO {role};
         GRANT USAGE ON SCHEMA {views} TO {role};",
        data = quote(&data_schema(project_id)),
        password = literal(password),
        database = quote(&database),
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(pg_error("creating the project's schemas and role"))?;
    rebuild_all_view(client, project_id).await
}

/// Drops the project's schemas and role; safe to run twice.
pub(crate) async fn drop_project_objects(
    client: &impl GenericClient,
    project_id: &str,
) -> Result<()> {
    let role_name = reader_role(project_id);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {} CASCADE;",
            quote(&view_schema(project_id)),
            quote(&data_schema(project_id)),
        ))
        .await
        .map_err(pg_error("dropping the project's schemas"))?;
    let role_exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role_name])
        .await
        .map_err(pg_error("looking up the project's role"))?
        .is_some();
    if role_exists {
        // Dropping the schemas removed the role's grants on them; what is
        // left is CONNECT. (Not DROP OWNED BY, which needs the role's own
        // privileges: a CREATEROLE user without superuser lacks them.)
        let database = database_name(client).await?;
        let role = quote(&role_name);
        client
            .batch_execute(&format!(
                "REVOKE CONNECT ON DATABASE {} FROM {role}; DROP ROLE {role};",
                quote(&database)
            ))
            .await
            .map_err(pg_error("dropping the project's role"))?;
    }
    Ok(())
}

/// How many collections a project has; the caller holds the project row.
pub(crate) async fn collection_count(
    client: &impl GenericClient,
    project_id: &str,
) -> Result<usize> {
    let row = client
        .query_one(
            "SELECT count(*) FROM rakam_meta.collections WHERE project_id = $1",
            &[&project_id],
        )
        .await
        .map_err(pg_error("counting a project's collections"))?;
    Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(usize::MAX))
}

pub(crate) async fn create_collection(
    client: &impl GenericClient,
    project_id: &str,
    collection: &str,
) -> Result<()> {
    let table = data_table(project_id, collection);
    let sql = format!(
        "CREATE TABLE {table} (
             _time timestamptz NOT NULL,
             _server_time timestamptz NOT NULL,
             _unmapped text
         ) PARTITION BY RANGE (_time);
         CREATE INDEX ON {table} USING brin (_time);
         CREATE INDEX ON {table} USING brin (_server_time);"
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(pg_error("creating a collection table"))?;
    client
        .execute(
            "INSERT INTO rakam_meta.collections (project_id, name) VALUES ($1, $2)",
            &[&project_id, &collection],
        )
        .await
        .map_err(pg_error("recording a collection"))?;
    Ok(())
}

/// Adds the physical column for `column` (new, or widened) and records it.
pub(crate) async fn add_column(
    client: &impl GenericClient,
    project_id: &str,
    collection: &str,
    column: &StoredColumn,
    position: i32,
) -> Result<()> {
    // Adding a nullable column without a default only touches the catalog:
    // no table rewrite, the lock is held for milliseconds.
    client
        .batch_execute(&format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
            data_table(project_id, collection),
            quote(&column.physical()),
            sql_type(&column.field_type)
        ))
        .await
        .map_err(pg_error("adding a column"))?;
    client
        .execute(
            "INSERT INTO rakam_meta.columns (project_id, collection, position, name, type, first_type)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (project_id, collection, name) DO UPDATE SET type = EXCLUDED.type",
            &[
                &project_id,
                &collection,
                &position,
                &column.name,
                &column.field_type.name(),
                &column.first_type.name(),
            ],
        )
        .await
        .map_err(pg_error("recording a column"))?;
    Ok(())
}

/// Recreates the collection's view from the metadata, and drops `_all`
/// (which depends on it). `_all` is rebuilt by the first query that reads it
/// ([`ensure_all_view`]): rebuilding it on every schema change cost time in
/// proportion to all collections' columns, for each new column.
pub(crate) async fn rebuild_views(
    client: &impl GenericClient,
    project_id: &str,
    collection: &str,
    columns: &[StoredColumn],
) -> Result<()> {
    let mut select = vec!["_time".to_string(), "_server_time".to_string()];
    select.extend(columns.iter().map(StoredColumn::select_expression));
    select.push("_unmapped".into());
    let name = view(project_id, collection);
    let sql = format!(
        "DROP VIEW IF EXISTS {all};
         DROP VIEW IF EXISTS {name};
         CREATE VIEW {name} AS SELECT {select} FROM {table};
         GRANT SELECT ON {name} TO {role};",
        all = view(project_id, "_all"),
        role = quote(&reader_role(project_id)),
        select = select.join(", "),
        table = data_table(project_id, collection),
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(pg_error("rebuilding a collection view"))?;
    Ok(())
}

/// Builds `_all` if a schema change dropped it since, under the project's
/// metadata row lock (so it reads a settled schema and is built once).
pub(crate) async fn ensure_all_view(
    client: &mut deadpool_postgres::Object,
    project_id: &str,
    lock_timeout: std::time::Duration,
) -> Result<()> {
    let all = view(project_id, "_all");
    let exists = |row: tokio_postgres::Row| row.get::<_, Option<String>>(0).is_some();
    let present = client
        .query_one("SELECT to_regclass($1)::text", &[&all])
        .await
        .map(exists)
        .map_err(pg_error("looking for _all"))?;
    if present {
        return Ok(());
    }
    let transaction = begin_schema_change(client, lock_timeout).await?;
    transaction
        .query_opt(
            "SELECT id FROM rakam_meta.projects WHERE id = $1 FOR NO KEY UPDATE",
            &[&project_id],
        )
        .await
        .map_err(pg_error("locking the project"))?;
    let present = transaction
        .query_one("SELECT to_regclass($1)::text", &[&all])
        .await
        .map(exists)
        .map_err(pg_error("looking for _all"))?;
    if !present {
        rebuild_all_view(&transaction, project_id).await?;
    }
    transaction
        .commit()
        .await
        .map_err(pg_error("committing _all"))
}

/// `_all`: every collection, columns the union of theirs (null where a
/// collection lacks one), typed as the embedded store types them.
async fn rebuild_all_view(client: &impl GenericClient, project_id: &str) -> Result<()> {
    let rows = client
        .query(
            "SELECT c.name, col.name, col.type
             FROM rakam_meta.collections c
             LEFT JOIN rakam_meta.columns col
               ON col.project_id = c.project_id AND col.collection = c.name
             WHERE c.project_id = $1 ORDER BY c.name, col.position",
            &[&project_id],
        )
        .await
        .map_err(pg_error("reading the project's columns"))?;
    let mut collections: BTreeMap<String, BTreeMap<String, FieldType>> = BTreeMap::new();
    for row in rows {
        let collection: String = row.get(0);
        let entry = collections.entry(collection).or_default();
        let (Some(name), Some(type_name)) = (
            row.get::<_, Option<String>>(1),
            row.get::<_, Option<String>>(2),
        ) else {
            continue;
        };
        if let Ok(field_type) = FieldType::parse(&type_name) {
            entry.insert(name, field_type);
        }
    }
    let mut merged: BTreeMap<String, FieldType> = BTreeMap::new();
    for columns in collections.values() {
        for (name, field_type) in columns {
            let next = match merged.get(name) {
                None => field_type.clone(),
                Some(existing) if existing == field_type => existing.clone(),
                Some(FieldType::Long | FieldType::Double)
                    if matches!(field_type, FieldType::Long | FieldType::Double) =>
                {
                    FieldType::Double
                }
                Some(_) => FieldType::String,
            };
            merged.insert(name.clone(), next);
        }
    }
    let all = view(project_id, "_all");
    let body = if collections.is_empty() {
        format!(
            "SELECT NULL::text AS {} WHERE false",
            quote(COLLECTION_COLUMN)
        )
    } else {
        let branches: Vec<String> = collections
            .iter()
            .map(|(collection, columns)| {
                let mut select = vec![
                    format!(
                        "{}::text AS {}",
                        literal(collection),
                        quote(COLLECTION_COLUMN)
                    ),
                    "_time".into(),
                    "_server_time".into(),
                ];
                for (name, merged_type) in &merged {
                    let target = sql_type(merged_type);
                    select.push(match columns.get(name) {
                        Some(own) if own == merged_type => quote(name),
                        Some(_) => format!("{}::{target} AS {}", quote(name), quote(name)),
                        None => format!("NULL::{target} AS {}", quote(name)),
                    });
                }
                select.push("_unmapped".into());
                format!(
                    "SELECT {} FROM {}",
                    select.join(", "),
                    view(project_id, collection)
                )
            })
            .collect();
        branches.join(" UNION ALL ")
    };
    client
        .batch_execute(&format!(
            "DROP VIEW IF EXISTS {all}; CREATE VIEW {all} AS {body};
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};",
            schema = quote(&view_schema(project_id)),
            role = quote(&reader_role(project_id)),
        ))
        .await
        .map_err(pg_error("rebuilding _all"))?;
    Ok(())
}

/// Creates the monthly partitions that rows in these months need.
pub(crate) async fn create_partitions(
    client: &impl GenericClient,
    project_id: &str,
    collection: &str,
    months: &[(i32, u32)],
) -> Result<()> {
    let mut sql = String::new();
    for &(year, month) in months {
        let (end_year, end_month) = next_month(year, month);
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ('{year:04}-{month:02}-01 00:00:00+00') TO ('{end_year:04}-{end_month:02}-01 00:00:00+00');",
            partition(project_id, collection, year, month),
            data_table(project_id, collection),
        ));
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(pg_error("creating partitions"))?;
    Ok(())
}
