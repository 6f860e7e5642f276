//! `materialized.<name>` in a query: the first build makes the reader wait,
//! a stale view is refreshed in the background while the reader gets the
//! rows it has, and a real-time view adds the query's rows over the events
//! received after what the stored rows cover.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::datasource::{provider_as_source, ViewTable};
use datafusion::logical_expr::LogicalPlanBuilder;
use rakam_query::{MaterializedTables, QueryError, ReceivedWindow};
use rakam_store_api::{ProjectSnapshot, StoreError, StoredView};

use crate::continuous::is_hidden;
use crate::refresh::{is_stale, now_ms, Trigger};
use crate::{ViewError, Views};

impl From<ViewError> for QueryError {
    fn from(error: ViewError) -> Self {
        match error {
            ViewError::Query(inner) => inner,
            ViewError::Store(inner) => QueryError::Store(inner),
            ViewError::NotFound(name) => QueryError::Store(StoreError::ViewNotFound(name)),
            ViewError::Invalid(message) | ViewError::InvalidContinuous(message) => {
                QueryError::Execution(message)
            }
            error @ (ViewError::ContinuousNotFound(_) | ViewError::ContinuousExists(_)) => {
                QueryError::Execution(error.to_string())
            }
        }
    }
}

impl Views {
    /// The view as a reader gets it; `None` when there is no such view.
    async fn readable(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<StoredView>, ViewError> {
        let Some(view) = self.inner.store.get(project.id(), name).await? else {
            return Ok(None);
        };
        if view.state.generation == 0 {
            return self.ensure_built(project, name).await.map(Some);
        }
        if is_stale(&view, now_ms()) && !self.failed_recently(project.id(), name) {
            let (views, snapshot, name) = (self.clone(), project.clone(), name.to_string());
            self.spawn(async move {
                if let Err(error) = views
                    .refresh_view(&snapshot, &name, Trigger::Background)
                    .await
                {
                    tracing::warn!(view = %name, %error, "refreshing a stale materialized view failed");
                }
            });
        }
        Ok(Some(view))
    }
}

/// What the query engine holds: the views service without keeping it
/// alive (the service holds the engine).
#[derive(Debug)]
pub(crate) struct WeakViews(pub(crate) std::sync::Weak<crate::Inner>);

impl WeakViews {
    fn views(&self) -> Result<Views, QueryError> {
        self.0
            .upgrade()
            .map(|inner| Views { inner })
            .ok_or(QueryError::ShuttingDown)
    }
}

#[async_trait]
impl MaterializedTables for WeakViews {
    async fn datafusion_table(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, QueryError> {
        self.views()?.datafusion_table(project, name).await
    }

    async fn native_relation(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<String>, QueryError> {
        self.views()?.native_relation(project, name).await
    }

    async fn continuous_table(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, QueryError> {
        self.views()?.continuous_table(project, name).await
    }
}

#[async_trait]
impl MaterializedTables for Views {
    async fn datafusion_table(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, QueryError> {
        // A continuous query's partials are not a view of their own.
        if is_hidden(name) {
            return Ok(None);
        }
        self.stored_table(project, name).await
    }

    async fn native_relation(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<String>, QueryError> {
        if is_hidden(name) {
            return Ok(None);
        }
        self.native_view(project, name).await
    }

    async fn continuous_table(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, QueryError> {
        Ok(self.continuous_provider(project, name).await?)
    }
}

impl Views {
    /// The view's rows for DataFusion, with those of the recent events for
    /// a real-time view.
    pub(crate) async fn stored_table(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, QueryError> {
        let Some(view) = self.readable(project, name).await? else {
            return Ok(None);
        };
        let (stored, state) = self
            .inner
            .store
            .table_provider(project.id(), name)
            .await?
            .ok_or_else(|| {
                QueryError::Execution(format!("materialized view {name} has no rows yet"))
            })?;
        if !view.definition.real_time {
            return Ok(Some(stored));
        }
        // The window starts where these very rows end, not where the state
        // read a moment ago did: a refresh may have committed in between.
        let window = ReceivedWindow {
            after_ms: state.covered_through_ms,
            through_ms: None,
        };
        let recent = self
            .inner
            .engine
            .for_view_query(window)
            .plan_view_query(project, &view.definition.query)
            .await?;
        let plan = LogicalPlanBuilder::scan(name, provider_as_source(stored), None)
            .and_then(|builder| builder.union(recent))
            .and_then(|builder| builder.build())
            .map_err(QueryError::from_datafusion)?;
        Ok(Some(Arc::new(ViewTable::new(plan, None))))
    }

    async fn native_view(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<String>, QueryError> {
        let Some(view) = self.readable(project, name).await? else {
            return Ok(None);
        };
        let table = self
            .inner
            .store
            .native_table_name(project.id(), name)
            .ok_or_else(|| {
                QueryError::Execution("this backend's SQL engine cannot read views".into())
            })?;
        if !view.definition.real_time {
            return Ok(Some(format!("SELECT * FROM {table}")));
        }
        let covered = self
            .inner
            .store
            .native_covered_through(project.id(), name)
            .ok_or_else(|| {
                QueryError::Execution("this backend cannot read views in real time".into())
            })?;
        let recent = self
            .inner
            .engine
            .for_view_query(ReceivedWindow::default())
            .native_view_sql(project, &view.definition.query, &covered)
            .await?
            .ok_or_else(|| QueryError::Execution("no SQL engine for the view".into()))?;
        Ok(Some(format!(
            "SELECT * FROM {table} UNION ALL SELECT * FROM ({recent}) AS recent"
        )))
    }
}
