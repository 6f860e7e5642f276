use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use rakam_common::ErrorCode;
use rakam_query::{schema_fields, SchemaFieldJson};
use rakam_store_api::{KeyKind, ProjectKeys};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::authorize;
use crate::body::{parse_json, read_body};
use crate::client::is_local_client;
use crate::{ApiError, AppState};

type Params = Query<HashMap<String, String>>;

const SMALL_BODY: usize = 1 << 20;

#[derive(Debug, Default, Deserialize)]
struct LockRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    lock_key: Option<String>,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ProjectKeys>, ApiError> {
    let bytes = read_body(&state, &headers, body, SMALL_BODY, "project request").await?;
    let request: LockRequest = parse_json(&bytes)?;
    state.rakam.check_lock_key(
        request.lock_key.as_deref(),
        is_local_client(&state, peer, &headers),
    )?;
    let name = request.name.ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingParameter,
            "name body parameter is required",
        )
    })?;
    Ok(Json(state.rakam.create_project(&name).await?))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<String>>, ApiError> {
    let bytes = read_body(&state, &headers, body, SMALL_BODY, "project request").await?;
    let request: LockRequest = parse_json(&bytes)?;
    let lock_key = request.lock_key.or_else(|| params.get("lock_key").cloned());
    state
        .rakam
        .check_lock_key(lock_key.as_deref(), is_local_client(&state, peer, &headers))?;
    Ok(Json(state.rakam.list_projects().await?))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    state.rakam.delete_project(&project).await?;
    Ok(Json(json!({"success": true})))
}

pub(crate) async fn create_api_keys(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Json<ProjectKeys>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    Ok(Json(state.rakam.create_api_keys(&project).await?))
}

pub(crate) async fn collections(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Json<Vec<String>>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    Ok(Json(state.rakam.collections(&project).await?))
}

#[derive(Debug, Default, Deserialize)]
struct SchemaRequest {
    #[serde(default)]
    names: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CollectionJson {
    name: String,
    fields: Vec<SchemaFieldJson>,
    /// Rows stored so far.
    rows: u64,
    /// Rows that kept at least one value in `_unmapped`.
    unmapped_rows: u64,
}

pub(crate) async fn schema(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<CollectionJson>>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    let bytes = read_body(&state, &headers, body, SMALL_BODY, "schema request").await?;
    let request: SchemaRequest = parse_json(&bytes)?;
    let described = state
        .rakam
        .describe_collections(&project, request.names.as_deref())
        .await?;
    Ok(Json(
        described
            .into_iter()
            .map(|collection| CollectionJson {
                fields: schema_fields(&collection.schema.arrow_schema()),
                name: collection.name,
                rows: collection.stats.rows,
                unmapped_rows: collection.stats.unmapped_rows,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
struct FieldRequest {
    name: String,
    #[serde(rename = "type")]
    field_type: String,
}

#[derive(Debug, Deserialize)]
struct AddFieldsRequest {
    collection: String,
    fields: Vec<FieldRequest>,
}

pub(crate) async fn add_fields(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<SchemaFieldJson>>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    let bytes = read_body(&state, &headers, body, SMALL_BODY, "schema request").await?;
    let request: AddFieldsRequest = parse_json(&bytes)?;
    let fields: Vec<(String, String)> = request
        .fields
        .into_iter()
        .map(|field| (field.name, field.field_type))
        .collect();
    let schema = state
        .rakam
        .add_fields(&project, &request.collection, &fields)
        .await?;
    Ok(Json(schema_fields(&schema.arrow_schema())))
}

/// Rakam's `/project/stats`, by read key: event counts per project.
pub(crate) async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<HashMap<String, Value>>, ApiError> {
    let bytes = read_body(&state, &headers, body, SMALL_BODY, "stats request").await?;
    let keys: Vec<String> = parse_json(&bytes)?;
    let counts = state.rakam.event_counts(&keys).await?;
    Ok(Json(
        counts
            .into_iter()
            .map(|(key, events)| (key, json!({"allEvents": events})))
            .collect(),
    ))
}
