use rakam_common::{ErrorCode, ErrorExt};
use rakam_model::ModelError;
use rakam_store_api::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("invalid value: {0}")]
    InvalidValue(String),
    #[error("invalid _time {0}: expected ISO-8601 or epoch milliseconds")]
    InvalidTime(String),
    #[error("event is {actual} bytes, over the limit of {limit} (limits.max_event_bytes)")]
    EventTooLarge { actual: usize, limit: usize },
    #[error("{actual} events in one request, over the limit of {limit} (limits.max_batch_events)")]
    TooManyEvents { actual: usize, limit: usize },
    #[error("event has {actual} properties, over the limit of {limit} (limits.max_properties_per_event)")]
    TooManyProperties { actual: usize, limit: usize },
    #[error("string value of {field:?} is {actual} bytes, over the limit of {limit} (limits.max_string_bytes)")]
    StringTooLong {
        field: String,
        actual: usize,
        limit: usize,
    },
    #[error("{location}: {source}")]
    At {
        location: String,
        #[source]
        source: Box<IngestError>,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    pub fn at(self, location: impl Into<String>) -> Self {
        Self::At {
            location: location.into(),
            source: Box::new(self),
        }
    }
}

impl ErrorExt for IngestError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed(_) => ErrorCode::MalformedRequest,
            Self::Missing(_) => ErrorCode::MissingParameter,
            Self::InvalidValue(_) => ErrorCode::InvalidValue,
            Self::InvalidTime(_) => ErrorCode::InvalidEventTime,
            Self::EventTooLarge { .. } | Self::StringTooLong { .. } => ErrorCode::EventTooLarge,
            Self::TooManyEvents { .. } => ErrorCode::TooManyEvents,
            Self::TooManyProperties { .. } => ErrorCode::EventTooLarge,
            Self::At { source, .. } => source.code(),
            Self::Model(inner) => inner.code(),
            Self::Store(inner) => inner.code(),
        }
    }
}
