//! The debug HTTP endpoint (bind it to localhost: it shows every proxy's configuration).
//!
//! - `GET /debug/syncz`: per connected stream, the node, its namespace and pod, and per type
//!   what was subscribed, sent (version, nonce, time, count), acknowledged, the last
//!   NACK with its message, and how many late NACKs of superseded responses came
//!   (`stale_nacks`). JSON, sorted by node id.
//!   Whatever a proxy chose (its node id, names, versions, NACK messages, type URLs) is
//!   clipped and its lists cut ([`DebugLimits`]): the page grows with the proxies, not
//!   with what one of them sent.
//! - `GET /debug/config_dump?proxy=<node id | namespace/pod>`: what that proxy runs, as
//!   its ACKs and NACKs tell (active: what it acknowledged; a rejected version beside it in
//!   `error_state`), in the shape of Envoy's `/config_dump` (`ConfigDump` of
//!   `ClustersConfigDump`, `EndpointsConfigDump`, `ListenersConfigDump`,
//!   `RoutesConfigDump`), rendered with [`crate::render`]: sorted and stable.
//! - `GET /metrics`: Prometheus text ([`crate::metrics`]).
//!
//! The debug pages answer loopback peers only unless the operator opts in
//! ([`crate::ServerConfig::debug_allow_remote`]); `/metrics`, `/healthz` and `/readyz` are
//! also served alone on the metrics port ([`metrics_router`]), the one to expose.
//! - `GET /healthz`: always 200; `GET /readyz`: 200 once a first snapshot is published and
//!   the source of snapshots (a [`SourceStatus`] set with
//!   [`crate::XdsServer::set_source_status`]) says it is ready; its detail lines follow
//!   (e.g. a watch the controller may not read), ready or not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::limits::{self, DebugLimits};
use crate::render::{message_value, sorted};
use crate::resource::{Resource, ResourceType};
use crate::server::Shared;
use crate::status::{Rejected, Running, StreamStatus};

/// How long a stream has to answer a dump request.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// The router of the debug endpoint: the debug pages and, as on the metrics port, the
/// probes and `/metrics`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .with_state(shared.clone())
        .merge(metrics_router(shared))
}

/// `/metrics`, `/healthz` and `/readyz`: what may be exposed beyond the host (Prometheus,
/// the kubelet's probes) without exposing any proxy's configuration.
pub fn metrics_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// What a debug page answers a peer that is not on a loopback address.
pub const REMOTE_REFUSED: &str = "the debug pages are served to loopback peers only: use kubectl port-forward, or start the controller with --debug-allow-remote\n";

/// Middleware: `/debug/*` only for loopback peers (IPv4-mapped loopback included), unless
/// `allow_remote`. A request without a known peer is refused. istiod guards its debug
/// endpoints too (istio 1.2x pilot/pkg/xds/debug.go, `allowAuthenticatedOrLocalhost`:
/// localhost, else an authenticated caller from the system namespace); Lanyard has no
/// caller authentication yet, so remote access is all or nothing.
pub async fn loopback_only(
    State(allow_remote): State<bool>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    if allowed(allow_remote, peer, request.uri().path()) {
        return next.run(request).await;
    }
    (StatusCode::FORBIDDEN, REMOTE_REFUSED).into_response()
}

/// Whether `peer` may get `path`: see [`loopback_only`].
fn allowed(allow_remote: bool, peer: Option<std::net::IpAddr>, path: &str) -> bool {
    allow_remote
        || !path.starts_with("/debug/")
        || peer.is_some_and(|ip| ip.to_canonical().is_loopback())
}

/// What the source of snapshots (the controller's watches) says about its readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Whether the source has everything it needs (a snapshot is needed besides).
    pub ready: bool,
    /// One line per thing worth telling, ready or not (no newlines inside).
    pub detail: Vec<String>,
}

/// A hook through which the source of snapshots reports on `/readyz` and `/metrics`.
pub trait SourceStatus: Send + Sync + std::fmt::Debug {
    /// Its readiness and the lines `/readyz` shows.
    fn readiness(&self) -> Readiness;
    /// Prometheus text (with `# HELP` and `# TYPE`) appended to `/metrics`.
    fn metrics(&self) -> String {
        String::new()
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let generation = shared.snapshots.borrow().as_ref().map(|s| s.generation());
    let source = shared.source_status();
    let readiness = source.as_ref().map(|s| s.readiness());
    let source_ready = readiness.as_ref().is_none_or(|r| r.ready);
    let mut body = match generation {
        Some(g) if source_ready => format!("ready: snapshot {g}\n"),
        Some(g) => format!("not ready: serving snapshot {g}, but the source is not ready\n"),
        None => "not ready: no snapshot published yet\n".to_string(),
    };
    for line in readiness.iter().flat_map(|r| &r.detail) {
        body.push_str(line);
        body.push('\n');
    }
    let code = if generation.is_some() && source_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut text = shared.metrics.render();
    if let Some(source) = shared.source_status() {
        text.push_str(&source.metrics());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn syncz(State(shared): State<Arc<Shared>>) -> Response {
    let mut streams = shared.registry.streams();
    streams.sort_by(|a, b| (&a.identity.node_id, a.id).cmp(&(&b.identity.node_id, b.id)));
    let limits = &shared.limits.debug;
    let proxies: Vec<Value> = streams
        .iter()
        .map(|s| {
            let entry = json!({
                "stream": s.id,
                "node_id": s.identity.node_id,
                "namespace": s.identity.namespace.as_str(),
                "pod": s.identity.pod,
                "protocol": s.protocol,
                "connected_at": s.connected_at,
                "snapshot_generation": s.generation(),
                "synced_generation": s.synced_generation(),
                "types": s.types(),
            });
            clipped(entry, limits)
        })
        .collect();
    let generation = shared.snapshots.borrow().as_ref().map(|s| s.generation());
    axum::Json(sorted(json!({
        "snapshot_generation": generation,
        "proxies": proxies,
    })))
    .into_response()
}

#[derive(Deserialize)]
struct DumpQuery {
    proxy: Option<String>,
}

async fn config_dump(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<DumpQuery>,
) -> Response {
    let Some(wanted) = query.proxy.filter(|p| !p.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            "give ?proxy=<node id> or ?proxy=<namespace>/<pod>\n",
        )
            .into_response();
    };
    let streams = shared.registry.streams();
    // The newest stream of that proxy (a reconnecting proxy may briefly have two).
    let Some(stream) = streams
        .iter()
        .filter(|s| matches(s, &wanted))
        .max_by_key(|s| s.id)
    else {
        // Not the list of connected proxies: that is /debug/syncz's, and a 404 sized by
        // every node id is not what a typo deserves.
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no connected proxy \"{}\" (by node id or namespace/pod); /debug/syncz lists those connected\n",
                limits::clip(&wanted, shared.limits.debug.text_bytes)
            ),
        )
            .into_response();
    };
    match tokio::time::timeout(DUMP_TIMEOUT, stream.running()).await {
        Ok(Some(running)) => axum::Json(dump(&running, &shared.limits.debug)).into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "proxy \"{}\" did not answer (disconnecting?)\n",
                limits::clip(&wanted, shared.limits.debug.text_bytes)
            ),
        )
            .into_response(),
    }
}

/// `value` with every string (and object key) clipped to `limits.text_bytes` and every list
/// cut to `limits.list_items` (then "and K more"): a syncz entry, whose node id, subscribed
/// names, versions, NACK messages and type URLs the proxy chose.
fn clipped(value: Value, limits: &DebugLimits) -> Value {
    let text = |s: &str| limits::clip(s, limits.text_bytes).to_string();
    match value {
        Value::String(s) if s.len() > limits.text_bytes => Value::String(text(&s)),
        Value::Array(items) => {
            let total = items.len();
            let mut shown: Vec<Value> = items
                .into_iter()
                .take(limits.list_items)
                .map(|item| clipped(item, limits))
                .collect();
            if total > limits.list_items {
                shown.push(json!(format!("and {} more", total - limits.list_items)));
            }
            Value::Array(shown)
        }
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| {
                    let key = if key.len() > limits.text_bytes {
                        text(&key)
                    } else {
                        key
                    };
                    (key, clipped(value, limits))
                })
                .collect(),
        ),
        other => other,
    }
}

fn matches(stream: &StreamStatus, wanted: &str) -> bool {
    stream.identity.node_id == wanted
        || stream
            .identity
            .pod
            .as_ref()
            .is_some_and(|_| stream.identity.pod_ref() == wanted)
}

/// Envoy's ConfigDump JSON of what a stream's proxy runs: per resource, the version it
/// acknowledged as the active config, and a version it rejected beside it in `error_state`
/// (`UpdateFailureState`: `failed_configuration`, `last_update_attempt`, `details`,
/// `version_info`) with `client_status` `NACKED`, as Envoy's own dump has them (Envoy v1.36
/// api/envoy/admin/v3/config_dump_shared.proto: `ClustersConfigDump.DynamicCluster`,
/// `ListenersConfigDump.DynamicListener`, ...). A resource whose first version was rejected
/// has only its `error_state`. What was sent and not yet answered is not shown. The proxy's
/// own words (a NACK's `details`) are clipped to `limits.text_bytes`.
pub fn dump(running: &[Running], limits: &DebugLimits) -> Value {
    let by_type: BTreeMap<ResourceType, &Running> = running.iter().map(|h| (h.ty, h)).collect();
    let mut configs = Vec::new();
    for ty in ResourceType::ALL {
        let Some(running) = by_type.get(&ty) else {
            continue;
        };
        let version = running.version.clone().unwrap_or_default();
        let active: BTreeMap<&str, &Arc<Resource>> =
            running.active.iter().map(|r| (r.name(), r)).collect();
        let rejected: BTreeMap<&str, &Rejected> = running
            .rejected
            .iter()
            .map(|r| (r.resource.name(), r))
            .collect();
        let names: std::collections::BTreeSet<&str> =
            active.keys().chain(rejected.keys()).copied().collect();
        let entries: Vec<Value> = names
            .into_iter()
            .map(|name| {
                let field = match ty {
                    ResourceType::Cluster => "cluster",
                    ResourceType::Endpoint => "endpoint_config",
                    ResourceType::Listener => "listener",
                    ResourceType::Route => "route_config",
                };
                let mut state = serde_json::Map::new();
                if let Some(r) = active.get(name) {
                    state.insert("version_info".into(), json!(r.version().to_string()));
                    state.insert(field.into(), message_value(r.body()));
                }
                let mut entry = serde_json::Map::new();
                if ty == ResourceType::Listener {
                    entry.insert("name".into(), json!(name));
                    if !state.is_empty() {
                        entry.insert("active_state".into(), Value::Object(state));
                    }
                } else {
                    entry.extend(state);
                }
                match rejected.get(name) {
                    Some(r) => {
                        entry.insert(
                            "error_state".into(),
                            json!({
                                "failed_configuration": message_value(r.resource.body()),
                                "last_update_attempt": r.at,
                                "details": limits::clip(&r.details, limits.text_bytes).to_string(),
                                "version_info": r.resource.version().to_string(),
                            }),
                        );
                        entry.insert("client_status".into(), json!("NACKED"));
                    }
                    None => {
                        entry.insert("client_status".into(), json!("ACKED"));
                    }
                }
                Value::Object(entry)
            })
            .collect();
        configs.push(match ty {
            ResourceType::Cluster => json!({
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "version_info": version,
                "dynamic_active_clusters": entries,
            }),
            ResourceType::Endpoint => json!({
                "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
                "dynamic_endpoint_configs": entries,
            }),
            ResourceType::Listener => json!({
                "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                "version_info": version,
                "dynamic_listeners": entries,
            }),
            ResourceType::Route => json!({
                "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                "dynamic_route_configs": entries,
            }),
        });
    }
    sorted(json!({ "configs": configs }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_pages_answer_loopback_peers_unless_remote_is_allowed() {
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        for peer in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(allowed(false, ip(peer), "/debug/syncz"), "{peer}");
        }
        for peer in [ip("10.1.0.5"), ip("fd00::5"), ip("::ffff:10.1.0.5"), None] {
            assert!(!allowed(false, peer, "/debug/syncz"), "{peer:?}");
            assert!(!allowed(false, peer, "/debug/translation"), "{peer:?}");
            assert!(allowed(false, peer, "/metrics"), "{peer:?}");
            assert!(allowed(false, peer, "/healthz"), "{peer:?}");
            assert!(allowed(true, peer, "/debug/syncz"), "{peer:?}");
        }
    }

    #[test]
    fn long_strings_keys_and_lists_are_cut() {
        let limits = DebugLimits {
            text_bytes: 10,
            list_items: 2,
        };
        let entry = json!({
            "node_id": "cart-0.shop",
            "pod": "a",
            "types": { "type.googleapis.com/x": { "subscribed": ["a", "b", "c", "d"] } },
            "count": 12345678,
        });
        assert_eq!(
            clipped(entry, &limits),
            json!({
                "node_id": "cart-0.sho... (1 more bytes)",
                "pod": "a",
                "types": { "type.googl... (11 more bytes)": { "subscribed": ["a", "b", "and 2 more"] } },
                "count": 12345678,
            })
        );
    }
}
