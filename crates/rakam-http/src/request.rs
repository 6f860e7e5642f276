//! Small helpers every route uses to read its request: a whole small body,
//! JSON with a clear error, the media type, and work off the async threads.

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use rakam_common::ErrorCode;
use serde::de::DeserializeOwned;

use crate::body::BodyReader;
use crate::{ApiError, AppState};

/// The whole body of a request whose key was checked already.
pub async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    limit_key: &'static str,
) -> Result<Bytes, ApiError> {
    BodyReader::new(headers, body, limit, limit_key, state.body_read_timeout())?
        .read_to_end()
        .await
}

/// Runs CPU-heavy work (decompression, decoding) on the blocking pool, so
/// the async workers keep answering other requests.
pub async fn off_async<T, F>(work: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(%error, "blocking work failed");
        ApiError::new(
            ErrorCode::Internal,
            "the server could not complete the request; see the server log",
        )
    })
}

/// A JSON body as `T`; a wrong shape is a 400 that says what is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|error| {
        ApiError::new(
            ErrorCode::MalformedRequest,
            format!("the body is not valid: {error}"),
        )
    })
}

/// The media type without parameters, lower case: `Application/JSON;
/// charset=UTF-8` is `application/json`.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}
