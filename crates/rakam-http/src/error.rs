//! The one place where an error becomes an HTTP response: every error has a
//! stable numeric `error_code`, and `status_for` maps codes to statuses.
//! Internal and storage details are logged, not sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rakam_common::{ErrorCode, ErrorExt};
use serde_json::{json, Map, Value};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Extra members of the JSON body (a SQL position, failed indexes).
    pub details: Map<String, Value>,
}

pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MalformedRequest
        | ErrorCode::MissingParameter
        | ErrorCode::InvalidValue
        | ErrorCode::CorruptBody
        | ErrorCode::InvalidEventTime
        | ErrorCode::EventTooLarge
        | ErrorCode::InvalidName
        | ErrorCode::InvalidType
        | ErrorCode::TooManyColumns
        | ErrorCode::TooManyCollections
        | ErrorCode::ReservedName
        | ErrorCode::TypeConflict
        | ErrorCode::SqlError
        | ErrorCode::RowLimitExceeded
        | ErrorCode::InvalidAnalysis
        | ErrorCode::SqlTooComplex
        | ErrorCode::QueryMemoryExceeded
        | ErrorCode::InvalidView
        | ErrorCode::ViewExists
        | ErrorCode::InvalidContinuousQuery
        | ErrorCode::ContinuousQueryExists
        | ErrorCode::ProjectExists => StatusCode::BAD_REQUEST,
        ErrorCode::ViewChanged => StatusCode::CONFLICT,
        ErrorCode::BodyTooLarge | ErrorCode::TooManyEvents => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        ErrorCode::TooManySubscribers => StatusCode::TOO_MANY_REQUESTS,
        // Only ever sent inside a stream that has already answered 200.
        ErrorCode::SubscriberLagged => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::PartialBatchFailure => StatusCode::CONFLICT,
        ErrorCode::MissingKey
        | ErrorCode::InvalidKey
        | ErrorCode::Forbidden
        | ErrorCode::SqlForbidden => StatusCode::FORBIDDEN,
        ErrorCode::ProjectNotFound
        | ErrorCode::CollectionNotFound
        | ErrorCode::ViewNotFound
        | ErrorCode::ContinuousQueryNotFound
        | ErrorCode::UnknownEndpoint => StatusCode::NOT_FOUND,
        ErrorCode::QueryTimeout | ErrorCode::BodyReadTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::NotSupported => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StorageFailure | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    pub fn with_detail(mut self, key: &str, value: Value) -> Self {
        self.details.insert(key.to_string(), value);
        self
    }

    /// Any library error, by its code; server-side details are masked.
    pub fn from_error<E: ErrorExt>(error: &E) -> Self {
        let code = error.code();
        match code {
            ErrorCode::StorageFailure | ErrorCode::Internal => {
                tracing::error!(%error, ?code, "request failed on the server side");
                Self::new(
                    code,
                    "the server could not complete the request; see the server log",
                )
            }
            _ => Self::new(code, error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_for(self.code);
        let mut body = self.details;
        body.insert("error".into(), Value::String(self.message));
        body.insert("error_code".into(), json!(self.code.as_u16()));
        if self.code.is_retryable() {
            body.insert("retryable".into(), Value::Bool(true));
        }
        let mut response = (status, Json(Value::Object(body))).into_response();
        if self.code == ErrorCode::Unavailable {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<rakam_ingest::IngestError> for ApiError {
    fn from(error: rakam_ingest::IngestError) -> Self {
        Self::from_error(&error)
    }
}

impl From<rakam_store_api::StoreError> for ApiError {
    fn from(error: rakam_store_api::StoreError) -> Self {
        Self::from_error(&error)
    }
}

impl From<rakam_model::ModelError> for ApiError {
    fn from(error: rakam_model::ModelError) -> Self {
        Self::from_error(&error)
    }
}

impl From<rakam_server::ServiceError> for ApiError {
    fn from(error: rakam_server::ServiceError) -> Self {
        use rakam_server::ServiceError;
        match error {
            ServiceError::Query(inner)
            | ServiceError::Analysis(rakam_analysis::AnalysisError::Query(inner)) => {
                Self::from(inner)
            }
            other => Self::from_error(&other),
        }
    }
}

impl From<rakam_query::QueryError> for ApiError {
    fn from(error: rakam_query::QueryError) -> Self {
        let mut api_error = Self::from_error(&error);
        if let rakam_query::QueryError::Sql { line, column, .. } = &error {
            if line.is_some() || column.is_some() {
                api_error =
                    api_error.with_detail("position", json!({"line": line, "column": column}));
            }
        }
        api_error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_4xx_and_server_errors_5xx() {
        for code in [
            ErrorCode::MalformedRequest,
            ErrorCode::BodyTooLarge,
            ErrorCode::InvalidKey,
            ErrorCode::SqlError,
            ErrorCode::SqlForbidden,
            ErrorCode::ProjectNotFound,
            ErrorCode::CorruptBody,
        ] {
            assert!(status_for(code).is_client_error(), "{code:?}");
        }
        assert!(status_for(ErrorCode::StorageFailure).is_server_error());
        assert_eq!(
            status_for(ErrorCode::PartialBatchFailure),
            StatusCode::CONFLICT
        );
    }

    #[tokio::test]
    async fn errors_worth_retrying_say_so() {
        for (code, retryable) in [
            (ErrorCode::Unavailable, true),
            (ErrorCode::QueryTimeout, true),
            (ErrorCode::SqlError, false),
            (ErrorCode::InvalidKey, false),
        ] {
            let response = ApiError::new(code, "x").into_response();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("body");
            let body: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(
                body["retryable"].as_bool().unwrap_or(false),
                retryable,
                "{code:?}"
            );
        }
    }

    #[test]
    fn storage_details_are_masked() {
        let error = rakam_store_api::StoreError::Data("secret path /var/x".into());
        let api = ApiError::from_error(&error);
        assert!(!api.message.contains("secret"));
    }
}
