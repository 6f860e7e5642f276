//! End-to-end tests: the real `rakam` binary on a free port with a
//! temporary data directory, driven over HTTP.

mod server;

/// The store every test of this binary runs on; `tests/e2e_postgres.rs`
/// runs the same tests on PostgreSQL.
const STORE: &str = "embedded";

mod analysis;
mod bad_input;
mod cli;
mod clients;
mod collect;
mod continuous;
mod crash;
mod full_disk;
mod governance;
mod hostile_http;
mod hostile_sql;
mod isolation;
mod names;
mod overload;
mod query;
mod stream;
mod views;
mod wal_damage;
