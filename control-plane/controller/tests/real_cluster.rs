//! The opt-in real-cluster tier: the controller-side scenario of `kubernetes.rs` (routes
//! applied with kubectl reach an xDS client, route status is written back, a broken backend
//! reference turns `ResolvedRefs=False/BackendNotFound` and recovers) against the cluster the
//! `KUBECONFIG` names, instead of the loopback API server.
//!
//! Ignored by default; run it with
//!
//! ```sh
//! LANYARD_REAL_CLUSTER=1 KUBECONFIG=~/.kube/config \
//!     cargo nextest run --run-ignored only -E 'test(real_cluster)'
//! ```
//!
//! It needs `kubectl` (`$KUBECTL`, else on `PATH`) and the Gateway API CRDs installed in the
//! cluster (it skips, saying so, when HTTPRoute is not served). It creates a throwaway namespace
//! `lanyard-real-cluster-*`, runs `lanyard-controller --kubernetes --namespace <ns>` locally
//! (its Lease in that namespace too) and deletes the namespace at the end, pass or fail.

use std::env;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use lanyard_index::status::DEFAULT_CONTROLLER_NAME;
use lanyard_xds::testing::client::{SotwClient, find, names, node};
use lanyard_xds::testing::http_get;
use lanyard_xds::type_url;

mod process;

use process::Controller;

/// A real cluster's watches, status writes and Lease take longer than loopback's.
const WAIT: Duration = Duration::from_secs(60);

fn kubectl_binary() -> String {
    env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

/// `kubectl ARGS` (with `input` on stdin): its exit status success, stdout and stderr.
fn kubectl_output(args: &[&str], input: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(kubectl_binary())
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", kubectl_binary()));
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `kubectl ARGS`; panics when it fails.
fn kubectl(args: &[&str], input: Option<&str>) -> String {
    let (ok, stdout, stderr) = kubectl_output(args, input);
    assert!(ok, "kubectl {args:?} failed: {stderr}");
    stdout
}

fn apply(documents: &[String]) {
    kubectl(&["apply", "-f", "-"], Some(&documents.join("---\n")));
}

/// A selectorless Service (its EndpointSlice is ours, not the EndpointSlice controller's).
fn mk_service(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n"
    )
}

fn mk_endpoint_slice(ns: &str, service: &str, ip: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {service}, endpointslice.kubernetes.io/managed-by: lanyard-real-cluster-test}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]\n"
    )
}

/// An HTTPRoute on Service `cart` that sends everything to `backend`.
fn mk_route(ns: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: cart, namespace: {ns}}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: cart, port: 80}}]\n  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
    )
}

fn cluster(ns: &str, service: &str) -> String {
    format!("outbound|80||{service}.{ns}.svc.cluster.local")
}

/// Deletes the namespace (and so everything in it) when the test ends, however it ends.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let (ok, _, stderr) = kubectl_output(
            &[
                "delete",
                "namespace",
                &self.0,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
        if !ok {
            eprintln!("could not delete namespace {}: {stderr}", self.0);
        }
    }
}

/// `lanyard-controller --kubernetes --namespace NS` on free loopback ports.
fn start_controller(ns: &str) -> Controller {
    process::start(&[
        "--kubernetes",
        "--namespace",
        ns,
        "--lease-namespace",
        ns,
        "--identity",
        "lanyard-real-cluster-test",
    ])
}

/// This controller's conditions of HTTPRoute `ns/cart`, by type.
fn our_conditions(ns: &str) -> serde_json::Map<String, serde_json::Value> {
    let json = kubectl(&["get", "httproute", "cart", "-n", ns, "-o", "json"], None);
    let route: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut found = serde_json::Map::new();
    for parent in route
        .pointer("/status/parents")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        if parent["controllerName"].as_str() != Some(DEFAULT_CONTROLLER_NAME) {
            continue;
        }
        for condition in parent["conditions"].as_array().into_iter().flatten() {
            if let Some(type_) = condition["type"].as_str() {
                found.insert(type_.to_string(), condition.clone());
            }
        }
    }
    found
}

fn condition_is(
    conditions: &serde_json::Map<String, serde_json::Value>,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> bool {
    conditions.get(type_).is_some_and(|c| {
        c["status"].as_str() == Some(status)
            && reason.is_none_or(|r| c["reason"].as_str() == Some(r))
    })
}

/// Polls the route's status (boundedly) until `f` holds.
async fn wait_for_status(
    ns: &str,
    what: &str,
    f: impl Fn(&serde_json::Map<String, serde_json::Value>) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let conditions = our_conditions(ns);
        if f(&conditions) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "route status never showed {what}: {conditions:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Receives responses (acking each) until the route configuration of `cart:80` satisfies `f`.
async fn wait_for_routes(client: &mut SotwClient, ns: &str, what: &str, f: impl Fn(&str) -> bool) {
    let route_config = format!("cart.{ns}.svc.cluster.local:80");
    let deadline = Instant::now() + WAIT;
    loop {
        let response = client.recv().await;
        client.ack(&response);
        if response.type_url == type_url::ROUTE {
            let config: RouteConfiguration = find(&response, &route_config)
                .unwrap_or_else(|| panic!("no {route_config} in {:?}", names(&response)));
            if f(&format!("{config:?}")) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no route configuration with {what}"
        );
    }
}

fn enabled() -> bool {
    env::var("LANYARD_REAL_CLUSTER").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "set LANYARD_REAL_CLUSTER=1 and KUBECONFIG to run against a real cluster"]
async fn real_cluster_routes_status_and_broken_backend() {
    if !enabled() {
        eprintln!("SKIPPED real_cluster: set LANYARD_REAL_CLUSTER=1 (and KUBECONFIG) to run it");
        return;
    }
    let (ok, served, stderr) = kubectl_output(
        &[
            "api-resources",
            "--api-group=gateway.networking.k8s.io",
            "-o",
            "name",
        ],
        None,
    );
    assert!(ok, "kubectl cannot reach the cluster: {stderr}");
    if !served.lines().any(|l| l.starts_with("httproutes.")) {
        eprintln!(
            "SKIPPED real_cluster: the cluster does not serve HTTPRoute \
             (gateway.networking.k8s.io); install the Gateway API CRDs first"
        );
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ns = format!("lanyard-real-cluster-{}-{nanos}", std::process::id());
    apply(&[format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
    )]);
    let namespace = Namespace(ns.clone());
    let ns = namespace.0.as_str();

    apply(&[
        mk_service(ns, "cart"),
        mk_service(ns, "cart-v2"),
        mk_endpoint_slice(ns, "cart-v2", "10.1.0.2"),
        mk_route(ns, "cart-v2"),
    ]);
    let controller = start_controller(ns);
    let deadline = Instant::now() + WAIT;
    while http_get(controller.debug, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "the controller never got ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The route reaches a proxy in the namespace, and its status says so.
    let mut client = SotwClient::connect(controller.xds, node(&format!("client.{ns}"))).await;
    client.subscribe(
        type_url::ROUTE,
        &[&format!("cart.{ns}.svc.cluster.local:80")],
    );
    wait_for_routes(&mut client, ns, "cart-v2", |routes| {
        routes.contains(&cluster(ns, "cart-v2"))
    })
    .await;
    wait_for_status(ns, "Accepted and ResolvedRefs", |c| {
        condition_is(c, "Accepted", "True", None) && condition_is(c, "ResolvedRefs", "True", None)
    })
    .await;

    // Break the backend reference, then fix it.
    kubectl(&["delete", "service", "cart-v2", "-n", ns], None);
    wait_for_status(ns, "ResolvedRefs=False/BackendNotFound", |c| {
        condition_is(c, "Accepted", "True", None)
            && condition_is(c, "ResolvedRefs", "False", Some("BackendNotFound"))
    })
    .await;
    apply(&[mk_service(ns, "cart-v2")]);
    wait_for_status(ns, "ResolvedRefs=True again", |c| {
        condition_is(c, "ResolvedRefs", "True", None)
    })
    .await;
    wait_for_routes(&mut client, ns, "cart-v2 again", |routes| {
        routes.contains(&cluster(ns, "cart-v2"))
    })
    .await;

    drop(client);
    drop(controller);
    drop(namespace);
}
