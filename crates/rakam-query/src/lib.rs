//! The SQL front: a read-only statement guard, a DataFusion session that
//! can see one project's collections (and `_all`) and nothing else, limits
//! and timeouts, and the encoders of results (Rakam JSON, CSV, NDJSON).

mod all_collections;
mod bounded_strings;
mod complexity;
mod encode;
mod engine;
mod error;
mod execution;
mod export;
mod guard;
mod live_filter;
mod materialized;
mod memory;
mod native;
mod project_schema;
mod redact;
mod runtime;
mod yielding;

pub use complexity::{
    check_nesting, MAX_NESTING, MAX_SPECIAL_FORM_NESTING, MAX_TABLE_REFERENCES,
    QUERY_THREAD_STACK_BYTES,
};
pub use encode::{descriptive_name, rows_as_json, schema_fields, write_rows_json, SchemaFieldJson};
pub use engine::{QueryEngine, QueryLimits, QueryOutput, QueryStream};
pub use error::QueryError;
pub use export::{ExportEncoder, ExportFormat};
pub use guard::{check_statement, GuardedStatement};
pub use live_filter::BatchFilter;
pub use materialized::{
    received_after_postgres, MaterializedTables, ReceivedWindow, CONTINUOUS_SCHEMA,
    MATERIALIZED_SCHEMA,
};
pub use memory::QueryMemory;
pub use native::{
    materialized_names, prepare_native, prepare_native_scoped, relations_in_schema, NativeScope,
};
pub use project_schema::ALL_COLLECTIONS;
