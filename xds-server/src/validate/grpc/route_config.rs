//! RouteConfiguration, as gRPC: src/core/xds/grpc/xds_route_config_parser.cc
//! (XdsRouteConfigResourceParse and the functions it calls) reads it.

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::{
    FilterConfig, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, route::Action,
    route_action::ClusterSpecifier, route_action::hash_policy::PolicySpecifier,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::{
    Report, Violation, check_duration, check_header_matcher, extract_extension, field,
    filter_for_override_type, regex_error,
};

/// The one cluster specifier plugin gRPC registers.
/// gRPC: xds_cluster_specifier_plugin.cc (XdsClusterSpecifierPluginRegistry).
const RLS_PLUGIN: &str = "grpc.lookup.v1.RouteLookupClusterSpecifier";

/// What gRPC NACKs in a RouteConfiguration. Paths start at the resource's root.
pub fn check_route_configuration(config: &RouteConfiguration) -> Vec<Violation> {
    let mut report = Report::default();
    check_route_config_at(config, "", &mut report);
    report.violations
}

/// What gRPC reads differently from Envoy in a RouteConfiguration without refusing it: routes
/// it skips (so requests fall through to later routes), routes whose calls all fail
/// (an action gRPC does not have), `retry_on` codes it ignores. Not violations: the
/// resource is accepted.
pub fn notes_route_configuration(config: &RouteConfiguration) -> Vec<Violation> {
    let mut report = Report::default();
    check_route_config_at(config, "", &mut report);
    report.notes
}

/// The plugins a route may name: `true` when gRPC knows the plugin's type, `false` when it
/// does not but the plugin is optional (routes naming it are skipped).
type Plugins = BTreeMap<String, bool>;

/// gRPC: XdsRouteConfigResourceParse. `base` is where the RouteConfiguration sits (empty at
/// the root; the HttpConnectionManager's `route_config` for an inline one).
pub(super) fn check_route_config_at(config: &RouteConfiguration, base: &str, report: &mut Report) {
    let plugins = cluster_specifier_plugins(config, base, report);
    for (i, vhost) in config.virtual_hosts.iter().enumerate() {
        let vpath = field(base, &format!("virtual_hosts[{i}]"));
        for (j, domain) in vhost.domains.iter().enumerate() {
            if !is_valid_domain_pattern(domain) {
                report.add(
                    field(&vpath, &format!("domains[{j}]")),
                    format!("invalid domain pattern \"{domain}\""),
                );
            }
        }
        if vhost.domains.is_empty() {
            report.add(field(&vpath, "domains"), "must be non-empty");
        }
        check_typed_per_filter_config(
            &vhost.typed_per_filter_config,
            &field(&vpath, "typed_per_filter_config"),
            report,
        );
        if let Some(retry) = &vhost.retry_policy {
            check_retry_policy(retry, &field(&vpath, "retry_policy"), report);
        }
        for (j, route) in vhost.routes.iter().enumerate() {
            check_route(
                route,
                &plugins,
                &field(&vpath, &format!("routes[{j}]")),
                report,
            );
        }
    }
}

/// gRPC: ClusterSpecifierPluginParse (on by default: GRPC_EXPERIMENTAL_XDS_RLS_LB).
fn cluster_specifier_plugins(
    config: &RouteConfiguration,
    base: &str,
    report: &mut Report,
) -> Plugins {
    let mut plugins = Plugins::new();
    for (i, plugin) in config.cluster_specifier_plugins.iter().enumerate() {
        let path = field(base, &format!("cluster_specifier_plugins[{i}].extension"));
        let Some(extension) = &plugin.extension else {
            report.add(path, "field not present");
            continue;
        };
        if plugins.contains_key(&extension.name) {
            report.add(
                field(&path, "name"),
                format!("duplicate name \"{}\"", extension.name),
            );
        }
        let config_path = field(&path, "typed_config");
        let Some(ext) = extract_extension(extension.typed_config.as_ref(), &config_path, report)
        else {
            continue;
        };
        // The RLS plugin's own config (its LB policy config) is not checked here.
        let known = ext.type_name == RLS_PLUGIN;
        if !known && !plugin.is_optional {
            report.add(config_path, "unsupported ClusterSpecifierPlugin type");
        }
        plugins.entry(extension.name.clone()).or_insert(known);
    }
    plugins
}

/// gRPC: xds_routing.cc (DomainPatternMatchType): exact, `*`, `*suffix` or `prefix*`.
fn is_valid_domain_pattern(domain: &str) -> bool {
    if domain.is_empty() {
        return false;
    }
    if !domain.contains('*') || domain == "*" {
        return true;
    }
    domain.starts_with('*') || domain.ends_with('*')
}

/// gRPC: ParseRoute.
fn check_route(route: &Route, plugins: &Plugins, path: &str, report: &mut Report) {
    let match_path = field(path, "match");
    let Some(matcher) = &route.r#match else {
        report.add(match_path, "field not present");
        return;
    };
    // A route with query parameters is skipped before anything else in it is read.
    if !matcher.query_parameters.is_empty() {
        report.note(
            field(&match_path, "query_parameters"),
            "route skipped: gRPC does not match query parameters",
        );
        return;
    }
    if !check_path_specifier(matcher, &match_path, report) {
        return;
    }
    for (i, header) in matcher.headers.iter().enumerate() {
        check_header_matcher(
            header,
            &field(&match_path, &format!("headers[{i}]")),
            report,
        );
    }
    if let Some(fraction) = &matcher.runtime_fraction {
        check_runtime_fraction(fraction, &field(&match_path, "runtime_fraction"), report);
    }
    match &route.action {
        Some(Action::Route(action)) => {
            if !check_route_action(action, plugins, &field(path, "route"), report) {
                return;
            }
        }
        // Server-side only; a client fails the call too.
        Some(Action::NonForwardingAction(_)) => {}
        Some(other) => report.note(
            field(path, action_name(other)),
            "every call this route matches fails with UNAVAILABLE: gRPC has no such action",
        ),
        None => report.note(
            path,
            "every call this route matches fails with UNAVAILABLE: no action",
        ),
    }
    check_typed_per_filter_config(
        &route.typed_per_filter_config,
        &field(path, "typed_per_filter_config"),
        report,
    );
}

/// gRPC: RoutePathMatchParse. Whether the route is kept: a prefix or path that cannot match
/// `/service/method` makes gRPC skip the route (not a violation).
fn check_path_specifier(matcher: &RouteMatch, path: &str, report: &mut Report) -> bool {
    match &matcher.path_specifier {
        Some(PathSpecifier::Prefix(prefix)) => {
            let kept = prefix_can_match_a_method(prefix);
            if !kept {
                report.note(
                    field(path, "prefix"),
                    "route skipped: the prefix cannot match a gRPC method path /service/method",
                );
            }
            kept
        }
        Some(PathSpecifier::Path(p)) => {
            let kept = is_service_method_path(p);
            if !kept {
                report.note(
                    field(path, "path"),
                    "route skipped: the path is not of the form /service/method",
                );
            }
            kept
        }
        Some(PathSpecifier::SafeRegex(regex)) => match regex_error(&regex.regex) {
            Some(error) => {
                report.add(
                    field(path, "safe_regex"),
                    format!("error creating path matcher: {error}"),
                );
                false
            }
            None => true,
        },
        Some(other) => {
            report.add(
                field(path, path_specifier_name(other)),
                "invalid path specifier",
            );
            false
        }
        None => {
            report.add(path, "invalid path specifier");
            false
        }
    }
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Route(_) => "route",
        Action::Redirect(_) => "redirect",
        Action::DirectResponse(_) => "direct_response",
        Action::FilterAction(_) => "filter_action",
        Action::NonForwardingAction(_) => "non_forwarding_action",
    }
}

fn path_specifier_name(specifier: &PathSpecifier) -> &'static str {
    match specifier {
        PathSpecifier::Prefix(_) => "prefix",
        PathSpecifier::Path(_) => "path",
        PathSpecifier::SafeRegex(_) => "safe_regex",
        PathSpecifier::ConnectMatcher(_) => "connect_matcher",
        PathSpecifier::PathSeparatedPrefix(_) => "path_separated_prefix",
        PathSpecifier::PathMatchPolicy(_) => "path_match_policy",
    }
}

/// Empty, or `/`, `/service`, `/service/`, `/service/method-prefix`.
fn prefix_can_match_a_method(prefix: &str) -> bool {
    let Some(rest) = prefix.strip_prefix('/') else {
        return prefix.is_empty();
    };
    let parts: Vec<&str> = rest.splitn(3, '/').collect();
    !matches!(parts.as_slice(), [_, _, _] | ["", _])
}

/// Exactly `/service/method`, both non-empty.
fn is_service_method_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    matches!(rest.splitn(3, '/').collect::<Vec<_>>().as_slice(),
        [service, method] if !service.is_empty() && !method.is_empty())
}

/// gRPC: RouteRuntimeFractionParse.
fn check_runtime_fraction(fraction: &RuntimeFractionalPercent, path: &str, report: &mut Report) {
    if let Some(value) = &fraction.default_value
        && DenominatorType::try_from(value.denominator).is_err()
    {
        report.add(
            field(path, "default_value.denominator"),
            "unknown denominator type",
        );
    }
}

/// gRPC: RouteActionParse. Whether the route is kept (its cluster specifier is one gRPC
/// reads).
fn check_route_action(
    action: &RouteAction,
    plugins: &Plugins,
    path: &str,
    report: &mut Report,
) -> bool {
    if let Some(msd) = &action.max_stream_duration {
        let msd_path = field(path, "max_stream_duration");
        if let Some(d) = &msd.grpc_timeout_header_max {
            check_duration(d, &field(&msd_path, "grpc_timeout_header_max"), report);
        } else if let Some(d) = &msd.max_stream_duration {
            check_duration(d, &field(&msd_path, "max_stream_duration"), report);
        }
    }
    for (i, hash) in action.hash_policy.iter().enumerate() {
        let Some(PolicySpecifier::Header(header)) = &hash.policy_specifier else {
            continue;
        };
        let hpath = field(path, &format!("hash_policy[{i}].header"));
        if header.header_name.is_empty() {
            report.add(field(&hpath, "header_name"), "must be non-empty");
        }
        if let Some(rewrite) = &header.regex_rewrite {
            let ppath = field(&hpath, "regex_rewrite.pattern");
            match &rewrite.pattern {
                None => report.add(ppath, "field not present"),
                Some(pattern) if pattern.regex.is_empty() => {
                    report.add(field(&ppath, "regex"), "field not present");
                }
                Some(pattern) => {
                    if let Some(error) = regex_error(&pattern.regex) {
                        report.add(
                            field(&ppath, "regex"),
                            format!("errors compiling regex: {error}"),
                        );
                    }
                }
            }
        }
    }
    if let Some(retry) = &action.retry_policy {
        check_retry_policy(retry, &field(path, "retry_policy"), report);
    }
    match &action.cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) => {
            if name.is_empty() {
                report.add(field(path, "cluster"), "must be non-empty");
            }
            true
        }
        Some(ClusterSpecifier::WeightedClusters(weighted)) => {
            let wpath = field(path, "weighted_clusters");
            let mut total: u64 = 0;
            let mut kept = 0;
            for (i, cluster) in weighted.clusters.iter().enumerate() {
                let cpath = field(&wpath, &format!("clusters[{i}]"));
                check_typed_per_filter_config(
                    &cluster.typed_per_filter_config,
                    &field(&cpath, "typed_per_filter_config"),
                    report,
                );
                if cluster.name.is_empty() {
                    report.add(field(&cpath, "name"), "must be non-empty");
                }
                match &cluster.weight {
                    None => {
                        report.add(field(&cpath, "weight"), "field not present");
                        kept += 1;
                    }
                    Some(weight) if weight.value == 0 => {}
                    Some(weight) => {
                        total += u64::from(weight.value);
                        kept += 1;
                    }
                }
            }
            if kept == 0 {
                report.add(wpath, "no valid clusters specified");
            } else if total > u64::from(u32::MAX) {
                report.add(wpath, "sum of cluster weights exceeds uint32 max");
            }
            true
        }
        Some(ClusterSpecifier::ClusterSpecifierPlugin(name)) => {
            let ppath = field(path, "cluster_specifier_plugin");
            if name.is_empty() {
                report.add(ppath, "must be non-empty");
                return false;
            }
            match plugins.get(name) {
                None => {
                    report.add(
                        ppath,
                        format!("unknown cluster specifier plugin name \"{name}\""),
                    );
                    true
                }
                Some(true) => true,
                Some(false) => {
                    report.note(
                        ppath,
                        "route skipped: an optional cluster specifier plugin gRPC does not know",
                    );
                    false
                }
            }
        }
        // cluster_header, inline plugins or nothing: gRPC skips the route.
        Some(ClusterSpecifier::ClusterHeader(_)) => {
            report.note(
                field(path, "cluster_header"),
                "route skipped: gRPC does not read cluster_header",
            );
            false
        }
        Some(ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
            report.note(
                field(path, "inline_cluster_specifier_plugin"),
                "route skipped: gRPC does not read inline cluster specifier plugins",
            );
            false
        }
        None => {
            report.note(path, "route skipped: no cluster specifier");
            false
        }
    }
}

/// The `retry_on` codes gRPC reads. gRPC: RetryPolicyParse.
const GRPC_RETRY_ON: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC: RetryPolicyParse.
fn check_retry_policy(retry: &RetryPolicy, path: &str, report: &mut Report) {
    let ignored: Vec<&str> = retry
        .retry_on
        .split(',')
        .filter(|code| !code.is_empty() && !GRPC_RETRY_ON.contains(code))
        .collect();
    if !ignored.is_empty() {
        report.note(
            field(path, "retry_on"),
            format!(
                "gRPC ignores {}: it retries only on {}",
                ignored.join(","),
                GRPC_RETRY_ON.join(",")
            ),
        );
    }
    // Unset means 1.
    if retry.num_retries.as_ref().is_some_and(|n| n.value == 0) {
        report.add(field(path, "num_retries"), "must be greater than 0");
    }
    if let Some(backoff) = &retry.retry_back_off {
        let bpath = field(path, "retry_back_off");
        match &backoff.base_interval {
            None => report.add(field(&bpath, "base_interval"), "field not present"),
            Some(d) => check_duration(d, &field(&bpath, "base_interval"), report),
        }
        if let Some(d) = &backoff.max_interval {
            check_duration(d, &field(&bpath, "max_interval"), report);
        }
    }
}

/// gRPC: ParseTypedPerFilterConfig: every entry must name a filter gRPC can override per
/// route, unless it is wrapped in a `FilterConfig` with `is_optional`. Entries are checked in
/// key order so the report is stable.
fn check_typed_per_filter_config(configs: &HashMap<String, Any>, path: &str, report: &mut Report) {
    let sorted: BTreeMap<&String, &Any> = configs.iter().collect();
    for (key, any) in sorted {
        let epath = format!("{path}[\"{key}\"]");
        if key.is_empty() {
            report.add(epath.clone(), "filter name must be non-empty");
        }
        let Some(ext) = extract_extension(Some(any), &epath, report) else {
            continue;
        };
        let mut is_optional = false;
        let type_name = if ext.type_name == "envoy.config.route.v3.FilterConfig" {
            let Some(wrapper) = ext.bytes.and_then(|b| FilterConfig::decode(b).ok()) else {
                report.add(epath, "could not parse FilterConfig");
                continue;
            };
            is_optional = wrapper.is_optional;
            let config_path = field(&ext.path, "config");
            match extract_extension(wrapper.config.as_ref(), &config_path, report) {
                Some(inner) => inner.type_name,
                None => continue,
            }
        } else {
            ext.type_name
        };
        // The filter's own override config is not checked here.
        if filter_for_override_type(&type_name).is_none() && !is_optional {
            report.add(epath, "unsupported filter type");
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
    use envoy_types::pb::envoy::config::route::v3::{
        ClusterSpecifierPlugin, HeaderMatcher, QueryParameterMatcher, RedirectAction, VirtualHost,
        WeightedCluster, header_matcher::HeaderMatchSpecifier, retry_policy::RetryBackOff,
        route_action::HashPolicy, route_action::hash_policy::Header,
        weighted_cluster::ClusterWeight,
    };
    use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
    use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
    use envoy_types::pb::envoy::r#type::v3::FractionalPercent;

    use super::*;
    use crate::protobuf::{any, duration, u32_value};

    fn mk_config(routes: Vec<Route>) -> RouteConfiguration {
        RouteConfiguration {
            name: "cart.shop.svc.cluster.local:80".into(),
            virtual_hosts: vec![VirtualHost {
                name: "cart".into(),
                domains: vec!["*".into()],
                routes,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn mk_action(cluster: ClusterSpecifier) -> RouteAction {
        RouteAction {
            cluster_specifier: Some(cluster),
            ..Default::default()
        }
    }

    fn mk_route(path: PathSpecifier, action: RouteAction) -> Route {
        Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(path),
                ..Default::default()
            }),
            action: Some(Action::Route(action)),
            ..Default::default()
        }
    }

    fn to_cluster(path: PathSpecifier) -> Route {
        mk_route(path, mk_action(ClusterSpecifier::Cluster("c".into())))
    }

    fn check(routes: Vec<Route>) -> Vec<String> {
        check_route_configuration(&mk_config(routes))
            .into_iter()
            .map(|v| v.to_string())
            .collect()
    }

    const NONE: [&str; 0] = [];
    const R0: &str = "virtual_hosts[0].routes[0]";

    fn regex(r: &str) -> RegexMatcher {
        RegexMatcher {
            regex: r.into(),
            ..Default::default()
        }
    }

    #[test]
    fn path_separated_prefix_is_refused() {
        assert_eq!(
            check(vec![to_cluster(PathSpecifier::PathSeparatedPrefix(
                "/shop.Cart".into()
            ))]),
            [format!(
                "{R0}.match.path_separated_prefix: invalid path specifier"
            )]
        );
    }

    #[test]
    fn prefix_path_and_safe_regex_are_accepted() {
        assert_eq!(
            check(vec![to_cluster(PathSpecifier::Prefix(
                "/shop.Cart/".into()
            ))]),
            NONE
        );
        assert_eq!(
            check(vec![to_cluster(PathSpecifier::Prefix(String::new()))]),
            NONE
        );
        assert_eq!(
            check(vec![to_cluster(PathSpecifier::Path(
                "/shop.Cart/Get".into()
            ))]),
            NONE
        );
        assert_eq!(
            check(vec![to_cluster(PathSpecifier::SafeRegex(regex(
                "/shop\\.Cart/.*"
            )))]),
            NONE
        );
    }

    #[test]
    fn invalid_path_regex() {
        let got = check(vec![to_cluster(PathSpecifier::SafeRegex(regex("/a(")))]);
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with(&format!(
            "{R0}.match.safe_regex: error creating path matcher"
        )));
    }

    #[test]
    fn routes_grpc_skips_are_not_checked_further() {
        // Each of these is skipped by gRPC, so its empty cluster name is never read.
        let empty = || mk_action(ClusterSpecifier::Cluster(String::new()));
        let mut with_query = mk_route(PathSpecifier::PathSeparatedPrefix("/a".into()), empty());
        if let Some(m) = &mut with_query.r#match {
            m.query_parameters = vec![QueryParameterMatcher {
                name: "q".into(),
                ..Default::default()
            }];
        }
        assert_eq!(check(vec![with_query]), NONE);
        assert_eq!(
            check(vec![mk_route(PathSpecifier::Prefix("a".into()), empty())]),
            NONE
        );
        assert_eq!(
            check(vec![mk_route(PathSpecifier::Prefix("//a".into()), empty())]),
            NONE
        );
        assert_eq!(
            check(vec![mk_route(
                PathSpecifier::Prefix("/a/b/c".into()),
                empty()
            )]),
            NONE
        );
        assert_eq!(
            check(vec![mk_route(PathSpecifier::Path("/a".into()), empty())]),
            NONE
        );
        assert_eq!(
            check(vec![mk_route(PathSpecifier::Path("/a/".into()), empty())]),
            NONE
        );
        // The same action on a route gRPC keeps is a violation.
        assert_eq!(
            check(vec![mk_route(
                PathSpecifier::Prefix("/a/b".into()),
                empty()
            )]),
            [format!("{R0}.route.cluster: must be non-empty")]
        );
    }

    #[test]
    fn route_without_match() {
        assert_eq!(
            check(vec![Route::default()]),
            [format!("{R0}.match: field not present")]
        );
    }

    fn mk_weighted(weights: &[(&str, Option<u32>)]) -> Route {
        let clusters = weights
            .iter()
            .map(|(name, weight)| ClusterWeight {
                name: (*name).into(),
                weight: weight.map(u32_value),
                ..Default::default()
            })
            .collect();
        mk_route(
            PathSpecifier::Prefix("/".into()),
            mk_action(ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters,
                ..Default::default()
            })),
        )
    }

    #[test]
    fn weighted_clusters_total_zero_is_refused() {
        assert_eq!(
            check(vec![mk_weighted(&[("a", Some(0)), ("b", Some(0))])]),
            [format!(
                "{R0}.route.weighted_clusters: no valid clusters specified"
            )]
        );
        assert_eq!(
            check(vec![mk_weighted(&[("a", Some(0)), ("b", Some(1))])]),
            NONE
        );
    }

    #[test]
    fn weighted_clusters_over_uint32_and_bad_entries() {
        assert_eq!(
            check(vec![mk_weighted(&[("a", Some(u32::MAX)), ("b", Some(1))])]),
            [format!(
                "{R0}.route.weighted_clusters: sum of cluster weights exceeds uint32 max"
            )]
        );
        assert_eq!(
            check(vec![mk_weighted(&[("", Some(1)), ("b", None)])]),
            [
                format!("{R0}.route.weighted_clusters.clusters[0].name: must be non-empty"),
                format!("{R0}.route.weighted_clusters.clusters[1].weight: field not present"),
            ]
        );
    }

    fn with_retry(retry: RetryPolicy) -> Route {
        let mut action = mk_action(ClusterSpecifier::Cluster("c".into()));
        action.retry_policy = Some(retry);
        mk_route(PathSpecifier::Prefix("/".into()), action)
    }

    #[test]
    fn num_retries_zero_is_refused() {
        let retry = |n: Option<u32>| RetryPolicy {
            retry_on: "unavailable,5xx".into(),
            num_retries: n.map(u32_value),
            ..Default::default()
        };
        assert_eq!(
            check(vec![with_retry(retry(Some(0)))]),
            [format!(
                "{R0}.route.retry_policy.num_retries: must be greater than 0"
            )]
        );
        assert_eq!(check(vec![with_retry(retry(Some(2)))]), NONE);
        assert_eq!(check(vec![with_retry(retry(None))]), NONE);
    }

    #[test]
    fn retry_back_off_needs_a_base_interval() {
        let backoff = |base| RetryPolicy {
            retry_back_off: Some(RetryBackOff {
                base_interval: base,
                max_interval: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            check(vec![with_retry(backoff(None))]),
            [format!(
                "{R0}.route.retry_policy.retry_back_off.base_interval: field not present"
            )]
        );
        assert_eq!(
            check(vec![with_retry(backoff(Some(duration(
                std::time::Duration::from_millis(50)
            ))))]),
            NONE
        );
    }

    #[test]
    fn virtual_host_retry_policy_is_checked() {
        let mut config = mk_config(vec![]);
        config.virtual_hosts[0].retry_policy = Some(RetryPolicy {
            num_retries: Some(u32_value(0)),
            ..Default::default()
        });
        assert_eq!(
            check_route_configuration(&config),
            vec![Violation::new(
                "virtual_hosts[0].retry_policy.num_retries",
                "must be greater than 0"
            )]
        );
    }

    fn with_filter_config(key: &str, config: Any) -> Route {
        let mut route = to_cluster(PathSpecifier::Prefix("/".into()));
        route.typed_per_filter_config.insert(key.into(), config);
        route
    }

    #[test]
    fn unknown_filter_override_is_refused_unless_optional() {
        let cors = any(&CorsPolicy::default());
        assert_eq!(
            check(vec![with_filter_config(
                "envoy.filters.http.cors",
                cors.clone()
            )]),
            [format!(
                "{R0}.typed_per_filter_config[\"envoy.filters.http.cors\"]: unsupported filter type"
            )]
        );
        let wrapped = |is_optional| FilterConfig {
            config: Some(cors.clone()),
            is_optional,
            ..Default::default()
        };
        assert_eq!(
            check(vec![with_filter_config(
                "envoy.filters.http.cors",
                any(&wrapped(true))
            )]),
            NONE
        );
        assert_eq!(
            check(vec![with_filter_config(
                "envoy.filters.http.cors",
                any(&wrapped(false))
            )]),
            [format!(
                "{R0}.typed_per_filter_config[\"envoy.filters.http.cors\"]: unsupported filter type"
            )]
        );
    }

    #[test]
    fn known_filter_override_passes_and_names_are_non_empty() {
        assert_eq!(
            check(vec![with_filter_config(
                "fault",
                any(&HttpFault::default())
            )]),
            NONE
        );
        assert_eq!(
            check(vec![with_filter_config("", any(&HttpFault::default()))]),
            [format!(
                "{R0}.typed_per_filter_config[\"\"]: filter name must be non-empty"
            )]
        );
        // The router takes no per-route config.
        assert_eq!(
            check(vec![with_filter_config(
                "router",
                any(
                    &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(
                    )
                )
            )]),
            [format!(
                "{R0}.typed_per_filter_config[\"router\"]: unsupported filter type"
            )]
        );
    }

    #[test]
    fn filter_config_on_virtual_hosts_and_weighted_clusters() {
        let cors = any(&CorsPolicy::default());
        let mut config = mk_config(vec![mk_weighted(&[("a", Some(1))])]);
        config.virtual_hosts[0]
            .typed_per_filter_config
            .insert("cors".into(), cors.clone());
        if let Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::WeightedClusters(w)),
            ..
        })) = &mut config.virtual_hosts[0].routes[0].action
        {
            w.clusters[0]
                .typed_per_filter_config
                .insert("cors".into(), cors);
        }
        let paths: Vec<String> = check_route_configuration(&config)
            .into_iter()
            .map(|v| v.path)
            .collect();
        assert_eq!(
            paths,
            [
                "virtual_hosts[0].typed_per_filter_config[\"cors\"]".to_string(),
                format!(
                    "{R0}.route.weighted_clusters.clusters[0].typed_per_filter_config[\"cors\"]"
                ),
            ]
        );
    }

    #[test]
    fn redirects_and_direct_responses_are_accepted() {
        let mut redirect = to_cluster(PathSpecifier::Path("/a/b".into()));
        redirect.action = Some(Action::Redirect(RedirectAction::default()));
        assert_eq!(check(vec![redirect.clone()]), NONE);
        // Their per-filter configs are still read.
        redirect
            .typed_per_filter_config
            .insert("cors".into(), any(&CorsPolicy::default()));
        assert_eq!(check(vec![redirect]).len(), 1);
    }

    #[test]
    fn cluster_header_routes_are_skipped() {
        let mut route = mk_route(
            PathSpecifier::Prefix("/".into()),
            mk_action(ClusterSpecifier::ClusterHeader("x-cluster".into())),
        );
        route
            .typed_per_filter_config
            .insert("cors".into(), any(&CorsPolicy::default()));
        assert_eq!(check(vec![route]), NONE);
    }

    fn mk_plugin(name: &str, type_url: &str, is_optional: bool) -> ClusterSpecifierPlugin {
        ClusterSpecifierPlugin {
            extension: Some(TypedExtensionConfig {
                name: name.into(),
                typed_config: Some(Any {
                    type_url: format!("type.googleapis.com/{type_url}"),
                    value: vec![],
                }),
            }),
            is_optional,
        }
    }

    #[test]
    fn cluster_specifier_plugins() {
        let plugin_route = |name: &str| {
            mk_route(
                PathSpecifier::Prefix("/".into()),
                mk_action(ClusterSpecifier::ClusterSpecifierPlugin(name.into())),
            )
        };
        let mut config = mk_config(vec![plugin_route("rls"), plugin_route("other")]);
        config.cluster_specifier_plugins = vec![
            mk_plugin("rls", RLS_PLUGIN, false),
            mk_plugin("opt", "some.Plugin", true),
            mk_plugin("bad", "some.Plugin", false),
            mk_plugin("rls", RLS_PLUGIN, false),
        ];
        let got: Vec<String> = check_route_configuration(&config)
            .into_iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "cluster_specifier_plugins[2].extension.typed_config: unsupported ClusterSpecifierPlugin type",
                "cluster_specifier_plugins[3].extension.name: duplicate name \"rls\"",
                "virtual_hosts[0].routes[1].route.cluster_specifier_plugin: unknown cluster specifier plugin name \"other\"",
            ]
        );
    }

    #[test]
    fn domains() {
        let mut config = mk_config(vec![]);
        config.virtual_hosts[0].domains = vec![
            "cart".into(),
            "*.shop".into(),
            "cart.*".into(),
            "ca*rt".into(),
            String::new(),
        ];
        assert_eq!(
            check_route_configuration(&config),
            vec![
                Violation::new(
                    "virtual_hosts[0].domains[3]",
                    "invalid domain pattern \"ca*rt\""
                ),
                Violation::new("virtual_hosts[0].domains[4]", "invalid domain pattern \"\""),
            ]
        );
        config.virtual_hosts[0].domains.clear();
        assert_eq!(
            check_route_configuration(&config),
            vec![Violation::new(
                "virtual_hosts[0].domains",
                "must be non-empty"
            )]
        );
    }

    #[test]
    #[allow(deprecated)]
    fn header_matchers_are_checked() {
        let mut route = to_cluster(PathSpecifier::Prefix("/".into()));
        if let Some(m) = &mut route.r#match {
            m.headers = vec![
                HeaderMatcher {
                    name: "ok".into(),
                    header_match_specifier: Some(HeaderMatchSpecifier::ExactMatch("v".into())),
                    ..Default::default()
                },
                HeaderMatcher {
                    name: "none".into(),
                    ..Default::default()
                },
            ];
        }
        assert_eq!(
            check(vec![route]),
            [format!("{R0}.match.headers[1]: invalid header matcher")]
        );
    }

    #[test]
    fn runtime_fraction_denominator() {
        let fraction = |denominator| RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 50,
                denominator,
            }),
            runtime_key: String::new(),
        };
        let mut route = to_cluster(PathSpecifier::Prefix("/".into()));
        if let Some(m) = &mut route.r#match {
            m.runtime_fraction = Some(fraction(9));
        }
        assert_eq!(
            check(vec![route.clone()]),
            [format!(
                "{R0}.match.runtime_fraction.default_value.denominator: unknown denominator type"
            )]
        );
        if let Some(m) = &mut route.r#match {
            m.runtime_fraction = Some(fraction(DenominatorType::TenThousand as i32));
        }
        assert_eq!(check(vec![route]), NONE);
    }

    #[test]
    fn hash_policy_headers() {
        let mut action = mk_action(ClusterSpecifier::Cluster("c".into()));
        action.hash_policy = vec![HashPolicy {
            policy_specifier: Some(PolicySpecifier::Header(Header {
                header_name: String::new(),
                regex_rewrite: None,
            })),
            terminal: false,
        }];
        assert_eq!(
            check(vec![mk_route(PathSpecifier::Prefix("/".into()), action)]),
            [format!(
                "{R0}.route.hash_policy[0].header.header_name: must be non-empty"
            )]
        );
    }

    #[test]
    fn max_stream_duration_range() {
        use envoy_types::pb::envoy::config::route::v3::route_action::MaxStreamDuration;
        use envoy_types::pb::google::protobuf::Duration;
        let mut action = mk_action(ClusterSpecifier::Cluster("c".into()));
        action.max_stream_duration = Some(MaxStreamDuration {
            max_stream_duration: Some(Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..Default::default()
        });
        assert_eq!(
            check(vec![mk_route(PathSpecifier::Prefix("/".into()), action)]),
            [format!(
                "{R0}.route.max_stream_duration.max_stream_duration.seconds: value must be in the range [0, 315576000000]"
            )]
        );
    }

    fn notes(routes: Vec<Route>) -> Vec<String> {
        notes_route_configuration(&mk_config(routes))
            .into_iter()
            .map(|v| v.to_string())
            .collect()
    }

    #[test]
    fn notes_name_the_routes_grpc_skips() {
        assert_eq!(
            notes(vec![
                to_cluster(PathSpecifier::Path("/old".into())),
                to_cluster(PathSpecifier::Prefix("/a/b/c".into())),
                mk_route(
                    PathSpecifier::Prefix("/".into()),
                    mk_action(ClusterSpecifier::ClusterHeader("x".into()))
                ),
            ]),
            [
                format!("{R0}.match.path: route skipped: the path is not of the form /service/method"),
                "virtual_hosts[0].routes[1].match.prefix: route skipped: the prefix cannot match a gRPC method path /service/method".to_string(),
                "virtual_hosts[0].routes[2].route.cluster_header: route skipped: gRPC does not read cluster_header".to_string(),
            ]
        );
        assert_eq!(
            notes(vec![to_cluster(PathSpecifier::Path("/a/b".into()))]),
            NONE
        );
    }

    #[test]
    fn notes_name_actions_grpc_cannot_serve_and_ignored_retry_codes() {
        let mut redirect = to_cluster(PathSpecifier::Prefix("/".into()));
        redirect.action = Some(Action::Redirect(RedirectAction::default()));
        assert_eq!(
            notes(vec![redirect]),
            [format!(
                "{R0}.redirect: every call this route matches fails with UNAVAILABLE: gRPC has no such action"
            )]
        );
        let retry = |retry_on: &str| {
            with_retry(RetryPolicy {
                retry_on: retry_on.into(),
                ..Default::default()
            })
        };
        assert_eq!(
            notes(vec![retry("5xx,unavailable,retriable-status-codes")]),
            [format!(
                "{R0}.route.retry_policy.retry_on: gRPC ignores 5xx,retriable-status-codes: it retries only on cancelled,deadline-exceeded,internal,resource-exhausted,unavailable"
            )]
        );
        assert_eq!(notes(vec![retry("unavailable,cancelled")]), NONE);
    }

    #[test]
    fn case_insensitive_matching_and_non_forwarding_actions_are_accepted() {
        use envoy_types::pb::envoy::config::route::v3::NonForwardingAction;
        let mut route = to_cluster(PathSpecifier::Prefix("/shop.Cart/".into()));
        if let Some(m) = &mut route.r#match {
            m.case_sensitive = Some(envoy_types::pb::google::protobuf::BoolValue { value: false });
        }
        assert_eq!(check(vec![route.clone()]), NONE);
        route.action = Some(Action::NonForwardingAction(NonForwardingAction::default()));
        assert_eq!(check(vec![route.clone()]), NONE);
        assert_eq!(notes(vec![route]), NONE);
    }
}
