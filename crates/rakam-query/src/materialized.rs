//! What the query front needs from materialized views (the views crate
//! provides it): `materialized.<name>` as a DataFusion table or as a
//! relation of the backend's own SQL, and a window of `_server_time` that
//! limits every collection a statement reads (incremental refreshes and
//! real-time views read only the events received in it).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::provider_as_source;
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{col, lit, Expr, LogicalPlanBuilder};
use rakam_model::SERVER_TIME_COLUMN;
use rakam_store_api::ProjectSnapshot;

use crate::QueryError;

/// The schema name views are read under.
pub const MATERIALIZED_SCHEMA: &str = "materialized";
/// The schema name continuous queries are read under.
pub const CONTINUOUS_SCHEMA: &str = "continuous";

/// Events received after `after_ms` (when set) and at or before
/// `through_ms` (when set), by `_server_time` in epoch milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceivedWindow {
    pub after_ms: Option<i64>,
    pub through_ms: Option<i64>,
}

impl ReceivedWindow {
    fn bound(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some("UTC".into()),
        ))
    }

    pub(crate) fn predicate(&self) -> Option<Expr> {
        let time = || col(SERVER_TIME_COLUMN);
        let after = self.after_ms.map(|ms| time().gt(Self::bound(ms)));
        let through = self.through_ms.map(|ms| time().lt_eq(Self::bound(ms)));
        match (after, through) {
            (Some(a), Some(t)) => Some(a.and(t)),
            (one, other) => one.or(other),
        }
    }

    /// The same condition in PostgreSQL, exact to the millisecond.
    pub fn postgres_predicate(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(ms) = self.after_ms {
            parts.push(received_after_postgres(&ms.to_string()));
        }
        if let Some(ms) = self.through_ms {
            parts.push(format!(
                "\"{SERVER_TIME_COLUMN}\" <= {}",
                postgres_time(&ms.to_string())
            ));
        }
        (!parts.is_empty()).then(|| parts.join(" AND "))
    }
}

fn postgres_time(milliseconds: &str) -> String {
    format!("(TIMESTAMPTZ 'epoch' + ({milliseconds}) * INTERVAL '1 millisecond')")
}

/// `_server_time` after the epoch milliseconds a PostgreSQL expression
/// gives (a number, or a subquery read in the same statement).
pub fn received_after_postgres(milliseconds: &str) -> String {
    format!("\"{SERVER_TIME_COLUMN}\" > {}", postgres_time(milliseconds))
}

impl ReceivedWindow {
    /// The collection's rows in the window, as a table.
    pub(crate) fn restrict(
        &self,
        name: &str,
        provider: Arc<dyn TableProvider>,
    ) -> Result<Arc<dyn TableProvider>> {
        let Some(predicate) = self.predicate() else {
            return Ok(provider);
        };
        let plan = LogicalPlanBuilder::scan(name, provider_as_source(provider), None)?
            .filter(predicate)?
            .build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

/// Materialized views as the query front reads them.
#[async_trait]
pub trait MaterializedTables: Send + Sync + std::fmt::Debug {
    /// The view for DataFusion: built first if it never was, with the rows
    /// of events received since its last refresh for a real-time view.
    /// `None` when the project has no such view.
    async fn datafusion_table(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, QueryError>;

    /// The view for the backend's own SQL engine: a SELECT in its dialect.
    async fn native_relation(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<String>, QueryError>;

    /// A continuous query (`continuous.<name>`), current to the last
    /// acknowledged event; `None` when the project has no such query.
    /// Always read in DataFusion (its sketches need Rakam's functions).
    async fn continuous_table(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, QueryError>;
}

/// `materialized.<name>` (or `continuous.<name>`) in a DataFusion session.
#[derive(Debug)]
pub(crate) struct MaterializedSchema {
    pub(crate) views: Arc<dyn MaterializedTables>,
    pub(crate) project: Arc<ProjectSnapshot>,
    pub(crate) continuous: bool,
}

#[async_trait]
impl SchemaProvider for MaterializedSchema {
    fn table_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = match self.continuous {
            true => self.views.continuous_table(&self.project, name).await,
            false => self.views.datafusion_table(&self.project, name).await,
        };
        table.map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn table_exist(&self, _name: &str) -> bool {
        // Known only asynchronously; `table` answers.
        true
    }
}
