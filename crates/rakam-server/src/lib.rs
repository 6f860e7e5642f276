//! The `Rakam` service: everything the API does, with no protocol in it.
//! The HTTP crate and the CLI translate requests into these calls; a second
//! protocol (a PostgreSQL wire endpoint) would only translate too.
//!
//! ```text
//! protocol ─▶ Rakam ─▶ authenticate ─▶ snapshot (one per request)
//!                   ├▶ Pipeline (rakam-ingest) ─▶ sink ─▶ observers
//!                   ├▶ QueryEngine (rakam-query) ─▶ table source / native SQL
//!                   └▶ Analyzer (rakam-analysis) ─▶ QueryEngine
//! ```

mod admission;
mod collect;
mod error;
mod live;
mod projects;
mod storage;
mod views;

use std::sync::Arc;

use rakam_analysis::{AnalysisKind, Analyzer};
use rakam_config::Config;
use rakam_ingest::{IngestLimits, Pipeline};
use rakam_query::{QueryEngine, QueryLimits, QueryOutput, QueryStream};
use rakam_store_api::{Backend, KeyKind, ProjectInfo, ProjectSnapshot};
use rakam_views::Views;
use serde_json::Value;

pub use admission::{Admission, Ticket};
pub use collect::CollectRequest;
pub use error::ServiceError;
pub use live::{LiveStream, StreamCollection, StreamFrame, StreamRequest, Subscription};
pub use projects::{constant_time_eq, CollectionDescription};
pub use storage::{embedded_options, open_backend, postgres_options};

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Rakam {
    config: Arc<Config>,
    backend: Backend,
    pipeline: Pipeline,
    query: QueryEngine,
    analyzer: Analyzer,
    admission: Admission,
    live: Arc<LiveStream>,
    views: Views,
}

pub fn ingest_limits(config: &Config) -> IngestLimits {
    IngestLimits::from(&config.limits)
}

pub fn query_limits(config: &Config) -> QueryLimits {
    QueryLimits::from(&config.query)
}

impl Rakam {
    /// Opens the backend the config names and starts the service.
    pub async fn open(config: Config) -> Result<Self> {
        let backend = open_backend(&config).await?;
        tracing::info!(backend = backend.name, "store opened");
        Self::start(config, backend, Pipeline::new).await
    }

    /// The service over an assembled backend; `pipeline` builds the ingest
    /// pipeline from the catalog, the sink and the limits (to add mappers
    /// and observers). Observers are replayed what they missed first.
    pub async fn start(
        config: Config,
        backend: Backend,
        pipeline: impl FnOnce(
            Arc<dyn rakam_store_api::Catalog>,
            Arc<dyn rakam_store_api::EventSink>,
            IngestLimits,
        ) -> Pipeline,
    ) -> Result<Self> {
        let live = Arc::new(LiveStream::new(config.stream.clone()));
        let query = QueryEngine::new(&backend, query_limits(&config))?;
        let views = Views::new(
            backend.views.clone(),
            backend.sink.clone(),
            backend.catalog.clone(),
            query.clone(),
        );
        let pipeline = pipeline(
            backend.catalog.clone(),
            backend.sink.clone(),
            ingest_limits(&config),
        )
        .with_observer(live.clone())
        .with_observer(Arc::new(views::AppendsForViews(views.clone())));
        let replayed = pipeline.start().await?;
        if replayed > 0 {
            tracing::info!(replayed, "append observers caught up");
        }
        views.start().await?;
        Ok(Self {
            views,
            admission: Admission::new(config.limits.max_inflight_bytes),
            config: Arc::new(config),
            analyzer: Analyzer::new(query.clone()),
            backend,
            pipeline,
            query,
            live,
        })
    }

    /// A live-stream subscription of the project (`/stream/subscribe`).
    pub async fn subscribe(
        &self,
        project: &ProjectInfo,
        request: StreamRequest,
    ) -> Result<Subscription> {
        let snapshot = self.snapshot(project).await?;
        self.live.subscribe(&snapshot, request)
    }

    /// Ends every live-stream subscription and refuses new ones (shutdown).
    pub fn close_streams(&self) {
        self.live.close();
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The budget of request bytes in flight (`limits.max_inflight_bytes`).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Bytes the running queries hold against `query.memory_limit_bytes`.
    pub fn query_memory_in_use(&self) -> usize {
        self.query.memory_in_use()
    }

    pub fn ingest_limits(&self) -> &IngestLimits {
        self.pipeline.limits()
    }

    /// The project a key belongs to, if the key grants `required`. `name`
    /// says where the key came from, for the error message.
    pub async fn authenticate(
        &self,
        key: &str,
        required: KeyKind,
        name: &str,
    ) -> Result<ProjectInfo> {
        if key.is_empty() {
            return Err(ServiceError::MissingKey(format!("{name} is missing")));
        }
        match self.backend.catalog.authenticate(key).await? {
            Some((project, kind)) if kind.grants(required) => Ok(project),
            Some(_) => Err(ServiceError::InvalidKey(format!(
                "{name} is not a {} of this project",
                required.parameter_name()
            ))),
            None => Err(ServiceError::InvalidKey(format!("{name} is invalid"))),
        }
    }

    /// The project's metadata for one request: ingest, the query session
    /// and the analyzer of the request all read this one snapshot.
    pub async fn snapshot(&self, project: &ProjectInfo) -> Result<Arc<ProjectSnapshot>> {
        Ok(self.backend.catalog.snapshot(&project.id).await?)
    }

    /// Runs a read-only statement within the row limit and the timeout.
    pub async fn execute(
        &self,
        project: &ProjectInfo,
        sql: &str,
        limit: Option<u64>,
    ) -> Result<QueryOutput> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.query.execute(&snapshot, sql, limit).await?)
    }

    /// Like [`Self::execute`], handing out batches as they are computed.
    pub async fn execute_stream(
        &self,
        project: &ProjectInfo,
        sql: &str,
        limit: Option<u64>,
    ) -> Result<QueryStream> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.query.execute_stream(&snapshot, sql, limit).await?)
    }

    /// The columns a statement would return, without running it.
    pub async fn metadata(
        &self,
        project: &ProjectInfo,
        sql: &str,
    ) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.query.metadata(&snapshot, sql).await?)
    }

    /// Runs a funnel, retention, segmentation or flow from its JSON request.
    pub async fn analyze(
        &self,
        kind: AnalysisKind,
        project: &ProjectInfo,
        request: Value,
    ) -> Result<Value> {
        let snapshot = self.snapshot(project).await?;
        Ok(self.analyzer.run(kind, &snapshot, request).await?)
    }

    /// What an operator should know although the server works (damage it
    /// was told to start despite).
    pub fn notices(&self) -> Vec<String> {
        self.backend.sink.notices()
    }

    /// Why the server cannot store events until it restarts, if it cannot.
    pub fn health(&self) -> Result<(), String> {
        match self.backend.sink.failure() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Stops the running queries and refuses new ones: the first step of
    /// shutting down, so that no query holds the server up.
    pub fn stop_queries(&self) {
        self.query.stop();
    }

    /// Finishes pending work and makes everything durable in its long-term
    /// form.
    pub async fn shutdown(&self) -> Result<()> {
        self.views.stop().await;
        self.query.stop();
        Ok(self.backend.sink.shutdown().await?)
    }
}
