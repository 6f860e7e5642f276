//! Request bodies: size limits and gzip, both answered with clear errors.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use flate2::read::GzDecoder;
use rakam_common::ErrorCode;
use serde::de::DeserializeOwned;

use crate::ApiError;

fn too_large(limit: usize, key: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("the request body is over the limit of {limit} bytes ({key})"),
    )
}

/// Reads the body (at most `limit` bytes, after decompression) and
/// decompresses it when it is gzip, by header or by its magic bytes.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    limit_key: &str,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large(limit, limit_key));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        if format!("{error:?}").contains("LengthLimit") {
            too_large(limit, limit_key)
        } else {
            ApiError::new(
                ErrorCode::CorruptBody,
                format!("cannot read the request body: {error}"),
            )
        }
    })?;
    let declared_gzip = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let looks_gzip = bytes.starts_with(&[0x1f, 0x8b]);
    if !declared_gzip && !looks_gzip {
        return Ok(bytes);
    }
    tokio::task::spawn_blocking(move || gunzip(&bytes, limit))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|error| match error {
            GunzipError::TooLarge => too_large(limit, limit_key),
            GunzipError::Corrupt(message) => ApiError::new(
                ErrorCode::CorruptBody,
                format!("the gzip body is corrupt: {message}"),
            ),
        })
}

enum GunzipError {
    TooLarge,
    Corrupt(String),
}

fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, GunzipError> {
    let mut output = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let mut decoder = GzDecoder::new(compressed).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut output)
        .map_err(|e| GunzipError::Corrupt(e.to_string()))?;
    if output.len() > limit {
        return Err(GunzipError::TooLarge);
    }
    Ok(Bytes::from(output))
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn gzip_limits_apply_after_decompression() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&[b'a'; 10_000]).expect("write");
        let compressed = encoder.finish().expect("finish");
        assert!(matches!(
            gunzip(&compressed, 100),
            Err(GunzipError::TooLarge)
        ));
        assert_eq!(
            gunzip(&compressed, 10_000).ok().map(|b| b.len()),
            Some(10_000)
        );
        assert!(matches!(
            gunzip(&compressed[..20], 10_000),
            Err(GunzipError::Corrupt(_))
        ));
    }

    #[test]
    fn media_types_are_matched_leniently() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "Application/JSON; charset=UTF-8".parse().expect("header"),
        );
        assert_eq!(media_type(&headers), "application/json");
    }
}
