//! `continuous.<name>`: the stored partials and those of the events
//! received since (the hidden view's real-time read), merged by the final
//! query.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::ViewTable;
use rakam_store_api::ProjectSnapshot;

use super::{check_name, hidden_name, merge_session, merge_sql, spec_of};
use crate::{Result, ViewError, Views};

impl Views {
    /// The continuous query's current result as a table; `None` when the
    /// project has no such query.
    pub(crate) async fn continuous_provider(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let Ok(name) = check_name(name) else {
            return Ok(None);
        };
        let hidden = hidden_name(&name);
        let Some(view) = self.inner.store.get(project.id(), &hidden).await? else {
            return Ok(None);
        };
        let Some(spec) = spec_of(&view.definition) else {
            return Ok(None);
        };
        let Some(partials) = self.stored_table(project, &hidden).await? else {
            return Ok(None);
        };
        let context = merge_session();
        let planning = |e: datafusion::error::DataFusionError| {
            ViewError::InvalidContinuous(format!("reading continuous query {name}: {e}"))
        };
        context
            .register_table(TableReference::bare("$partials"), partials)
            .map_err(planning)?;
        let frame = merge_sql(&context, &spec.final_sql)
            .await
            .map_err(planning)?;
        Ok(Some(Arc::new(ViewTable::new(
            frame.logical_plan().clone(),
            None,
        ))))
    }
}
