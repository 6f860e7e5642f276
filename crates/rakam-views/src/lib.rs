//! Materialized views (Rakam's `/materialized-view/*`): a SELECT stored as
//! rows of the backend and read as `materialized.<name>` (ADR 0013).
//!
//! ```text
//! refresh:  per-view lock ─▶ sink.server_time_barrier = T ─▶ view query over
//!           events with _server_time in (covered, T] (incremental) or ≤ T
//!           (full) ─▶ ViewStore::write(rows + state{covered = T}) in one commit
//! read:     materialized.x ─▶ first build waits; stale ─▶ background refresh;
//!           real_time ─▶ stored rows ∪ the query over events after `covered`
//! ```

pub mod continuous;
mod definition;
mod error;
mod read;
mod refresh;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rakam_query::{QueryEngine, ReceivedWindow};
use rakam_store_api::{Catalog, EventSink, ProjectId, ProjectSnapshot, StoredView, ViewStore};
use serde_json::Value;

use refresh::Trigger;

pub use definition::{check_table_name, describe, parse_interval, CreateView};
pub use error::ViewError;

pub type Result<T, E = ViewError> = std::result::Result<T, E>;

type ViewKey = (ProjectId, String);

/// The views service: one per server.
#[derive(Debug, Clone)]
pub struct Views {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ViewStore>,
    sink: Arc<dyn EventSink>,
    catalog: Arc<dyn Catalog>,
    engine: QueryEngine,
    /// One refresh of a view at a time (in this process; the store's
    /// generation check covers other processes).
    refreshing: Mutex<HashMap<ViewKey, Arc<tokio::sync::Mutex<()>>>>,
    /// The last failed refresh of a view, shown by `/get` and retried after
    /// a pause rather than at every round.
    failures: Mutex<HashMap<ViewKey, (i64, String)>>,
    /// Rows of each continuous query's partials after its last compaction.
    compacted: Mutex<HashMap<ViewKey, u64>>,
    /// When this process last saw an append of each project (epoch ms), and
    /// when it started: a continuous query covering both has nothing new.
    appends: Mutex<HashMap<ProjectId, i64>>,
    started_at_ms: i64,
    stopping: tokio::sync::watch::Sender<bool>,
    /// The background round and the refreshes it or a reader started.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How often the background refresher looks for stale views.
const ROUND: Duration = Duration::from_secs(1);
/// A view whose refresh failed is retried after this long at the soonest.
const RETRY_AFTER_MS: i64 = 60_000;

impl Views {
    pub fn new(
        store: Arc<dyn ViewStore>,
        sink: Arc<dyn EventSink>,
        catalog: Arc<dyn Catalog>,
        engine: QueryEngine,
    ) -> Self {
        let (stopping, _) = tokio::sync::watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                store,
                sink,
                catalog,
                engine,
                refreshing: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
                compacted: Mutex::new(HashMap::new()),
                appends: Mutex::new(HashMap::new()),
                started_at_ms: rakam_common::time::now_millis(),
                stopping,
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Lets queries read the views, raises each project's server-time
    /// barrier past what its views cover (a clock that went back across a
    /// restart cannot hide events from them), and starts the background
    /// refresher.
    pub async fn start(&self) -> Result<()> {
        self.inner
            .engine
            .set_materialized(Arc::new(read::WeakViews(Arc::downgrade(&self.inner))));
        let mut covered: HashMap<ProjectId, i64> = HashMap::new();
        for (project, view) in self.inner.store.list_all().await? {
            if let Some(through) = view.state.covered_through_ms {
                let entry = covered.entry(project).or_insert(through);
                *entry = (*entry).max(through);
            }
        }
        for (project, through) in covered {
            self.inner
                .sink
                .server_time_barrier(&project, through)
                .await?;
        }
        // The round holds the service weakly: dropping the server ends it.
        let weak = Arc::downgrade(&self.inner);
        let mut stopping = self.inner.stopping.subscribe();
        let round = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(ROUND) => {}
                    _ = stopping.changed() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                Views { inner }.refresh_stale().await;
            }
        });
        self.inner.tasks.lock().push(round);
        Ok(())
    }

    /// Stops the background refresher and the refreshes under way (they
    /// commit nothing and are redone after the restart).
    pub async fn stop(&self) {
        let _ = self.inner.stopping.send(true);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// An append of the project is durable (the server's append observer
    /// says so): its continuous queries have something to store.
    pub fn note_append(&self, project: &ProjectId) {
        let now = rakam_common::time::now_millis();
        self.inner.appends.lock().insert(project.clone(), now);
    }

    /// Runs `work` in the background, stopped with the service.
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.inner.tasks.lock();
        tasks.retain(|task| !task.is_finished());
        tasks.push(tokio::spawn(work));
    }

    /// Records a view after planning its query; its first build starts in
    /// the background.
    pub async fn create(&self, project: &Arc<ProjectSnapshot>, request: Value) -> Result<()> {
        let request: CreateView = serde_json::from_value(request)
            .map_err(|e| ViewError::Invalid(format!("invalid materialized view: {e}")))?;
        let definition = request.into_definition()?;
        self.check_query(project, &definition.query).await?;
        self.inner
            .store
            .create(project.id(), definition.clone())
            .await?;
        let views = self.clone();
        let snapshot = project.clone();
        self.spawn(async move {
            if let Err(error) = views
                .refresh_view(&snapshot, &definition.table_name, Trigger::FirstRead)
                .await
            {
                tracing::warn!(view = %definition.table_name, %error, "the first build of a materialized view failed");
            }
        });
        Ok(())
    }

    /// The view's query must plan as a view query: it reads collections
    /// only (not other views) and has the columns a view can store.
    async fn check_query(&self, project: &Arc<ProjectSnapshot>, sql: &str) -> Result<()> {
        // Planned with a window, as every refresh runs it: what a window
        // cannot apply to (on PostgreSQL, a WITH query named like a
        // collection) is refused now rather than at each refresh.
        let engine = self.inner.engine.for_view_query(ReceivedWindow {
            after_ms: None,
            through_ms: Some(0),
        });
        match engine.metadata(project, sql).await {
            Ok(schema) => {
                let mut seen = std::collections::HashSet::new();
                for field in schema.fields() {
                    if !seen.insert(field.name().to_lowercase()) {
                        return Err(ViewError::Invalid(format!(
                            "the query has two columns named {:?}: name each column once (AS ...)",
                            field.name()
                        )));
                    }
                }
                Ok(())
            }
            Err(error) if mentions_views(sql) => Err(ViewError::Invalid(format!(
                "a materialized view cannot read another view ({error})"
            ))),
            Err(error) => Err(ViewError::Query(error)),
        }
    }

    pub async fn list(&self, project: &ProjectId) -> Result<Vec<Value>> {
        let views = self.inner.store.list(project).await?;
        Ok(views
            .iter()
            .filter(|view| !continuous::is_hidden(&view.definition.table_name))
            .map(|view| self.described(project, view))
            .collect())
    }

    pub async fn get(&self, project: &ProjectId, table_name: &str) -> Result<Value> {
        let view = self.stored(project, table_name).await?;
        Ok(self.described(project, &view))
    }

    fn described(&self, project: &ProjectId, view: &StoredView) -> Value {
        let mut described = describe(view);
        let key = (project.clone(), view.definition.table_name.clone());
        if let Some((at, message)) = self.inner.failures.lock().get(&key) {
            described["last_error"] = serde_json::json!({"at": at, "message": message});
        }
        described
    }

    /// The columns of the views (all, or those named); a view never built
    /// is built first.
    pub async fn schemas(
        &self,
        project: &Arc<ProjectSnapshot>,
        names: Option<&[String]>,
    ) -> Result<Vec<(String, datafusion::arrow::datatypes::SchemaRef)>> {
        let mut schemas = Vec::new();
        for view in self.inner.store.list(project.id()).await? {
            let name = view.definition.table_name.clone();
            if continuous::is_hidden(&name) {
                continue;
            }
            if names.is_some_and(|names| !names.iter().any(|n| n.eq_ignore_ascii_case(&name))) {
                continue;
            }
            let view = match view.schema {
                Some(_) => view,
                None => self.ensure_built(project, &name).await?,
            };
            if let Some(schema) = view.schema {
                schemas.push((name, schema));
            }
        }
        Ok(schemas)
    }

    pub async fn delete(&self, project: &ProjectId, table_name: &str) -> Result<()> {
        let name = check_table_name(table_name)?;
        let lock = self.lock_of(project, &name);
        let _held = lock.lock().await;
        if !self.inner.store.delete(project, &name).await? {
            return Err(ViewError::NotFound(name));
        }
        // The view's lock stays: a refresh queued on it must not run beside
        // the first build of a view created again under the same name.
        self.inner.failures.lock().remove(&(project.clone(), name));
        Ok(())
    }

    /// Turns real-time reading on or off (`/materialized-view/change`).
    pub async fn change(
        &self,
        project: &ProjectId,
        table_name: &str,
        real_time: bool,
    ) -> Result<()> {
        let lock = self.lock_of(project, &check_table_name(table_name)?);
        let _held = lock.lock().await;
        let view = self.stored(project, table_name).await?;
        let mut definition = view.definition;
        definition.real_time = real_time;
        Ok(self.inner.store.change(project, definition).await?)
    }

    /// Refreshes the view now and waits for it (`/materialized-view/refresh`).
    pub async fn refresh(&self, project: &Arc<ProjectSnapshot>, table_name: &str) -> Result<Value> {
        let name = check_table_name(table_name)?;
        self.refresh_view(project, &name, Trigger::Request).await?;
        self.get(project.id(), &name).await
    }

    /// Drops the project's views (the project is being deleted).
    pub async fn delete_project(&self, project: &ProjectId) -> Result<()> {
        self.inner
            .refreshing
            .lock()
            .retain(|(id, _), _| id != project);
        Ok(self.inner.store.delete_project(project).await?)
    }

    async fn stored(&self, project: &ProjectId, table_name: &str) -> Result<StoredView> {
        let name = check_table_name(table_name)?;
        self.inner
            .store
            .get(project, &name)
            .await?
            .ok_or(ViewError::NotFound(name))
    }

    /// A view or a continuous query's hidden view, by its stored name.
    pub(crate) async fn stored_any(&self, project: &ProjectId, name: &str) -> Result<StoredView> {
        self.inner
            .store
            .get(project, name)
            .await?
            .ok_or_else(|| ViewError::NotFound(name.to_string()))
    }

    fn lock_of(&self, project: &ProjectId, table_name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .refreshing
            .lock()
            .entry((project.clone(), table_name.to_string()))
            .or_default()
            .clone()
    }
}

fn mentions_views(sql: &str) -> bool {
    sql.to_ascii_lowercase()
        .contains(rakam_query::MATERIALIZED_SCHEMA)
}
