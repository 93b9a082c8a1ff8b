//! What a matched request gets: forwarding (clusters, rewrites) or a redirect.

use envoy_types::pb::envoy::config::route::v3::{
    RedirectAction, RouteAction, WeightedCluster,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    route_action::{ClusterNotFoundResponseCode, ClusterSpecifier, HostRewriteSpecifier},
    weighted_cluster::{self, ClusterWeight},
};
use lanyard_model::{BackendTarget, Forward, PathRewrite, Protocol, Redirect};

use super::RouteContext;
use super::headers::HeaderEdits;
use super::matches::MatchedPrefix;
use super::paths::{PathEdit, replace_full, replace_prefix};
use crate::names::INVALID_BACKEND_CLUSTER;
use crate::protobuf::u32_value;

/// The cluster specifier, rewrites and invalid-backend handling of a forward.
///
/// One backend without header modifiers: `cluster`. Otherwise `weighted_clusters`, with
/// backend-level header modifiers on the ClusterWeight (so they only touch that backend's
/// share; a single backend with modifiers is a one-entry `weighted_clusters` for the same
/// reason). A backend that does not resolve to a Service port of the mesh goes to
/// [`INVALID_BACKEND_CLUSTER`], which Envoy never gets, and `cluster_not_found_response_code` makes
/// that share a 500, or a 503 in a table of GRPCRoutes (`protocol` `Grpc`): the GRPCRoute
/// spec wants UNAVAILABLE there, and Envoy maps a local reply's 503 to it for gRPC requests
/// where 500 would be UNKNOWN. Proxyless gRPC clients get that cluster with no endpoints
/// ([`crate::clusters::invalid_backend`]), which fails the share with UNAVAILABLE.
// Envoy: source/common/grpc/status.cc (Grpc::Utility::httpToGrpcStatus)
pub fn forward(
    forward: &Forward,
    matched: &MatchedPrefix,
    protocol: Protocol,
    ctx: &RouteContext<'_>,
) -> RouteAction {
    let mut invalid = false;
    let mut resolve = |target: &BackendTarget| {
        match target {
            BackendTarget::Service(key) => ctx.cluster_for(key),
            BackendTarget::Unresolved => None,
        }
        .unwrap_or_else(|| {
            invalid = true;
            INVALID_BACKEND_CLUSTER.to_string()
        })
    };
    let single = match forward.backends.as_slice() {
        [only]
            if only.request_headers.is_empty()
                && only.response_headers.is_empty()
                && only.host_rewrite.is_none() =>
        {
            Some(only)
        }
        _ => None,
    };
    let cluster_specifier = match single {
        Some(only) => ClusterSpecifier::Cluster(resolve(&only.target)),
        // The model never has a forward without backends; should one slip through, answer
        // 500 rather than send an empty weighted_clusters Envoy would reject.
        None if forward.backends.is_empty() => {
            ClusterSpecifier::Cluster(resolve(&BackendTarget::Unresolved))
        }
        None => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: forward
                .backends
                .iter()
                .map(|backend| {
                    let request = HeaderEdits::of(&backend.request_headers);
                    let response = HeaderEdits::of(&backend.response_headers);
                    ClusterWeight {
                        name: resolve(&backend.target),
                        weight: Some(u32_value(backend.weight)),
                        request_headers_to_add: request.add,
                        request_headers_to_remove: request.remove,
                        response_headers_to_add: response.add,
                        response_headers_to_remove: response.remove,
                        host_rewrite_specifier: backend.host_rewrite.clone().map(
                            weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral,
                        ),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        }),
    };
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        ..Default::default()
    };
    if invalid {
        action.cluster_not_found_response_code = match protocol {
            Protocol::Grpc => ClusterNotFoundResponseCode::ServiceUnavailable,
            _ => ClusterNotFoundResponseCode::InternalServerError,
        } as i32;
    }
    if let Some(rewrite) = &forward.rewrite {
        if let Some(host) = &rewrite.hostname {
            action.host_rewrite_specifier =
                Some(HostRewriteSpecifier::HostRewriteLiteral(host.clone()));
        }
        match rewrite.path.as_ref().map(|p| path_edit(p, matched)) {
            Some(PathEdit::Prefix(prefix)) => action.prefix_rewrite = prefix,
            Some(PathEdit::Regex(regex)) => action.regex_rewrite = Some(regex),
            Some(PathEdit::Keep) | None => {}
        }
    }
    action
}

/// A redirect whose `Location`, as Envoy builds it, is the one the Gateway API asks for; the
/// status mapped to Envoy's codes (302 for anything unknown). `service_port` is the Service
/// port the route serves: the "listener port" of the spec's port rules.
///
/// The spec (HTTPRequestRedirectFilter `port`): without a port, the redirect port is the
/// well-known port of the redirect scheme when one is given (80 for http, 443 for https),
/// else the listener port; the Location carries no port when it is the scheme's well-known
/// one. Envoy (v1.36 source/common/http/utility.cc, Utility::newUri and processRequestHost)
/// prints `port_redirect` whenever it is set, 80 and 443 included, in place of the request's
/// port; without it, a `host_redirect` gets no port, and the request's authority keeps its
/// port unless the scheme changes from x-forwarded-proto's and the port is that protocol's
/// default (`:80` for http). So:
/// - a redirect port other than the scheme's well-known one is `port_redirect`;
/// - a well-known port with a hostname: no `port_redirect`, so no port;
/// - a well-known port without a hostname, on Service port 80: no `port_redirect`, and the
///   request's authority (normally without a port there) is printed as it came;
/// - a well-known port without a hostname on another Service port: the client's authority
///   normally carries that port (`echo:8080`), which Envoy would keep, so `port_redirect` is
///   the well-known port: the port the spec requires, printed (`https://echo:443/`).
pub fn redirect(redirect: &Redirect, matched: &MatchedPrefix, service_port: u16) -> RedirectAction {
    let path_rewrite_specifier = match &redirect.path {
        None => None,
        Some(PathRewrite::Full(path)) => Some(PathRewriteSpecifier::PathRedirect(path.clone())),
        Some(prefix @ PathRewrite::Prefix(_)) => match path_edit(prefix, matched) {
            PathEdit::Keep => None,
            PathEdit::Prefix(p) => Some(PathRewriteSpecifier::PrefixRewrite(p)),
            PathEdit::Regex(r) => Some(PathRewriteSpecifier::RegexRewrite(r)),
        },
    };
    // Mesh listeners take plain HTTP: the request's scheme is http.
    let well_known = match redirect.scheme.as_deref() {
        Some("https") => 443,
        _ => 80,
    };
    let port = redirect.port.unwrap_or(match redirect.scheme {
        Some(_) => well_known,
        None => service_port,
    });
    let port_redirect = if port != well_known || (redirect.hostname.is_none() && service_port != 80)
    {
        u32::from(port)
    } else {
        0
    };
    RedirectAction {
        scheme_rewrite_specifier: redirect
            .scheme
            .clone()
            .map(SchemeRewriteSpecifier::SchemeRedirect),
        host_redirect: redirect.hostname.clone().unwrap_or_default(),
        port_redirect,
        path_rewrite_specifier,
        response_code: redirect_code(redirect.status) as i32,
        ..Default::default()
    }
}

fn redirect_code(status: u16) -> RedirectResponseCode {
    match status {
        301 => RedirectResponseCode::MovedPermanently,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::Found,
    }
}

fn path_edit(rewrite: &PathRewrite, matched: &MatchedPrefix) -> PathEdit {
    match rewrite {
        PathRewrite::Full(path) => replace_full(path),
        PathRewrite::Prefix(replacement) => replace_prefix(matched, replacement),
    }
}

#[cfg(test)]
mod tests {
    use lanyard_model::{Backend, HeaderModifier, Protocol, UrlRewrite};

    use super::*;
    use crate::fixtures::{mk_backend, mk_model, mk_service, spk};

    fn model() -> lanyard_model::Model {
        mk_model(
            vec![
                mk_service("a", "v1", &["10.0.0.1"], &[(80, Protocol::Http)]),
                mk_service("a", "v2", &["10.0.0.2"], &[(80, Protocol::Http)]),
            ],
            vec![],
        )
    }

    fn fwd(backends: Vec<Backend>) -> Forward {
        Forward {
            backends,
            rewrite: None,
        }
    }

    fn svc(name: &str) -> BackendTarget {
        BackendTarget::Service(spk("a", name, 80))
    }

    #[test]
    fn single_backend_is_a_plain_cluster() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let action = forward(
            &fwd(vec![mk_backend(svc("v1"), 1)]),
            &MatchedPrefix::Root,
            Protocol::Http,
            &ctx,
        );
        assert_eq!(
            action.cluster_specifier,
            Some(ClusterSpecifier::Cluster(
                "outbound|80||v1.a.svc.cluster.local".into()
            ))
        );
        assert_eq!(action.cluster_not_found_response_code, 0);
    }

    #[test]
    fn several_backends_are_weighted() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let action = forward(
            &fwd(vec![mk_backend(svc("v1"), 80), mk_backend(svc("v2"), 20)]),
            &MatchedPrefix::Root,
            Protocol::Http,
            &ctx,
        );
        let Some(ClusterSpecifier::WeightedClusters(weighted)) = action.cluster_specifier else {
            panic!("not weighted");
        };
        let view: Vec<(&str, u32)> = weighted
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.weight.unwrap().value))
            .collect();
        assert_eq!(
            view,
            [
                ("outbound|80||v1.a.svc.cluster.local", 80),
                ("outbound|80||v2.a.svc.cluster.local", 20)
            ]
        );
    }

    #[test]
    fn unresolved_and_unknown_backends_get_500() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let action = forward(
            &fwd(vec![
                mk_backend(svc("v1"), 50),
                mk_backend(BackendTarget::Unresolved, 25),
                mk_backend(svc("gone"), 25),
            ]),
            &MatchedPrefix::Root,
            Protocol::Http,
            &ctx,
        );
        assert_eq!(
            action.cluster_not_found_response_code,
            ClusterNotFoundResponseCode::InternalServerError as i32
        );
        let Some(ClusterSpecifier::WeightedClusters(weighted)) = action.cluster_specifier else {
            panic!("not weighted");
        };
        assert_eq!(weighted.clusters[1].name, "lanyard|invalid-backend");
        assert_eq!(weighted.clusters[2].name, "lanyard|invalid-backend");

        let only_invalid = forward(
            &fwd(vec![mk_backend(BackendTarget::Unresolved, 1)]),
            &MatchedPrefix::Root,
            Protocol::Http,
            &ctx,
        );
        assert_eq!(
            only_invalid.cluster_specifier,
            Some(ClusterSpecifier::Cluster("lanyard|invalid-backend".into()))
        );
        assert_eq!(
            only_invalid.cluster_not_found_response_code,
            ClusterNotFoundResponseCode::InternalServerError as i32
        );

        // gRPC clients read 503 as UNAVAILABLE, which the GRPCRoute spec asks for.
        let grpc = forward(
            &fwd(vec![mk_backend(BackendTarget::Unresolved, 1)]),
            &MatchedPrefix::Root,
            Protocol::Grpc,
            &ctx,
        );
        assert_eq!(
            grpc.cluster_not_found_response_code,
            ClusterNotFoundResponseCode::ServiceUnavailable as i32
        );
    }

    #[test]
    fn a_forward_without_backends_answers_500() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let action = forward(&fwd(vec![]), &MatchedPrefix::Root, Protocol::Http, &ctx);
        assert_eq!(
            action.cluster_specifier,
            Some(ClusterSpecifier::Cluster("lanyard|invalid-backend".into()))
        );
        assert_eq!(
            action.cluster_not_found_response_code,
            ClusterNotFoundResponseCode::InternalServerError as i32
        );
    }

    #[test]
    fn backend_header_modifiers_stay_on_their_backend() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let mut v2 = mk_backend(svc("v2"), 1);
        v2.request_headers = HeaderModifier {
            set: vec![("x-canary".into(), "yes".into())],
            ..Default::default()
        };
        v2.response_headers = HeaderModifier {
            remove: vec!["server".into()],
            ..Default::default()
        };
        let action = forward(&fwd(vec![v2]), &MatchedPrefix::Root, Protocol::Http, &ctx);
        let Some(ClusterSpecifier::WeightedClusters(weighted)) = action.cluster_specifier else {
            panic!("a single backend with modifiers must still be weighted");
        };
        let only = &weighted.clusters[0];
        assert_eq!(only.name, "outbound|80||v2.a.svc.cluster.local");
        assert_eq!(
            only.request_headers_to_add[0].header.as_ref().unwrap().key,
            "x-canary"
        );
        assert_eq!(only.response_headers_to_remove, ["server"]);
    }

    #[test]
    fn a_backend_host_rewrite_stays_on_its_backend() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let mut v1 = mk_backend(svc("v1"), 1);
        v1.host_rewrite = Some("v1.example".into());
        let action = forward(&fwd(vec![v1]), &MatchedPrefix::Root, Protocol::Http, &ctx);
        let Some(ClusterSpecifier::WeightedClusters(weighted)) = action.cluster_specifier else {
            panic!("a single backend with a host rewrite must still be weighted");
        };
        assert_eq!(
            weighted.clusters[0].host_rewrite_specifier,
            Some(
                weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(
                    "v1.example".into()
                )
            )
        );
        assert_eq!(action.host_rewrite_specifier, None);
    }

    #[test]
    fn rewrites() {
        let model = model();
        let ctx = RouteContext::new(&model, "cluster.local");
        let mut f = fwd(vec![mk_backend(svc("v1"), 1)]);
        f.rewrite = Some(UrlRewrite {
            hostname: Some("internal.example".into()),
            path: Some(PathRewrite::Prefix("/v2".into())),
        });
        let action = forward(
            &f,
            &MatchedPrefix::Segments("/v1".into()),
            Protocol::Http,
            &ctx,
        );
        assert_eq!(
            action.host_rewrite_specifier,
            Some(HostRewriteSpecifier::HostRewriteLiteral(
                "internal.example".into()
            ))
        );
        assert_eq!(action.prefix_rewrite, "/v2");
        assert_eq!(action.regex_rewrite, None);

        f.rewrite = Some(UrlRewrite {
            hostname: None,
            path: Some(PathRewrite::Full("/fixed".into())),
        });
        let action = forward(&f, &MatchedPrefix::Root, Protocol::Http, &ctx);
        let regex = action.regex_rewrite.unwrap();
        assert_eq!(regex.pattern.unwrap().regex, "^/.*$");
        assert_eq!(regex.substitution, "/fixed");
        assert_eq!(action.prefix_rewrite, "");
    }

    #[test]
    fn redirects_and_codes() {
        let r = redirect(
            &Redirect {
                scheme: Some("https".into()),
                hostname: Some("example.com".into()),
                path: Some(PathRewrite::Full("/new".into())),
                port: Some(8443),
                status: 301,
            },
            &MatchedPrefix::Root,
            80,
        );
        assert_eq!(
            r.scheme_rewrite_specifier,
            Some(SchemeRewriteSpecifier::SchemeRedirect("https".into()))
        );
        assert_eq!(r.host_redirect, "example.com");
        assert_eq!(r.port_redirect, 8443);
        assert_eq!(
            r.path_rewrite_specifier,
            Some(PathRewriteSpecifier::PathRedirect("/new".into()))
        );
        assert_eq!(
            r.response_code,
            RedirectResponseCode::MovedPermanently as i32
        );

        for (status, code) in [
            (301, RedirectResponseCode::MovedPermanently),
            (302, RedirectResponseCode::Found),
            (303, RedirectResponseCode::SeeOther),
            (307, RedirectResponseCode::TemporaryRedirect),
            (308, RedirectResponseCode::PermanentRedirect),
        ] {
            assert_eq!(redirect_code(status), code);
        }

        let prefix = |replacement: &str| {
            redirect(
                &Redirect {
                    scheme: None,
                    hostname: None,
                    path: Some(PathRewrite::Prefix(replacement.into())),
                    port: None,
                    status: 302,
                },
                &MatchedPrefix::Segments("/old".into()),
                80,
            )
        };
        let exact = prefix("/new");
        assert_eq!(
            exact.path_rewrite_specifier,
            Some(PathRewriteSpecifier::PrefixRewrite("/new".into()))
        );
        assert_eq!(exact.scheme_rewrite_specifier, None);
        assert_eq!(exact.port_redirect, 0);
        assert!(matches!(
            prefix("/").path_rewrite_specifier,
            Some(PathRewriteSpecifier::RegexRewrite(_))
        ));
    }

    /// The port Envoy is given for each of the spec's port rules (see [`redirect`]).
    #[test]
    fn redirect_ports_follow_the_spec_through_envoys_rules() {
        let port_redirect = |scheme: Option<&str>, host: bool, port: Option<u16>, service: u16| {
            redirect(
                &Redirect {
                    scheme: scheme.map(str::to_string),
                    hostname: host.then(|| "example.org".to_string()),
                    path: None,
                    port,
                    status: 302,
                },
                &MatchedPrefix::Root,
                service,
            )
            .port_redirect
        };
        // Service port 80, nothing set: the request's authority as it came.
        assert_eq!(port_redirect(None, false, None, 80), 0);
        // Another Service port: the listener port, printed in place of the request's.
        assert_eq!(port_redirect(None, false, None, 8080), 8080);
        assert_eq!(port_redirect(None, true, None, 8080), 8080);
        // A scheme alone: its well-known port, which a hostname lets Envoy leave out.
        assert_eq!(port_redirect(Some("https"), true, None, 8080), 0);
        assert_eq!(port_redirect(Some("https"), false, None, 80), 0);
        // ... but a request authority with port 8080 would keep it: 443 is printed instead.
        assert_eq!(port_redirect(Some("https"), false, None, 8080), 443);
        // A well-known port given explicitly is the same as none.
        assert_eq!(port_redirect(Some("https"), true, Some(443), 80), 0);
        assert_eq!(port_redirect(None, true, Some(80), 8080), 0);
        // Any other port is printed.
        assert_eq!(port_redirect(Some("https"), true, Some(80), 80), 80);
        assert_eq!(port_redirect(None, false, Some(8083), 80), 8083);
    }
}
