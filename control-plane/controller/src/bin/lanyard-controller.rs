//! `lanyard-controller`: see `lanyard-controller --help`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use lanyard_controller::runtime::{self, Args};

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
