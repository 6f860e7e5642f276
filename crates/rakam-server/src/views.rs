//! Materialized views (`/materialized-view/*`), continuous queries and
//! real-time reports, on the views service.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use rakam_ingest::{AppendObserver, IngestError};
use rakam_store_api::{Append, LogPosition, ProjectInfo};
use rakam_views::Views;
use serde_json::Value;

use crate::{Rakam, Result};

/// Tells the views service which projects received events, so a
/// continuous query of an idle project is not refreshed for nothing. Of
/// the live moment only: never replayed, never holds the log.
#[derive(Debug)]
pub(crate) struct AppendsForViews(pub(crate) Views);

#[async_trait]
impl AppendObserver for AppendsForViews {
    fn name(&self) -> &str {
        "views-activity"
    }

    fn replays(&self) -> bool {
        false
    }

    async fn checkpoint(&self) -> Result<Option<LogPosition>, IngestError> {
        Ok(None)
    }

    async fn on_append(
        &self,
        _position: Option<LogPosition>,
        append: &Append,
    ) -> Result<(), IngestError> {
        self.0.note_append(&append.project);
        Ok(())
    }
}

/// Statements longer than this are not searched for views they read (the
/// answer's `materializedViews` is then empty).
const MAX_SEARCHED_SQL_BYTES: usize = 64 * 1024;

impl Rakam {
    pub async fn create_view(&self, project: &ProjectInfo, request: Value) -> Result<()> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.views.create(&snapshot, request).await?)
    }

    pub async fn list_views(&self, project: &ProjectInfo) -> Result<Vec<Value>> {
        Ok(self.views.list(&project.id).await?)
    }

    pub async fn get_view(&self, project: &ProjectInfo, table_name: &str) -> Result<Value> {
        Ok(self.views.get(&project.id, table_name).await?)
    }

    /// The views' columns (all, or those named); unbuilt views are built.
    pub async fn view_schemas(
        &self,
        project: &ProjectInfo,
        names: Option<&[String]>,
    ) -> Result<Vec<(String, SchemaRef)>> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.views.schemas(&snapshot, names).await?)
    }

    pub async fn delete_view(&self, project: &ProjectInfo, table_name: &str) -> Result<()> {
        Ok(self.views.delete(&project.id, table_name).await?)
    }

    pub async fn change_view(
        &self,
        project: &ProjectInfo,
        table_name: &str,
        real_time: bool,
    ) -> Result<()> {
        Ok(self
            .views
            .change(&project.id, table_name, real_time)
            .await?)
    }

    /// The views a statement reads, with when each was last refreshed
    /// (Rakam's `properties.materializedViews` of a query's answer).
    pub async fn views_read_by(
        &self,
        project: &ProjectInfo,
        sql: &str,
    ) -> serde_json::Map<String, Value> {
        let mut read = serde_json::Map::new();
        if sql.len() > MAX_SEARCHED_SQL_BYTES
            || !sql
                .to_ascii_lowercase()
                .contains(rakam_query::MATERIALIZED_SCHEMA)
        {
            return read;
        }
        let owned = sql.to_string();
        let names = tokio::task::spawn_blocking(move || {
            rakam_query::materialized_names(&owned, rakam_store_api::NativeDialect::PostgreSql)
        })
        .await
        .unwrap_or_default();
        for name in names {
            if let Ok(view) = self.views.get(&project.id, &name).await {
                read.insert(name, view["last_update"].clone());
            }
        }
        read
    }

    /// Refreshes the view now and answers with it once committed.
    pub async fn refresh_view(&self, project: &ProjectInfo, table_name: &str) -> Result<Value> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.views.refresh(&snapshot, table_name).await?)
    }
}

/// Continuous queries (`/continuous-query/*`), on the views service.
impl Rakam {
    pub async fn create_continuous(&self, project: &ProjectInfo, request: Value) -> Result<()> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.views.create_continuous(&snapshot, request).await?)
    }

    pub async fn list_continuous(&self, project: &ProjectInfo) -> Result<Vec<Value>> {
        Ok(self.views.list_continuous(&project.id).await?)
    }

    pub async fn get_continuous(&self, project: &ProjectInfo, table_name: &str) -> Result<Value> {
        Ok(self.views.get_continuous(&project.id, table_name).await?)
    }

    pub async fn continuous_schemas(
        &self,
        project: &ProjectInfo,
        names: Option<&[String]>,
    ) -> Result<Vec<(String, SchemaRef)>> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.views.continuous_schemas(&snapshot, names).await?)
    }

    pub async fn delete_continuous(&self, project: &ProjectInfo, table_name: &str) -> Result<()> {
        Ok(self
            .views
            .delete_continuous(&project.id, table_name)
            .await?)
    }

    /// Whether the query can be maintained incrementally (an error says why
    /// not).
    pub async fn test_continuous(&self, project: &ProjectInfo, query: &str) -> Result<()> {
        let snapshot = self.snapshot(project).await?;
        self.views.check_continuous(&snapshot, query).await?;
        Ok(())
    }
}

/// Real-time reports (`/realtime/*`), kept as continuous queries.
impl Rakam {
    pub async fn create_realtime(&self, project: &ProjectInfo, request: Value) -> Result<()> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.views.create_realtime(&snapshot, request).await?)
    }

    pub async fn list_realtime(&self, project: &ProjectInfo) -> Result<Vec<Value>> {
        Ok(self.views.list_realtime(&project.id).await?)
    }

    pub async fn query_realtime(&self, project: &ProjectInfo, request: Value) -> Result<Value> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.views.query_realtime(&snapshot, request).await?)
    }

    pub async fn delete_realtime(&self, project: &ProjectInfo, table_name: &str) -> Result<()> {
        Ok(self.views.delete_realtime(&project.id, table_name).await?)
    }
}
