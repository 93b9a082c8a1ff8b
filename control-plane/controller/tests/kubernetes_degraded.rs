//! `lanyard-controller --kubeconfig PATH` against a loopback API server that is not the
//! happy case:
//! - it refuses to let the controller read a kind (403): an optional kind is left out and the
//!   controller is ready, says so on `/readyz` and `/metrics`, and picks the kind up once it
//!   may read it; a required kind holds readiness back and `/readyz` names the permission;
//! - it serves the Gateway API kinds only at older versions: they are watched there, and
//!   their status written there.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lanyard_test_apiserver::{ApiServer, Config, Fault, FaultId, Running};
use lanyard_xds::testing::http_get;

mod cluster;
mod process;

use cluster::*;

/// Generous: the watcher's backoff between failed lists grows to 30 s.
const RECOVER: Duration = Duration::from_secs(60);

/// A 403 on list and on watch of `plural`, until cleared.
fn forbid(server: &Running, plural: &str) -> [FaultId; 2] {
    ["list", "watch"].map(|verb| server.add_fault(Fault::status(403).resource(plural).verb(verb)))
}

/// Polls `path` until `f` holds for its status and body (at most `within`).
async fn wait_for(
    debug: SocketAddr,
    path: &str,
    within: Duration,
    f: impl Fn(u16, &str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = http_get(debug, path).await;
        if f(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mk_grpc_route(name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: cart, port: 80}}]\n  rules: [{{backendRefs: [{{name: cart, port: 80}}]}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_optional_kind_it_may_not_read_is_left_out_until_it_may() {
    let server = start_shop(&[mk_service("cart"), mk_grpc_route("greeter-route")]).await;
    let kubeconfig = server.kubeconfig_path.clone();
    let faults = forbid(&server, "grpcroutes");
    let controller = start(&kubeconfig);

    let body = wait_for(controller.debug, "/readyz", RECOVER, |status, _| {
        status == 200
    })
    .await;
    assert!(
        body.contains(
            "degraded: cannot read the optional kind, left out: GRPCRoute: forbidden; needs list and watch on \"grpcroutes\" in API group \"gateway.networking.k8s.io\" at version v1 at the cluster scope"
        ),
        "{body}"
    );
    let (_, metrics) = http_get(controller.debug, "/metrics").await;
    assert!(
        metrics.contains(
            "lanyard_k8s_watches_unavailable{kind=\"GRPCRoute\",reason=\"forbidden\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("lanyard_k8s_watch_errors_total{kind=\"GRPCRoute\",code=\"403\"}"),
        "{metrics}"
    );
    let (_, translation) = http_get(controller.debug, "/debug/translation").await;
    assert!(!translation.contains("greeter-route"), "{translation}");

    // The permission is granted: the watch lists and the route is read.
    for fault in faults {
        server.clear_fault(fault);
    }
    wait_for(controller.debug, "/readyz", RECOVER, |status, body| {
        status == 200 && !body.contains("GRPCRoute")
    })
    .await;
    wait_for(
        controller.debug,
        "/debug/translation",
        RECOVER,
        |_, body| body.contains("greeter-route"),
    )
    .await;
    let (_, metrics) = http_get(controller.debug, "/metrics").await;
    assert!(
        metrics.contains(
            "lanyard_k8s_watches_unavailable{kind=\"GRPCRoute\",reason=\"forbidden\"} 0\n"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_required_kind_it_may_not_read_holds_readiness_back_and_names_the_permission() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let kubeconfig = server.kubeconfig_path.clone();
    let faults = forbid(&server, "services");
    let controller = start_with(&kubeconfig, &["--namespace", "shop"]);

    let needs = "not ready: cannot read the required kind Service (namespace shop): forbidden; needs list and watch on \"services\" in API group \"\" at version v1 in the namespace \"shop\"";
    let body = wait_for(controller.debug, "/readyz", RECOVER, |_, body| {
        body.contains(needs)
    })
    .await;
    assert!(body.starts_with("not ready"), "{body}");
    assert_eq!(http_get(controller.debug, "/readyz").await.0, 503);

    for fault in faults {
        server.clear_fault(fault);
    }
    wait_for(controller.debug, "/readyz", RECOVER, |status, body| {
        status == 200 && !body.contains("Service")
    })
    .await;
}

/// The parents of `kind` `shop/name` at `api_version` (as stored) that this controller wrote.
fn our_parents(server: &Running, api_version: &str, kind: &str, name: &str) -> usize {
    server
        .object(api_version, kind, Some("shop"), name)
        .and_then(|o| {
            o.pointer("/status/parents")
                .and_then(|p| p.as_array())
                .cloned()
        })
        .unwrap_or_default()
        .iter()
        .filter(|p| {
            p["controllerName"].as_str() == Some(lanyard_index::status::DEFAULT_CONTROLLER_NAME)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn older_gateway_api_versions_are_watched_and_get_their_status_there() {
    const GATEWAY: &str = "gateway.networking.k8s.io";
    let server = ApiServer::start(Config::default()).await.unwrap();
    // Gateway API v0.8: HTTPRoute at v1beta1; before v1.1: GRPCRoute at v1alpha2.
    server.unserve_version(GATEWAY, "v1", Some("httproutes"));
    server.unserve_version(GATEWAY, "v1", Some("grpcroutes"));
    let kubeconfig = server.kubeconfig_path.clone();
    kubectl_apply(
        &kubeconfig,
        &[
            mk_shop(),
            mk_service("cart"),
            mk_service("cart-v2"),
            mk_route("cart-v2").replace("/v1\n", "/v1beta1\n"),
            mk_grpc_route("greeter-route").replace("/v1\n", "/v1alpha2\n"),
        ],
    )
    .await;
    let controller = start(&kubeconfig);
    // Status is written once both are read (a write at v1 would be a 404).
    let deadline = Instant::now() + RECOVER;
    while our_parents(
        &server,
        "gateway.networking.k8s.io/v1beta1",
        "HTTPRoute",
        "cart",
    ) == 0
        || our_parents(
            &server,
            "gateway.networking.k8s.io/v1alpha2",
            "GRPCRoute",
            "greeter-route",
        ) == 0
    {
        assert!(Instant::now() < deadline, "no status written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at_v1: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| {
            r.path.starts_with("/apis/gateway.networking.k8s.io/v1/")
                && (r.path.contains("/httproutes") || r.path.contains("/grpcroutes"))
        })
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect();
    assert!(
        at_v1.is_empty(),
        "requests at an unserved version: {at_v1:?}"
    );
    // Ready (the xDS server publishes shortly after the status pass), and not degraded.
    let body = wait_for(controller.debug, "/readyz", RECOVER, |status, _| {
        status == 200
    })
    .await;
    assert!(!body.contains("degraded"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kind_served_at_no_version_lanyard_reads_says_which_it_needs() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    server.unserve_version("gateway.networking.k8s.io", "v1", Some("grpcroutes"));
    server.unserve_version("gateway.networking.k8s.io", "v1alpha2", Some("grpcroutes"));
    let controller = start(&server.kubeconfig_path);
    let body = wait_for(controller.debug, "/readyz", RECOVER, |status, _| {
        status == 200
    })
    .await;
    assert!(
        body.contains("degraded: not served, treated as empty: GRPCRoute: not_served; needs the API server to serve \"grpcroutes\" in API group \"gateway.networking.k8s.io\" at one of the versions v1, v1alpha2"),
        "{body}"
    );
}
