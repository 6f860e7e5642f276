use rakam_common::{ErrorCode, ErrorExt};

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ModelError {
    #[error("invalid field name {name:?}: {reason}")]
    InvalidFieldName { name: String, reason: &'static str },
    #[error("invalid collection name {name:?}: {reason}")]
    InvalidCollectionName { name: String, reason: &'static str },
    #[error("field name {name:?} is reserved")]
    ReservedName { name: String },
    #[error("unknown or unsupported type {name:?}")]
    InvalidType { name: String },
}

impl ErrorExt for ModelError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidFieldName { .. } | Self::InvalidCollectionName { .. } => {
                ErrorCode::InvalidName
            }
            Self::ReservedName { .. } => ErrorCode::ReservedName,
            Self::InvalidType { .. } => ErrorCode::InvalidType,
        }
    }
}
