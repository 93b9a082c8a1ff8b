//! What Lanyard serves proxyless clients, checked against gRPC's rules: every API listener a
//! client in `shop` (producer routes), `web` (consumer routes) or `other` would get for the
//! rich model, and the RouteConfigurations, Clusters and ClusterLoadAssignments it leads to.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route::Action, route_action::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use lanyard_model::NamespaceName;
use prost::Message;

use super::*;
use crate::fixtures::rich_model;
use crate::node::ProxyKind;
use crate::{INVALID_BACKEND_CLUSTER, Listener, MeshResources, ProxyRef, translate};

/// A proxyless gRPC client in `namespace`.
fn grpc_client(namespace: NamespaceName) -> ProxyRef {
    ProxyRef {
        namespace,
        workload: None,
        kind: ProxyKind::Grpc,
    }
}

/// The Service ports of the rich model, as `xds:///` names.
const TARGETS: &[&str] = &[
    "cart.shop.svc.cluster.local:80",
    "cart.shop.svc.cluster.local:9090",
    "cart-v2.shop.svc.cluster.local:80",
    "db.shop.svc.cluster.local:5432",
    "headless.shop.svc.cluster.local:8080",
];

const CLIENT_NAMESPACES: &[&str] = &["shop", "web", "other"];

fn hcm(listener: &Listener) -> HttpConnectionManager {
    let any = listener
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
        .expect("an API listener");
    HttpConnectionManager::decode(any.value.as_slice()).expect("an HttpConnectionManager")
}

/// Every cluster a route configuration sends to.
fn clusters_named(config: &RouteConfiguration) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for route in config.virtual_hosts.iter().flat_map(|v| &v.routes) {
        let Some(Action::Route(action)) = &route.action else {
            continue;
        };
        match &action.cluster_specifier {
            Some(ClusterSpecifier::Cluster(name)) => {
                names.insert(name.clone());
            }
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                names.extend(w.clusters.iter().map(|c| c.name.clone()));
            }
            _ => {}
        }
    }
    names
}

/// What a client in `namespace` asking for `target` would get, each violation prefixed with
/// the resource it is in: `LDS <name>`, `RDS <name>`, `CDS <name>`, `EDS <name>`.
fn check_client(mesh: &MeshResources, target: &str, namespace: &str) -> Vec<String> {
    let ns = NamespaceName::new(namespace);
    let listener = mesh.api_listener(target, &ns).expect("a mesh Service port");
    let mut out: Vec<String> = check_listener(&listener)
        .into_iter()
        .map(|v| format!("LDS {target}: {v}"))
        .collect();
    let view = mesh.for_proxy(&grpc_client(ns));
    let route_configs: Vec<RouteConfiguration> = match hcm(&listener).route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            let config = view
                .routes
                .iter()
                .find(|r| r.name == rds.route_config_name)
                .expect("the RouteConfiguration the listener names");
            out.extend(
                check_route_configuration(config)
                    .into_iter()
                    .map(|v| format!("RDS {}: {v}", config.name)),
            );
            vec![(**config).clone()]
        }
        Some(RouteSpecifier::RouteConfig(inline)) => vec![inline],
        _ => Vec::new(),
    };
    for name in route_configs.iter().flat_map(clusters_named) {
        // Deliberately undefined: gRPC fails the calls routed there with UNAVAILABLE (the
        // cluster does not exist), which is not a NACK of anything.
        if name == INVALID_BACKEND_CLUSTER {
            continue;
        }
        let cluster = view
            .clusters
            .iter()
            .find(|c| c.name == name)
            .expect("every routed cluster is served");
        out.extend(
            check_cluster(cluster)
                .into_iter()
                .map(|v| format!("CDS {name}: {v}")),
        );
        let eds_name = cluster
            .eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(&name);
        let assignment = view
            .endpoints
            .iter()
            .find(|e| e.cluster_name == eds_name)
            .expect("every EDS cluster has its assignment");
        out.extend(
            check_load_assignment(assignment)
                .into_iter()
                .map(|v| format!("EDS {eds_name}: {v}")),
        );
    }
    out
}

fn check_all() -> BTreeSet<String> {
    let mesh = translate(&rich_model(), &Default::default());
    let mut all = BTreeSet::new();
    for target in TARGETS {
        for namespace in CLIENT_NAMESPACES {
            all.extend(check_client(&mesh, target, namespace));
        }
    }
    all
}

#[test]
fn proxyless_clients_get_nothing_grpc_refuses() {
    let got = check_all();
    assert_eq!(got, BTreeSet::new(), "violations: {got:#?}");
}

/// Why proxyless clients get their own form: cart:80 is an HTTP port whose producer routes
/// match `PathPrefix /v2`, which Envoy's form writes as `path_separated_prefix`; gRPC refuses
/// it and NACKs the whole RouteConfiguration. gRPC stops reading a route at the path
/// specifier it refuses; with `prefix` in its place the configuration passes: the CORS
/// per-route config gRPC has no filter for is wrapped in an optional `FilterConfig`. The
/// notes say what a proxyless client still reads differently.
#[test]
fn the_envoy_form_of_cart_80_fails_grpc_only_for_its_path_specifier() {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;

    let mesh = translate(&rich_model(), &Default::default());
    let view = mesh.for_proxy(&ProxyRef::envoy(NamespaceName::new("shop"), None));
    let envoy_form = view
        .routes
        .iter()
        .find(|r| r.name == "cart.shop.svc.cluster.local:80")
        .expect("cart:80 routes");
    assert_eq!(
        check_route_configuration(envoy_form),
        vec![Violation::new(
            "virtual_hosts[0].routes[0].match.path_separated_prefix",
            "invalid path specifier"
        )]
    );
    let mut config = (**view
        .routes
        .iter()
        .find(|r| r.name == "cart.shop.svc.cluster.local:80")
        .expect("cart:80 routes"))
    .clone();
    for route in config.virtual_hosts.iter_mut().flat_map(|v| &mut v.routes) {
        if let Some(m) = &mut route.r#match
            && let Some(PathSpecifier::PathSeparatedPrefix(p)) = &m.path_specifier
        {
            m.path_specifier = Some(PathSpecifier::Prefix(p.clone()));
        }
    }
    let cors = &config.virtual_hosts[0].routes[0].typed_per_filter_config;
    assert!(cors.contains_key("envoy.filters.http.cors"), "{cors:?}");
    assert_eq!(check_route_configuration(&config), vec![]);
    // The HTTP retry (code 503) has no code gRPC reads: a proxyless client does not retry.
    assert_eq!(
        notes_route_configuration(&config),
        vec![
            Violation::new(
                "virtual_hosts[0].routes[0].route.retry_policy.retry_on",
                "gRPC ignores connect-failure,refused-stream,reset,retriable-status-codes: it \
                 retries only on cancelled,deadline-exceeded,internal,resource-exhausted,unavailable"
            ),
            Violation::new(
                "virtual_hosts[0].routes[1].match.path",
                "route skipped: the path is not of the form /service/method"
            ),
        ]
    );
}

#[test]
fn grpc_ports_pass_for_every_client() {
    let mesh = translate(&rich_model(), &Default::default());
    for namespace in CLIENT_NAMESPACES {
        assert_eq!(
            check_client(&mesh, "cart.shop.svc.cluster.local:9090", namespace),
            Vec::<String>::new(),
            "client in {namespace}"
        );
    }
}

#[test]
fn tcp_ports_and_ports_without_routes_pass() {
    let mesh = translate(&rich_model(), &Default::default());
    for target in [
        "db.shop.svc.cluster.local:5432",
        "cart-v2.shop.svc.cluster.local:80",
        "headless.shop.svc.cluster.local:8080",
    ] {
        for namespace in CLIENT_NAMESPACES {
            assert_eq!(
                check_client(&mesh, target, namespace),
                Vec::<String>::new(),
                "{target} from {namespace}"
            );
        }
    }
}

/// What gRPC reads differently without refusing it, in the route configurations of the rich
/// model (each variant once).
#[test]
fn notes_on_what_lanyard_serves_today() {
    let mesh = translate(&rich_model(), &Default::default());
    let mut notes = BTreeSet::new();
    for namespace in CLIENT_NAMESPACES {
        let view = mesh.for_proxy(&grpc_client(NamespaceName::new(*namespace)));
        for config in &view.routes {
            notes.extend(
                notes_route_configuration(config)
                    .into_iter()
                    .map(|v| format!("RDS {}: {v}", config.name)),
            );
        }
    }
    // The producer's `PathPrefix /v2` in gRPC's form: the exact `/v2` half (routes[0]) is not
    // a gRPC method path, so gRPC skips it, and the `/v2/` half (routes[1]) carries an HTTP
    // retry gRPC does not read. The `Exact /old` redirect (routes[2]) is skipped too (and a
    // redirect would fail the call anyway).
    let expected: BTreeSet<String> = [
        "RDS cart.shop.svc.cluster.local:80: virtual_hosts[0].routes[0].match.path: route skipped: the path is not of the form /service/method",
        "RDS cart.shop.svc.cluster.local:80: virtual_hosts[0].routes[1].route.retry_policy.retry_on: gRPC ignores connect-failure,refused-stream,reset,retriable-status-codes: it retries only on cancelled,deadline-exceeded,internal,resource-exhausted,unavailable",
        "RDS cart.shop.svc.cluster.local:80: virtual_hosts[0].routes[2].match.path: route skipped: the path is not of the form /service/method",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(notes, expected, "notes: {notes:#?}");
}
