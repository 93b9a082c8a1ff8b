//! RDS: one RouteConfiguration `<fqdn>:<port>` per HTTP Service port, in the variant
//! (pass-through, producer, or one consumer namespace's) a client sees.
//!
//! Each configuration has one virtual host matching `*`: the outbound listener already pinned
//! the Service by its ClusterIP, and proxyless gRPC clients look the host up in it too. Routes
//! keep the model's order (first match wins); a request matching none gets Envoy's 404, which
//! is the GAMMA rule. `validate_clusters` stays unset so a route to a cluster that is not (or
//! not yet) there does not reject the whole configuration.

mod actions;
mod cors;
mod headers;
pub mod matches;
mod paths;
mod policies;

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use lanyard_model::{Action, Model, Protocol, RouteTable, ServiceKey, ServicePortKey};

use self::headers::HeaderEdits;
use self::matches::{MatchedPrefix, PathStyle};
use crate::names;
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

/// The configuration `name` built from a route table. Path prefixes are written in a form
/// proxyless gRPC accepts when the table came from GRPCRoutes or the port speaks HTTP/2 (see
/// [`PathStyle`]).
pub fn for_table(
    name: &str,
    table: &RouteTable,
    port_protocol: Protocol,
    ctx: &RouteContext<'_>,
) -> RouteConfiguration {
    let style = PathStyle::for_table(table.protocol, port_protocol);
    configuration(
        name,
        table
            .routes
            .iter()
            .map(|r| route(r, style, table.protocol, ctx))
            .collect(),
    )
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

/// One model route as an Envoy route.
fn route(
    r: &lanyard_model::Route,
    style: PathStyle,
    protocol: Protocol,
    ctx: &RouteContext<'_>,
) -> Route {
    let matched = MatchedPrefix::of(&r.matcher.path, style);
    let action = match &r.action {
        Action::Forward(forward) => {
            let mut action = actions::forward(forward, &matched, protocol, ctx);
            policies::apply_timeouts_and_retry(&mut action, &r.timeouts, r.retry.as_ref());
            action.request_mirror_policies = policies::mirror_policies(&r.mirrors, ctx);
            route::Action::Route(action)
        }
        Action::Redirect(redirect) => {
            route::Action::Redirect(actions::redirect(redirect, &matched))
        }
        Action::DirectResponse { status } => route::Action::DirectResponse(DirectResponseAction {
            status: u32::from(*status),
            ..Default::default()
        }),
    };
    let request = HeaderEdits::of(&r.request_headers);
    let response = HeaderEdits::of(&r.response_headers);
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

#[cfg(test)]
mod tests {
    use lanyard_model::{Cors, HeaderModifier, PathMatch, Redirect};

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
        let config = for_table("web.a.svc.cluster.local:80", &table, Protocol::Http, &ctx);
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

    #[test]
    fn grpc_tables_and_ports_use_grpc_compatible_prefixes() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let web = spk("a", "web", 80);
        let mut table = mk_table(vec![mk_route(
            prefix("/pkg.Greeter"),
            forward_to(&[(web, 1)]),
        )]);
        let path = |config: &RouteConfiguration| {
            config.virtual_hosts[0].routes[0]
                .r#match
                .as_ref()
                .unwrap()
                .path_specifier
                .clone()
                .unwrap()
        };
        let on_http_port = for_table("n", &table, Protocol::Http, &ctx);
        assert_eq!(
            path(&on_http_port),
            PathSpecifier::PathSeparatedPrefix("/pkg.Greeter".into())
        );
        let on_grpc_port = for_table("n", &table, Protocol::Grpc, &ctx);
        assert_eq!(
            path(&on_grpc_port),
            PathSpecifier::SafeRegex(matches::regex_matcher("^/pkg\\.Greeter(/.*)?$"))
        );
        table.protocol = Protocol::Grpc;
        let grpc_table = for_table("n", &table, Protocol::Http2, &ctx);
        assert_eq!(
            path(&grpc_table),
            PathSpecifier::Prefix("/pkg.Greeter/".into())
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
        let out = route(&r, PathStyle::Segments, Protocol::Http, &ctx);
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
}
