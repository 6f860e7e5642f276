//! The end-to-end suite again, every test on the PostgreSQL backend (a
//! database of its own per test), plus what only PostgreSQL has: several
//! servers on one database, and isolation enforced by the database itself.
//! Without a PostgreSQL server the binary is skipped with a loud message;
//! `RAKAM_REQUIRE_SERVICES=1` (CI) makes that a failure.

#[path = "e2e/server.rs"]
mod server;

const STORE: &str = "postgres";

#[path = "e2e/analysis.rs"]
mod analysis;
#[path = "e2e/bad_input.rs"]
mod bad_input;
#[path = "e2e/clients.rs"]
mod clients;
#[path = "e2e/collect.rs"]
mod collect;
#[path = "e2e/continuous.rs"]
mod continuous;
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/governance.rs"]
mod governance;
#[path = "e2e/hostile_sql.rs"]
mod hostile_sql;
#[path = "e2e/isolation.rs"]
mod isolation;
#[path = "e2e/names.rs"]
mod names;
#[path = "e2e/overload.rs"]
mod overload;
#[path = "e2e/postgres.rs"]
mod postgres;
#[path = "e2e/query.rs"]
mod query;
#[path = "e2e/stream.rs"]
mod stream;
#[path = "e2e/views.rs"]
mod views;
