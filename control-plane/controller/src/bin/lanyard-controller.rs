//! `lanyard-controller`: see `lanyard-controller --help`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use lanyard_controller::runtime::{self, Args};

/// mimalloc instead of the C library's allocator: after a burst (a reconnect storm, a client
/// sending a large request) glibc's per-thread arenas keep what was freed resident, while
/// mimalloc gives free pages back to the system within milliseconds. The abuse suite
/// (bench/src/abuse) measures RSS after each attack; README, "Operations: limits".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = async {
        runtime::init_tracing(&args.log)?;
        runtime::run(args)
            .await
            .context("lanyard-controller failed")
    };
    match result.await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
