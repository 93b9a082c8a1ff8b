//! `lanyard-controller --kubeconfig PATH` against the loopback API server with faults
//! injected (`tests/apiserver/src/faults.rs`): status writes that keep failing back off per
//! route, and a Lease renewal that hangs ends leadership by the renew deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use lanyard_test_apiserver::{Fault, Running};
use lanyard_xds::testing::WAIT;

mod cluster;
mod process;

use cluster::*;

const STATUS_PATH: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes";
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

/// An HTTPRoute named `name` on Service `cart`, to `backend`.
fn mk_named_route(name: &str, backend: &str) -> String {
    mk_route(backend).replace("name: cart, namespace", &format!("name: {name}, namespace"))
}

/// How many requests of `verb` the server saw on the `/status` of route `name`.
fn status_requests(server: &Running, verb: &str, name: &str) -> usize {
    let path = format!("{STATUS_PATH}/{name}/status");
    server
        .requests()
        .iter()
        .filter(|r| r.verb == verb && r.path == path)
        .count()
}

/// The `reason` of this controller's `ResolvedRefs` condition on route `name`, if any.
async fn resolved_reason(kubeconfig: &Path, name: &str) -> Option<String> {
    our_condition(&route_parents(kubeconfig, name).await, "ResolvedRefs")
        .and_then(|c| c["reason"].as_str().map(str::to_string))
}

/// Polls until `f` holds, at most `bound`.
async fn wait_until<F, Fut>(bound: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + bound;
    while !f().await {
        assert!(Instant::now() < deadline, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A persistent 403 on one route's status writes and a persistent 422 on another's are
/// retried with the per-route exponential backoff (5 s, 10 s, 20 s, ...), not every 5 s, and
/// the routes get their status once the faults clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_status_writes_back_off_per_route_and_recover() {
    let server = start_shop(&[
        mk_service("cart"),
        mk_service("cart-v2"),
        mk_named_route("forbidden", "cart-v2"),
        mk_named_route("invalid", "cart-v2"),
    ])
    .await;
    let kubeconfig = server.kubeconfig_path.clone();
    let faults = [("forbidden", 403), ("invalid", 422)].map(|(name, code)| {
        server.add_fault(
            Fault::status(code)
                .verb("patch")
                .path_prefix(&format!("{STATUS_PATH}/{name}/status")),
        )
    });
    let _controller = start_with(&kubeconfig, &["--identity", "a"]);
    wait_until(WAIT, "a first status write of each route", || async {
        faults.iter().all(|id| server.fault_hits(*id) > 0)
    })
    .await;

    // Without backoff a failing route is written every 5 s: 6 writes in 25 s. With it the
    // writes come 5, 10, 20 s apart: 3.
    let window = Duration::from_secs(25);
    tokio::time::sleep(window).await;
    for (name, id) in ["forbidden", "invalid"].iter().zip(faults) {
        let patches = server.fault_hits(id);
        let gets = status_requests(&server, "get", name);
        assert!(
            patches <= 3,
            "{name}: {patches} failed status writes in {window:?} (every 5 s?)"
        );
        assert!(gets <= 3, "{name}: {gets} status reads in {window:?}");
        assert_eq!(
            status_requests(&server, "patch", name),
            patches,
            "{name}: every write failed"
        );
    }

    // The faults clear: the next retry (at most 40 s after the last) writes the status.
    server.clear_faults();
    for name in ["forbidden", "invalid"] {
        wait_until(
            Duration::from_secs(60),
            &format!("{name} gets status after the fault cleared"),
            || async {
                resolved_reason(&kubeconfig, name).await.as_deref() == Some("ResolvedRefs")
            },
        )
        .await;
    }
}

/// A Lease renewal that hangs (the API server holds the request) ends leadership at the
/// renew deadline: while it hangs, neither the old leader nor the other replica (whose
/// takeover hangs too) writes status, so two replicas never both lead; once the API server
/// answers again, one of them does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_lease_renewal_ends_leadership_at_the_renew_deadline() {
    let server = start_shop(&[
        mk_service("cart"),
        mk_service("cart-v2"),
        mk_route("cart-v2"),
    ])
    .await;
    let kubeconfig = server.kubeconfig_path.clone();
    // Lease 3 s: renewals every 0.4 s, leadership ends 2 s after the last one began.
    let flags = ["--lease-duration", "3"];
    let _a = start_with(&kubeconfig, &[&["--identity", "a"][..], &flags].concat());
    wait_until(WAIT, "status from the leader", || async {
        resolved_reason(&kubeconfig, "cart").await.as_deref() == Some("ResolvedRefs")
    })
    .await;
    let _b = start_with(&kubeconfig, &[&["--identity", "b"][..], &flags].concat());
    wait_ready(_b.debug).await;

    // Every write of the Lease hangs from now on (open-ended: kube::Client's retries of 429
    // and 503 do not apply to a request that never gets an answer).
    let stall = server.add_fault(Fault::stall().verb("update").path_prefix(LEASE_PATH));
    wait_until(WAIT, "a renewal that hangs", || async {
        server.fault_hits(stall) > 0
    })
    .await;
    // The renew deadline (2 s) passes, with a margin for a loaded machine.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let writes_before = status_requests(&server, "patch", "cart");
    kubectl(&kubeconfig, &["delete", "service", "cart-v2", "-n", "shop"]).await;
    // A leader would write BackendNotFound within a pass (well under a second here).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        status_requests(&server, "patch", "cart"),
        writes_before,
        "a replica wrote status while its Lease renewal hung past the renew deadline"
    );
    assert_eq!(
        resolved_reason(&kubeconfig, "cart").await.as_deref(),
        Some("ResolvedRefs")
    );

    // The API server answers again: one replica leads and writes.
    server.clear_faults();
    server.release_stalls();
    wait_until(WAIT * 2, "BackendNotFound from the new leader", || async {
        resolved_reason(&kubeconfig, "cart").await.as_deref() == Some("BackendNotFound")
    })
    .await;
}
