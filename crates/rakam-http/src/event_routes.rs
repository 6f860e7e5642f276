//! Event collection: every route picks its Source, finds the key before the
//! body, reads the body (limit after gzip, timeout), and hands both to the
//! service.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rakam_common::ErrorCode;
use rakam_ingest::{
    BatchSource, BulkJsonSource, CollectSource, CsvSource, IngestOutcome, NdjsonSource,
    PixelSource, Source,
};
use rakam_server::CollectRequest;
use rakam_store_api::KeyKind;
use serde_json::{json, Value};

use crate::auth::{authorize, authorize_collection};
use crate::body::{media_type, BodyReader};
use crate::client::request_context;
use crate::{ApiError, AppState};

type Params = Query<HashMap<String, String>>;

/// A transparent 1×1 GIF.
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x01, 0x44, 0x00, 0x3b,
];

/// One collection request through its Source.
async fn collect_with(
    source: &'static dyn Source,
    state: &AppState,
    peer: SocketAddr,
    params: HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestOutcome, ApiError> {
    let (limit, limit_key) = source.body_limit(state.rakam.ingest_limits());
    let mut reader = BodyReader::new(headers, body, limit, limit_key, state.body_read_timeout())?
        .holding(state.rakam.admission().ticket())?;
    let authorized =
        authorize_collection(state, headers, &params, &mut reader, source.key_in_body()).await?;
    // The ticket counts the request in flight until it is answered.
    let (body, _ticket) = reader.read_to_end_holding().await?;
    let outcome = state
        .rakam
        .collect(CollectRequest {
            source,
            authorized,
            body,
            params,
            context: request_context(state, peer, headers),
        })
        .await?;
    metrics::counter!("rakam_events_ingested_total", "source" => source.name())
        .increment(outcome.stored as u64);
    Ok(outcome)
}

/// Rakam answers a stored event with a bare `1`.
fn stored_one() -> Response {
    (StatusCode::OK, Json(json!(1))).into_response()
}

pub(crate) async fn collect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    collect_with(&CollectSource, &state, peer, params, &headers, body).await?;
    Ok(stored_one())
}

pub(crate) async fn batch(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let outcome = collect_with(&BatchSource, &state, peer, params, &headers, body).await?;
    if outcome.failed.is_empty() {
        return Ok(stored_one());
    }
    let failed: Vec<usize> = outcome.failed.iter().map(|(index, _)| *index).collect();
    let errors: Vec<Value> = outcome
        .failed
        .iter()
        .map(|(index, error)| json!({"index": index, "error": error.to_string()}))
        .collect();
    Err(ApiError::new(
        ErrorCode::PartialBatchFailure,
        format!(
            "{} of {} events were not stored",
            failed.len(),
            failed.len() + outcome.stored
        ),
    )
    .with_detail("failed", json!(failed))
    .with_detail("errors", Value::Array(errors)))
}

const NDJSON_TYPES: [&str; 5] = [
    "application/x-ndjson",
    "application/x-rawjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
];

fn bulk_source(headers: &HeaderMap) -> Result<&'static dyn Source, ApiError> {
    let kind = media_type(headers);
    if kind.is_empty() || kind == "application/json" {
        return Ok(&BulkJsonSource);
    }
    if kind == "text/csv" {
        return Ok(&CsvSource);
    }
    if NDJSON_TYPES.contains(&kind.as_str()) {
        return Ok(&NdjsonSource);
    }
    Err(ApiError::new(
        ErrorCode::UnsupportedContentType,
        format!(
            "content type {kind:?} is not read by /event/bulk; send application/json, application/x-ndjson or text/csv"
        ),
    ))
}

pub(crate) async fn bulk(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let source = bulk_source(&headers)?;
    let outcome = collect_with(source, &state, peer, params, &headers, body).await?;
    Ok(Json(json!({"success": true, "events": outcome.stored})).into_response())
}

/// `/event/bulk/commit`, which older clients call after bulk loads: a bulk
/// request is committed before it is answered, so there is nothing left to
/// do. The master key is checked as in Rakam.
pub(crate) async fn bulk_commit(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, KeyKind::Master).await?;
    let bytes = crate::body::read_body(&state, &headers, body, 1 << 20, "commit request").await?;
    let _: Value = crate::body::parse_json(&bytes)?;
    Ok(Json(json!({
        "success": true,
        "message": "Nothing to commit: every bulk request is committed before it is answered."
    }))
    .into_response())
}

/// `GET|POST /event/pixel?collection=…&api.api_key=…&prop.<name>=…`.
pub(crate) async fn pixel(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    collect_with(&PixelSource, &state, peer, params, &headers, body).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
        ],
        PIXEL_GIF,
    )
        .into_response())
}
