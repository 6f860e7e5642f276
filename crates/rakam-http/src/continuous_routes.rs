//! `/continuous-query/*` (Rakam's 2017 API) and `/realtime/*` (real-time
//! reports, kept as continuous queries): creating and deleting take the
//! master key; reading and testing, the read key.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use rakam_common::ErrorCode;
use rakam_store_api::KeyKind;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::authorize;
use crate::view_routes::{body_json, NamedView, SchemaRequest, ViewSchemaJson};
use crate::{ApiError, AppState};

type Params = Query<HashMap<String, String>>;

pub(crate) async fn create(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    let request: Value = body_json(&state, &headers, body).await?;
    state.rakam.create_continuous(&project, request).await?;
    Ok(Json(json!({"success": true})))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Json<Vec<Value>>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    Ok(Json(state.rakam.list_continuous(&project).await?))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    let request: NamedView = body_json(&state, &headers, body).await?;
    Ok(Json(
        state
            .rakam
            .get_continuous(&project, request.table_name()?)
            .await?,
    ))
}

pub(crate) async fn schema(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<ViewSchemaJson>>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    let request: SchemaRequest = body_json(&state, &headers, body).await?;
    let schemas = state
        .rakam
        .continuous_schemas(&project, request.names.as_deref())
        .await?;
    Ok(Json(ViewSchemaJson::all(schemas)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    let request: NamedView = body_json(&state, &headers, body).await?;
    state
        .rakam
        .delete_continuous(&project, request.table_name()?)
        .await?;
    Ok(Json(json!({"success": true})))
}

#[derive(Debug, Deserialize)]
struct TestRequest {
    query: Option<String>,
}

/// `true` when the query can be maintained; otherwise the error says why.
pub(crate) async fn test(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<bool>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    let request: TestRequest = body_json(&state, &headers, body).await?;
    let query = request
        .query
        .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "query is required"))?;
    state.rakam.test_continuous(&project, &query).await?;
    Ok(Json(true))
}

pub(crate) async fn create_realtime(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    let request: Value = body_json(&state, &headers, body).await?;
    state.rakam.create_realtime(&project, request).await?;
    Ok(Json(json!({"success": true})))
}

pub(crate) async fn list_realtime(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Json<Vec<Value>>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    Ok(Json(state.rakam.list_realtime(&project).await?))
}

pub(crate) async fn get_realtime(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    let request: Value = body_json(&state, &headers, body).await?;
    Ok(Json(state.rakam.query_realtime(&project, request).await?))
}

pub(crate) async fn delete_realtime(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    let request: NamedView = body_json(&state, &headers, body).await?;
    state
        .rakam
        .delete_realtime(&project, request.table_name()?)
        .await?;
    Ok(Json(json!({"success": true})))
}
