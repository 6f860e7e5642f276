//! What a query of one project can name: its collections, and `_all`.
//! Each table is snapshotted once per query, so `_all` and a collection read
//! in the same statement agree.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use parking_lot::Mutex;
use rakam_store_api::{ProjectSnapshot, TableSource};

use datafusion::arrow::datatypes::SchemaRef;

use crate::all_collections::AllCollections;
use crate::materialized::ReceivedWindow;

pub const ALL_COLLECTIONS: &str = "_all";

#[derive(Debug)]
pub(crate) struct ProjectSchema {
    tables: Arc<ProjectTables>,
}

impl ProjectSchema {
    pub(crate) fn new(
        tables: Arc<dyn TableSource>,
        project: Arc<ProjectSnapshot>,
        window: Option<ReceivedWindow>,
    ) -> Self {
        Self {
            tables: Arc::new(ProjectTables {
                tables,
                project,
                window,
                snapshots: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// The project's collections, each opened at most once per query.
#[derive(Debug)]
pub(crate) struct ProjectTables {
    tables: Arc<dyn TableSource>,
    project: Arc<ProjectSnapshot>,
    /// Every collection is read limited to the events received in it.
    window: Option<ReceivedWindow>,
    snapshots: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl ProjectTables {
    pub(crate) fn collection_names(&self) -> Vec<String> {
        self.project.collection_names()
    }

    /// A collection's columns as the catalog has them, without opening it.
    pub(crate) fn catalog_schema(&self, name: &str) -> Option<SchemaRef> {
        self.project
            .schema(name)
            .map(|schema| schema.arrow_schema())
    }

    pub(crate) async fn collection(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(schema) = self.project.schema(name) else {
            return Ok(None);
        };
        if let Some(cached) = self.snapshots.lock().get(name) {
            return Ok(Some(cached.clone()));
        }
        let to_df = |e: rakam_store_api::StoreError| DataFusionError::External(Box::new(e));
        let provider = self
            .tables
            .table_provider(self.project.id(), name, schema.arrow_schema())
            .await
            .map_err(to_df)?;
        let provider = match &self.window {
            Some(window) => window.restrict(name, provider)?,
            None => provider,
        };
        self.snapshots
            .lock()
            .insert(name.to_string(), provider.clone());
        Ok(Some(provider))
    }
}

#[async_trait]
impl SchemaProvider for ProjectSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.tables.collection_names();
        names.push(ALL_COLLECTIONS.to_string());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name == ALL_COLLECTIONS {
            return Ok(Some(Arc::new(AllCollections::new(self.tables.clone()))));
        }
        self.tables.collection(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        name == ALL_COLLECTIONS || self.tables.project.schema(name).is_some()
    }
}
