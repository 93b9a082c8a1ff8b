//! The test mesh: `shop/cart` (split 90/10 to `shop/cart-v2` by a producer route) and
//! `shop/cart-v2`, each with one endpoint; the pod `shop/cart-0` serving port 8080.

use lanyard_model::{Endpoint, Model, Protocol};
use lanyard_xds::testing::model::{
    forward_to, mk_endpoint, mk_model, mk_route, mk_service, mk_table, mk_workload, prefix,
    set_consumer, set_producer, spk,
};
use lanyard_xds::type_url;

pub const CDS: &str = type_url::CLUSTER;
pub const EDS: &str = type_url::ENDPOINT;
pub const LDS: &str = type_url::LISTENER;
pub const RDS: &str = type_url::ROUTE;

pub const CART: &str = "outbound|80||cart.shop.svc.cluster.local";
/// Sorts before [`CART`] (`-` < `.`).
pub const CART_V2: &str = "outbound|80||cart-v2.shop.svc.cluster.local";
pub const CART_ROUTE: &str = "cart.shop.svc.cluster.local:80";

/// The node of the pod `shop/cart-0` (known to the model).
pub const CART_0: &str = "cart-0.shop";

pub fn base() -> Model {
    let mut cart = mk_service("shop", "cart", &["10.96.0.10"], &[(80, Protocol::Http)]);
    cart.ports[0].endpoints = vec![mk_endpoint("10.1.0.5", 8080, None)];
    let mut v2 = mk_service("shop", "cart-v2", &["10.96.0.11"], &[(80, Protocol::Http)]);
    v2.ports[0].endpoints = vec![mk_endpoint("10.1.0.6", 8080, None)];
    let mut model = mk_model(
        vec![cart, v2],
        vec![mk_workload("shop", "cart-0", &[(8080, Protocol::Http)])],
    );
    set_split(&mut model, 90, 10);
    model
}

/// The producer route of `cart:80`: weights to cart and cart-v2.
pub fn set_split(model: &mut Model, cart: u32, v2: u32) {
    let table = mk_table(vec![mk_route(
        prefix("/"),
        forward_to(&[
            (spk("shop", "cart", 80), cart),
            (spk("shop", "cart-v2", 80), v2),
        ]),
    )]);
    set_producer(model, spk("shop", "cart", 80), table);
}

/// A consumer route of `cart:80` from `namespace`.
pub fn set_consumer_split(model: &mut Model, namespace: &str, cart: u32, v2: u32) {
    let table = mk_table(vec![mk_route(
        prefix("/"),
        forward_to(&[
            (spk("shop", "cart", 80), cart),
            (spk("shop", "cart-v2", 80), v2),
        ]),
    )]);
    set_consumer(model, spk("shop", "cart", 80), namespace, table);
}

/// Replaces the endpoints of `shop/<service>:80`.
pub fn set_endpoints(model: &mut Model, service: &str, ips: &[&str]) {
    let endpoints: Vec<Endpoint> = ips.iter().map(|ip| mk_endpoint(ip, 8080, None)).collect();
    model
        .services
        .values_mut()
        .find(|s| s.key.name == service)
        .expect("a service of the test mesh")
        .ports[0]
        .endpoints = endpoints;
}

/// Adds `shop/<name>:80` with one endpoint.
pub fn add_service(model: &mut Model, name: &str, cluster_ip: &str) {
    let mut service = mk_service("shop", name, &[cluster_ip], &[(80, Protocol::Http)]);
    service.ports[0].endpoints = vec![mk_endpoint("10.1.0.9", 8080, None)];
    model.services.insert(service.key.clone(), service);
}

/// Removes cart-v2 and every route to it.
pub fn remove_v2(model: &mut Model) {
    model.services.retain(|k, _| k.name != "cart-v2");
    model.routing.clear();
}

pub use lanyard_xds::fixtures::set_protocol;

/// The cluster name of `shop/<name>:80`.
pub fn cluster(name: &str) -> String {
    format!("outbound|80||{name}.shop.svc.cluster.local")
}
