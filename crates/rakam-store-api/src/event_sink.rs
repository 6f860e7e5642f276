use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::{ProjectId, Result};

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
