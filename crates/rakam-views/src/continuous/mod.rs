//! Continuous queries (`/continuous-query/*`, read as `continuous.<name>`;
//! ADR 0014): an aggregate SELECT over one collection, kept as a hidden
//! incremental, real-time materialized view of mergeable partials. Every
//! refresh adds the partials of the events received since the last one,
//! committed with what they cover; a read merges the stored partials with
//! those of the events received since, so it counts every acknowledged
//! event once, after any crash.

mod compact;
pub mod compile;
mod read;
mod realtime;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use rakam_query::{ReceivedWindow, ALL_COLLECTIONS};
use rakam_store_api::{ProjectId, ProjectSnapshot, StoreError, StoredView, ViewDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::refresh::{now_ms, Trigger};
use crate::{check_table_name, Result, ViewError, Views};
use compile::{Known, Split};
use datafusion::logical_expr::Volatility;
use rakam_model::COLLECTION_COLUMN;

/// A continuous query's hidden view is named with this in front, which no
/// materialized view name can hold.
const HIDDEN_PREFIX: &str = "cq$";
/// Longest name: the hidden view's name must fit PostgreSQL identifiers.
const MAX_NAME_BYTES: usize = 45;
/// How often the partials of new events are stored. Reads are current
/// whatever this is (they add the events since); it only bounds how many
/// events a read aggregates itself.
pub(crate) const REFRESH_SECS: u64 = 5;
/// The relation the final query reads the partials as.
pub(crate) const PARTIALS: &str = "\"$partials\"";

/// What a continuous query is, kept in its hidden view's `options`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContinuousSpec {
    pub table_name: String,
    pub name: String,
    /// The client's query.
    pub query: String,
    #[serde(default)]
    pub partition_keys: Vec<String>,
    pub replay: bool,
    pub created_at_ms: i64,
    pub final_sql: String,
    pub compaction_sql: String,
    #[serde(default)]
    pub options: Value,
    /// The real-time report this query keeps (`/realtime/create` only).
    #[serde(default)]
    pub realtime: Option<Value>,
}

pub(crate) fn hidden_name(table_name: &str) -> String {
    format!("{HIDDEN_PREFIX}{table_name}")
}

pub(crate) fn is_hidden(view_name: &str) -> bool {
    view_name.starts_with(HIDDEN_PREFIX)
}

pub(crate) fn spec_of(definition: &ViewDefinition) -> Option<ContinuousSpec> {
    if !is_hidden(&definition.table_name) {
        return None;
    }
    serde_json::from_value(definition.options.get("continuous")?.clone()).ok()
}

/// Rakam's create body: `{continuous_query: {...}, replay}`; the query's
/// fields at the top level are taken too.
#[derive(Debug, Deserialize)]
struct CreateRequest {
    #[serde(default)]
    continuous_query: Option<QueryFields>,
    #[serde(default)]
    replay: Option<bool>,
    #[serde(flatten)]
    top: QueryFields,
}

#[derive(Debug, Default, Deserialize)]
struct QueryFields {
    #[serde(default, alias = "tableName")]
    table_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default, alias = "partitionKeys")]
    partition_keys: Option<Vec<String>>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default, alias = "windowDuration")]
    window_duration: Option<Value>,
}

fn invalid(message: impl Into<String>) -> ViewError {
    ViewError::InvalidContinuous(message.into())
}

pub(crate) fn check_name(raw: &str) -> Result<String> {
    let name = check_table_name(raw).map_err(|e| invalid(e.to_string()))?;
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "table_name of a continuous query has at most {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(name)
}

/// The names of the engine's aggregate functions, and of its scalar
/// functions whose value is not fixed by their arguments.
pub(crate) struct FunctionNames {
    pub aggregates: HashSet<String>,
    pub volatile: HashSet<String>,
}

pub(crate) fn function_names() -> &'static FunctionNames {
    static NAMES: OnceLock<FunctionNames> = OnceLock::new();
    NAMES.get_or_init(|| {
        let context = SessionContext::new();
        rakam_udf::register_all(&context);
        let state = context.state();
        let names = |name: &str, aliases: &[String]| {
            std::iter::once(name.to_lowercase())
                .chain(aliases.iter().map(|a| a.to_lowercase()))
                .collect::<Vec<_>>()
        };
        FunctionNames {
            aggregates: state
                .aggregate_functions()
                .iter()
                .flat_map(|(name, udaf)| names(name, udaf.aliases()))
                .collect(),
            volatile: state
                .scalar_functions()
                .iter()
                .filter(|(_, udf)| udf.signature().volatility != Volatility::Immutable)
                .flat_map(|(name, udf)| names(name, udf.aliases()))
                .collect(),
        }
    })
}

/// The columns of each collection (lower-cased names), and of `_all`.
fn columns_of(project: &ProjectSnapshot) -> HashMap<String, HashSet<String>> {
    let mut columns: HashMap<String, HashSet<String>> = HashMap::new();
    let mut all = HashSet::from([COLLECTION_COLUMN.to_string()]);
    for (name, schema) in &project.collections {
        let names: HashSet<String> = schema
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| f.name().to_lowercase())
            .collect();
        all.extend(names.iter().cloned());
        columns.insert(name.to_lowercase(), names);
    }
    columns.insert(ALL_COLLECTIONS.to_string(), all);
    columns
}

/// Splits `query` (after the statement checks every query gets, which
/// bound its nesting before it is parsed into a tree).
pub(crate) fn split_checked(project: &ProjectSnapshot, query: &str) -> Result<Split> {
    rakam_query::check_statement(query).map_err(ViewError::Query)?;
    let columns = columns_of(project);
    let has_column = |collection: &str, column: &str| {
        columns.get(collection).is_some_and(|c| c.contains(column))
    };
    let names = function_names();
    let known = Known {
        aggregates: &names.aggregates,
        volatile: &names.volatile,
        has_column: &has_column,
    };
    compile::split(query, &known).map_err(invalid)
}

/// A session that can plan the final query and compactions: Rakam's
/// functions and the one `"$partials"` table it is given.
pub(crate) fn merge_session() -> SessionContext {
    let context = SessionContext::new();
    rakam_udf::register_all(&context);
    context
}

impl Views {
    /// A merge session that runs what it plans (a compaction, a real-time
    /// report) within one query's memory (`query.memory_per_query_bytes`):
    /// over it, the query fails rather than the server running out.
    pub(crate) fn bounded_merge_session(&self) -> Result<SessionContext> {
        let limit = usize::try_from(self.inner.engine.limits().memory_per_query_bytes)
            .unwrap_or(usize::MAX);
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(limit, 1.0)
            .build_arc()
            .map_err(|e| invalid(format!("starting a merge: {e}")))?;
        let context =
            SessionContext::new_with_config_rt(datafusion::prelude::SessionConfig::new(), runtime);
        rakam_udf::register_all(&context);
        Ok(context)
    }
}

/// Plans a query of ours in a merge session: a SELECT, nothing else.
pub(crate) async fn merge_sql(
    context: &SessionContext,
    sql: &str,
) -> datafusion::error::Result<datafusion::dataframe::DataFrame> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    context.sql_with_options(sql, options).await
}

impl Views {
    /// Checks the query, records it, and starts computing it (from the
    /// collection's history with `replay`, else from now on).
    pub async fn create_continuous(
        &self,
        project: &Arc<ProjectSnapshot>,
        request: Value,
    ) -> Result<()> {
        self.create_continuous_with(project, request, None).await
    }

    pub(crate) async fn create_continuous_with(
        &self,
        project: &Arc<ProjectSnapshot>,
        request: Value,
        realtime: Option<Value>,
    ) -> Result<()> {
        let request: CreateRequest = serde_json::from_value(request)
            .map_err(|e| invalid(format!("invalid continuous query: {e}")))?;
        let fields = request.continuous_query.unwrap_or(request.top);
        if fields
            .window_duration
            .as_ref()
            .is_some_and(|w| !w.is_null())
        {
            return Err(invalid(
                "windowDuration is not supported: group by a time bucket of _time (date_trunc, date_bin) and filter when reading",
            ));
        }
        let table_name = check_name(
            fields
                .table_name
                .as_deref()
                .ok_or_else(|| invalid("table_name is required"))?,
        )?;
        let query = fields
            .query
            .map(|q| q.trim().trim_end_matches(';').trim().to_string())
            .filter(|q| !q.is_empty())
            .ok_or_else(|| invalid("query is required"))?;
        let (split, names) = self.check_continuous(project, &query).await?;
        let partition_keys = fields.partition_keys.unwrap_or_default();
        for key in &partition_keys {
            if !names.iter().any(|name| name.eq_ignore_ascii_case(key)) {
                return Err(invalid(format!(
                    "partition key {key:?} is not a column of the query's result"
                )));
            }
        }
        let spec = ContinuousSpec {
            name: fields.name.unwrap_or_else(|| table_name.clone()),
            table_name: table_name.clone(),
            query,
            partition_keys,
            replay: request.replay.unwrap_or(false),
            created_at_ms: now_ms(),
            final_sql: split.final_sql(PARTIALS, &names),
            compaction_sql: split.compaction_sql(PARTIALS),
            options: fields.options.unwrap_or(Value::Null),
            realtime,
        };
        let definition = ViewDefinition {
            table_name: hidden_name(&table_name),
            name: spec.name.clone(),
            query: split.partial_sql.clone(),
            update_interval_secs: REFRESH_SECS,
            incremental: true,
            real_time: true,
            options: json!({ "continuous": spec }),
        };
        match self.inner.store.create(project.id(), definition).await {
            Err(StoreError::ViewExists(_)) => return Err(ViewError::ContinuousExists(table_name)),
            other => other?,
        }
        let views = self.clone();
        let snapshot = project.clone();
        let hidden = hidden_name(&table_name);
        self.spawn(async move {
            if let Err(error) = views.refresh_view(&snapshot, &hidden, Trigger::FirstRead).await {
                tracing::warn!(continuous_query = %hidden, %error, "the first computation of a continuous query failed");
            }
        });
        Ok(())
    }

    /// The query split, and its result's column names; or why it cannot be
    /// maintained (`/continuous-query/test`).
    pub async fn check_continuous(
        &self,
        project: &Arc<ProjectSnapshot>,
        query: &str,
    ) -> Result<(Split, Vec<String>)> {
        let (owned, snapshot) = (query.to_string(), project.clone());
        let split = tokio::task::spawn_blocking(move || split_checked(&snapshot, &owned))
            .await
            .map_err(|e| invalid(format!("checking the query failed: {e}")))??;
        let engine = self.inner.engine.in_datafusion();
        let result = engine.metadata(project, query).await?;
        let names: Vec<String> = result.fields().iter().map(|f| f.name().clone()).collect();
        let mut seen = HashSet::new();
        for name in &names {
            // The partials' columns are named `$g<i>` and `$a<i>`.
            if name.starts_with('$') {
                return Err(invalid(format!(
                    "result column {name:?} starts with $: name it otherwise (AS ...)"
                )));
            }
            if !seen.insert(name.to_lowercase()) {
                return Err(invalid(format!(
                    "the query has two columns named {name:?}: name each column once (AS ...)"
                )));
            }
        }
        let window = ReceivedWindow {
            after_ms: None,
            through_ms: Some(0),
        };
        let partials = engine
            .for_view_query(window)
            .metadata(project, &split.partial_sql)
            .await?;
        plan_over(&split.final_sql(PARTIALS, &names), partials.clone()).await?;
        plan_over(&split.compaction_sql(PARTIALS), partials).await?;
        Ok((split, names))
    }

    pub async fn list_continuous(&self, project: &ProjectId) -> Result<Vec<Value>> {
        let views = self.inner.store.list(project).await?;
        Ok(views
            .iter()
            .filter_map(|view| describe(view, self.last_error(project, view)))
            .collect())
    }

    pub async fn get_continuous(&self, project: &ProjectId, table_name: &str) -> Result<Value> {
        let view = self.continuous_view(project, table_name).await?;
        describe(&view, self.last_error(project, &view))
            .ok_or_else(|| ViewError::ContinuousNotFound(table_name.to_string()))
    }

    fn last_error(&self, project: &ProjectId, view: &StoredView) -> Option<Value> {
        let key = (project.clone(), view.definition.table_name.clone());
        self.inner
            .failures
            .lock()
            .get(&key)
            .map(|(at, message)| json!({"at": at, "message": message}))
    }

    pub(crate) async fn continuous_view(
        &self,
        project: &ProjectId,
        table_name: &str,
    ) -> Result<StoredView> {
        let name = check_name(table_name)?;
        self.inner
            .store
            .get(project, &hidden_name(&name))
            .await?
            .filter(|view| spec_of(&view.definition).is_some())
            .ok_or(ViewError::ContinuousNotFound(name))
    }

    /// The result columns of the continuous queries (all, or those named).
    pub async fn continuous_schemas(
        &self,
        project: &Arc<ProjectSnapshot>,
        names: Option<&[String]>,
    ) -> Result<Vec<(String, SchemaRef)>> {
        let mut schemas = Vec::new();
        for view in self.inner.store.list(project.id()).await? {
            let Some(spec) = spec_of(&view.definition) else {
                continue;
            };
            let name = spec.table_name;
            if names.is_some_and(|names| !names.iter().any(|n| n.eq_ignore_ascii_case(&name))) {
                continue;
            }
            // The result's columns follow from the partials' columns: the
            // rows are not read (a query never built is built first).
            let view = match view.schema {
                Some(_) => view,
                None => {
                    self.ensure_built(project, &view.definition.table_name)
                        .await?
                }
            };
            if let Some(partials) = view.schema {
                schemas.push((name, plan_over(&spec.final_sql, partials).await?));
            }
        }
        Ok(schemas)
    }

    /// Stores the partials of the events received since the last refresh
    /// now (the background refresher does it every few seconds).
    pub async fn refresh_continuous(
        &self,
        project: &Arc<ProjectSnapshot>,
        table_name: &str,
    ) -> Result<Value> {
        let view = self.continuous_view(project.id(), table_name).await?;
        self.refresh_view(project, &view.definition.table_name, Trigger::Request)
            .await?;
        self.get_continuous(project.id(), table_name).await
    }

    pub async fn delete_continuous(&self, project: &ProjectId, table_name: &str) -> Result<()> {
        let view = self.continuous_view(project, table_name).await?;
        let hidden = view.definition.table_name;
        let lock = self.lock_of(project, &hidden);
        let _held = lock.lock().await;
        if !self.inner.store.delete(project, &hidden).await? {
            return Err(ViewError::ContinuousNotFound(table_name.to_string()));
        }
        self.inner
            .failures
            .lock()
            .remove(&(project.clone(), hidden));
        Ok(())
    }
}

/// Plans `sql` over an empty `"$partials"` of `schema`.
async fn plan_over(sql: &str, schema: SchemaRef) -> Result<SchemaRef> {
    let context = merge_session();
    let table = MemTable::try_new(schema, vec![vec![]])
        .map_err(|e| invalid(format!("planning the continuous query: {e}")))?;
    context
        .register_table(TableReference::bare("$partials"), Arc::new(table))
        .map_err(|e| invalid(format!("planning the continuous query: {e}")))?;
    let frame = merge_sql(&context, sql)
        .await
        .map_err(|e| invalid(format!("the continuous query cannot be merged: {e}")))?;
    Ok(Arc::new(frame.schema().as_arrow().clone()))
}

/// A continuous query as `/continuous-query/list` and `/get` show it;
/// `None` for a view that is not one.
fn describe(view: &StoredView, last_error: Option<Value>) -> Option<Value> {
    let spec = spec_of(&view.definition)?;
    let mut described = json!({
        "table_name": spec.table_name,
        "name": spec.name,
        "query": spec.query,
        "partition_keys": spec.partition_keys,
        "options": spec.options,
        "replay": spec.replay,
        "created_at": spec.created_at_ms,
        "last_update": view.state.last_update_ms,
        "covered_through": view.state.covered_through_ms,
        "partial_rows": view.state.rows,
        "refreshes": view.state.generation,
    });
    if let Some(error) = last_error {
        described["last_error"] = error;
    }
    Some(described)
}
