//! The analyses people install an analytics platform for: funnels,
//! retention, segmentation (the event explorer) and user flows. Each request
//! (Rakam's JSON, unchanged, plus PostHog-style extensions) compiles to one
//! read-only SQL statement over the project, run by the query engine in the
//! project's session, where Rakam's aggregate functions (`rakam-udf`) do the
//! per-user work in one pass. Semantics: `docs/adr/0005-analysis-semantics.md`.

mod context;
mod error;
pub mod explorer;
pub mod flow;
pub mod funnel;
mod result;
pub mod retention;
mod scope;
mod sql;

use std::sync::Arc;

use rakam_query::QueryEngine;
use rakam_store_api::ProjectSnapshot;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use context::ProjectView;
pub use error::{AnalysisError, Result};
pub use scope::{DateRange, PeriodUnit, Span, TimeScope};
pub use sql::{check_filter, TimeReference};

/// The analyses the API offers; one entry point runs any of them from its
/// JSON request, so the HTTP routes and the tests share one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalysisKind {
    Funnel,
    Retention,
    Segmentation,
    Statistics,
    Flow,
}

impl AnalysisKind {
    /// The metric label and the name used in expected-output files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Funnel => "funnel",
            Self::Retention => "retention",
            Self::Segmentation => "explore",
            Self::Statistics => "statistics",
            Self::Flow => "flow",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Funnel,
            Self::Retention,
            Self::Segmentation,
            Self::Statistics,
            Self::Flow,
        ]
        .into_iter()
        .find(|kind| kind.name() == text)
    }
}

/// Collection names are lower-cased wherever a request names one, as they
/// are when events arrive, so `"Order Completed"` finds its events.
fn lower_case_collections(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object.iter_mut() {
                match (key.as_str(), inner) {
                    ("collection", Value::String(name)) => *name = name.to_lowercase(),
                    ("collections", Value::Array(names)) => {
                        for name in names.iter_mut() {
                            if let Value::String(text) = name {
                                *text = text.to_lowercase();
                            }
                        }
                    }
                    (_, inner) => lower_case_collections(inner),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(lower_case_collections),
        _ => {}
    }
}

/// Reads an analysis request as `kind` has it, without running it: what a
/// malformed request fails on before any query (the fuzz targets use it).
pub fn parse_request(kind: AnalysisKind, request: Value) -> Result<()> {
    let mut request = request;
    lower_case_collections(&mut request);
    match kind {
        AnalysisKind::Funnel => typed::<funnel::FunnelRequest>(request).map(drop),
        AnalysisKind::Retention => typed::<retention::RetentionRequest>(request).map(drop),
        AnalysisKind::Segmentation => typed::<explorer::ExplorerRequest>(request).map(drop),
        AnalysisKind::Statistics => typed::<explorer::StatisticsRequest>(request).map(drop),
        AnalysisKind::Flow => typed::<flow::FlowRequest>(request).map(drop),
    }
}

fn typed<T: DeserializeOwned>(request: Value) -> Result<T> {
    serde_json::from_value(request).map_err(|e| AnalysisError::Malformed(e.to_string()))
}

/// The project an analysis runs on: the request's one metadata snapshot.
pub type Project = Arc<ProjectSnapshot>;

#[derive(Debug, Clone)]
pub struct Analyzer {
    engine: QueryEngine,
}

impl Analyzer {
    pub fn new(engine: QueryEngine) -> Self {
        Self { engine }
    }

    /// Runs the analysis `kind` asks for with its JSON request.
    pub async fn run(
        &self,
        kind: AnalysisKind,
        project: &Project,
        request: Value,
    ) -> Result<Value> {
        let mut request = request;
        lower_case_collections(&mut request);
        match kind {
            AnalysisKind::Funnel => self.funnel(project, &typed(request)?).await,
            AnalysisKind::Retention => self.retention(project, &typed(request)?).await,
            AnalysisKind::Segmentation => self.explore(project, &typed(request)?).await,
            AnalysisKind::Statistics => self.statistics(project, &typed(request)?).await,
            AnalysisKind::Flow => self.flow(project, &typed(request)?).await,
        }
    }

    async fn view(&self, project: &Project) -> Result<ProjectView> {
        Ok(ProjectView::new(project))
    }

    /// Runs generated SQL in the project's session (same guard, limits and
    /// timeout as `/query/execute`) and returns the rows as JSON values.
    async fn rows(&self, project: &Project, sql: &str) -> Result<Vec<Vec<Value>>> {
        tracing::debug!(project = %project.project.name, sql, "analysis query");
        let max = self.engine.limits().max_limit;
        let output = self
            .engine
            .execute_in_datafusion(project, sql, Some(max))
            .await?;
        result::json_rows(&output.batches)
    }
}
