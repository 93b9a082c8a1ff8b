//! Tests of `translate` and `MeshResources`: what each proxy gets and what is shared.

use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use lanyard_model::{Model, NamespaceName, Protocol, WorkloadKey};
use prost::Message;

use super::*;
use crate::fixtures::{mk_model, mk_service, mk_workload, rich_model, spk};

fn proxy(namespace: &str, workload: Option<&str>) -> ProxyRef {
    ProxyRef::envoy(
        NamespaceName::new(namespace),
        workload.map(|w| WorkloadKey::new(namespace, w)),
    )
}

fn names<T>(items: &[Arc<T>], name: impl Fn(&T) -> &str) -> Vec<&str> {
    items.iter().map(|i| name(i)).collect()
}

fn route<'a>(resources: &'a ProxyResources, name: &str) -> &'a Arc<RouteConfiguration> {
    resources
        .routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route {name}"))
}

fn mesh() -> MeshResources {
    translate(&rich_model(), &XdsOptions::default())
}

#[test]
fn default_options() {
    let options = XdsOptions::default();
    assert_eq!(options.cluster_domain, "cluster.local");
    assert_eq!(options.outbound_port, 15001);
    assert_eq!(options.inbound_port, 15006);
}

#[test]
fn a_sidecar_gets_every_resource_sorted_by_name() {
    let resources = mesh().for_proxy(&proxy("shop", Some("cart-0")));
    assert_eq!(
        names(&resources.listeners, |l| &l.name),
        [
            "10.96.0.10_80",
            "10.96.0.10_9090",
            "10.96.0.11_80",
            "10.96.0.12_5432",
            "fd00::10_80",
            "fd00::10_9090",
            "virtualInbound",
            "virtualOutbound",
        ]
    );
    assert_eq!(
        names(&resources.clusters, |c| &c.name),
        [
            "InboundPassthroughCluster",
            "PassthroughCluster",
            "inbound|7000||",
            "inbound|8080||",
            "inbound|9090||",
            "outbound|5432||db.shop.svc.cluster.local",
            // Byte order: '0' sorts before '|'.
            "outbound|8080||headless.shop.svc.cluster.local",
            "outbound|80||cart-v2.shop.svc.cluster.local",
            "outbound|80||cart.shop.svc.cluster.local",
            "outbound|9090||cart.shop.svc.cluster.local",
        ]
    );
    assert_eq!(
        names(&resources.endpoints, |e| &e.cluster_name),
        [
            "outbound|5432||db.shop.svc.cluster.local",
            // Byte order: '0' sorts before '|'.
            "outbound|8080||headless.shop.svc.cluster.local",
            "outbound|80||cart-v2.shop.svc.cluster.local",
            "outbound|80||cart.shop.svc.cluster.local",
            "outbound|9090||cart.shop.svc.cluster.local",
        ]
    );
    assert_eq!(
        names(&resources.routes, |r| &r.name),
        [
            "cart-v2.shop.svc.cluster.local:80",
            "cart.shop.svc.cluster.local:80",
            "cart.shop.svc.cluster.local:9090",
            "headless.shop.svc.cluster.local:8080",
        ]
    );
}

#[test]
fn headless_service_has_cluster_endpoints_and_routes_but_no_listener() {
    let resources = mesh().for_proxy(&proxy("shop", None));
    assert!(!resources.listeners.iter().any(|l| l.name.contains("8080")));
    let cla = resources
        .endpoints
        .iter()
        .find(|e| e.cluster_name.contains("headless"))
        .unwrap();
    assert!(
        cla.endpoints.is_empty(),
        "an empty assignment is still sent"
    );
    route(&resources, "headless.shop.svc.cluster.local:8080");
}

#[test]
fn consumer_variant_is_chosen_per_namespace_and_shared() {
    let mesh = mesh();
    let shop_a = mesh.for_proxy(&proxy("shop", Some("cart-0")));
    let shop_b = mesh.for_proxy(&proxy("shop", None));
    let web_a = mesh.for_proxy(&proxy("web", None));
    let web_b = mesh.for_proxy(&proxy("web", Some("frontend-0")));
    let name = "cart.shop.svc.cluster.local:80";

    assert!(Arc::ptr_eq(route(&shop_a, name), route(&shop_b, name)));
    assert!(Arc::ptr_eq(route(&web_a, name), route(&web_b, name)));
    assert!(!Arc::ptr_eq(route(&shop_a, name), route(&web_a, name)));
    assert_eq!(route(&shop_a, name).virtual_hosts[0].routes.len(), 3);
    assert_eq!(route(&web_a, name).virtual_hosts[0].routes.len(), 1);
    // Ports without consumer routes are the same object for everyone.
    let grpc = "cart.shop.svc.cluster.local:9090";
    assert!(Arc::ptr_eq(route(&shop_a, grpc), route(&web_a, grpc)));

    for (a, b) in shop_a
        .clusters
        .iter()
        .filter(|c| c.name.starts_with("outbound"))
        .zip(
            web_a
                .clusters
                .iter()
                .filter(|c| c.name.starts_with("outbound")),
        )
    {
        assert!(Arc::ptr_eq(a, b), "{} not shared", a.name);
    }
    for (a, b) in shop_a.endpoints.iter().zip(&web_a.endpoints) {
        assert!(Arc::ptr_eq(a, b));
    }
    for (a, b) in shop_a
        .listeners
        .iter()
        .filter(|l| l.name != "virtualInbound")
        .zip(
            web_a
                .listeners
                .iter()
                .filter(|l| l.name != "virtualInbound"),
        )
    {
        assert!(Arc::ptr_eq(a, b), "{} not shared", a.name);
    }
}

#[test]
fn chosen_variant_agrees_with_the_model() {
    let model = rich_model();
    let options = XdsOptions::default();
    let mesh = translate(&model, &options);
    let ctx = crate::routes::RouteContext::new(&model, "cluster.local");
    for (namespace, kind) in ["shop", "web", "elsewhere"]
        .into_iter()
        .flat_map(|ns| [(ns, ProxyKind::Envoy), (ns, ProxyKind::Grpc)])
    {
        let mut client = proxy(namespace, None);
        client.kind = kind;
        let resources = mesh.for_proxy(&client);
        for (key, service) in &model.services {
            for port in service.ports.iter().filter(|p| p.protocol.is_http()) {
                let port_key = lanyard_model::ServicePortKey::new(key.clone(), port.port);
                let name = crate::names::route_config(&port_key, "cluster.local");
                let expected = match model.table_for(&port_key, &NamespaceName::new(namespace)) {
                    Some(table) => crate::routes::for_table(&name, table, port.port, kind, &ctx),
                    None => crate::routes::single_cluster(
                        &name,
                        &crate::names::outbound_cluster(&port_key, "cluster.local"),
                    ),
                };
                assert_eq!(
                    **route(&resources, &name),
                    expected,
                    "{namespace} {kind} {name}"
                );
            }
        }
    }
}

#[test]
fn only_consumer_routes_leave_other_namespaces_on_passthrough() {
    let mut model = mk_model(
        vec![mk_service(
            "a",
            "svc",
            &["10.0.0.1"],
            &[(80, Protocol::Http)],
        )],
        vec![],
    );
    crate::fixtures::set_consumer(
        &mut model,
        spk("a", "svc", 80),
        "b",
        crate::fixtures::mk_table(vec![crate::fixtures::mk_route(
            crate::fixtures::prefix("/b"),
            lanyard_model::Action::DirectResponse { status: 418 },
        )]),
    );
    let mesh = translate(&model, &XdsOptions::default());
    let name = "svc.a.svc.cluster.local:80";
    let b = mesh.for_proxy(&proxy("b", None));
    let a = mesh.for_proxy(&proxy("a", None));
    assert!(matches!(
        route(&b, name).virtual_hosts[0].routes[0].action,
        Some(envoy_types::pb::envoy::config::route::v3::route::Action::DirectResponse(_))
    ));
    assert!(matches!(
        route(&a, name).virtual_hosts[0].routes[0].action,
        Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(_))
    ));
}

#[test]
fn inbound_listener_per_workload_shared_by_identical_pods() {
    let mesh = mesh();
    let cart0 = mesh.for_proxy(&proxy("shop", Some("cart-0")));
    let cart1 = mesh.for_proxy(&proxy("shop", Some("cart-1")));
    let inbound = |r: &ProxyResources| {
        r.listeners
            .iter()
            .find(|l| l.name == "virtualInbound")
            .unwrap()
            .clone()
    };
    assert!(Arc::ptr_eq(&inbound(&cart0), &inbound(&cart1)));
    assert_eq!(inbound(&cart0).filter_chains.len(), 3);

    for unknown in [proxy("shop", None), proxy("shop", Some("not-a-pod"))] {
        let resources = mesh.for_proxy(&unknown);
        let listener = inbound(&resources);
        assert!(listener.filter_chains.is_empty());
        assert!(listener.default_filter_chain.is_some());
        assert!(
            !resources
                .clusters
                .iter()
                .any(|c| c.name.starts_with("inbound|"))
        );
    }
}

#[test]
fn empty_mesh_still_has_capture_listeners_and_passthrough() {
    let mesh = translate(&Model::default(), &XdsOptions::default());
    let resources = mesh.for_proxy(&proxy("default", None));
    assert_eq!(
        names(&resources.listeners, |l| &l.name),
        ["virtualInbound", "virtualOutbound"]
    );
    assert_eq!(
        names(&resources.clusters, |c| &c.name),
        ["InboundPassthroughCluster", "PassthroughCluster"]
    );
    assert!(resources.routes.is_empty() && resources.endpoints.is_empty());
}

#[test]
fn options_are_honoured() {
    let options = XdsOptions {
        cluster_domain: "corp.internal".into(),
        outbound_port: 16001,
        inbound_port: 16006,
    };
    let mesh = translate(
        &mk_model(
            vec![mk_service(
                "a",
                "svc",
                &["10.0.0.1"],
                &[(80, Protocol::Http)],
            )],
            vec![mk_workload("a", "pod", &[(80, Protocol::Http)])],
        ),
        &options,
    );
    assert_eq!(mesh.options(), &options);
    let resources = mesh.for_proxy(&proxy("a", Some("pod")));
    assert!(
        resources
            .clusters
            .iter()
            .any(|c| c.name == "outbound|80||svc.a.svc.corp.internal")
    );
    let port_of = |name: &str| {
        let listener = resources.listeners.iter().find(|l| l.name == name).unwrap();
        listener.address.clone().unwrap()
    };
    assert_eq!(
        port_of("virtualOutbound"),
        crate::protobuf::socket_address("0.0.0.0", 16001)
    );
    assert_eq!(
        port_of("virtualInbound"),
        crate::protobuf::socket_address("0.0.0.0", 16006)
    );
}

#[test]
fn translation_is_deterministic() {
    let p = proxy("web", Some("frontend-0"));
    let a = mesh().for_proxy(&p);
    let b = mesh().for_proxy(&p);
    assert_eq!(a, b);
    let bytes = |r: &ProxyResources| -> Vec<Vec<u8>> {
        r.listeners
            .iter()
            .map(|m| m.encode_to_vec())
            .chain(r.routes.iter().map(|m| m.encode_to_vec()))
            .chain(r.clusters.iter().map(|m| m.encode_to_vec()))
            .chain(r.endpoints.iter().map(|m| m.encode_to_vec()))
            .collect()
    };
    assert_eq!(bytes(&a), bytes(&b));
}

#[test]
fn api_listener_through_the_mesh() {
    let mesh = mesh();
    let listener = mesh
        .api_listener("cart:9090", &NamespaceName::new("shop"))
        .unwrap();
    assert_eq!(listener.name, "cart:9090");
    assert!(listener.api_listener.is_some());
    assert!(
        mesh.api_listener("cart:9090", &NamespaceName::new("web"))
            .is_none()
    );
    assert!(
        mesh.api_listener("cart.shop.svc.cluster.local", &NamespaceName::new("web"))
            .is_some()
    );
    assert!(
        mesh.api_listener("nope.shop", &NamespaceName::new("shop"))
            .is_none()
    );
}

/// What proxyless gRPC rejects a whole RouteConfiguration for (its xds_route_config_parser):
/// `path_separated_prefix`, a retry policy with `num_retries: 0`, weighted clusters without
/// weight. What a gRPC client gets must avoid all three, whatever its ports declare.
#[test]
fn route_configs_served_to_grpc_clients_are_acceptable_to_them() {
    use envoy_types::pb::envoy::config::route::v3::{
        route, route_action::ClusterSpecifier, route_match::PathSpecifier,
    };

    let mut model = rich_model();
    let h2 = spk("shop", "h2", 8443);
    model.services.insert(
        h2.service.clone(),
        mk_service("shop", "h2", &["10.96.0.40"], &[(8443, Protocol::Http2)]),
    );
    let mut slow = crate::fixtures::mk_route(
        crate::fixtures::prefix("/api"),
        crate::fixtures::forward_to(&[(h2.clone(), 1)]),
    );
    slow.timeouts.backend_request = Some(std::time::Duration::from_secs(1));
    crate::fixtures::set_producer(&mut model, h2, crate::fixtures::mk_table(vec![slow]));

    let mesh = translate(&model, &XdsOptions::default());
    let mut client = proxy("shop", None);
    client.kind = ProxyKind::Grpc;
    let resources = mesh.for_proxy(&client);
    let mut checked = 0;
    for config in &resources.routes {
        for r in config.virtual_hosts.iter().flat_map(|v| &v.routes) {
            let path = r.r#match.as_ref().unwrap().path_specifier.as_ref().unwrap();
            checked += 1;
            assert!(
                !matches!(path, PathSpecifier::PathSeparatedPrefix(_)),
                "{}: {path:?}",
                config.name
            );
            if let Some(route::Action::Route(action)) = &r.action {
                if let Some(policy) = &action.retry_policy {
                    assert!(policy.num_retries.unwrap().value > 0, "{}", config.name);
                }
                if let Some(ClusterSpecifier::WeightedClusters(w)) = &action.cluster_specifier {
                    assert!(w.clusters.iter().all(|c| c.weight.unwrap().value > 0));
                }
            }
        }
    }
    assert!(
        checked > 2,
        "every route of every configuration was checked"
    );
}

#[test]
fn only_proxyless_grpc_clients_get_the_invalid_backend_cluster_with_no_endpoints() {
    let mesh = mesh();
    let name = crate::INVALID_BACKEND_CLUSTER;
    let envoy = mesh.for_proxy(&proxy("shop", None));
    assert!(!envoy.clusters.iter().any(|c| c.name == name));
    assert!(!envoy.endpoints.iter().any(|e| e.cluster_name == name));
    let mut grpc = proxy("shop", None);
    grpc.kind = ProxyKind::Grpc;
    let grpc = mesh.for_proxy(&grpc);
    let cluster = grpc.clusters.iter().find(|c| c.name == name).unwrap();
    assert!(cluster.eds_cluster_config.is_some());
    let assignment = grpc
        .endpoints
        .iter()
        .find(|e| e.cluster_name == name)
        .unwrap();
    assert!(assignment.endpoints.is_empty());
    // Both lists stay sorted by name.
    assert!(grpc.clusters.windows(2).all(|w| w[0].name < w[1].name));
    assert!(
        grpc.endpoints
            .windows(2)
            .all(|w| w[0].cluster_name < w[1].cluster_name)
    );
}
