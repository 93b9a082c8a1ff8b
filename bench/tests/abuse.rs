//! The abuse suite (`lanyard_bench::abuse`, issue 13) against the release controller, at
//! the size CI runs (`LANYARD_ABUSE_SCALE`, default 0.5: about two minutes when the server
//! holds, most of it waiting for the idle connections to be closed).
//!
//! Runs only when `LANYARD_ABUSE_CONTROLLER` names the binary (tests/run.sh builds it with
//! `cargo build --release --bin lanyard-controller` and sets it): a debug build and a
//! loaded machine are not what the bounds are for. Otherwise it says it was skipped.

use std::path::PathBuf;
use std::time::Duration;

use lanyard_bench::abuse::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_holds_under_every_attack() {
    let Some(controller) = std::env::var_os("LANYARD_ABUSE_CONTROLLER") else {
        eprintln!(
            "SKIPPED the_server_holds_under_every_attack: set LANYARD_ABUSE_CONTROLLER to a release \
             lanyard-controller (tests/run.sh does)"
        );
        return;
    };
    let scale = std::env::var("LANYARD_ABUSE_SCALE")
        .ok()
        .map(|s| s.parse().expect("LANYARD_ABUSE_SCALE is a number"))
        .unwrap_or(0.5);
    let report = run(Options {
        controller: PathBuf::from(controller),
        examples: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples"),
        scale,
        only: Vec::new(),
        close_bound: Duration::from_secs(90),
    })
    .await
    .expect("the suite runs");
    println!("{}", report.markdown());
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "the server did not hold:\n{}",
        failures.join("\n")
    );
}
