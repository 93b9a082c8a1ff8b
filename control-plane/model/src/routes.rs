//! Route tables: what a client's proxy does with a request to a Service port.
//!
//! A table is an ordered list of [`Route`]s: the first whose [`RequestMatch`] matches the
//! request wins. The index has already sorted them by the Gateway API precedence rules and
//! lowered every protocol-specific match (gRPC service/method) into HTTP terms. A request that
//! matches no route gets 404.

use std::time::Duration;

use serde::Serialize;

use crate::keys::ServicePortKey;
use crate::service::Protocol;

/// Ordered routes for one Service port as one audience sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteTable {
    /// `Grpc` when the table came from GRPCRoutes (HTTP/2 semantics), `Http` otherwise.
    pub protocol: Protocol,
    /// In precedence order; first match wins.
    pub routes: Vec<Route>,
}

/// One match and what to do with the requests it matches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Route {
    pub matcher: RequestMatch,
    pub action: Action,
    /// Applied to the request before it is forwarded (rule-level RequestHeaderModifier).
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub request_headers: HeaderModifier,
    /// Applied to the response (rule-level ResponseHeaderModifier).
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub response_headers: HeaderModifier,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    #[serde(skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

impl Route {
    /// A route with this match and action and nothing else: no header changes, mirrors,
    /// CORS, timeouts or retries.
    pub fn new(matcher: RequestMatch, action: Action) -> Self {
        Self {
            matcher,
            action,
            request_headers: HeaderModifier::default(),
            response_headers: HeaderModifier::default(),
            mirrors: Vec::new(),
            cors: None,
            timeouts: Timeouts::default(),
            retry: None,
        }
    }
}

/// All conditions must hold (AND). An empty match matches every request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestMatch {
    pub path: PathMatch,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// How the request path is matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact(String),
    /// Matches the prefix on `/`-separated segments: `/foo` matches `/foo` and `/foo/bar`,
    /// not `/foobar`. `/` matches everything.
    Prefix(String),
    /// An RE2-style regular expression over the whole path.
    Regex(String),
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch::Prefix("/".to_string())
    }
}

/// A string comparison.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    Exact(String),
    Regex(String),
}

/// A header condition. Names are lower case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    pub name: String,
    pub value: StringMatch,
}

/// A query parameter condition. Names are case-sensitive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: StringMatch,
}

/// What happens to a matched request.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    /// Answer directly with this status (for instance 500 when no backend is usable).
    DirectResponse {
        status: u16,
    },
}

/// Forward to weighted backends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Forward {
    /// Backends with a weight above zero, in the route's order. Never empty: a rule without
    /// usable weight becomes a `DirectResponse`.
    pub backends: Vec<Backend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<UrlRewrite>,
}

/// One weighted backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backend {
    pub target: BackendTarget,
    pub weight: u32,
    /// Backend-level RequestHeaderModifier.
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub request_headers: HeaderModifier,
    /// Backend-level ResponseHeaderModifier.
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub response_headers: HeaderModifier,
    /// The Host this backend's share is sent with (a backend-level RequestHeaderModifier that
    /// sets Host, which proxies take only as a host rewrite). Overrides the rule's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
}

impl Backend {
    /// A backend with this target and weight and no header changes.
    pub fn new(target: BackendTarget, weight: u32) -> Self {
        Self {
            target,
            weight,
            request_headers: HeaderModifier::default(),
            response_headers: HeaderModifier::default(),
            host_rewrite: None,
        }
    }
}

/// Where a backend's share of traffic goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendTarget {
    /// A Service port inside the mesh.
    Service(ServicePortKey),
    /// A reference that could not be resolved: its share is answered with 500.
    Unresolved,
}

/// Header changes as the Gateway API defines them:
/// `set` replaces, `add` appends, `remove` deletes. Names keep the case the user gave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderModifier {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModifier {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Appends another modifier's changes after this one's.
    pub fn extend(&mut self, other: HeaderModifier) {
        self.set.extend(other.set);
        self.add.extend(other.add);
        self.remove.extend(other.remove);
    }
}

/// An HTTP redirect. Unset parts keep the request's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redirect {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// A URL rewrite applied before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UrlRewrite {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
}

/// A path rewrite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched path prefix (the route's `PathMatch::Prefix`) with this.
    Prefix(String),
}

/// Copy requests to another backend and ignore its responses.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mirror {
    pub target: ServicePortKey,
    /// Share of requests mirrored, 0–100. 100 when unset in the route.
    pub percent: f64,
}

/// Cross-origin resource sharing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cors {
    /// Origins, possibly with a `*` wildcard (`https://*.example.com`); `*` alone allows any.
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u32>,
}

/// Timeouts (Gateway API `timeouts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// Whole request, retries included. `Some(ZERO)` disables the timeout.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub request: Option<Duration>,
    /// Each attempt to a backend.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub backend_request: Option<Duration>,
}

impl Timeouts {
    pub fn is_empty(&self) -> bool {
        self.request.is_none() && self.backend_request.is_none()
    }
}

/// Retries (GEP-1731).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// HTTP status codes that trigger a retry; connection failures always do.
    pub codes: Vec<u16>,
    /// Maximum retries (not counting the first attempt).
    pub attempts: u32,
    /// Base back-off between attempts.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub backoff: Option<Duration>,
}

mod opt_duration {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }
}
