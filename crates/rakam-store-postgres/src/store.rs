//! Appends: one transaction per request, a binary `COPY` per collection,
//! acknowledged after `COMMIT`, so several server processes can write the
//! same tables with nothing but PostgreSQL coordinating them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use chrono::{DateTime, Datelike};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use futures::{pin_mut, SinkExt};
use parking_lot::Mutex;
use rakam_model::{FieldType, SERVER_TIME_COLUMN, TIME_COLUMN, UNMAPPED_COLUMN};
use rakam_store_api::{
    earliest_server_time, restamp_server_time, Append, CollectionStats, EventSink, LogPosition,
    LoggedAppend, ProjectId, Result, StoreError, TableSource,
};
use tokio_postgres::error::SqlState;

use crate::barrier::{hold_barrier_share, raise_barrier};
use crate::connection::{pg_error, Shared};
use crate::copy_in::{check_batch, encode_rows, HEADER, TRAILER};
use crate::ddl::{self, StoredColumn};
use crate::names::{data_table, next_month, physical_column, quote, view};
use crate::provider::PgCollectionProvider;

/// Rows encoded per message sent to the server.
const ROWS_PER_CHUNK: usize = 4_096;

type CollectionKey = (String, String);

#[derive(Debug)]
pub struct PgStore {
    shared: Arc<Shared>,
    /// Physical columns per (project id, collection); reloaded when a batch
    /// names a column or type this copy has not seen.
    columns: Mutex<HashMap<CollectionKey, Arc<Vec<StoredColumn>>>>,
    /// Monthly partitions known to exist: (project id, collection, year, month).
    partitions: Mutex<HashSet<(String, String, i32, u32)>>,
}

fn month_start_millis(year: i32, month: u32) -> Option<i64> {
    chrono::NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

/// The (year, month) of every `_time` in the batch.
fn months_of(batch: &RecordBatch) -> Result<Vec<(i32, u32)>> {
    let times = batch
        .column_by_name(TIME_COLUMN)
        .ok_or_else(|| StoreError::Data("a batch has no _time column".into()))?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| StoreError::Data("_time is not a millisecond timestamp".into()))?;
    let mut months = HashSet::new();
    // Rows arrive mostly in time order: skip the calendar while a row stays
    // within the month of the previous one.
    let mut current: Option<(i64, i64)> = None;
    for index in 0..times.len() {
        if times.is_null(index) {
            continue;
        }
        let millis = times.value(index);
        if matches!(current, Some((start, end)) if millis >= start && millis < end) {
            continue;
        }
        let time = DateTime::from_timestamp_millis(millis)
            .ok_or_else(|| StoreError::Data(format!("_time {millis} is out of range")))?;
        let (year, month) = (time.year(), time.month());
        if !(1..=9999).contains(&year) {
            return Err(StoreError::Data(format!(
                "_time {time} is outside the years 1 to 9999"
            )));
        }
        let start = month_start_millis(year, month);
        let (next_year, next_month) = next_month(year, month);
        if let (Some(start), Some(end)) = (start, month_start_millis(next_year, next_month)) {
            current = Some((start, end));
        }
        months.insert((year, month));
    }
    let mut months: Vec<_> = months.into_iter().collect();
    months.sort_unstable();
    Ok(months)
}

impl PgStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            columns: Mutex::new(HashMap::new()),
            partitions: Mutex::new(HashSet::new()),
        }
    }

    /// The physical column each field of the batch goes to.
    async fn physical_columns(
        &self,
        project: &ProjectId,
        collection: &str,
        schema: &SchemaRef,
    ) -> Result<Vec<String>> {
        let key = (project.as_str().to_string(), collection.to_string());
        let resolve = |columns: &[StoredColumn]| -> Option<Vec<String>> {
            schema
                .fields()
                .iter()
                .map(|field| {
                    let name = field.name().as_str();
                    if [TIME_COLUMN, SERVER_TIME_COLUMN, UNMAPPED_COLUMN].contains(&name) {
                        return Some(name.to_string());
                    }
                    let stored = columns.iter().find(|c| c.name == name)?;
                    let field_type = FieldType::from_arrow(field.data_type())?;
                    if field_type != stored.field_type && field_type != stored.first_type {
                        return None;
                    }
                    Some(physical_column(name, &field_type, &stored.first_type))
                })
                .collect()
        };
        let cached = self.columns.lock().get(&key).cloned();
        if let Some(resolved) = cached.as_deref().and_then(|c| resolve(c)) {
            return Ok(resolved);
        }
        let client = self.shared.admin().await?;
        let columns = ddl::load_columns(&client, project.as_str(), collection)
            .await?
            .ok_or_else(|| {
                StoreError::Data(format!("collection {collection:?} has no table yet"))
            })?;
        let resolved = resolve(&columns).ok_or_else(|| {
            StoreError::Data(format!(
                "a batch for {collection:?} does not fit the collection's columns"
            ))
        })?;
        self.columns.lock().insert(key, Arc::new(columns));
        Ok(resolved)
    }

    async fn ensure_partitions(
        &self,
        project: &ProjectId,
        collection: &str,
        months: &[(i32, u32)],
    ) -> Result<()> {
        let missing: Vec<(i32, u32)> = {
            let known = self.partitions.lock();
            months
                .iter()
                .copied()
                .filter(|(y, m)| {
                    !known.contains(&(project.as_str().to_string(), collection.to_string(), *y, *m))
                })
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        // The month after the newest one too, so the first event of a month
        // rarely has to wait for the partition's lock.
        let mut wanted = missing.clone();
        if let Some(&(year, month)) = missing.iter().max() {
            wanted.push(next_month(year, month));
        }
        // Attaching a partition locks the parent table: behind a long query
        // it would stall every writer, so it gives up after the lock timeout
        // and retries, as schema changes do.
        ddl::retry_on_lock_timeout("partition creation", || {
            self.create_partitions(project, collection, &wanted)
        })
        .await?;
        let mut known = self.partitions.lock();
        for (year, month) in wanted {
            known.insert((
                project.as_str().to_string(),
                collection.to_string(),
                year,
                month,
            ));
        }
        Ok(())
    }

    async fn create_partitions(
        &self,
        project: &ProjectId,
        collection: &str,
        months: &[(i32, u32)],
    ) -> Result<()> {
        let mut client = self.shared.admin().await?;
        let transaction =
            ddl::begin_schema_change(&mut client, self.shared.options.ddl_lock_timeout).await?;
        ddl::lock_project(&transaction, project.as_str()).await?;
        ddl::create_partitions(&transaction, project.as_str(), collection, months).await?;
        transaction
            .commit()
            .await
            .map_err(pg_error("committing partitions"))
    }

    /// Whether the collection's table exists; known collections cost no
    /// round trip.
    async fn collection_exists(&self, project: &ProjectId, collection: &str) -> Result<bool> {
        let key = (project.as_str().to_string(), collection.to_string());
        if self.columns.lock().contains_key(&key) {
            return Ok(true);
        }
        let client = self.shared.admin().await?;
        match ddl::load_columns(&client, project.as_str(), collection).await? {
            Some(columns) => {
                self.columns.lock().insert(key, Arc::new(columns));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn forget(&self, project_id: &str) {
        self.columns.lock().retain(|(id, _), _| id != project_id);
        self.partitions
            .lock()
            .retain(|(id, _, _, _)| id != project_id);
    }
}

#[async_trait]
impl EventSink for PgStore {
    /// One transaction per call, whatever its size: all of it or none.
    /// Batches built for an older schema version still fit: a widened
    /// column keeps a physical column per type it has had.
    async fn append(&self, append: Append) -> Result<Option<LogPosition>> {
        let Append {
            project, batches, ..
        } = append;
        let project = &project;
        let mut plans = Vec::with_capacity(batches.len());
        for (collection, batch) in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            check_batch(batch.schema().fields(), batch.columns())?;
            let physical = self
                .physical_columns(project, &collection, &batch.schema())
                .await?;
            let months = months_of(&batch)?;
            self.ensure_partitions(project, &collection, &months)
                .await?;
            plans.push((collection, batch, physical));
        }
        if plans.is_empty() {
            return Ok(None);
        }
        let mut client = self.shared.admin().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(pg_error("starting an append"))?;
        let barrier = hold_barrier_share(&transaction, project.as_str()).await?;
        // Received before a view refresh's barrier but not yet visible to
        // it: the rows count as received after it.
        let earliest = earliest_server_time(plans.iter().map(|(_, batch, _)| batch));
        if earliest.is_some_and(|earliest| earliest <= barrier) {
            for (_, batch, _) in &mut plans {
                *batch = restamp_server_time(batch, barrier + 1)?;
            }
        }
        for (collection, batch, physical) in &plans {
            let columns: Vec<String> = physical.iter().map(|c| quote(c)).collect();
            let statement = format!(
                "COPY {} ({}) FROM STDIN (FORMAT binary)",
                data_table(project.as_str(), collection),
                columns.join(", ")
            );
            let sink = transaction
                .copy_in::<_, bytes::Bytes>(&statement)
                .await
                .map_err(pg_error("starting COPY"))?;
            pin_mut!(sink);
            let mut buffer = BytesMut::with_capacity(1 << 20);
            buffer.extend_from_slice(HEADER);
            let rows = batch.num_rows();
            let mut start = 0;
            while start < rows {
                let end = (start + ROWS_PER_CHUNK).min(rows);
                encode_rows(&mut buffer, batch.columns(), start, end)?;
                if end == rows {
                    buffer.extend_from_slice(TRAILER);
                }
                sink.send(buffer.split().freeze())
                    .await
                    .map_err(|e| self.copy_failed(project, collection, &e))?;
                start = end;
            }
            sink.as_mut()
                .finish()
                .await
                .map_err(|e| self.copy_failed(project, collection, &e))?;
        }
        transaction
            .commit()
            .await
            .map_err(pg_error("committing an append"))?;
        Ok(None)
    }

    /// Appends hold a share lock on the project's barrier row from the
    /// start of their transaction to its commit; raising the barrier waits
    /// for them, and appends after it see the new barrier.
    async fn server_time_barrier(&self, project: &ProjectId, floor_ms: i64) -> Result<i64> {
        let at_least = rakam_common::time::now_millis().max(floor_ms);
        raise_barrier(&self.shared, project.as_str(), at_least).await
    }

    async fn replay(&self, _after: LogPosition) -> Result<Option<Vec<LoggedAppend>>> {
        Ok(None)
    }

    async fn delete_project(&self, project: &ProjectId) -> Result<()> {
        let mut client = self.shared.admin().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(pg_error("starting project deletion"))?;
        ddl::lock_project(&transaction, project.as_str()).await?;
        ddl::drop_project_objects(&transaction, project.as_str()).await?;
        transaction
            .commit()
            .await
            .map_err(pg_error("committing project deletion"))?;
        self.shared.forget_reader(project.as_str());
        self.forget(project.as_str());
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        // Every acknowledged append is already committed.
        Ok(())
    }

    async fn shutdown(&self) -> Result<()> {
        self.shared.close();
        Ok(())
    }
}

#[async_trait]
impl TableSource for PgStore {
    async fn table_provider(
        &self,
        project: &ProjectId,
        collection: &str,
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>> {
        let exists = self.collection_exists(project, collection).await?;
        Ok(Arc::new(PgCollectionProvider::new(
            self.shared.clone(),
            project.as_str(),
            collection,
            schema,
            exists,
        )))
    }

    async fn stats(&self, project: &ProjectId, collection: &str) -> Result<CollectionStats> {
        let client = self.shared.admin().await?;
        let sql = format!(
            "SELECT count(*), count(_unmapped) FROM {}",
            view(project.as_str(), collection)
        );
        match client.query_one(&sql, &[]).await {
            Ok(row) => Ok(CollectionStats {
                rows: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                unmapped_rows: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            }),
            Err(error)
                if matches!(
                    error.code(),
                    Some(&SqlState::UNDEFINED_TABLE) | Some(&SqlState::INVALID_SCHEMA_NAME)
                ) =>
            {
                Ok(CollectionStats::default())
            }
            Err(error) => Err(pg_error("counting rows")(error)),
        }
    }
}

impl PgStore {
    /// Materialized views kept in the database.
    pub fn views(&self) -> Arc<dyn rakam_store_api::ViewStore> {
        Arc::new(crate::views::PgViews::new(self.shared.clone()))
    }

    /// The database's own SQL engine, for the query surface.
    pub fn native_sql(&self) -> Arc<dyn rakam_store_api::NativeSql> {
        Arc::new(crate::native_sql::PgNativeSql::new(self.shared.clone()))
    }

    /// A failed COPY may mean our caches are stale (a partition or column
    /// dropped by another process): forget them so the retry reloads.
    fn copy_failed(
        &self,
        project: &ProjectId,
        collection: &str,
        error: &tokio_postgres::Error,
    ) -> StoreError {
        self.columns
            .lock()
            .remove(&(project.as_str().to_string(), collection.to_string()));
        self.partitions
            .lock()
            .retain(|(id, c, _, _)| !(id == project.as_str() && c == collection));
        crate::connection::classify("writing rows", error)
    }
}
