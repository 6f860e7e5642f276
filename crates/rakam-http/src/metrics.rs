//! Prometheus metrics at `/metrics`.

use std::time::Instant;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use rakam_common::ErrorCode;

use crate::client::is_local_client;
use crate::{ApiError, AppState};

/// Installs the process-wide recorder; call once at start-up.
pub fn install_metrics_recorder() -> Option<PrometheusHandle> {
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "metrics recorder not installed");
            None
        }
    }
}

/// Metrics tell how busy every project is: they need the configured token,
/// or a client on this machine.
fn may_read(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    let token = &state.rakam.config().server.metrics_token;
    if token.is_empty() {
        return is_local_client(state, peer, headers);
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| rakam_server::constant_time_eq(given.trim(), token))
}

pub(crate) async fn render(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !may_read(&state, peer, &headers) {
        return ApiError::new(
            ErrorCode::Forbidden,
            "metrics need server.metrics_token (Authorization: Bearer …) or a client on the server's own machine",
        )
        .into_response();
    }
    metrics::gauge!("rakam_inflight_request_bytes")
        .set(state.rakam.admission().in_flight_bytes() as f64);
    metrics::gauge!("rakam_query_memory_bytes").set(state.rakam.query_memory_in_use() as f64);
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        )
            .into_response(),
        None => (axum::http::StatusCode::NOT_FOUND, "metrics are disabled").into_response(),
    }
}

pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("rakam_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("rakam_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
