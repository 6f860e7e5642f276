//! Keys travel in a header or a query parameter named after their kind
//! (`master_key`, `read_key`, `write_key`); collection endpoints carry
//! `api.api_key` in the body. A master key is accepted wherever a read or
//! write key is.

use std::collections::HashMap;

use axum::http::HeaderMap;
use rakam_common::ErrorCode;
use rakam_store_api::{KeyKind, ProjectInfo};

use crate::body::BodyReader;
use crate::{ApiError, AppState};

fn key_from(headers: &HeaderMap, query: &HashMap<String, String>, kind: KeyKind) -> Option<String> {
    let name = kind.parameter_name();
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .or_else(|| query.get(name).cloned())
        .filter(|key| !key.is_empty())
}

/// A collection request's project and the key that named it.
pub struct Authorized {
    pub project: ProjectInfo,
    key: String,
}

impl Authorized {
    /// The project once the body is decoded: Rakam reads the key of a
    /// collection request from its body, so a body key that differs from
    /// the one checked early is checked too and wins.
    pub async fn confirm(
        self,
        state: &AppState,
        body_key: Option<&str>,
    ) -> Result<ProjectInfo, ApiError> {
        match body_key.filter(|key| !key.is_empty() && *key != self.key) {
            Some(key) => authorize_body_key(state, Some(key), KeyKind::Write).await,
            None => Ok(self.project),
        }
    }
}

/// Authorizes a collection request before its body is read: by a
/// `write_key` (or `master_key`) header or query parameter when there is
/// one, else by the `api.api_key` found at the start of the body
/// (`allow_body_key`), read no further than needed to find it.
pub async fn authorize_collection(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    reader: &mut BodyReader,
    allow_body_key: bool,
) -> Result<Authorized, ApiError> {
    let in_header = [KeyKind::Write, KeyKind::Master]
        .iter()
        .find_map(|kind| key_from(headers, query, *kind));
    if let Some(key) = in_header {
        let project = authorize(state, headers, query, KeyKind::Write).await?;
        return Ok(Authorized { project, key });
    }
    if !allow_body_key {
        return authorize(state, headers, query, KeyKind::Write)
            .await
            .map(|project| Authorized {
                project,
                key: String::new(),
            });
    }
    let key = reader.read_until_key().await?;
    let project = authorize_body_key(state, key.as_deref(), KeyKind::Write).await?;
    Ok(Authorized {
        project,
        key: key.unwrap_or_default(),
    })
}

/// The project of the first key found that grants `required`.
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
    let Some((kind, key)) = candidates
        .iter()
        .find_map(|kind| key_from(headers, query, *kind).map(|key| (*kind, key)))
    else {
        return Err(ApiError::new(
            ErrorCode::MissingKey,
            format!(
                "{} header or query parameter is missing",
                required.parameter_name()
            ),
        ));
    };
    check_key(state, &key, required, kind.parameter_name()).await
}

/// A key from the request body (`api.api_key`): a write or a master key.
pub async fn authorize_body_key(
    state: &AppState,
    key: Option<&str>,
    required: KeyKind,
) -> Result<ProjectInfo, ApiError> {
    match key.filter(|k| !k.is_empty()) {
        Some(key) => check_key(state, key, required, "api.api_key").await,
        None => Err(ApiError::new(
            ErrorCode::MissingKey,
            "api.api_key is missing",
        )),
    }
}

async fn check_key(
    state: &AppState,
    key: &str,
    required: KeyKind,
    name: &str,
) -> Result<ProjectInfo, ApiError> {
    match state.catalog.authenticate(key).await? {
        Some((project, kind)) if kind.grants(required) => Ok(project),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidKey,
            format!(
                "{name} is not a {} of this project",
                required.parameter_name()
            ),
        )),
        None => Err(ApiError::new(
            ErrorCode::InvalidKey,
            format!("{name} is invalid"),
        )),
    }
}

/// Compares without an early exit, so timing does not reveal the lock key.
pub fn constant_time_eq(left: &str, right: &str) -> bool {
    let (left, right) = (left.as_bytes(), right.as_bytes());
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}
