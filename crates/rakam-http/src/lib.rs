//! Rakam's HTTP API (axum), wire-compatible with the original Rakam:
//! projects and keys, event collection, SQL, analyses. Handlers only
//! translate: they read the request (keys before bodies, streamed gzip),
//! call the `Rakam` service, and shape its answer.

mod analysis_routes;
mod auth;
mod body;
pub use body::BodyReader;
mod body_key;
mod client;
mod continuous_routes;
mod error;
mod event_routes;
mod metrics;
mod project_routes;
mod query_routes;
mod request;
mod server;
mod stream_routes;
mod view_routes;

use std::sync::Arc;

use axum::routing::{any, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use rakam_analysis::AnalysisKind;
use rakam_server::Rakam;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

pub use error::{status_for, ApiError};
pub use metrics::install_metrics_recorder;
pub use server::{serve, ServerLimits};

#[derive(Debug, Clone)]
pub struct AppState {
    pub rakam: Rakam,
    pub metrics: Option<PrometheusHandle>,
    /// `server.trusted_proxies`, parsed.
    pub(crate) trusted_proxies: Arc<Vec<(std::net::IpAddr, u8)>>,
}

impl AppState {
    pub fn new(rakam: Rakam, metrics: Option<PrometheusHandle>) -> Self {
        let trusted_proxies = rakam
            .config()
            .server
            .trusted_proxies
            .iter()
            .filter_map(|proxy| rakam_config::parse_network(proxy))
            .collect();
        Self {
            rakam,
            metrics,
            trusted_proxies: Arc::new(trusted_proxies),
        }
    }

    pub(crate) fn body_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.rakam.config().server.body_read_timeout_secs)
    }
}

/// A panic in a handler is a bug: answer 500 and log it; the process and
/// the other requests go on.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    tracing::error!(panic = message, "a request panicked");
    ::metrics::counter!("rakam_request_panics_total").increment(1);
    axum::response::IntoResponse::into_response(ApiError::new(
        rakam_common::ErrorCode::Internal,
        "the server could not complete the request; see the server log",
    ))
}

/// Answers a panic anywhere in `router` with a 500.
fn with_panic_guard<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        panic_response,
    ))
}

/// 200 while the server can store events; 503 once its log refuses every
/// write until a restart (a failed fsync), so a load balancer or an
/// orchestrator takes it out and restarts it.
async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.rakam.health() {
        Ok(()) => {
            let notices = state.rakam.notices();
            if notices.is_empty() {
                axum::Json(serde_json::json!({"status": "ok"})).into_response()
            } else {
                axum::Json(serde_json::json!({"status": "degraded", "notices": notices}))
                    .into_response()
            }
        }
        Err(failure) => {
            let mut response = ApiError::new(
                rakam_common::ErrorCode::Unavailable,
                format!("the server cannot store events until it restarts: {failure}"),
            )
            .into_response();
            response
                .headers_mut()
                .remove(axum::http::header::RETRY_AFTER);
            response
        }
    }
}

pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(std::time::Duration::from_secs(3600));
    let routes = Router::new()
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
        .route("/event/bulk/commit", post(event_routes::bulk_commit))
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
        .route("/stream/subscribe", get(stream_routes::subscribe))
        .route("/materialized-view/create", post(view_routes::create))
        .route("/materialized-view/list", any(view_routes::list))
        .route("/materialized-view/get", post(view_routes::get))
        .route("/materialized-view/schema", post(view_routes::schema))
        .route("/materialized-view/delete", post(view_routes::delete))
        .route("/materialized-view/change", post(view_routes::change))
        .route("/materialized-view/refresh", post(view_routes::refresh))
        .route("/continuous-query/create", post(continuous_routes::create))
        .route("/continuous-query/list", any(continuous_routes::list))
        .route("/continuous-query/get", post(continuous_routes::get))
        .route("/continuous-query/schema", post(continuous_routes::schema))
        .route("/continuous-query/delete", post(continuous_routes::delete))
        .route("/continuous-query/test", post(continuous_routes::test))
        .route("/realtime/create", post(continuous_routes::create_realtime))
        .route("/realtime/list", any(continuous_routes::list_realtime))
        .route("/realtime/get", post(continuous_routes::get_realtime))
        .route("/realtime/delete", post(continuous_routes::delete_realtime))
        .route("/metrics", get(metrics::render))
        .route("/health", get(health))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::new(
                rakam_common::ErrorCode::UnknownEndpoint,
                format!("no endpoint has the path {}", uri.path()),
            )
        })
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(cors);
    with_panic_guard(routes).with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panic_in_a_handler_is_a_500_not_a_dead_connection() {
        let app: Router = with_panic_guard(Router::new().route(
            "/boom",
            get(|| async {
                let empty: Vec<u8> = Vec::new();
                #[allow(clippy::unwrap_used)]
                let first = empty.first().copied().unwrap();
                first.to_string()
            }),
        ));
        let request = Request::get("/boom").body(Body::empty()).expect("request");
        let response = app.oneshot(request).await.expect("a response");
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error_code"], serde_json::json!(5003));
    }
}
