use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use rakam_store_api::{Backend, NativeSql, ProjectSnapshot, TableSource};

use crate::guard::{check_statement, GuardedStatement};
use crate::native::prepare_native;
use crate::project_schema::ProjectSchema;
use crate::QueryError;

const CATALOG_NAME: &str = "rakam";

/// Parsing and checking a statement of up to a megabyte takes a few hundred
/// milliseconds: it runs on the blocking pool, not on an async worker.
async fn off_async<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, QueryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| QueryError::Execution(format!("statement check failed: {e}")))
}
/// Schema names under which a project's collections resolve: bare names,
/// and Rakam's `collection.<name>`.
pub(crate) const SCHEMA_ALIASES: [&str; 2] = ["public", "collection"];

#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Rows returned when the request names no limit (Rakam: 50,000).
    pub default_limit: u64,
    /// The most rows a request may ask for (Rakam: 1,000,000).
    pub max_limit: u64,
    pub statement_timeout: Duration,
    /// Memory all running queries may hold together.
    pub memory_limit_bytes: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            default_limit: 50_000,
            max_limit: 1_000_000,
            statement_timeout: Duration::from_secs(300),
            memory_limit_bytes: 4 << 30,
        }
    }
}

/// A result as it is computed: the columns first, then the batches.
pub struct QueryStream {
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch, QueryError>>,
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct QueryEngine {
    tables: Arc<dyn TableSource>,
    native: Option<Arc<dyn NativeSql>>,
    limits: QueryLimits,
    /// Shared by every query, so the memory limit holds for all of them.
    runtime: Arc<RuntimeEnv>,
}

impl QueryEngine {
    /// Queries the backend's tables, or its own SQL engine when it has one.
    pub fn new(backend: &Backend, limits: QueryLimits) -> Self {
        let memory = usize::try_from(limits.memory_limit_bytes).unwrap_or(usize::MAX);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(memory, 1.0)
            .build_arc()
            .unwrap_or_else(|_| Arc::new(RuntimeEnv::default()));
        Self {
            tables: backend.tables.clone(),
            native: backend.native_sql.clone(),
            limits,
            runtime,
        }
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// A session that knows one project and nothing else: no default
    /// catalog, no information_schema, no URL tables, no DDL/DML.
    pub async fn session(
        &self,
        project: &Arc<ProjectSnapshot>,
    ) -> Result<SessionContext, QueryError> {
        let config = SessionConfig::new()
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG_NAME, SCHEMA_ALIASES[0])
            .with_information_schema(false)
            .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
        let mut config = config;
        // Spans let planning errors report the line and column they refer to.
        config.options_mut().sql_parser.collect_spans = true;
        let context = SessionContext::new_with_config_rt(config, self.runtime.clone());
        rakam_udf::register_all(&context);
        let schema = Arc::new(ProjectSchema::new(self.tables.clone(), project.clone()));
        let catalog = MemoryCatalogProvider::new();
        for alias in SCHEMA_ALIASES {
            catalog
                .register_schema(alias, schema.clone())
                .map_err(QueryError::from_datafusion)?;
        }
        context.register_catalog(CATALOG_NAME, Arc::new(catalog));
        Ok(context)
    }

    async fn plan(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
        limit: Option<u64>,
    ) -> Result<DataFrame, QueryError> {
        let owned = sql.to_string();
        let statement = off_async(move || check_statement(&owned)).await??;
        let row_limit = self.row_limit(limit, statement.limit)?;
        let context = self.session(project).await?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = context
            .sql_with_options(&statement.sql, options)
            .await
            .map_err(QueryError::from_datafusion)?;
        if statement.is_explain {
            return Ok(frame);
        }
        frame
            .limit(0, Some(row_limit as usize))
            .map_err(QueryError::from_datafusion)
    }

    /// Runs a client's read-only statement within the row limit and the
    /// timeout: inside the backend when it has its own SQL engine
    /// (PostgreSQL), else in DataFusion.
    pub async fn execute(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
        limit: Option<u64>,
    ) -> Result<QueryOutput, QueryError> {
        match self.native.clone() {
            Some(native) => {
                self.execute_native(native.as_ref(), project, sql, limit)
                    .await
            }
            None => self.execute_in_datafusion(project, sql, limit).await,
        }
    }

    /// Checks a statement for the backend's own engine, on the blocking pool.
    async fn prepare_native(
        &self,
        native: &dyn NativeSql,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
    ) -> Result<GuardedStatement, QueryError> {
        let collections = project.collection_names();
        let (owned, dialect) = (sql.to_string(), native.dialect());
        off_async(move || prepare_native(&owned, dialect, &collections)).await?
    }

    /// The row limit a request gets, or an error when it asks for too many.
    fn row_limit(&self, requested: Option<u64>, in_sql: Option<u64>) -> Result<u64, QueryError> {
        let max = self.limits.max_limit;
        for asked in [requested, in_sql].into_iter().flatten() {
            if asked > max {
                return Err(QueryError::RowLimit {
                    requested: asked,
                    max,
                });
            }
        }
        Ok(requested.unwrap_or(self.limits.default_limit).min(max))
    }

    async fn execute_native(
        &self,
        native: &dyn NativeSql,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
        limit: Option<u64>,
    ) -> Result<QueryOutput, QueryError> {
        let started = Instant::now();
        let stream = self.stream_native(native, project, sql, limit).await?;
        let batches = stream.batches.try_collect().await?;
        Ok(QueryOutput {
            schema: stream.schema,
            batches,
            elapsed: started.elapsed(),
        })
    }

    async fn stream_native(
        &self,
        native: &dyn NativeSql,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
        limit: Option<u64>,
    ) -> Result<QueryStream, QueryError> {
        let statement = self.prepare_native(native, project, sql).await?;
        let rows = self.row_limit(limit, statement.limit)?;
        let output = native
            .execute(
                project.id(),
                &statement.sql,
                rows,
                self.limits.statement_timeout,
            )
            .await
            .map_err(|e| QueryError::from_native(e, &statement.sql))?;
        let sql = statement.sql;
        Ok(QueryStream {
            schema: output.schema,
            batches: output
                .batches
                .map(move |batch| batch.map_err(|e| QueryError::from_native(e, &sql)))
                .boxed(),
        })
    }

    /// Runs a client's statement like `execute`, handing out the batches as
    /// they are computed (an export of any size streams). The statement
    /// timeout holds until the last batch.
    pub async fn execute_stream(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
        limit: Option<u64>,
    ) -> Result<QueryStream, QueryError> {
        match self.native.clone() {
            Some(native) => {
                self.stream_native(native.as_ref(), project, sql, limit)
                    .await
            }
            None => self.stream_in_datafusion(project, sql, limit).await,
        }
    }

    async fn stream_in_datafusion(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
        limit: Option<u64>,
    ) -> Result<QueryStream, QueryError> {
        let timeout = self.limits.statement_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = move || QueryError::Timeout {
            seconds: timeout.as_secs(),
        };
        let start = async {
            let frame = self.plan(project, sql, limit).await?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let stream = frame
                .execute_stream()
                .await
                .map_err(QueryError::from_datafusion)?;
            Ok::<_, QueryError>((schema, stream))
        };
        let (schema, stream) = tokio::time::timeout_at(deadline, start)
            .await
            .map_err(|_| timed_out())??;
        // The timeout counts time spent computing batches, not time spent
        // waiting for a slow client to take them.
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
        let batches = futures::stream::unfold(Some((stream, budget)), move |state| async move {
            let (mut stream, budget) = state?;
            let started = Instant::now();
            match tokio::time::timeout(budget, stream.next()).await {
                Err(_) => Some((Err(timed_out()), None)),
                Ok(None) => None,
                Ok(Some(Ok(batch))) => {
                    let left = budget.saturating_sub(started.elapsed());
                    Some((Ok(batch), Some((stream, left))))
                }
                Ok(Some(Err(error))) => Some((Err(QueryError::from_datafusion(error)), None)),
            }
        })
        .boxed();
        Ok(QueryStream { schema, batches })
    }

    /// Runs a statement in DataFusion over the store's table providers,
    /// whatever the backend: analyses use the functions only DataFusion has.
    pub async fn execute_in_datafusion(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
        limit: Option<u64>,
    ) -> Result<QueryOutput, QueryError> {
        let started = Instant::now();
        let stream = self.stream_in_datafusion(project, sql, limit).await?;
        let batches = stream.batches.try_collect().await?;
        Ok(QueryOutput {
            schema: stream.schema,
            batches,
            elapsed: started.elapsed(),
        })
    }

    /// The columns a statement would return, without running it.
    pub async fn metadata(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
    ) -> Result<SchemaRef, QueryError> {
        if let Some(native) = self.native.clone() {
            let statement = self.prepare_native(native.as_ref(), project, sql).await?;
            return native
                .describe(project.id(), &statement.sql)
                .await
                .map_err(|e| QueryError::from_native(e, &statement.sql));
        }
        let frame = self.plan(project, sql, None).await?;
        Ok(Arc::new(frame.schema().as_arrow().clone()))
    }
}
