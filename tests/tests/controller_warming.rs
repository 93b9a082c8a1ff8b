//! Cluster warming against the `lanyard-controller` binary in file mode: a Service port's
//! `appProtocol` changes from `http` to `kubernetes.io/h2c` in the watched directory, so its
//! cluster changes and its ClusterLoadAssignment does not. An Envoy-habit client (SotW and
//! delta, `lanyard_xds::testing::client`) re-creates the cluster and must have the
//! assignment within a couple of seconds, not after Envoy's 15 s `initial_fetch_timeout`.
//!
//! Needs the controller binary (`cargo build --workspace` builds it); `LANYARD_CONTROLLER`
//! overrides its path.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use lanyard_xds::testing::client::{DeltaClient, SotwClient, node_in};
use lanyard_xds::type_url;

/// Well under Envoy's 15 s `initial_fetch_timeout`.
const PROMPTLY: Duration = Duration::from_secs(2);
const CART: &str = "outbound|80||cart.shop.svc.cluster.local";

fn controller() -> PathBuf {
    if let Some(path) = std::env::var_os("LANYARD_CONTROLLER") {
        return PathBuf::from(path);
    }
    let name = format!("lanyard-controller{}", std::env::consts::EXE_SUFFIX);
    let beside_us = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(&name)));
    match beside_us {
        Some(path) if path.is_file() => path,
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(name),
    }
}

/// The controller process, killed when dropped.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the controller on `dir`; returns it and the ADS address it printed.
fn start(dir: &Path) -> (Controller, SocketAddr) {
    let path = controller();
    assert!(
        path.is_file(),
        "no controller at {}: run `cargo build --workspace` first (or set LANYARD_CONTROLLER)",
        path.display()
    );
    let mut child = Command::new(&path)
        .arg("--config-dir")
        .arg(dir)
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--debug-address",
            "127.0.0.1:0",
            "--metrics-address",
            "127.0.0.1:0",
        ])
        .env_remove("LANYARD_CONFIG_DIR")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the controller");
    let stdout = child.stdout.take().expect("piped stdout");
    let controller = Controller(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(address) = line.split("xds listening on ").nth(1) {
                let _ = tx.send(address.trim().to_string());
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the controller printed no `xds listening on ADDR`");
    (controller, address.parse().expect("an address"))
}

fn manifests(app_protocol: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  selector:
    app: cart
  ports:
  - name: web
    port: 80
    targetPort: 8080
    appProtocol: {app_protocol}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: cart-1
  namespace: shop
  labels:
    kubernetes.io/service-name: cart
addressType: IPv4
ports:
- name: web
  port: 8080
  protocol: TCP
endpoints:
- addresses: ["10.1.0.5"]
  conditions: {{ready: true, serving: true, terminating: false}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_protocol_change_warms_the_recreated_cluster_promptly() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cart.yaml");
    std::fs::write(&file, manifests("http")).expect("write the manifests");
    let (_controller, ads) = start(dir.path());

    let mut sotw = SotwClient::envoy(ads, node_in("probe-0.shop", "shop", None)).await;
    sotw.subscribe(type_url::CLUSTER, &[]);
    let clusters = sotw.recv_type(type_url::CLUSTER).await;
    assert!(
        lanyard_xds::testing::client::names(&clusters).contains(&CART.to_string()),
        "{:?}",
        lanyard_xds::testing::client::names(&clusters)
    );
    sotw.wait_warm(Duration::from_secs(10))
        .await
        .expect("warm at start");
    let mut delta = DeltaClient::envoy(ads, node_in("probe-1.shop", "shop", None)).await;
    delta.subscribe(type_url::CLUSTER, &[], &[]);
    assert_eq!(delta.recv().await.type_url, type_url::CLUSTER);
    delta
        .wait_warm(Duration::from_secs(10))
        .await
        .expect("warm at start");

    std::fs::write(&file, manifests("kubernetes.io/h2c")).expect("rewrite the manifests");
    // Each client re-creates cart's cluster when its CDS update comes.
    while sotw.is_warm() {
        sotw.recv().await;
    }
    assert_eq!(sotw.warming().iter().collect::<Vec<_>>(), [CART]);
    if let Err(warming) = sotw.wait_warm(PROMPTLY).await {
        panic!("SotW: still warming {PROMPTLY:?} after the cluster changed: {warming:?}");
    }
    while delta.is_warm() {
        delta.recv().await;
    }
    assert_eq!(delta.warming().iter().collect::<Vec<_>>(), [CART]);
    if let Err(warming) = delta.wait_warm(PROMPTLY).await {
        panic!("delta: still warming {PROMPTLY:?} after the cluster changed: {warming:?}");
    }
}
