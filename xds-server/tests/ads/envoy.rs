//! Envoy's habits (`SotwClient::envoy`, `DeltaClient::envoy`): a cluster re-created by a
//! CDS update warms until it gets a ClusterLoadAssignment, and updates go out make before
//! break (a route never names a cluster the proxy does not have warm).

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use lanyard_model::{Model, Protocol};
use lanyard_xds::RouteConfiguration;
use lanyard_xds::testing::client::{DeltaClient, SotwClient, delta_names, find, names, node};
use lanyard_xds::testing::model::{forward_to, mk_route, mk_table, prefix, set_producer, spk};
use lanyard_xds::testing::{TestServer, WAIT};

use crate::mesh::*;

/// How soon a re-created cluster must be warm: well under Envoy's 15 s
/// `initial_fetch_timeout`, well over a local round trip.
const PROMPTLY: Duration = Duration::from_secs(2);

const CART_V2_ROUTE: &str = "cart-v2.shop.svc.cluster.local:80";

/// An Envoy-habit SotW client with every type subscribed, warm and ACKed.
async fn envoy_sotw(server: &TestServer) -> SotwClient {
    let mut envoy = SotwClient::envoy(server.ads, node(CART_0)).await;
    envoy.subscribe(CDS, &[]);
    envoy.recv_type(CDS).await;
    assert_eq!(envoy.warming().len(), 2, "{:?}", envoy.warming());
    envoy.wait_warm(WAIT).await.expect("warm at start");
    envoy.subscribe(LDS, &[]);
    envoy.recv_type(LDS).await;
    envoy.subscribe(RDS, &[CART_ROUTE, CART_V2_ROUTE]);
    let routes = envoy.recv_type(RDS).await;
    server.wait_acked(CART_0, "RDS", &routes.version_info).await;
    envoy
}

/// An Envoy-habit delta client with every type subscribed, warm and ACKed.
async fn envoy_delta(server: &TestServer) -> DeltaClient {
    let mut envoy = DeltaClient::envoy(server.ads, node(CART_0)).await;
    envoy.subscribe(CDS, &[], &[]);
    assert_eq!(envoy.recv().await.type_url, CDS);
    assert_eq!(envoy.warming().len(), 2, "{:?}", envoy.warming());
    envoy.wait_warm(WAIT).await.expect("warm at start");
    envoy.subscribe(LDS, &[], &[]);
    assert_eq!(envoy.recv().await.type_url, LDS);
    envoy.subscribe(RDS, &[CART_ROUTE, CART_V2_ROUTE], &[]);
    let routes = envoy.recv().await;
    assert_eq!(routes.type_url, RDS);
    server
        .wait_acked(CART_0, "RDS", &routes.system_version_info)
        .await;
    envoy
}

/// Whether a route configuration of a SotW RDS response names `cluster`.
fn route_names(response: &DiscoveryResponse, route: &str, cluster: &str) -> bool {
    find::<RouteConfiguration>(response, route)
        .is_some_and(|r| format!("{r:?}").contains(&format!("{cluster:?}")))
}

/// Whether a delta RDS response's `route` names `cluster`.
fn delta_route_names(response: &DeltaDiscoveryResponse, route: &str, cluster: &str) -> bool {
    use prost::Message;
    response
        .resources
        .iter()
        .filter(|r| r.name == route)
        .filter_map(|r| RouteConfiguration::decode(r.resource.as_ref()?.value.as_slice()).ok())
        .any(|r| format!("{r:?}").contains(&format!("{cluster:?}")))
}

/// The backend `cart-v2` is deleted while cart's route still splits to it (the route now
/// answers that share itself).
fn delete_v2(model: &mut Model) {
    model.services.retain(|k, _| k.name != "cart-v2");
}

/// A new Service `extra`, and cart's route splitting to it.
fn split_to_extra(model: &mut Model) {
    add_service(model, "extra", "10.96.0.12");
    let table = mk_table(vec![mk_route(
        prefix("/"),
        forward_to(&[
            (spk("shop", "cart", 80), 50),
            (spk("shop", "extra", 80), 50),
        ]),
    )]);
    set_producer(model, spk("shop", "cart", 80), table);
}

#[tokio::test]
async fn sotw_a_recreated_cluster_gets_its_unchanged_assignment_promptly() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut envoy = envoy_sotw(&server).await;

    // appProtocol http -> kubernetes.io/h2c: the cluster changes, its endpoints do not.
    set_protocol(&mut model, "cart", Protocol::Http2);
    server.publish(&model).await;
    let clusters = envoy.recv_type(CDS).await;
    assert!(names(&clusters).contains(&CART.to_string()));
    assert_eq!(envoy.warming().iter().collect::<Vec<_>>(), [CART]);
    let got = envoy
        .wait_warm(PROMPTLY)
        .await
        .unwrap_or_else(|warming| panic!("still warming after {PROMPTLY:?}: {warming:?}"));
    assert_eq!(got.last().map(|r| r.type_url.as_str()), Some(EDS));

    // Only the re-created cluster's request was answered, not every ACK: the next EDS
    // response is the next change.
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    let next = loop {
        let response = envoy.recv().await;
        if response.type_url == EDS {
            break response;
        }
    };
    assert_eq!(crate::sotw::endpoint_ips(&next, CART), ["10.1.0.7"]);
}

#[tokio::test]
async fn delta_a_recreated_cluster_gets_its_unchanged_assignment_promptly() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut envoy = envoy_delta(&server).await;

    set_protocol(&mut model, "cart", Protocol::Http2);
    server.publish(&model).await;
    let clusters = envoy.recv().await;
    assert_eq!(clusters.type_url, CDS);
    assert_eq!(delta_names(&clusters), [CART]);
    assert_eq!(envoy.warming().iter().collect::<Vec<_>>(), [CART]);
    let got = envoy
        .wait_warm(PROMPTLY)
        .await
        .unwrap_or_else(|warming| panic!("still warming after {PROMPTLY:?}: {warming:?}"));
    let endpoints = got.last().unwrap();
    assert_eq!(endpoints.type_url, EDS);
    assert_eq!(delta_names(endpoints), [CART]);

    set_endpoints(&mut model, "cart-v2", &["10.1.0.8"]);
    server.publish(&model).await;
    let next = loop {
        let response = envoy.recv().await;
        if response.type_url == EDS {
            break response;
        }
    };
    assert_eq!(delta_names(&next), [CART_V2]);
}

#[tokio::test]
async fn sotw_a_deleted_backend_leaves_the_routes_before_its_cluster_goes() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut envoy = envoy_sotw(&server).await;

    delete_v2(&mut model);
    server.publish(&model).await;
    let mut seen = Vec::new();
    loop {
        let response = envoy.recv().await;
        let done = response.type_url == CDS && !names(&response).contains(&CART_V2.to_string());
        seen.push(response);
        if done {
            break;
        }
    }
    let order: Vec<&str> = seen.iter().map(|r| r.type_url.as_str()).collect();
    let rds = seen
        .iter()
        .position(|r| r.type_url == RDS && !route_names(r, CART_ROUTE, CART_V2))
        .unwrap_or_else(|| {
            panic!("the cluster went before the route stopped naming it: {order:?}")
        });
    let lds = seen.iter().position(|r| r.type_url == LDS);
    assert!(lds.is_some_and(|l| l < rds), "{order:?}");
    assert_eq!(order.last(), Some(&CDS), "{order:?}");
    // Nothing removed cart-v2 before the route was replaced.
    assert!(
        seen[..rds]
            .iter()
            .all(|r| r.type_url != CDS || names(r).contains(&CART_V2.to_string())),
        "{order:?}"
    );
}

#[tokio::test]
async fn delta_a_deleted_backend_leaves_the_routes_before_its_cluster_and_endpoints_go() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut envoy = envoy_delta(&server).await;

    delete_v2(&mut model);
    server.publish(&model).await;
    let mut seen = Vec::new();
    loop {
        let response = envoy.recv().await;
        let done = response.type_url == CDS && response.removed_resources == [CART_V2];
        seen.push(response);
        if done {
            break;
        }
    }
    let order: Vec<(&str, &[String])> = seen
        .iter()
        .map(|r| (r.type_url.as_str(), r.removed_resources.as_slice()))
        .collect();
    let cds = seen.len() - 1;
    let rds = seen
        .iter()
        .position(|r| r.type_url == RDS && r.resources.iter().any(|x| x.name == CART_ROUTE))
        .unwrap_or_else(|| panic!("no RDS update of {CART_ROUTE}: {order:?}"));
    assert!(!delta_route_names(&seen[rds], CART_ROUTE, CART_V2));
    assert!(rds < cds, "{order:?}");
    // cart-v2's assignment is not removed before its cluster.
    assert!(
        seen[..cds]
            .iter()
            .all(|r| !r.removed_resources.contains(&CART_V2.to_string())),
        "{order:?}"
    );
}

#[tokio::test]
async fn sotw_a_new_backend_is_warm_before_a_route_names_it() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut envoy = envoy_sotw(&server).await;
    let extra = cluster("extra");

    split_to_extra(&mut model);
    server.publish(&model).await;
    let mut seen = Vec::new();
    let rds = loop {
        let response = envoy.recv().await;
        let names_extra = response.type_url == RDS && route_names(&response, CART_ROUTE, &extra);
        seen.push(response);
        if names_extra {
            break seen.len() - 1;
        }
    };
    let order: Vec<&str> = seen.iter().map(|r| r.type_url.as_str()).collect();
    let cds = seen
        .iter()
        .position(|r| r.type_url == CDS && names(r).contains(&extra));
    let eds = seen
        .iter()
        .position(|r| r.type_url == EDS && names(r).contains(&extra));
    assert!(
        cds.is_some_and(|c| eds.is_some_and(|e| c < e && e < rds)),
        "{order:?}"
    );
    assert!(envoy.is_warm());
}

#[tokio::test]
async fn delta_a_new_backend_is_warm_before_a_route_names_it() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut envoy = envoy_delta(&server).await;
    let extra = cluster("extra");

    split_to_extra(&mut model);
    server.publish(&model).await;
    let mut seen = Vec::new();
    let rds = loop {
        let response = envoy.recv().await;
        let names_extra =
            response.type_url == RDS && delta_route_names(&response, CART_ROUTE, &extra);
        seen.push(response);
        if names_extra {
            break seen.len() - 1;
        }
    };
    let order: Vec<&str> = seen.iter().map(|r| r.type_url.as_str()).collect();
    let cds = seen
        .iter()
        .position(|r| r.type_url == CDS && delta_names(r).contains(&extra));
    let eds = seen
        .iter()
        .position(|r| r.type_url == EDS && delta_names(r).contains(&extra));
    assert!(
        cds.is_some_and(|c| eds.is_some_and(|e| c < e && e < rds)),
        "{order:?}"
    );
    assert!(envoy.is_warm());
}
