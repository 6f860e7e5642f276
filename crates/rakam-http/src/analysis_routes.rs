//! Funnels, retention, segmentation and flows: read key, JSON body in,
//! Rakam's `QueryResult` out. The work is in `rakam-analysis`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{post, MethodRouter};
use axum::Json;
use rakam_analysis::{explorer, AnalysisError, AnalysisKind};
use rakam_store_api::KeyKind;
use serde_json::Value;

use crate::auth::authorize;
use crate::body::{parse_json, read_body};
use crate::{ApiError, AppState};

const ANALYSIS_BODY_LIMIT: usize = 1 << 20;

impl From<AnalysisError> for ApiError {
    fn from(error: AnalysisError) -> Self {
        match error {
            AnalysisError::Query(inner) => Self::from(inner),
            other => Self::from_error(&other),
        }
    }
}

/// The POST route of one analysis.
pub(crate) fn route(kind: AnalysisKind) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              Query(params): Query<HashMap<String, String>>,
              headers: HeaderMap,
              body: Body| analyze(kind, state, params, headers, body),
    )
}

async fn analyze(
    kind: AnalysisKind,
    state: AppState,
    params: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    let bytes = read_body(
        &state,
        &headers,
        body,
        ANALYSIS_BODY_LIMIT,
        "analysis request",
    )
    .await?;
    let request: Value = parse_json(&bytes)?;
    let answer = state.rakam.analyze(kind, &project, request).await?;
    metrics::histogram!("rakam_analysis_duration_seconds", "kind" => kind.name())
        .record(started.elapsed().as_secs_f64());
    Ok(Json(answer))
}

pub(crate) async fn funnel_segments() -> Json<Value> {
    Json(explorer::funnel_segments())
}

pub(crate) async fn extra_dimensions() -> Json<Value> {
    Json(explorer::extra_dimensions())
}
