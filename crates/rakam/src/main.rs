//! `rakam`: the server and its command line.

mod cli;
mod serve;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let arguments = cli::Arguments::parse();
    cli::run(arguments)
}
