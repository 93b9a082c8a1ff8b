//! Starting `lanyard-controller` in the integration tests: on free loopback ports, with the
//! addresses it prints read back, and killed when dropped.
#![allow(dead_code)] // Each test binary uses its own part of these helpers.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use lanyard_xds::testing::WAIT;

/// A running controller.
pub struct Controller {
    pub child: Child,
    pub xds: SocketAddr,
    pub debug: SocketAddr,
    pub metrics: SocketAddr,
}

impl Controller {
    /// Sends the controller SIGTERM, as the kubelet does to stop a pod.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed: {sent}");
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `args` (its source and any other flags) on free ports and reads
/// the addresses it prints.
pub fn start<S: AsRef<OsStr>>(args: &[S]) -> Controller {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lanyard-controller"))
        .args(args)
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--debug-address",
            "127.0.0.1:0",
            "--metrics-address",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the controller starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut xds, mut debug, mut metrics) = (None, None, None);
    let deadline = Instant::now() + WAIT;
    while xds.is_none() || debug.is_none() || metrics.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the controller printed its addresses in time");
        if let Some(address) = line.strip_prefix("xds listening on ") {
            xds = Some(address.parse().unwrap());
        } else if let Some(address) = line.strip_prefix("debug listening on ") {
            debug = Some(address.parse().unwrap());
        } else if let Some(address) = line.strip_prefix("metrics listening on ") {
            metrics = Some(address.parse().unwrap());
        }
    }
    Controller {
        child,
        xds: xds.unwrap(),
        debug: debug.unwrap(),
        metrics: metrics.unwrap(),
    }
}
