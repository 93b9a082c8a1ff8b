//! What an Envoy sidecar would do with one request, read off the xDS resources it was given.
//!
//! No Envoy binary can run on these machines, so the conformance expectations are checked by
//! walking the same resources Envoy would get, with Envoy's documented semantics: the
//! original-destination hand-off from the outbound capture listener to the listener bound
//! (without binding) to the dialled `ip:port`, RDS, virtual-host and route matching in order,
//! weighted clusters, header mutations, rewrites, redirects, direct responses, and
//! `cluster_not_found_response_code`. Only the parts of Envoy that Lanyard's output uses are
//! modelled; anything else makes the walk fail loudly instead of guessing.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RedirectAction, RouteAction, RouteConfiguration, VirtualHost, header_matcher,
    query_parameter_matcher, redirect_action, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use prost::Message;

#[cfg(test)]
mod envoy_fidelity_tests;

/// The resources one proxy holds.
pub struct ProxyConfig<'a> {
    pub listeners: Vec<&'a Listener>,
    pub routes: Vec<&'a RouteConfiguration>,
    pub clusters: Vec<&'a Cluster>,
    pub endpoints: Vec<&'a ClusterLoadAssignment>,
}

/// A request as the application sends it: the connection goes to `destination`, the HTTP
/// request carries `authority`, `method`, `path` (with the query) and `headers`.
#[derive(Clone, Debug)]
pub struct Request {
    pub destination: (IpAddr, u16),
    pub authority: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// What happened to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Forwarded over HTTP to one of `backends` (cluster, weight), chosen by weight.
    Forwarded {
        backends: Vec<Forwarded>,
        /// Response headers the route adds or removes, before the cluster-level ones.
        response_headers: HeaderChanges,
    },
    /// Answered by the proxy itself.
    Responded {
        status: u16,
        response_headers: HeaderChanges,
    },
    /// Redirected.
    Redirected { status: u16, location: String },
    /// Not HTTP-routed: the connection went through as TCP to this cluster.
    Tunnelled { cluster: String },
}

/// One weighted backend of a forwarded request, with the request as it leaves the proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct Forwarded {
    pub cluster: String,
    pub weight: u32,
    /// `None` when the cluster does not exist: the request gets `cluster_not_found` status.
    pub not_found_status: Option<u16>,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub response_headers: HeaderChanges,
}

/// Response header mutations (`set` replaces, `append` adds a value, `remove` deletes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderChanges {
    pub set: Vec<(String, String)>,
    pub append: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderChanges {
    /// Applies the changes to a response's headers.
    pub fn apply(&self, headers: &mut Vec<(String, String)>) {
        apply_mutations(headers, &self.remove, &self.set, &self.append);
    }

    fn extend(&mut self, other: &HeaderChanges) {
        self.set.extend(other.set.iter().cloned());
        self.append.extend(other.append.iter().cloned());
        self.remove.extend(other.remove.iter().cloned());
    }
}

/// Follows a request through the proxy's configuration.
pub fn simulate(config: &ProxyConfig<'_>, request: &Request) -> Result<Outcome, String> {
    let listener = listener_for(config, request.destination)?;
    let chain = filter_chain(listener, request.destination)?;
    let network = chain
        .filters
        .last()
        .ok_or_else(|| format!("listener {} has an empty filter chain", listener.name))?;
    let Some(filter::ConfigType::TypedConfig(any)) = &network.config_type else {
        return Err(format!("filter {} has no typed config", network.name));
    };
    if any.type_url.ends_with("tcp_proxy.v3.TcpProxy") {
        let proxy = TcpProxy::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
        let Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)) = proxy.cluster_specifier else {
            return Err("tcp_proxy without a cluster".into());
        };
        return Ok(Outcome::Tunnelled { cluster });
    }
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
    let inline;
    let route_config = match &hcm.route_specifier {
        Some(http_connection_manager::RouteSpecifier::Rds(rds)) => config
            .routes
            .iter()
            .copied()
            .find(|r| r.name == rds.route_config_name)
            .ok_or_else(|| format!("RDS {} was not sent", rds.route_config_name))?,
        Some(http_connection_manager::RouteSpecifier::RouteConfig(r)) => {
            inline = r.clone();
            &inline
        }
        _ => return Err("HttpConnectionManager without routes".into()),
    };
    rejection(route_config).map_or(Ok(()), Err)?;
    route_request(config, route_config, request)
}

/// The listener that gets a connection to `ip:port` captured by the outbound listener
/// (`use_original_dst`): the one bound (or not bound) to exactly that address, else the one on
/// the wildcard address and that port (`0.0.0.0:port`, `[::]:port` for IPv6), else the capture
/// listener itself. Envoy v1.36 source/common/listener_manager/connection_handler_impl.cc
/// (ConnectionHandlerImpl::getBalancedHandlerByAddress) and active_tcp_listener.cc
/// (ActiveTcpListener::newActiveConnection hands off to it, or keeps the connection).
fn listener_for<'a>(
    config: &ProxyConfig<'a>,
    (ip, port): (IpAddr, u16),
) -> Result<&'a Listener, String> {
    let address_of = |l: &Listener| -> Option<(IpAddr, u32)> {
        let address::Address::SocketAddress(s) = l.address.as_ref()?.address.as_ref()? else {
            return None;
        };
        let Some(socket_address::PortSpecifier::PortValue(p)) = s.port_specifier else {
            return None;
        };
        Some((s.address.parse().ok()?, p))
    };
    let bound_to = |address: (IpAddr, u32)| {
        config
            .listeners
            .iter()
            .copied()
            .find(|l| address_of(l) == Some(address))
    };
    let wildcard: IpAddr = if ip.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    if let Some(l) =
        bound_to((ip, u32::from(port))).or_else(|| bound_to((wildcard, u32::from(port))))
    {
        return Ok(l);
    }
    config
        .listeners
        .iter()
        .copied()
        .find(|l| {
            l.name == lanyard_xds::names::VIRTUAL_OUTBOUND_LISTENER
                && l.use_original_dst.as_ref().is_some_and(|b| b.value)
        })
        .ok_or_else(|| "no listener for the destination and no outbound capture listener".into())
}

/// Envoy's filter chain choice for a plaintext connection to `ip:port` (no SNI, no ALPN):
/// criterion by criterion in the order of `FilterChainMatch` (destination port, destination
/// IP, server names, transport protocol, application protocols, then the source criteria),
/// keeping at each step the chains that name the connection's value (the longest prefix for
/// addresses), else the chains that leave the criterion empty, without going back; no chain
/// left means the `default_filter_chain`, and none of that means the connection is closed.
/// Envoy v1.36 source/common/listener_manager/filter_chain_manager_impl.cc
/// (FilterChainManagerImpl::findFilterChain and the findFilterChainFor* steps).
fn filter_chain(
    listener: &Listener,
    (ip, port): (IpAddr, u16),
) -> Result<&envoy_types::pb::envoy::config::listener::v3::FilterChain, String> {
    if listener.filter_chain_matcher.is_some() {
        return Err(format!(
            "listener {} uses filter_chain_matcher, which the walk does not model",
            listener.name
        ));
    }
    let mut chains: Vec<_> = listener.filter_chains.iter().collect();
    let m = |c: &envoy_types::pb::envoy::config::listener::v3::FilterChain| {
        c.filter_chain_match.clone().unwrap_or_default()
    };
    // Criteria the walk cannot decide for a connection: refuse rather than guess.
    for c in &chains {
        let fcm = m(c);
        if !fcm.direct_source_prefix_ranges.is_empty()
            || fcm.source_type != 0
            || !fcm.source_prefix_ranges.is_empty()
            || !fcm.source_ports.is_empty()
            || !fcm.application_protocols.is_empty()
            || !fcm.address_suffix.is_empty()
            || fcm.suffix_len.is_some()
        {
            return Err(format!(
                "listener {}: filter_chain_match {fcm:?} uses criteria the walk does not model",
                listener.name
            ));
        }
    }
    // 1. Destination port: chains naming the port, else chains without one.
    let port_of = |c: &&envoy_types::pb::envoy::config::listener::v3::FilterChain| {
        m(c).destination_port.map(|p| p.value)
    };
    let exact: Vec<_> = chains
        .iter()
        .copied()
        .filter(|c| port_of(c) == Some(u32::from(port)))
        .collect();
    chains = if exact.is_empty() {
        chains
            .into_iter()
            .filter(|c| port_of(c).is_none())
            .collect()
    } else {
        exact
    };
    // 2. Destination IP: the chains with the longest prefix containing `ip`, else chains
    //    without prefixes.
    let longest = |c: &envoy_types::pb::envoy::config::listener::v3::FilterChain| {
        m(c).prefix_ranges
            .iter()
            .filter(|r| cidr_contains(&r.address_prefix, r.prefix_len.map(|l| l.value), ip))
            .map(|r| {
                r.prefix_len
                    .map_or(if ip.is_ipv4() { 32 } else { 128 }, |l| l.value)
            })
            .max()
    };
    let best = chains.iter().filter_map(|c| longest(c)).max();
    chains = match best {
        Some(len) => chains
            .into_iter()
            .filter(|c| longest(c) == Some(len))
            .collect(),
        None => chains
            .into_iter()
            .filter(|c| m(c).prefix_ranges.is_empty())
            .collect(),
    };
    // 3. Server names: a plaintext connection has no SNI, so only chains without names.
    chains.retain(|c| m(c).server_names.is_empty());
    // 4. Transport protocol: "raw_buffer" when a TLS inspector saw no TLS, else none at all.
    //    Envoy v1.36 source/extensions/filters/listener/tls_inspector/tls_inspector.cc.
    let inspected = listener
        .listener_filters
        .iter()
        .any(|f| f.name == "envoy.filters.listener.tls_inspector");
    let detected = if inspected { "raw_buffer" } else { "" };
    let exact: Vec<_> = chains
        .iter()
        .copied()
        .filter(|c| !detected.is_empty() && m(c).transport_protocol == detected)
        .collect();
    chains = if exact.is_empty() {
        chains
            .into_iter()
            .filter(|c| m(c).transport_protocol.is_empty())
            .collect()
    } else {
        exact
    };
    match chains.as_slice() {
        [only] => Ok(only),
        [] => listener.default_filter_chain.as_ref().ok_or_else(|| {
            format!(
                "listener {}: no filter chain matches {ip}:{port} and there is no default \
                 chain (Envoy closes the connection)",
                listener.name
            )
        }),
        // Envoy refuses a listener with two chains of the same match.
        _ => Err(format!(
            "listener {}: {} filter chains match {ip}:{port} alike (Envoy rejects such a \
             listener)",
            listener.name,
            chains.len()
        )),
    }
}

fn cidr_contains(prefix: &str, len: Option<u32>, ip: IpAddr) -> bool {
    let Ok(net) = prefix.parse::<IpAddr>() else {
        return false;
    };
    let bits = |a: IpAddr| -> (u128, u32) {
        match a {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    };
    let ((n, width), (i, iwidth)) = (bits(net), bits(ip));
    if width != iwidth {
        return false;
    }
    let len = len.unwrap_or(0).min(width);
    if len == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - len);
    n & mask == i & mask
}

fn route_request(
    config: &ProxyConfig<'_>,
    route_config: &RouteConfiguration,
    request: &Request,
) -> Result<Outcome, String> {
    let not_found = Outcome::Responded {
        status: 404,
        response_headers: HeaderChanges::default(),
    };
    let Some(vhost) = virtual_host(route_config, &request.authority) else {
        return Ok(not_found);
    };
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    let Some(route) = vhost.routes.iter().find(|r| {
        r.r#match
            .as_ref()
            .is_some_and(|m| matches(m, path, query, request))
    }) else {
        return Ok(not_found);
    };
    let route_response = changes(
        &route.response_headers_to_add,
        &route.response_headers_to_remove,
    );
    match &route.action {
        Some(route::Action::DirectResponse(d)) => Ok(Outcome::Responded {
            status: u16::try_from(d.status).map_err(|e| e.to_string())?,
            response_headers: route_response,
        }),
        Some(route::Action::Redirect(r)) => Ok(redirect(r, route, request, path, query)),
        Some(route::Action::Route(action)) => {
            let mut headers = request.headers.clone();
            changes(
                &route.request_headers_to_add,
                &route.request_headers_to_remove,
            )
            .apply(&mut headers);
            let rewritten_path = rewrite_path(action, route, path, query)?;
            let authority = match &action.host_rewrite_specifier {
                Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => h.clone(),
                _ => request.authority.clone(),
            };
            let not_found_status = match action.cluster_not_found_response_code {
                1 => 404,
                2 => 500,
                _ => 503,
            };
            let exists = |name: &str| config.clusters.iter().any(|c| c.name == name);
            let backends = match &action.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(name)) => vec![Forwarded {
                    cluster: name.clone(),
                    weight: 1,
                    not_found_status: (!exists(name)).then_some(not_found_status),
                    path: rewritten_path.clone(),
                    authority: authority.clone(),
                    headers: headers.clone(),
                    response_headers: HeaderChanges::default(),
                }],
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w
                    .clusters
                    .iter()
                    .map(|c| {
                        let mut headers = headers.clone();
                        changes(&c.request_headers_to_add, &c.request_headers_to_remove)
                            .apply(&mut headers);
                        Forwarded {
                            cluster: c.name.clone(),
                            weight: c.weight.as_ref().map_or(0, |w| w.value),
                            not_found_status: (!exists(&c.name)).then_some(not_found_status),
                            path: rewritten_path.clone(),
                            authority: authority.clone(),
                            headers,
                            response_headers: changes(
                                &c.response_headers_to_add,
                                &c.response_headers_to_remove,
                            ),
                        }
                    })
                    .filter(|f| f.weight > 0)
                    .collect(),
                other => return Err(format!("unsupported cluster specifier {other:?}")),
            };
            Ok(Outcome::Forwarded {
                backends,
                response_headers: route_response,
            })
        }
        other => Err(format!("unsupported route action {other:?}")),
    }
}

/// Envoy's virtual host choice on the lower-cased `:authority`, port included unless the
/// route configuration sets `ignore_port_in_host_matching`: an exact domain, then the longest
/// `*suffix`, then the longest `prefix*`, then `*`. A wildcard never matches the empty string
/// (`*.foo.com` does not match `.foo.com`, `*foo.com` does not match `foo.com`). Envoy v1.36
/// source/common/router/config_impl.cc (RouteMatcher::findVirtualHost,
/// RouteMatcher::findWildcardVirtualHost: "`>=` because *.foo.com shouldn't match .foo.com").
fn virtual_host<'a>(config: &'a RouteConfiguration, authority: &str) -> Option<&'a VirtualHost> {
    let mut host = authority;
    if config.ignore_port_in_host_matching {
        // Http::HeaderUtility::getPortStart: the last ':' outside an IPv6 literal's brackets,
        // followed by digits only.
        if let Some((h, p)) = authority.rsplit_once(':')
            && !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (!h.contains(':') || h.ends_with(']'))
        {
            host = h;
        }
    }
    let host = host.to_ascii_lowercase();
    let domains = || {
        config
            .virtual_hosts
            .iter()
            .flat_map(|h| h.domains.iter().map(move |d| (h, d.to_ascii_lowercase())))
    };
    if let Some((h, _)) = domains().find(|(_, d)| *d == host) {
        return Some(h);
    }
    let suffix = domains()
        .filter_map(|(h, d)| Some((h, d.strip_prefix('*')?.to_string())))
        .filter(|(_, rest)| !rest.is_empty() && rest.len() < host.len() && host.ends_with(rest))
        .max_by_key(|(_, rest)| rest.len());
    if let Some((h, _)) = suffix {
        return Some(h);
    }
    let prefix = domains()
        .filter(|(_, d)| d != "*")
        .filter_map(|(h, d)| Some((h, d.strip_suffix('*')?.to_string())))
        .filter(|(_, rest)| !rest.is_empty() && rest.len() < host.len() && host.starts_with(rest))
        .max_by_key(|(_, rest)| rest.len());
    if let Some((h, _)) = prefix {
        return Some(h);
    }
    domains().find(|(_, d)| d == "*").map(|(h, _)| h)
}

fn matches(
    m: &envoy_types::pb::envoy::config::route::v3::RouteMatch,
    path: &str,
    query: &str,
    request: &Request,
) -> bool {
    let path_ok = match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => path.starts_with(p.as_str()),
        Some(route_match::PathSpecifier::Path(p)) => path == p,
        Some(route_match::PathSpecifier::SafeRegex(r)) => full_match(r, path),
        Some(route_match::PathSpecifier::PathSeparatedPrefix(p)) => {
            path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        _ => false,
    };
    path_ok
        && m.headers.iter().all(|h| header_matches(h, request))
        && m.query_parameters.iter().all(|q| {
            let values: Vec<&str> = query
                .split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == q.name).then_some(v)
                })
                .collect();
            match &q.query_parameter_match_specifier {
                Some(query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(s)) => {
                    // Envoy checks the first value of a repeated parameter.
                    values.first().is_some_and(|v| string_matches(s, v))
                }
                Some(query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(p)) => {
                    values.is_empty() != *p
                }
                None => !values.is_empty(),
            }
        })
}

fn header_matches(h: &HeaderMatcher, request: &Request) -> bool {
    let value: Option<String> = if h.name == ":method" {
        Some(request.method.clone())
    } else if h.name == ":authority" {
        Some(request.authority.clone())
    } else {
        let values: Vec<&str> = request
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&h.name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let result = match (&h.header_match_specifier, &value) {
        (Some(header_matcher::HeaderMatchSpecifier::StringMatch(s)), Some(v)) => {
            string_matches(s, v)
        }
        (Some(header_matcher::HeaderMatchSpecifier::PresentMatch(p)), v) => v.is_some() == *p,
        (None, v) => v.is_some(),
        (_, None) => false,
        _ => false,
    };
    result != h.invert_match
}

fn string_matches(s: &StringMatcher, value: &str) -> bool {
    let fold = |x: &str| {
        if s.ignore_case {
            x.to_ascii_lowercase()
        } else {
            x.to_string()
        }
    };
    match &s.match_pattern {
        Some(string_matcher::MatchPattern::Exact(e)) => fold(e) == fold(value),
        Some(string_matcher::MatchPattern::Prefix(p)) => fold(value).starts_with(&fold(p)),
        Some(string_matcher::MatchPattern::Suffix(p)) => fold(value).ends_with(&fold(p)),
        Some(string_matcher::MatchPattern::Contains(p)) => fold(value).contains(&fold(p)),
        Some(string_matcher::MatchPattern::SafeRegex(r)) => full_match(r, value),
        _ => false,
    }
}

/// Envoy's `safe_regex` matching: RE2's FullMatch (Envoy v1.36 source/common/common/regex.h,
/// CompiledGoogleReMatcher::match), with RE2 itself (Rust's `regex` reads `[a-z&&b]` or `\<`
/// differently). Every regex of the route configuration compiled when it was accepted
/// ([`rejection`]), so a pattern that does not compile never gets here.
fn full_match(r: &RegexMatcher, value: &str) -> bool {
    lanyard_re2::Regex::new(&r.regex).is_ok_and(|re| re.full_match(value))
}

/// Envoy's `regex_rewrite`: RE2's GlobalReplace of `path` (without its query), where the
/// substitution reads `\N` as group N and `\\` as a backslash. Envoy v1.36
/// source/common/common/regex.h (CompiledGoogleReMatcher::replaceAll), used by
/// source/common/router/config_impl.cc for routes and redirects.
fn regex_rewrite(pattern: &str, path: &str, substitution: &str) -> Result<String, String> {
    let re = lanyard_re2::Regex::new(pattern).map_err(|e| e.to_string())?;
    re.replace_all(path, substitution)
        .ok_or_else(|| format!("RE2 could not rewrite {path:?} with {pattern:?}"))
}

/// Why Envoy would NACK a route configuration, for what the walk relies on: a regex RE2 does
/// not compile or whose program is over `re2.max_program_size.error_level` (Envoy v1.36
/// source/common/common/regex.cc, CompiledGoogleReMatcher::CompiledGoogleReMatcher throws), a
/// `safe_regex` string matcher with `ignore_case` (source/common/common/matchers.h,
/// StringMatcherImpl), and weighted clusters whose weights sum to 0 (config_impl.cc,
/// WeightedClustersConfig: "Sum of weights in the weighted_cluster must be greater than 0.").
/// A rejected resource is never applied, so the walk reports it instead of routing.
fn rejection(config: &RouteConfiguration) -> Option<String> {
    fn string_regex<'a>(
        s: &'a StringMatcher,
        patterns: &mut Vec<&'a str>,
        problems: &mut Vec<String>,
    ) {
        if let Some(string_matcher::MatchPattern::SafeRegex(r)) = &s.match_pattern {
            patterns.push(&r.regex);
            if s.ignore_case {
                problems.push(format!(
                    "ignore_case has no effect for safe_regex: {}",
                    r.regex
                ));
            }
        }
    }
    let mut patterns: Vec<&str> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    // CORS policies in typed_per_filter_config are built with the route configuration too
    // (Envoy v1.36 source/extensions/filters/http/cors/cors_filter.cc, CorsPolicyImpl).
    let cors =
        |configs: &std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any>| {
            configs
                .values()
                .filter(|any| {
                    any.type_url
                        .ends_with("envoy.extensions.filters.http.cors.v3.CorsPolicy")
                })
                .filter_map(|any| {
                    envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy::decode(
                        any.value.as_slice(),
                    )
                    .ok()
                })
                .collect::<Vec<_>>()
        };
    let mut policies = Vec::new();
    for vhost in &config.virtual_hosts {
        policies.extend(cors(&vhost.typed_per_filter_config));
        for route in &vhost.routes {
            policies.extend(cors(&route.typed_per_filter_config));
        }
    }
    for policy in &policies {
        for s in &policy.allow_origin_string_match {
            string_regex(s, &mut patterns, &mut problems);
        }
    }
    for vhost in &config.virtual_hosts {
        for route in &vhost.routes {
            if let Some(m) = &route.r#match {
                if let Some(route_match::PathSpecifier::SafeRegex(r)) = &m.path_specifier {
                    patterns.push(&r.regex);
                }
                for h in &m.headers {
                    if let Some(header_matcher::HeaderMatchSpecifier::StringMatch(s)) =
                        &h.header_match_specifier
                    {
                        string_regex(s, &mut patterns, &mut problems);
                    }
                }
                for q in &m.query_parameters {
                    if let Some(
                        query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(s),
                    ) = &q.query_parameter_match_specifier
                    {
                        string_regex(s, &mut patterns, &mut problems);
                    }
                }
            }
            match &route.action {
                Some(route::Action::Route(action)) => {
                    if let Some(p) = action
                        .regex_rewrite
                        .as_ref()
                        .and_then(|r| r.pattern.as_ref())
                    {
                        patterns.push(&p.regex);
                    }
                    if let Some(route_action::ClusterSpecifier::WeightedClusters(w)) =
                        &action.cluster_specifier
                    {
                        let sum: u64 = w
                            .clusters
                            .iter()
                            .map(|c| c.weight.as_ref().map_or(0, |w| u64::from(w.value)))
                            .sum();
                        if sum == 0 {
                            problems.push(
                                "Sum of weights in the weighted_cluster must be greater than 0."
                                    .into(),
                            );
                        }
                    }
                }
                Some(route::Action::Redirect(r)) => {
                    if let Some(redirect_action::PathRewriteSpecifier::RegexRewrite(rr)) =
                        &r.path_rewrite_specifier
                        && let Some(p) = &rr.pattern
                    {
                        patterns.push(&p.regex);
                    }
                }
                _ => {}
            }
        }
    }
    problems.extend(
        patterns
            .into_iter()
            .filter_map(|p| lanyard_re2::check_for_envoy(p).err()),
    );
    (!problems.is_empty()).then(|| {
        format!(
            "Envoy rejects RouteConfiguration {}: {}",
            config.name,
            problems.join("; ")
        )
    })
}

fn rewrite_path(
    action: &RouteAction,
    route: &envoy_types::pb::envoy::config::route::v3::Route,
    path: &str,
    query: &str,
) -> Result<String, String> {
    let rewritten = if let Some(r) = &action.regex_rewrite {
        let pattern = r.pattern.as_ref().ok_or("regex_rewrite without pattern")?;
        regex_rewrite(&pattern.regex, path, &r.substitution)?
    } else if !action.prefix_rewrite.is_empty() {
        let prefix = matched_prefix(route).ok_or("prefix_rewrite on a route without a prefix")?;
        format!(
            "{}{}",
            action.prefix_rewrite,
            &path[prefix.len().min(path.len())..]
        )
    } else {
        path.to_string()
    };
    Ok(with_query(rewritten, query))
}

fn matched_prefix(route: &envoy_types::pb::envoy::config::route::v3::Route) -> Option<&str> {
    match &route.r#match.as_ref()?.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p))
        | Some(route_match::PathSpecifier::PathSeparatedPrefix(p)) => Some(p),
        _ => None,
    }
}

fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

fn redirect(
    r: &RedirectAction,
    route: &envoy_types::pb::envoy::config::route::v3::Route,
    request: &Request,
    path: &str,
    query: &str,
) -> Outcome {
    let status = match r.response_code {
        0 => 301,
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        _ => 0,
    };
    let scheme = match &r.scheme_rewrite_specifier {
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => s.clone(),
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => "https".into(),
        _ => "http".into(),
    };
    let (request_host, request_port) = match request.authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => {
            (h.to_string(), Some(p.to_string()))
        }
        _ => (request.authority.clone(), None),
    };
    let host = if r.host_redirect.is_empty() {
        request_host
    } else {
        r.host_redirect.clone()
    };
    let port = if r.port_redirect != 0 {
        Some(r.port_redirect.to_string())
    } else if scheme != "http" {
        // Envoy drops the original port when the scheme changes.
        None
    } else {
        request_port
    };
    let default_port = if scheme == "https" { "443" } else { "80" };
    let port = port.filter(|p| p != default_port);
    let new_path = match &r.path_rewrite_specifier {
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => p.clone(),
        Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(p)) => {
            let prefix = matched_prefix(route).unwrap_or("");
            format!("{p}{}", &path[prefix.len().min(path.len())..])
        }
        Some(redirect_action::PathRewriteSpecifier::RegexRewrite(rr)) => {
            let pattern = rr.pattern.as_ref().map(|p| p.regex.as_str()).unwrap_or("");
            regex_rewrite(pattern, path, &rr.substitution).unwrap_or_else(|_| path.to_string())
        }
        _ => path.to_string(),
    };
    let new_path = if r.strip_query {
        new_path
    } else {
        with_query(new_path, query)
    };
    let authority = match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    Outcome::Redirected {
        status,
        location: format!("{scheme}://{authority}{new_path}"),
    }
}

fn changes(add: &[HeaderValueOption], remove: &[String]) -> HeaderChanges {
    let mut out = HeaderChanges {
        remove: remove.to_vec(),
        ..Default::default()
    };
    for option in add {
        let Some(header) = &option.header else {
            continue;
        };
        let value = if header.value.is_empty() {
            String::from_utf8_lossy(&header.raw_value).into_owned()
        } else {
            header.value.clone()
        };
        // append_action: 0 APPEND_IF_EXISTS_OR_ADD, 1 ADD_IF_ABSENT, 2 OVERWRITE_IF_EXISTS_OR_ADD.
        let append = option.append_action == 0;
        if append {
            out.append.push((header.key.clone(), value));
        } else {
            out.set.push((header.key.clone(), value));
        }
    }
    out
}

/// Envoy removes headers first, then applies the additions in order.
fn apply_mutations(
    headers: &mut Vec<(String, String)>,
    remove: &[String],
    set: &[(String, String)],
    append: &[(String, String)],
) {
    headers.retain(|(k, _)| !remove.iter().any(|r| r.eq_ignore_ascii_case(k)));
    for (k, v) in set {
        headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(k));
        headers.push((k.clone(), v.clone()));
    }
    for (k, v) in append {
        headers.push((k.clone(), v.clone()));
    }
}

/// The endpoints (ip, port) an EDS cluster's load balancer sends new requests to, each with an
/// equal share (Lanyard's clusters are round robin over one priority, endpoints of weight 1).
///
/// Envoy v1.36: a DRAINING endpoint is excluded from load balancing (Host::HealthFlag::
/// EDS_STATUS_DRAINING, source/common/upstream/upstream_impl.cc, HostSetImpl partitions it into
/// excludedHosts; runtime guard exclude_host_in_eds_status_draining, on). UNHEALTHY and TIMEOUT
/// endpoints are unhealthy, DEGRADED degraded, HEALTHY and UNKNOWN healthy. The load balancer
/// picks among healthy endpoints unless the priority is in panic: healthy plus degraded below
/// `healthy_panic_threshold` (50% by default) of the endpoints that are not excluded, and the
/// priority's availability (overprovisioning factor 1.4 times that share) below 100%; in panic
/// it picks among all endpoints, draining ones included (source/extensions/
/// load_balancing_policies/common/load_balancer_impl.cc, LoadBalancerBase::isHostSetInPanic,
/// recalculatePerPriorityState, hostSourceToUse with HostsSource::SourceType::AllHosts).
/// Degraded endpoints are modelled only as a last resort (no healthy endpoint, no panic).
pub fn endpoints_of(config: &ProxyConfig<'_>, cluster: &str) -> Vec<(IpAddr, u16)> {
    use envoy_types::pb::envoy::config::core::v3::HealthStatus;
    let found = config.clusters.iter().find(|c| c.name == cluster);
    let service_name = found
        .and_then(|c| c.eds_cluster_config.as_ref())
        .map(|e| {
            if e.service_name.is_empty() {
                cluster.to_string()
            } else {
                e.service_name.clone()
            }
        })
        .unwrap_or_else(|| cluster.to_string());
    let threshold = found
        .and_then(|c| c.common_lb_config.as_ref())
        .and_then(|c| c.healthy_panic_threshold.as_ref())
        .map_or(50.0, |p| p.value.min(100.0));
    let mut all: Vec<((IpAddr, u16), i32)> = Vec::new();
    let mut overprovisioning = 140u32;
    for cla in config
        .endpoints
        .iter()
        .filter(|c| c.cluster_name == service_name)
    {
        if let Some(f) = cla.policy.as_ref().and_then(|p| p.overprovisioning_factor) {
            overprovisioning = f.value;
        }
        for locality in &cla.endpoints {
            for lb in &locality.lb_endpoints {
                let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
                    continue;
                };
                let Some(address::Address::SocketAddress(s)) =
                    e.address.as_ref().and_then(|a| a.address.as_ref())
                else {
                    continue;
                };
                let Some(socket_address::PortSpecifier::PortValue(p)) = s.port_specifier else {
                    continue;
                };
                if let (Ok(ip), Ok(port)) = (s.address.parse(), u16::try_from(p)) {
                    all.push(((ip, port), lb.health_status));
                }
            }
        }
    }
    let is = |status: HealthStatus| move |(_, h): &&((IpAddr, u16), i32)| *h == status as i32;
    let counted = all
        .iter()
        .filter(|e| !is(HealthStatus::Draining)(e))
        .count();
    let healthy: Vec<(IpAddr, u16)> = all
        .iter()
        .filter(|e| is(HealthStatus::Healthy)(e) || is(HealthStatus::Unknown)(e))
        .map(|(a, _)| *a)
        .collect();
    let degraded: Vec<(IpAddr, u16)> = all
        .iter()
        .filter(is(HealthStatus::Degraded))
        .map(|(a, _)| *a)
        .collect();
    let share = |n: usize| {
        if counted == 0 {
            0.0
        } else {
            100.0 * n as f64 / counted as f64
        }
    };
    let available = share(healthy.len() + degraded.len());
    let availability = (f64::from(overprovisioning) / 100.0 * available).min(100.0);
    let panic = availability < 100.0 && available < threshold;
    if panic {
        all.into_iter().map(|(a, _)| a).collect()
    } else if !healthy.is_empty() {
        healthy
    } else {
        degraded
    }
}

/// Sums of weights by a key, as fractions of the total.
pub fn fractions<K: Ord>(weights: impl IntoIterator<Item = (K, u32)>) -> BTreeMap<K, f64> {
    let mut sums: BTreeMap<K, u64> = BTreeMap::new();
    for (k, w) in weights {
        *sums.entry(k).or_default() += u64::from(w);
    }
    let total: u64 = sums.values().sum();
    sums.into_iter()
        .map(|(k, w)| {
            (
                k,
                if total == 0 {
                    0.0
                } else {
                    w as f64 / total as f64
                },
            )
        })
        .collect()
}

/// Response headers after the route's and the backend's changes.
pub fn response_headers(route: &HeaderChanges, backend: &HeaderChanges) -> Vec<(String, String)> {
    let mut all = HeaderChanges::default();
    all.extend(backend);
    all.extend(route);
    let mut headers = Vec::new();
    all.apply(&mut headers);
    headers
}
