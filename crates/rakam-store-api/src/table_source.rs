use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use serde::Serialize;

use crate::{ProjectId, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CollectionStats {
    pub rows: u64,
    /// Rows with at least one value kept in `_unmapped`.
    pub unmapped_rows: u64,
}

/// The part of a backend that DataFusion reads, so one query engine serves
/// every backend.
#[async_trait]
pub trait TableSource: Send + Sync + std::fmt::Debug {
    /// Every acknowledged row of the collection, read as `schema` (the
    /// snapshot's schema: older data is cast, missing columns are null).
    async fn table_provider(
        &self,
        project: &ProjectId,
        collection: &str,
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>>;

    async fn stats(&self, project: &ProjectId, collection: &str) -> Result<CollectionStats>;

    /// Text a query plan or an error message may show that no client may
    /// see, such as the data directory: `EXPLAIN` and errors hide it.
    fn private_text(&self) -> Vec<String> {
        Vec::new()
    }
}
