//! Materialized views on PostgreSQL: a table `"$materialized_<name>"` in
//! the project's view schema (the read-only role may SELECT it) and a row
//! in `rakam_meta.materialized_views`. A refresh deletes or keeps the rows,
//! COPYs the new ones and updates the row in one transaction (ADR 0013).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use deadpool_postgres::GenericClient;
use futures::{pin_mut, SinkExt, StreamExt};
use rakam_store_api::{
    ProjectId, Result, StoreError, StoredView, ViewDefinition, ViewState, ViewStore, ViewWrite,
    ViewWriteMode,
};
use serde::{Deserialize, Serialize};

use crate::connection::{pg_error, Shared};
use crate::copy_in::{check_batch, encode_rows, HEADER, TRAILER};
use crate::names::{quote, reader_role, view};

const ROWS_PER_CHUNK: usize = 4_096;

#[derive(Debug)]
pub struct PgViews {
    shared: Arc<Shared>,
}

impl PgViews {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// The table of a view's rows, in the project's view schema (collection
/// names cannot start with `$materialized`).
fn rows_table_name(table_name: &str) -> String {
    format!("$materialized_{table_name}")
}

/// What each view's rows cover, readable by the project's role so that a
/// real-time read takes it in the same statement (and snapshot) as the rows.
fn covered_table(project_id: &str) -> String {
    view(project_id, "$materialized")
}

fn covered_through_sql(project_id: &str, table_name: &str) -> String {
    format!(
        "(SELECT covered_through_ms FROM {} WHERE table_name = {})",
        covered_table(project_id),
        crate::names::literal(table_name)
    )
}

async fn create_covered_table(client: &impl GenericClient, project_id: &str) -> Result<()> {
    let table = covered_table(project_id);
    // Two first views of a project created at the same moment may collide
    // here; the loser's creation fails whole and can be retried.
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (table_name text PRIMARY KEY, covered_through_ms bigint NOT NULL);
             GRANT SELECT ON {table} TO {};",
            quote(&reader_role(project_id))
        ))
        .await
        .map_err(pg_error("creating the views' coverage table"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredColumn {
    name: String,
    #[serde(rename = "type")]
    sql_type: String,
}

/// The Arrow type a result column is stored as, and its PostgreSQL type.
fn storage_type(data_type: &DataType) -> Result<(DataType, String)> {
    Ok(match data_type {
        DataType::Boolean => (DataType::Boolean, "boolean".into()),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => (DataType::Int64, "bigint".into()),
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => (DataType::Float64, "double precision".into()),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            (DataType::Utf8, "text".into())
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            (DataType::Binary, "bytea".into())
        }
        DataType::Date32 | DataType::Date64 => (DataType::Date32, "date".into()),
        DataType::Timestamp(_, Some(zone)) => (
            DataType::Timestamp(TimeUnit::Millisecond, Some(zone.clone())),
            "timestamptz".into(),
        ),
        DataType::Timestamp(_, None) => (
            DataType::Timestamp(TimeUnit::Millisecond, None),
            "timestamp".into(),
        ),
        DataType::List(item) | DataType::LargeList(item) => {
            let (inner, sql) = storage_type(item.data_type())?;
            if matches!(inner, DataType::List(_)) {
                return Err(unsupported(data_type));
            }
            (
                DataType::List(Arc::new(Field::new("item", inner, true))),
                format!("{sql}[]"),
            )
        }
        other => return Err(unsupported(other)),
    })
}

fn unsupported(data_type: &DataType) -> StoreError {
    StoreError::Unstorable(format!(
        "a materialized view on PostgreSQL cannot store a column of type {data_type}"
    ))
}

fn arrow_type(sql_type: &str) -> DataType {
    match sql_type.strip_suffix("[]") {
        Some(item) => DataType::List(Arc::new(Field::new("item", arrow_type(item), true))),
        None => match sql_type {
            "boolean" => DataType::Boolean,
            "bigint" => DataType::Int64,
            "double precision" => DataType::Float64,
            "date" => DataType::Date32,
            "bytea" => DataType::Binary,
            "timestamptz" => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, None),
            _ => DataType::Utf8,
        },
    }
}

fn stored_columns(schema: &Schema) -> Result<(SchemaRef, Vec<StoredColumn>)> {
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let (data_type, sql_type) = storage_type(field.data_type())?;
        fields.push(Field::new(field.name(), data_type, true));
        columns.push(StoredColumn {
            name: field.name().clone(),
            sql_type,
        });
    }
    Ok((Arc::new(Schema::new(fields)), columns))
}

fn schema_of(columns: &[StoredColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(&c.sql_type), true))
            .collect::<Vec<_>>(),
    ))
}

fn json<T: Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| StoreError::Data(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| StoreError::Data(format!("view metadata: {e}")))
}

fn stored_view(row: &tokio_postgres::Row) -> Result<StoredView> {
    let columns: Option<Vec<StoredColumn>> = row
        .get::<_, Option<serde_json::Value>>("columns")
        .map(parse)
        .transpose()?;
    Ok(StoredView {
        definition: parse(row.get("definition"))?,
        state: parse(row.get("state"))?,
        schema: columns.as_deref().map(schema_of),
    })
}

const SELECT_VIEW: &str = "SELECT definition, state, columns FROM rakam_meta.materialized_views";

/// Sends the batches to an open `COPY ... FROM STDIN (FORMAT binary)`.
async fn copy_rows(
    transaction: &tokio_postgres::Transaction<'_>,
    table: &str,
    schema: &SchemaRef,
    mut batches: futures::stream::BoxStream<'static, Result<RecordBatch>>,
) -> Result<u64> {
    let names: Vec<String> = schema.fields().iter().map(|f| quote(f.name())).collect();
    let statement = format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        names.join(", ")
    );
    let sink = transaction
        .copy_in::<_, bytes::Bytes>(&statement)
        .await
        .map_err(pg_error("starting a view's COPY"))?;
    pin_mut!(sink);
    let mut buffer = BytesMut::with_capacity(1 << 20);
    buffer.extend_from_slice(HEADER);
    let mut rows = 0_u64;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| cast(column, field.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        check_batch(schema.fields(), &columns)?;
        let count = batch.num_rows();
        let mut start = 0;
        while start < count {
            let end = (start + ROWS_PER_CHUNK).min(count);
            encode_rows(&mut buffer, &columns, start, end)?;
            sink.send(buffer.split().freeze())
                .await
                .map_err(pg_error("copying a view's rows"))?;
            start = end;
        }
        rows += count as u64;
    }
    buffer.extend_from_slice(TRAILER);
    sink.send(buffer.split().freeze())
        .await
        .map_err(pg_error("copying a view's rows"))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(pg_error("finishing a view's COPY"))?;
    Ok(rows)
}

#[async_trait]
impl ViewStore for PgViews {
    async fn create(&self, project: &ProjectId, definition: ViewDefinition) -> Result<()> {
        let mut client = self.shared.admin().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(pg_error("starting a view's creation"))?;
        let inserted = transaction
            .execute(
                "INSERT INTO rakam_meta.materialized_views (project_id, table_name, definition, state)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[
                    &project.as_str(),
                    &definition.table_name,
                    &json(&definition)?,
                    &json(&ViewState::default())?,
                ],
            )
            .await
            .map_err(pg_error("recording a view"))?;
        if inserted == 0 {
            return Err(StoreError::ViewExists(definition.table_name));
        }
        create_covered_table(&transaction, project.as_str()).await?;
        transaction
            .commit()
            .await
            .map_err(pg_error("committing a view's creation"))
    }

    async fn list(&self, project: &ProjectId) -> Result<Vec<StoredView>> {
        let client = self.shared.admin().await?;
        let rows = client
            .query(
                &format!("{SELECT_VIEW} WHERE project_id = $1 ORDER BY table_name"),
                &[&project.as_str()],
            )
            .await
            .map_err(pg_error("listing views"))?;
        rows.iter().map(stored_view).collect()
    }

    async fn list_all(&self) -> Result<Vec<(ProjectId, StoredView)>> {
        let client = self.shared.admin().await?;
        let rows = client
            .query(
                "SELECT project_id, definition, state, columns FROM rakam_meta.materialized_views",
                &[],
            )
            .await
            .map_err(pg_error("listing views"))?;
        rows.iter()
            .map(|row| Ok((ProjectId::new(row.get::<_, String>(0)), stored_view(row)?)))
            .collect()
    }

    async fn get(&self, project: &ProjectId, table_name: &str) -> Result<Option<StoredView>> {
        let client = self.shared.admin().await?;
        let row = client
            .query_opt(
                &format!("{SELECT_VIEW} WHERE project_id = $1 AND table_name = $2"),
                &[&project.as_str(), &table_name],
            )
            .await
            .map_err(pg_error("reading a view"))?;
        row.as_ref().map(stored_view).transpose()
    }

    async fn change(&self, project: &ProjectId, definition: ViewDefinition) -> Result<()> {
        let client = self.shared.admin().await?;
        let updated = client
            .execute(
                "UPDATE rakam_meta.materialized_views SET definition = $3
                 WHERE project_id = $1 AND table_name = $2",
                &[
                    &project.as_str(),
                    &definition.table_name,
                    &json(&definition)?,
                ],
            )
            .await
            .map_err(pg_error("changing a view"))?;
        if updated == 0 {
            return Err(StoreError::ViewNotFound(definition.table_name));
        }
        Ok(())
    }

    async fn delete(&self, project: &ProjectId, table_name: &str) -> Result<bool> {
        let mut client = self.shared.admin().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(pg_error("starting a view's deletion"))?;
        let deleted = transaction
            .execute(
                "DELETE FROM rakam_meta.materialized_views WHERE project_id = $1 AND table_name = $2",
                &[&project.as_str(), &table_name],
            )
            .await
            .map_err(pg_error("deleting a view"))?;
        transaction
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {}",
                view(project.as_str(), &rows_table_name(table_name))
            ))
            .await
            .map_err(pg_error("dropping a view's table"))?;
        transaction
            .execute(
                &format!(
                    "DELETE FROM {} WHERE table_name = $1",
                    covered_table(project.as_str())
                ),
                &[&table_name],
            )
            .await
            .map_err(pg_error("deleting a view's coverage"))?;
        transaction
            .commit()
            .await
            .map_err(pg_error("committing a view's deletion"))?;
        Ok(deleted > 0)
    }

    async fn write(
        &self,
        project: &ProjectId,
        table_name: &str,
        write: ViewWrite,
    ) -> Result<ViewState> {
        let (schema, columns) = stored_columns(&write.schema)?;
        let table = view(project.as_str(), &rows_table_name(table_name));
        let mut client = self.shared.admin().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(pg_error("starting a view refresh"))?;
        let row = transaction
            .query_opt(
                &format!("{SELECT_VIEW} WHERE project_id = $1 AND table_name = $2 FOR UPDATE"),
                &[&project.as_str(), &table_name],
            )
            .await
            .map_err(pg_error("locking a view"))?
            .ok_or_else(|| StoreError::ViewNotFound(table_name.to_string()))?;
        let current = stored_view(&row)?;
        if current.state.generation != write.expected_generation {
            return Err(StoreError::ViewChanged(table_name.to_string()));
        }
        let stored: Option<Vec<StoredColumn>> = row
            .get::<_, Option<serde_json::Value>>("columns")
            .map(parse)
            .transpose()?;
        let same_columns = stored.as_ref() == Some(&columns);
        let appending = write.mode == ViewWriteMode::Append;
        if appending && !same_columns {
            return Err(StoreError::ViewColumnsChanged(table_name.to_string()));
        }
        if !same_columns {
            let definitions: Vec<String> = columns
                .iter()
                .map(|c| format!("{} {}", quote(&c.name), c.sql_type))
                .collect();
            transaction
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {table};
                     CREATE TABLE {table} ({});
                     GRANT SELECT ON {table} TO {};",
                    definitions.join(", "),
                    quote(&reader_role(project.as_str()))
                ))
                .await
                .map_err(pg_error("creating a view's table"))?;
        } else if !appending {
            // DELETE, not TRUNCATE: readers keep reading the previous rows
            // until the commit instead of waiting for a lock.
            transaction
                .batch_execute(&format!("DELETE FROM {table}"))
                .await
                .map_err(pg_error("replacing a view's rows"))?;
        }
        let rows = copy_rows(&transaction, &table, &schema, write.batches).await?;
        let mut state = write.state;
        state.rows = if appending {
            current.state.rows + rows
        } else {
            rows
        };
        transaction
            .execute(
                "UPDATE rakam_meta.materialized_views SET state = $3, columns = $4
                 WHERE project_id = $1 AND table_name = $2",
                &[
                    &project.as_str(),
                    &table_name,
                    &json(&state)?,
                    &json(&columns)?,
                ],
            )
            .await
            .map_err(pg_error("recording a view refresh"))?;
        if let Some(covered) = state.covered_through_ms {
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {} (table_name, covered_through_ms) VALUES ($1, $2)
                         ON CONFLICT (table_name) DO UPDATE SET covered_through_ms = EXCLUDED.covered_through_ms",
                        covered_table(project.as_str())
                    ),
                    &[&table_name, &covered],
                )
                .await
                .map_err(pg_error("recording what a view covers"))?;
        }
        transaction
            .commit()
            .await
            .map_err(pg_error("committing a view refresh"))?;
        Ok(state)
    }

    async fn table_provider(
        &self,
        project: &ProjectId,
        table_name: &str,
    ) -> Result<Option<(Arc<dyn TableProvider>, ViewState)>> {
        let Some(stored) = self.get(project, table_name).await? else {
            return Ok(None);
        };
        let Some(schema) = stored.schema else {
            return Ok(None);
        };
        let rows_table = view(project.as_str(), &rows_table_name(table_name));
        let covered = covered_through_sql(project.as_str(), table_name);
        let (provider, covered_through_ms) = crate::view_snapshot::read_consistently(
            &self.shared,
            project.as_str(),
            &rows_table,
            &covered,
            schema,
        )
        .await?;
        let state = ViewState {
            covered_through_ms,
            ..stored.state
        };
        Ok(Some((provider, state)))
    }

    fn native_table_name(&self, project: &ProjectId, table_name: &str) -> Option<String> {
        Some(view(project.as_str(), &rows_table_name(table_name)))
    }

    fn native_covered_through(&self, project: &ProjectId, table_name: &str) -> Option<String> {
        Some(covered_through_sql(project.as_str(), table_name))
    }

    async fn delete_project(&self, project: &ProjectId) -> Result<()> {
        // The tables go with the project's schemas, the rows with the
        // project (foreign key); this covers a project kept but emptied.
        for stored in self.list(project).await? {
            self.delete(project, &stored.definition.table_name).await?;
        }
        Ok(())
    }
}
