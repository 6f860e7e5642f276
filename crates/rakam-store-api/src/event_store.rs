use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use serde::Serialize;

use crate::{NativeSql, ProjectInfo, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CollectionStats {
    pub rows: u64,
    /// Rows with at least one value kept in `_unmapped`.
    pub unmapped_rows: u64,
}

/// Where events live. Appends are durable when they return; reads go
/// through DataFusion so every backend is queried by the same engine.
#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// Appends one request's rows, for any number of collections, as one
    /// durable unit. Every batch is in its collection's current Arrow schema
    /// (or a subset of its columns).
    async fn append(
        &self,
        project: &ProjectInfo,
        batches: Vec<(String, RecordBatch)>,
    ) -> Result<()>;

    /// Every acknowledged row of the collection, read as `schema` (the
    /// catalog's current schema: older data is cast, missing columns are null).
    async fn table_provider(
        &self,
        project: &ProjectInfo,
        collection: &str,
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>>;

    async fn stats(&self, project: &ProjectInfo, collection: &str) -> Result<CollectionStats>;

    /// Drops every row of the project.
    async fn delete_project(&self, project: &ProjectInfo) -> Result<()>;

    /// Makes every acknowledged row part of the long-term format (for the
    /// embedded store: Parquet), so a restart has nothing to replay.
    async fn flush(&self) -> Result<()>;

    /// Stops background work; pending appends complete first.
    async fn shutdown(&self) -> Result<()>;

    /// The backend's own SQL engine, when the query surface runs inside the
    /// backend rather than in DataFusion over [`Self::table_provider`].
    fn native_sql(&self) -> Option<std::sync::Arc<dyn NativeSql>> {
        None
    }
}
