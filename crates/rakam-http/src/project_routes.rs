use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use rakam_common::ErrorCode;
use rakam_model::{normalize_collection_name, normalize_field_name, Column, FieldType};
use rakam_query::{schema_fields, SchemaFieldJson};
use rakam_store_api::{KeyKind, ProjectKeys};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{authorize, constant_time_eq};
use crate::body::{parse_json, read_body};
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

/// With `server.lock_key` set, the request must carry it; without one, only
/// loopback clients may manage projects.
fn check_lock(state: &AppState, peer: SocketAddr, lock_key: Option<&str>) -> Result<(), ApiError> {
    let configured = &state.config.server.lock_key;
    if configured.is_empty() {
        if peer.ip().is_loopback() {
            return Ok(());
        }
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "projects can only be created from the server's own machine unless server.lock_key is set",
        ));
    }
    match lock_key.filter(|k| !k.is_empty()) {
        Some(given) if constant_time_eq(given, configured) => Ok(()),
        Some(_) => Err(ApiError::new(ErrorCode::Forbidden, "lock_key is invalid")),
        None => Err(ApiError::new(ErrorCode::Forbidden, "lock_key is required")),
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ProjectKeys>, ApiError> {
    let bytes = read_body(&state, &headers, body, SMALL_BODY, "project request").await?;
    let request: LockRequest = parse_json(&bytes)?;
    check_lock(&state, peer, request.lock_key.as_deref())?;
    let name = request.name.ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingParameter,
            "name body parameter is required",
        )
    })?;
    let keys = state.catalog.create_project(&name).await?;
    tracing::info!(project = %name.to_lowercase(), "project created");
    Ok(Json(keys))
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
    check_lock(&state, peer, lock_key.as_deref())?;
    let projects = state.catalog.list_projects().await?;
    Ok(Json(projects.into_iter().map(|p| p.name).collect()))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    if !state.config.server.allow_project_deletion {
        return Err(ApiError::new(
            ErrorCode::NotSupported,
            "project deletion is disabled (server.allow_project_deletion)",
        ));
    }
    state.catalog.delete_project(&project.name).await?;
    state.store.delete_project(&project).await?;
    tracing::info!(project = %project.name, "project deleted");
    Ok(Json(json!({"success": true})))
}

pub(crate) async fn create_api_keys(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Json<ProjectKeys>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    Ok(Json(state.catalog.create_api_keys(&project.name).await?))
}

pub(crate) async fn collections(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Json<Vec<String>>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    Ok(Json(state.catalog.collections(&project.name).await?))
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
    let mut collections = Vec::new();
    for name in state.catalog.collections(&project.name).await? {
        if request
            .names
            .as_ref()
            .is_some_and(|names| !names.contains(&name))
        {
            continue;
        }
        let Some(schema) = state.catalog.schema(&project.name, &name).await? else {
            continue;
        };
        let stats = state.store.stats(&project, &name).await?;
        collections.push(CollectionJson {
            fields: schema_fields(&schema.arrow_schema()),
            name,
            rows: stats.rows,
            unmapped_rows: stats.unmapped_rows,
        });
    }
    Ok(Json(collections))
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
    let collection = normalize_collection_name(&request.collection)?;
    let mut columns = Vec::with_capacity(request.fields.len());
    for field in request.fields {
        let name = normalize_field_name(&field.name)?;
        if rakam_model::RESERVED_FIELD_NAMES.contains(&name.as_str())
            || name == rakam_model::TIME_COLUMN
        {
            return Err(rakam_model::ModelError::ReservedName { name }.into());
        }
        columns.push(Column {
            name,
            field_type: FieldType::parse(&field.field_type)?,
        });
    }
    let outcome = state
        .catalog
        .evolve(&project.name, &collection, &columns)
        .await?;
    if let Some(name) = outcome.refused.first() {
        return Err(ApiError::new(
            ErrorCode::TooManyColumns,
            format!(
                "{name:?} was not added: the collection is at storage.max_columns_per_collection"
            ),
        ));
    }
    for column in &columns {
        let actual = outcome.schema.column_type(&column.name);
        if actual != Some(&column.field_type) {
            return Err(ApiError::new(
                ErrorCode::TypeConflict,
                format!(
                    "field {:?} exists as {}, not {}",
                    column.name,
                    actual.map_or_else(|| "nothing".into(), FieldType::name),
                    column.field_type
                ),
            ));
        }
    }
    Ok(Json(schema_fields(&outcome.schema.arrow_schema())))
}

/// Rakam's `/project/stats`, by read key: event counts per project.
pub(crate) async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<HashMap<String, Value>>, ApiError> {
    let bytes = read_body(&state, &headers, body, SMALL_BODY, "stats request").await?;
    let keys: Vec<String> = parse_json(&bytes)?;
    let mut answer = HashMap::new();
    for key in keys {
        let Some((project, kind)) = state.catalog.authenticate(&key).await? else {
            continue;
        };
        if !kind.grants(KeyKind::Read) {
            continue;
        }
        let mut all_events = 0;
        for collection in state.catalog.collections(&project.name).await? {
            all_events += state.store.stats(&project, &collection).await?.rows;
        }
        answer.insert(key, json!({"allEvents": all_events}));
    }
    Ok(Json(answer))
}
