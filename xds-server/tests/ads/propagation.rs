//! Change propagation: only what changed, only to whom it concerns, in order, with stable
//! versions, and without a slow client holding anyone up.

use lanyard_model::Protocol;
use lanyard_xds::testing::TestServer;
use lanyard_xds::testing::client::{DeltaClient, SotwClient, names, node, node_in};
use lanyard_xds::testing::model::mk_workload;

use crate::mesh::*;

const CART_V2_ROUTE: &str = "cart-v2.shop.svc.cluster.local:80";

/// A client subscribed like Envoy: CDS and LDS wildcard, EDS and RDS by name; all ACKed.
async fn envoy_like(server: &TestServer, id: &str) -> SotwClient {
    let mut client = SotwClient::connect(server.ads, node(id)).await;
    client.subscribe(CDS, &[]);
    let clusters = client.recv_type(CDS).await;
    client.ack(&clusters);
    client.subscribe(EDS, &[CART, CART_V2]);
    let endpoints = client.recv_type(EDS).await;
    client.ack(&endpoints);
    client.subscribe(LDS, &[]);
    let listeners = client.recv_type(LDS).await;
    client.ack(&listeners);
    client.subscribe(RDS, &[CART_ROUTE, CART_V2_ROUTE]);
    let routes = client.recv_type(RDS).await;
    client.ack(&routes);
    server.wait_acked(id, "RDS", &routes.version_info).await;
    client
}

#[tokio::test]
async fn an_endpoint_only_change_sends_only_eds() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = envoy_like(&server, CART_0).await;
    set_endpoints(&mut model, "cart", &["10.1.0.7", "10.1.0.8"]);
    server.publish(&model).await;
    let eds = client.recv().await;
    assert_eq!(
        eds.type_url, EDS,
        "an endpoint change pushed another type first"
    );
    client.ack(&eds);
    server.wait_acked(CART_0, "EDS", &eds.version_info).await;
    // Anything else the endpoint change pushed would come before this change's CDS.
    add_service(&mut model, "extra", "10.96.0.12");
    server.publish(&model).await;
    let next = client.recv().await;
    assert_eq!(next.type_url, CDS);
    assert!(names(&next).contains(&cluster("extra")));
}

#[tokio::test]
async fn a_consumer_route_change_in_one_namespace_is_not_pushed_to_another() {
    let mut model = base();
    set_consumer_split(&mut model, "web", 50, 50);
    let server = TestServer::start(&model).await;
    let mut web = SotwClient::connect(server.ads, node_in("web-client", "web", None)).await;
    let mut other = SotwClient::connect(server.ads, node_in("other-client", "other", None)).await;
    for (client, id) in [(&mut web, "web-client"), (&mut other, "other-client")] {
        client.subscribe(RDS, &[CART_ROUTE]);
        let routes = client.recv_type(RDS).await;
        client.ack(&routes);
        client.subscribe(EDS, &[CART]);
        let endpoints = client.recv_type(EDS).await;
        client.ack(&endpoints);
        server.wait_acked(id, "EDS", &endpoints.version_info).await;
    }
    set_consumer_split(&mut model, "web", 10, 90);
    let generation = server.publish(&model).await;
    assert_eq!(web.recv().await.type_url, RDS);
    server.wait_synced("other-client", generation).await;
    // An RDS push to `other` would come before this EDS.
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    assert_eq!(other.recv().await.type_url, EDS);
    assert_eq!(web.recv().await.type_url, EDS);

    // A producer route change reaches `other`, and not `web`, which sees its own routes.
    set_split(&mut model, 70, 30);
    let generation = server.publish(&model).await;
    assert_eq!(other.recv().await.type_url, RDS);
    server.wait_synced("web-client", generation).await;
    set_endpoints(&mut model, "cart", &["10.1.0.8"]);
    server.publish(&model).await;
    assert_eq!(web.recv().await.type_url, EDS);
}

#[tokio::test]
async fn pushes_go_out_clusters_endpoints_listeners_routes() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = envoy_like(&server, CART_0).await;
    // One change that touches all four: a new Service (cluster, listener), new endpoints
    // for cart, new weights on cart's route.
    add_service(&mut model, "extra", "10.96.0.12");
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    set_split(&mut model, 50, 50);
    server.publish(&model).await;
    // Replied to as Envoy does: listeners and routes wait for the reply to the CDS
    // response that added a cluster the proxy may warm (make before break).
    let mut order = Vec::new();
    for _ in 0..4 {
        let response = client.recv().await;
        client.ack(&response);
        order.push(response.type_url);
    }
    assert_eq!(order, [CDS, EDS, LDS, RDS]);
}

#[tokio::test]
async fn versions_are_the_same_from_two_servers_built_from_the_same_input() {
    let model = base();
    let a = TestServer::start(&model).await;
    let b = TestServer::start(&model).await;
    let mut versions = Vec::new();
    for server in [&a, &b] {
        let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
        let mut per_type = Vec::new();
        for ty in [CDS, EDS, LDS, RDS] {
            client.subscribe(ty, &[]);
            let response = client.recv_type(ty).await;
            per_type.push((ty, response.version_info.clone(), names(&response)));
        }
        let mut delta = DeltaClient::connect(server.ads, node(CART_0)).await;
        delta.subscribe(CDS, &[], &[]);
        let clusters = delta.recv().await;
        let resource_versions: Vec<(String, String)> = clusters
            .resources
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        versions.push((per_type, resource_versions));
    }
    assert!(!versions[0].1.is_empty());
    assert_eq!(versions[0], versions[1]);
}

#[tokio::test]
async fn a_pod_the_model_does_not_know_yet_gets_its_namespace_view_then_its_own() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = SotwClient::connect(server.ads, node("cart-9.shop")).await;
    client.subscribe(CDS, &[]);
    let before = client.recv_type(CDS).await;
    assert!(
        !names(&before).iter().any(|n| n.starts_with("inbound|")),
        "{:?}",
        names(&before)
    );
    client.ack(&before);
    model.workloads.insert(
        lanyard_model::WorkloadKey::new("shop", "cart-9"),
        mk_workload("shop", "cart-9", &[(9090, Protocol::Http)]),
    );
    server.publish(&model).await;
    let after = client.recv_type(CDS).await;
    assert!(
        names(&after).contains(&"inbound|9090||".to_string()),
        "{:?}",
        names(&after)
    );
}

#[tokio::test]
async fn a_client_that_does_not_read_does_not_hold_up_another_and_gets_the_latest() {
    let mut model = base();
    // Big enough that one CDS response overflows the HTTP/2 windows and send buffers.
    for i in 0..2500u32 {
        add_service(
            &mut model,
            &format!("svc-{i}"),
            &format!("10.97.{}.{}", i / 250, i % 250 + 1),
        );
    }
    let server = TestServer::start(&model).await;
    let mut slow = SotwClient::connect_with_window(server.ads, node("slow.shop"), 65_535).await;
    slow.subscribe(CDS, &[]);
    let mut fast = SotwClient::connect(server.ads, node("fast.shop")).await;
    fast.subscribe(CDS, &[]);
    let first = fast.recv_type(CDS).await;
    fast.ack(&first);

    const CHANGES: usize = 8;
    for k in 0..CHANGES {
        let name = format!("late-{k}");
        add_service(&mut model, &name, &format!("10.98.0.{}", k + 1));
        server.publish(&model).await;
        loop {
            let response = fast.recv_type(CDS).await;
            fast.ack(&response);
            if names(&response).contains(&cluster(&name)) {
                break;
            }
        }
    }
    // The slow client now reads: what was in flight (in HTTP/2 buffers and the stream's
    // one-slot queue), then the latest state; not every state in between.
    let last = cluster(&format!("late-{}", CHANGES - 1));
    let mut received = 0;
    loop {
        let response = slow.recv_type(CDS).await;
        received += 1;
        if names(&response).contains(&last) {
            break;
        }
        assert!(
            received < CHANGES,
            "the slow client is replaying every change"
        );
    }
    assert!(
        received <= 4,
        "{received} responses to catch up after {CHANGES} changes"
    );
}
