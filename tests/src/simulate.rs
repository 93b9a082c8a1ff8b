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
    let chain = listener
        .filter_chains
        .first()
        .or(listener.default_filter_chain.as_ref())
        .ok_or_else(|| format!("listener {} has no filter chain", listener.name))?;
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
    route_request(config, route_config, request)
}

/// The listener that gets a connection to `ip:port`: one bound to exactly that address
/// (Envoy's original-destination hand-off), else the outbound capture listener itself.
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
    let exact = config
        .listeners
        .iter()
        .copied()
        .find(|l| address_of(l) == Some((ip, u32::from(port))));
    if let Some(l) = exact {
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

fn route_request(
    config: &ProxyConfig<'_>,
    route_config: &RouteConfiguration,
    request: &Request,
) -> Result<Outcome, String> {
    let not_found = Outcome::Responded {
        status: 404,
        response_headers: HeaderChanges::default(),
    };
    let Some(vhost) = virtual_host(&route_config.virtual_hosts, &request.authority) else {
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

/// Envoy's virtual host choice: exact domain, then the longest `*.suffix`, then the longest
/// `prefix*`, then `*`. The port is part of the authority unless a domain without it matches.
fn virtual_host<'a>(hosts: &'a [VirtualHost], authority: &str) -> Option<&'a VirtualHost> {
    let authority = authority.to_ascii_lowercase();
    let without_port = authority
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(authority.as_str(), |(h, _)| h);
    let domains = || {
        hosts
            .iter()
            .flat_map(|h| h.domains.iter().map(move |d| (h, d.as_str())))
    };
    for candidate in [authority.as_str(), without_port] {
        if let Some((h, _)) = domains().find(|(_, d)| *d == candidate) {
            return Some(h);
        }
        let suffix = domains()
            .filter(|(_, d)| d.len() > 1 && d.starts_with('*') && candidate.ends_with(&d[1..]))
            .max_by_key(|(_, d)| d.len());
        if let Some((h, _)) = suffix {
            return Some(h);
        }
        let prefix = domains()
            .filter(|(_, d)| {
                d.len() > 1 && d.ends_with('*') && candidate.starts_with(&d[..d.len() - 1])
            })
            .max_by_key(|(_, d)| d.len());
        if let Some((h, _)) = prefix {
            return Some(h);
        }
    }
    domains().find(|(_, d)| *d == "*").map(|(h, _)| h)
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

/// Envoy's `safe_regex` matching, with RE2 itself (Rust's `regex` reads `[a-z&&b]` or `\<`
/// differently).
fn full_match(r: &RegexMatcher, value: &str) -> bool {
    lanyard_re2::Regex::new(&r.regex).is_ok_and(|re| re.full_match(value))
}

fn rewrite_path(
    action: &RouteAction,
    route: &envoy_types::pb::envoy::config::route::v3::Route,
    path: &str,
    query: &str,
) -> Result<String, String> {
    let rewritten = if let Some(r) = &action.regex_rewrite {
        let pattern = r.pattern.as_ref().ok_or("regex_rewrite without pattern")?;
        let re = regex::Regex::new(&pattern.regex).map_err(|e| e.to_string())?;
        re.replace_all(path, re2_substitution(&r.substitution).as_str())
            .into_owned()
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

/// RE2 substitutions write capture groups as `\\1`; the `regex` crate as `${1}`.
fn re2_substitution(substitution: &str) -> String {
    let mut out = String::new();
    let mut chars = substitution.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
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
            regex::Regex::new(pattern)
                .map(|re| {
                    re.replace_all(path, re2_substitution(&rr.substitution).as_str())
                        .into_owned()
                })
                .unwrap_or_else(|_| path.to_string())
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

/// The endpoints (ip, port) of an EDS cluster.
pub fn endpoints_of(config: &ProxyConfig<'_>, cluster: &str) -> Vec<(IpAddr, u16)> {
    let service_name = config
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.eds_cluster_config.as_ref())
        .map(|e| {
            if e.service_name.is_empty() {
                cluster.to_string()
            } else {
                e.service_name.clone()
            }
        })
        .unwrap_or_else(|| cluster.to_string());
    let mut out = Vec::new();
    for cla in config
        .endpoints
        .iter()
        .filter(|c| c.cluster_name == service_name)
    {
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
                    out.push((ip, port));
                }
            }
        }
    }
    out
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
