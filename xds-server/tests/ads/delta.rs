//! Incremental: subscribe, ACK, NACK, removed_resources, unsubscribe, stale nonces,
//! reconnecting with initial_resource_versions, unknown types.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc;
use lanyard_xds::testing::TestServer;
use lanyard_xds::testing::client::{DeltaClient, delta_names, node};
use lanyard_xds::type_url;

use crate::mesh::*;

fn versions(response: &DeltaDiscoveryResponse) -> BTreeMap<String, String> {
    response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

#[tokio::test]
async fn wildcard_subscribe_ack_and_removed_resources() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(CDS, &[], &[]);
    let first = client.recv().await;
    assert_eq!(first.type_url, CDS);
    assert_eq!(delta_names(&first).len(), 5, "{:?}", delta_names(&first));
    assert!(first.removed_resources.is_empty());
    assert!(first.resources.iter().all(|r| r.version.len() == 16));
    client.ack(&first);
    server
        .wait_acked(CART_0, "CDS", &first.system_version_info)
        .await;

    remove_v2(&mut model);
    server.publish(&model).await;
    let removal = client.recv().await;
    assert_eq!(removal.removed_resources, [CART_V2]);
    assert!(
        removal.resources.is_empty(),
        "unchanged clusters were re-sent"
    );
}

#[tokio::test]
async fn a_named_resource_that_does_not_exist_is_reported_removed_once() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    let nope = cluster("nope");
    client.subscribe(EDS, &[CART, &nope], &[]);
    let first = client.recv().await;
    assert_eq!(delta_names(&first), [CART]);
    assert_eq!(first.removed_resources, [nope.as_str()]);
    client.ack(&first);
    // It appears: sent; the next change to cart alone does not repeat the removal.
    add_service(&mut model, "nope", "10.96.0.20");
    server.publish(&model).await;
    let appeared = client.recv().await;
    assert_eq!(delta_names(&appeared), [nope.as_str()]);
    assert!(appeared.removed_resources.is_empty());
    client.ack(&appeared);
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    let changed = client.recv().await;
    assert_eq!(delta_names(&changed), [CART]);
    assert!(changed.removed_resources.is_empty());
}

#[tokio::test]
async fn a_nack_is_recorded_and_not_resent() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(EDS, &[CART, CART_V2], &[]);
    let v1 = client.recv().await;
    client.ack(&v1);
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    let v2 = client.recv().await;
    assert_eq!(delta_names(&v2), [CART]);
    client.nack(&v2, &format!("{CART}: rejected by the test"));
    let status = server
        .wait_for_stream(CART_0, "showing the NACK", |s| {
            s.type_sync("EDS").is_some_and(|t| t.last_nack.is_some())
        })
        .await;
    let nack = status.type_sync("EDS").unwrap().last_nack.unwrap();
    assert_eq!(nack.message, format!("{CART}: rejected by the test"));
    assert_eq!(nack.nonce, v2.nonce);
    assert_eq!(nack.resources.len(), 1);
    assert_eq!(nack.resources[0].name, CART);
    assert_eq!(nack.resources[0].version, versions(&v2)[CART]);

    // An ACK of a response that does not carry the rejected resource leaves it outstanding.
    set_endpoints(&mut model, "cart-v2", &["10.1.0.9"]);
    server.publish(&model).await;
    let other = client.recv().await;
    assert_eq!(delta_names(&other), [CART_V2]);
    client.ack(&other);
    server
        .wait_acked(CART_0, "EDS", &other.system_version_info)
        .await;
    assert_eq!(
        status.type_sync("EDS").unwrap().outstanding_nack,
        Some(nack.clone())
    );

    set_endpoints(&mut model, "cart", &["10.1.0.8"]);
    server.publish(&model).await;
    let v3 = client.recv().await;
    assert_eq!(delta_names(&v3), [CART]);
    assert_ne!(
        versions(&v3)[CART],
        versions(&v2)[CART],
        "the NACKed version was re-sent"
    );
    // Accepting a later version of it clears it.
    client.ack(&v3);
    server
        .wait_acked(CART_0, "EDS", &v3.system_version_info)
        .await;
    let sync = status.type_sync("EDS").unwrap();
    assert_eq!(sync.outstanding_nack, None);
    assert_eq!(sync.last_nack, Some(nack));
}

#[tokio::test]
async fn unsubscribing_stops_pushes_and_a_stale_nonce_is_neither_ack_nor_nack() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(EDS, &[CART, CART_V2], &[]);
    let first = client.recv().await;
    assert_eq!(delta_names(&first), [CART_V2, CART]);
    client.subscribe(EDS, &[], &[CART_V2]);
    // A stale NACK (an old nonce): ignored.
    client.send(DeltaDiscoveryRequest {
        type_url: EDS.to_string(),
        response_nonce: "not-a-nonce-we-sent".into(),
        error_detail: Some(rpc::Status {
            code: 3,
            message: "stale".into(),
            details: vec![],
        }),
        ..Default::default()
    });
    // Requests are handled in order: once this ACK shows, the two above were handled.
    client.ack(&first);
    server
        .wait_acked(CART_0, "EDS", &first.system_version_info)
        .await;

    set_endpoints(&mut model, "cart-v2", &["10.1.0.99"]);
    let generation = server.publish(&model).await;
    server.wait_synced(CART_0, generation).await;
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    // A push for cart-v2 would come first.
    let next = client.recv().await;
    assert_eq!(delta_names(&next), [CART]);
    assert!(next.removed_resources.is_empty());
    let sync = server
        .wait_for_stream(CART_0, "connected", |_| true)
        .await
        .type_sync("EDS")
        .unwrap();
    assert_eq!(sync.last_nack, None);
}

#[tokio::test]
async fn reconnecting_with_initial_resource_versions_resends_only_what_changed() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut held_cds;
    let held_eds;
    {
        let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
        client.subscribe(CDS, &[], &[]);
        let clusters = client.recv().await;
        client.ack(&clusters);
        client.subscribe(EDS, &[CART, CART_V2], &[]);
        let endpoints = client.recv().await;
        client.ack(&endpoints);
        held_cds = versions(&clusters);
        held_eds = versions(&endpoints);
        assert_eq!(held_eds.len(), 2);
    }
    set_endpoints(&mut model, "cart-v2", &["10.1.0.42"]);
    server.publish(&model).await;

    // The client also remembers a cluster the server no longer has.
    held_cds.insert(cluster("gone"), "0123456789abcdef".into());
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    client.resume(CDS, &[], &held_cds);
    let clusters = client.recv().await;
    assert!(
        clusters.resources.is_empty(),
        "up-to-date clusters were re-sent: {:?}",
        delta_names(&clusters)
    );
    assert_eq!(clusters.removed_resources, [cluster("gone")]);
    client.ack(&clusters);
    client.resume(EDS, &[CART, CART_V2], &held_eds);
    let endpoints = client.recv().await;
    assert_eq!(delta_names(&endpoints), [CART_V2]);
    assert_ne!(versions(&endpoints)[CART_V2], held_eds[CART_V2]);
}

#[tokio::test]
async fn an_unknown_type_is_answered_with_its_names_removed() {
    let server = TestServer::start(&base()).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(type_url::SECRET, &["default"], &[]);
    let answer = client.recv().await;
    assert_eq!(answer.type_url, type_url::SECRET);
    assert_eq!(answer.removed_resources, ["default"]);
    assert!(answer.resources.is_empty());
    client.ack(&answer);
    client.subscribe(CDS, &[], &[]);
    assert_eq!(client.recv().await.type_url, CDS);
}
