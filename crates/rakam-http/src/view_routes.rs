//! `/materialized-view/*`: Rakam's endpoints, plus `/refresh`. Creating,
//! changing, refreshing and deleting take the master key; reading, the read
//! key.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use rakam_common::ErrorCode;
use rakam_query::{schema_fields, SchemaFieldJson};
use rakam_store_api::KeyKind;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::authorize;
use crate::body::{parse_json, read_body};
use crate::{ApiError, AppState};

type Params = Query<HashMap<String, String>>;

const SMALL_BODY: usize = 1 << 20;

#[derive(Debug, Deserialize)]
pub(crate) struct NamedView {
    #[serde(alias = "tableName")]
    table_name: Option<String>,
    #[serde(default, alias = "realTime")]
    real_time: Option<bool>,
}

impl NamedView {
    pub(crate) fn table_name(&self) -> Result<&str, ApiError> {
        self.table_name
            .as_deref()
            .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "table_name is required"))
    }
}

pub(crate) async fn body_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(
        state,
        headers,
        body,
        SMALL_BODY,
        "materialized view request",
    )
    .await?;
    parse_json(&bytes)
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    let request: Value = body_json(&state, &headers, body).await?;
    state.rakam.create_view(&project, request).await?;
    Ok(Json(json!({"success": true})))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
) -> Result<Json<Vec<Value>>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    Ok(Json(state.rakam.list_views(&project).await?))
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
            .get_view(&project, request.table_name()?)
            .await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SchemaRequest {
    #[serde(default)]
    pub(crate) names: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ViewSchemaJson {
    name: String,
    fields: Vec<SchemaFieldJson>,
}

impl ViewSchemaJson {
    pub(crate) fn all(
        schemas: Vec<(String, datafusion::arrow::datatypes::SchemaRef)>,
    ) -> Vec<ViewSchemaJson> {
        schemas
            .into_iter()
            .map(|(name, schema)| ViewSchemaJson {
                fields: schema_fields(&schema),
                name,
            })
            .collect()
    }
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
        .view_schemas(&project, request.names.as_deref())
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
        .delete_view(&project, request.table_name()?)
        .await?;
    Ok(Json(json!({"success": true})))
}

pub(crate) async fn change(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    let request: NamedView = body_json(&state, &headers, body).await?;
    let real_time = request
        .real_time
        .ok_or_else(|| ApiError::new(ErrorCode::MissingParameter, "real_time is required"))?;
    state
        .rakam
        .change_view(&project, request.table_name()?, real_time)
        .await?;
    Ok(Json(json!({"success": true})))
}

pub(crate) async fn refresh(
    State(state): State<AppState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = authorize(&state, &headers, &params, KeyKind::Master).await?;
    let request: NamedView = body_json(&state, &headers, body).await?;
    Ok(Json(
        state
            .rakam
            .refresh_view(&project, request.table_name()?)
            .await?,
    ))
}
