use rakam_analysis::AnalysisError;
use rakam_common::{ErrorCode, ErrorExt};
use rakam_ingest::IngestError;
use rakam_model::ModelError;
use rakam_query::QueryError;
use rakam_store_api::StoreError;

/// What a call of the service can fail with; every variant has a stable
/// code, which the protocols map to their own statuses.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    View(#[from] rakam_views::ViewError),
    /// No key where one is needed (the message names where).
    #[error("{0}")]
    MissingKey(String),
    /// An unknown key, or one of the wrong kind.
    #[error("{0}")]
    InvalidKey(String),
    /// A lock key that is missing or wrong, or a client that may not manage projects.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotSupported(String),
    /// A request the service refuses as asked, with the code that says why.
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
}

impl ErrorExt for ServiceError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Store(inner) => inner.code(),
            Self::Ingest(inner) => inner.code(),
            Self::Query(inner) => inner.code(),
            Self::Analysis(inner) => inner.code(),
            Self::Model(inner) => inner.code(),
            Self::View(inner) => inner.code(),
            Self::MissingKey(_) => ErrorCode::MissingKey,
            Self::InvalidKey(_) => ErrorCode::InvalidKey,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotSupported(_) => ErrorCode::NotSupported,
            Self::Refused { code, .. } => *code,
        }
    }
}
