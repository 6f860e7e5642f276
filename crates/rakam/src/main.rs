//! `rakam`: the server and its command line.

mod cli;
mod serve;
mod wal;

use clap::Parser;

/// glibc's allocator spends a third of ingest time consolidating and
/// freeing the many small JSON values; mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let arguments = cli::Arguments::parse();
    cli::run(arguments)
}
