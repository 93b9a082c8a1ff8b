//! The SMI kinds as they are written on the wire, one module per version: the source of the
//! OpenAPI schemas in Lanyard's SMI CRDs (`crds/smi/`).
//!
//! These types describe what the API server accepts. They are not what Lanyard reads:
//! `lanyard_index::api::smi` parses every version leniently into one shape and reports bad
//! values itself. Field and schema choices follow smi-spec, smi-sdk-go and OSM's CRDs:
//! HTTPRouteGroup headers are a list of single-key maps, TrafficSplit `matches` only refer
//! to HTTPRouteGroups. Each root type holds the fields beside `apiVersion`, `kind` and
//! `metadata`, which [`super`] adds.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A Kubernetes quantity: a whole number or a string such as `"500m"` or `"1"`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Quantity {
    Int(i64),
    String(String),
}

/// The pattern the API server uses for `resource.Quantity`, with the exponent narrowed to
/// at most nine whole digits: the API server's pattern also accepts `1e1.5`, which its own
/// parser refuses (apimachinery suffix.go reads the exponent with `ParseInt`), and so does
/// Lanyard's (`lanyard_index::api::smi::quantity`), which keeps exponents in 32 bits.
pub const QUANTITY_PATTERN: &str =
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,9}))?$";

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": true,
        })
    }
}

/// The one kind a TrafficSplit match may refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum MatchKind {
    #[serde(rename = "HTTPRouteGroup")]
    HttpRouteGroup,
}

/// An HTTP method, or `*` for all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum HttpMethod {
    #[serde(rename = "*")]
    Any,
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "HEAD")]
    Head,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "DELETE")]
    Delete,
    #[serde(rename = "CONNECT")]
    Connect,
    #[serde(rename = "OPTIONS")]
    Options,
    #[serde(rename = "TRACE")]
    Trace,
    #[serde(rename = "PATCH")]
    Patch,
}

/// TrafficSplit `split.smi-spec.io/v1alpha1`: weights are quantities.
pub mod split_v1alpha1 {
    use super::*;

    /// TrafficSplit splits the traffic clients send to a Service between backend Services.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TrafficSplit {
        pub spec: TrafficSplitSpec,
    }

    /// The root Service and the backends its traffic is split between.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TrafficSplitSpec {
        /// The apex Service that clients call.
        pub service: String,
        /// The backend Services of this split.
        pub backends: Vec<TrafficSplitBackend>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TrafficSplitBackend {
        /// Name of a Service in the same namespace.
        pub service: String,
        /// Relative weight of this backend, a quantity ("500m" is half of "1").
        pub weight: Quantity,
    }
}

/// TrafficSplit `split.smi-spec.io/v1alpha2`: whole-number weights, no matches.
pub mod split_v1alpha2 {
    use super::*;

    /// TrafficSplit splits the traffic clients send to a Service between backend Services.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TrafficSplit {
        pub spec: TrafficSplitSpec,
    }

    /// The root Service and the backends its traffic is split between.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TrafficSplitSpec {
        /// The apex Service that clients call.
        pub service: String,
        /// The backend Services of this split.
        pub backends: Vec<TrafficSplitBackend>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TrafficSplitBackend {
        /// Name of a Service in the same namespace.
        pub service: String,
        /// Relative weight of this backend (a whole number; 0 sends it nothing).
        pub weight: i64,
    }
}

/// TrafficSplit `split.smi-spec.io/v1alpha3` and `v1alpha4` (the same schema): adds
/// `spec.matches`.
pub mod split_v1alpha3 {
    pub use super::split_v1alpha2::TrafficSplitBackend;
    use super::*;

    /// TrafficSplit splits the traffic clients send to a Service between backend Services.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TrafficSplit {
        pub spec: TrafficSplitSpec,
    }

    /// The root Service, the backends its traffic is split between, and which requests.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TrafficSplitSpec {
        /// The apex Service that clients call.
        pub service: String,
        /// The HTTPRouteGroups whose matches select the requests this split applies to.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub matches: Option<Vec<TrafficSplitMatch>>,
        /// The backend Services of this split.
        pub backends: Vec<TrafficSplitBackend>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct TrafficSplitMatch {
        /// Kind of the referenced object.
        pub kind: MatchKind,
        /// Name of an HTTPRouteGroup in the same namespace.
        pub name: String,
        /// API group of the referenced object (specs.smi-spec.io).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub api_group: Option<String>,
    }
}

/// One HTTP match (the same in every HTTPRouteGroup version).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// Name of the match, as TrafficTarget rules refer to it.
    pub name: String,
    /// Regular expression the request path must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// HTTP methods the match applies to; "*" is all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<HttpMethod>>,
    /// Header conditions, each a single-key map from header name to a value regex; all must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<BTreeMap<String, String>>>,
}

/// HTTPRouteGroup `specs.smi-spec.io/v1alpha1` and `v1alpha2`: `matches` at the top level.
pub mod route_group_v1alpha1 {
    use super::*;

    /// HTTPRouteGroup names sets of HTTP requests (path, methods, headers) that TrafficSplits and TrafficTargets refer to.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct HttpRouteGroup {
        /// Match conditions of this route group.
        pub matches: Vec<HttpMatch>,
    }
}

/// HTTPRouteGroup `specs.smi-spec.io/v1alpha3` and `v1alpha4`: `matches` under `spec`.
pub mod route_group_v1alpha3 {
    use super::*;

    /// HTTPRouteGroup names sets of HTTP requests (path, methods, headers) that TrafficSplits and TrafficTargets refer to.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct HttpRouteGroup {
        pub spec: HttpRouteGroupSpec,
    }

    /// The HTTP requests this route group describes.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct HttpRouteGroupSpec {
        /// Match conditions of this route group.
        pub matches: Vec<HttpMatch>,
    }
}

/// TCPRoute `specs.smi-spec.io/v1alpha1` to `v1alpha3`: an empty spec.
pub mod tcp_route_v1alpha1 {
    use super::*;

    /// TCPRoute describes TCP traffic, for TrafficTargets to refer to.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TcpRoute {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub spec: Option<TcpRouteSpec>,
    }

    /// Empty in this version: the route describes all TCP traffic.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TcpRouteSpec {}
}

/// TCPRoute `specs.smi-spec.io/v1alpha4`: `spec.matches.ports`.
pub mod tcp_route_v1alpha4 {
    use super::*;

    /// TCPRoute describes TCP traffic, for TrafficTargets to refer to.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TcpRoute {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub spec: Option<TcpRouteSpec>,
    }

    /// The TCP traffic this route describes.
    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TcpRouteSpec {
        /// Match conditions of this route.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub matches: Option<TcpMatch>,
    }

    #[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
    pub struct TcpMatch {
        /// Name of the match.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
        /// Port numbers to match; empty or absent matches every port.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub ports: Option<Vec<i32>>,
    }
}
