//! Materialized views as a backend stores them: the definition, the state
//! of its last refresh and its rows, kept together so that a refresh's rows
//! and the state that says what they cover are committed in one step
//! (ADR 0013).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::{ProjectId, Result};

/// What the client asked for (Rakam's `/materialized-view/create` body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDefinition {
    /// The name SQL reads it by: `materialized.<table_name>`.
    pub table_name: String,
    /// A display name.
    pub name: String,
    pub query: String,
    /// Seconds after a refresh before the view is stale.
    pub update_interval_secs: u64,
    /// Refreshes add the query's rows over the events received since the
    /// last refresh, instead of recomputing everything.
    pub incremental: bool,
    /// Reads add the query's rows over the events received since the last
    /// refresh, so answers are current.
    pub real_time: bool,
    #[serde(default)]
    pub options: serde_json::Value,
}

/// What the stored rows cover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewState {
    /// Bumped by every committed refresh; a refresh names the generation it
    /// started from, so two refreshes of one view never both commit.
    pub generation: u64,
    /// When the last refresh committed (epoch ms); `None` before the first.
    pub last_update_ms: Option<i64>,
    /// The stored rows are the query over exactly the events whose
    /// `_server_time` is at or below this (epoch ms).
    pub covered_through_ms: Option<i64>,
    pub rows: u64,
}

#[derive(Debug, Clone)]
pub struct StoredView {
    pub definition: ViewDefinition,
    pub state: ViewState,
    /// The rows' columns; `None` before the first refresh.
    pub schema: Option<SchemaRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewWriteMode {
    /// The rows are the whole view (a full refresh, or the first build).
    Replace,
    /// The rows are added to the view (an incremental refresh).
    Append,
}

/// A refresh's rows and the state to commit with them.
pub struct ViewWrite {
    pub mode: ViewWriteMode,
    /// The generation the refresh started from; the write fails with
    /// [`crate::StoreError::ViewChanged`] when the view's is different.
    pub expected_generation: u64,
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch>>,
    /// `generation` must be `expected_generation + 1`; `rows` counts this
    /// write's rows, the store adds them up for an append.
    pub state: ViewState,
}

impl std::fmt::Debug for ViewWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewWrite")
            .field("mode", &self.mode)
            .field("expected_generation", &self.expected_generation)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The part of a backend that keeps materialized views, next to its data.
#[async_trait]
pub trait ViewStore: Send + Sync + std::fmt::Debug {
    /// Records a new view (no rows yet); `ViewExists` if the name is taken.
    async fn create(&self, project: &ProjectId, definition: ViewDefinition) -> Result<()>;

    async fn list(&self, project: &ProjectId) -> Result<Vec<StoredView>>;

    /// Every project's views (the background refresher's round).
    async fn list_all(&self) -> Result<Vec<(ProjectId, StoredView)>>;

    async fn get(&self, project: &ProjectId, table_name: &str) -> Result<Option<StoredView>>;

    /// Replaces the definition, keeping the rows and the state.
    async fn change(&self, project: &ProjectId, definition: ViewDefinition) -> Result<()>;

    /// Drops the view and its rows; false when there was none.
    async fn delete(&self, project: &ProjectId, table_name: &str) -> Result<bool>;

    /// Commits a refresh: the rows and the state together, or nothing.
    /// Returns the state as committed.
    async fn write(
        &self,
        project: &ProjectId,
        table_name: &str,
        write: ViewWrite,
    ) -> Result<ViewState>;

    /// The view's rows as of now, for DataFusion, with the state they are
    /// (a real-time read adds the events after what they cover); `None`
    /// when the view does not exist or was never built.
    async fn table_provider(
        &self,
        project: &ProjectId,
        table_name: &str,
    ) -> Result<Option<(Arc<dyn TableProvider>, ViewState)>>;

    /// How the backend's own SQL engine names the view's rows (a quoted
    /// table name), for backends with one.
    fn native_table_name(&self, _project: &ProjectId, _table_name: &str) -> Option<String> {
        None
    }

    /// An expression of the backend's own SQL giving what the view's rows
    /// cover (epoch ms), read in the same statement as the rows so a
    /// real-time read cannot see a refresh's rows and not its state.
    fn native_covered_through(&self, _project: &ProjectId, _table_name: &str) -> Option<String> {
        None
    }

    /// Drops every view of the project.
    async fn delete_project(&self, project: &ProjectId) -> Result<()>;
}
