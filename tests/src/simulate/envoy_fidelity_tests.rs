//! The walk against Envoy's own code: listeners and filter chains, virtual hosts, regexes,
//! weighted clusters and endpoints. Each expected value is what the Envoy v1.36 code cited on
//! the walk's functions does, not what the Gateway API spec asks for.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthStatus, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    RedirectAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    WeightedCluster, redirect_action, route, route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use prost::Message;

use super::{Outcome, ProxyConfig, Request, endpoints_of, simulate};

fn mk_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn mk_tcp_chain(cluster: &str, port: Option<u32>) -> FilterChain {
    let proxy = TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    FilterChain {
        filter_chain_match: port.map(|p| FilterChainMatch {
            destination_port: Some(UInt32Value { value: p }),
            ..Default::default()
        }),
        filters: vec![Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(filter::ConfigType::TypedConfig(Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
                        .into(),
                value: proxy.encode_to_vec(),
            })),
        }],
        ..Default::default()
    }
}

fn mk_listener(name: &str, ip: &str, port: u32, chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: name.into(),
        address: Some(mk_address(ip, port)),
        filter_chains: chains,
        ..Default::default()
    }
}

fn mk_outbound() -> Listener {
    Listener {
        use_original_dst: Some(BoolValue { value: true }),
        default_filter_chain: Some(mk_tcp_chain("PassthroughCluster", None)),
        ..mk_listener(
            lanyard_xds::names::VIRTUAL_OUTBOUND_LISTENER,
            "0.0.0.0",
            15001,
            vec![],
        )
    }
}

/// A listener on `ip:port` whose HTTP connection manager carries `routes` inline.
fn mk_http_listener(ip: &str, port: u32, routes: RouteConfiguration) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: "http".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(routes)),
        ..Default::default()
    };
    mk_listener(
        "http",
        ip,
        port,
        vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url: "type.googleapis.com/envoy.extensions.filters.network.\
                               http_connection_manager.v3.HttpConnectionManager"
                        .into(),
                    value: hcm.encode_to_vec(),
                })),
            }],
            ..Default::default()
        }],
    )
}

fn mk_route(path: route_match::PathSpecifier, action: RouteAction) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            ..Default::default()
        }),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

fn mk_to(cluster: &str) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

fn mk_routes(domains: &[&str], routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: "routes".into(),
        virtual_hosts: vec![VirtualHost {
            name: "vhost".into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn mk_regex(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.into(),
        ..Default::default()
    }
}

fn mk_request(ip: &str, port: u16, authority: &str, path: &str) -> Request {
    Request {
        destination: (ip.parse().unwrap(), port),
        authority: authority.into(),
        method: "GET".into(),
        path: path.into(),
        headers: vec![],
    }
}

fn walk(listeners: &[Listener], request: &Request) -> Result<Outcome, String> {
    let config = ProxyConfig {
        listeners: listeners.iter().collect(),
        routes: vec![],
        clusters: vec![],
        endpoints: vec![],
    };
    simulate(&config, request)
}

fn tunnelled(cluster: &str) -> Result<Outcome, String> {
    Ok(Outcome::Tunnelled {
        cluster: cluster.into(),
    })
}

/// The path and authority the single backend of a forwarded request sees.
fn forwarded(outcome: Result<Outcome, String>) -> (String, String) {
    match outcome {
        Ok(Outcome::Forwarded { backends, .. }) if backends.len() == 1 => {
            (backends[0].path.clone(), backends[0].cluster.clone())
        }
        other => panic!("not forwarded to one backend: {other:?}"),
    }
}

fn status(outcome: Result<Outcome, String>) -> u16 {
    match outcome {
        Ok(Outcome::Responded { status, .. }) => status,
        other => panic!("not answered by the proxy: {other:?}"),
    }
}

#[test]
fn hand_off_falls_back_to_the_wildcard_listener_on_the_port() {
    // ConnectionHandlerImpl::getBalancedHandlerByAddress: exact ip:port, else 0.0.0.0:port,
    // else the capture listener keeps the connection.
    let listeners = vec![
        mk_outbound(),
        mk_listener(
            "exact",
            "10.96.0.1",
            8080,
            vec![mk_tcp_chain("exact", None)],
        ),
        mk_listener("any", "0.0.0.0", 8080, vec![mk_tcp_chain("any", None)]),
    ];
    let to = |ip, port| walk(&listeners, &mk_request(ip, port, "x", "/"));
    assert_eq!(to("10.96.0.1", 8080), tunnelled("exact"));
    assert_eq!(to("10.244.1.11", 8080), tunnelled("any"));
    assert_eq!(to("10.244.1.11", 9090), tunnelled("PassthroughCluster"));
}

#[test]
fn filter_chain_match_picks_the_chain_of_the_destination_port() {
    // FilterChainManagerImpl::findFilterChain: destination port first, a chain naming the port
    // wins over one without, and with no match the default chain serves.
    let listener = Listener {
        default_filter_chain: Some(mk_tcp_chain("default", None)),
        ..mk_listener(
            "inbound",
            "10.96.0.1",
            80,
            vec![
                mk_tcp_chain("port-9090", Some(9090)),
                mk_tcp_chain("port-8080", Some(8080)),
            ],
        )
    };
    let other = Listener {
        default_filter_chain: None,
        ..mk_listener(
            "other",
            "10.96.0.2",
            8080,
            vec![
                mk_tcp_chain("any-port", None),
                mk_tcp_chain("port-8080", Some(8080)),
            ],
        )
    };
    let wildcard = mk_listener(
        "wildcard",
        "0.0.0.0",
        8080,
        vec![mk_tcp_chain("port-9090", Some(9090))],
    );
    let listeners = vec![mk_outbound(), listener.clone(), other, wildcard];
    let mut on_8080 = listener.clone();
    on_8080.address = Some(mk_address("10.96.0.1", 8080));
    assert_eq!(
        walk(&[on_8080], &mk_request("10.96.0.1", 8080, "x", "/")),
        tunnelled("port-8080")
    );
    assert_eq!(
        walk(&listeners, &mk_request("10.96.0.1", 80, "x", "/")),
        tunnelled("default")
    );
    assert_eq!(
        walk(&listeners, &mk_request("10.96.0.2", 8080, "x", "/")),
        tunnelled("port-8080")
    );
    // No chain and no default chain: Envoy closes the connection.
    assert!(walk(&listeners, &mk_request("10.244.0.9", 8080, "x", "/")).is_err());
}

#[test]
fn virtual_hosts_keep_the_port_unless_told_to_ignore_it() {
    // RouteMatcher::findVirtualHost strips the port only with ignore_port_in_host_matching.
    let routes = mk_routes(
        &["echo.example"],
        vec![mk_route(
            route_match::PathSpecifier::Prefix("/".into()),
            mk_to("echo"),
        )],
    );
    let request = mk_request("10.96.0.1", 8080, "echo.example:8080", "/");
    let listeners = [mk_http_listener("10.96.0.1", 8080, routes.clone())];
    assert_eq!(status(walk(&listeners, &request)), 404);
    let ignoring = RouteConfiguration {
        ignore_port_in_host_matching: true,
        ..routes
    };
    let listeners = [mk_http_listener("10.96.0.1", 8080, ignoring)];
    assert_eq!(forwarded(walk(&listeners, &request)).1, "echo");
}

#[test]
fn wildcard_domains_never_match_the_empty_string() {
    // RouteMatcher::findWildcardVirtualHost: `>=` because *.foo.com shouldn't match .foo.com.
    let listeners = |domain: &str| {
        [mk_http_listener(
            "10.96.0.1",
            80,
            mk_routes(
                &[domain],
                vec![mk_route(
                    route_match::PathSpecifier::Prefix("/".into()),
                    mk_to("echo"),
                )],
            ),
        )]
    };
    let get = |domain: &str, authority: &str| {
        walk(
            &listeners(domain),
            &mk_request("10.96.0.1", 80, authority, "/"),
        )
    };
    assert_eq!(status(get("*foo.com", "foo.com")), 404);
    assert_eq!(status(get("*.foo.com", ".foo.com")), 404);
    assert_eq!(forwarded(get("*foo.com", "afoo.com")).1, "echo");
    assert_eq!(forwarded(get("*.foo.com", "a.FOO.com")).1, "echo");
    assert_eq!(status(get("foo*", "foo")), 404);
    assert_eq!(forwarded(get("foo*", "foo:80")).1, "echo");
}

#[test]
fn regex_rewrites_are_re2_global_replace() {
    // CompiledGoogleReMatcher::replaceAll is RE2::GlobalReplace: `\\` is one backslash, `\1`
    // the first group, and the pattern is RE2's (`&&` inside a class is two literal `&`).
    let rewrite = |pattern: &str, substitution: &str, path: &str| {
        let mut action = mk_to("echo");
        action.regex_rewrite = Some(RegexMatchAndSubstitute {
            pattern: Some(mk_regex(pattern)),
            substitution: substitution.into(),
        });
        let routes = mk_routes(
            &["*"],
            vec![mk_route(
                route_match::PathSpecifier::Prefix("/".into()),
                action,
            )],
        );
        forwarded(walk(
            &[mk_http_listener("10.96.0.1", 80, routes)],
            &mk_request("10.96.0.1", 80, "echo", path),
        ))
        .0
    };
    assert_eq!(rewrite("^/v([0-9]+)/", r"/a\\1/", "/v2/x"), r"/a\1/x");
    assert_eq!(
        rewrite("^/v([0-9]+)/", r"/\1/\0", "/v2/x?q=1"),
        "/2//v2/x?q=1"
    );
    assert_eq!(rewrite("[a-z&&b]+", "_", "/a&b"), "/_");
}

#[test]
fn a_regex_envoy_does_not_compile_rejects_the_route_configuration() {
    // CompiledGoogleReMatcher throws for a pattern RE2 refuses and for one whose program is
    // larger than re2.max_program_size.error_level (100): the resource is NACKed, not a route
    // that never matches.
    for pattern in ["(?x)/a b", "/[a-z]{1,60}"] {
        let routes = mk_routes(
            &["*"],
            vec![mk_route(
                route_match::PathSpecifier::SafeRegex(mk_regex(pattern)),
                mk_to("echo"),
            )],
        );
        let outcome = walk(
            &[mk_http_listener("10.96.0.1", 80, routes)],
            &mk_request("10.96.0.1", 80, "echo", "/a"),
        );
        let error = outcome.expect_err(pattern);
        assert!(
            error.starts_with("Envoy rejects RouteConfiguration routes:"),
            "{error}"
        );
    }
}

#[test]
fn weighted_clusters_whose_weights_sum_to_zero_are_rejected() {
    // WeightedClustersConfig: "Sum of weights in the weighted_cluster must be greater than 0."
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters: ["a", "b"]
                    .into_iter()
                    .map(|name| weighted_cluster::ClusterWeight {
                        name: name.into(),
                        weight: Some(UInt32Value { value: 0 }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let routes = mk_routes(
        &["*"],
        vec![mk_route(
            route_match::PathSpecifier::Prefix("/".into()),
            action,
        )],
    );
    let error = walk(
        &[mk_http_listener("10.96.0.1", 80, routes)],
        &mk_request("10.96.0.1", 80, "echo", "/"),
    )
    .unwrap_err();
    assert!(
        error.contains("Sum of weights in the weighted_cluster must be greater than 0."),
        "{error}"
    );
}

fn mk_endpoints(cluster: &str, endpoints: &[(&str, HealthStatus)]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|(ip, health)| LbEndpoint {
                    health_status: *health as i32,
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(mk_address(ip, 8080)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn picked(endpoints: &[(&str, HealthStatus)]) -> Vec<IpAddr> {
    let cluster = Cluster {
        name: "c".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        ..Default::default()
    };
    let cla = mk_endpoints("c", endpoints);
    let config = ProxyConfig {
        listeners: vec![],
        routes: vec![],
        clusters: vec![&cluster],
        endpoints: vec![&cla],
    };
    endpoints_of(&config, "c")
        .into_iter()
        .map(|(ip, _)| ip)
        .collect()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

#[test]
fn draining_endpoints_get_no_new_requests_unless_the_cluster_panics() {
    use HealthStatus::{Draining, Healthy, Unhealthy};
    // EDS_STATUS_DRAINING hosts are excluded from load balancing.
    assert_eq!(
        picked(&[("10.0.0.1", Healthy), ("10.0.0.2", Draining)]),
        ips(&["10.0.0.1"])
    );
    // Excluded hosts do not count towards the panic threshold: one healthy host of one
    // counted is 100%.
    assert_eq!(
        picked(&[
            ("10.0.0.1", Healthy),
            ("10.0.0.2", Draining),
            ("10.0.0.3", Draining)
        ]),
        ips(&["10.0.0.1"])
    );
    // Nothing but draining hosts: 0% healthy is below the 50% panic threshold, and in panic
    // the load balancer uses all hosts, draining ones included.
    assert_eq!(
        picked(&[("10.0.0.1", Draining), ("10.0.0.2", Draining)]),
        ips(&["10.0.0.1", "10.0.0.2"])
    );
    // One healthy of three counted hosts (33%) is panic too.
    assert_eq!(
        picked(&[
            ("10.0.0.1", Healthy),
            ("10.0.0.2", Unhealthy),
            ("10.0.0.3", Unhealthy)
        ]),
        ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    );
    // One of two (50%) is not.
    assert_eq!(
        picked(&[("10.0.0.1", Healthy), ("10.0.0.2", Unhealthy)]),
        ips(&["10.0.0.1"])
    );
}

#[test]
fn redirect_regex_rewrites_are_re2_global_replace() {
    // RouteEntryImplBase::newUri rewrites the path with regex_rewrite_redirect_->replaceAll,
    // RE2::GlobalReplace: `&&` in a class is literal and `\\` one backslash.
    let redirect = |pattern: &str, substitution: &str, path: &str| {
        let route = Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(route::Action::Redirect(RedirectAction {
                path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::RegexRewrite(
                    RegexMatchAndSubstitute {
                        pattern: Some(mk_regex(pattern)),
                        substitution: substitution.into(),
                    },
                )),
                ..Default::default()
            })),
            ..Default::default()
        };
        match walk(
            &[mk_http_listener(
                "10.96.0.1",
                80,
                mk_routes(&["*"], vec![route]),
            )],
            &mk_request("10.96.0.1", 80, "echo", path),
        ) {
            Ok(Outcome::Redirected { location, .. }) => location,
            other => panic!("not redirected: {other:?}"),
        }
    };
    assert_eq!(redirect("[a-z&&b]+", "_", "/a&b"), "http://echo/_");
    assert_eq!(
        redirect("^/v([0-9]+)", r"/a\\\1", "/v2/x"),
        r"http://echo/a\2/x"
    );
}

#[test]
fn a_cors_origin_regex_envoy_does_not_compile_rejects_the_route_configuration() {
    // CorsPolicyImpl compiles allow_origin_string_match when the route configuration loads.
    let policy = CorsPolicy {
        allow_origin_string_match: vec![StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::SafeRegex(mk_regex(
                "(?x)https://a b",
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut routes = mk_routes(
        &["*"],
        vec![mk_route(
            route_match::PathSpecifier::Prefix("/".into()),
            mk_to("echo"),
        )],
    );
    routes.virtual_hosts[0].typed_per_filter_config.insert(
        "envoy.filters.http.cors".into(),
        Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy".into(),
            value: policy.encode_to_vec(),
        },
    );
    let error = walk(
        &[mk_http_listener("10.96.0.1", 80, routes)],
        &mk_request("10.96.0.1", 80, "echo", "/"),
    )
    .unwrap_err();
    assert!(error.contains("invalid perl operator"), "{error}");
}
