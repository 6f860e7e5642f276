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
}

impl ErrorExt for ViewError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Store(inner) => inner.code(),
            Self::Query(inner) => inner.code(),
            Self::Invalid(_) => ErrorCode::InvalidView,
            Self::NotFound(_) => ErrorCode::ViewNotFound,
        }
    }
}
