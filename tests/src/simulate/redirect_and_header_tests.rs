//! The walk against Envoy's own code: each expected value below is what the cited Envoy v1.36
//! function computes for the configuration, not what the Gateway API spec asks for.

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RedirectAction, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost, WeightedCluster, header_matcher, redirect_action, route, route_action,
    route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use prost::Message;

use super::*;

fn mk_request(authority: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        destination: ([10, 0, 0, 1].into(), 80),
        authority: authority.into(),
        method: method.into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn mk_route(action: route::Action) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(action),
        ..Default::default()
    }
}

fn mk_config(routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![VirtualHost {
            name: "r".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn walk(config: &RouteConfiguration, request: &Request, cors: bool) -> Outcome {
    let proxy = ProxyConfig {
        listeners: vec![],
        routes: vec![],
        clusters: vec![],
        endpoints: vec![],
    };
    let cors = cors.then_some(lanyard_xds::names::filters::CORS);
    route_request(&proxy, config, request, cors).unwrap()
}

fn mk_header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn set(key: &str, value: &str) -> HeaderValueOption {
    mk_header(key, value, HeaderAppendAction::OverwriteIfExistsOrAdd)
}

fn location(redirect: RedirectAction, request: &Request) -> String {
    match walk(
        &mk_config(vec![mk_route(route::Action::Redirect(redirect))]),
        request,
        false,
    ) {
        Outcome::Redirected { location, .. } => location,
        other => panic!("not a redirect: {other:?}"),
    }
}

fn https() -> Option<redirect_action::SchemeRewriteSpecifier> {
    Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(
        "https".into(),
    ))
}

/// Utility::newUri / processRequestHost: on a scheme change only the old protocol's default
/// port goes (`:80` when x-forwarded-proto is http); `:8080` stays.
#[test]
fn a_scheme_change_keeps_a_port_other_than_the_default() {
    let to_https = RedirectAction {
        scheme_rewrite_specifier: https(),
        ..Default::default()
    };
    let get = |authority: &str| mk_request(authority, "GET", "/a?q=1", &[]);
    assert_eq!(
        location(to_https.clone(), &get("echo:8080")),
        "https://echo:8080/a?q=1"
    );
    assert_eq!(
        location(to_https.clone(), &get("echo:80")),
        "https://echo/a?q=1"
    );
    assert_eq!(
        location(to_https.clone(), &get("echo")),
        "https://echo/a?q=1"
    );
    // x-forwarded-proto decides which default port goes, not the connection.
    let from_https = mk_request("echo:443", "GET", "/a", &[("x-forwarded-proto", "https")]);
    let to_http = RedirectAction {
        scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(
            "http".into(),
        )),
        ..Default::default()
    };
    assert_eq!(location(to_http, &from_https), "http://echo/a");
    // No scheme change: the port stays, even 80.
    assert_eq!(
        location(RedirectAction::default(), &get("echo:80")),
        "http://echo:80/a?q=1"
    );
}

/// newUri: `port_redirect` is printed as given, the default ports included, and replaces
/// the request's port.
#[test]
fn a_port_redirect_is_always_printed() {
    let get = mk_request("echo:8080", "GET", "/p", &[]);
    let port = |port_redirect: u32, scheme| RedirectAction {
        port_redirect,
        scheme_rewrite_specifier: scheme,
        ..Default::default()
    };
    assert_eq!(location(port(80, None), &get), "http://echo:80/p");
    assert_eq!(location(port(443, https()), &get), "https://echo:443/p");
    assert_eq!(location(port(8083, None), &get), "http://echo:8083/p");
}

/// newUri: `host_redirect` is printed as given; without `port_redirect` no port follows it,
/// whatever port the request had.
#[test]
fn a_host_redirect_without_a_port_redirect_prints_no_port() {
    let get = mk_request("echo:8080", "GET", "/p", &[]);
    let host = RedirectAction {
        host_redirect: "example.org".into(),
        ..Default::default()
    };
    assert_eq!(location(host.clone(), &get), "http://example.org/p");
    let host_and_port = RedirectAction {
        port_redirect: 8083,
        ..host
    };
    assert_eq!(location(host_and_port, &get), "http://example.org:8083/p");
}

/// newUri: a `path_redirect` keeps the request's query unless it has its own; `strip_query`
/// drops the request's.
#[test]
fn path_redirects_and_queries() {
    let get = mk_request("echo", "GET", "/old?q=1", &[]);
    let path = |p: &str, strip_query| RedirectAction {
        path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            p.into(),
        )),
        strip_query,
        ..Default::default()
    };
    assert_eq!(location(path("/new", false), &get), "http://echo/new?q=1");
    assert_eq!(location(path("/new", true), &get), "http://echo/new");
    assert_eq!(
        location(path("/new?x=2", true), &get),
        "http://echo/new?x=2"
    );
}

/// router.cc Filter::decodeHeaders: a direct response (a redirect too) gets the route's
/// response header changes through `finalizeResponseHeaders`.
#[test]
fn redirects_keep_the_routes_response_headers() {
    let mut r = mk_route(route::Action::Redirect(RedirectAction::default()));
    r.response_headers_to_add = vec![set("x-route", "1")];
    let outcome = walk(
        &mk_config(vec![r]),
        &mk_request("echo", "GET", "/", &[]),
        false,
    );
    let Outcome::Redirected {
        response_headers: levels,
        ..
    } = outcome
    else {
        panic!("not a redirect: {outcome:?}");
    };
    assert_eq!(
        response_headers(&levels, &HeaderChanges::default()),
        [("x-route".to_string(), "1".to_string())]
    );
}

fn weighted(cluster: WeightedClusterParts) -> Route {
    let mut r = mk_route(route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters: vec![weighted_cluster::ClusterWeight {
                    name: "c".into(),
                    weight: Some(UInt32Value { value: 1 }),
                    request_headers_to_add: cluster.request_add,
                    response_headers_to_add: cluster.response_add,
                    response_headers_to_remove: cluster.response_remove,
                    host_rewrite_specifier: cluster.host.map(
                        weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral,
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        host_rewrite_specifier: cluster
            .route_host
            .map(route_action::HostRewriteSpecifier::HostRewriteLiteral),
        ..Default::default()
    }));
    r.request_headers_to_add = cluster.route_request_add;
    r.response_headers_to_add = cluster.route_response_add;
    r.response_headers_to_remove = cluster.route_response_remove;
    r
}

#[derive(Default)]
struct WeightedClusterParts {
    request_add: Vec<HeaderValueOption>,
    response_add: Vec<HeaderValueOption>,
    response_remove: Vec<String>,
    host: Option<String>,
    route_request_add: Vec<HeaderValueOption>,
    route_response_add: Vec<HeaderValueOption>,
    route_response_remove: Vec<String>,
    route_host: Option<String>,
}

fn forwarded(config: &RouteConfiguration) -> (Forwarded, Vec<HeaderChanges>) {
    match walk(config, &mk_request("echo", "GET", "/", &[]), false) {
        Outcome::Forwarded {
            mut backends,
            response_headers,
        } => (backends.remove(0), response_headers),
        other => panic!("not forwarded: {other:?}"),
    }
}

/// weighted_cluster_specifier.cc WeightedClusterEntry::finalizeRequestHeaders /
/// finalizeResponseHeaders: the weighted cluster's changes first, the route's after, so the
/// route's `set` wins and the route's `remove` takes out what the cluster set.
#[test]
fn a_weighted_clusters_header_changes_come_before_the_routes() {
    let (backend, levels) = forwarded(&mk_config(vec![weighted(WeightedClusterParts {
        request_add: vec![set("x-a", "cluster")],
        response_add: vec![set("x-b", "cluster"), set("x-c", "cluster")],
        route_request_add: vec![set("x-a", "route")],
        route_response_add: vec![set("x-b", "route")],
        route_response_remove: vec!["x-c".into()],
        ..Default::default()
    })]));
    assert_eq!(backend.headers, [("x-a".to_string(), "route".to_string())]);
    assert_eq!(
        response_headers(&levels, &backend.response_headers),
        [("x-b".to_string(), "route".to_string())]
    );
}

/// config_impl.cc finalizeHostHeader runs after the weighted cluster's host_rewrite_literal:
/// the route's host rewrite wins; the cluster's alone applies.
#[test]
fn a_routes_host_rewrite_comes_after_the_weighted_clusters() {
    let (backend, _) = forwarded(&mk_config(vec![weighted(WeightedClusterParts {
        host: Some("cluster.example".into()),
        route_host: Some("route.example".into()),
        ..Default::default()
    })]));
    assert_eq!(backend.authority, "route.example");
    let (backend, _) = forwarded(&mk_config(vec![weighted(WeightedClusterParts {
        host: Some("cluster.example".into()),
        ..Default::default()
    })]));
    assert_eq!(backend.authority, "cluster.example");
}

/// config_impl.cc getHeaderParsers: route, virtual host, route configuration ("later
/// evaluated header parser wins"), reversed with `most_specific_header_mutations_wins`.
#[test]
fn virtual_host_and_configuration_levels_come_after_the_route() {
    let mut config = mk_config(vec![weighted(WeightedClusterParts {
        route_request_add: vec![set("x-a", "route")],
        ..Default::default()
    })]);
    config.virtual_hosts[0].request_headers_to_add = vec![set("x-a", "vhost")];
    config.request_headers_to_add = vec![set("x-a", "config")];
    assert_eq!(
        forwarded(&config).0.headers,
        [("x-a".to_string(), "config".to_string())]
    );
    config.most_specific_header_mutations_wins = true;
    assert_eq!(
        forwarded(&config).0.headers,
        [("x-a".to_string(), "route".to_string())]
    );
}

/// header_parser.cc: ADD_IF_ABSENT adds only a header that is not there; an empty value is
/// skipped without keep_empty_value; overwrites go before additions; `%%` is a literal `%`.
#[test]
fn add_if_absent_and_empty_values() {
    let level = changes(
        &[
            mk_header("x-a", "new", HeaderAppendAction::AddIfAbsent),
            mk_header("x-b", "new", HeaderAppendAction::AddIfAbsent),
            set("x-c", ""),
            set("x-d", "100%%"),
        ],
        &[],
    );
    let mut headers = vec![("x-a".to_string(), "old".to_string())];
    level.apply(&mut headers);
    assert_eq!(
        headers,
        [
            ("x-a".to_string(), "old".to_string()),
            ("x-d".to_string(), "100%".to_string()),
            ("x-b".to_string(), "new".to_string())
        ]
    );
}

/// header_map_impl.cc: the request header map serves `host` as `:authority`, so a header
/// matcher on `Host` sees the authority.
#[test]
fn a_header_match_on_host_reads_the_authority() {
    let mut r = mk_route(route::Action::DirectResponse(DirectResponseAction {
        status: 200,
        ..Default::default()
    }));
    r.r#match.as_mut().unwrap().headers = vec![HeaderMatcher {
        name: "Host".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact("echo:8080".into())),
                ..Default::default()
            },
        )),
        ..Default::default()
    }];
    let config = mk_config(vec![r]);
    let status =
        |authority: &str| match walk(&config, &mk_request(authority, "GET", "/", &[]), false) {
            Outcome::Responded { status, .. } => status,
            other => panic!("{other:?}"),
        };
    assert_eq!(status("echo:8080"), 200);
    assert_eq!(status("echo"), 404);
}

fn cors_route(policy: CorsPolicy) -> Route {
    let mut r = mk_route(route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
        ..Default::default()
    }));
    let inner = Any {
        type_url: "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy".into(),
        value: policy.encode_to_vec(),
    };
    let wrapped = envoy_types::pb::envoy::config::route::v3::FilterConfig {
        config: Some(inner),
        is_optional: true,
        disabled: false,
    };
    r.typed_per_filter_config.insert(
        lanyard_xds::names::filters::CORS.into(),
        Any {
            type_url: "type.googleapis.com/envoy.config.route.v3.FilterConfig".into(),
            value: wrapped.encode_to_vec(),
        },
    );
    r.response_headers_to_add = vec![set("x-route", "1")];
    r
}

fn exact_origin(origin: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(origin.into())),
        ..Default::default()
    }
}

/// cors_filter.cc CorsFilter::decodeHeaders: an OPTIONS with an allowed Origin and an
/// Access-Control-Request-Method is answered 200 by the filter, with the policy's headers
/// (`*` methods echo the requested one); the route's response headers are not on it (the
/// filter encodes its own headers; only the router's responses go through
/// finalizeResponseHeaders).
#[test]
fn the_cors_filter_answers_preflights_itself() {
    let config = mk_config(vec![cors_route(CorsPolicy {
        allow_origin_string_match: vec![exact_origin("https://a.example")],
        allow_methods: "*".into(),
        allow_headers: "x-a,x-b".into(),
        expose_headers: "x-c".into(),
        max_age: "5".into(),
        allow_credentials: Some(BoolValue { value: true }),
        ..Default::default()
    })]);
    let preflight = |origin: &str| {
        mk_request(
            "echo",
            "OPTIONS",
            "/",
            &[("Origin", origin), ("Access-Control-Request-Method", "PUT")],
        )
    };
    let Outcome::Responded {
        status,
        response_headers: levels,
    } = walk(&config, &preflight("https://a.example"), true)
    else {
        panic!("preflight not answered");
    };
    assert_eq!(status, 200);
    let mut seen = response_headers(&levels, &HeaderChanges::default());
    seen.sort();
    let expected: Vec<(String, String)> = [
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-headers", "x-a,x-b"),
        ("access-control-allow-methods", "PUT"),
        ("access-control-allow-origin", "https://a.example"),
        ("access-control-expose-headers", "x-c"),
        ("access-control-max-age", "5"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(seen, expected);
    // An origin the policy does not allow: forward_not_matching_preflights (default true)
    // sends the preflight on.
    assert!(matches!(
        walk(&config, &preflight("https://b.example"), true),
        Outcome::Forwarded { .. }
    ));
    // Without the CORS filter in the connection manager, nothing answers it.
    assert!(matches!(
        walk(&config, &preflight("https://a.example"), false),
        Outcome::Forwarded { .. }
    ));
    // A simple request from an allowed origin is forwarded, and encodeHeaders sets the
    // allow-origin after the route's changes.
    let Outcome::Forwarded {
        response_headers: levels,
        ..
    } = walk(
        &config,
        &mk_request("echo", "GET", "/", &[("Origin", "https://a.example")]),
        true,
    )
    else {
        panic!("not forwarded");
    };
    let seen = response_headers(&levels, &HeaderChanges::default());
    assert!(seen.contains(&(
        "access-control-allow-origin".to_string(),
        "https://a.example".to_string()
    )));
    assert!(seen.contains(&("x-route".to_string(), "1".to_string())));
}
