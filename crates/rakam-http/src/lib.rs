//! Rakam's HTTP API (axum), wire-compatible with the original Rakam:
//! projects and keys, event collection, SQL, analyses. Handlers are thin: decoding,
//! ingestion and querying live in their own crates.

mod analysis_routes;
mod auth;
mod body;
mod error;
mod event_routes;
mod metrics;
mod project_routes;
mod query_routes;

use std::sync::Arc;

use axum::routing::{any, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use rakam_analysis::AnalysisKind;
use rakam_config::Config;
use rakam_ingest::Ingester;
use rakam_query::QueryEngine;
use rakam_store_api::{Catalog, EventStore};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

pub use error::{status_for, ApiError};
pub use metrics::install_metrics_recorder;

#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn EventStore>,
    pub ingester: Ingester,
    pub query: QueryEngine,
    pub analysis: rakam_analysis::Analyzer,
    pub metrics: Option<PrometheusHandle>,
}

pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(std::time::Duration::from_secs(3600));
    Router::new()
        .route("/project/create", post(project_routes::create))
        .route("/project/list", any(project_routes::list))
        .route("/project/delete", any(project_routes::delete))
        .route(
            "/project/create-api-keys",
            post(project_routes::create_api_keys),
        )
        .route("/project/collection", post(project_routes::collections))
        .route("/project/schema", post(project_routes::schema))
        .route("/project/schema/add", post(project_routes::add_fields))
        .route("/project/stats", post(project_routes::stats))
        .route("/event/collect", post(event_routes::collect))
        .route("/event/batch", post(event_routes::batch))
        .route("/event/bulk", post(event_routes::bulk))
        .route(
            "/event/pixel",
            get(event_routes::pixel).post(event_routes::pixel),
        )
        .route("/query/execute", post(query_routes::execute))
        .route("/query/export", post(query_routes::export))
        .route("/query/metadata", post(query_routes::metadata))
        .route(
            "/funnel/analyze",
            analysis_routes::route(AnalysisKind::Funnel),
        )
        .route("/funnel/segments", get(analysis_routes::funnel_segments))
        .route(
            "/retention/analyze",
            analysis_routes::route(AnalysisKind::Retention),
        )
        .route(
            "/event-explorer/analyze",
            analysis_routes::route(AnalysisKind::Segmentation),
        )
        .route(
            "/event-explorer/statistics",
            analysis_routes::route(AnalysisKind::Statistics),
        )
        .route(
            "/event-explorer/extra_dimensions",
            get(analysis_routes::extra_dimensions),
        )
        .route("/flow/analyze", analysis_routes::route(AnalysisKind::Flow))
        .route("/metrics", get(metrics::render))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(|| async {
            ApiError::new(
                rakam_common::ErrorCode::MalformedRequest,
                "no such endpoint",
            )
            .with_detail("status", serde_json::json!(404))
        })
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(cors)
        .with_state(state)
}
