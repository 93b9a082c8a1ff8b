//! Lanyard against gRPC's own xDS client: runs the Python suite `tests/e2e/run_e2e.py`
//! (see its docstring) against the already-built `lanyard-controller` binary.
//!
//! Needs `.venv` at the repository root (`tests/e2e/setup.sh`), the controller, loopback API
//! server and webhook binaries (`cargo build --bin lanyard-controller --bin
//! lanyard-test-apiserver --bin lanyard-webhook`), `/usr/bin/kubectl` and `openssl`. Without the venv the test is skipped with a
//! notice, unless `LANYARD_E2E` is set (CI sets `LANYARD_E2E=1`), when a missing venv is a
//! failure. `LANYARD_CONTROLLER`, `LANYARD_TEST_APISERVER` and `LANYARD_WEBHOOK` override the
//! binaries' paths;
//! `LANYARD_E2E_ARGS` passes arguments to the suite (e.g. `-k live`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The suite bounds each scenario itself (90 s); this is the backstop for the whole run (and
/// for the harness's unit checks).
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

/// The two tests run one after the other: their output stays readable, and the unit checks'
/// processes do not compete with the timing of the live-change scenario.
static SERIAL: Mutex<()> = Mutex::new(());

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `LANYARD_CONTROLLER`, else the binary beside this test's own target directory
/// (`target/<profile>/deps/e2e_grpc-*` -> `target/<profile>/lanyard-controller`), else
/// `<repo>/target/debug/lanyard-controller`.
fn controller_binary(root: &Path) -> PathBuf {
    binary(root, "LANYARD_CONTROLLER", "lanyard-controller")
}

/// [`binary`], which must have been built: the failure says how to build it. The suite
/// also needs the loopback Kubernetes API server (`lanyard-test-apiserver`, for the
/// `kubernetes` scenarios) and the SMI conversion webhook (`lanyard-webhook`, for
/// `smi_kubernetes`), found like the controller.
fn built(root: &Path, var: &str, name: &str) -> PathBuf {
    let path = binary(root, var, name);
    assert!(
        path.is_file(),
        "no {name} binary at {}: run `cargo build --bin {name}` first (or set {var})",
        path.display()
    );
    path
}

fn binary(root: &Path, var: &str, name: &str) -> PathBuf {
    if let Some(path) = env::var_os(var) {
        return PathBuf::from(path);
    }
    let name = format!("{name}{}", env::consts::EXE_SUFFIX);
    let beside_us = env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(&name)));
    match beside_us {
        Some(path) if path.is_file() => path,
        _ => root.join("target").join("debug").join(name),
    }
}

fn e2e_required() -> bool {
    env::var("LANYARD_E2E").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// SIGTERM first so the suite kills its own children, SIGKILL if it does not go.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The venv's interpreter, or `None` (after the skip notice) when the test is to be skipped.
fn venv_python(test: &str) -> Option<PathBuf> {
    let python = repo_root().join(".venv").join("bin").join("python");
    if python.exists() {
        return Some(python);
    }
    if e2e_required() {
        panic!(
            "LANYARD_E2E is set but {} does not exist: run tests/e2e/setup.sh first",
            python.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: no {} (run tests/e2e/setup.sh, or set LANYARD_E2E=1 to make this a \
         failure)",
        python.display()
    );
    None
}

/// Runs `command` with the terminal as its output, within `timeout`; panics unless it exits 0.
fn run(mut command: Command, timeout: Duration, what: &str) {
    eprintln!("running {command:?}");
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                stop(&mut child);
                panic!("{what} did not finish within {timeout:?}");
            }
            Ok(None) => sleep(Duration::from_millis(200)),
            Err(e) => panic!("wait for {what}: {e}"),
        }
    };
    assert!(
        status.success(),
        "{what} failed ({status}); its output is above"
    );
}

/// The harness's own unit checks (statistics, timelines, parsing, backends and the client
/// process on plain targets): `python -m unittest tests/e2e/test_harness.py`.
#[test]
fn e2e_harness_unit_checks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = venv_python("e2e_harness_unit_checks") else {
        return;
    };
    let root = repo_root();
    built(&root, "LANYARD_WEBHOOK", "lanyard-webhook");
    let mut command = Command::new(python);
    command
        .args(["-u", "-m", "unittest"])
        .arg(root.join("tests").join("e2e").join("test_harness.py"))
        .current_dir(&root)
        .env("LANYARD_CONTROLLER", controller_binary(&root));
    // A backstop against a hang, not a speed check: the checks run every scenario up to its
    // controller start (a controller `--once` each, the Kubernetes ones a loopback API server,
    // the webhook and kubectl too), about 50 s on a loaded 2-core machine and over 120 s at a
    // load average of 10.
    run(command, SUITE_TIMEOUT, "the e2e harness unit checks");
}

/// The scenarios: weighted splits, method/header/path matches, a live change, a NACK,
/// consumer vs producer routes, Kubernetes mode (kubectl against the loopback API server,
/// route status, a broken and fixed backend, a NACK in route status), SMI, and every kind of
/// route and split seen by clients that start after each change (no NACK allowed), each
/// against real gRPC clients.
#[test]
fn grpc_xds_clients_end_to_end() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(python) = venv_python("grpc_xds_clients_end_to_end") else {
        return;
    };
    let root = repo_root();
    let controller = built(&root, "LANYARD_CONTROLLER", "lanyard-controller");
    let apiserver = built(&root, "LANYARD_TEST_APISERVER", "lanyard-test-apiserver");
    let webhook = built(&root, "LANYARD_WEBHOOK", "lanyard-webhook");
    let mut command = Command::new(python);
    command
        .arg("-u")
        .arg(root.join("tests").join("e2e").join("run_e2e.py"))
        .current_dir(&root)
        .env("LANYARD_CONTROLLER", &controller)
        .env("LANYARD_TEST_APISERVER", &apiserver)
        .env("LANYARD_WEBHOOK", &webhook);
    if let Ok(extra) = env::var("LANYARD_E2E_ARGS") {
        command.args(extra.split_whitespace());
    }
    // The suite's output goes straight to the terminal (not captured): its figures belong in
    // the CI log.
    run(command, SUITE_TIMEOUT, "the gRPC e2e suite");
}
