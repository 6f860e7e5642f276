//! A DataFusion query on the query threads. The caller (an HTTP worker)
//! keeps the clock: it counts the time it waits for each batch against the
//! statement timeout, so a stuck computation cannot hold its timer up, and
//! aborts the query task when the time is up, when it stops reading (the
//! client left), or when the server stops.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::StreamExt;
use rakam_store_api::ProjectSnapshot;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;

use crate::engine::{QueryEngine, QueryStream};
use crate::runtime::QueryRuntime;
use crate::QueryError;

/// Batches computed ahead of a slow reader.
const BATCHES_AHEAD: usize = 2;

enum Produced {
    Schema(SchemaRef),
    Batch(RecordBatch),
}

/// A task on the query threads, aborted when the caller lets go of it.
struct QueryTask<T>(JoinHandle<T>);

impl<T> Drop for QueryTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for QueryTask<T> {
    type Output = Result<T, QueryError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(context)
            .map_err(|e| QueryError::Execution(format!("the query task failed: {e}")))
    }
}

pub(crate) struct RunningQuery {
    pub(crate) engine: QueryEngine,
    pub(crate) project: Arc<ProjectSnapshot>,
    pub(crate) sql: String,
    pub(crate) limit: Option<u64>,
    pub(crate) environment: Arc<RuntimeEnv>,
}

impl RunningQuery {
    /// Plans and runs the statement on `handle`, holding `slot` until the
    /// work is over; returns once the columns are known.
    pub(crate) async fn spawn(
        self,
        handle: &tokio::runtime::Handle,
        slot: OwnedSemaphorePermit,
        deadline: tokio::time::Instant,
        timeout: Duration,
        runtime: Arc<QueryRuntime>,
    ) -> Result<QueryStream, QueryError> {
        let (sender, mut receiver) = mpsc::channel(BATCHES_AHEAD);
        let task = QueryTask(handle.spawn(async move {
            let _slot = slot;
            self.produce(sender).await;
        }));
        let timed_out = move || QueryError::Timeout {
            seconds: timeout.as_secs(),
        };
        let first = tokio::select! {
            first = tokio::time::timeout_at(deadline, receiver.recv()) => first,
            () = runtime.stopping() => return Err(QueryError::ShuttingDown),
        };
        let schema = match first.map_err(|_| timed_out())? {
            Some(Ok(Produced::Schema(schema))) => schema,
            Some(Err(error)) => return Err(error),
            Some(Ok(Produced::Batch(_))) | None => {
                return Err(QueryError::Execution(
                    "the query ended without a result".into(),
                ))
            }
        };
        // The timeout counts time spent computing batches, not time spent
        // waiting for a slow client to take them.
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
        let batches = futures::stream::unfold(Some((receiver, task, budget)), move |state| {
            let stopping = runtime.stopping();
            async move {
                let (mut receiver, task, budget) = state?;
                let started = Instant::now();
                let next = tokio::select! {
                    next = tokio::time::timeout(budget, receiver.recv()) => next,
                    () = stopping => return Some((Err(QueryError::ShuttingDown), None)),
                };
                match next {
                    Err(_) => Some((Err(timed_out()), None)),
                    Ok(None) => None,
                    Ok(Some(Ok(Produced::Batch(batch)))) => {
                        let left = budget.saturating_sub(started.elapsed());
                        Some((Ok(batch), Some((receiver, task, left))))
                    }
                    Ok(Some(Ok(Produced::Schema(_)))) => None,
                    Ok(Some(Err(error))) => Some((Err(error), None)),
                }
            }
        })
        .boxed();
        Ok(QueryStream { schema, batches })
    }

    async fn produce(self, sender: mpsc::Sender<Result<Produced, QueryError>>) {
        let redactor = self.engine.redactor(&self.project);
        let started = async {
            let (frame, is_explain) = self
                .engine
                .plan(
                    &self.project,
                    &self.sql,
                    self.limit,
                    self.environment.clone(),
                )
                .await?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let stream = frame
                .execute_stream()
                .await
                .map_err(QueryError::from_datafusion)?;
            Ok::<_, QueryError>((schema, stream, is_explain))
        };
        let (schema, mut stream, is_explain) = match started.await {
            Ok(started) => started,
            Err(error) => {
                let _ = sender.send(Err(redactor.error(error))).await;
                return;
            }
        };
        if sender.send(Ok(Produced::Schema(schema))).await.is_err() {
            return;
        }
        while let Some(batch) = stream.next().await {
            let batch = match batch.map_err(QueryError::from_datafusion) {
                Ok(batch) if is_explain => redactor.batch(batch),
                other => other,
            };
            let batch = batch.map(Produced::Batch).map_err(|e| redactor.error(e));
            let failed = batch.is_err();
            if sender.send(batch).await.is_err() || failed {
                return;
            }
        }
    }
}

impl QueryEngine {
    /// Plans a statement on the query threads without running it, within
    /// the statement timeout.
    pub(crate) async fn plan_only(
        &self,
        project: &Arc<ProjectSnapshot>,
        sql: &str,
    ) -> Result<SchemaRef, QueryError> {
        let timeout = self.limits().statement_timeout;
        let (handle, environment, _) = self.query_environment()?;
        let engine = self.clone();
        let (project, sql) = (project.clone(), sql.to_string());
        let planned = QueryTask(handle.spawn(async move {
            let (frame, _) = engine.plan(&project, &sql, None, environment).await?;
            Ok::<SchemaRef, QueryError>(Arc::new(frame.schema().as_arrow().clone()))
        }));
        match tokio::time::timeout(timeout, planned).await {
            Ok(planned) => planned?,
            Err(_) => Err(QueryError::Timeout {
                seconds: timeout.as_secs(),
            }),
        }
    }
}
