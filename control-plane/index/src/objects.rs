//! The raw objects the translator reads, how they are parsed, and the store that keeps them.
//!
//! The store keeps objects exactly as they came (from files or from watches). The model is
//! always rebuilt from raw objects, so the result never depends on the order in which
//! objects arrived: a route whose backend Service appears later resolves when it appears.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;

use crate::api::{GrpcRoute, HttpRoute, HttpRouteGroup, ReferenceGrant, TcpRoute, TrafficSplit};

/// The kinds Lanyard reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
    HttpRoute,
    GrpcRoute,
    ReferenceGrant,
    TrafficSplit,
    HttpRouteGroup,
    TcpRoute,
}

impl Kind {
    /// The `kind` string as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::HttpRouteGroup => "HTTPRouteGroup",
            Kind::TcpRoute => "TCPRoute",
        }
    }

    fn is_namespaced(self) -> bool {
        !matches!(self, Kind::Namespace)
    }

    /// The kind for an `apiVersion` and `kind` pair, if Lanyard reads it.
    fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let version = api_version.rsplit_once('/').map_or(api_version, |(_, v)| v);
        Some(match (group, version, kind) {
            ("", "v1", "Namespace") => Kind::Namespace,
            ("", "v1", "Service") => Kind::Service,
            ("", "v1", "Pod") => Kind::Pod,
            ("discovery.k8s.io", "v1", "EndpointSlice") => Kind::EndpointSlice,
            ("gateway.networking.k8s.io", "v1" | "v1beta1", "HTTPRoute") => Kind::HttpRoute,
            ("gateway.networking.k8s.io", "v1" | "v1alpha2", "GRPCRoute") => Kind::GrpcRoute,
            ("gateway.networking.k8s.io", "v1" | "v1beta1" | "v1alpha2", "ReferenceGrant") => {
                Kind::ReferenceGrant
            }
            (
                "split.smi-spec.io",
                "v1alpha1" | "v1alpha2" | "v1alpha3" | "v1alpha4",
                "TrafficSplit",
            ) => Kind::TrafficSplit,
            (
                "specs.smi-spec.io",
                "v1alpha1" | "v1alpha2" | "v1alpha3" | "v1alpha4",
                "HTTPRouteGroup",
            ) => Kind::HttpRouteGroup,
            (
                "specs.smi-spec.io",
                "v1alpha1" | "v1alpha2" | "v1alpha3" | "v1alpha4",
                "TCPRoute",
            ) => Kind::TcpRoute,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds that are common in manifests but do not affect the mesh: skipped without a warning.
const UNUSED_KINDS: &[&str] = &[
    "ConfigMap",
    "CronJob",
    "CustomResourceDefinition",
    "DaemonSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "Ingress",
    "Job",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ReplicaSet",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "Secret",
    "ServiceAccount",
    "StatefulSet",
    "Endpoints",
    "Gateway",
    "GatewayClass",
];

/// Namespace and name of an object (`namespace` is empty for cluster-scoped kinds).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Kind, namespace and name: enough to name an object in a message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: Kind,
    pub key: ObjectKey,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)
    }
}

/// One object of a kind Lanyard reads.
// Objects only pass through this enum on their way into the store's typed maps, so boxing
// the larger variants would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Pod(Pod),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    ReferenceGrant(ReferenceGrant),
    TrafficSplit(TrafficSplit),
    HttpRouteGroup(HttpRouteGroup),
    TcpRoute(TcpRoute),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Pod(_) => Kind::Pod,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::TrafficSplit(_) => Kind::TrafficSplit,
            Object::HttpRouteGroup(_) => Kind::HttpRouteGroup,
            Object::TcpRoute(_) => Kind::TcpRoute,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::TrafficSplit(o) => &o.metadata,
            Object::HttpRouteGroup(o) => &o.metadata,
            Object::TcpRoute(o) => &o.metadata,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::HttpRoute(o) => &mut o.metadata,
            Object::GrpcRoute(o) => &mut o.metadata,
            Object::ReferenceGrant(o) => &mut o.metadata,
            Object::TrafficSplit(o) => &mut o.metadata,
            Object::HttpRouteGroup(o) => &mut o.metadata,
            Object::TcpRoute(o) => &mut o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind(),
            key: self.key(),
        }
    }
}

/// What parsing one manifest document gave.
#[derive(Debug)]
pub enum Parsed {
    /// An object Lanyard reads, with the paths of fields it did not recognise (likely typos).
    Object {
        object: Box<Object>,
        unknown_fields: Vec<String>,
    },
    /// A well-known kind that does not affect the mesh (Deployment, ConfigMap, ...).
    Unused { api_version: String, kind: String },
}

/// Why a manifest document could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("not a Kubernetes object: expected a mapping with apiVersion and kind")]
    NotAnObject,
    #[error("missing {0}")]
    MissingField(&'static str),
    #[error("unknown kind {kind} ({api_version}): Lanyard does not read it")]
    UnknownKind { api_version: String, kind: String },
    #[error("{kind} has no metadata.name")]
    MissingName { kind: Kind },
    #[error("{kind} {name}: {message}")]
    Invalid {
        kind: Kind,
        name: String,
        message: String,
    },
}

/// Parses one manifest document (already decoded from YAML or JSON). `List` objects expand
/// to their items. Namespaced objects without a namespace get `default_namespace`, as
/// `kubectl apply` does.
pub fn parse_value(
    value: serde_json::Value,
    default_namespace: &str,
) -> Vec<Result<Parsed, ParseError>> {
    let Some(map) = value.as_object() else {
        return vec![Err(ParseError::NotAnObject)];
    };
    let api_version = map.get("apiVersion").and_then(|v| v.as_str());
    let kind = map.get("kind").and_then(|v| v.as_str());
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return vec![Err(if api_version.is_none() {
            ParseError::MissingField("apiVersion")
        } else {
            ParseError::MissingField("kind")
        })];
    };
    if kind.ends_with("List") && map.get("items").is_some_and(|i| i.is_array()) {
        let items = map["items"].as_array().cloned().unwrap_or_default();
        return items
            .into_iter()
            .flat_map(|item| parse_value(item, default_namespace))
            .collect();
    }
    let Some(k) = Kind::from_type(api_version, kind) else {
        if UNUSED_KINDS.contains(&kind) {
            return vec![Ok(Parsed::Unused {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })];
        }
        return vec![Err(ParseError::UnknownKind {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        })];
    };
    let version = api_version
        .rsplit_once('/')
        .map_or(api_version, |(_, v)| v)
        .to_string();
    vec![parse_kind(k, &version, value, default_namespace)]
}

fn parse_kind(
    kind: Kind,
    version: &str,
    value: serde_json::Value,
    default_namespace: &str,
) -> Result<Parsed, ParseError> {
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .ok_or(ParseError::MissingName { kind })?
        .to_string();
    let mut unknown_fields = Vec::new();
    let mut object = match kind {
        Kind::Namespace => Object::Namespace(decode(kind, &name, value, &mut unknown_fields)?),
        Kind::Service => Object::Service(decode(kind, &name, value, &mut unknown_fields)?),
        Kind::EndpointSlice => {
            Object::EndpointSlice(decode(kind, &name, value, &mut unknown_fields)?)
        }
        Kind::Pod => Object::Pod(decode(kind, &name, value, &mut unknown_fields)?),
        Kind::HttpRoute => Object::HttpRoute(decode(kind, &name, value, &mut unknown_fields)?),
        Kind::GrpcRoute => Object::GrpcRoute(decode(kind, &name, value, &mut unknown_fields)?),
        Kind::ReferenceGrant => {
            Object::ReferenceGrant(decode(kind, &name, value, &mut unknown_fields)?)
        }
        Kind::TrafficSplit => {
            let mut split: TrafficSplit = decode(kind, &name, value, &mut unknown_fields)?;
            split.version = version.to_string();
            Object::TrafficSplit(split)
        }
        Kind::HttpRouteGroup => {
            Object::HttpRouteGroup(decode(kind, &name, value, &mut unknown_fields)?)
        }
        Kind::TcpRoute => Object::TcpRoute(decode(kind, &name, value, &mut unknown_fields)?),
    };
    let meta = object.metadata_mut();
    if kind.is_namespaced() {
        if meta.namespace.as_deref().is_none_or(str::is_empty) {
            meta.namespace = Some(default_namespace.to_string());
        }
    } else {
        meta.namespace = None;
    }
    Ok(Parsed::Object {
        object: Box::new(object),
        unknown_fields,
    })
}

fn decode<T: DeserializeOwned>(
    kind: Kind,
    name: &str,
    mut value: serde_json::Value,
    unknown_fields: &mut Vec<String>,
) -> Result<T, ParseError> {
    // apiVersion and kind are checked already; k8s-openapi types reject a mismatch there.
    if let Some(map) = value.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    serde_ignored::deserialize(value, |path| {
        // serde_ignored writes a `?` segment for every optional value on the way
        // (`spec.?.selectr`); a user writes `spec.selectr`.
        let path = path
            .to_string()
            .split('.')
            .filter(|segment| *segment != "?")
            .collect::<Vec<_>>()
            .join(".");
        // `status` is written by controllers and never read from manifests.
        if path != "status" && !path.starts_with("status.") {
            unknown_fields.push(path);
        }
    })
    .map_err(|e| ParseError::Invalid {
        kind,
        name: name.to_string(),
        message: e.to_string(),
    })
}

/// Every object Lanyard reads, by kind, namespace and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub namespaces: BTreeMap<ObjectKey, Namespace>,
    pub services: BTreeMap<ObjectKey, Service>,
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    pub pods: BTreeMap<ObjectKey, Pod>,
    pub http_routes: BTreeMap<ObjectKey, HttpRoute>,
    pub grpc_routes: BTreeMap<ObjectKey, GrpcRoute>,
    pub reference_grants: BTreeMap<ObjectKey, ReferenceGrant>,
    pub traffic_splits: BTreeMap<ObjectKey, TrafficSplit>,
    pub http_route_groups: BTreeMap<ObjectKey, HttpRouteGroup>,
    pub tcp_routes: BTreeMap<ObjectKey, TcpRoute>,
}

impl Objects {
    /// Adds or replaces an object.
    pub fn apply(&mut self, object: Object) {
        let key = object.key();
        match object {
            Object::Namespace(o) => {
                self.namespaces.insert(key, o);
            }
            Object::Service(o) => {
                self.services.insert(key, o);
            }
            Object::EndpointSlice(o) => {
                self.endpoint_slices.insert(key, o);
            }
            Object::Pod(o) => {
                self.pods.insert(key, o);
            }
            Object::HttpRoute(o) => {
                self.http_routes.insert(key, o);
            }
            Object::GrpcRoute(o) => {
                self.grpc_routes.insert(key, o);
            }
            Object::ReferenceGrant(o) => {
                self.reference_grants.insert(key, o);
            }
            Object::TrafficSplit(o) => {
                self.traffic_splits.insert(key, o);
            }
            Object::HttpRouteGroup(o) => {
                self.http_route_groups.insert(key, o);
            }
            Object::TcpRoute(o) => {
                self.tcp_routes.insert(key, o);
            }
        }
    }

    /// Removes an object; removing one that is not there is not an error.
    pub fn delete(&mut self, object: &ObjectRef) {
        let key = &object.key;
        match object.kind {
            Kind::Namespace => drop(self.namespaces.remove(key)),
            Kind::Service => drop(self.services.remove(key)),
            Kind::EndpointSlice => drop(self.endpoint_slices.remove(key)),
            Kind::Pod => drop(self.pods.remove(key)),
            Kind::HttpRoute => drop(self.http_routes.remove(key)),
            Kind::GrpcRoute => drop(self.grpc_routes.remove(key)),
            Kind::ReferenceGrant => drop(self.reference_grants.remove(key)),
            Kind::TrafficSplit => drop(self.traffic_splits.remove(key)),
            Kind::HttpRouteGroup => drop(self.http_route_groups.remove(key)),
            Kind::TcpRoute => drop(self.tcp_routes.remove(key)),
        }
    }

    /// Keeps, of one kind, only the objects whose key satisfies `keep` (a watch's relist
    /// replaces exactly the objects it covers).
    pub fn retain(&mut self, kind: Kind, mut keep: impl FnMut(&ObjectKey) -> bool) {
        match kind {
            Kind::Namespace => self.namespaces.retain(|k, _| keep(k)),
            Kind::Service => self.services.retain(|k, _| keep(k)),
            Kind::EndpointSlice => self.endpoint_slices.retain(|k, _| keep(k)),
            Kind::Pod => self.pods.retain(|k, _| keep(k)),
            Kind::HttpRoute => self.http_routes.retain(|k, _| keep(k)),
            Kind::GrpcRoute => self.grpc_routes.retain(|k, _| keep(k)),
            Kind::ReferenceGrant => self.reference_grants.retain(|k, _| keep(k)),
            Kind::TrafficSplit => self.traffic_splits.retain(|k, _| keep(k)),
            Kind::HttpRouteGroup => self.http_route_groups.retain(|k, _| keep(k)),
            Kind::TcpRoute => self.tcp_routes.retain(|k, _| keep(k)),
        }
    }

    /// The stored object of this kind and key, cloned.
    pub fn get(&self, object: &ObjectRef) -> Option<Object> {
        let key = &object.key;
        match object.kind {
            Kind::Namespace => self.namespaces.get(key).cloned().map(Object::Namespace),
            Kind::Service => self.services.get(key).cloned().map(Object::Service),
            Kind::EndpointSlice => self
                .endpoint_slices
                .get(key)
                .cloned()
                .map(Object::EndpointSlice),
            Kind::Pod => self.pods.get(key).cloned().map(Object::Pod),
            Kind::HttpRoute => self.http_routes.get(key).cloned().map(Object::HttpRoute),
            Kind::GrpcRoute => self.grpc_routes.get(key).cloned().map(Object::GrpcRoute),
            Kind::ReferenceGrant => self
                .reference_grants
                .get(key)
                .cloned()
                .map(Object::ReferenceGrant),
            Kind::TrafficSplit => self
                .traffic_splits
                .get(key)
                .cloned()
                .map(Object::TrafficSplit),
            Kind::HttpRouteGroup => self
                .http_route_groups
                .get(key)
                .cloned()
                .map(Object::HttpRouteGroup),
            Kind::TcpRoute => self.tcp_routes.get(key).cloned().map(Object::TcpRoute),
        }
    }

    /// Whether an object of this kind and key is stored.
    pub fn contains(&self, object: &ObjectRef) -> bool {
        let key = &object.key;
        match object.kind {
            Kind::Namespace => self.namespaces.contains_key(key),
            Kind::Service => self.services.contains_key(key),
            Kind::EndpointSlice => self.endpoint_slices.contains_key(key),
            Kind::Pod => self.pods.contains_key(key),
            Kind::HttpRoute => self.http_routes.contains_key(key),
            Kind::GrpcRoute => self.grpc_routes.contains_key(key),
            Kind::ReferenceGrant => self.reference_grants.contains_key(key),
            Kind::TrafficSplit => self.traffic_splits.contains_key(key),
            Kind::HttpRouteGroup => self.http_route_groups.contains_key(key),
            Kind::TcpRoute => self.tcp_routes.contains_key(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_one(value: serde_json::Value) -> Result<Parsed, ParseError> {
        let mut all = parse_value(value, "default");
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    #[test]
    fn a_route_without_namespace_lands_in_the_default_namespace() {
        let parsed = parse_one(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "s"}]}
        }))
        .unwrap();
        let Parsed::Object { object, .. } = parsed else {
            panic!("expected an object")
        };
        assert_eq!(object.object_ref().to_string(), "HTTPRoute default/r");
    }

    #[test]
    fn unknown_fields_are_reported_by_path() {
        let parsed = parse_one(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"parentRef": [], "rules": [{"matchs": []}]},
            "status": {"parents": []}
        }))
        .unwrap();
        let Parsed::Object { unknown_fields, .. } = parsed else {
            panic!("expected an object")
        };
        assert_eq!(
            unknown_fields,
            vec!["spec.parentRef", "spec.rules.0.matchs"]
        );
    }

    #[test]
    fn unknown_fields_under_optional_values_read_as_the_user_wrote_them() {
        let parsed = parse_one(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"selectr": {"app": "a"}}
        }))
        .unwrap();
        let Parsed::Object { unknown_fields, .. } = parsed else {
            panic!("expected an object")
        };
        assert_eq!(unknown_fields, vec!["spec.selectr"]);
    }

    #[test]
    fn kinds_are_told_apart() {
        assert!(matches!(
            parse_one(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}})
            ),
            Ok(Parsed::Unused { .. })
        ));
        assert_eq!(
            parse_one(
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
            )
            .unwrap_err()
            .to_string(),
            "unknown kind Widget (example.com/v1): Lanyard does not read it"
        );
        assert_eq!(
            parse_one(json!({"kind": "Service"})).unwrap_err(),
            ParseError::MissingField("apiVersion")
        );
        assert_eq!(
            parse_one(json!(["a"])).unwrap_err(),
            ParseError::NotAnObject
        );
    }

    #[test]
    fn a_type_error_names_the_object() {
        let err = parse_one(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"ports": [{"port": "eighty"}]}
        }))
        .unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("Service s: "), "{message}");
    }

    #[test]
    fn lists_expand_to_their_items() {
        let all = parse_value(
            json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}
            ]}),
            "default",
        );
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|p| p.is_ok()));
    }

    #[test]
    fn the_store_replaces_and_deletes() {
        let mut objects = Objects::default();
        let ns = |name: &str| {
            Object::Namespace(Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                ..Default::default()
            })
        };
        objects.apply(ns("a"));
        objects.apply(ns("a"));
        assert_eq!(objects.namespaces.len(), 1);
        let r = ns("a").object_ref();
        assert!(objects.contains(&r));
        objects.delete(&r);
        objects.delete(&r);
        assert!(!objects.contains(&r));

        objects.apply(ns("a"));
        objects.apply(ns("b"));
        objects.retain(Kind::Namespace, |k| k.name == "b");
        assert!(!objects.contains(&r));
        assert!(objects.contains(&ns("b").object_ref()));
    }

    fn parsed_object(value: serde_json::Value) -> (Object, Vec<String>) {
        match parse_one(value).unwrap() {
            Parsed::Object {
                object,
                unknown_fields,
            } => (*object, unknown_fields),
            other => panic!("expected an object, got {other:?}"),
        }
    }

    fn split_weights(version: &str, weights: serde_json::Value) -> Vec<Result<u64, String>> {
        let (object, unknown) = parsed_object(json!({
            "apiVersion": format!("split.smi-spec.io/{version}"), "kind": "TrafficSplit",
            "metadata": {"name": "t", "namespace": "shop"},
            "spec": {"service": "web", "backends": [
                {"service": "web-v1", "weight": weights[0]},
                {"service": "web-v2", "weight": weights[1]}
            ]}
        }));
        assert!(unknown.is_empty(), "{unknown:?}");
        let Object::TrafficSplit(split) = object else {
            panic!("expected a TrafficSplit")
        };
        assert_eq!(split.version, version);
        assert_eq!(split.spec.service, "web");
        assert_eq!(split.spec.backends[1].service, "web-v2");
        split.weights()
    }

    #[test]
    fn traffic_split_v1alpha1_weights_are_quantities() {
        assert_eq!(
            split_weights("v1alpha1", json!(["500m", "1"])),
            vec![Ok(5), Ok(10)]
        );
        assert_eq!(
            split_weights("v1alpha1", json!(["10m", "990m"])),
            vec![Ok(1), Ok(99)]
        );
        assert_eq!(
            split_weights("v1alpha1", json!(["1e3", "2T"])),
            vec![Ok(1), Ok(2_000_000_000)]
        );
        // 1Ti is 733 trillion times 1500u: scaled into 32 bits, the small share stays 1.
        let scaled = split_weights("v1alpha1", json!(["1Ti", "1500u"]));
        assert!(
            scaled[0].as_ref().is_ok_and(|&w| w > 4_000_000_000),
            "{scaled:?}"
        );
        assert_eq!(scaled[1], Ok(1));
        // A bare number is a quantity too.
        assert_eq!(
            split_weights("v1alpha1", json!([1, "0"])),
            vec![Ok(1), Ok(0)]
        );
        let bad = split_weights("v1alpha1", json!(["-100m", "lots"]));
        assert!(bad.iter().all(Result::is_err), "{bad:?}");
    }

    #[test]
    fn traffic_split_v1alpha2_to_v1alpha4_weights_are_integers() {
        for version in ["v1alpha2", "v1alpha3", "v1alpha4"] {
            assert_eq!(
                split_weights(version, json!([90, 10])),
                vec![Ok(90), Ok(10)]
            );
            let bad = split_weights(version, json!([-1, "10m"]));
            assert!(bad.iter().all(Result::is_err), "{version}: {bad:?}");
        }
    }

    #[test]
    fn traffic_split_matches_from_v1alpha3() {
        for version in ["v1alpha3", "v1alpha4"] {
            let (object, unknown) = parsed_object(json!({
                "apiVersion": format!("split.smi-spec.io/{version}"), "kind": "TrafficSplit",
                "metadata": {"name": "t"},
                "spec": {"service": "web",
                    "matches": [{"kind": "HTTPRouteGroup", "name": "beta", "apiGroup": "specs.smi-spec.io"}],
                    "backends": [{"service": "web-v2", "weight": 100}]}
            }));
            assert!(unknown.is_empty(), "{unknown:?}");
            let Object::TrafficSplit(split) = object else {
                panic!("expected a TrafficSplit")
            };
            assert_eq!(split.metadata.namespace.as_deref(), Some("default"));
            assert_eq!(split.spec.matches.len(), 1);
            assert_eq!(split.spec.matches[0].name, "beta");
            assert_eq!(
                split.spec.matches[0].kind.as_deref(),
                Some("HTTPRouteGroup")
            );
        }
        assert!(matches!(
            parse_one(
                json!({"apiVersion": "split.smi-spec.io/v1beta1", "kind": "TrafficSplit",
                "metadata": {"name": "t"}})
            ),
            Err(ParseError::UnknownKind { .. })
        ));
    }

    #[test]
    fn http_route_group_every_version() {
        for version in ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"] {
            let matches = json!([
                {"name": "get-api", "pathRegex": "^/api$", "methods": ["GET"]},
                {"name": "beta", "headers": [{"cookie": "version=beta"}]},
                {"name": "map", "headers": {"x-canary": "true"}}
            ]);
            let mut value = json!({
                "apiVersion": format!("specs.smi-spec.io/{version}"), "kind": "HTTPRouteGroup",
                "metadata": {"name": "g", "namespace": "shop"}
            });
            // v1alpha1 and v1alpha2 keep matches at the top level, later versions in spec.
            if matches!(version, "v1alpha1" | "v1alpha2") {
                value["matches"] = matches;
            } else {
                value["spec"] = json!({"matches": matches});
            }
            let (object, unknown) = parsed_object(value);
            assert!(unknown.is_empty(), "{version}: {unknown:?}");
            let Object::HttpRouteGroup(group) = object else {
                panic!("expected an HTTPRouteGroup")
            };
            let m = &group.spec.matches;
            assert_eq!(m.len(), 3, "{version}");
            assert_eq!(m[0].path_regex.as_deref(), Some("^/api$"));
            assert_eq!(m[0].methods, vec!["GET"]);
            assert_eq!(
                m[1].headers(),
                vec![("cookie".into(), "version=beta".into())]
            );
            assert_eq!(m[2].headers(), vec![("x-canary".into(), "true".into())]);
        }
    }

    #[test]
    fn tcp_route_ports() {
        let (object, unknown) = parsed_object(json!({
            "apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
            "metadata": {"name": "db"},
            "spec": {"matches": {"name": "pg", "ports": [5432]}}
        }));
        assert!(unknown.is_empty(), "{unknown:?}");
        let Object::TcpRoute(route) = object else {
            panic!("expected a TCPRoute")
        };
        assert_eq!(route.spec.matches.ports, vec![5432]);
        for version in ["v1alpha1", "v1alpha2", "v1alpha3"] {
            let (object, _) = parsed_object(json!({
                "apiVersion": format!("specs.smi-spec.io/{version}"), "kind": "TCPRoute",
                "metadata": {"name": "db"}
            }));
            assert_eq!(object.kind(), Kind::TcpRoute);
        }
    }

    #[test]
    fn smi_objects_are_stored_and_deleted() {
        let mut objects = Objects::default();
        let (object, _) = parsed_object(json!({
            "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": {"name": "t", "namespace": "shop"},
            "spec": {"service": "web", "backends": []}
        }));
        let r = object.object_ref();
        assert_eq!(r.to_string(), "TrafficSplit shop/t");
        objects.apply(object);
        assert!(objects.contains(&r));
        objects.delete(&r);
        assert!(objects.traffic_splits.is_empty());
    }
}
