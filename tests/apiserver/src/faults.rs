//! Faults on demand: make matching requests fail (403, 404, 429 with `Retry-After`, 503, or any
//! code), stall, or see a version unserved, N times or until cleared. Set from a test through
//! [`crate::Running`] or, for a server run as a process, through the control endpoint under
//! [`CONTROL_PATH`] (a path no real API server serves). See the crate's README.md.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_error::{ApiError, json_response};
use crate::resources::ResourceType;

/// The control endpoint's path prefix.
pub const CONTROL_PATH: &str = "/_lanyard/faults";

/// Which requests a fault applies to. Every field that is set must match; an empty matcher
/// matches every request (discovery included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Match {
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection
    /// (`get` for discovery and other non-resource paths).
    pub verb: Option<String>,
    /// Kind or plural, case-insensitive (only resource requests match).
    pub resource: Option<String>,
    /// API group (`""` for core; only resource requests match).
    pub group: Option<String>,
    /// API version, e.g. `v1` (only resource requests match).
    pub version: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `true`: only watches; `false`: everything but watches.
    pub watch: Option<bool>,
    /// The request path starts with this (any request, discovery included).
    pub path_prefix: Option<String>,
}

/// What a matching request gets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// An error `Status` with this HTTP code (reason and message as a real server words them
    /// for 403, 404, 429, 500, 503, 504); `retry_after` sets the `Retry-After` header (seconds)
    /// and `details.retryAfterSeconds`.
    Status {
        code: u16,
        #[serde(default, rename = "retryAfter")]
        retry_after: Option<u64>,
    },
    /// Hold the request for `millis` (or, when `None`, until [`Faults::release`]), then serve it
    /// normally.
    Stall {
        #[serde(default)]
        millis: Option<u64>,
    },
}

/// One fault: what it matches, what it does, how many more times (`None`: until cleared).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default, rename = "match")]
    pub matcher: Match,
    pub action: Action,
    #[serde(default)]
    pub times: Option<usize>,
}

impl Fault {
    /// Answer matching requests with an error `Status` of this code.
    pub fn status(code: u16) -> Self {
        Fault {
            matcher: Match::default(),
            action: Action::Status {
                code,
                retry_after: None,
            },
            times: None,
        }
    }

    /// 429 `TooManyRequests` with `Retry-After: secs`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Fault {
            action: Action::Status {
                code: 429,
                retry_after: Some(retry_after_secs),
            },
            ..Fault::status(429)
        }
    }

    /// Hold matching requests for `d`, then serve them.
    pub fn stall_for(d: Duration) -> Self {
        Fault {
            action: Action::Stall {
                millis: Some(d.as_millis() as u64),
            },
            ..Fault::status(0)
        }
    }

    /// Hold matching requests until [`crate::Running::release_stalls`] (or the fault is cleared).
    pub fn stall() -> Self {
        Fault {
            action: Action::Stall { millis: None },
            ..Fault::status(0)
        }
    }

    pub fn verb(mut self, verb: &str) -> Self {
        self.matcher.verb = Some(verb.to_string());
        self
    }

    /// Kind or plural (case-insensitive).
    pub fn resource(mut self, resource: &str) -> Self {
        self.matcher.resource = Some(resource.to_string());
        self
    }

    pub fn group(mut self, group: &str) -> Self {
        self.matcher.group = Some(group.to_string());
        self
    }

    pub fn version(mut self, version: &str) -> Self {
        self.matcher.version = Some(version.to_string());
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.matcher.namespace = Some(namespace.to_string());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.matcher.name = Some(name.to_string());
        self
    }

    /// Only watches (`true`) or only non-watch requests (`false`).
    pub fn watch(mut self, watch: bool) -> Self {
        self.matcher.watch = Some(watch);
        self
    }

    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.matcher.path_prefix = Some(prefix.to_string());
        self
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }
}

/// Identifies an added fault (for clearing it or reading its hit count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultId(pub u64);

/// A request as faults see it.
pub struct RequestInfo<'a> {
    pub verb: &'a str,
    pub path: &'a str,
    pub resource: Option<&'a ResourceType>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub watch: bool,
}

impl Match {
    fn matches(&self, req: &RequestInfo<'_>) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        if !eq(&self.verb, Some(req.verb))
            || self.watch.is_some_and(|w| w != req.watch)
            || !eq(&self.namespace, req.namespace)
            || !eq(&self.name, req.name)
            || self
                .path_prefix
                .as_deref()
                .is_some_and(|p| !req.path.starts_with(p))
        {
            return false;
        }
        if self.resource.is_none() && self.group.is_none() && self.version.is_none() {
            return true;
        }
        let Some(r) = req.resource else {
            return false;
        };
        self.resource
            .as_deref()
            .is_none_or(|k| r.kind.eq_ignore_ascii_case(k) || r.plural.eq_ignore_ascii_case(k))
            && eq(&self.group, Some(r.group))
            && eq(&self.version, Some(r.version))
    }
}

struct Entry {
    id: FaultId,
    fault: Fault,
    hits: usize,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    faults: Vec<Entry>,
    /// Hits of faults already removed (used up or cleared), so counts stay readable.
    spent: Vec<(FaultId, usize)>,
    /// (group, version, plural or `None` for every resource of the group/version).
    unserved: BTreeSet<(String, String, Option<String>)>,
}

/// The server's faults.
pub struct Faults {
    inner: Mutex<Inner>,
    release: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            inner: Mutex::default(),
            release: tokio::sync::watch::channel(0).0,
        }
    }
}

/// What to do with a request.
pub enum Verdict {
    Serve,
    Answer(Response),
    /// Hold it (for the duration, or until released), then serve it.
    Stall(Option<Duration>),
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, fault: Fault) -> FaultId {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = FaultId(inner.next_id);
        inner.faults.push(Entry { id, fault, hits: 0 });
        id
    }

    /// Removes one fault (a stall it holds is released).
    pub fn clear(&self, id: FaultId) {
        let mut inner = self.lock();
        if let Some(i) = inner.faults.iter().position(|e| e.id == id) {
            let e = inner.faults.remove(i);
            inner.spent.push((e.id, e.hits));
        }
        drop(inner);
        self.release();
    }

    /// Removes every fault and unserved version, and releases every stalled request.
    pub fn clear_all(&self) {
        let mut inner = self.lock();
        let gone: Vec<_> = inner.faults.drain(..).map(|e| (e.id, e.hits)).collect();
        inner.spent.extend(gone);
        inner.unserved.clear();
        drop(inner);
        self.release();
    }

    /// Lets every request held by a stall without a duration go on.
    pub fn release(&self) {
        self.release.send_modify(|n| *n += 1);
    }

    /// How many requests this fault has acted on.
    pub fn hits(&self, id: FaultId) -> usize {
        let inner = self.lock();
        inner
            .faults
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.hits)
            .or_else(|| inner.spent.iter().find(|(i, _)| *i == id).map(|(_, h)| *h))
            .unwrap_or(0)
    }

    pub fn set_unserved(&self, group: &str, version: &str, plural: Option<&str>, unserved: bool) {
        let key = (
            group.to_string(),
            version.to_string(),
            plural.map(str::to_string),
        );
        let mut inner = self.lock();
        if unserved {
            inner.unserved.insert(key);
        } else {
            inner.unserved.remove(&key);
        }
    }

    /// Whether a test unserved this resource's version.
    pub fn unserved(&self, r: &ResourceType) -> bool {
        let inner = self.lock();
        if inner.unserved.is_empty() {
            return false;
        }
        let (g, v) = (r.group.to_string(), r.version.to_string());
        inner.unserved.contains(&(g.clone(), v.clone(), None))
            || inner.unserved.contains(&(g, v, Some(r.plural.to_string())))
    }

    /// The first fault matching `req` acts on it (and is used up after its `times`).
    pub fn check(&self, req: &RequestInfo<'_>) -> Verdict {
        let mut inner = self.lock();
        let Some(i) = inner
            .faults
            .iter()
            .position(|e| e.fault.matcher.matches(req))
        else {
            return Verdict::Serve;
        };
        let entry = &mut inner.faults[i];
        entry.hits += 1;
        let action = entry.fault.action.clone();
        if let Some(n) = entry.fault.times.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                let e = inner.faults.remove(i);
                inner.spent.push((e.id, e.hits));
            }
        }
        match action {
            Action::Status { code, retry_after } => {
                Verdict::Answer(error_response(code, retry_after, req))
            }
            Action::Stall { millis } => Verdict::Stall(millis.map(Duration::from_millis)),
        }
    }

    /// Waits as a stall says: for `d`, or until released (or cleared).
    pub async fn stall(&self, d: Option<Duration>) {
        let mut rx = self.release.subscribe();
        rx.mark_unchanged();
        match d {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = rx.changed() => {}
                }
            }
            None => {
                let _ = rx.changed().await;
            }
        }
    }
}

/// The error a fault answers, worded as kube-apiserver words it.
fn error_response(code: u16, retry_after: Option<u64>, req: &RequestInfo<'_>) -> Response {
    let (group, plural) = req.resource.map_or(("", ""), |r| (r.group, r.plural));
    let what = if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    };
    let name = req.name.unwrap_or("");
    let mut err = match code {
        403 => {
            let scope = match req.namespace {
                Some(ns) => format!("in the namespace \"{ns}\""),
                None => "at the cluster scope".to_string(),
            };
            let subject = if name.is_empty() {
                what.clone()
            } else {
                format!("{what} \"{name}\"")
            };
            ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{subject} is forbidden: User \"system:serviceaccount:test:fault\" cannot {} resource \"{plural}\" in API group \"{group}\" {scope} (injected fault)",
                    req.verb
                ),
            )
        }
        404 if name.is_empty() => ApiError::no_route(req.path),
        404 => ApiError::not_found(group, plural, name),
        429 => ApiError::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later. (injected fault)",
        ),
        500 => ApiError::new(500, "InternalError", "Internal error (injected fault)"),
        503 => ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request (injected fault)",
        ),
        504 => ApiError::new(
            504,
            "Timeout",
            "the server was unable to return a response in the time allotted (injected fault)",
        ),
        _ => ApiError::new(code, "Unknown", format!("injected fault {code}")),
    };
    if code == 403 || (code == 404 && name.is_empty()) {
        err.details = Some(json!({"group": group, "kind": plural, "name": name}));
    }
    if let Some(secs) = retry_after {
        let mut details = err.details.take().unwrap_or_else(|| json!({}));
        details["retryAfterSeconds"] = json!(secs);
        err.details = Some(details);
    }
    let mut resp = err.into_response();
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The control endpoint (`CONTROL_PATH`):
/// - `POST /_lanyard/faults` with a [`Fault`] as JSON: adds it, answers `{"id": N}`;
/// - `GET /_lanyard/faults/N`: `{"id": N, "hits": H}`;
/// - `DELETE /_lanyard/faults/N`: clears one; `DELETE /_lanyard/faults`: clears all (and
///   unserved versions, and releases stalls);
/// - `POST /_lanyard/faults/release`: releases stalled requests;
/// - `POST /_lanyard/faults/cut-watches` with `{"resource": "HTTPRoute"}` (or `{}` for all):
///   ends open watches without an error event;
/// - `POST /_lanyard/faults/unserve` and `/serve` with `{"group": G, "version": V,
///   "resource": PLURAL}` (`resource` optional): (un)serves a version in discovery and requests.
pub(crate) fn control(
    shared: &crate::Shared,
    method: &axum::http::Method,
    rest: &str,
    body: &[u8],
) -> Response {
    let bad = |msg: String| ApiError::bad_request(msg).into_response();
    let parse = |body: &[u8]| -> Result<Value, Box<Response>> {
        if body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(body).map_err(|e| Box::new(bad(format!("bad JSON: {e}"))))
    };
    let ok = |v: Value| json_response(StatusCode::OK, &v);
    let rest = rest.trim_matches('/');
    match (method.as_str(), rest) {
        ("POST", "") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => ok(json!({"id": shared.faults.add(f).0})),
            Err(e) => bad(format!("bad fault: {e}")),
        },
        ("DELETE", "") => {
            shared.faults.clear_all();
            ok(json!({}))
        }
        ("POST", "release") => {
            shared.faults.release();
            ok(json!({}))
        }
        ("POST", "cut-watches") => {
            let v = match parse(body) {
                Ok(v) => v,
                Err(r) => return *r,
            };
            match v.get("resource").and_then(Value::as_str) {
                Some(res) => {
                    let mut keys: Vec<_> = crate::resources::by_kind_or_plural(res)
                        .map(ResourceType::storage_key)
                        .collect();
                    keys.dedup();
                    if keys.is_empty() {
                        return bad(format!("no served kind {res:?}"));
                    }
                    for k in keys {
                        shared.store.cut_watches(Some(k));
                    }
                }
                None => shared.store.cut_watches(None),
            }
            ok(json!({}))
        }
        ("POST", op @ ("unserve" | "serve")) => {
            let v = match parse(body) {
                Ok(v) => v,
                Err(r) => return *r,
            };
            let s = |k: &str| v.get(k).and_then(Value::as_str);
            let (Some(group), Some(version)) = (s("group"), s("version")) else {
                return bad("expected {\"group\": G, \"version\": V}".into());
            };
            shared
                .faults
                .set_unserved(group, version, s("resource"), op == "unserve");
            ok(json!({}))
        }
        (m, id) => match id.parse::<u64>() {
            Ok(n) if m == "GET" => ok(json!({"id": n, "hits": shared.faults.hits(FaultId(n))})),
            Ok(n) if m == "DELETE" => {
                shared.faults.clear(FaultId(n));
                ok(json!({}))
            }
            _ => ApiError::no_route(&format!("{CONTROL_PATH}/{id}")).into_response(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_deserialize_from_the_control_format() {
        let f: Fault = serde_json::from_value(json!({
            "match": {"verb": "watch", "resource": "httproutes", "group": "gateway.networking.k8s.io"},
            "action": {"status": {"code": 429, "retryAfter": 2}},
            "times": 3
        }))
        .unwrap();
        assert_eq!(
            f,
            Fault::too_many_requests(2)
                .verb("watch")
                .resource("httproutes")
                .group("gateway.networking.k8s.io")
                .times(3)
        );
        let f: Fault = serde_json::from_value(json!({"action": {"stall": {}}})).unwrap();
        assert_eq!(f, Fault::stall());
        assert!(serde_json::from_value::<Fault>(json!({"action": {"explode": {}}})).is_err());
    }

    #[test]
    fn matchers_need_every_set_field() {
        let r = crate::resources::find("gateway.networking.k8s.io", "v1", "httproutes").unwrap();
        let req = RequestInfo {
            verb: "watch",
            path: "/apis/gateway.networking.k8s.io/v1/httproutes",
            resource: Some(r),
            namespace: None,
            name: None,
            watch: true,
        };
        assert!(Match::default().matches(&req));
        assert!(Fault::status(1).resource("HTTPRoute").matcher.matches(&req));
        assert!(
            !Fault::status(1)
                .resource("grpcroutes")
                .matcher
                .matches(&req)
        );
        assert!(!Fault::status(1).version("v1beta1").matcher.matches(&req));
        assert!(!Fault::status(1).watch(false).matcher.matches(&req));
        assert!(!Fault::status(1).namespace("a").matcher.matches(&req));
        let discovery = RequestInfo {
            verb: "get",
            path: "/apis",
            resource: None,
            namespace: None,
            name: None,
            watch: false,
        };
        assert!(!Fault::status(1).group("").matcher.matches(&discovery));
        assert!(
            Fault::status(1)
                .path_prefix("/apis")
                .matcher
                .matches(&discovery)
        );
    }
}
