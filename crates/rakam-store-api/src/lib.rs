//! The contract between Rakam's API and its storage backends.
//!
//! A backend provides a [`Catalog`] (projects, keys, collection schemas) and
//! an [`EventStore`] (durable appends, and a DataFusion `TableProvider` per
//! collection so one query engine serves every backend). Every backend runs
//! the shared [`conformance`] suite (feature `testsuite`).

mod catalog;
mod error;
mod event_store;
mod keys;
mod native_sql;

#[cfg(feature = "testsuite")]
pub mod conformance;

pub use catalog::{normalized_project_name, Catalog, EvolveOutcome, ProjectInfo};
pub use error::StoreError;
pub use event_store::{CollectionStats, EventStore};
pub use keys::{hash_key, random_key, KeyKind, ProjectKeys};
pub use native_sql::{NativeDialect, NativeOutput, NativeSql};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
