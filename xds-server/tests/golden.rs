//! Golden files: each scenario's model is translated and what chosen proxies (and proxyless
//! gRPC clients) get is rendered to `tests/golden/<scenario>.<who>.yaml`.
//!
//! Run with `LANYARD_UPDATE_GOLDEN=1 cargo test -p lanyard-xds --test golden` to rewrite them
//! (and delete golden files no scenario produces any more); review the diff before committing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lanyard_model::{
    Action, Backend, BackendTarget, Endpoint, Forward, InboundPort, Model, NamespaceName,
    PathMatch, PathRewrite, PortRouting, Protocol, RequestMatch, Route, RouteTable, Service,
    ServiceKey, ServicePort, ServicePortKey, UrlRewrite, Workload, WorkloadKey,
};
use lanyard_xds::render::{message_value, resources_value, to_yaml};
use lanyard_xds::{ProxyRef, XdsOptions, translate};

fn mk_service(ns: &str, name: &str, ips: &[&str], ports: &[(u16, Protocol, &[&str])]) -> Service {
    Service {
        key: ServiceKey::new(ns, name),
        cluster_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        ports: ports
            .iter()
            .map(|(port, protocol, endpoints)| ServicePort {
                port: *port,
                name: None,
                protocol: *protocol,
                endpoints: endpoints
                    .iter()
                    .map(|ip| Endpoint {
                        address: ip.parse().unwrap(),
                        port: port + 8000,
                        ready: true,
                        serving: true,
                        terminating: false,
                        zone: Some("zone-a".into()),
                        workload: None,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn mk_route(path: PathMatch, backends: &[(ServicePortKey, u32)]) -> Route {
    Route::new(
        RequestMatch {
            path,
            ..Default::default()
        },
        Action::Forward(Forward {
            backends: backends
                .iter()
                .map(|(key, weight)| Backend::new(BackendTarget::Service(key.clone()), *weight))
                .collect(),
            rewrite: None,
        }),
    )
}

fn key(ns: &str, name: &str, port: u16) -> ServicePortKey {
    ServicePortKey::new(ServiceKey::new(ns, name), port)
}

/// GAMMA: a producer canary split on `cart`, a consumer override from `web`, a gRPC
/// Service with a GRPCRoute, a TCP database, and a sidecar in front of `cart`.
fn gamma() -> Model {
    let services = [
        mk_service(
            "shop",
            "cart",
            &["10.96.0.10", "fd00::10"],
            &[(80, Protocol::Http, &["10.1.0.5", "10.1.0.6"])],
        ),
        mk_service(
            "shop",
            "cart-v2",
            &["10.96.0.11"],
            &[(80, Protocol::Http, &["10.1.0.7"])],
        ),
        mk_service(
            "shop",
            "payments",
            &["10.96.0.20"],
            &[(9090, Protocol::Grpc, &["10.1.0.8"])],
        ),
        mk_service("shop", "db", &["10.96.0.30"], &[(5432, Protocol::Tcp, &[])]),
    ];
    let workload = Workload {
        key: WorkloadKey::new("shop", "cart-0"),
        ips: vec!["10.1.0.5".parse().unwrap()],
        labels: BTreeMap::new(),
        service_account: "cart".into(),
        inbound: vec![InboundPort {
            port: 8080,
            protocol: Protocol::Http,
            services: vec![ServiceKey::new("shop", "cart")],
        }],
    };
    let mut canary = mk_route(
        PathMatch::Prefix("/api".into()),
        &[
            (key("shop", "cart", 80), 80),
            (key("shop", "cart-v2", 80), 20),
        ],
    );
    if let Action::Forward(forward) = &mut canary.action {
        forward.rewrite = Some(UrlRewrite {
            hostname: None,
            path: Some(PathRewrite::Prefix("/".into())),
        });
    }
    let mut consumer = mk_route(PathMatch::default(), &[(key("shop", "cart-v2", 80), 1)]);
    consumer.timeouts.request = Some(Duration::from_secs(3));
    let mut routing = BTreeMap::new();
    routing.insert(
        key("shop", "cart", 80),
        PortRouting {
            producer: Some(RouteTable {
                protocol: Protocol::Http,
                routes: vec![canary],
            }),
            consumers: [(
                NamespaceName::new("web"),
                RouteTable {
                    protocol: Protocol::Http,
                    routes: vec![consumer],
                },
            )]
            .into(),
        },
    );
    routing.insert(
        key("shop", "payments", 9090),
        PortRouting {
            producer: Some(RouteTable {
                protocol: Protocol::Grpc,
                routes: vec![mk_route(
                    PathMatch::Prefix("/shop.Payments".into()),
                    &[(key("shop", "payments", 9090), 1)],
                )],
            }),
            consumers: BTreeMap::new(),
        },
    );
    Model {
        services: services.into_iter().map(|s| (s.key.clone(), s)).collect(),
        workloads: [(workload.key.clone(), workload)].into(),
        routing,
    }
}

/// Every golden output, by file name.
fn outputs() -> BTreeMap<String, String> {
    let mesh = translate(&gamma(), &XdsOptions::default());
    let mut out = BTreeMap::new();
    for (who, namespace, workload) in [
        ("cart-sidecar", "shop", Some("cart-0")),
        ("web-client", "web", None),
    ] {
        let proxy = ProxyRef::envoy(
            NamespaceName::new(namespace),
            workload.map(|w| WorkloadKey::new(namespace, w)),
        );
        out.insert(
            format!("gamma.{who}.yaml"),
            to_yaml(&resources_value(&mesh.for_proxy(&proxy))),
        );
    }
    let api = mesh
        .api_listener("payments.shop:9090", &NamespaceName::new("web"))
        .expect("payments resolves");
    out.insert(
        "gamma.grpc-api-listener.yaml".to_string(),
        to_yaml(&message_value(&api)),
    );
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden_files_match() {
    let outputs = outputs();
    let dir = golden_dir();
    if std::env::var_os("LANYARD_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &outputs {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let produced: BTreeSet<&String> = outputs.keys().collect();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".yaml") && !produced.contains(&name) {
                std::fs::remove_file(&path).unwrap();
            }
        }
        return;
    }
    let mut stale = Vec::new();
    for (name, text) in &outputs {
        let path = dir.join(name);
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        if &golden != text {
            stale.push(name.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "golden files differ: {stale:?}; rerun with LANYARD_UPDATE_GOLDEN=1 and review the diff"
    );
}

#[test]
fn golden_outputs_are_complete() {
    let outputs = outputs();
    assert!(outputs.values().all(|text| !text.contains("@render_error")));
    let sidecar = &outputs["gamma.cart-sidecar.yaml"];
    let web = &outputs["gamma.web-client.yaml"];
    // The producer canary split for the sidecar, the consumer override for `web`.
    assert!(sidecar.contains("weight: 80") && sidecar.contains("path_separated_prefix: /api"));
    assert!(!web.contains("path_separated_prefix: /api") && web.contains("timeout: 3s"));
    assert!(outputs["gamma.grpc-api-listener.yaml"].contains("name: payments.shop:9090"));
}
