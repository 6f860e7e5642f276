//! Where queries run: on their own threads, apart from ingest and the HTTP
//! front (as GreptimeDB keeps query and ingest runtimes apart), at a lower
//! scheduling priority, so a CPU-bound query slows other queries but never
//! the collection of events or `/health`. A query that times out, whose
//! client leaves, or that is running when the server stops is aborted: its
//! task and DataFusion's tasks under it are dropped at their next yield,
//! and DataFusion's operators yield between batches.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rakam_store_api::ProjectId;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::complexity::QUERY_THREAD_STACK_BYTES;
use crate::QueryError;

/// How much lower than ingest queries are scheduled (a `nice` value).
const QUERY_THREAD_NICENESS: i32 = 10;

#[derive(Debug)]
pub(crate) struct QueryRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    stopping: watch::Sender<bool>,
}

impl QueryRuntime {
    pub(crate) fn start(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .thread_name("rakam-query")
            // The statement guard's depth limit is sized against this stack.
            .thread_stack_size(QUERY_THREAD_STACK_BYTES)
            .on_thread_start(lower_priority)
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
            stopping: watch::channel(false).0,
        })
    }

    pub(crate) fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.as_ref().map(tokio::runtime::Runtime::handle)
    }

    /// Ends every running query with "shutting down", and refuses new ones.
    pub(crate) fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves when the server starts shutting down.
    pub(crate) fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.stopping.subscribe();
        async move {
            let _ = receiver.wait_for(|stopping| *stopping).await;
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, and panics when that
        // happens on an async worker: a query stuck in a long computation
        // must not hold up the process either.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux the nice value belongs to a thread: given a thread id,
    // PRIO_PROCESS sets that thread's alone.
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), QUERY_THREAD_NICENESS) {
        tracing::debug!(%error, "could not lower the priority of a query thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Queries a project may run at once (`query.max_concurrent_per_project`):
/// one tenant's dashboard cannot take every query thread. A query waits for
/// a slot within its statement timeout.
#[derive(Debug)]
pub(crate) struct ProjectSlots {
    per_project: usize,
    semaphores: Mutex<HashMap<ProjectId, Arc<Semaphore>>>,
}

impl ProjectSlots {
    pub(crate) fn new(per_project: usize) -> Self {
        Self {
            per_project: per_project.max(1),
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) async fn acquire(
        &self,
        project: &ProjectId,
        deadline: tokio::time::Instant,
        timeout_seconds: u64,
    ) -> Result<OwnedSemaphorePermit, QueryError> {
        let semaphore = self
            .semaphores
            .lock()
            .entry(project.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_project)))
            .clone();
        match tokio::time::timeout_at(deadline, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(QueryError::ShuttingDown),
            Err(_) => Err(QueryError::QueueTimeout {
                seconds: timeout_seconds,
                slots: self.per_project,
            }),
        }
    }
}
