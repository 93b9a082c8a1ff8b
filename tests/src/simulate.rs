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
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    FilterConfig, HeaderMatcher, RedirectAction, Route, RouteAction, RouteConfiguration,
    VirtualHost, header_matcher, query_parameter_matcher, redirect_action, route, route_action,
    route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use prost::Message;

#[cfg(test)]
mod envoy_fidelity_tests;
#[cfg(test)]
mod redirect_and_header_tests;

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
        /// Response header changes above the backend's, in the order Envoy applies them after
        /// the backend's own: route, virtual host, route configuration (or the reverse with
        /// `most_specific_header_mutations_wins`), then the CORS filter's.
        response_headers: Vec<HeaderChanges>,
    },
    /// Answered by the proxy itself (a direct response, a 404, a CORS preflight).
    Responded {
        status: u16,
        /// Response header changes in the order Envoy applies them.
        response_headers: Vec<HeaderChanges>,
    },
    /// Redirected.
    Redirected {
        status: u16,
        location: String,
        /// Response header changes in the order Envoy applies them (a redirect is a direct
        /// response: the route's `response_headers_to_add` apply to it).
        response_headers: Vec<HeaderChanges>,
    },
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
    /// The weighted cluster's own response header changes (Envoy applies them first).
    pub response_headers: HeaderChanges,
}

/// What a header to add does when the header is there already (Envoy's
/// `HeaderValueOption.append_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

/// The header changes of one level (`*_headers_to_add` and `*_headers_to_remove` of a weighted
/// cluster, a route, a virtual host or a route configuration).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderChanges {
    /// In configuration order; values Envoy would skip (empty without `keep_empty_value`)
    /// are left out.
    pub add: Vec<(String, String, AppendAction)>,
    pub remove: Vec<String>,
}

impl HeaderChanges {
    /// Applies the changes as one Envoy `HeaderParser` does: removals first; then each header
    /// to add is sorted, by its action and whether the header is there now, into overwrites
    /// and additions; then all overwrites, then all additions.
    // Envoy v1.36 source/common/router/header_parser.cc, HeaderParser::evaluateHeaders.
    pub fn apply(&self, headers: &mut Vec<(String, String)>) {
        headers.retain(|(k, _)| !self.remove.iter().any(|r| r.eq_ignore_ascii_case(k)));
        let present = |headers: &[(String, String)], k: &str| {
            headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(k))
        };
        let mut overwrite = Vec::new();
        let mut add = Vec::new();
        for (k, v, action) in &self.add {
            match action {
                AppendAction::AppendIfExistsOrAdd => add.push((k, v)),
                AppendAction::AddIfAbsent if !present(headers, k) => add.push((k, v)),
                AppendAction::AddIfAbsent => {}
                AppendAction::OverwriteIfExists if !present(headers, k) => {}
                AppendAction::OverwriteIfExists | AppendAction::OverwriteIfExistsOrAdd => {
                    overwrite.push((k, v))
                }
            }
        }
        for (k, v) in overwrite {
            headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(k));
            headers.push((k.clone(), v.clone()));
        }
        for (k, v) in add {
            headers.push((k.clone(), v.clone()));
        }
    }

    fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
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
    // The CORS filter acts only where the connection manager runs it.
    let cors_filter = hcm
        .http_filters
        .iter()
        .find(|f| f.name == lanyard_xds::names::filters::CORS && !f.disabled)
        .map(|f| f.name.as_str());
    route_request(config, route_config, request, cors_filter)
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
    cors_filter: Option<&str>,
) -> Result<Outcome, String> {
    let not_found = Outcome::Responded {
        status: 404,
        response_headers: Vec::new(),
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
    // Envoy v1.36 source/common/router/config_impl.cc, RouteEntryImplBase::finalizeRequestHeaders
    // and finalizeResponseHeaders (getHeaderParsers): the route's changes, then the virtual
    // host's, then the route configuration's, "later evaluated header parser wins"; the other
    // way round with `most_specific_header_mutations_wins`.
    let ordered = |levels: [HeaderChanges; 3]| {
        let mut levels = Vec::from(levels);
        if route_config.most_specific_header_mutations_wins {
            levels.reverse();
        }
        levels.retain(|l| !l.is_empty());
        levels
    };
    let route_response = ordered([
        changes(
            &route.response_headers_to_add,
            &route.response_headers_to_remove,
        ),
        changes(
            &vhost.response_headers_to_add,
            &vhost.response_headers_to_remove,
        ),
        changes(
            &route_config.response_headers_to_add,
            &route_config.response_headers_to_remove,
        ),
    ]);
    let route_request_changes = ordered([
        changes(
            &route.request_headers_to_add,
            &route.request_headers_to_remove,
        ),
        changes(
            &vhost.request_headers_to_add,
            &vhost.request_headers_to_remove,
        ),
        changes(
            &route_config.request_headers_to_add,
            &route_config.request_headers_to_remove,
        ),
    ]);
    match &route.action {
        Some(route::Action::DirectResponse(d)) => Ok(Outcome::Responded {
            status: u16::try_from(d.status).map_err(|e| e.to_string())?,
            response_headers: route_response,
        }),
        Some(route::Action::Redirect(r)) => {
            let (status, location) = redirect(r, route, request)?;
            Ok(Outcome::Redirected {
                status,
                location,
                response_headers: route_response,
            })
        }
        Some(route::Action::Route(action)) => {
            let cors = match cors_filter {
                Some(name) => cors_policies(name, vhost, route)?,
                None => Vec::new(),
            };
            let cors_response = match cors_preflight(&cors, request)? {
                Cors::Answered(headers) => {
                    return Ok(Outcome::Responded {
                        status: 200,
                        response_headers: vec![headers],
                    });
                }
                Cors::Forward(headers) => headers,
            };
            let rewritten_path = rewrite_path(action, route, path, query)?;
            let route_host = match &action.host_rewrite_specifier {
                Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(h.clone()),
                _ => None,
            };
            let not_found_status = match action.cluster_not_found_response_code {
                1 => 404,
                2 => 500,
                _ => 503,
            };
            let exists = |name: &str| config.clusters.iter().any(|c| c.name == name);
            // What leaves the proxy for one backend: Envoy v1.36
            // source/common/router/weighted_cluster_specifier.cc, WeightedClusterEntry::
            // finalizeRequestHeaders applies the weighted cluster's header changes and its
            // host_rewrite_literal first, then the route's (config_impl.cc
            // finalizeRequestHeaders: route, virtual host and configuration levels, then the
            // route's host rewrite in finalizeHostHeader).
            let forwarded = |cluster: &str,
                             weight: u32,
                             cluster_request: &HeaderChanges,
                             cluster_host: Option<&str>,
                             cluster_response: HeaderChanges| {
                let mut headers = request.headers.clone();
                let mut authority = request.authority.clone();
                cluster_request.apply(&mut headers);
                if let Some(h) = cluster_host {
                    authority = h.to_string();
                }
                for level in &route_request_changes {
                    level.apply(&mut headers);
                }
                if let Some(h) = &route_host {
                    authority = h.clone();
                }
                Forwarded {
                    cluster: cluster.to_string(),
                    weight,
                    not_found_status: (!exists(cluster)).then_some(not_found_status),
                    path: rewritten_path.clone(),
                    authority,
                    headers,
                    response_headers: cluster_response,
                }
            };
            let backends = match &action.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(name)) => vec![forwarded(
                    name,
                    1,
                    &HeaderChanges::default(),
                    None,
                    HeaderChanges::default(),
                )],
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w
                    .clusters
                    .iter()
                    .map(|c| {
                        let host = c.host_rewrite_specifier.as_ref().map(|h| {
                            let weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h) = h;
                            h.as_str()
                        });
                        forwarded(
                            &c.name,
                            c.weight.as_ref().map_or(0, |w| w.value),
                            &changes(&c.request_headers_to_add, &c.request_headers_to_remove),
                            host,
                            changes(&c.response_headers_to_add, &c.response_headers_to_remove),
                        )
                    })
                    .filter(|f| f.weight > 0)
                    .collect(),
                other => return Err(format!("unsupported cluster specifier {other:?}")),
            };
            let mut response_headers = route_response;
            // The CORS filter's encodeHeaders runs on the upstream response after the router
            // applied the route's changes.
            response_headers.extend(cors_response);
            Ok(Outcome::Forwarded {
                backends,
                response_headers,
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
    // Envoy lower-cases the matcher's name, and its request header map serves `host` as
    // `:authority` (Envoy v1.36 source/common/http/header_map_impl.cc, the
    // StaticLookupTable<RequestHeaderMap> entry for Headers::get().HostLegacy).
    let value: Option<String> = if h.name == ":method" {
        Some(request.method.clone())
    } else if h.name == ":authority" || h.name.eq_ignore_ascii_case("host") {
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

/// The status and `Location` of a redirect. Envoy v1.36 source/common/router/router.cc
/// (Filter::decodeHeaders: a direct response first rewrites the path with
/// `rewritePathHeader`, then `newUri` gives the Location) and source/common/http/utility.cc
/// (Utility::newUri, processRequestHost):
/// - scheme: `scheme_redirect`, else `https` for `https_redirect`, else the request's;
/// - port: `:<port_redirect>` whenever it is set (80 and 443 too), else none of its own;
/// - host: `host_redirect` as given (so no port unless `port_redirect`), else the request's
///   authority, whose port is dropped when `port_redirect` is set, or when the new scheme
///   differs from `x-forwarded-proto` and the port is that protocol's default (`:80` for http,
///   `:443` for https); any other port stays, whatever the new scheme;
/// - path: `path_redirect` (with the request's query unless it has one of its own), or the
///   request's path after a prefix or regex rewrite; `strip_query` drops the query.
fn redirect(r: &RedirectAction, route: &Route, request: &Request) -> Result<(u16, String), String> {
    let status = match r.response_code {
        0 => 301,
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        other => return Err(format!("unknown redirect response code {other}")),
    };
    // The sidecar's listeners are plain text: Envoy's :scheme is http, and
    // x-forwarded-proto is the client's if it sent one (use_remote_address is unset), else
    // http (source/common/http/conn_manager_utility.cc, mutateRequestHeaders).
    let forwarded_proto = request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-proto"))
        .map_or("http", |(_, v)| v.as_str());
    let scheme = match &r.scheme_rewrite_specifier {
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) if !s.is_empty() => {
            s.as_str()
        }
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => "https",
        _ => "http",
    };
    let port = if r.port_redirect != 0 {
        format!(":{}", r.port_redirect)
    } else {
        String::new()
    };
    let host = if r.host_redirect.is_empty() {
        request_host(&request.authority, forwarded_proto, scheme, &port)
    } else {
        r.host_redirect.as_str()
    };
    let query_start = request.path.find('?');
    let mut path = match &r.path_rewrite_specifier {
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => {
            if p.contains('?') {
                p.clone()
            } else {
                format!("{p}{}", query_start.map_or("", |i| &request.path[i..]))
            }
        }
        Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(p)) => {
            // The matched part of the path is replaced (RouteEntryImplBase::finalizePathHeader):
            // a prefix route's prefix, an exact route's path, a regex route's whole path.
            let matched = match route
                .r#match
                .as_ref()
                .and_then(|m| m.path_specifier.as_ref())
            {
                Some(route_match::PathSpecifier::Prefix(m))
                | Some(route_match::PathSpecifier::PathSeparatedPrefix(m))
                | Some(route_match::PathSpecifier::Path(m)) => m.len(),
                Some(route_match::PathSpecifier::SafeRegex(_)) => {
                    query_start.unwrap_or(request.path.len())
                }
                other => return Err(format!("prefix_rewrite redirect on {other:?}")),
            };
            format!("{p}{}", &request.path[matched.min(request.path.len())..])
        }
        Some(redirect_action::PathRewriteSpecifier::RegexRewrite(rr)) => {
            let pattern = rr.pattern.as_ref().ok_or("regex_rewrite without pattern")?;
            let (just_path, rest) = request
                .path
                .split_at(query_start.unwrap_or(request.path.len()));
            format!(
                "{}{rest}",
                regex_rewrite(&pattern.regex, just_path, &rr.substitution)?
            )
        }
        _ => request.path.clone(),
    };
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let path_redirect_has_query = matches!(
        &r.path_rewrite_specifier,
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) if p.contains('?')
    );
    if r.strip_query
        && !path_redirect_has_query
        && let Some(i) = path.find('?')
    {
        path.truncate(i);
    }
    Ok((status, format!("{scheme}://{host}{port}{path}")))
}

/// The request's authority as a redirect prints it (Envoy's processRequestHost): without its
/// port when the redirect sets a port, or when the scheme changes from x-forwarded-proto's
/// and the port is that protocol's default.
fn request_host<'a>(
    authority: &'a str,
    forwarded_proto: &str,
    scheme: &str,
    port: &str,
) -> &'a str {
    let port_start = if authority.starts_with('[') {
        authority.rfind("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    let Some(i) = port_start else {
        return authority;
    };
    let request_port = &authority[i..];
    let mut remove = !port.is_empty();
    if scheme != forwarded_proto {
        remove |= forwarded_proto.eq_ignore_ascii_case("https") && request_port == ":443";
        remove |= forwarded_proto.eq_ignore_ascii_case("http") && request_port == ":80";
    }
    if remove { &authority[..i] } else { authority }
}

/// The CORS policies that apply to a route, most specific first: the route's, then the
/// virtual host's, under the connection manager's filter name `filter` (Envoy v1.36
/// source/extensions/filters/http/cors/cors_filter.cc, initializeCorsPolicies). A disabled
/// per-route FilterConfig turns the filter off for the route.
fn cors_policies(
    filter: &str,
    vhost: &VirtualHost,
    route: &Route,
) -> Result<Vec<CorsPolicy>, String> {
    let mut out = Vec::new();
    for config in [
        &route.typed_per_filter_config,
        &vhost.typed_per_filter_config,
    ] {
        let Some(any) = config.get(filter) else {
            continue;
        };
        let any = if any.type_url.ends_with("envoy.config.route.v3.FilterConfig") {
            let wrapped = FilterConfig::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
            if wrapped.disabled {
                return Ok(Vec::new());
            }
            match wrapped.config {
                Some(inner) => inner,
                None => continue,
            }
        } else {
            any.clone()
        };
        if !any
            .type_url
            .ends_with("envoy.extensions.filters.http.cors.v3.CorsPolicy")
        {
            return Err(format!("CORS filter config of type {}", any.type_url));
        }
        let policy = CorsPolicy::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
        if policy.filter_enabled.is_some() || policy.shadow_enabled.is_some() {
            return Err("CORS filter_enabled / shadow_enabled are not modelled".into());
        }
        out.push(policy);
    }
    Ok(out)
}

enum Cors {
    /// A preflight the filter answers itself, with these response headers.
    Answered(HeaderChanges),
    /// Goes on to the router; the filter sets these headers on the response.
    Forward(Vec<HeaderChanges>),
}

/// Envoy v1.36 source/extensions/filters/http/cors/cors_filter.cc: `decodeHeaders` answers a
/// preflight (OPTIONS with a non-empty Origin and Access-Control-Request-Method) itself with a
/// 200, unless the origin is not allowed and `forward_not_matching_preflights` (default true)
/// lets it through; `encodeHeaders` then sets Access-Control-Allow-Origin (and
/// -Allow-Credentials, -Expose-Headers) on any response to an allowed origin, the preflight's
/// included. Each field comes from the first policy that sets it.
fn cors_preflight(policies: &[CorsPolicy], request: &Request) -> Result<Cors, String> {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    };
    let origin = header("origin");
    if policies.is_empty() || origin.is_empty() {
        return Ok(Cors::Forward(Vec::new()));
    }
    let first =
        |f: fn(&CorsPolicy) -> &str| policies.iter().map(f).find(|v| !v.is_empty()).unwrap_or("");
    let origins = policies
        .iter()
        .map(|p| &p.allow_origin_string_match)
        .find(|o| !o.is_empty());
    let allowed = origins.is_some_and(|o| {
        o.iter()
            .any(|m| string_matches(m, "*") || string_matches(m, origin))
    });
    let credentials = policies
        .iter()
        .find_map(|p| p.allow_credentials.as_ref())
        .is_some_and(|b| b.value);
    let forward_not_matching = policies
        .iter()
        .find_map(|p| p.forward_not_matching_preflights.as_ref())
        .is_none_or(|b| b.value);
    // What encodeHeaders sets on the response to an allowed origin.
    let mut on_response = HeaderChanges::default();
    if allowed {
        let set = |k: &str, v: &str| {
            (
                k.to_string(),
                v.to_string(),
                AppendAction::OverwriteIfExistsOrAdd,
            )
        };
        on_response
            .add
            .push(set("access-control-allow-origin", origin));
        if credentials {
            on_response
                .add
                .push(set("access-control-allow-credentials", "true"));
        }
        let expose = first(|p| &p.expose_headers);
        if !expose.is_empty() {
            on_response
                .add
                .push(set("access-control-expose-headers", expose));
        }
    }
    let request_method = header("access-control-request-method");
    let preflight = request.method == "OPTIONS" && !request_method.is_empty();
    if !preflight || (!allowed && forward_not_matching) {
        return Ok(Cors::Forward(if on_response.is_empty() {
            Vec::new()
        } else {
            vec![on_response]
        }));
    }
    let mut answer = HeaderChanges::default();
    let mut set = |k: &str, v: &str| {
        answer.add.push((
            k.to_string(),
            v.to_string(),
            AppendAction::OverwriteIfExistsOrAdd,
        ))
    };
    if allowed {
        set("access-control-allow-origin", origin);
    }
    if credentials {
        set("access-control-allow-credentials", "true");
    }
    match first(|p| &p.allow_methods) {
        "" => {}
        "*" => set("access-control-allow-methods", request_method),
        methods => set("access-control-allow-methods", methods),
    }
    match first(|p| &p.allow_headers) {
        "" => {}
        "*" => set(
            "access-control-allow-headers",
            header("access-control-request-headers"),
        ),
        headers => set("access-control-allow-headers", headers),
    }
    let max_age = first(|p| &p.max_age);
    if !max_age.is_empty() {
        set("access-control-max-age", max_age);
    }
    // The answer passes the encoder filters, the CORS filter's own encodeHeaders included.
    for change in on_response.add {
        answer.add.retain(|(k, _, _)| k != &change.0);
        answer.add.push(change);
    }
    Ok(Cors::Answered(answer))
}

/// One level's header changes. Envoy v1.36 source/common/router/header_parser.cc
/// (HeadersToAddEntry): the deprecated `append`, when set, picks APPEND_IF_EXISTS_OR_ADD or
/// OVERWRITE_IF_EXISTS_OR_ADD; an empty value is skipped unless `keep_empty_value`.
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
        // Envoy reads the value as a format string, where `%%` is a literal `%`
        // (source/common/formatter/substitution_formatter.cc); commands (`%CMD%`) are not
        // modelled and stay as written.
        let value = value.replace("%%", "%");
        if value.is_empty() && !option.keep_empty_value {
            continue;
        }
        #[allow(deprecated)]
        let append = option.append.as_ref().map(|b| b.value);
        let action = match append {
            Some(true) => AppendAction::AppendIfExistsOrAdd,
            Some(false) => AppendAction::OverwriteIfExistsOrAdd,
            None => match HeaderAppendAction::try_from(option.append_action) {
                Ok(HeaderAppendAction::AddIfAbsent) => AppendAction::AddIfAbsent,
                Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => {
                    AppendAction::OverwriteIfExistsOrAdd
                }
                Ok(HeaderAppendAction::OverwriteIfExists) => AppendAction::OverwriteIfExists,
                _ => AppendAction::AppendIfExistsOrAdd,
            },
        };
        out.add.push((header.key.clone(), value, action));
    }
    out
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

/// Response headers after the backend's changes and then each level above it, in order (as
/// [`Outcome`] lists them).
pub fn response_headers(
    levels: &[HeaderChanges],
    backend: &HeaderChanges,
) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    backend.apply(&mut headers);
    for level in levels {
        level.apply(&mut headers);
    }
    headers
}
