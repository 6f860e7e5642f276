//! A view's rows and what they cover, read in one snapshot. A DataFusion
//! scan reads its table when the query runs, which may be after a later
//! refresh committed: a real-time read would then add the recent events to
//! rows that already count them. Reading both in one REPEATABLE READ
//! transaction up front makes the pair consistent (the view's rows are held
//! in memory for the query; continuous queries keep few).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use rakam_store_api::{Result, StoreError};

use crate::connection::{begin_read_only, pg_error, Shared};
use crate::names::quote;
use crate::provider::conform;

const ROWS_PER_BATCH: usize = 8_192;

/// Reads `rows_table` (a quoted, qualified name) and `covered` (a scalar
/// subquery) as of one moment.
pub(crate) async fn read_consistently(
    shared: &Shared,
    project_id: &str,
    rows_table: &str,
    covered: &str,
    schema: SchemaRef,
) -> Result<(Arc<dyn TableProvider>, Option<i64>)> {
    let mut client = shared.reader(project_id).await?;
    let transaction = begin_read_only(&mut client, shared.options.statement_timeout).await?;
    // The lock comes before the first query takes the snapshot: a rebuild
    // (which drops and creates the table) either committed before it, and
    // the snapshot sees the new table and coverage, or waits for the read.
    transaction
        .batch_execute(&format!(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; LOCK TABLE {rows_table} IN ACCESS SHARE MODE"
        ))
        .await
        .map_err(pg_error("reading a view"))?;
    let covered: Option<i64> = transaction
        .query_one(&format!("SELECT {covered}"), &[])
        .await
        .map_err(pg_error("reading what a view covers"))?
        .get(0);
    let columns: Vec<String> = schema.fields().iter().map(|f| quote(f.name())).collect();
    let rows = transaction
        .query(
            &format!("SELECT {} FROM {rows_table}", columns.join(", ")),
            &[],
        )
        .await
        .map_err(pg_error("reading a view"))?;
    transaction
        .commit()
        .await
        .map_err(pg_error("reading a view"))?;
    let batches = rows
        .chunks(ROWS_PER_BATCH)
        .map(|chunk| conform(chunk, &schema))
        .collect::<Result<Vec<RecordBatch>, StoreError>>()?;
    let table = MemTable::try_new(schema, vec![batches])?;
    Ok((Arc::new(table), covered))
}
