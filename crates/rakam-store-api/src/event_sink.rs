use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use datafusion::arrow::array::{Array, ArrayRef, TimestampMillisecondArray};
use datafusion::arrow::compute::min;
use std::sync::Arc;

use crate::{ProjectId, Result, StoreError};

const SERVER_TIME: &str = rakam_model::SERVER_TIME_COLUMN;

/// The earliest `_server_time` of an append's rows; `None` when its
/// batches have no such column.
pub fn earliest_server_time<'a>(batches: impl IntoIterator<Item = &'a RecordBatch>) -> Option<i64> {
    batches
        .into_iter()
        .filter_map(|batch| {
            let column = batch.column_by_name(SERVER_TIME)?;
            let times = column
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()?;
            min(times)
        })
        .min()
}

/// The batch with every row's `_server_time` set to `at_ms`.
pub fn restamp_server_time(batch: &RecordBatch, at_ms: i64) -> Result<RecordBatch> {
    let schema = batch.schema();
    let Ok(index) = schema.index_of(SERVER_TIME) else {
        return Ok(batch.clone());
    };
    let timezone = match schema.field(index).data_type() {
        datafusion::arrow::datatypes::DataType::Timestamp(_, zone) => zone.clone(),
        _ => None,
    };
    let mut columns = batch.columns().to_vec();
    let nulls = columns[index].logical_nulls();
    let stamped = TimestampMillisecondArray::new(vec![at_ms; batch.num_rows()].into(), nulls)
        .with_timezone_opt(timezone);
    columns[index] = Arc::new(stamped) as ArrayRef;
    RecordBatch::try_new(schema, columns)
        .map_err(|e| StoreError::Data(format!("restamping _server_time: {e}")))
}

/// Where an append sits in a sink's log: positions grow with every durable
/// append, so an observer that remembers the last one it handled can be
/// replayed exactly what it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogPosition(pub u64);

/// One request's rows for one project, built for one version of its
/// metadata. Every batch is in its collection's Arrow schema at that version
/// (or a subset of its columns).
#[derive(Debug, Clone)]
pub struct Append {
    pub project: ProjectId,
    pub schema_version: u64,
    pub batches: Vec<(String, RecordBatch)>,
}

/// A durable append as a sink's log recorded it.
#[derive(Debug, Clone)]
pub struct LoggedAppend {
    pub position: LogPosition,
    pub append: Append,
}

/// The part of a backend that makes events durable.
#[async_trait]
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Appends the rows as one durable unit: after a crash all of them or
    /// none are there. Returns the append's position in the sink's log, or
    /// `None` for a sink without a replayable log.
    async fn append(&self, append: Append) -> Result<Option<LogPosition>>;

    /// Every durable append after `after`, in position order, for observers
    /// catching up after a restart; `None` when the sink cannot replay (see
    /// `Capabilities::replayable_log`). Appends no longer in the log (made
    /// part of the long-term files and dropped from the log) are skipped
    /// unless retained with [`Self::retain_log_after`].
    async fn replay(&self, after: LogPosition) -> Result<Option<Vec<LoggedAppend>>>;

    /// A point in `_server_time` (epoch ms), at least `floor_ms`, such that
    /// every append whose `_server_time` is at or below it is visible to
    /// readers when this returns, and every append visible later has a later
    /// `_server_time` (the sink restamps an append that would not, with
    /// [`restamp_server_time`]). A refresh of a materialized view reads the
    /// events up to one such point, so consecutive refreshes read every
    /// event exactly once (ADR 0013).
    async fn server_time_barrier(&self, project: &ProjectId, floor_ms: i64) -> Result<i64>;

    /// Keeps every append after `position` replayable, until raised again.
    fn retain_log_after(&self, _position: LogPosition) {}

    /// Why the sink refuses every append until the server restarts (a
    /// failed fsync), if it does; `/health` reports it.
    fn failure(&self) -> Option<String> {
        None
    }

    /// What an operator should know although the sink works: damage it
    /// was told to start despite (moved aside, not lost). `/health` shows it.
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Drops every row of the project.
    async fn delete_project(&self, project: &ProjectId) -> Result<()>;

    /// Makes every acknowledged row part of the long-term format (for the
    /// embedded store: Parquet), so a restart has nothing to replay.
    async fn flush(&self) -> Result<()>;

    /// Stops background work; pending appends complete first.
    async fn shutdown(&self) -> Result<()>;
}
