//! End-to-end tests: the real `rakam` binary on a free port with a
//! temporary data directory, driven over HTTP.

mod server;

mod analysis;
mod bad_input;
mod cli;
mod collect;
mod crash;
mod isolation;
mod query;
