//! The event data model: field types and their Arrow form, field-name
//! normalisation, type inference and the coercion rules that decide whether a
//! JSON value fits a column.
//!
//! Nothing here does I/O; every rule is a pure function with unit tests.

mod coerce;
mod error;
pub mod field_type;
mod naming;
mod schema;
mod time_parse;

pub use coerce::{coerce, flatten_properties, infer_type, widening_for, Fit, FlatProperty, Scalar};
pub use error::ModelError;
pub use field_type::FieldType;
pub use naming::{
    is_normal_field_name, normalize_collection_name, normalize_field_name, MAX_COLLECTION_BYTES,
    MAX_COLLECTION_CHARS, MAX_NAME_LENGTH, RESERVED_COLLECTION_NAMES,
};
pub use schema::{
    CollectionSchema, Column, COLLECTION_COLUMN, RESERVED_FIELD_NAMES, SERVER_TIME_COLUMN,
    TIME_COLUMN, UNMAPPED_COLUMN,
};
pub use time_parse::{
    is_supported_time, parse_date, parse_timestamp_millis, EARLIEST_TIME_MS, LATEST_TIME_MS,
};
