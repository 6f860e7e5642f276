use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use futures::stream::BoxStream;
use futures::StreamExt;
use rakam_config::QueryConfig;
use rakam_store_api::{Backend, NativeSql, ProjectSnapshot, TableSource};

use crate::bounded_strings::bounded_string_functions;
use crate::execution::RunningQuery;
use crate::guard::{check_statement, GuardedStatement};
use crate::materialized::{
    received_after_postgres, MaterializedSchema, MaterializedTables, ReceivedWindow,
    CONTINUOUS_SCHEMA, MATERIALIZED_SCHEMA,
};
use crate::memory::{QueryMemory, QueryPool, ServerMemory};
use crate::native::{materialized_names, prepare_native_scoped, relations_in_schema, NativeScope};
use crate::project_schema::ProjectSchema;
use crate::redact::Redactor;
use crate::runtime::{ProjectSlots, QueryRuntime};
use crate::yielding::YieldInJoins;
use crate::QueryError;

const CATALOG_NAME: &str = "rakam";
/// The partial phase of an aggregation goes on only while it has fewer
/// groups than this share of its input rows (DataFusion's default: 0.8).
const PARTIAL_AGGREGATION_MIN_REDUCTION: f64 = 0.1;
/// Views' own queries one project runs at once.
const VIEW_QUERIES_PER_PROJECT: usize = 2;

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

/// The limits every query runs under (`[query]` in the config).
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Rows returned when the request names no limit (Rakam: 50,000).
    pub default_limit: u64,
    /// The most rows a request may ask for (Rakam: 1,000,000).
    pub max_limit: u64,
    pub statement_timeout: Duration,
    /// Memory all running queries may hold together.
    pub memory_limit_bytes: u64,
    /// Memory one query may hold: operators, collected results, encoding.
    pub memory_per_query_bytes: u64,
    /// Queries one project may run at once; more wait for a slot.
    pub max_concurrent_per_project: usize,
    /// Threads queries run on (0: one per core).
    pub threads: usize,
}

impl From<&QueryConfig> for QueryLimits {
    fn from(config: &QueryConfig) -> Self {
        Self {
            default_limit: config.default_limit,
            max_limit: config.max_limit,
            statement_timeout: Duration::from_secs(config.statement_timeout_secs),
            memory_limit_bytes: config.memory_limit_bytes,
            memory_per_query_bytes: config.memory_per_query_bytes,
            max_concurrent_per_project: config.max_concurrent_per_project,
            threads: config.threads,
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

/// A collected result, and the memory it is counted as.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub elapsed: Duration,
    /// Grows as the result is encoded (see [`crate::write_rows_json`]).
    pub memory: QueryMemory,
}

#[derive(Debug, Clone)]
pub struct QueryEngine {
    tables: Arc<dyn TableSource>,
    native: Option<Arc<dyn NativeSql>>,
    limits: QueryLimits,
    /// DataFusion's disk manager and caches, shared by every query; each
    /// query gets its own memory pool on top.
    environment: Arc<RuntimeEnv>,
    memory: ServerMemory,
    runtime: Arc<QueryRuntime>,
    slots: Arc<ProjectSlots>,
    /// Slots of views' own queries (refreshes, real-time parts).
    view_slots: Arc<ProjectSlots>,
    /// Materialized views, once the views service is running.
    materialized: Arc<OnceLock<Arc<dyn MaterializedTables>>>,
    /// A view's own query: no views, no row limit, and every collection
    /// limited to this window.
    view_query: Option<ReceivedWindow>,
    /// Runs every statement in DataFusion, even on a backend with its own
    /// SQL engine (a continuous query's sketches are DataFusion functions).
    datafusion_only: bool,
}

fn bytes(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

impl QueryEngine {
    /// Queries the backend's tables, or its own SQL engine when it has one.
    /// Starts the query threads.
    pub fn new(backend: &Backend, limits: QueryLimits) -> Result<Self, QueryError> {
        let environment = RuntimeEnvBuilder::new()
            .build_arc()
            .map_err(QueryError::from_datafusion)?;
        let threads = match limits.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            threads => threads,
        };
        let runtime = QueryRuntime::start(threads)
            .map_err(|e| QueryError::Execution(format!("starting the query threads: {e}")))?;
        Ok(Self {
            tables: backend.tables.clone(),
            native: backend.native_sql.clone(),
            memory: ServerMemory::new(bytes(limits.memory_limit_bytes)),
            slots: Arc::new(ProjectSlots::new(limits.max_concurrent_per_project)),
            view_slots: Arc::new(ProjectSlots::new(VIEW_QUERIES_PER_PROJECT)),
            runtime: Arc::new(runtime),
            environment,
            limits,
            materialized: Arc::new(OnceLock::new()),
            view_query: None,
            datafusion_only: false,
        })
    }

    /// Lets queries read `materialized.<name>`.
    pub fn set_materialized(&self, views: Arc<dyn MaterializedTables>) {
        let _ = self.materialized.set(views);
    }

    /// This engine for a materialized view's own query: it reads the events
    /// received in `window` only, cannot read views, and has no row limit.
    pub fn for_view_query(&self, window: ReceivedWindow) -> Self {
        Self {
            view_query: Some(window),
            ..self.clone()
        }
    }

    /// This engine running every statement in DataFusion.
    pub fn in_datafusion(&self) -> Self {
        Self {
            datafusion_only: true,
            ..self.clone()
        }
    }

    /// The backend's own SQL engine, when `sql` is to run there: not for a
    /// DataFusion-only engine, nor for a statement reading continuous
    /// queries.
    async fn native_for(&self, sql: &str) -> Result<Option<Arc<dyn NativeSql>>, QueryError> {
        let Some(native) = self.native.clone() else {
            return Ok(None);
        };
        if self.datafusion_only {
            return Ok(None);
        }
        if !sql.to_ascii_lowercase().contains(CONTINUOUS_SCHEMA) {
            return Ok(Some(native));
        }
        let (owned, dialect) = (sql.to_string(), native.dialect());
        let continuous =
            off_async(move || relations_in_schema(&owned, dialect, CONTINUOUS_SCHEMA)).await?;
        Ok(continuous.is_empty().then_some(native))
    }

    /// The logical plan of a view's query, for a real-time view's recent
    /// rows (planned inside the reading query, which then runs it).
    pub async fn plan_view_query(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
    ) -> Result<LogicalPlan, QueryError> {
        let (frame, _) = self
            .plan(project, sql, None, self.environment.clone())
            .await?;
        Ok(frame.logical_plan().clone())
    }

    /// A view's query as the backend's own engine runs it over the events
    /// received after `after_ms` (a SQL expression of epoch milliseconds,
    /// read in the same statement), for a real-time view's recent rows;
    /// `None` without such an engine.
    pub async fn native_view_sql(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
        after_ms: &str,
    ) -> Result<Option<String>, QueryError> {
        let Some(native) = self.native.clone() else {
            return Ok(None);
        };
        let scope = NativeScope {
            window: Some(received_after_postgres(after_ms)),
            views: HashMap::new(),
        };
        let (owned, dialect) = (sql.to_string(), native.dialect());
        let collections = project.collection_names();
        let statement =
            off_async(move || prepare_native_scoped(&owned, dialect, &collections, &scope))
                .await??;
        Ok(Some(statement.sql))
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Ends the queries that are running and refuses new ones: the server
    /// is shutting down.
    pub fn stop(&self) {
        self.runtime.stop();
    }

    /// Memory the running queries hold together.
    pub fn memory_in_use(&self) -> usize {
        self.memory.reserved()
    }

    /// A session that knows one project and nothing else: no default
    /// catalog, no information_schema, no URL tables, no DDL/DML.
    fn session(
        &self,
        project: &Arc<ProjectSnapshot>,
        environment: Arc<RuntimeEnv>,
    ) -> Result<SessionContext, QueryError> {
        let mut config = SessionConfig::new()
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG_NAME, SCHEMA_ALIASES[0])
            .with_information_schema(false)
            .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
        // Spans let planning errors report the line and column they refer to.
        config.options_mut().sql_parser.collect_spans = true;
        // Per-person aggregations (funnels, retention, distinct users)
        // reduce rows only a few times in the partial phase; hashing every
        // key twice costs more than sending the rows on to the final phase.
        config
            .options_mut()
            .execution
            .skip_partial_aggregation_probe_ratio_threshold = PARTIAL_AGGREGATION_MIN_REDUCTION;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(environment)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(YieldInJoins))
            .build();
        let context = SessionContext::new_with_state(state);
        rakam_udf::register_all(&context);
        for udf in bounded_string_functions(self.limits.memory_per_query_bytes / 4) {
            context.register_udf(udf);
        }
        let schema = Arc::new(ProjectSchema::new(
            self.tables.clone(),
            project.clone(),
            self.view_query,
        ));
        let catalog = MemoryCatalogProvider::new();
        for alias in SCHEMA_ALIASES {
            catalog
                .register_schema(alias, schema.clone())
                .map_err(QueryError::from_datafusion)?;
        }
        if let (Some(views), None) = (self.materialized.get(), self.view_query) {
            for (name, continuous) in [(MATERIALIZED_SCHEMA, false), (CONTINUOUS_SCHEMA, true)] {
                let schema = Arc::new(MaterializedSchema {
                    views: views.clone(),
                    project: project.clone(),
                    continuous,
                });
                catalog
                    .register_schema(name, schema)
                    .map_err(QueryError::from_datafusion)?;
            }
        }
        context.register_catalog(CATALOG_NAME, Arc::new(catalog));
        Ok(context)
    }

    /// Checks and plans a statement; runs on the query threads.
    pub(crate) async fn plan(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
        limit: Option<u64>,
        environment: Arc<RuntimeEnv>,
    ) -> Result<(DataFrame, bool), QueryError> {
        let owned = sql.to_string();
        let statement = off_async(move || check_statement(&owned)).await??;
        let row_limit = self.row_limit(limit, statement.limit)?;
        let context = self.session(project, environment)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = context
            .sql_with_options(&statement.sql, options)
            .await
            .map_err(QueryError::from_datafusion)?;
        if statement.is_explain {
            return Ok((frame, true));
        }
        if row_limit == u64::MAX {
            return Ok((frame, false));
        }
        let frame = frame
            .limit(0, Some(row_limit as usize))
            .map_err(QueryError::from_datafusion)?;
        Ok((frame, false))
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
        match self.native_for(sql).await? {
            Some(native) => {
                let started = Instant::now();
                let stream = self
                    .stream_native(native.as_ref(), project, sql, limit)
                    .await?;
                let memory = self
                    .memory
                    .for_query(bytes(self.limits.memory_per_query_bytes));
                collect(stream, QueryMemory::new(&memory), started).await
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
        let dialect = native.dialect();
        let mut scope = NativeScope {
            window: self.view_query.and_then(|w| w.postgres_predicate()),
            views: HashMap::new(),
        };
        if let (Some(views), None) = (self.materialized.get(), self.view_query) {
            if sql.to_ascii_lowercase().contains(MATERIALIZED_SCHEMA) {
                let owned = sql.to_string();
                let names = off_async(move || materialized_names(&owned, dialect)).await?;
                for name in names {
                    if let Some(select) = views.native_relation(project, &name).await? {
                        scope.views.insert(name, select);
                    }
                }
            }
        }
        let owned = sql.to_string();
        off_async(move || prepare_native_scoped(&owned, dialect, &collections, &scope)).await?
    }

    /// The row limit a request gets, or an error when it asks for too many.
    fn row_limit(&self, requested: Option<u64>, in_sql: Option<u64>) -> Result<u64, QueryError> {
        if self.view_query.is_some() {
            return Ok(requested.or(in_sql).unwrap_or(u64::MAX));
        }
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
            .map_err(|e| {
                self.redactor(project)
                    .error(QueryError::from_native(e, &statement.sql))
            })?;
        let sql = statement.sql;
        let redactor = self.redactor(project);
        let is_explain = statement.is_explain;
        Ok(QueryStream {
            schema: output.schema,
            batches: output
                .batches
                .map(move |batch| match batch {
                    Ok(batch) if is_explain => redactor.batch(batch),
                    Ok(batch) => Ok(batch),
                    Err(error) => Err(redactor.error(QueryError::from_native(error, &sql))),
                })
                .boxed(),
        })
    }

    /// What EXPLAIN and error messages of this project's queries hide.
    pub(crate) fn redactor(&self, project: &ProjectSnapshot) -> Redactor {
        Redactor::new(project.id().as_str(), self.tables.private_text())
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
        match self.native_for(sql).await? {
            Some(native) => {
                self.stream_native(native.as_ref(), project, sql, limit)
                    .await
            }
            None => self
                .stream_in_datafusion(project, sql, limit)
                .await
                .map(|(stream, _)| stream),
        }
    }

    /// Runs a statement in DataFusion on the query threads, in one of the
    /// project's slots and within its own memory pool.
    async fn stream_in_datafusion(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
        limit: Option<u64>,
    ) -> Result<(QueryStream, Arc<QueryPool>), QueryError> {
        let timeout = self.limits.statement_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let (handle, environment, pool) = self.query_environment()?;
        // A view's query may run while its reader holds a project slot
        // (a first build): it takes a slot of its own kind.
        let slots = match self.view_query {
            Some(_) => &self.view_slots,
            None => &self.slots,
        };
        let slot = slots
            .acquire(project.id(), deadline, timeout.as_secs())
            .await?;
        let running = RunningQuery {
            engine: self.clone(),
            project: project.clone(),
            sql: sql.to_string(),
            limit,
            environment,
        };
        let stream = running
            .spawn(&handle, slot, deadline, timeout, self.runtime.clone())
            .await?;
        Ok((stream, pool))
    }

    /// The query threads and a DataFusion environment with a memory pool
    /// of its own, for one query.
    pub(crate) fn query_environment(
        &self,
    ) -> Result<(tokio::runtime::Handle, Arc<RuntimeEnv>, Arc<QueryPool>), QueryError> {
        let handle = match self.runtime.handle() {
            Some(handle) if !self.runtime.is_stopping() => handle.clone(),
            _ => return Err(QueryError::ShuttingDown),
        };
        let pool = self
            .memory
            .for_query(bytes(self.limits.memory_per_query_bytes));
        let mut environment = RuntimeEnv::clone(&self.environment);
        environment.memory_pool = pool.clone();
        Ok((handle, Arc::new(environment), pool))
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
        let (stream, pool) = self.stream_in_datafusion(project, sql, limit).await?;
        collect(stream, QueryMemory::new(&pool), started).await
    }

    /// The columns a statement would return, without running it.
    pub async fn metadata(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
    ) -> Result<SchemaRef, QueryError> {
        if let Some(native) = self.native_for(sql).await? {
            let statement = self.prepare_native(native.as_ref(), project, sql).await?;
            return native
                .describe(project.id(), &statement.sql)
                .await
                .map_err(|e| QueryError::from_native(e, &statement.sql));
        }
        self.plan_only(project, sql).await
    }
}

/// Collects a result, counting every batch against the query's memory.
async fn collect(
    stream: QueryStream,
    mut memory: QueryMemory,
    started: Instant,
) -> Result<QueryOutput, QueryError> {
    let mut batches = Vec::new();
    let mut results = stream.batches;
    while let Some(batch) = results.next().await {
        let batch = batch?;
        memory.grow(batch.get_array_memory_size())?;
        batches.push(batch);
    }
    Ok(QueryOutput {
        schema: stream.schema,
        batches,
        elapsed: started.elapsed(),
        memory,
    })
}
