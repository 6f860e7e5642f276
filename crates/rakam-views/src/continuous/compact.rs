//! Every refresh of a continuous query appends one row per group of the
//! new events, so the partials grow with the number of refreshes. Once
//! they have doubled since the last compaction they are merged into one
//! row per group, committed as a new generation covering exactly what the
//! old rows covered: a read before or after sees the same result.

use std::sync::Arc;

use datafusion::common::TableReference;
use futures::{StreamExt, TryStreamExt};
use rakam_store_api::{ProjectSnapshot, StoreError, ViewState, ViewWrite, ViewWriteMode};

use super::{hidden_name, merge_sql, spec_of, ContinuousSpec};
use crate::{Result, ViewError, Views};

/// Partials below this many rows are left as they are.
const COMPACT_MIN_ROWS: u64 = 4_096;

impl Views {
    /// Compacts the partials when they have grown enough; returns the state
    /// they are in. A failed compaction is logged and changes nothing.
    pub(crate) async fn compact_if_grown(
        &self,
        project: &Arc<ProjectSnapshot>,
        spec: &ContinuousSpec,
        state: ViewState,
    ) -> ViewState {
        let key = (project.id().clone(), hidden_name(&spec.table_name));
        let last = self.inner.compacted.lock().get(&key).copied().unwrap_or(0);
        if state.rows < COMPACT_MIN_ROWS.max(last.saturating_mul(2)) {
            return state;
        }
        match self.compact(project, spec).await {
            Ok(compacted) => {
                self.inner.compacted.lock().insert(key, compacted.rows);
                tracing::debug!(continuous_query = %spec.table_name, before = state.rows, after = compacted.rows, "partials compacted");
                compacted
            }
            Err(error) => {
                tracing::warn!(continuous_query = %spec.table_name, %error, "compacting the partials failed; they stay as they are");
                self.inner.compacted.lock().insert(key, state.rows);
                state
            }
        }
    }

    /// Compacts the continuous query's partials now, whatever their size.
    pub async fn compact_continuous(
        &self,
        project: &Arc<ProjectSnapshot>,
        table_name: &str,
    ) -> Result<ViewState> {
        let view = self.continuous_view(project.id(), table_name).await?;
        let spec = spec_of(&view.definition)
            .ok_or_else(|| ViewError::ContinuousNotFound(table_name.to_string()))?;
        let lock = self.lock_of(project.id(), &view.definition.table_name);
        let _held = lock.lock().await;
        self.compact(project, &spec).await
    }

    /// Merges the stored partials into one row per group. The caller holds
    /// the view's refresh lock.
    async fn compact(
        &self,
        project: &Arc<ProjectSnapshot>,
        spec: &ContinuousSpec,
    ) -> Result<ViewState> {
        let hidden = hidden_name(&spec.table_name);
        let (stored, state) = self
            .inner
            .store
            .table_provider(project.id(), &hidden)
            .await?
            .ok_or_else(|| ViewError::ContinuousNotFound(spec.table_name.clone()))?;
        let context = self.bounded_merge_session()?;
        let failed = |e: datafusion::error::DataFusionError| StoreError::Data(e.to_string());
        context
            .register_table(TableReference::bare("$partials"), stored)
            .map_err(failed)?;
        let frame = merge_sql(&context, &spec.compaction_sql)
            .await
            .map_err(failed)?;
        let stream = frame.execute_stream().await.map_err(failed)?;
        let schema = stream.schema();
        let write = ViewWrite {
            mode: ViewWriteMode::Replace,
            expected_generation: state.generation,
            schema,
            batches: stream.map_err(failed).boxed(),
            state: ViewState {
                generation: state.generation + 1,
                rows: 0,
                ..state
            },
        };
        Ok(self.inner.store.write(project.id(), &hidden, write).await?)
    }
}
