use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::{ProjectId, Result};

/// What a statement returns, in Arrow form so one set of encoders serves
/// every backend: the columns first, then the rows as they arrive.
pub struct NativeOutput {
    pub schema: SchemaRef,
    pub batches: futures::stream::BoxStream<'static, Result<RecordBatch>>,
}

impl std::fmt::Debug for NativeOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeOutput")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A backend that runs the SQL surface itself (PostgreSQL), instead of the
/// shared DataFusion engine reading its table providers.
///
/// The caller has already checked the statement (one SELECT/WITH/EXPLAIN,
/// tables only of the project); the backend enforces the same again with
/// its own means (roles, read-only transactions, timeouts).
#[async_trait]
pub trait NativeSql: Send + Sync + std::fmt::Debug {
    /// The SQL dialect statements must parse in before they are sent.
    fn dialect(&self) -> NativeDialect;

    /// Runs a read-only statement, streaming at most `max_rows` rows. Errors
    /// the statement has before its first row come back here; later ones
    /// end the stream.
    async fn execute(
        &self,
        project: &ProjectId,
        sql: &str,
        max_rows: u64,
        timeout: Duration,
    ) -> Result<NativeOutput>;

    /// The columns the statement would return, without running it.
    async fn describe(&self, project: &ProjectId, sql: &str) -> Result<SchemaRef>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeDialect {
    PostgreSql,
}
