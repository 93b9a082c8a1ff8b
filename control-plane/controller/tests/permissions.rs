//! `lanyard-controller --kubeconfig PATH` against the loopback API server when it refuses to
//! let the controller read a kind (403): an optional kind is left out and the controller is
//! ready, says so on `/readyz` and `/metrics`, and picks the kind up once it may read it; a
//! required kind holds readiness back and `/readyz` names the permission.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lanyard_test_apiserver::{ApiServer, Config, Fault, FaultId, Running};
use lanyard_xds::testing::http_get;

mod cluster;
#[allow(dead_code)] // The xDS address is not used here.
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
    let server = ApiServer::start(Config::default()).await.unwrap();
    let kubeconfig = server.kubeconfig_path.clone();
    kubectl_apply(
        &kubeconfig,
        &[
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n".to_string(),
            mk_service("cart"),
            mk_grpc_route("greeter-route"),
        ],
    )
    .await;
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
