//! State of the world: subscribe, ACK, NACK, stale nonces, unsubscribe, removal, wildcard
//! vs named, unknown types, refused nodes, gRPC-style LDS by name.

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc;
use lanyard_xds::testing::TestServer;
use lanyard_xds::testing::client::{SotwClient, find, names, node, node_in};
use lanyard_xds::type_url;

use crate::mesh::*;

pub fn endpoint_ips(response: &DiscoveryResponse, name: &str) -> Vec<String> {
    use envoy_types::pb::envoy::config::core::v3::address;
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    let cla: ClusterLoadAssignment = find(response, name).expect("the assignment is there");
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(e)) => match e.address.as_ref()?.address.as_ref()? {
                address::Address::SocketAddress(s) => Some(s.address.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn wildcard_cds_gets_the_full_set_and_an_ack_gets_no_reply() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(CDS, &[]);
    let first = client.recv_type(CDS).await;
    let got = names(&first);
    for expected in [
        "InboundPassthroughCluster",
        "PassthroughCluster",
        "inbound|8080||",
        CART,
        CART_V2,
    ] {
        assert!(
            got.contains(&expected.to_string()),
            "{expected} missing from {got:?}"
        );
    }
    assert_eq!(got.len(), 5, "{got:?}");
    client.ack(&first);
    server.wait_acked(CART_0, "CDS", &first.version_info).await;

    add_service(&mut model, "extra", "10.96.0.12");
    server.publish(&model).await;
    // Had the ACK been answered, that answer (without `extra`) would come first.
    let next = client.recv_type(CDS).await;
    assert!(
        names(&next).contains(&cluster("extra")),
        "{:?}",
        names(&next)
    );
    assert_ne!(next.version_info, first.version_info);
    assert_ne!(next.nonce, first.nonce);
}

#[tokio::test]
async fn named_subscriptions_get_only_those_and_omit_what_does_not_exist() {
    let server = TestServer::start(&base()).await;
    let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(CDS, &[CART, "outbound|80||nope.shop.svc.cluster.local"]);
    assert_eq!(names(&client.recv_type(CDS).await), [CART]);
    client.subscribe(EDS, &[CART_V2, CART]);
    assert_eq!(names(&client.recv_type(EDS).await), [CART_V2, CART]);
    // `*` is wildcard again, whatever else is named.
    client.subscribe(CDS, &["*", CART]);
    assert_eq!(names(&client.recv_type(CDS).await).len(), 5);
}

#[tokio::test]
async fn a_nack_is_recorded_and_not_resent_and_the_next_change_is_pushed() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(EDS, &[CART, CART_V2]);
    let v1 = client.recv_type(EDS).await;
    client.ack(&v1);

    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    let v2 = client.recv_type(EDS).await;
    assert_eq!(endpoint_ips(&v2, CART), ["10.1.0.7"]);
    client.nack(&v2, "bad endpoints, says the test");
    let status = server
        .wait_for_stream(CART_0, "showing the NACK", |s| {
            s.type_sync("EDS").is_some_and(|t| t.last_nack.is_some())
        })
        .await;
    let sync = status.type_sync("EDS").unwrap();
    let nack = sync.last_nack.clone().unwrap();
    assert_eq!(sync.outstanding_nack.as_ref(), Some(&nack));
    assert_eq!(nack.message, "bad endpoints, says the test");
    assert_eq!(nack.version, v2.version_info);
    assert_eq!(nack.nonce, v2.nonce);
    // The message names nothing: what the response changed is what was rejected.
    let rejected: Vec<&str> = nack.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(rejected, [CART]);
    assert_eq!(
        sync.version_acked.as_deref(),
        Some(v1.version_info.as_str())
    );

    set_endpoints(&mut model, "cart", &["10.1.0.8"]);
    server.publish(&model).await;
    // A re-sent v2 would come first.
    let v3 = client.recv_type(EDS).await;
    assert_eq!(endpoint_ips(&v3, CART), ["10.1.0.8"]);
    // Outstanding until the proxy accepts a later version.
    assert_eq!(
        status.type_sync("EDS").unwrap().outstanding_nack.as_ref(),
        Some(&nack)
    );
    client.ack(&v3);
    server.wait_acked(CART_0, "EDS", &v3.version_info).await;
    let sync = status.type_sync("EDS").unwrap();
    assert_eq!(sync.outstanding_nack, None, "a later ACK clears it");
    assert_eq!(sync.last_nack, Some(nack), "the history stays");
    let metrics = server.get("/metrics").await.1;
    assert!(
        metrics.contains("lanyard_xds_nacks_total{type=\"EDS\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stale_nonce_is_ignored_but_a_changed_subscription_is_answered() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(EDS, &[CART]);
    let r1 = client.recv_type(EDS).await;
    client.ack(&r1);
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    let r2 = client.recv_type(EDS).await;

    // A NACK of r1 after r2 went out: stale, not recorded, not answered.
    client.send(DiscoveryRequest {
        version_info: r1.version_info.clone(),
        resource_names: vec![CART.to_string()],
        type_url: EDS.to_string(),
        response_nonce: r1.nonce.clone(),
        error_detail: Some(rpc::Status {
            code: 3,
            message: "stale".into(),
            details: vec![],
        }),
        ..Default::default()
    });
    // A stale nonce with new names: answered with the new names.
    client.send(DiscoveryRequest {
        version_info: r1.version_info.clone(),
        resource_names: vec![CART.to_string(), CART_V2.to_string()],
        type_url: EDS.to_string(),
        response_nonce: r1.nonce.clone(),
        ..Default::default()
    });
    let r3 = client.recv_type(EDS).await;
    assert_eq!(names(&r3), [CART_V2, CART]);
    let sync = server
        .wait_for_stream(CART_0, "connected", |_| true)
        .await
        .type_sync("EDS")
        .unwrap();
    assert_eq!(sync.last_nack, None);
    assert_eq!(
        sync.version_acked.as_deref(),
        Some(r1.version_info.as_str())
    );
    assert_ne!(r3.nonce, r2.nonce);
}

#[tokio::test]
async fn unsubscribed_names_are_no_longer_sent_and_removed_clusters_leave_the_full_set() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(EDS, &[CART, CART_V2]);
    let both = client.recv_type(EDS).await;
    assert_eq!(names(&both), [CART_V2, CART]);
    client.resubscribe(&both, &[CART]);
    let only = client.recv_type(EDS).await;
    assert_eq!(names(&only), [CART]);
    client.ack(&only);
    server.wait_acked(CART_0, "EDS", &only.version_info).await;

    // cart-v2 changes: nothing for this client; then cart changes: that comes next.
    set_endpoints(&mut model, "cart-v2", &["10.1.0.99"]);
    let generation = server.publish(&model).await;
    server.wait_synced(CART_0, generation).await;
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    let next = client.recv_type(EDS).await;
    assert_eq!(endpoint_ips(&next, CART), ["10.1.0.7"]);
    assert_eq!(names(&next), [CART]);

    // Removal: CDS is a full set, so a removed cluster is simply absent.
    client.subscribe(CDS, &[]);
    let clusters = client.recv_type(CDS).await;
    assert!(names(&clusters).contains(&CART_V2.to_string()));
    client.ack(&clusters);
    // The first clusters of a stream may re-create what the proxy held from an earlier
    // one: the assignments it already has come again, so those clusters warm.
    let again = client.recv_type(EDS).await;
    assert_eq!(names(&again), [CART]);
    client.ack(&again);
    remove_v2(&mut model);
    server.publish(&model).await;
    let after = client.recv_type(CDS).await;
    assert!(
        !names(&after).contains(&CART_V2.to_string()),
        "{:?}",
        names(&after)
    );
    assert!(names(&after).contains(&CART.to_string()));
}

#[tokio::test]
async fn an_unknown_type_gets_an_empty_answer_and_an_empty_type_url_is_refused() {
    let server = TestServer::start(&base()).await;
    let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(type_url::SECRET, &["default"]);
    let answer = client.recv().await;
    assert_eq!(answer.type_url, type_url::SECRET);
    assert!(answer.resources.is_empty());
    assert!(!answer.nonce.is_empty());
    client.ack(&answer);
    // The ACK is not answered: the CDS response comes next.
    client.subscribe(CDS, &[]);
    client.recv_type(CDS).await;
    let metrics = server.get("/metrics").await.1;
    assert!(
        metrics.contains("lanyard_xds_unknown_type_requests_total 1\n"),
        "{metrics}"
    );

    let mut bad = SotwClient::connect(server.ads, node(CART_0)).await;
    bad.subscribe("", &[]);
    let status = bad.next().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("type_url is required"),
        "{status}"
    );
}

#[tokio::test]
async fn a_node_without_a_namespace_is_refused_with_a_hint() {
    let server = TestServer::start(&base()).await;
    let mut client = SotwClient::connect(server.ads, node("no-namespace")).await;
    client.subscribe(CDS, &[]);
    let status = client.next().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("node.metadata.NAMESPACE"),
        "{status}"
    );
}

#[tokio::test]
async fn grpc_asks_lds_by_name_and_gets_the_api_listener_then_rds_and_eds_by_name() {
    let server = TestServer::start(&base()).await;
    let mut client = SotwClient::connect(server.ads, node_in("grpc-client", "shop", None)).await;
    client.subscribe(LDS, &["cart:80", "nothing:80"]);
    let listeners = client.recv_type(LDS).await;
    assert_eq!(names(&listeners), ["cart:80"]);
    let listener: Listener = find(&listeners, "cart:80").unwrap();
    assert!(listener.api_listener.is_some());
    client.ack(&listeners);
    client.subscribe(RDS, &[CART_ROUTE]);
    assert_eq!(names(&client.recv_type(RDS).await), [CART_ROUTE]);
    client.subscribe(CDS, &[CART]);
    assert_eq!(names(&client.recv_type(CDS).await), [CART]);
    // A client in another namespace does not resolve the short name.
    let mut other = SotwClient::connect(server.ads, node_in("grpc-other", "web", None)).await;
    other.subscribe(LDS, &["cart:80"]);
    assert!(other.recv_type(LDS).await.resources.is_empty());
}
