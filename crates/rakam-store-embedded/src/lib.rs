//! The embedded store, Rakam's zero-setup default: a write-ahead log with
//! group commit, an in-memory tail that queries see at once, and Parquet
//! files committed through a per-collection manifest (ADR 0001).
//!
//! ```text
//! append ─▶ sequence + tail (under one lock) ─▶ WAL thread: write, fsync ─▶ ack
//! background: tail ─▶ Parquet file ─▶ manifest commit ─▶ tail trimmed ─▶ WAL segment dropped
//! ```

mod batch_util;
mod catalog;
mod catalog_log;
mod fs_util;
mod maintenance;
mod manifest;
mod parquet_io;
mod parts;
mod payload;
mod provider;
mod store;
mod table;
mod tail_budget;
mod views;
mod wal;
mod wal_check;
mod wal_replay;

pub use catalog::FileCatalog;
pub use store::{open, open_backend, EmbeddedOptions, EmbeddedStore, WalRecovery};
pub use views::FileViews;
pub use wal::Durability;

/// Entry points for the fuzz targets (`fuzz/`): not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::payload::decode as decode_payload;
    pub use crate::wal::encode_record;
    pub use crate::wal_check::quarantine_damage;
    pub use crate::wal_replay::scan_records;
}
pub use wal_check::{check_wal, DamagedRange, WalProblem, WalReport};
