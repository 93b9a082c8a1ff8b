//! `lanyard-controller --kubeconfig PATH` against the loopback API server
//! (`lanyard-test-apiserver`): objects applied with the real kubectl reach a gRPC xDS client,
//! and the controller rides out `410 Gone` and dropped watches without the proxies losing their
//! configuration.

use std::path::Path;
use std::time::{Duration, Instant};

use lanyard_test_apiserver::{ApiServer, Config};
use lanyard_xds::testing::client::{SotwClient, names, node};
use lanyard_xds::testing::{WAIT, http_get};
use lanyard_xds::type_url;

mod cluster;
mod process;

use cluster::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_applied_routes_reach_proxies_and_survive_gone_and_dropped_watches() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let kubeconfig = server.kubeconfig_path.clone();
    let controller = start(&kubeconfig);
    // Nothing in the cluster is still a complete sync.
    wait_ready(controller.debug).await;
    assert_eq!(http_get(controller.debug, "/healthz").await.0, 200);

    kubectl_apply(
        &kubeconfig,
        &[
            mk_shop(),
            mk_service("cart"),
            mk_service("cart-v2"),
            mk_endpoint_slice("cart-v2", "10.1.0.2"),
            mk_route("cart-v2"),
        ],
    )
    .await;

    let mut client = SotwClient::connect(controller.xds, node("client.shop")).await;
    client.subscribe(type_url::CLUSTER, &[]);
    let deadline = Instant::now() + WAIT;
    loop {
        let clusters = client.recv_type(type_url::CLUSTER).await;
        client.ack(&clusters);
        if names(&clusters).contains(&cluster("cart-v2")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no cart-v2 cluster: {:?}",
            names(&clusters)
        );
    }
    client.subscribe(type_url::ROUTE, &[ROUTE_CONFIG]);
    wait_for_routes(&mut client, "cart-v2", |routes| {
        routes.contains(&cluster("cart-v2"))
    })
    .await;

    // Every watch fails or drops; the watchers relist or resume.
    let lists = |server: &lanyard_test_apiserver::Running| {
        server
            .requests()
            .iter()
            .filter(|r| r.verb == "list")
            .count()
    };
    let lists_before = lists(&server);
    for kind in [
        "Service",
        "EndpointSlice",
        "Pod",
        "HTTPRoute",
        "GRPCRoute",
        "ReferenceGrant",
    ] {
        server.inject_gone(kind);
    }
    server.drop_watches();
    let deadline = Instant::now() + WAIT;
    while lists(&server) < lists_before + 6 || server.open_watches() < 6 {
        assert!(Instant::now() < deadline, "the watches did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same objects relisted give no new configuration.
    let pushed = tokio::time::timeout(Duration::from_millis(500), client.next_untimed()).await;
    assert!(
        pushed.is_err(),
        "a relist of unchanged objects pushed {pushed:?}"
    );
    assert_eq!(http_get(controller.debug, "/readyz").await.0, 200);

    // And changes are followed after it.
    kubectl_apply(&kubeconfig, &[mk_service("cart-v3"), mk_route("cart-v3")]).await;
    wait_for_routes(&mut client, "cart-v3", |routes| {
        routes.contains(&cluster("cart-v3")) && !routes.contains(&cluster("cart-v2"))
    })
    .await;
}

/// Waits (boundedly) for the controllers' Lease to be held by `identity`.
async fn wait_for_holder(server: &lanyard_test_apiserver::Running, identity: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let lease = server.object(
            "coordination.k8s.io/v1",
            "Lease",
            Some("default"),
            "lanyard-controller",
        );
        let holder = lease
            .as_ref()
            .and_then(|l| l.pointer("/spec/holderIdentity"))
            .and_then(|h| h.as_str());
        if holder == Some(identity) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Lease is not held by {identity}: {lease:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const OTHER_CONTROLLER: &str = "example.com/gateway-controller";

/// Sets the route's `status.parents` to one entry of another controller, as a merge patch of
/// `/status` with kubectl.
async fn patch_other_controllers_entry(kubeconfig: &Path) {
    let other = format!(
        r#"{{"status":{{"parents":[{{"parentRef":{{"name":"gw"}},"controllerName":"{OTHER_CONTROLLER}","conditions":[]}}]}}}}"#
    );
    kubectl(
        kubeconfig,
        &[
            "patch",
            "httproute",
            "cart",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            &other,
        ],
    )
    .await;
}

/// Polls the route's status until `f` holds.
async fn wait_for_status(
    kubeconfig: &Path,
    what: &str,
    f: impl Fn(&[serde_yaml::Value]) -> bool,
) -> Vec<serde_yaml::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let parents = route_parents(kubeconfig, "cart").await;
        if f(&parents) {
            return parents;
        }
        assert!(
            Instant::now() < deadline,
            "no status with {what}: {parents:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route_status_is_written_beside_other_controllers_and_follows_the_backend() {
    let server = start_shop(&[
        mk_service("cart"),
        mk_service("cart-v2"),
        mk_route("cart-v2"),
    ])
    .await;
    let kubeconfig = server.kubeconfig_path.clone();
    // Another controller's entry, there before this one starts.
    patch_other_controllers_entry(&kubeconfig).await;

    let controller = start_with(
        &kubeconfig,
        &["--identity", "first", "--lease-duration", "2"],
    );
    let accepted = wait_for_status(&kubeconfig, "Accepted and ResolvedRefs", |parents| {
        our_condition(parents, "Accepted").is_some_and(|c| c["status"].as_str() == Some("True"))
            && our_condition(parents, "ResolvedRefs")
                .is_some_and(|c| c["status"].as_str() == Some("True"))
    })
    .await;
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert!(
        accepted
            .iter()
            .any(|p| p["controllerName"].as_str() == Some(OTHER_CONTROLLER))
    );
    let accepted_since =
        our_condition(&accepted, "Accepted").unwrap()["lastTransitionTime"].clone();
    assert!(
        accepted_since.as_str().is_some_and(|t| t.ends_with('Z')),
        "{accepted_since:?}"
    );

    kubectl(&kubeconfig, &["delete", "service", "cart-v2", "-n", "shop"]).await;
    let broken = wait_for_status(&kubeconfig, "BackendNotFound", |parents| {
        our_condition(parents, "ResolvedRefs").is_some_and(|c| {
            c["status"].as_str() == Some("False") && c["reason"].as_str() == Some("BackendNotFound")
        })
    })
    .await;
    assert_eq!(broken.len(), 2, "{broken:?}");
    // Accepted did not change, so neither did its time.
    assert_eq!(
        our_condition(&broken, "Accepted").unwrap()["lastTransitionTime"],
        accepted_since
    );

    // The backend comes back: the route resolves again.
    kubectl_apply(&kubeconfig, &[mk_service("cart-v2")]).await;
    wait_for_status(&kubeconfig, "ResolvedRefs again", |parents| {
        our_condition(parents, "ResolvedRefs").is_some_and(|c| c["status"].as_str() == Some("True"))
    })
    .await;

    // Written as this controller on /status, by a merge patch guarded by the resourceVersion
    // read: never a forced server-side apply over the other controller's list.
    let status_path = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/cart/status";
    let applies = || {
        server
            .requests()
            .into_iter()
            .filter(|r| {
                r.verb == "patch"
                    && r.path == status_path
                    && !r.query.contains("fieldManager=kubectl")
            })
            .collect::<Vec<_>>()
    };
    let written = applies();
    assert!(!written.is_empty());
    for request in &written {
        assert!(!request.query.contains("force=true"), "{request:?}");
        assert!(
            request.query.contains("fieldManager=lanyard.dev"),
            "{request:?}"
        );
    }

    let managers = kubectl(
        &kubeconfig,
        &[
            "get",
            "httproute",
            "cart",
            "-n",
            "shop",
            "--show-managed-fields",
            "-o",
            "jsonpath={range .metadata.managedFields[*]}{.manager}={.operation}/{.subresource};{end}",
        ],
    )
    .await;
    assert!(
        managers.contains(&format!(
            "{}=Update/status",
            lanyard_index::status::DEFAULT_CONTROLLER_NAME
        )),
        "{managers}"
    );
    assert!(!managers.contains("=Apply/status"), "{managers}");

    // A restart finds the status up to date and writes nothing.
    drop(controller);
    let controller = start_with(
        &kubeconfig,
        &["--identity", "second", "--lease-duration", "2"],
    );
    wait_ready(controller.debug).await;
    wait_for_holder(&server, "second").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        applies().len(),
        written.len(),
        "a restart rewrote the status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_replica_takes_over_status_when_the_leader_dies() {
    let server = start_shop(&[
        mk_service("cart"),
        mk_service("cart-v2"),
        mk_route("cart-v2"),
    ])
    .await;
    let kubeconfig = server.kubeconfig_path.clone();
    let leader = start_with(&kubeconfig, &["--identity", "a", "--lease-duration", "2"]);
    wait_for_holder(&server, "a").await;
    let follower = start_with(&kubeconfig, &["--identity", "b", "--lease-duration", "2"]);
    wait_ready(follower.debug).await;
    wait_for_status(&kubeconfig, "ResolvedRefs", |parents| {
        our_condition(parents, "ResolvedRefs").is_some_and(|c| c["status"].as_str() == Some("True"))
    })
    .await;
    // The follower serves xDS too, and does not take the Lease from a live leader.
    let mut client = SotwClient::connect(follower.xds, node("client.shop")).await;
    client.subscribe(type_url::CLUSTER, &[]);
    let clusters = client.recv_type(type_url::CLUSTER).await;
    assert!(names(&clusters).contains(&cluster("cart-v2")));
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_for_holder(&server, "a").await;

    drop(leader);
    wait_for_holder(&server, "b").await;
    kubectl(&kubeconfig, &["delete", "service", "cart-v2", "-n", "shop"]).await;
    wait_for_status(
        &kubeconfig,
        "BackendNotFound from the new leader",
        |parents| {
            our_condition(parents, "ResolvedRefs")
                .is_some_and(|c| c["reason"].as_str() == Some("BackendNotFound"))
        },
    )
    .await;
}

/// The written-status memory follows the object, not its name: entries another writer
/// removed come back, and a route deleted and created again at once (`kubectl replace
/// --force`) gets status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route_status_is_restored_after_another_writer_and_on_a_replaced_route() {
    let server = start_shop(&[
        mk_service("cart"),
        mk_service("cart-v2"),
        mk_route("cart-v2"),
    ])
    .await;
    let kubeconfig = server.kubeconfig_path.clone();
    let _controller = start_with(&kubeconfig, &["--identity", "a", "--lease-duration", "2"]);
    let resolved = |parents: &[serde_yaml::Value]| {
        our_condition(parents, "ResolvedRefs").is_some_and(|c| c["status"].as_str() == Some("True"))
    };
    wait_for_status(&kubeconfig, "ResolvedRefs", resolved).await;

    // Another writer sets the list to its own entry only.
    patch_other_controllers_entry(&kubeconfig).await;
    let restored = wait_for_status(&kubeconfig, "our entry restored", |parents| {
        parents.len() == 2 && resolved(parents)
    })
    .await;
    assert!(
        restored
            .iter()
            .any(|p| p["controllerName"].as_str() == Some(OTHER_CONTROLLER)),
        "{restored:?}"
    );

    // The same route deleted and created again: a new object without status.
    let uid = |kubeconfig: std::path::PathBuf| async move {
        kubectl(
            &kubeconfig,
            &[
                "get",
                "httproute",
                "cart",
                "-n",
                "shop",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        )
        .await
    };
    let old_uid = uid(kubeconfig.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("route.yaml");
    std::fs::write(&file, mk_route("cart-v2")).unwrap();
    kubectl(
        &kubeconfig,
        &["replace", "--force", "-f", file.to_str().unwrap()],
    )
    .await;
    assert_ne!(uid(kubeconfig.clone()).await, old_uid);
    wait_for_status(&kubeconfig, "ResolvedRefs on the new object", resolved).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_hands_the_lease_over_within_a_couple_of_seconds() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let kubeconfig = server.kubeconfig_path.clone();
    // A lease duration far longer than the hand-over may take: without a release the
    // follower would wait all of it.
    let mut leader = start_with(&kubeconfig, &["--identity", "a", "--lease-duration", "15"]);
    wait_for_holder(&server, "a").await;
    let follower = start_with(&kubeconfig, &["--identity", "b", "--lease-duration", "15"]);
    wait_ready(follower.debug).await;

    let terminated = Instant::now();
    leader.terminate();
    let deadline = terminated + Duration::from_secs(4);
    loop {
        let lease = server.object(
            "coordination.k8s.io/v1",
            "Lease",
            Some("default"),
            "lanyard-controller",
        );
        let holder = lease
            .as_ref()
            .and_then(|l| l.pointer("/spec/holderIdentity"))
            .and_then(|h| h.as_str());
        if holder == Some("b") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Lease was not handed over: {lease:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the old leader has exited by itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    while leader.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `lanyard_translations_total` of the controller's `/metrics`.
async fn translations(debug: std::net::SocketAddr) -> u64 {
    let (_, body) = http_get(debug, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix("lanyard_translations_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lanyard_translations_total in {body}"))
}

/// Waits until the translation count has stayed put for a while; returns it.
async fn settled_translations(debug: std::net::SocketAddr) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut last = translations(debug).await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = translations(debug).await;
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > Duration::from_secs(2) {
            return last;
        }
        assert!(Instant::now() < deadline, "translations never settled");
    }
}

/// Pod updates that change nothing Lanyard reads (an annotation, a status condition) and
/// Lanyard's own route status write cause no translation; a real change still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_that_change_nothing_read_and_own_status_writes_cause_no_translation() {
    let server = start_shop(&[
            mk_service("cart"),
            mk_endpoint_slice("cart", "10.0.0.1"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: cart-1, namespace: shop, labels: {app: cart}}\nspec: {serviceAccountName: cart, containers: [{name: app, image: cart:1, ports: [{name: http, containerPort: 80}]}]}\n".to_string(),
    ])
    .await;
    let kubeconfig = server.kubeconfig_path.clone();
    let status = |probe: u32| {
        format!(
            r#"{{"status":{{"phase":"Running","podIP":"10.0.0.1","conditions":[{{"type":"Ready","status":"True","lastProbeTime":"2026-12-01T00:00:{probe:02}Z"}}]}}}}"#
        )
    };
    let patch_status = |body: String| {
        let kubeconfig = kubeconfig.clone();
        async move {
            kubectl(
                &kubeconfig,
                &[
                    "patch",
                    "pod",
                    "cart-1",
                    "-n",
                    "shop",
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &body,
                ],
            )
            .await;
        }
    };
    patch_status(status(0)).await;
    let controller = start_with(&kubeconfig, &["--identity", "a", "--lease-duration", "2"]);
    wait_ready(controller.debug).await;
    let first = translations(controller.debug).await;
    assert!(first >= 1);
    // The route arrives after the first snapshot; its status is written by Lanyard.
    kubectl_apply(&kubeconfig, &[mk_route("cart")]).await;
    let resolved = |parents: &[serde_yaml::Value]| {
        our_condition(parents, "ResolvedRefs").is_some_and(|c| c["status"].as_str() == Some("True"))
    };
    wait_for_status(&kubeconfig, "ResolvedRefs", resolved).await;
    let with_route = settled_translations(controller.debug).await;
    assert_eq!(
        with_route,
        first + 1,
        "the route is one translation; Lanyard's own status write on it is none"
    );

    for i in 1..=5u32 {
        kubectl(
            &kubeconfig,
            &[
                "annotate",
                "--overwrite",
                "pod",
                "cart-1",
                "-n",
                "shop",
                &format!("tick={i}"),
            ],
        )
        .await;
        patch_status(status(i)).await;
    }
    assert_eq!(
        settled_translations(controller.debug).await,
        with_route,
        "Pod updates that change nothing Lanyard reads were translated"
    );

    // A real change: the Pod's address.
    patch_status(r#"{"status":{"podIP":"10.0.0.2"}}"#.to_string()).await;
    assert_eq!(settled_translations(controller.debug).await, with_route + 1);
}
