//! The rules Envoy enforces in code, not in its proto descriptors, for what Lanyard emits: a
//! resource that breaks one is NACKed although every `validate` annotation holds.
//!
//! - Every `RegexMatcher` compiles in RE2 within `re2.max_program_size.error_level` (default
//!   100). Envoy: source/common/common/regex.cc (CompiledGoogleReMatcher).
//! - A `StringMatcher` with `safe_regex` does not set `ignore_case`. Envoy:
//!   source/common/common/matchers.h (StringMatcherImpl).
//! - Header mutations neither add nor remove `host` or a `:`-prefixed name; `append` and
//!   `append_action` are not both set; values are formatter strings (a literal `%` is `%%`).
//!   Envoy: source/common/router/header_parser.cc (HeaderParser::configure, HeadersToAddEntry),
//!   source/common/http/header_utility.cc (isModifiableHeader, isRemovableHeader),
//!   source/common/formatter/substitution_formatter.cc (SubstitutionFormatParser::parse).
//! - Weighted clusters have weights whose sum is above 0 and fits in 32 bits; no domain appears
//!   twice in a route configuration and `*` at most once. Envoy:
//!   source/common/router/config_impl.cc (WeightedClustersConfig, RouteMatcher).
//!
//! - An `ORIGINAL_DST` cluster uses the `CLUSTER_PROVIDED` load balancer and has no load
//!   assignment. Envoy: source/extensions/clusters/original_dst/original_dst_cluster.cc
//!   (OriginalDstClusterFactory::createClusterImpl).
//!
//! Paths are protobuf field names from the resource's root, as [`Violation`] describes.

use std::collections::HashSet;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter::ConfigType};
use envoy_types::pb::envoy::config::route::v3::{
    FilterConfig, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route, RouteAction,
    RouteConfiguration, VirtualHost, WeightedCluster, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, redirect_action::PathRewriteSpecifier,
    route::Action, route_action::ClusterSpecifier, route_action::HostRewriteSpecifier,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, regex_matcher::EngineType, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::Violation;

/// What Envoy refuses in code about a route configuration.
pub fn check_route_configuration(config: &RouteConfiguration) -> Vec<Violation> {
    let mut c = Checker::default();
    c.route_configuration("", config);
    c.out
}

/// What Envoy refuses in code about the route configurations a listener carries inline, in
/// its HTTP connection managers (filter chains and API listener).
pub fn check_listener(listener: &Listener) -> Vec<Violation> {
    let mut c = Checker::default();
    let chains = listener
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, chain)| (format!("filter_chains[{i}]"), chain))
        .chain(
            listener
                .default_filter_chain
                .iter()
                .map(|chain| ("default_filter_chain".to_string(), chain)),
        );
    for (at, chain) in chains {
        for (j, filter) in chain.filters.iter().enumerate() {
            c.network_filter(&format!("{at}.filters[{j}]"), filter);
        }
    }
    if let Some(api) = listener
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
    {
        c.hcm_any("api_listener.api_listener", api);
    }
    c.out
}

/// What Envoy refuses in code about a cluster.
pub fn check_cluster(cluster: &Cluster) -> Vec<Violation> {
    let mut out = Vec::new();
    let original_dst = matches!(
        cluster.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::OriginalDst as i32
    );
    if !original_dst {
        return out;
    }
    if cluster.lb_policy != LbPolicy::ClusterProvided as i32 {
        let policy = LbPolicy::try_from(cluster.lb_policy).map_or_else(
            |_| cluster.lb_policy.to_string(),
            |p| p.as_str_name().to_string(),
        );
        out.push(Violation::new(
            "lb_policy",
            format!(
                "cluster: LB policy {policy} is not valid for Cluster type ORIGINAL_DST. Only \
                 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'"
            ),
        ));
    }
    if cluster.load_assignment.is_some() {
        out.push(Violation::new(
            "load_assignment",
            "ORIGINAL_DST clusters must have no load assignment configured",
        ));
    }
    out
}

/// Whether Envoy parses `value` as a header value: text where `%` starts a `%COMMAND%`,
/// `%COMMAND(arg)%` or `%COMMAND(arg):N%` and `%%` is a literal `%`. The command name itself is
/// not checked (Envoy's list depends on its build and extensions). `Err` has Envoy's message.
///
/// Envoy: source/common/formatter/substitution_formatter.cc (SubstitutionFormatParser::parse,
/// commandWithArgsRegex `^%((?:[A-Z]|[0-9]|_)+)(?:\((.*?)\))?(?::([0-9]+))?%`).
pub fn check_header_value(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes[pos] != b'%' {
            pos += 1;
        } else if bytes.get(pos + 1) == Some(&b'%') {
            pos += 2;
        } else {
            match command_len(&bytes[pos..]) {
                Some(len) => pos += len,
                None => {
                    return Err(format!(
                        "Incorrect configuration: {value}. Couldn't find valid command at position {pos}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The length of the command `s` starts with (at its `%`), as Envoy's regex consumes it:
/// the shortest argument whose `)` is followed by an optional `:digits` and `%`. The argument
/// is RE2's `.*?`, which does not cross a newline.
fn command_len(s: &[u8]) -> Option<usize> {
    let name = s
        .iter()
        .skip(1)
        .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b'_')
        .count();
    if name == 0 {
        return None;
    }
    let after = 1 + name;
    if s.get(after) == Some(&b'(') {
        for (k, &b) in s.iter().enumerate().skip(after + 1) {
            if b == b'\n' {
                return None;
            }
            if b == b')'
                && let Some(end) = length_and_close(s, k + 1)
            {
                return Some(end);
            }
        }
        return None;
    }
    length_and_close(s, after)
}

/// `(?::[0-9]+)?%` at `s[at..]`: the end of the command, past its `%`.
fn length_and_close(s: &[u8], at: usize) -> Option<usize> {
    let mut at = at;
    if s.get(at) == Some(&b':') {
        let digits = s[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 {
            at += 1 + digits;
        }
    }
    (s.get(at) == Some(&b'%')).then_some(at + 1)
}

#[derive(Default)]
struct Checker {
    out: Vec<Violation>,
}

impl Checker {
    fn push(&mut self, path: String, message: impl Into<String>) {
        self.out.push(Violation::new(path, message));
    }

    fn network_filter(&mut self, at: &str, filter: &Filter) {
        if let Some(ConfigType::TypedConfig(any)) = &filter.config_type {
            self.hcm_any(&format!("{at}.typed_config"), any);
        }
    }

    /// An `Any` that may hold an HTTP connection manager with an inline route configuration.
    fn hcm_any(&mut self, at: &str, any: &Any) {
        if any.type_url != HttpConnectionManager::type_url() {
            return;
        }
        // One that does not decode is the descriptor checks' to report.
        let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
            return;
        };
        if let Some(RouteSpecifier::RouteConfig(config)) = &hcm.route_specifier {
            let at = format!(
                "{at}{{{}}}.route_config.",
                HttpConnectionManager::full_name()
            );
            self.route_configuration(&at, config);
        }
    }

    /// `at` is empty for the resource itself, else a path ending in `.`.
    fn route_configuration(&mut self, at: &str, config: &RouteConfiguration) {
        self.header_mutations(
            at,
            [
                ("request_headers_to_add", &config.request_headers_to_add),
                ("response_headers_to_add", &config.response_headers_to_add),
            ],
            [
                (
                    "request_headers_to_remove",
                    &config.request_headers_to_remove,
                ),
                (
                    "response_headers_to_remove",
                    &config.response_headers_to_remove,
                ),
            ],
        );
        self.domains(at, config);
        for (i, vhost) in config.virtual_hosts.iter().enumerate() {
            self.virtual_host(&format!("{at}virtual_hosts[{i}]."), vhost);
        }
    }

    /// Envoy: source/common/router/config_impl.cc (RouteMatcher::RouteMatcher). Domains are
    /// compared lower-cased, across every virtual host of the configuration.
    fn domains(&mut self, at: &str, config: &RouteConfiguration) {
        let mut seen = HashSet::new();
        let mut wildcard = false;
        for (i, vhost) in config.virtual_hosts.iter().enumerate() {
            for (j, domain) in vhost.domains.iter().enumerate() {
                let path = format!("{at}virtual_hosts[{i}].domains[{j}]");
                if domain == "*" {
                    if wildcard {
                        self.push(
                            path,
                            format!(
                                "Only a single wildcard domain is permitted in route {}",
                                config.name
                            ),
                        );
                    }
                    wildcard = true;
                } else if !seen.insert(domain.to_ascii_lowercase()) {
                    self.push(
                        path,
                        format!(
                            "Only unique values for domains are permitted. Duplicate entry of \
                             domain {domain} in route {}",
                            config.name
                        ),
                    );
                }
            }
        }
    }

    fn virtual_host(&mut self, at: &str, vhost: &VirtualHost) {
        self.header_mutations(
            at,
            [
                ("request_headers_to_add", &vhost.request_headers_to_add),
                ("response_headers_to_add", &vhost.response_headers_to_add),
            ],
            [
                (
                    "request_headers_to_remove",
                    &vhost.request_headers_to_remove,
                ),
                (
                    "response_headers_to_remove",
                    &vhost.response_headers_to_remove,
                ),
            ],
        );
        self.per_filter_configs(at, &vhost.typed_per_filter_config);
        for (i, route) in vhost.routes.iter().enumerate() {
            self.route(&format!("{at}routes[{i}]."), route);
        }
    }

    fn route(&mut self, at: &str, route: &Route) {
        if let Some(m) = &route.r#match {
            if let Some(PathSpecifier::SafeRegex(re)) = &m.path_specifier {
                self.regex(&format!("{at}match.safe_regex."), re);
            }
            for (i, h) in m.headers.iter().enumerate() {
                self.header_matcher(&format!("{at}match.headers[{i}]."), h);
            }
            for (i, q) in m.query_parameters.iter().enumerate() {
                self.query_matcher(&format!("{at}match.query_parameters[{i}]."), q);
            }
        }
        match &route.action {
            Some(Action::Route(action)) => self.route_action(&format!("{at}route."), action),
            Some(Action::Redirect(redirect)) => {
                self.redirect(&format!("{at}redirect."), redirect);
            }
            _ => {}
        }
        self.header_mutations(
            at,
            [
                ("request_headers_to_add", &route.request_headers_to_add),
                ("response_headers_to_add", &route.response_headers_to_add),
            ],
            [
                (
                    "request_headers_to_remove",
                    &route.request_headers_to_remove,
                ),
                (
                    "response_headers_to_remove",
                    &route.response_headers_to_remove,
                ),
            ],
        );
        self.per_filter_configs(at, &route.typed_per_filter_config);
    }

    fn header_matcher(&mut self, at: &str, h: &HeaderMatcher) {
        match &h.header_match_specifier {
            #[allow(deprecated)]
            Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => {
                self.regex(&format!("{at}safe_regex_match."), re);
            }
            Some(HeaderMatchSpecifier::StringMatch(m)) => {
                self.string_matcher(&format!("{at}string_match."), m);
            }
            _ => {}
        }
    }

    fn query_matcher(&mut self, at: &str, q: &QueryParameterMatcher) {
        if let Some(QueryParameterMatchSpecifier::StringMatch(m)) =
            &q.query_parameter_match_specifier
        {
            self.string_matcher(&format!("{at}string_match."), m);
        }
    }

    fn route_action(&mut self, at: &str, action: &RouteAction) {
        if let Some(rewrite) = &action.regex_rewrite
            && let Some(re) = &rewrite.pattern
        {
            self.regex(&format!("{at}regex_rewrite.pattern."), re);
        }
        if let Some(HostRewriteSpecifier::HostRewritePathRegex(rewrite)) =
            &action.host_rewrite_specifier
            && let Some(re) = &rewrite.pattern
        {
            self.regex(&format!("{at}host_rewrite_path_regex.pattern."), re);
        }
        if let Some(ClusterSpecifier::WeightedClusters(weighted)) = &action.cluster_specifier {
            self.weighted_clusters(&format!("{at}weighted_clusters"), weighted);
        }
    }

    /// Envoy: source/common/router/config_impl.cc (WeightedClustersConfig).
    fn weighted_clusters(&mut self, at: &str, weighted: &WeightedCluster) {
        let sum: u64 = weighted
            .clusters
            .iter()
            .map(|c| c.weight.as_ref().map_or(0, |w| u64::from(w.value)))
            .sum();
        if sum == 0 {
            self.push(
                at.to_string(),
                "Sum of weights in the weighted_cluster must be greater than 0.",
            );
        } else if sum > u64::from(u32::MAX) {
            self.push(
                at.to_string(),
                format!(
                    "The sum of weights of all weighted clusters of route exceeds {}",
                    u32::MAX
                ),
            );
        }
        for (i, cluster) in weighted.clusters.iter().enumerate() {
            let at = format!("{at}.clusters[{i}].");
            self.header_mutations(
                &at,
                [
                    ("request_headers_to_add", &cluster.request_headers_to_add),
                    ("response_headers_to_add", &cluster.response_headers_to_add),
                ],
                [
                    (
                        "request_headers_to_remove",
                        &cluster.request_headers_to_remove,
                    ),
                    (
                        "response_headers_to_remove",
                        &cluster.response_headers_to_remove,
                    ),
                ],
            );
            self.per_filter_configs(&at, &cluster.typed_per_filter_config);
        }
    }

    fn redirect(&mut self, at: &str, redirect: &RedirectAction) {
        if let Some(PathRewriteSpecifier::RegexRewrite(rewrite)) = &redirect.path_rewrite_specifier
            && let Some(re) = &rewrite.pattern
        {
            self.regex(&format!("{at}regex_rewrite.pattern."), re);
        }
    }

    /// The CORS policies among `typed_per_filter_config` values, bare or in a `FilterConfig`.
    fn per_filter_configs(&mut self, at: &str, configs: &std::collections::HashMap<String, Any>) {
        let mut names: Vec<&String> = configs.keys().collect();
        names.sort();
        for name in names {
            let any = &configs[name];
            let at = format!("{at}typed_per_filter_config[{name:?}]");
            if any.type_url == FilterConfig::type_url() {
                if let Ok(fc) = FilterConfig::decode(any.value.as_slice())
                    && let Some(inner) = &fc.config
                {
                    let at = format!("{at}{{{}}}.config", FilterConfig::full_name());
                    self.cors_any(&at, inner);
                }
            } else {
                self.cors_any(&at, any);
            }
        }
    }

    fn cors_any(&mut self, at: &str, any: &Any) {
        if any.type_url != CorsPolicy::type_url() {
            return;
        }
        if let Ok(policy) = CorsPolicy::decode(any.value.as_slice()) {
            for (i, m) in policy.allow_origin_string_match.iter().enumerate() {
                let at = format!(
                    "{at}{{{}}}.allow_origin_string_match[{i}].",
                    CorsPolicy::full_name()
                );
                self.string_matcher(&at, m);
            }
        }
    }

    /// Envoy: source/common/common/matchers.h (StringMatcherImpl).
    fn string_matcher(&mut self, at: &str, m: &StringMatcher) {
        if let Some(MatchPattern::SafeRegex(re)) = &m.match_pattern {
            if m.ignore_case {
                self.push(
                    format!("{at}ignore_case"),
                    "ignore_case has no effect for safe_regex.",
                );
            }
            self.regex(&format!("{at}safe_regex."), re);
        }
    }

    /// `at` ends in `.`: the path of the `RegexMatcher`.
    fn regex(&mut self, at: &str, re: &RegexMatcher) {
        // The deprecated per-matcher limit replaces the runtime one when it is set.
        #[allow(deprecated)]
        let own_limit = match &re.engine_type {
            Some(EngineType::GoogleRe2(g)) => g.max_program_size.as_ref().map(|v| v.value),
            None => None,
        };
        let result = match own_limit {
            None => lanyard_re2::check_for_envoy(&re.regex),
            Some(limit) => match lanyard_re2::Regex::new(&re.regex) {
                Err(e) => Err(e.to_string()),
                Ok(compiled) if compiled.program_size() > limit as usize => Err(format!(
                    "regex '{}' RE2 program size of {} > max program size of {limit}. \
                     Increase configured max program size if necessary.",
                    re.regex,
                    compiled.program_size()
                )),
                Ok(_) => Ok(()),
            },
        };
        if let Err(message) = result {
            self.push(format!("{at}regex"), message);
        }
    }

    /// Envoy: source/common/router/header_parser.cc (HeaderParser::configure and
    /// HeadersToAddEntry) with source/common/http/header_utility.cc (isModifiableHeader,
    /// isRemovableHeader): neither `host` (any case) nor a `:`-prefixed name.
    fn header_mutations<'a>(
        &mut self,
        at: &str,
        adds: [(&str, &'a Vec<HeaderValueOption>); 2],
        removes: [(&str, &'a Vec<String>); 2],
    ) {
        for (field, options) in adds {
            for (i, option) in options.iter().enumerate() {
                let at = format!("{at}{field}[{i}]");
                // `append` is deprecated, which is why Envoy refuses it beside `append_action`.
                #[allow(deprecated)]
                let append = option.append.is_some();
                if append && option.append_action != HeaderAppendAction::AppendIfExistsOrAdd as i32
                {
                    self.push(
                        format!("{at}.append"),
                        "Both append and append_action are set and it's not allowed",
                    );
                }
                let Some(header) = &option.header else {
                    continue;
                };
                if !modifiable(&header.key) {
                    self.push(
                        format!("{at}.header.key"),
                        ":-prefixed or host headers may not be modified",
                    );
                }
                if let Err(message) = check_header_value(&header.value) {
                    self.push(format!("{at}.header.value"), message);
                }
            }
        }
        for (field, names) in removes {
            for (i, name) in names.iter().enumerate() {
                if !modifiable(name) {
                    self.push(
                        format!("{at}{field}[{i}]"),
                        ":-prefixed or host headers may not be removed",
                    );
                }
            }
        }
    }
}

/// Envoy: source/common/http/header_utility.cc (isModifiableHeader, isRemovableHeader).
fn modifiable(name: &str) -> bool {
    !name.starts_with(':') && !name.eq_ignore_ascii_case("host")
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::HeaderValue;
    use envoy_types::pb::envoy::config::listener::v3::{ApiListener, FilterChain};
    use envoy_types::pb::envoy::config::route::v3::{RouteMatch, weighted_cluster::ClusterWeight};
    use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
    use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

    use super::*;
    use crate::protobuf::any;

    fn mk_regex(regex: &str) -> RegexMatcher {
        RegexMatcher {
            regex: regex.to_string(),
            ..Default::default()
        }
    }

    fn mk_header(key: &str, value: &str) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: key.to_string(),
                value: value.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn mk_config(routes: Vec<Route>) -> RouteConfiguration {
        RouteConfiguration {
            name: "rc".into(),
            virtual_hosts: vec![VirtualHost {
                name: "vh".into(),
                domains: vec!["*".into()],
                routes,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn mk_route(path: PathSpecifier) -> Route {
        Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(path),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn paths(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.path.as_str()).collect()
    }

    #[test]
    fn route_regexes_compile_in_re2_within_the_program_size() {
        let mut ok = mk_route(PathSpecifier::SafeRegex(mk_regex("/api/.*")));
        ok.r#match.as_mut().unwrap().headers = vec![HeaderMatcher {
            name: "x-a".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::SafeRegex(mk_regex("(?x)a b"))),
                ..Default::default()
            })),
            ..Default::default()
        }];
        ok.r#match.as_mut().unwrap().query_parameters = vec![QueryParameterMatcher {
            name: "q".into(),
            query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                StringMatcher {
                    match_pattern: Some(MatchPattern::SafeRegex(mk_regex("[a-z&&b]"))),
                    ignore_case: true,
                },
            )),
        }];
        let big = mk_route(PathSpecifier::SafeRegex(mk_regex("/[a-z]{1,60}")));
        let mut rewrite = mk_route(PathSpecifier::Prefix("/".into()));
        rewrite.action = Some(Action::Route(RouteAction {
            regex_rewrite: Some(RegexMatchAndSubstitute {
                pattern: Some(mk_regex("(?R)")),
                substitution: "/".into(),
            }),
            ..Default::default()
        }));
        let mut redirect = mk_route(PathSpecifier::Prefix("/".into()));
        redirect.action = Some(Action::Redirect(RedirectAction {
            path_rewrite_specifier: Some(PathRewriteSpecifier::RegexRewrite(
                RegexMatchAndSubstitute {
                    pattern: Some(mk_regex("^/old(/.*)?$")),
                    substitution: "/new\\1".into(),
                },
            )),
            ..Default::default()
        }));
        let v = check_route_configuration(&mk_config(vec![ok, big, rewrite, redirect]));
        assert_eq!(
            paths(&v),
            [
                "virtual_hosts[0].routes[0].match.headers[0].string_match.safe_regex.regex",
                "virtual_hosts[0].routes[0].match.query_parameters[0].string_match.ignore_case",
                "virtual_hosts[0].routes[1].match.safe_regex.regex",
                "virtual_hosts[0].routes[2].route.regex_rewrite.pattern.regex",
            ]
        );
        assert_eq!(v[0].message, "invalid perl operator: (?x");
        assert_eq!(v[1].message, "ignore_case has no effect for safe_regex.");
        assert!(
            v[2].message.starts_with(
                "regex '/[a-z]{1,60}' RE2 program size of 124 > max program size of 100"
            ),
            "{}",
            v[2].message
        );
    }

    #[test]
    fn cors_origin_regexes_inside_filter_configs() {
        let policy = CorsPolicy {
            allow_origin_string_match: vec![
                StringMatcher {
                    match_pattern: Some(MatchPattern::SafeRegex(mk_regex("^https://[^/]+$"))),
                    ..Default::default()
                },
                StringMatcher {
                    match_pattern: Some(MatchPattern::SafeRegex(mk_regex("(?x)bad"))),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut route = mk_route(PathSpecifier::Prefix("/".into()));
        route.typed_per_filter_config = [(
            "envoy.filters.http.cors".to_string(),
            any(&FilterConfig {
                config: Some(any(&policy)),
                is_optional: true,
                disabled: false,
            }),
        )]
        .into();
        let v = check_route_configuration(&mk_config(vec![route]));
        assert_eq!(
            paths(&v),
            [
                "virtual_hosts[0].routes[0].typed_per_filter_config[\"envoy.filters.http.cors\"]\
                 {envoy.config.route.v3.FilterConfig}.config\
                 {envoy.extensions.filters.http.cors.v3.CorsPolicy}\
                 .allow_origin_string_match[1].safe_regex.regex"
            ]
        );
    }

    #[test]
    fn host_and_pseudo_headers_are_neither_added_nor_removed() {
        let mut route = mk_route(PathSpecifier::Prefix("/".into()));
        route.request_headers_to_add = vec![
            mk_header("x-ok", "1"),
            mk_header("Host", "a"),
            mk_header(":authority", "a"),
        ];
        route.response_headers_to_remove = vec!["server".into(), "HOST".into(), ":status".into()];
        route.action = Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: vec![ClusterWeight {
                    name: "c".into(),
                    weight: Some(UInt32Value { value: 1 }),
                    request_headers_to_remove: vec![":path".into()],
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }));
        let mut config = mk_config(vec![route]);
        config.virtual_hosts[0].response_headers_to_add = vec![mk_header(":status", "200")];
        config.request_headers_to_remove = vec!["host".into()];
        let v = check_route_configuration(&config);
        let view: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.path.as_str(), v.message.as_str()))
            .collect();
        assert_eq!(
            view,
            [
                (
                    "request_headers_to_remove[0]",
                    ":-prefixed or host headers may not be removed"
                ),
                (
                    "virtual_hosts[0].response_headers_to_add[0].header.key",
                    ":-prefixed or host headers may not be modified"
                ),
                (
                    "virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].request_headers_to_remove[0]",
                    ":-prefixed or host headers may not be removed"
                ),
                (
                    "virtual_hosts[0].routes[0].request_headers_to_add[1].header.key",
                    ":-prefixed or host headers may not be modified"
                ),
                (
                    "virtual_hosts[0].routes[0].request_headers_to_add[2].header.key",
                    ":-prefixed or host headers may not be modified"
                ),
                (
                    "virtual_hosts[0].routes[0].response_headers_to_remove[1]",
                    ":-prefixed or host headers may not be removed"
                ),
                (
                    "virtual_hosts[0].routes[0].response_headers_to_remove[2]",
                    ":-prefixed or host headers may not be removed"
                ),
            ]
        );
    }

    #[test]
    #[allow(deprecated)]
    fn append_and_append_action_together() {
        let mut both = mk_header("x-a", "1");
        both.append = Some(BoolValue { value: true });
        both.append_action = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        let mut legacy = mk_header("x-b", "1");
        legacy.append = Some(BoolValue { value: false });
        let mut config = mk_config(vec![]);
        config.response_headers_to_add = vec![both, legacy];
        let v = check_route_configuration(&config);
        assert_eq!(paths(&v), ["response_headers_to_add[0].append"]);
    }

    #[test]
    fn header_values_are_formatter_strings() {
        for ok in [
            "",
            "plain",
            "50%%",
            "a%%b",
            "%REQ(x-a)%",
            "%REQ(:AUTHORITY)%",
            "%START_TIME(%s)%",
            "%REQ(x-a):10%",
            "%UPSTREAM_REMOTE_ADDRESS%-%PROTOCOL%",
            "%REQ(a)b)%",
        ] {
            assert_eq!(check_header_value(ok), Ok(()), "{ok:?}");
        }
        for (bad, pos) in [
            ("50%", 2),
            ("%", 0),
            ("a%b", 1),
            ("%req(x)%", 0),
            ("%REQ(x", 0),
            ("%REQ(x)", 0),
            ("%REQ%%x%", 5),
            ("%REQ(x):%", 0),
            ("%REQ(x):1a%", 0),
            ("%%%", 2),
        ] {
            assert_eq!(
                check_header_value(bad),
                Err(format!(
                    "Incorrect configuration: {bad}. Couldn't find valid command at position {pos}"
                )),
                "{bad:?}"
            );
        }
        let mut config = mk_config(vec![]);
        config.virtual_hosts[0].request_headers_to_add = vec![mk_header("x-a", "50%")];
        let v = check_route_configuration(&config);
        assert_eq!(
            paths(&v),
            ["virtual_hosts[0].request_headers_to_add[0].header.value"]
        );
    }

    #[test]
    fn weighted_cluster_sums_and_domains() {
        let weighted = |weights: &[u32]| {
            let mut route = mk_route(PathSpecifier::Prefix("/".into()));
            route.action = Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: weights
                        .iter()
                        .map(|w| ClusterWeight {
                            name: "c".into(),
                            weight: Some(UInt32Value { value: *w }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })),
                ..Default::default()
            }));
            route
        };
        let mut config = mk_config(vec![
            weighted(&[0, 1]),
            weighted(&[0, 0]),
            weighted(&[u32::MAX, 1]),
        ]);
        config.virtual_hosts.push(VirtualHost {
            name: "b".into(),
            domains: vec!["*".into(), "a.example".into(), "A.example".into()],
            ..Default::default()
        });
        let v = check_route_configuration(&config);
        let view: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.path.as_str(), v.message.as_str()))
            .collect();
        assert_eq!(
            view,
            [
                (
                    "virtual_hosts[1].domains[0]",
                    "Only a single wildcard domain is permitted in route rc"
                ),
                (
                    "virtual_hosts[1].domains[2]",
                    "Only unique values for domains are permitted. Duplicate entry of domain \
                     A.example in route rc"
                ),
                (
                    "virtual_hosts[0].routes[1].route.weighted_clusters",
                    "Sum of weights in the weighted_cluster must be greater than 0."
                ),
                (
                    "virtual_hosts[0].routes[2].route.weighted_clusters",
                    "The sum of weights of all weighted clusters of route exceeds 4294967295"
                ),
            ]
        );
    }

    /// What the translator writes passes these checks: its generated regexes (prefixes on h2c
    /// ports, rewrites, CORS origins with characters `regex::escape` escapes) compile in RE2,
    /// and header values with `%` or empty ones are written as Envoy reads them.
    #[test]
    fn translated_resources_pass() {
        use lanyard_model::{
            Cors, HeaderMatch, HeaderModifier, PathMatch, PathRewrite, Protocol, Redirect,
            RequestMatch, StringMatch, UrlRewrite,
        };

        use crate::fixtures::{
            forward_to, mk_model, mk_route, mk_service, mk_table, mk_workload, rich_model,
            set_producer, spk,
        };
        use crate::{ProxyRef, XdsOptions, translate};

        let mut model = mk_model(
            vec![mk_service(
                "a",
                "web",
                &["10.0.0.1"],
                &[(80, Protocol::Http), (81, Protocol::Http2)],
            )],
            vec![mk_workload("a", "pod", &[(80, Protocol::Http)])],
        );
        let target = forward_to(&[(spk("a", "web", 80), 1)]);
        let mut routes = vec![
            mk_route(PathMatch::Prefix("/a-b.c~d#e&f".into()), target.clone()),
            mk_route(PathMatch::Regex("/v[0-9]+/.*".into()), target.clone()),
            mk_route(
                PathMatch::Prefix("/strip".into()),
                lanyard_model::Action::Redirect(Redirect {
                    scheme: None,
                    hostname: None,
                    path: Some(PathRewrite::Prefix(String::new())),
                    port: None,
                    status: 302,
                }),
            ),
        ];
        let mut rewrite = mk_route(PathMatch::Prefix("/old-path".into()), target.clone());
        if let lanyard_model::Action::Forward(forward) = &mut rewrite.action {
            forward.rewrite = Some(UrlRewrite {
                hostname: None,
                path: Some(PathRewrite::Prefix(String::new())),
            });
        }
        rewrite.request_headers = HeaderModifier {
            set: vec![
                ("x-pct".into(), "50%".into()),
                ("x-empty".into(), String::new()),
            ],
            add: vec![("x-fmt".into(), "%REQ(x)%".into())],
            remove: vec!["x-gone".into()],
        };
        rewrite.matcher = RequestMatch {
            headers: vec![HeaderMatch {
                name: "x-v".into(),
                value: StringMatch::Regex("v[0-9]+".into()),
            }],
            ..rewrite.matcher
        };
        rewrite.cors = Some(Cors {
            allow_origins: vec![
                "*".into(),
                "https://*.ex-am~ple.com".into(),
                "http://a.b:8080".into(),
            ],
            allow_methods: vec!["GET".into()],
            allow_headers: vec![],
            expose_headers: vec![],
            allow_credentials: false,
            max_age_seconds: None,
        });
        routes.push(rewrite);
        set_producer(&mut model, spk("a", "web", 80), mk_table(routes.clone()));
        set_producer(&mut model, spk("a", "web", 81), mk_table(routes));

        for model in [model, rich_model()] {
            let mesh = translate(&model, &XdsOptions::default());
            for (namespace, workload) in [("a", Some("pod")), ("shop", Some("cart-0")), ("x", None)]
            {
                let proxy = ProxyRef {
                    namespace: lanyard_model::NamespaceName::new(namespace),
                    workload: workload.map(|w| lanyard_model::WorkloadKey::new(namespace, w)),
                    kind: crate::node::ProxyKind::Envoy,
                };
                let resources = mesh.for_proxy(&proxy);
                assert!(!resources.routes.is_empty());
                for config in &resources.routes {
                    assert_eq!(check_route_configuration(config), [], "{}", config.name);
                }
                for listener in &resources.listeners {
                    assert_eq!(check_listener(listener), [], "{}", listener.name);
                }
                for cluster in &resources.clusters {
                    assert_eq!(check_cluster(cluster), [], "{}", cluster.name);
                }
            }
        }
    }

    #[test]
    fn original_dst_clusters() {
        use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

        let mk_cluster = |kind: DiscoveryType, lb: LbPolicy| Cluster {
            name: "c".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
            lb_policy: lb as i32,
            ..Default::default()
        };
        assert_eq!(
            check_cluster(&mk_cluster(
                DiscoveryType::OriginalDst,
                LbPolicy::ClusterProvided
            )),
            []
        );
        assert_eq!(
            check_cluster(&mk_cluster(DiscoveryType::Eds, LbPolicy::RoundRobin)),
            []
        );
        let mut bad = mk_cluster(DiscoveryType::OriginalDst, LbPolicy::RoundRobin);
        bad.load_assignment = Some(ClusterLoadAssignment::default());
        assert_eq!(
            check_cluster(&bad),
            [
                Violation::new(
                    "lb_policy",
                    "cluster: LB policy ROUND_ROBIN is not valid for Cluster type ORIGINAL_DST. \
                     Only 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'"
                ),
                Violation::new(
                    "load_assignment",
                    "ORIGINAL_DST clusters must have no load assignment configured"
                ),
            ]
        );
    }

    #[test]
    fn inline_route_configurations_of_listeners() {
        let mut config = mk_config(vec![]);
        config.request_headers_to_remove = vec![":path".into()];
        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::RouteConfig(config)),
            ..Default::default()
        };
        let listener = Listener {
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".into(),
                    config_type: Some(ConfigType::TypedConfig(any(&hcm))),
                }],
                ..Default::default()
            }],
            api_listener: Some(ApiListener {
                api_listener: Some(any(&hcm)),
            }),
            ..Default::default()
        };
        let hcm_name =
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
        assert_eq!(
            paths(&check_listener(&listener)),
            [
                format!(
                    "filter_chains[0].filters[0].typed_config{{{hcm_name}}}.route_config.request_headers_to_remove[0]"
                ),
                format!(
                    "api_listener.api_listener{{{hcm_name}}}.route_config.request_headers_to_remove[0]"
                ),
            ]
        );
    }
}
