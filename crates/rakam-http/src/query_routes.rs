use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use rakam_common::ErrorCode;
use rakam_query::{schema_fields, write_rows_json, ExportEncoder, ExportFormat, SchemaFieldJson};
use rakam_store_api::KeyKind;
use serde::Deserialize;
use serde_json::json;

use crate::auth::authorize;
use crate::body::{parse_json, read_body};
use crate::{ApiError, AppState};

type Params = Query<HashMap<String, String>>;

const QUERY_BODY_LIMIT: usize = 1 << 20;

#[derive(Debug, Deserialize)]
struct QueryRequest {
    query: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    export_type: Option<String>,
}

impl QueryRequest {
    fn sql(&self) -> Result<&str, ApiError> {
        self.query.as_deref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingParameter,
                "query body parameter is required",
            )
        })
    }
}

/// SQL errors also echo the query, as Rakam's `properties.query`.
fn with_query(error: rakam_server::ServiceError, sql: &str) -> ApiError {
    let is_sql = matches!(
        error,
        rakam_server::ServiceError::Query(rakam_query::QueryError::Sql { .. })
    );
    let api_error = ApiError::from(error);
    if is_sql {
        api_error.with_detail("properties", json!({"query": sql}))
    } else {
        api_error
    }
}

async fn read_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<QueryRequest, ApiError> {
    let bytes = read_body(state, headers, body, QUERY_BODY_LIMIT, "query request").await?;
    parse_json(&bytes)
}

pub(crate) async fn execute(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    let request = read_request(&state, &headers, body).await?;
    let sql = request.sql()?;
    let mut output = state
        .rakam
        .execute(&project, sql, request.limit)
        .await
        .map_err(|e| with_query(e, sql))?;
    metrics::histogram!("rakam_query_duration_seconds").record(output.elapsed.as_secs_f64());
    // Written straight to bytes, counted against the query's memory: a
    // tree of JSON values would take several times the result's size.
    let mut body = b"{\"metadata\":".to_vec();
    let properties = json!({
        "executionTimeInMillis": output.elapsed.as_millis() as u64,
        "materializedViews": state.rakam.views_read_by(&project, sql).await,
    });
    serde_json::to_writer(&mut body, &schema_fields(&output.schema)).map_err(internal)?;
    body.extend_from_slice(b",\"result\":");
    write_rows_json(&mut output, &mut body)?;
    body.extend_from_slice(b",\"properties\":");
    serde_json::to_writer(&mut body, &properties).map_err(internal)?;
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn internal(error: serde_json::Error) -> ApiError {
    ApiError::new(ErrorCode::Internal, error.to_string())
}

pub(crate) async fn export(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    let request = read_request(&state, &headers, body).await?;
    let sql = request.sql()?;
    let name = request
        .export_type
        .clone()
        .or_else(|| params.get("export_type").cloned())
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "CSV".into());
    let format = ExportFormat::parse(&name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidValue,
            format!("export_type {name:?} is not supported; use CSV, JSON or NDJSON"),
        )
    })?;
    let output = state
        .rakam
        .execute_stream(&project, sql, request.limit)
        .await
        .map_err(|e| with_query(e, sql))?;
    let mut encoder = ExportEncoder::new(format, output.schema.clone());
    let mut batches = output.batches;
    // The first batch is awaited before answering, so a failure that shows
    // at once is still an error response rather than a cut-off file.
    let head = match batches.next().await {
        Some(batch) => encoder.batch(&batch.map_err(|e| with_query(e.into(), sql))?)?,
        None => Vec::new(),
    };
    let rest = futures::stream::unfold(Some((encoder, batches)), |state| async move {
        let (mut encoder, mut batches) = state?;
        let (bytes, next) = match batches.next().await {
            Some(Ok(batch)) => match encoder.batch(&batch) {
                Ok(bytes) => (Ok(bytes), Some((encoder, batches))),
                Err(error) => (Err(error), None),
            },
            Some(Err(error)) => (Err(error), None),
            None => (encoder.finish(), None),
        };
        if let Err(error) = &bytes {
            // The status line is sent: cutting the body short is all that is left.
            tracing::warn!(%error, "an export failed after it started");
        }
        Some((bytes.map(Bytes::from), next))
    });
    let body = futures::stream::once(async move { Ok(Bytes::from(head)) }).chain(rest);
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(body),
    )
        .into_response())
}

pub(crate) async fn metadata(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<SchemaFieldJson>>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    let request = read_request(&state, &headers, body).await?;
    let sql = request.sql()?;
    let schema = state
        .rakam
        .metadata(&project, sql)
        .await
        .map_err(|e| with_query(e, sql))?;
    Ok(Json(schema_fields(&schema)))
}
