//! Where a request's key is: a header or a query parameter named after its
//! kind (`master_key`, `read_key`, `write_key`); collection endpoints may
//! carry `api.api_key` in the query string or the body. The service checks
//! the key; this module only finds it, before the body is read.

use std::collections::HashMap;

use axum::http::HeaderMap;
use rakam_store_api::{KeyKind, ProjectInfo};

use crate::body::BodyReader;
use crate::{ApiError, AppState};

fn key_from(headers: &HeaderMap, query: &HashMap<String, String>, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .or_else(|| query.get(name).cloned())
        .filter(|key| !key.is_empty())
}

/// A collection request's project and key, when the key came before the
/// body (a header or the query string); `None` when it is in the body.
pub async fn authorize_collection(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    reader: &mut BodyReader,
    key_in_body: bool,
) -> Result<Option<(ProjectInfo, String)>, ApiError> {
    let early = [KeyKind::Write, KeyKind::Master]
        .iter()
        .map(|kind| kind.parameter_name())
        .chain(["api.api_key"])
        .find_map(|name| key_from(headers, query, name).map(|key| (name, key)));
    if let Some((name, key)) = early {
        let project = state.rakam.authenticate(&key, KeyKind::Write, name).await?;
        return Ok(Some((project, key)));
    }
    if !key_in_body {
        return Err(missing(KeyKind::Write));
    }
    match reader.read_until_key().await?.filter(|key| !key.is_empty()) {
        Some(key) => {
            let project = state
                .rakam
                .authenticate(&key, KeyKind::Write, "api.api_key")
                .await?;
            Ok(Some((project, key)))
        }
        None => Err(ApiError::new(
            rakam_common::ErrorCode::MissingKey,
            "api.api_key is missing",
        )),
    }
}

fn missing(required: KeyKind) -> ApiError {
    ApiError::new(
        rakam_common::ErrorCode::MissingKey,
        format!(
            "{} header or query parameter is missing",
            required.parameter_name()
        ),
    )
}

/// The project of the first key found that grants `required` (a master
/// key grants everything).
pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    required: KeyKind,
) -> Result<ProjectInfo, ApiError> {
    let mut candidates = vec![required];
    if required != KeyKind::Master {
        candidates.push(KeyKind::Master);
    }
    let Some((name, key)) = candidates.iter().find_map(|kind| {
        let name = kind.parameter_name();
        key_from(headers, query, name).map(|key| (name, key))
    }) else {
        return Err(missing(required));
    };
    Ok(state.rakam.authenticate(&key, required, name).await?)
}
