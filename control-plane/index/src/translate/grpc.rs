//! One GRPCRoute's rules lowered into ranked model routes.
//!
//! gRPC calls are HTTP/2 POSTs to `/<package.Service>/<Method>`, so service and method
//! matches become path matches: both set gives an exact path, a service alone a path prefix,
//! a method alone (or any regular expression) a regular expression over the path.

use lanyard_model::{Action, Forward, PathMatch, RequestMatch, Route, UrlRewrite};

use crate::api::{GrpcMethodMatch, GrpcRoute, GrpcRouteMatch};
use crate::translate::backends::Resolver;
use crate::translate::filters::{self, Findings, GRPC_FILTERS, RuleLabel};
use crate::translate::precedence::{self, Rank, Ranked, TieBreak};

/// The HTTP status of a local reply that gRPC clients read as UNAVAILABLE.
pub(super) const GRPC_UNAVAILABLE: u16 = 503;

/// Lowers every rule of a GRPCRoute: one ranked model route per match.
pub(super) fn lower(
    route: &GrpcRoute,
    tie: &TieBreak,
    resolver: &Resolver<'_>,
    findings: &mut Findings,
) -> Vec<Ranked> {
    let mut out = Vec::new();
    for (rule_index, rule) in route.spec.rules.iter().enumerate() {
        findings.in_rule(Some(rule_index));
        let at = filters::rule_label(rule_index, rule.name.as_deref());
        let default_match = [GrpcRouteMatch::default()];
        let matches: &[GrpcRouteMatch] = if rule.matches.is_empty() {
            &default_match
        } else {
            &rule.matches
        };
        let mut rule_filters = filters::lower(&rule.filters, GRPC_FILTERS, resolver, &at, findings);
        // A Host from a header modifier becomes the host rewrite (proxies refuse it as a
        // header to add).
        let rewrite =
            filters::take_host(&mut rule_filters.request_headers, &at, findings).map(|host| {
                UrlRewrite {
                    hostname: Some(host),
                    path: None,
                }
            });
        let backends = filters::backends(&rule.backend_refs, resolver, &at, findings);
        let action = if rule_filters.unresolvable || backends.is_empty() {
            // The GRPCRoute spec wants UNAVAILABLE where HTTPRoute answers 500; Envoy turns a
            // local reply's 503 into grpc-status 14 UNAVAILABLE (500 would be UNKNOWN).
            // Envoy: source/common/grpc/status.cc (Grpc::Utility::httpToGrpcStatus)
            Action::DirectResponse {
                status: GRPC_UNAVAILABLE,
            }
        } else {
            Action::Forward(Forward { backends, rewrite })
        };
        for (match_index, m) in matches.iter().enumerate() {
            let Some((path, specificity)) = method_match(m, &at, findings) else {
                continue;
            };
            let headers = filters::header_matches(&m.headers, &at, findings);
            let (service_len, method_len, regex) = specificity;
            out.push(Ranked {
                rank: Rank {
                    specificity: precedence::grpc(service_len, method_len, headers.len(), regex),
                    tie: TieBreak {
                        rule: rule_index,
                        matched: match_index,
                        ..tie.clone()
                    },
                },
                route: Route {
                    matcher: RequestMatch {
                        path,
                        headers,
                        query: Vec::new(),
                        method: None,
                    },
                    action: action.clone(),
                    request_headers: rule_filters.request_headers.clone(),
                    response_headers: rule_filters.response_headers.clone(),
                    mirrors: rule_filters.mirrors.clone(),
                    cors: None,
                    timeouts: Default::default(),
                    retry: None,
                },
            });
        }
    }
    findings.in_rule(None);
    out
}

/// The path match of a method match, with what precedence needs: the service and method
/// strings and whether they are regular expressions.
fn method_match<'a>(
    m: &'a GrpcRouteMatch,
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> Option<(PathMatch, (&'a str, &'a str, bool))> {
    let Some(method) = &m.method else {
        return Some((PathMatch::Prefix("/".into()), ("", "", false)));
    };
    let GrpcMethodMatch {
        match_type,
        service,
        method: name,
    } = method;
    let service = service.as_deref().unwrap_or_default();
    let name = name.as_deref().unwrap_or_default();
    if service.is_empty() && name.is_empty() {
        findings.invalid(format!(
            "{at}: a gRPC method match must set service, method or both"
        ));
        return None;
    }
    match match_type.as_deref().unwrap_or("Exact") {
        "Exact" => {
            let service_ok = service.is_empty()
                || service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
            let method_ok =
                name.is_empty() || name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !service_ok || !method_ok {
                findings.invalid(format!(
                    "{at}: gRPC service {service:?} / method {name:?} has characters an Exact match does not allow"
                ));
                return None;
            }
            let path = match (service.is_empty(), name.is_empty()) {
                (false, false) => PathMatch::Exact(format!("/{service}/{name}")),
                (false, true) => PathMatch::Prefix(format!("/{service}/")),
                _ => PathMatch::Regex(format!("/[^/]+/{}", regex::escape(name))),
            };
            Some((path, (service, name, false)))
        }
        "RegularExpression" => {
            for part in [service, name].into_iter().filter(|p| !p.is_empty()) {
                filters::check_regex(part, at, findings)?;
            }
            let service_re = if service.is_empty() { "[^/]+" } else { service };
            let method_re = if name.is_empty() { "[^/]+" } else { name };
            // Envoy compiles the path regex the two parts become: each may be within the
            // program-size limit and their combination not.
            let combined = format!("/(?:{service_re})/(?:{method_re})");
            filters::check_regex(&combined, at, findings)?;
            Some((PathMatch::Regex(combined), (service, name, true)))
        }
        other => {
            findings.invalid(format!(
                "{at}: method match type {other:?} is not Exact or RegularExpression"
            ));
            None
        }
    }
}
