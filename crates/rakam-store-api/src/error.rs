use rakam_common::{ErrorCode, ErrorExt};
use rakam_model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("project {0:?} does not exist")]
    ProjectNotFound(String),
    #[error("project {0:?} already exists")]
    ProjectExists(String),
    #[error("invalid project name {0:?}: only letters, digits and '_' are allowed")]
    InvalidProjectName(String),
    #[error("collection {collection:?} would have more than {limit} columns (limit limits.max_columns_per_collection)")]
    TooManyColumns { collection: String, limit: usize },
    #[error("collection {collection:?} was not created: the project has {limit} collections (limit limits.max_collections_per_project)")]
    TooManyCollections { collection: String, limit: usize },
    #[error("column {column:?} is {existing}, which cannot hold {requested}")]
    TypeConflict {
        column: String,
        existing: String,
        requested: String,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("storage i/o failed: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage data error: {0}")]
    Data(String),
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another rakam process")]
    InUse(String),
    /// One request's rows make more than one durable unit can hold.
    #[error("the request's rows take {bytes} bytes stored, over the {limit} one request may take; send them in smaller requests")]
    AppendTooLarge { bytes: usize, limit: usize },
    #[error("the store is shutting down")]
    ShuttingDown,
    /// A statement the backend's own SQL engine refused (syntax, unknown
    /// column, permission); `position` is 1-based in characters.
    #[error("{message}")]
    Sql {
        message: String,
        position: Option<u64>,
    },
    #[error("the query ran longer than {seconds} s (query.statement_timeout_secs)")]
    QueryTimeout { seconds: u64 },
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("{name:?} is longer than the {limit} bytes this store allows for a name")]
    NameTooLong { name: String, limit: usize },
    /// A value the backend cannot store at all (PostgreSQL text and NUL).
    #[error("{0}")]
    Unstorable(String),
    #[error("materialized view {0:?} does not exist")]
    ViewNotFound(String),
    #[error("materialized view {0:?} already exists")]
    ViewExists(String),
    #[error("materialized view {0:?} was refreshed by another refresh meanwhile")]
    ViewChanged(String),
    /// An incremental refresh whose rows have other columns than the view.
    #[error("materialized view {0:?}: the query's columns are no longer the view's")]
    ViewColumnsChanged(String),
}

impl StoreError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl ErrorExt for StoreError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::ProjectNotFound(_) => ErrorCode::ProjectNotFound,
            Self::ProjectExists(_) => ErrorCode::ProjectExists,
            Self::InvalidProjectName(_) | Self::NameTooLong { .. } => ErrorCode::InvalidName,
            Self::Unstorable(_) => ErrorCode::InvalidValue,
            Self::TooManyColumns { .. } => ErrorCode::TooManyColumns,
            Self::TooManyCollections { .. } => ErrorCode::TooManyCollections,
            Self::AppendTooLarge { .. } => ErrorCode::BodyTooLarge,
            Self::TypeConflict { .. } => ErrorCode::TypeConflict,
            Self::Model(inner) => inner.code(),
            Self::Io { .. } | Self::Data(_) => ErrorCode::StorageFailure,
            Self::ShuttingDown | Self::Unavailable(_) | Self::InUse(_) => ErrorCode::Unavailable,
            Self::Sql { .. } => ErrorCode::SqlError,
            Self::QueryTimeout { .. } => ErrorCode::QueryTimeout,
            Self::ViewNotFound(_) => ErrorCode::ViewNotFound,
            Self::ViewExists(_) => ErrorCode::ViewExists,
            Self::ViewChanged(_) => ErrorCode::ViewChanged,
            Self::ViewColumnsChanged(_) => ErrorCode::InvalidView,
        }
    }
}

impl From<datafusion::error::DataFusionError> for StoreError {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        Self::Data(error.to_string())
    }
}

impl From<datafusion::arrow::error::ArrowError> for StoreError {
    fn from(error: datafusion::arrow::error::ArrowError) -> Self {
        Self::Data(error.to_string())
    }
}
