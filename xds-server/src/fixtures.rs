//! Small builders for model values, shared by the unit tests of every module.

use std::collections::BTreeMap;

use lanyard_model::{
    Action, Backend, BackendTarget, Endpoint, Forward, HeaderModifier, InboundPort, Model,
    PathMatch, Protocol, RequestMatch, Route, RouteTable, Service, ServiceKey, ServicePort,
    ServicePortKey, Timeouts, Workload, WorkloadKey,
};

/// A Service port key.
pub fn spk(namespace: &str, name: &str, port: u16) -> ServicePortKey {
    ServicePortKey::new(ServiceKey::new(namespace, name), port)
}

/// A Service with ClusterIPs (may be empty: headless) and ports without endpoints.
pub fn mk_service(
    namespace: &str,
    name: &str,
    cluster_ips: &[&str],
    ports: &[(u16, Protocol)],
) -> Service {
    Service {
        key: ServiceKey::new(namespace, name),
        cluster_ips: cluster_ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        ports: ports
            .iter()
            .map(|&(port, protocol)| ServicePort {
                port,
                name: None,
                protocol,
                endpoints: vec![],
            })
            .collect(),
    }
}

/// A ready endpoint.
pub fn mk_endpoint(ip: &str, port: u16, zone: Option<&str>) -> Endpoint {
    Endpoint {
        address: ip.parse().unwrap(),
        port,
        ready: true,
        serving: true,
        terminating: false,
        zone: zone.map(str::to_string),
        workload: None,
    }
}

/// A pod serving `inbound` ports.
pub fn mk_workload(namespace: &str, name: &str, inbound: &[(u16, Protocol)]) -> Workload {
    Workload {
        key: WorkloadKey::new(namespace, name),
        ips: vec!["10.1.0.5".parse().unwrap()],
        labels: BTreeMap::new(),
        service_account: "default".into(),
        inbound: inbound
            .iter()
            .map(|&(port, protocol)| InboundPort {
                port,
                protocol,
                services: vec![],
            })
            .collect(),
    }
}

/// A model holding these Services and workloads, with no routing.
pub fn mk_model(services: Vec<Service>, workloads: Vec<Workload>) -> Model {
    Model {
        services: services.into_iter().map(|s| (s.key.clone(), s)).collect(),
        workloads: workloads.into_iter().map(|w| (w.key.clone(), w)).collect(),
        routing: BTreeMap::new(),
    }
}

/// Attaches a producer table to a port.
pub fn set_producer(model: &mut Model, port: ServicePortKey, table: RouteTable) {
    model.routing.entry(port).or_default().producer = Some(table);
}

/// Attaches a consumer table (routes from `namespace`) to a port.
pub fn set_consumer(model: &mut Model, port: ServicePortKey, namespace: &str, table: RouteTable) {
    model
        .routing
        .entry(port)
        .or_default()
        .consumers
        .insert(lanyard_model::NamespaceName::new(namespace), table);
}

/// An HTTP route table.
pub fn mk_table(routes: Vec<Route>) -> RouteTable {
    RouteTable {
        protocol: Protocol::Http,
        routes,
    }
}

/// A route with this path match and action, nothing else.
pub fn mk_route(path: PathMatch, action: Action) -> Route {
    Route::new(
        RequestMatch {
            path,
            ..Default::default()
        },
        action,
    )
}

/// A backend without modifiers.
pub fn mk_backend(target: BackendTarget, weight: u32) -> Backend {
    Backend {
        target,
        weight,
        request_headers: HeaderModifier::default(),
        response_headers: HeaderModifier::default(),
        host_rewrite: None,
    }
}

/// Forward to these Service ports with these weights.
pub fn forward_to(backends: &[(ServicePortKey, u32)]) -> Action {
    Action::Forward(Forward {
        backends: backends
            .iter()
            .map(|(key, weight)| mk_backend(BackendTarget::Service(key.clone()), *weight))
            .collect(),
        rewrite: None,
    })
}

/// `PathMatch::Prefix`.
pub fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.to_string())
}

/// Decodes the HttpConnectionManager of a network filter.
pub fn hcm_of(
    filter: &envoy_types::pb::envoy::config::listener::v3::Filter,
) -> envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager{
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    assert_eq!(filter.name, "envoy.filters.network.http_connection_manager");
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("filter {} has no typed config", filter.name);
    };
    prost::Message::decode(any.value.as_slice()).unwrap()
}

/// The cluster a tcp_proxy network filter forwards to.
pub fn tcp_proxy_cluster(filter: &envoy_types::pb::envoy::config::listener::v3::Filter) -> String {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy::ClusterSpecifier,
    };
    use prost::Message;
    assert_eq!(filter.name, "envoy.filters.network.tcp_proxy");
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("filter {} has no typed config", filter.name);
    };
    match TcpProxy::decode(any.value.as_slice())
        .unwrap()
        .cluster_specifier
    {
        Some(ClusterSpecifier::Cluster(cluster)) => cluster,
        other => panic!("unexpected cluster specifier {other:?}"),
    }
}

/// Changes what the first port of the Service named `service` declares (e.g. `http` becoming
/// `kubernetes.io/h2c`: its cluster changes, its endpoints do not).
pub fn set_protocol(model: &mut Model, service: &str, protocol: Protocol) {
    model
        .services
        .values_mut()
        .find(|s| s.key.name == service)
        .expect("a service of the model")
        .ports[0]
        .protocol = protocol;
}

/// A model that uses every feature the translator knows: dual-stack, headless, TCP and gRPC
/// ports, endpoints in zones, a workload, producer and consumer routes with every filter.
pub fn rich_model() -> Model {
    use std::time::Duration;

    use lanyard_model::{Cors, Mirror, PathRewrite, Redirect, Retry, UrlRewrite};

    let mut cart = mk_service(
        "shop",
        "cart",
        &["10.96.0.10", "fd00::10"],
        &[(80, Protocol::Http), (9090, Protocol::Grpc)],
    );
    cart.ports[0].endpoints = vec![
        mk_endpoint("10.1.0.6", 8080, Some("zone-b")),
        mk_endpoint("10.1.0.5", 8080, Some("zone-a")),
    ];
    cart.ports[1].endpoints = vec![mk_endpoint("10.1.0.5", 9090, Some("zone-a"))];
    let mut model = mk_model(
        vec![
            cart,
            mk_service("shop", "cart-v2", &["10.96.0.11"], &[(80, Protocol::Http)]),
            mk_service("shop", "db", &["10.96.0.12"], &[(5432, Protocol::Tcp)]),
            mk_service("shop", "headless", &[], &[(8080, Protocol::Http)]),
        ],
        vec![
            mk_workload(
                "shop",
                "cart-0",
                &[
                    (8080, Protocol::Http),
                    (9090, Protocol::Grpc),
                    (7000, Protocol::Tcp),
                ],
            ),
            mk_workload(
                "shop",
                "cart-1",
                &[
                    (8080, Protocol::Http),
                    (9090, Protocol::Grpc),
                    (7000, Protocol::Tcp),
                ],
            ),
        ],
    );
    let cart80 = spk("shop", "cart", 80);
    let v2 = spk("shop", "cart-v2", 80);

    let mut canary = mk_backend(BackendTarget::Service(v2.clone()), 10);
    canary.request_headers.set = vec![("x-canary".into(), "true".into())];
    let mut v2_route = mk_route(
        prefix("/v2"),
        Action::Forward(Forward {
            backends: vec![
                mk_backend(BackendTarget::Service(cart80.clone()), 90),
                canary,
            ],
            rewrite: Some(UrlRewrite {
                hostname: Some("cart.internal".into()),
                path: Some(PathRewrite::Prefix("/".into())),
            }),
        }),
    );
    v2_route.request_headers.add = vec![("x-route".into(), "v2".into())];
    v2_route.response_headers.remove = vec!["server".into()];
    v2_route.mirrors = vec![Mirror {
        target: v2.clone(),
        percent: 25.0,
    }];
    v2_route.cors = Some(Cors {
        allow_origins: vec!["https://*.example.com".into()],
        allow_methods: vec!["GET".into()],
        max_age_seconds: Some(60),
        ..Default::default()
    });
    v2_route.timeouts = Timeouts {
        request: Some(Duration::from_secs(10)),
        backend_request: Some(Duration::from_secs(2)),
    };
    v2_route.retry = Some(Retry {
        codes: vec![503],
        attempts: 2,
        backoff: Some(Duration::from_millis(50)),
    });
    let redirect = mk_route(
        PathMatch::Exact("/old".into()),
        Action::Redirect(Redirect {
            scheme: Some("https".into()),
            hostname: None,
            path: Some(PathRewrite::Full("/new".into())),
            port: None,
            status: 301,
        }),
    );
    let split = mk_route(
        prefix("/"),
        Action::Forward(Forward {
            backends: vec![
                mk_backend(BackendTarget::Service(cart80.clone()), 9),
                mk_backend(BackendTarget::Unresolved, 1),
            ],
            rewrite: None,
        }),
    );
    set_producer(
        &mut model,
        cart80.clone(),
        mk_table(vec![v2_route, redirect, split]),
    );
    set_consumer(
        &mut model,
        cart80,
        "web",
        mk_table(vec![mk_route(prefix("/"), forward_to(&[(v2, 1)]))]),
    );
    set_producer(
        &mut model,
        spk("shop", "cart", 9090),
        RouteTable {
            protocol: Protocol::Grpc,
            routes: vec![mk_route(
                prefix("/shop.Cart"),
                forward_to(&[(spk("shop", "cart", 9090), 1)]),
            )],
        },
    );
    model
}

/// The core of a stream from `cart-0.shop` on `protocol`, registered in a registry of its
/// own, with `limits` and no snapshot yet.
pub fn mk_stream_core(
    protocol: crate::status::Protocol,
    limits: crate::limits::StreamLimits,
) -> (crate::ads::core::StreamCore, crate::status::Registration) {
    use std::sync::Arc;
    let node = envoy_types::pb::envoy::config::core::v3::Node {
        id: "cart-0.shop".into(),
        ..Default::default()
    };
    let identity = crate::ProxyIdentity::from_node(Some(&node)).expect("a valid node");
    let registry = Arc::new(crate::status::Registry::default());
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let (registration, _dumps) = registry.register(identity.clone(), protocol, metrics.clone());
    let mut core =
        crate::ads::core::StreamCore::new(identity, registration.status().clone(), metrics);
    core.limits = limits;
    (core, registration)
}

/// A responder of a stream from `cart-0.shop` with `limits`, serving a first snapshot of
/// [`rich_model`].
pub fn mk_responder<R: crate::ads::core::Responder>(
    limits: crate::limits::StreamLimits,
) -> (R, crate::status::Registration) {
    let (mut core, registration) = mk_stream_core(R::PROTOCOL, limits);
    let snapshot = crate::MeshSnapshot::build(
        1,
        std::time::Instant::now(),
        crate::translate(&rich_model(), &crate::XdsOptions::default()),
    )
    .expect("the rich model's snapshot");
    core.set_snapshot(std::sync::Arc::new(snapshot));
    (R::new(core), registration)
}
