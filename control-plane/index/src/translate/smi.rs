//! SMI TrafficSplits lowered into producer route tables on their root Service's ports.
//!
//! Rules (each decision is reported in [`SmiReport`], since SMI objects have no status):
//! - A TrafficSplit on root Service S gives every HTTP-capable port of S (declared HTTP,
//!   HTTP/2 or gRPC, or undeclared) a producer table: clients of S get the weighted split.
//!   Ports declared opaque (TCP, TLS, ...) stay pass-through.
//! - Each backend Service is reached by its own endpoints at the root port's number. A
//!   backend Service that does not exist, or has no such port, is left out of that port's
//!   split and the others share its traffic: SMI says backends must expose the root's port
//!   (ports are not part of a TrafficSplit), and OSM ignores such a backend
//!   (OSM: pkg/catalog/outbound_traffic_policies.go, `getUpstreamClusters`, through
//!   pkg/compute/kube/client.go `GetMeshService`). The split is then reported
//!   [`SmiOutcome::Degraded`]; a port left with no backend stays pass-through, and a split
//!   that leaves every port so is invalid. A backend equal to the root reaches the root's
//!   own endpoints: table backends are endpoint sets, never routed again, so this cannot
//!   loop.
//! - With `matches`, only requests matching one of the referenced HTTPRouteGroups' matches
//!   are split; a final catch-all route sends everything else to S's own endpoints.
//! - Gateway API wins: when any port of S has a producer HTTPRoute or GRPCRoute table, the
//!   split is ignored for S. Consumer routes in other namespaces replace the split for their
//!   clients as they replace any producer table.
//! - Several splits on one root: the oldest (creationTimestamp, then name) wins, whether or
//!   not it is valid, so that a broken edit never hands the root to another split; the
//!   others are reported ignored.
//! - An invalid split (negative or malformed weight, no backends, every weight 0, unknown or
//!   missing HTTPRouteGroup, an invalid regex or header name in a match, integer weights
//!   adding up past 32 bits, every backend left out) is not applied: the root keeps plain
//!   pass-through to its own endpoints, which is where SMI sends traffic the split does not
//!   cover. Every weight 0 is invalid rather than a 500 for all traffic: a split that can
//!   send nothing anywhere is a half-done edit, and failing open to the root Service (as OSM
//!   does with a split it cannot use) avoids an outage. A running controller keeps its
//!   last good configuration through the snapshot machinery.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lanyard_model::{
    Action, Backend, BackendTarget, Forward, HeaderMatch, PathMatch, PortRouting, Protocol,
    RequestMatch, Route, RouteTable, ServiceKey, ServicePortKey, StringMatch,
};

use crate::api::TrafficSplit;
use crate::api::smi::HttpMatch;
use crate::objects::{Kind, ObjectKey, ObjectRef, Objects};
use crate::translate::filters::is_header_name;
use crate::translate::services::{DeclaredProtocol, Services};

/// What became of one TrafficSplit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SmiReport {
    /// The TrafficSplit.
    pub split: ObjectRef,
    /// Its root Service, `namespace/name`.
    pub service: String,
    pub outcome: SmiOutcome,
    pub message: String,
}

/// Whether a TrafficSplit is in effect.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SmiOutcome {
    /// In effect on the root Service's ports.
    Applied,
    /// In effect, but some backends are left out (a backend Service that does not exist or
    /// lacks the root's port); `reason` names why.
    Degraded { reason: String },
    /// Valid but not in effect: a Gateway API route or another split takes precedence, or
    /// the root Service does not exist.
    Ignored { reason: String },
    /// Not applied because the split itself is wrong.
    Invalid { reason: String },
}

pub(super) mod reasons {
    pub const GATEWAY_API_ROUTE: &str = "GatewayAPIRoute";
    pub const SUPERSEDED: &str = "Superseded";
    pub const ROOT_NOT_FOUND: &str = "RootServiceNotFound";
    pub const NO_HTTP_PORT: &str = "NoHTTPPort";
    pub const INVALID_WEIGHT: &str = "InvalidWeight";
    pub const NO_WEIGHT: &str = "NoWeight";
    pub const NO_BACKENDS: &str = "NoBackends";
    pub const INVALID_MATCH: &str = "InvalidMatch";
    /// A backend Service does not exist (ahead of [`BACKEND_PORT_NOT_FOUND`] when both apply).
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    /// A backend Service does not have a port of the root Service.
    pub const BACKEND_PORT_NOT_FOUND: &str = "BackendPortNotFound";
}

/// Adds the producer tables of every TrafficSplit in effect to `routing`, and reports on
/// every TrafficSplit, sorted by split.
pub(super) fn apply(
    objects: &Objects,
    services: &Services,
    routing: &mut BTreeMap<ServicePortKey, PortRouting>,
    routed_protocols: &mut BTreeMap<ServicePortKey, Protocol>,
) -> Vec<SmiReport> {
    // Splits by root Service, oldest first, then by name.
    let mut by_root: BTreeMap<ServiceKey, Vec<(String, &ObjectKey, &TrafficSplit)>> =
        BTreeMap::new();
    for (key, split) in &objects.traffic_splits {
        let created = split
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        by_root
            .entry(ServiceKey::new(&key.namespace, &split.spec.service))
            .or_default()
            .push((created, key, split));
    }
    let mut reports = Vec::new();
    for (root, mut splits) in by_root {
        splits.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let shown_root = format!("{}/{}", root.namespace, root.name);
        let winner = split_ref(splits[0].1);
        for (_, key, _) in &splits[1..] {
            reports.push(SmiReport {
                split: split_ref(key),
                service: shown_root.clone(),
                outcome: SmiOutcome::Ignored {
                    reason: reasons::SUPERSEDED.to_string(),
                },
                message: format!(
                    "{winner} on the same root Service is older (or has the same age and sorts first by name) and takes precedence"
                ),
            });
        }
        let (_, key, split) = splits[0];
        let (outcome, message) = match lower(objects, services, &root, split, routing) {
            Ok((tables, message, degraded)) => {
                for (port, table) in tables {
                    routed_protocols
                        .entry(port.clone())
                        .or_insert(table.protocol);
                    routing.entry(port).or_default().producer = Some(table);
                }
                let outcome = match degraded {
                    Some(reason) => SmiOutcome::Degraded {
                        reason: reason.to_string(),
                    },
                    None => SmiOutcome::Applied,
                };
                (outcome, message)
            }
            Err(e) => e,
        };
        reports.push(SmiReport {
            split: split_ref(key),
            service: shown_root,
            outcome,
            message,
        });
    }
    reports.sort();
    reports
}

fn split_ref(key: &ObjectKey) -> ObjectRef {
    ObjectRef {
        kind: Kind::TrafficSplit,
        key: key.clone(),
    }
}

fn ignored(reason: &str, message: String) -> (SmiOutcome, String) {
    (
        SmiOutcome::Ignored {
            reason: reason.to_string(),
        },
        message,
    )
}

fn invalid(reason: &str, message: String) -> (SmiOutcome, String) {
    (
        SmiOutcome::Invalid {
            reason: reason.to_string(),
        },
        message,
    )
}

/// The tables, the message, and the reason when some backends are left out.
type Lowered = (
    Vec<(ServicePortKey, RouteTable)>,
    String,
    Option<&'static str>,
);

/// Why a backend is left out of a port's split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LeftOut {
    NotFound,
    NoPort,
}

/// The tables of one split, or why it is not applied.
fn lower(
    objects: &Objects,
    services: &Services,
    root: &ServiceKey,
    split: &TrafficSplit,
    routing: &BTreeMap<ServicePortKey, PortRouting>,
) -> Result<Lowered, (SmiOutcome, String)> {
    let shown_root = format!("{}/{}", root.namespace, root.name);
    // The split itself first: an invalid split is reported as such wherever it points.
    let weights = checked_weights(split)?;
    let matches = request_matches(objects, root.namespace.as_str(), split)?;

    let Some(service) = services.services.get(root) else {
        return Err(ignored(
            reasons::ROOT_NOT_FOUND,
            format!("root Service {shown_root} not found"),
        ));
    };
    let routed: Vec<String> = service
        .ports
        .iter()
        .map(|p| ServicePortKey::new(root.clone(), p.port))
        .filter(|k| routing.get(k).is_some_and(|r| r.producer.is_some()))
        .map(|k| k.port.to_string())
        .collect();
    if !routed.is_empty() {
        return Err(ignored(
            reasons::GATEWAY_API_ROUTE,
            format!(
                "Service {shown_root} has HTTPRoute or GRPCRoute producer routes on port {}; Gateway API routes take precedence over SMI",
                routed.join(", ")
            ),
        ));
    }

    let mut tables = Vec::new();
    let mut notes = Vec::new();
    // Backends left out, with the ports they are left out on.
    let mut left_out: BTreeMap<(&str, LeftOut), Vec<u16>> = BTreeMap::new();
    let mut emptied = Vec::new();
    // The shares of each applied port, to group ports that split alike in the message.
    let mut shares: Vec<(String, Vec<u16>)> = Vec::new();
    for port in &service.ports {
        let declared = services
            .declared
            .get(&(root.clone(), port.port))
            .copied()
            .unwrap_or(DeclaredProtocol::Unknown);
        let protocol = match declared {
            DeclaredProtocol::Opaque => {
                notes.push(format!(
                    "port {} is not HTTP and stays pass-through",
                    port.port
                ));
                continue;
            }
            DeclaredProtocol::Http(Protocol::Grpc) => Protocol::Grpc,
            DeclaredProtocol::Http(_) | DeclaredProtocol::Unknown => Protocol::Http,
        };
        let root_port = ServicePortKey::new(root.clone(), port.port);
        let mut backends = Vec::new();
        let mut kept = Vec::new();
        for (backend, &weight) in split.spec.backends.iter().zip(&weights) {
            // A weight-0 backend gets nothing, so whether it could serve is moot.
            if weight == 0 {
                kept.push((backend.service.as_str(), 0));
                continue;
            }
            match backend_port(
                services,
                root.namespace.as_str(),
                &backend.service,
                port.port,
            ) {
                Ok(key) => {
                    backends.push(Backend::new(BackendTarget::Service(key), weight));
                    kept.push((backend.service.as_str(), weight));
                }
                Err(why) => left_out
                    .entry((backend.service.as_str(), why))
                    .or_default()
                    .push(port.port),
            }
        }
        if backends.is_empty() {
            emptied.push(port.port);
            continue;
        }
        let total: u64 = kept.iter().map(|&(_, w)| u64::from(w)).sum();
        let shown: Vec<String> = kept
            .iter()
            .map(|&(name, w)| format!("{name} {}", percent(u64::from(w), total)))
            .collect();
        let shown = shown.join(", ");
        match shares.iter_mut().find(|(s, _)| *s == shown) {
            Some((_, ports)) => ports.push(port.port),
            None => shares.push((shown, vec![port.port])),
        }
        let forward = Action::Forward(Forward {
            backends,
            rewrite: None,
        });
        let mut routes: Vec<Route> = matches
            .iter()
            .map(|m| Route::new(m.clone(), forward.clone()))
            .collect();
        if !split.spec.matches.is_empty() {
            routes.push(Route::new(
                RequestMatch::default(),
                Action::Forward(Forward {
                    backends: vec![Backend::new(BackendTarget::Service(root_port.clone()), 1)],
                    rewrite: None,
                }),
            ));
        }
        tables.push((root_port, RouteTable { protocol, routes }));
    }
    let degraded = left_out
        .keys()
        .map(|&(_, why)| why)
        .min()
        .map(|why| match why {
            LeftOut::NotFound => reasons::BACKEND_NOT_FOUND,
            LeftOut::NoPort => reasons::BACKEND_PORT_NOT_FOUND,
        });
    let left_out: Vec<String> = left_out
        .iter()
        .map(|(&(name, why), ports)| {
            let shown = format!("{}/{name}", root.namespace);
            match why {
                LeftOut::NotFound => format!("backend Service {shown} not found, left out"),
                LeftOut::NoPort => format!(
                    "backend Service {shown} has no port {}, left out there",
                    join(ports)
                ),
            }
        })
        .collect();
    if tables.is_empty() {
        if let Some(reason) = degraded {
            return Err(invalid(
                reason,
                format!(
                    "no backend can serve root Service {shown_root} port {}: {}; the root Service keeps its own endpoints",
                    join(&emptied),
                    left_out.join("; ")
                ),
            ));
        }
        return Err(ignored(
            reasons::NO_HTTP_PORT,
            format!("root Service {shown_root} has no HTTP port to split"),
        ));
    }
    let splits: Vec<String> = shares
        .iter()
        .map(|(shown, ports)| format!("port {} split: {shown}", join(ports)))
        .collect();
    let mut message = format!("{shown_root} {}", splits.join("; "));
    if !split.spec.matches.is_empty() {
        message.push_str("; requests that match no HTTPRouteGroup match go to the root Service");
    }
    for note in left_out.into_iter().chain(notes) {
        message.push_str("; ");
        message.push_str(&note);
    }
    if !emptied.is_empty() {
        let _ = write!(
            message,
            "; port {} has no backend left and stays pass-through",
            join(&emptied)
        );
    }
    Ok((tables, message, degraded))
}

/// Port numbers as `80, 8080`.
fn join(ports: &[u16]) -> String {
    let shown: Vec<String> = ports.iter().map(u16::to_string).collect();
    shown.join(", ")
}

/// The weights as the model takes them (v1alpha1 quantities as whole numbers reduced by their
/// common divisor), or why the split is invalid.
fn checked_weights(split: &TrafficSplit) -> Result<Vec<u32>, (SmiOutcome, String)> {
    if split.spec.backends.is_empty() {
        return Err(invalid(
            reasons::NO_BACKENDS,
            "the split lists no backends".to_string(),
        ));
    }
    let mut weights = Vec::new();
    for (backend, weight) in split.spec.backends.iter().zip(split.weights()) {
        match weight {
            Ok(w) => weights.push(w),
            Err(e) => {
                return Err(invalid(
                    reasons::INVALID_WEIGHT,
                    format!("backend {}: {e}", backend.service),
                ));
            }
        }
    }
    if weights.iter().all(|&w| w == 0) {
        return Err(invalid(
            reasons::NO_WEIGHT,
            "every backend has weight 0; the root Service keeps its own endpoints".to_string(),
        ));
    }
    if split.version == "v1alpha1" {
        let divisor = weights.iter().copied().fold(0, gcd);
        weights.iter_mut().for_each(|w| *w /= divisor);
    }
    // Envoy adds the weights of a route up in 32 bits.
    let total = weights.iter().try_fold(0u64, |sum, &w| sum.checked_add(w));
    if total.is_none_or(|t| t > u64::from(u32::MAX)) {
        return Err(invalid(
            reasons::INVALID_WEIGHT,
            format!("the weights add up to more than {}", u32::MAX),
        ));
    }
    Ok(weights
        .into_iter()
        .map(|w| u32::try_from(w).unwrap_or(u32::MAX))
        .collect())
}

/// `part` of `total` as a percentage, with one decimal when it is not whole; a share that
/// rounds to 0 but is not is shown as `<0.1%`.
fn percent(part: u64, total: u64) -> String {
    let tenths = (part * 1000 + total / 2) / total.max(1);
    if tenths == 0 && part > 0 {
        "<0.1%".to_string()
    } else if tenths.is_multiple_of(10) {
        format!("{}%", tenths / 10)
    } else {
        format!("{}.{}%", tenths / 10, tenths % 10)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The request matches the split applies to: one catch-all without `matches`.
fn request_matches(
    objects: &Objects,
    namespace: &str,
    split: &TrafficSplit,
) -> Result<Vec<RequestMatch>, (SmiOutcome, String)> {
    if split.spec.matches.is_empty() {
        return Ok(vec![RequestMatch::default()]);
    }
    let mut out = Vec::new();
    for reference in &split.spec.matches {
        let kind = reference.kind.as_deref().unwrap_or("HTTPRouteGroup");
        let group_ok = reference
            .api_group
            .as_deref()
            .is_none_or(|g| g.is_empty() || g == crate::api::smi::SPECS_GROUP);
        if kind != "HTTPRouteGroup" || !group_ok {
            return Err(invalid(
                reasons::INVALID_MATCH,
                format!(
                    "matches refer to a {kind} {}; only HTTPRouteGroup is supported",
                    reference.name
                ),
            ));
        }
        let Some(group) = objects
            .http_route_groups
            .get(&ObjectKey::new(namespace, &reference.name))
        else {
            return Err(invalid(
                reasons::INVALID_MATCH,
                format!("HTTPRouteGroup {namespace}/{} not found", reference.name),
            ));
        };
        for m in &group.spec.matches {
            let at = format!(
                "HTTPRouteGroup {namespace}/{} match {:?}",
                reference.name, m.name
            );
            check_match(m, &at)?;
            let path = m
                .path_regex
                .as_ref()
                .filter(|r| !r.is_empty())
                .map_or_else(PathMatch::default, |r| PathMatch::Regex(r.clone()));
            let headers: Vec<HeaderMatch> = m
                .headers()
                .into_iter()
                .map(|(name, value)| HeaderMatch {
                    name: name.to_ascii_lowercase(),
                    value: if value.contains(is_regex_meta) {
                        StringMatch::Regex(value)
                    } else {
                        StringMatch::Exact(value)
                    },
                })
                .collect();
            let any_method = m.methods.is_empty() || m.methods.iter().any(|x| x == "*");
            let methods: Vec<Option<String>> = if any_method {
                vec![None]
            } else {
                m.methods
                    .iter()
                    .map(|x| Some(x.to_ascii_uppercase()))
                    .collect()
            };
            for method in methods {
                out.push(RequestMatch {
                    path: path.clone(),
                    headers: headers.clone(),
                    query: Vec::new(),
                    method,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(invalid(
            reasons::INVALID_MATCH,
            "the referenced HTTPRouteGroups have no matches".to_string(),
        ));
    }
    Ok(out)
}

/// Header names and regular expressions that Envoy would refuse make the split invalid.
fn check_match(m: &HttpMatch, at: &str) -> Result<(), (SmiOutcome, String)> {
    let regexes = m.path_regex.iter().cloned().chain(
        m.headers()
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| v.contains(is_regex_meta)),
    );
    for regex in regexes {
        if let Some(why) = super::filters::regex_refusal(&regex) {
            return Err(invalid(reasons::INVALID_MATCH, format!("{at}: {why}")));
        }
    }
    if let Some((name, _)) = m.headers().into_iter().find(|(n, _)| !is_header_name(n)) {
        return Err(invalid(
            reasons::INVALID_MATCH,
            format!("{at}: {name:?} is not a valid header name"),
        ));
    }
    Ok(())
}

fn is_regex_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
    )
}

/// The port of backend Service `name` that serves the root's `port`: the same port number,
/// as SMI requires of backends (OSM: pkg/compute/kube/client.go, `GetMeshService`).
fn backend_port(
    services: &Services,
    namespace: &str,
    name: &str,
    port: u16,
) -> Result<ServicePortKey, LeftOut> {
    let key = ServiceKey::new(namespace, name);
    let service = services.services.get(&key).ok_or(LeftOut::NotFound)?;
    if service.ports.iter().any(|p| p.port == port) {
        Ok(ServicePortKey::new(key, port))
    } else {
        Err(LeftOut::NoPort)
    }
}

#[cfg(test)]
mod percent_tests {
    use super::percent;

    #[test]
    fn shares_read_as_percentages() {
        assert_eq!(percent(90, 100), "90%");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(2, 3), "66.7%");
        assert_eq!(percent(u64::from(u32::MAX), u64::from(u32::MAX)), "100%");
        assert_eq!(percent(0, 0), "0%");
        assert_eq!(percent(3, 4_048_003), "<0.1%");
    }
}
