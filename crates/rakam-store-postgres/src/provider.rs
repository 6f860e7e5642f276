//! A collection read by DataFusion (analyses, the conformance suite): the
//! projected columns of the collection's view, with the filters PostgreSQL
//! can evaluate identically pushed into its `WHERE` (time ranges prune
//! partitions and use the BRIN index). DataFusion applies every filter again.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::ExecutionPlan;
use futures::{pin_mut, TryStreamExt};
use rakam_store_api::StoreError;
use tokio_postgres::types::ToSql;

use crate::arrow_rows::rows_to_batch;
use crate::connection::{begin_read_only, pg_error, Shared};
use crate::names::{literal, quote, view};

const ROWS_PER_BATCH: usize = 65_536;

#[derive(Debug)]
pub(crate) struct PgCollectionProvider {
    shared: Arc<Shared>,
    project_id: String,
    collection: String,
    schema: SchemaRef,
    /// False when the project has no such collection: scans are empty.
    exists: bool,
}

impl PgCollectionProvider {
    pub(crate) fn new(
        shared: Arc<Shared>,
        project_id: &str,
        collection: &str,
        schema: SchemaRef,
        exists: bool,
    ) -> Self {
        Self {
            shared,
            project_id: project_id.to_string(),
            collection: collection.to_string(),
            schema,
            exists,
        }
    }

    fn column_type(&self, name: &str) -> Option<&DataType> {
        self.schema
            .field_with_name(name)
            .ok()
            .map(|field| field.data_type())
    }

    /// The filter as PostgreSQL SQL, when PostgreSQL gives exactly the
    /// answer DataFusion would: integer, time, date, boolean and text
    /// comparisons (text in byte order, as DataFusion compares).
    fn translate(&self, expr: &Expr) -> Option<String> {
        match expr {
            Expr::Column(column) => {
                let data_type = self.column_type(&column.name)?;
                match data_type {
                    DataType::Int64
                    | DataType::Boolean
                    | DataType::Date32
                    | DataType::Timestamp(TimeUnit::Millisecond, _) => Some(quote(&column.name)),
                    DataType::Utf8 => Some(format!("({} COLLATE \"C\")", quote(&column.name))),
                    _ => None,
                }
            }
            Expr::Literal(value, _) => literal_sql(value),
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let op = match op {
                    Operator::Eq => "=",
                    Operator::NotEq => "<>",
                    Operator::Lt => "<",
                    Operator::LtEq => "<=",
                    Operator::Gt => ">",
                    Operator::GtEq => ">=",
                    Operator::And => "AND",
                    Operator::Or => "OR",
                    _ => return None,
                };
                Some(format!(
                    "({} {op} {})",
                    self.translate(left)?,
                    self.translate(right)?
                ))
            }
            Expr::Not(inner) => Some(format!("(NOT {})", self.translate(inner)?)),
            Expr::IsNull(inner) => Some(format!("({} IS NULL)", self.translate(inner)?)),
            Expr::IsNotNull(inner) => Some(format!("({} IS NOT NULL)", self.translate(inner)?)),
            Expr::Between(between) => Some(format!(
                "({} {}BETWEEN {} AND {})",
                self.translate(&between.expr)?,
                if between.negated { "NOT " } else { "" },
                self.translate(&between.low)?,
                self.translate(&between.high)?
            )),
            Expr::InList(in_list) if !in_list.list.is_empty() => {
                let items: Option<Vec<String>> =
                    in_list.list.iter().map(|e| self.translate(e)).collect();
                Some(format!(
                    "({} {}IN ({}))",
                    self.translate(&in_list.expr)?,
                    if in_list.negated { "NOT " } else { "" },
                    items?.join(", ")
                ))
            }
            _ => None,
        }
    }
}

/// One scan of a collection's view, streamed: batches reach the aggregation
/// while PostgreSQL is still sending, and at most a few are held at a time.
#[derive(Debug)]
struct PgScan {
    shared: Arc<Shared>,
    project_id: String,
    sql: String,
    schema: SchemaRef,
}

impl PartitionStream for PgScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _context: Arc<TaskContext>) -> SendableRecordBatchStream {
        // Two batches in flight: enough to overlap reading and aggregating.
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let sender = builder.tx();
        let (shared, project_id, sql, schema) = (
            self.shared.clone(),
            self.project_id.clone(),
            self.sql.clone(),
            self.schema.clone(),
        );
        // Dropping the stream aborts this task; CancelOnDrop then stops the
        // query in PostgreSQL too.
        builder.spawn(async move {
            stream_scan(&shared, &project_id, &sql, &schema, sender)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))
        });
        builder.build()
    }
}

async fn stream_scan(
    shared: &Shared,
    project_id: &str,
    sql: &str,
    schema: &SchemaRef,
    sender: tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) -> Result<(), StoreError> {
    let mut client = shared.reader(project_id).await?;
    let mut cancel = CancelOnDrop(Some(client.cancel_token()));
    let transaction = begin_read_only(&mut client, shared.options.statement_timeout).await?;
    let no_parameters: [&(dyn ToSql + Sync); 0] = [];
    let stream = transaction
        .query_raw(sql, no_parameters.iter().map(|p| *p as &dyn ToSql))
        .await
        .map_err(pg_error("scanning a collection"))?;
    pin_mut!(stream);
    let mut rows = Vec::with_capacity(ROWS_PER_BATCH);
    loop {
        let row = stream
            .try_next()
            .await
            .map_err(pg_error("scanning a collection"))?;
        let done = row.is_none();
        rows.extend(row);
        if rows.len() == ROWS_PER_BATCH || (done && !rows.is_empty()) {
            let batch = conform(&rows, schema)?;
            rows.clear();
            if sender.send(Ok(batch)).await.is_err() {
                // The consumer is gone: CancelOnDrop stops the query.
                return Ok(());
            }
        }
        if done {
            break;
        }
    }
    transaction
        .commit()
        .await
        .map_err(pg_error("finishing a scan"))?;
    cancel.0 = None;
    Ok(())
}

/// Cancels the server-side query when a scan is dropped before it ends (a
/// query timeout, a client gone), instead of leaving it running for up to
/// `statement_timeout` on one of the project's connections.
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let (Some(token), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = token.cancel_query(tokio_postgres::NoTls).await;
            });
        }
    }
}

/// The rows as a batch of exactly the declared (projected) schema.
pub(crate) fn conform(
    rows: &[tokio_postgres::Row],
    schema: &SchemaRef,
) -> Result<RecordBatch, StoreError> {
    let columns = rows.first().map(|r| r.columns()).unwrap_or(&[]);
    let batch = rows_to_batch(columns, rows)?;
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for (index, field) in schema.fields().iter().enumerate() {
        let array = batch.column(index);
        arrays.push(if array.data_type() == field.data_type() {
            array.clone()
        } else {
            cast(array, field.data_type())?
        });
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &options,
    )?)
}

fn literal_sql(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Int64(Some(v)) => Some(v.to_string()),
        ScalarValue::Int32(Some(v)) => Some(v.to_string()),
        ScalarValue::Boolean(Some(v)) => Some(v.to_string()),
        ScalarValue::Utf8(Some(text)) | ScalarValue::Utf8View(Some(text)) => {
            // NUL cannot be sent to PostgreSQL; DataFusion evaluates that filter.
            (!text.contains('\0')).then(|| format!("({} COLLATE \"C\")", literal(text)))
        }
        ScalarValue::TimestampMillisecond(Some(ms), _) => timestamp_literal(*ms, 1_000_000),
        ScalarValue::TimestampMicrosecond(Some(us), _) => timestamp_literal(*us, 1_000),
        // PostgreSQL keeps microseconds: a finer literal would be rounded.
        ScalarValue::TimestampNanosecond(Some(ns), _) if ns % 1_000 == 0 => {
            timestamp_literal(*ns, 1)
        }
        ScalarValue::TimestampSecond(Some(s), _) => timestamp_literal(*s, 1_000_000_000),
        ScalarValue::Date32(Some(days)) => {
            let date = NaiveDate::from_ymd_opt(1970, 1, 1)?
                .checked_add_signed(chrono::Duration::days(i64::from(*days)))?;
            if !(1..=9999).contains(&chrono::Datelike::year(&date)) {
                return None;
            }
            Some(format!("'{}'::date", date.format("%Y-%m-%d")))
        }
        _ => None,
    }
}

/// `value` in units of `nanos_per_unit` nanoseconds, as a timestamptz
/// literal; only years 1 to 9999, which both engines read the same way.
fn timestamp_literal(value: i64, nanos_per_unit: i64) -> Option<String> {
    let nanos = i128::from(value) * i128::from(nanos_per_unit);
    let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    let time = DateTime::from_timestamp(seconds, sub)?;
    if !(1..=9999).contains(&chrono::Datelike::year(&time)) {
        return None;
    }
    Some(format!(
        "'{}'::timestamptz",
        time.format("%Y-%m-%dT%H:%M:%S%.6fZ")
    ))
}

#[async_trait]
impl TableProvider for PgCollectionProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.translate(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projected = match projection {
            Some(indices) => Arc::new(self.schema.project(indices)?),
            None => self.schema.clone(),
        };
        if !self.exists {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let columns: Vec<String> = projected.fields().iter().map(|f| quote(f.name())).collect();
        let conditions: Vec<String> = filters.iter().filter_map(|f| self.translate(f)).collect();
        let mut sql = format!(
            "SELECT {} FROM {}",
            columns.join(", "),
            view(&self.project_id, &self.collection)
        );
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        // Only without filters is a limit safe to apply before DataFusion.
        if let (Some(limit), true) = (limit, filters.is_empty()) {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let scan = PgScan {
            shared: self.shared.clone(),
            project_id: self.project_id.clone(),
            sql,
            schema: projected.clone(),
        };
        Ok(Arc::new(StreamingTableExec::try_new(
            projected,
            vec![Arc::new(scan)],
            None,
            Vec::new(),
            false,
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::prelude::SessionContext;
    use futures::StreamExt;
    use rakam_store_api::Catalog;

    use super::*;
    use crate::testing::TempDatabase;
    use crate::PgOptions;

    /// A scan whose stream is dropped (a query timeout, a failed plan) stops
    /// its query in PostgreSQL instead of leaving it to run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_scan_cancels_its_query() {
        let Some(database) = TempDatabase::create("the scan cancellation test") else {
            return;
        };
        let (catalog, _store) = crate::open(PgOptions::new(database.url.clone()))
            .await
            .expect("open");
        let (project, _) = catalog.create_project("slow").await.expect("project");
        let shared = Arc::new(
            Shared::connect(PgOptions::new(database.url.clone()))
                .await
                .expect("connect"),
        );
        let marker = "rakam_cancel_marker";
        let scan = PgScan {
            shared: shared.clone(),
            project_id: project.id.to_string(),
            sql: format!("SELECT pg_sleep(60)::text AS {marker}"),
            schema: Arc::new(Schema::new(vec![Field::new(marker, DataType::Utf8, true)])),
        };
        let running = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(60)::text AS {marker}%' AND pid <> pg_backend_pid()"
        );
        let active = || async {
            let client = shared.admin().await.expect("admin");
            client
                .query_one(&running, &[])
                .await
                .expect("activity")
                .get::<_, i64>(0)
        };
        let mut stream = scan.execute(SessionContext::new().task_ctx());
        assert!(
            tokio::time::timeout(Duration::from_millis(800), stream.next())
                .await
                .is_err(),
            "the sleep cannot have finished"
        );
        assert_eq!(active().await, 1, "the query runs while the scan is read");
        drop(stream);
        let mut remaining = 1;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            remaining = active().await;
            if remaining == 0 {
                break;
            }
        }
        assert_eq!(remaining, 0, "the query outlived its scan");
        shared.close();
    }
}
