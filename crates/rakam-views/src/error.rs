use rakam_common::{ErrorCode, ErrorExt};
use rakam_query::QueryError;
use rakam_store_api::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A view that cannot be created or refreshed as asked.
    #[error("{0}")]
    Invalid(String),
    #[error("materialized view {0:?} does not exist")]
    NotFound(String),
    /// A continuous query that cannot be maintained, with the reason.
    #[error("{0}")]
    InvalidContinuous(String),
    #[error("continuous query {0:?} does not exist")]
    ContinuousNotFound(String),
    #[error("a continuous query named {0:?} exists")]
    ContinuousExists(String),
}

impl ErrorExt for ViewError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Store(inner) => inner.code(),
            Self::Query(inner) => inner.code(),
            Self::Invalid(_) => ErrorCode::InvalidView,
            Self::NotFound(_) => ErrorCode::ViewNotFound,
            Self::InvalidContinuous(_) => ErrorCode::InvalidContinuousQuery,
            Self::ContinuousNotFound(_) => ErrorCode::ContinuousQueryNotFound,
            Self::ContinuousExists(_) => ErrorCode::ContinuousQueryExists,
        }
    }
}
