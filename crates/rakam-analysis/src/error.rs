use rakam_common::{ErrorCode, ErrorExt};
use rakam_query::QueryError;
use rakam_store_api::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The request cannot run as asked; the message says which part.
    #[error("{0}")]
    Invalid(String),
    /// The JSON does not have the request's shape (missing field, wrong type).
    #[error("the body is not valid: {0}")]
    Malformed(String),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AnalysisError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

impl ErrorExt for AnalysisError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidAnalysis,
            Self::Malformed(_) => ErrorCode::MalformedRequest,
            Self::Query(inner) => inner.code(),
            Self::Store(inner) => inner.code(),
        }
    }
}

pub type Result<T, E = AnalysisError> = std::result::Result<T, E>;
