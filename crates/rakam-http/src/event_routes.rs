use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rakam_common::ErrorCode;
use rakam_ingest::{
    decode_batch, decode_csv, decode_event, decode_ndjson, typed_from_text, CsvOptions, EventInput,
    IngestError,
};
use rakam_model::normalize_collection_name;
use rakam_store_api::{KeyKind, ProjectInfo};
use serde_json::{json, Map, Value};

use crate::auth::{authorize, authorize_body_key, authorize_collection};
use crate::body::{media_type, off_async, BodyReader};
use crate::{ApiError, AppState};

type Params = Query<HashMap<String, String>>;

/// A transparent 1×1 GIF.
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x01, 0x44, 0x00, 0x3b,
];

fn record_ingested(count: usize) {
    metrics::counter!("rakam_events_ingested_total").increment(count as u64);
}

/// Rakam answers a stored event with a bare `1`.
fn stored_one() -> Response {
    (StatusCode::OK, Json(json!(1))).into_response()
}

async fn ingest_all(
    state: &AppState,
    project: &ProjectInfo,
    events: Vec<EventInput>,
) -> Result<usize, ApiError> {
    let inputs = events.into_iter().map(Ok).collect();
    let outcome = state.ingester.ingest(project, inputs, true).await?;
    record_ingested(outcome.stored);
    Ok(outcome.stored)
}

fn reader(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    limit_key: &'static str,
) -> Result<BodyReader, ApiError> {
    BodyReader::new(headers, body, limit, limit_key, state.body_read_timeout())
}

pub(crate) async fn collect(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = &state.config.limits;
    let mut reader = reader(
        &state,
        &headers,
        body,
        limits.max_request_bytes,
        "limits.max_request_bytes",
    )?;
    let authorized = authorize_collection(&state, &headers, &params, &mut reader, true).await?;
    let bytes = reader.read_to_end().await?;
    if bytes.len() > limits.max_event_bytes {
        return Err(IngestError::EventTooLarge {
            actual: bytes.len(),
            limit: limits.max_event_bytes,
        }
        .into());
    }
    let envelope = off_async(move || decode_event(&bytes)).await??;
    let project = authorized
        .confirm(&state, envelope.api.api_key.as_deref())
        .await?;
    ingest_all(&state, &project, vec![envelope.event]).await?;
    Ok(stored_one())
}

pub(crate) async fn batch(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = &state.config.limits;
    let mut reader = reader(
        &state,
        &headers,
        body,
        limits.max_request_bytes,
        "limits.max_request_bytes",
    )?;
    let authorized = authorize_collection(&state, &headers, &params, &mut reader, true).await?;
    let bytes = reader.read_to_end().await?;
    let ingest_limits = state.ingester.limits().clone();
    let request = off_async(move || decode_batch(&bytes, &ingest_limits)).await??;
    let project = authorized
        .confirm(&state, request.api.api_key.as_deref())
        .await?;
    let outcome = state
        .ingester
        .ingest(&project, request.events, false)
        .await?;
    record_ingested(outcome.stored);
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

pub(crate) async fn bulk(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let kind = media_type(&headers);
    let is_json = kind.is_empty() || kind == "application/json";
    if !is_json && kind != "text/csv" && !NDJSON_TYPES.contains(&kind.as_str()) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedContentType,
            format!(
                "content type {kind:?} is not read by /event/bulk; send application/json, application/x-ndjson or text/csv"
            ),
        ));
    }
    let limits = &state.config.limits;
    let mut reader = reader(
        &state,
        &headers,
        body,
        limits.max_bulk_bytes,
        "limits.max_bulk_bytes",
    )?;
    // Only a JSON body can carry its key (api.api_key); NDJSON and CSV
    // need it in a header or the query.
    let authorized = authorize_collection(&state, &headers, &params, &mut reader, is_json).await?;
    let bytes = reader.read_to_end().await?;
    let ingest_limits = state.ingester.limits().clone();
    let (project, events) = if is_json {
        let request = off_async(move || decode_batch(&bytes, &ingest_limits)).await??;
        let project = authorized
            .confirm(&state, request.api.api_key.as_deref())
            .await?;
        let events = request
            .events
            .into_iter()
            .enumerate()
            .map(|(index, event)| event.map_err(|e| e.at(format!("event {index}"))))
            .collect::<Result<Vec<_>, _>>()?;
        (project, events)
    } else if kind == "text/csv" {
        let project = authorized.project;
        let events = decode_csv_request(&state, &project, &params, bytes).await?;
        (project, events)
    } else {
        let collection = params.get("collection").cloned();
        let events =
            off_async(move || decode_ndjson(&bytes, collection.as_deref(), &ingest_limits))
                .await??;
        (authorized.project, events)
    };
    let stored = ingest_all(&state, &project, events).await?;
    Ok(Json(json!({"success": true, "events": stored})).into_response())
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

async fn decode_csv_request(
    state: &AppState,
    project: &ProjectInfo,
    params: &HashMap<String, String>,
    bytes: Bytes,
) -> Result<Vec<EventInput>, ApiError> {
    let raw_collection = params.get("collection").ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingParameter,
            "collection query parameter is required",
        )
    })?;
    let collection = normalize_collection_name(raw_collection)?;
    let separator = match params.get("column_separator").map(String::as_str) {
        None | Some("") => b',',
        Some("\\t") | Some("tab") => b'\t',
        Some(text) if text.len() == 1 => text.as_bytes()[0],
        Some(text) => {
            return Err(ApiError::new(
                ErrorCode::InvalidValue,
                format!("column_separator must be one character, not {text:?}"),
            ))
        }
    };
    let use_header = match params.get("use_header").map(|v| v.to_ascii_lowercase()) {
        None => false,
        Some(value) => matches!(value.as_str(), "true" | "1" | "yes"),
    };
    let schema = state.catalog.schema(&project.name, &collection).await?;
    let options = CsvOptions {
        separator,
        use_header,
    };
    let limits = state.ingester.limits().clone();
    let events =
        off_async(move || decode_csv(&bytes, &collection, &options, schema.as_deref(), &limits))
            .await??;
    Ok(events)
}

/// `GET|POST /event/pixel?collection=…&api.api_key=…&prop.<name>=…`.
pub(crate) async fn pixel(
    State(state): State<AppState>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let collection = params.get("collection").ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingParameter,
            "collection query parameter is required",
        )
    })?;
    let project = authorize_body_key(
        &state,
        params.get("api.api_key").map(String::as_str),
        KeyKind::Write,
    )
    .await?;
    let normalized = normalize_collection_name(collection)?;
    let schema = state.catalog.schema(&project.name, &normalized).await?;
    let mut properties = Map::new();
    for (key, text) in &params {
        let Some(name) = key.strip_prefix("prop.") else {
            continue;
        };
        let normalized = rakam_model::normalize_field_name(name)?;
        let column_type = schema.as_ref().and_then(|s| s.column_type(&normalized));
        properties.insert(
            name.to_string(),
            typed_from_text(text, column_type, name == "_time"),
        );
    }
    let event = EventInput {
        collection: collection.clone(),
        properties,
        upload_time: None,
    };
    ingest_all(&state, &project, vec![event]).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
        ],
        PIXEL_GIF,
    )
        .into_response())
}
