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

/// Envoy's delta client (Envoy v1.36 delta_subscription_state.cc) keeps a legacy wildcard
/// subscription when it later subscribes a name, and ends it only by unsubscribing `*`.
#[tokio::test]
async fn a_legacy_wildcard_that_names_a_resource_stays_wildcard_until_it_unsubscribes_star() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(CDS, &[], &[]);
    let first = client.recv().await;
    let all = delta_names(&first);
    assert!(all.len() > 2, "{all:?}");
    client.ack(&first);

    // On-demand style: a name on top of the wildcard. Nothing is taken away.
    client.subscribe(CDS, &[CART], &[]);
    let named = client.recv().await;
    assert!(named.removed_resources.is_empty(), "{named:?}");
    assert_eq!(
        delta_names(&named),
        [CART],
        "the subscribed name is answered"
    );
    client.ack(&named);
    server
        .wait_acked(CART_0, "CDS", &named.system_version_info)
        .await;
    let sync = server
        .wait_for_stream(CART_0, "connected", |_| true)
        .await
        .type_sync("CDS")
        .unwrap();
    assert_eq!(sync.subscribed, ["*", CART]);

    // Still wildcard: a new cluster is pushed.
    add_service(&mut model, "new", "10.96.0.20");
    server.publish(&model).await;
    let added = client.recv().await;
    assert_eq!(delta_names(&added), [cluster("new")]);
    client.ack(&added);

    // Unsubscribing `*` leaves only the named cluster: the client drops the others itself
    // (Envoy's `updateSubscriptionInterest` clears its wildcard resources), so nothing is
    // sent, and a new cluster is no longer pushed; a change to the named one is.
    client.subscribe(CDS, &[], &["*"]);
    server
        .wait_for_stream(CART_0, "unsubscribed from *", |s| {
            s.type_sync("CDS")
                .is_some_and(|t| t.subscribed == [CART.to_string()])
        })
        .await;
    add_service(&mut model, "later", "10.96.0.21");
    let generation = server.publish(&model).await;
    server.wait_synced(CART_0, generation).await;
    model
        .services
        .values_mut()
        .find(|s| s.key.name == "cart")
        .unwrap()
        .ports[0]
        .protocol = lanyard_model::Protocol::Grpc;
    server.publish(&model).await;
    let next = client.recv().await;
    assert_eq!(delta_names(&next), [CART]);
    assert!(next.removed_resources.is_empty(), "{next:?}");
}

/// A name the client is believed to hold, subscribed again (Envoy sends that when a watcher
/// forgot its copy), is sent again; a missing one is reported removed again.
#[tokio::test]
async fn a_name_subscribed_again_is_sent_again() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    let nope = cluster("nope");
    client.subscribe(EDS, &[CART, CART_V2, &nope], &[]);
    let first = client.recv().await;
    assert_eq!(first.removed_resources, [nope.as_str()]);
    client.ack(&first);

    client.subscribe(EDS, &[CART, &nope], &[]);
    let again = client.recv().await;
    assert_eq!(delta_names(&again), [CART]);
    assert_eq!(versions(&again)[CART], versions(&first)[CART]);
    assert_eq!(again.removed_resources, [nope.as_str()]);
    client.ack(&again);

    // Nothing else is re-sent: the next push is the next change.
    set_endpoints(&mut model, "cart-v2", &["10.1.0.42"]);
    server.publish(&model).await;
    let next = client.recv().await;
    assert_eq!(delta_names(&next), [CART_V2]);
    assert!(next.removed_resources.is_empty());
}

/// A NACK of a response that a later one superseded is not a NACK of what the proxy holds,
/// but it is counted (metric, syncz) and logged, never dropped silently.
#[tokio::test]
async fn a_late_nack_of_a_superseded_version_is_counted() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(EDS, &[CART], &[]);
    let v1 = client.recv().await;
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    let v2 = client.recv().await;
    assert_eq!(delta_names(&v2), [CART]);
    // Late replies to v1: an ACK, then a NACK.
    client.ack(&v1);
    client.nack(&v1, "late: rejected by the test");
    client.ack(&v2);
    server
        .wait_acked(CART_0, "EDS", &v2.system_version_info)
        .await;
    let sync = server
        .wait_for_stream(CART_0, "connected", |_| true)
        .await
        .type_sync("EDS")
        .unwrap();
    assert_eq!(sync.stale_nacks, 1);
    assert_eq!(
        sync.last_nack, None,
        "a stale NACK is not the latest's NACK"
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("lanyard_xds_stale_nacks_total{type=\"EDS\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lanyard_xds_stale_acks_total{type=\"EDS\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("lanyard_xds_nacks_total{type=\"EDS\"} 0\n"));
}
