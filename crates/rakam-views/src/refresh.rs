//! A refresh: the events up to a server-time barrier, the view's query over
//! them (all of them, or only those after what the view covers), and one
//! commit of the rows with the state that says what they cover. A refresh
//! that fails or is cut short by a crash commits nothing; the next one
//! starts from the same state, so no event is counted twice or missed.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use parking_lot::Mutex;
use rakam_query::{QueryError, ReceivedWindow};
use rakam_store_api::{
    ProjectId, ProjectSnapshot, StoreError, StoredView, ViewState, ViewWrite, ViewWriteMode,
};

use crate::{continuous, Result, ViewError, Views, RETRY_AFTER_MS};

/// Why a refresh runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// Asked for: runs even when the view is fresh; waits for a running one.
    Request,
    /// A reader needs the first build: waits; nothing to do once built.
    FirstRead,
    /// The background round: only stale views, never waits for a lock.
    Background,
}

/// A continuous query with nothing new seen is still refreshed this often.
const QUIET_REFRESH_MS: i64 = 60_000;

pub(crate) fn now_ms() -> i64 {
    rakam_common::time::now_millis()
}

pub(crate) fn is_stale(view: &StoredView, now: i64) -> bool {
    let interval = view.definition.update_interval_secs;
    match view.state.last_update_ms {
        None => true,
        Some(_) if interval == 0 => false,
        Some(last) => now.saturating_sub(last) >= (interval as i64).saturating_mul(1000),
    }
}

impl Views {
    /// The view, built first if it never was.
    pub(crate) async fn ensure_built(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
    ) -> Result<StoredView> {
        let view = self.stored_any(project.id(), name).await?;
        if view.state.generation > 0 {
            return Ok(view);
        }
        self.refresh_view(project, name, Trigger::FirstRead).await?;
        self.stored_any(project.id(), name).await
    }

    pub(crate) async fn refresh_view(
        &self,
        project: &Arc<ProjectSnapshot>,
        name: &str,
        trigger: Trigger,
    ) -> Result<()> {
        let asked_at = now_ms();
        let lock = self.lock_of(project.id(), name);
        let _held = match trigger {
            Trigger::Background => match lock.try_lock_owned() {
                Ok(held) => held,
                Err(_) => return Ok(()),
            },
            Trigger::Request | Trigger::FirstRead => lock.lock_owned().await,
        };
        let view = self.stored_any(project.id(), name).await?;
        let due = match trigger {
            Trigger::Request => true,
            Trigger::FirstRead => view.state.generation == 0,
            Trigger::Background => is_stale(&view, now_ms()),
        };
        if !due {
            return Ok(());
        }
        let key = (project.id().clone(), name.to_string());
        // Readers queued behind a first build that failed get its error
        // rather than running the same build again, one after another.
        if trigger == Trigger::FirstRead {
            if let Some((at, message)) = self.inner.failures.lock().get(&key) {
                if *at >= asked_at {
                    return Err(ViewError::Invalid(format!(
                        "the first build of materialized view {name} failed: {message}"
                    )));
                }
            }
        }
        let started = Instant::now();
        let result = self.refresh_locked(project, view).await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!("rakam_view_refreshes_total", "outcome" => outcome).increment(1);
        metrics::histogram!("rakam_view_refresh_seconds").record(started.elapsed().as_secs_f64());
        match &result {
            Ok(state) => {
                self.inner.failures.lock().remove(&key);
                tracing::debug!(
                    view = name,
                    rows = state.rows,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "materialized view refreshed"
                );
            }
            Err(error) => {
                self.inner
                    .failures
                    .lock()
                    .insert(key, (now_ms(), error.to_string()));
            }
        }
        result.map(|_| ())
    }

    async fn refresh_locked(
        &self,
        project: &Arc<ProjectSnapshot>,
        view: StoredView,
    ) -> Result<ViewState> {
        let continuous = continuous::spec_of(&view.definition);
        // A continuous query created without replay counts the events
        // received after its creation only, also when rebuilt; its window
        // never ends before that, even if a clock runs behind.
        let start = continuous
            .as_ref()
            .filter(|spec| !spec.replay)
            .map(|spec| spec.created_at_ms);
        let floor = view
            .state
            .covered_through_ms
            .unwrap_or(i64::MIN)
            .max(start.unwrap_or(i64::MIN));
        let through = self
            .inner
            .sink
            .server_time_barrier(project.id(), floor)
            .await?;
        // After the barrier: every collection an event up to it went to.
        let snapshot = self.inner.catalog.snapshot(project.id()).await?;
        let covered = view.state.covered_through_ms;
        let incremental = view.definition.incremental && view.schema.is_some() && covered.is_some();
        if incremental {
            match self
                .write(&snapshot, &view, covered, through, ViewWriteMode::Append)
                .await
            {
                Err(ViewError::Store(StoreError::ViewColumnsChanged(_))) => {
                    tracing::info!(view = %view.definition.table_name, "the view's columns changed: rebuilding it whole");
                }
                Ok(state) => {
                    return Ok(match continuous {
                        Some(spec) => self.compact_if_grown(&snapshot, &spec, state).await,
                        None => state,
                    })
                }
                other => return other,
            }
        }
        self.write(&snapshot, &view, start, through, ViewWriteMode::Replace)
            .await
    }

    async fn write(
        &self,
        snapshot: &Arc<ProjectSnapshot>,
        view: &StoredView,
        after_ms: Option<i64>,
        through_ms: i64,
        mode: ViewWriteMode,
    ) -> Result<ViewState> {
        let window = ReceivedWindow {
            after_ms,
            through_ms: Some(through_ms),
        };
        let mut engine = self.inner.engine.for_view_query(window);
        if continuous::spec_of(&view.definition).is_some() {
            engine = engine.in_datafusion();
        }
        let stream = engine
            .execute_stream(snapshot, &view.definition.query, None)
            .await?;
        // The store sees its own error type; the query's error is kept to
        // report with its own code.
        let failure: Arc<Mutex<Option<QueryError>>> = Arc::new(Mutex::new(None));
        let seen = failure.clone();
        let batches = stream
            .batches
            .map(move |batch| {
                batch.map_err(|error| {
                    let message = error.to_string();
                    *seen.lock() = Some(error);
                    StoreError::Data(message)
                })
            })
            .boxed();
        let write = ViewWrite {
            mode,
            expected_generation: view.state.generation,
            schema: stream.schema,
            batches,
            state: ViewState {
                generation: view.state.generation + 1,
                last_update_ms: Some(now_ms()),
                covered_through_ms: Some(through_ms),
                rows: 0,
            },
        };
        let written = self
            .inner
            .store
            .write(snapshot.id(), &view.definition.table_name, write)
            .await;
        let query_failure = failure.lock().take();
        match (written, query_failure) {
            (Ok(state), _) => Ok(state),
            (Err(_), Some(query_error)) => Err(ViewError::Query(query_error)),
            (Err(error), None) => Err(ViewError::Store(error)),
        }
    }

    /// Whether a continuous query has nothing new to store: this process
    /// saw no append of its project after what it covers (an append is
    /// seen after it is stamped, so one seen before the coverage is in it).
    /// Appends through other servers on a shared store are not seen: the
    /// query is refreshed at least every `QUIET_REFRESH_MS` anyway. Reads
    /// are current either way; this only saves idle refreshes.
    fn quiet(&self, project: &ProjectId, view: &StoredView, now: i64) -> bool {
        let (Some(covered), Some(last)) =
            (view.state.covered_through_ms, view.state.last_update_ms)
        else {
            return false;
        };
        if now.saturating_sub(last) >= QUIET_REFRESH_MS {
            return false;
        }
        let seen = self
            .inner
            .appends
            .lock()
            .get(project)
            .copied()
            .unwrap_or(self.inner.started_at_ms);
        seen <= covered
    }

    /// Whether the view's last refresh failed less than a minute ago.
    pub(crate) fn failed_recently(&self, project: &ProjectId, name: &str) -> bool {
        self.inner
            .failures
            .lock()
            .get(&(project.clone(), name.to_string()))
            .is_some_and(|(at, _)| now_ms() - at < RETRY_AFTER_MS)
    }

    /// One round of the background refresher: every stale view (or one
    /// never built), one at a time.
    pub(crate) async fn refresh_stale(&self) {
        let all = match self.inner.store.list_all().await {
            Ok(all) => all,
            Err(error) => {
                tracing::warn!(%error, "cannot list the materialized views to refresh");
                return;
            }
        };
        for (project, view) in all {
            if *self.inner.stopping.borrow() {
                return;
            }
            let now = now_ms();
            if !is_stale(&view, now) {
                continue;
            }
            if self.failed_recently(&project, &view.definition.table_name) {
                continue;
            }
            if continuous::spec_of(&view.definition).is_some() && self.quiet(&project, &view, now) {
                continue;
            }
            let snapshot = match self.inner.catalog.snapshot(&project).await {
                Ok(snapshot) => snapshot,
                Err(_) => continue,
            };
            if let Err(error) = self
                .refresh_view(&snapshot, &view.definition.table_name, Trigger::Background)
                .await
            {
                tracing::warn!(view = %view.definition.table_name, %error, "refreshing a materialized view failed; retried in a minute");
            }
        }
    }
}
