//! RDS: one RouteConfiguration `<fqdn>:<port>` per HTTP Service port, in the variant
//! (pass-through, producer, or one consumer namespace's) a client sees.
//!
//! Each configuration has one virtual host matching `*`: the outbound listener already pinned
//! the Service by its ClusterIP, and proxyless gRPC clients look the host up in it too. Routes
//! keep the model's order (first match wins); a request matching none gets Envoy's 404, which
//! is the GAMMA rule. `validate_clusters` stays unset so a route to a cluster that is not (or
//! not yet) there does not reject the whole configuration.
//!
//! Each table is written twice when the two readers need different forms: for Envoy, and for
//! proxyless gRPC clients ([`ProxyKind`]), whose xDS client refuses `path_separated_prefix`
//! and cannot match a method (every gRPC call is a POST with no query string). Both forms
//! carry the same name; which one a proxy gets depends on its kind.

mod actions;
mod cors;
mod headers;
pub mod matches;
mod paths;
mod policies;

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use lanyard_model::{Action, Model, PathMatch, Protocol, RouteTable, ServiceKey, ServicePortKey};

use self::headers::HeaderEdits;
use self::matches::{MatchedPrefix, PathStyle};
use crate::names;
use crate::node::ProxyKind;
use crate::protobuf::duration;

/// What route translation needs besides the route: which backends exist in the model, and
/// their cluster names.
#[derive(Clone, Debug)]
pub struct RouteContext<'a> {
    /// The outbound cluster of every Service port of the model, named once: routes name
    /// them again and again (every backend of every rule).
    clusters: HashMap<(&'a ServiceKey, u16), String>,
}

impl<'a> RouteContext<'a> {
    /// A context over `model`.
    pub fn new(model: &'a Model, cluster_domain: &'a str) -> Self {
        let clusters = model
            .services
            .iter()
            .flat_map(|(key, service)| {
                service.ports.iter().map(move |port| {
                    let name = names::outbound_cluster_of(key, port.port, cluster_domain);
                    ((key, port.port), name)
                })
            })
            .collect();
        Self { clusters }
    }

    /// The outbound cluster of a Service port, `None` when the port is not in the mesh.
    pub fn cluster_for(&self, key: &ServicePortKey) -> Option<String> {
        self.clusters.get(&(&key.service, key.port)).cloned()
    }
}

/// The configuration `name` built from a route table, in the form a proxy of `kind` reads.
/// `port` is the Service port the table routes (the "listener port" of the Gateway API's
/// redirect rules).
pub fn for_table(
    name: &str,
    table: &RouteTable,
    port: u16,
    kind: ProxyKind,
    ctx: &RouteContext<'_>,
) -> RouteConfiguration {
    let routes = match kind {
        ProxyKind::Envoy => {
            let style = PathStyle::for_table(table.protocol);
            table
                .routes
                .iter()
                .map(|r| route(r, style, table.protocol, port, ctx))
                .collect()
        }
        ProxyKind::Grpc => for_grpc(table)
            .iter()
            .map(|(_, r)| route(r, PathStyle::Grpc, table.protocol, port, ctx))
            .collect(),
    };
    configuration(name, routes)
}

/// Whether proxyless gRPC clients need another form of this table than Envoy does.
pub fn differs_for_grpc(table: &RouteTable) -> bool {
    table.routes.iter().any(|r| {
        r.matcher.method.is_some()
            || !r.matcher.query.is_empty()
            || (PathStyle::for_table(table.protocol) == PathStyle::Segments
                && is_sub_prefix(&r.matcher.path))
    })
}

/// A prefix other than `/`.
fn is_sub_prefix(path: &PathMatch) -> bool {
    matches!(path, PathMatch::Prefix(p) if !p.trim_end_matches('/').is_empty())
}

/// A table's routes as a proxyless gRPC client must get them, with the same meaning for gRPC
/// calls:
/// - a route that matches a method other than POST, or query parameters, can never match a
///   gRPC call and is left out; a POST match always holds and is dropped from the match;
/// - a path prefix `/foo` (which must match `/foo` and `/foo/...`) becomes two routes, an exact
///   `/foo` and a prefix `/foo/`, because gRPC refuses `path_separated_prefix`
///   (gRPC: src/core/xds/grpc/xds_route_config_parser.cc, `RoutePathMatchParse`).
fn for_grpc(table: &RouteTable) -> Vec<(usize, Cow<'_, lanyard_model::Route>)> {
    let split_prefixes = PathStyle::for_table(table.protocol) == PathStyle::Segments;
    let mut out = Vec::with_capacity(table.routes.len());
    for (origin, r) in table.routes.iter().enumerate() {
        if !r.matcher.query.is_empty() || r.matcher.method.as_deref().is_some_and(|m| m != "POST") {
            continue;
        }
        let mut r = Cow::Borrowed(r);
        if r.matcher.method.is_some() {
            r.to_mut().matcher.method = None;
        }
        match &r.matcher.path {
            PathMatch::Prefix(prefix) if split_prefixes && is_sub_prefix(&r.matcher.path) => {
                let m = prefix.trim_end_matches('/').to_string();
                let mut exact = r.clone().into_owned();
                exact.matcher.path = PathMatch::Exact(m.clone());
                let mut under = r.into_owned();
                under.matcher.path = PathMatch::Prefix(format!("{m}/"));
                out.push((origin, Cow::Owned(exact)));
                out.push((origin, Cow::Owned(under)));
            }
            _ => out.push((origin, r)),
        }
    }
    out
}

/// The gRPC form of `table` ([`for_table`] with [`ProxyKind::Grpc`]) and, for each of its
/// routes, the index of the table's route it came from.
pub fn for_table_grpc(
    name: &str,
    table: &RouteTable,
    port: u16,
    ctx: &RouteContext<'_>,
) -> (RouteConfiguration, Vec<usize>) {
    let (origins, routes) = for_grpc(table)
        .iter()
        .map(|(origin, r)| {
            (
                *origin,
                route(r, PathStyle::Grpc, table.protocol, port, ctx),
            )
        })
        .unzip();
    (configuration(name, routes), origins)
}

/// The pass-through configuration `name`: every request (prefix `/`) to `cluster`, without a
/// timeout.
pub fn single_cluster(name: &str, cluster: &str) -> RouteConfiguration {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
            timeout: Some(duration(Duration::ZERO)),
            ..Default::default()
        })),
        ..Default::default()
    };
    configuration(name, vec![route])
}

fn configuration(name: &str, routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_string(),
            domains: vec!["*".to_string()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One model route as an Envoy route, in a table for Service port `port`.
fn route(
    r: &lanyard_model::Route,
    style: PathStyle,
    protocol: Protocol,
    port: u16,
    ctx: &RouteContext<'_>,
) -> Route {
    let matched = MatchedPrefix::of(&r.matcher.path, style);
    let mut request_headers = Cow::Borrowed(&r.request_headers);
    let mut response_headers = Cow::Borrowed(&r.response_headers);
    let action = match &r.action {
        Action::Forward(forward) => {
            let forward =
                rule_level_onto_backends(forward, &mut request_headers, &mut response_headers);
            let mut action = actions::forward(&forward, &matched, protocol, ctx);
            policies::apply_timeouts_and_retry(&mut action, &r.timeouts, r.retry.as_ref());
            action.request_mirror_policies = policies::mirror_policies(&r.mirrors, ctx);
            route::Action::Route(action)
        }
        Action::Redirect(redirect) => {
            route::Action::Redirect(actions::redirect(redirect, &matched, port))
        }
        Action::DirectResponse { status } => route::Action::DirectResponse(DirectResponseAction {
            status: u32::from(*status),
            ..Default::default()
        }),
    };
    let request = HeaderEdits::of(&request_headers);
    let response = HeaderEdits::of(&response_headers);
    let typed_per_filter_config: HashMap<_, _> = r
        .cors
        .iter()
        .map(|c| (names::filters::CORS.to_string(), cors::per_filter_config(c)))
        .collect();
    Route {
        r#match: Some(matches::route_match(&r.matcher, style)),
        action: Some(action),
        request_headers_to_add: request.add,
        request_headers_to_remove: request.remove,
        response_headers_to_add: response.add,
        response_headers_to_remove: response.remove,
        typed_per_filter_config,
        ..Default::default()
    }
}

/// The Gateway API applies a rule's filters to every request the rule matches and a
/// backendRef's when the request goes to that backend: the rule's first, the backend's
/// after. Envoy applies a weighted cluster's header changes and host rewrite before the
/// route's (Envoy v1.36 source/common/router/weighted_cluster_specifier.cc,
/// WeightedClusterEntry::finalizeRequestHeaders and finalizeResponseHeaders), so the route's
/// would win. When a backend changes request (or response) headers, the rule's changes in
/// that direction move onto every backend, ahead of the backend's own
/// ([`headers::then`]), and leave the route; likewise the rule's host rewrite when a backend
/// has its own.
fn rule_level_onto_backends<'a>(
    forward: &'a lanyard_model::Forward,
    request: &mut Cow<'_, lanyard_model::HeaderModifier>,
    response: &mut Cow<'_, lanyard_model::HeaderModifier>,
) -> Cow<'a, lanyard_model::Forward> {
    let mut forward = Cow::Borrowed(forward);
    let backends_change = |f: &lanyard_model::Forward,
                           pick: fn(&lanyard_model::Backend) -> bool| {
        f.backends.iter().any(pick)
    };
    if !request.is_empty() && backends_change(&forward, |b| !b.request_headers.is_empty()) {
        for b in &mut forward.to_mut().backends {
            b.request_headers = headers::then(request, &b.request_headers);
        }
        *request = Cow::Owned(lanyard_model::HeaderModifier::default());
    }
    if !response.is_empty() && backends_change(&forward, |b| !b.response_headers.is_empty()) {
        for b in &mut forward.to_mut().backends {
            b.response_headers = headers::then(response, &b.response_headers);
        }
        *response = Cow::Owned(lanyard_model::HeaderModifier::default());
    }
    let rule_host = forward.rewrite.as_ref().and_then(|r| r.hostname.clone());
    if let Some(host) = rule_host
        && backends_change(&forward, |b| b.host_rewrite.is_some())
    {
        let f = forward.to_mut();
        for b in &mut f.backends {
            b.host_rewrite.get_or_insert_with(|| host.clone());
        }
        if let Some(rewrite) = &mut f.rewrite {
            rewrite.hostname = None;
        }
    }
    forward
}

#[cfg(test)]
mod tests {
    use lanyard_model::{Cors, HeaderModifier, Protocol, Redirect};

    use super::*;
    use crate::fixtures::{forward_to, mk_model, mk_route, mk_service, mk_table, prefix, spk};

    fn model() -> Model {
        mk_model(
            vec![mk_service(
                "a",
                "web",
                &["10.0.0.1"],
                &[(80, Protocol::Http)],
            )],
            vec![],
        )
    }

    fn cluster_of(route: &Route) -> &ClusterSpecifier {
        let Some(route::Action::Route(action)) = &route.action else {
            panic!("not forwarding");
        };
        action.cluster_specifier.as_ref().unwrap()
    }

    #[test]
    fn one_wildcard_virtual_host_with_routes_in_model_order() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let web = spk("a", "web", 80);
        let table = mk_table(vec![
            mk_route(
                PathMatch::Exact("/exact".into()),
                forward_to(&[(web.clone(), 1)]),
            ),
            mk_route(prefix("/api"), forward_to(&[(web.clone(), 1)])),
            mk_route(prefix("/"), Action::DirectResponse { status: 503 }),
        ]);
        let config = for_table(
            "web.a.svc.cluster.local:80",
            &table,
            80,
            ProxyKind::Envoy,
            &ctx,
        );
        assert_eq!(config.name, "web.a.svc.cluster.local:80");
        assert_eq!(config.validate_clusters, None);
        assert_eq!(config.virtual_hosts.len(), 1);
        let vhost = &config.virtual_hosts[0];
        assert_eq!(vhost.name, config.name);
        assert_eq!(vhost.domains, ["*"]);
        let paths: Vec<&PathSpecifier> = vhost
            .routes
            .iter()
            .map(|r| r.r#match.as_ref().unwrap().path_specifier.as_ref().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                &PathSpecifier::Path("/exact".into()),
                &PathSpecifier::PathSeparatedPrefix("/api".into()),
                &PathSpecifier::Prefix("/".into()),
            ]
        );
        assert_eq!(
            vhost.routes[2].action,
            Some(route::Action::DirectResponse(DirectResponseAction {
                status: 503,
                ..Default::default()
            }))
        );
        let Some(route::Action::Route(action)) = &vhost.routes[0].action else {
            panic!("not forwarding");
        };
        assert_eq!(action.timeout, Some(duration(Duration::ZERO)));
    }

    fn paths(config: &RouteConfiguration) -> Vec<PathSpecifier> {
        config.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| r.r#match.as_ref().unwrap().path_specifier.clone().unwrap())
            .collect()
    }

    #[test]
    fn envoy_gets_segment_prefixes_and_grpc_an_exact_path_and_a_slash_prefix() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let web = spk("a", "web", 80);
        let table = mk_table(vec![
            mk_route(prefix("/pkg.Greeter"), forward_to(&[(web.clone(), 1)])),
            mk_route(prefix("/"), forward_to(&[(web, 1)])),
        ]);
        assert!(differs_for_grpc(&table));
        assert_eq!(
            paths(&for_table("n", &table, 80, ProxyKind::Envoy, &ctx)),
            [
                PathSpecifier::PathSeparatedPrefix("/pkg.Greeter".into()),
                PathSpecifier::Prefix("/".into()),
            ]
        );
        assert_eq!(
            paths(&for_table("n", &table, 80, ProxyKind::Grpc, &ctx)),
            [
                PathSpecifier::Path("/pkg.Greeter".into()),
                PathSpecifier::Prefix("/pkg.Greeter/".into()),
                PathSpecifier::Prefix("/".into()),
            ]
        );
    }

    #[test]
    fn grpc_route_tables_read_the_same_for_both() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let mut table = mk_table(vec![mk_route(
            prefix("/pkg.Greeter/"),
            forward_to(&[(spk("a", "web", 80), 1)]),
        )]);
        table.protocol = Protocol::Grpc;
        assert!(!differs_for_grpc(&table));
        let envoy = for_table("n", &table, 80, ProxyKind::Envoy, &ctx);
        assert_eq!(envoy, for_table("n", &table, 80, ProxyKind::Grpc, &ctx));
        assert_eq!(
            paths(&envoy),
            [PathSpecifier::Prefix("/pkg.Greeter/".into())]
        );
    }

    #[test]
    fn grpc_clients_never_see_routes_that_cannot_match_a_grpc_call() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let web = spk("a", "web", 80);
        let with = |method: Option<&str>, query: bool| {
            let mut r = mk_route(
                PathMatch::Exact("/a".into()),
                forward_to(&[(web.clone(), 1)]),
            );
            r.matcher.method = method.map(str::to_string);
            if query {
                r.matcher.query.push(lanyard_model::QueryMatch {
                    name: "q".into(),
                    value: lanyard_model::StringMatch::Exact("1".into()),
                });
            }
            r
        };
        let table = mk_table(vec![
            with(Some("GET"), false),
            with(None, true),
            with(Some("POST"), false),
        ]);
        assert!(differs_for_grpc(&table));
        let grpc = for_table("n", &table, 80, ProxyKind::Grpc, &ctx);
        let routes = &grpc.virtual_hosts[0].routes;
        assert_eq!(routes.len(), 1, "{routes:#?}");
        let m = routes[0].r#match.as_ref().unwrap();
        assert!(
            m.headers.is_empty() && m.query_parameters.is_empty(),
            "{m:?}"
        );
        assert_eq!(
            for_table("n", &table, 80, ProxyKind::Envoy, &ctx).virtual_hosts[0]
                .routes
                .len(),
            3
        );
    }

    #[test]
    fn route_level_headers_cors_and_redirect() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let mut r = mk_route(
            prefix("/old"),
            Action::Redirect(Redirect {
                scheme: None,
                hostname: None,
                path: Some(lanyard_model::PathRewrite::Prefix("/new".into())),
                port: None,
                status: 308,
            }),
        );
        r.request_headers = HeaderModifier {
            add: vec![("x-a".into(), "1".into())],
            remove: vec!["x-b".into()],
            ..Default::default()
        };
        r.response_headers = HeaderModifier {
            set: vec![("x-c".into(), "2".into())],
            ..Default::default()
        };
        r.cors = Some(Cors {
            allow_origins: vec!["*".into()],
            ..Default::default()
        });
        let out = route(&r, PathStyle::Segments, Protocol::Http, 80, &ctx);
        assert_eq!(
            out.request_headers_to_add[0].header.as_ref().unwrap().key,
            "x-a"
        );
        assert_eq!(out.request_headers_to_remove, ["x-b"]);
        assert_eq!(
            out.response_headers_to_add[0].header.as_ref().unwrap().key,
            "x-c"
        );
        assert!(out.response_headers_to_remove.is_empty());
        let cors = &out.typed_per_filter_config["envoy.filters.http.cors"];
        assert_eq!(
            cors.type_url,
            "type.googleapis.com/envoy.config.route.v3.FilterConfig"
        );
        let Some(route::Action::Redirect(redirect)) = &out.action else {
            panic!("not a redirect");
        };
        assert_eq!(
            redirect.path_rewrite_specifier,
            Some(
                envoy_types::pb::envoy::config::route::v3::redirect_action::PathRewriteSpecifier::PrefixRewrite(
                    "/new".into()
                )
            )
        );
    }

    #[test]
    fn single_cluster_config_forwards_everything() {
        let config = single_cluster("inbound|80||", "inbound|80||");
        let routes = &config.virtual_hosts[0].routes;
        assert_eq!(routes.len(), 1);
        assert_eq!(
            routes[0].r#match.as_ref().unwrap().path_specifier,
            Some(PathSpecifier::Prefix("/".into()))
        );
        assert_eq!(
            cluster_of(&routes[0]),
            &ClusterSpecifier::Cluster("inbound|80||".into())
        );
    }

    /// With a backend-level modifier, the rule's goes onto the weighted clusters ahead of it
    /// and off the route (Envoy would apply the route's last); without one it stays.
    #[test]
    fn rule_level_header_changes_move_onto_backends_that_have_their_own() {
        let model = mk_model(
            vec![
                mk_service("a", "v1", &["10.0.0.1"], &[(80, Protocol::Http)]),
                mk_service("a", "v2", &["10.0.0.2"], &[(80, Protocol::Http)]),
            ],
            vec![],
        );
        let ctx = RouteContext::new(&model, "cluster.local");
        let mut r = mk_route(
            prefix("/"),
            forward_to(&[(spk("a", "v1", 80), 1), (spk("a", "v2", 80), 1)]),
        );
        r.request_headers.set = vec![("x-level".into(), "rule".into())];
        r.response_headers.set = vec![("x-r".into(), "rule".into())];
        let Action::Forward(f) = &mut r.action else {
            unreachable!()
        };
        f.backends[0].request_headers.set = vec![("x-level".into(), "backend".into())];
        f.backends[0].host_rewrite = Some("backend.example".into());
        f.rewrite = Some(lanyard_model::UrlRewrite {
            hostname: Some("rule.example".into()),
            path: None,
        });
        let out = route(&r, PathStyle::Segments, Protocol::Http, 80, &ctx);
        assert!(out.request_headers_to_add.is_empty());
        // No backend changes response headers: the rule's stay on the route.
        assert_eq!(out.response_headers_to_add.len(), 1);
        let Some(route::Action::Route(action)) = &out.action else {
            panic!("not forwarding");
        };
        assert_eq!(action.host_rewrite_specifier, None);
        let Some(ClusterSpecifier::WeightedClusters(w)) = &action.cluster_specifier else {
            panic!("not weighted");
        };
        let view = |i: usize| {
            let c = &w.clusters[i];
            let headers: Vec<(&str, &str)> = c
                .request_headers_to_add
                .iter()
                .map(|o| {
                    let h = o.header.as_ref().unwrap();
                    (h.key.as_str(), h.value.as_str())
                })
                .collect();
            (headers, c.host_rewrite_specifier.clone())
        };
        use envoy_types::pb::envoy::config::route::v3::weighted_cluster::cluster_weight::HostRewriteSpecifier;
        assert_eq!(
            view(0),
            (
                vec![("x-level", "backend")],
                Some(HostRewriteSpecifier::HostRewriteLiteral(
                    "backend.example".into()
                ))
            )
        );
        assert_eq!(
            view(1),
            (
                vec![("x-level", "rule")],
                Some(HostRewriteSpecifier::HostRewriteLiteral(
                    "rule.example".into()
                ))
            )
        );
    }
}
