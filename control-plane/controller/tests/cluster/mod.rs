//! What the Kubernetes-mode tests share: manifests of the `shop` namespace, the real kubectl
//! against the loopback API server, starting the controller on it, and waiting for what an
//! xDS client receives.
#![allow(dead_code)] // Each test binary uses its own part of these helpers.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use lanyard_xds::testing::client::{SotwClient, find, names};
use lanyard_xds::testing::{WAIT, http_get};
use lanyard_xds::type_url;

use crate::process::{self, Controller};

const KUBECTL: &str = "/usr/bin/kubectl";
pub const ROUTE_CONFIG: &str = "cart.shop.svc.cluster.local:80";

pub fn cluster(service: &str) -> String {
    format!("outbound|80||{service}.shop.svc.cluster.local")
}

/// The `shop` Namespace every test's objects live in.
pub fn mk_shop() -> String {
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n".to_string()
}

/// Starts the loopback API server and applies, with kubectl, the `shop` Namespace and then
/// `documents`.
pub async fn start_shop(documents: &[String]) -> lanyard_test_apiserver::Running {
    let server = lanyard_test_apiserver::ApiServer::start(Default::default())
        .await
        .unwrap();
    let mut all = vec![mk_shop()];
    all.extend_from_slice(documents);
    kubectl_apply(&server.kubeconfig_path, &all).await;
    server
}

pub fn mk_service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 80}}]}}\n"
    )
}

pub fn mk_endpoint_slice(service: &str, ip: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: shop, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]\n"
    )
}

/// An HTTPRoute on Service `cart` that sends everything to `backend`.
pub fn mk_route(backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: cart, namespace: shop}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: cart, port: 80}}]\n  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
    )
}

/// `status.parents` of HTTPRoute shop/`name`, as `kubectl get -o yaml` shows it.
pub async fn route_parents(kubeconfig: &Path, name: &str) -> Vec<serde_yaml::Value> {
    let yaml = kubectl(
        kubeconfig,
        &["get", "httproute", name, "-n", "shop", "-o", "yaml"],
    )
    .await;
    let route: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    route["status"]["parents"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

/// This controller's condition of a type in `parents`, if any.
pub fn our_condition(parents: &[serde_yaml::Value], type_: &str) -> Option<serde_yaml::Value> {
    parents
        .iter()
        .filter(|p| {
            p["controllerName"].as_str() == Some(lanyard_index::status::DEFAULT_CONTROLLER_NAME)
        })
        .flat_map(|p| p["conditions"].as_sequence().cloned().unwrap_or_default())
        .find(|c| c["type"].as_str() == Some(type_))
}

/// Runs kubectl off the async threads (the API server runs on them); its stdout.
pub async fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let kubeconfig = kubeconfig.to_path_buf();
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&args)
            .output()
            .expect("kubectl runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `kubectl apply -f` of these documents.
pub async fn kubectl_apply(kubeconfig: &Path, documents: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, documents.join("---\n")).unwrap();
    kubectl(kubeconfig, &["apply", "-f", file.to_str().unwrap()]).await;
}

/// Starts the binary on free ports against the kubeconfig.
pub fn start(kubeconfig: &Path) -> Controller {
    start_with(kubeconfig, &[])
}

/// [`start`] with more flags.
pub fn start_with(kubeconfig: &Path, flags: &[&str]) -> Controller {
    let mut args = vec![OsStr::new("--kubeconfig"), kubeconfig.as_os_str()];
    args.extend(flags.iter().map(OsStr::new));
    process::start(&args)
}

/// Waits (boundedly) for `/readyz` to answer 200.
pub async fn wait_ready(debug: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(debug, "/readyz").await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The clusters the route configuration of `cart:80` sends to.
pub fn route_clusters(response: &DiscoveryResponse) -> String {
    let config: RouteConfiguration = find(response, ROUTE_CONFIG)
        .unwrap_or_else(|| panic!("no {ROUTE_CONFIG} in {:?}", names(response)));
    format!("{config:?}")
}

/// Receives responses (acking each) until a route configuration satisfies `f`.
pub async fn wait_for_routes(client: &mut SotwClient, what: &str, f: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let response = client.recv().await;
        client.ack(&response);
        if response.type_url == type_url::ROUTE && f(&route_clusters(&response)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no route configuration with {what}"
        );
    }
}
