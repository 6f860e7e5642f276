//! The contract between Rakam's service and its storage backends.
//!
//! A backend is assembled from parts ([`Backend`]): a [`Catalog`]
//! (projects, keys, versioned schema snapshots), an [`EventSink`] (durable
//! appends with log positions), a [`TableSource`] (a DataFusion
//! `TableProvider` per collection, so one query engine serves every
//! backend) and optionally a [`NativeSql`] engine. Parts are keyed by
//! [`ProjectId`]. Every assembly runs the shared [`conformance`] suite
//! (feature `testsuite`).

mod backend;
mod catalog;
mod error;
mod event_sink;
mod keys;
mod native_sql;
mod project;
mod table_source;
mod views;

#[cfg(feature = "testsuite")]
pub mod conformance;

pub use backend::{Backend, Capabilities};
pub use catalog::{Catalog, CatalogLimits, EvolveOutcome};
pub use error::StoreError;
pub use event_sink::{
    earliest_server_time, restamp_server_time, Append, EventSink, LogPosition, LoggedAppend,
};
pub use keys::{hash_key, random_key, KeyKind, ProjectKeys};
pub use native_sql::{NativeDialect, NativeOutput, NativeSql};
pub use project::{normalized_project_name, ProjectId, ProjectInfo, ProjectSnapshot};
pub use table_source::{CollectionStats, TableSource};
pub use views::{StoredView, ViewDefinition, ViewState, ViewStore, ViewWrite, ViewWriteMode};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
