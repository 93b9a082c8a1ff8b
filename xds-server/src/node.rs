//! Who is asking: a proxy's identity, read from the xDS `Node` of the first request on a
//! stream.
//!
//! # Convention
//!
//! The injection webhook writes these into the proxy's bootstrap; a proxyless gRPC client's
//! bootstrap (`GRPC_XDS_BOOTSTRAP`) sets them by hand. Like Istio, `node.metadata` (a
//! `google.protobuf.Struct`) carries:
//!
//! | key               | value                                              |
//! |-------------------|----------------------------------------------------|
//! | `NAMESPACE`       | the pod's namespace (string)                       |
//! | `POD_NAME`        | the pod's name (string)                            |
//! | `SERVICE_ACCOUNT` | the pod's service account (string)                 |
//! | `INSTANCE_IPS`    | the pod's IPs, comma-separated (string)            |
//! | `LABELS`          | the pod's labels (a struct of strings)             |
//!
//! Without metadata, `node.id` names the pod: `<pod>.<namespace>` (namespaces have no dots,
//! so the namespace is what follows the last dot), or Istio's
//! `sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>` (the `<ip>` is then an
//! instance IP). Metadata wins where both say something.
//!
//! What kind of client a node is comes from `node.user_agent_name`: gRPC's xDS clients name
//! themselves (`gRPC C-core ...`, `gRPC Go`, `gRPC Java`, ...), so a name containing `grpc` (any
//! case) is a proxyless gRPC client and gets route configurations lowered for gRPC (see
//! [`ProxyKind`]); anything else (Envoy sends `envoy`) is served as an Envoy sidecar.
//!
//! A node without a namespace is refused with `InvalidArgument`: which routes a proxy sees
//! depends on it. A pod the model does not know (yet) gets its namespace's view without
//! inbound listeners, and its own view once the pod shows up.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use lanyard_model::{NamespaceName, WorkloadKey};

use crate::limits::{self, NodeLimits};

/// Metadata key: the pod's namespace.
pub const NAMESPACE: &str = "NAMESPACE";
/// Metadata key: the pod's name.
pub const POD_NAME: &str = "POD_NAME";
/// Metadata key: the pod's service account.
pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
/// Metadata key: the pod's IPs, comma-separated.
pub const INSTANCE_IPS: &str = "INSTANCE_IPS";
/// Metadata key: the pod's labels, a struct of strings.
pub const LABELS: &str = "LABELS";

/// Why a node cannot be served. The message is what the client gets in its gRPC status and
/// what the log says: whatever of the node it repeats is clipped ([`limits::clip`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The first request of the stream has no `node`.
    #[error(
        "the first request on an ADS stream must carry `node` (set node.id, and node.metadata.NAMESPACE, in the bootstrap)"
    )]
    Missing,
    /// Neither the metadata nor the id names a namespace.
    #[error(
        "node \"{}\" has no namespace: set node.metadata.NAMESPACE in the bootstrap, or use a node id of the form <pod>.<namespace> (or sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local)",
        limits::clip(.0, limits::CLIENT_TEXT)
    )]
    NoNamespace(String),
    /// The namespace is not a valid Kubernetes namespace name.
    #[error(
        "node \"{}\" names namespace \"{}\", which is not a valid namespace name (lower case letters, digits and '-', at most 63)",
        limits::clip(node, limits::CLIENT_TEXT),
        limits::clip(namespace, limits::CLIENT_TEXT)
    )]
    InvalidNamespace {
        /// The node id.
        node: String,
        /// The namespace it gave.
        namespace: String,
    },
    /// A part of the node is over its [`NodeLimits`] bound; nothing of it was kept.
    #[error("node {what} is {size} {unit}, over the limit of {limit} (--{flag})")]
    OverLimit {
        /// Which part (`id`, `metadata`, ...).
        what: &'static str,
        /// Its size.
        size: usize,
        /// The bound.
        limit: usize,
        /// `bytes` or `labels`.
        unit: &'static str,
        /// The controller flag that sets the bound.
        flag: &'static str,
        /// The limit's short name: the `limit` label of `lanyard_xds_limit_refusals_total`.
        name: &'static str,
    },
}

impl NodeError {
    /// The name of the limit the node is over (the `limit` label of
    /// `lanyard_xds_limit_refusals_total`), `None` when it is malformed instead.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            NodeError::OverLimit { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The status the stream ends with: RESOURCE_EXHAUSTED over a limit, else
    /// INVALID_ARGUMENT.
    pub fn status(&self) -> tonic::Status {
        match self {
            NodeError::OverLimit { .. } => tonic::Status::resource_exhausted(self.to_string()),
            _ => tonic::Status::invalid_argument(self.to_string()),
        }
    }
}

/// `Err(OverLimit)` when `size` is over `limit`.
fn within(
    (what, name, flag, unit): (&'static str, &'static str, &'static str, &'static str),
    size: usize,
    limit: usize,
) -> Result<(), NodeError> {
    if size <= limit {
        return Ok(());
    }
    Err(NodeError::OverLimit {
        what,
        size,
        limit,
        unit,
        flag,
        name,
    })
}

/// Checks a node against `limits` before anything of it is copied.
fn check(node: &Node, limits: &NodeLimits) -> Result<(), NodeError> {
    within(
        ("id", "node_id", "node-id-max-bytes", "bytes"),
        node.id.len(),
        limits.id_bytes,
    )?;
    within(
        ("cluster", "node_cluster", "node-cluster-max-bytes", "bytes"),
        node.cluster.len(),
        limits.cluster_bytes,
    )?;
    let Some(metadata) = &node.metadata else {
        return Ok(());
    };
    within(
        (
            "metadata",
            "node_metadata",
            "node-metadata-max-bytes",
            "bytes",
        ),
        prost::Message::encoded_len(metadata),
        limits.metadata_bytes,
    )?;
    let Some(Kind::StructValue(labels)) = metadata.fields.get(LABELS).and_then(|v| v.kind.as_ref())
    else {
        return Ok(());
    };
    within(
        ("LABELS", "node_labels", "node-max-labels", "labels"),
        labels.fields.len(),
        limits.labels,
    )?;
    for (key, value) in &labels.fields {
        within(
            (
                "LABELS key",
                "node_label_key",
                "node-label-key-max-bytes",
                "bytes",
            ),
            key.len(),
            limits.label_key_bytes,
        )?;
        if let Some(Kind::StringValue(value)) = &value.kind {
            within(
                (
                    "LABELS value",
                    "node_label_value",
                    "node-label-value-max-bytes",
                    "bytes",
                ),
                value.len(),
                limits.label_value_bytes,
            )?;
        }
    }
    Ok(())
}

/// What kind of xDS client a proxy is: it decides the form of the route configurations it
/// gets, since gRPC's xDS client accepts less than Envoy and matches differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProxyKind {
    /// An Envoy sidecar (or any client that is not gRPC).
    #[default]
    Envoy,
    /// A proxyless gRPC client (`xds:///` targets).
    Grpc,
}

impl ProxyKind {
    /// The kind a node's `user_agent_name` names.
    pub fn from_user_agent(user_agent_name: &str) -> ProxyKind {
        if user_agent_name.to_ascii_lowercase().contains("grpc") {
            ProxyKind::Grpc
        } else {
            ProxyKind::Envoy
        }
    }

    /// `envoy` or `grpc`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Envoy => "envoy",
            ProxyKind::Grpc => "grpc",
        }
    }
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A proxy, as its node describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyIdentity {
    /// `node.id`, as sent.
    pub node_id: String,
    /// Envoy or proxyless gRPC, from `node.user_agent_name`.
    pub kind: ProxyKind,
    /// The namespace: which route variants the proxy sees.
    pub namespace: NamespaceName,
    /// The pod, when named.
    pub pod: Option<String>,
    /// The service account, when given.
    pub service_account: Option<String>,
    /// Instance IPs, when given.
    pub ips: Vec<IpAddr>,
    /// Pod labels, when given.
    pub labels: BTreeMap<String, String>,
}

impl ProxyIdentity {
    /// Reads the identity from a node (see the [module docs](self) for the convention),
    /// within the default [`NodeLimits`].
    pub fn from_node(node: Option<&Node>) -> Result<ProxyIdentity, NodeError> {
        ProxyIdentity::from_node_within(node, &NodeLimits::default())
    }

    /// Reads the identity from a node, refusing one over `limits` before copying anything
    /// of it.
    pub fn from_node_within(
        node: Option<&Node>,
        limits: &NodeLimits,
    ) -> Result<ProxyIdentity, NodeError> {
        let node = node.ok_or(NodeError::Missing)?;
        check(node, limits)?;
        let metadata = node.metadata.as_ref();
        let parsed = parse_id(&node.id);
        let namespace = string_field(metadata, NAMESPACE)
            .or_else(|| parsed.as_ref().map(|p| p.namespace.to_string()))
            .ok_or_else(|| NodeError::NoNamespace(node.id.clone()))?;
        if !is_dns_label(&namespace) {
            return Err(NodeError::InvalidNamespace {
                node: node.id.clone(),
                namespace,
            });
        }
        let pod = string_field(metadata, POD_NAME)
            .or_else(|| parsed.as_ref().map(|p| p.pod.to_string()))
            .filter(|p| !p.is_empty());
        let mut ips: Vec<IpAddr> = string_field(metadata, INSTANCE_IPS)
            .map(|ips| {
                ips.split(',')
                    .filter_map(|ip| ip.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if ips.is_empty() {
            ips.extend(parsed.as_ref().and_then(|p| p.ip));
        }
        Ok(ProxyIdentity {
            node_id: node.id.clone(),
            kind: ProxyKind::from_user_agent(&node.user_agent_name),
            namespace: NamespaceName::new(namespace),
            pod,
            service_account: string_field(metadata, SERVICE_ACCOUNT),
            ips,
            labels: labels(metadata),
        })
    }

    /// The pod, as a workload key, when the node names one.
    pub fn workload_key(&self) -> Option<WorkloadKey> {
        self.pod
            .as_ref()
            .map(|pod| WorkloadKey::new(self.namespace.as_str(), pod.as_str()))
    }

    /// `namespace/pod`, or the namespace alone for a client without a pod.
    pub fn pod_ref(&self) -> String {
        match &self.pod {
            Some(pod) => format!("{}/{pod}", self.namespace),
            None => self.namespace.to_string(),
        }
    }
}

impl fmt::Display for ProxyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.node_id, self.pod_ref())
    }
}

struct ParsedId<'a> {
    pod: &'a str,
    namespace: &'a str,
    ip: Option<IpAddr>,
}

/// `<pod>.<namespace>` or `sidecar~<ip>~<pod>.<namespace>~<domain>`.
fn parse_id(id: &str) -> Option<ParsedId<'_>> {
    let parts: Vec<&str> = id.split('~').collect();
    let (name, ip) = match parts.as_slice() {
        [_kind, ip, name, _domain] => (*name, ip.parse().ok()),
        [name] => (*name, None),
        _ => return None,
    };
    let (pod, namespace) = name.rsplit_once('.')?;
    (!namespace.is_empty()).then_some(ParsedId { pod, namespace, ip })
}

fn string_field(metadata: Option<&Struct>, key: &str) -> Option<String> {
    match metadata?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn labels(metadata: Option<&Struct>) -> BTreeMap<String, String> {
    let Some(Kind::StructValue(labels)) = metadata
        .and_then(|m| m.fields.get(LABELS))
        .and_then(|v| v.kind.as_ref())
    else {
        return BTreeMap::new();
    };
    labels
        .fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

/// RFC 1123 label: what a namespace name must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::google::protobuf::Value;

    use super::*;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.to_string())),
        }
    }

    fn mk_node(id: &str, metadata: &[(&str, Value)]) -> Node {
        Node {
            id: id.to_string(),
            metadata: (!metadata.is_empty()).then(|| Struct {
                fields: metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn metadata_gives_everything() {
        let labels = Value {
            kind: Some(Kind::StructValue(Struct {
                fields: HashMap::from([("app".to_string(), string("cart"))]),
            })),
        };
        let node = mk_node(
            "anything",
            &[
                (NAMESPACE, string("shop")),
                (POD_NAME, string("cart-0")),
                (SERVICE_ACCOUNT, string("cart")),
                (INSTANCE_IPS, string("10.1.0.5, fd00::5,junk")),
                (LABELS, labels),
            ],
        );
        let id = ProxyIdentity::from_node(Some(&node)).unwrap();
        assert_eq!(id.namespace, NamespaceName::new("shop"));
        assert_eq!(id.pod.as_deref(), Some("cart-0"));
        assert_eq!(id.service_account.as_deref(), Some("cart"));
        assert_eq!(
            id.ips,
            vec![
                "10.1.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(id.labels["app"], "cart");
        assert_eq!(id.workload_key(), Some(WorkloadKey::new("shop", "cart-0")));
        assert_eq!(id.pod_ref(), "shop/cart-0");
    }

    #[test]
    fn the_node_id_is_the_fallback() {
        let id = ProxyIdentity::from_node(Some(&mk_node("cart-0.shop", &[]))).unwrap();
        assert_eq!(id.namespace.as_str(), "shop");
        assert_eq!(id.pod.as_deref(), Some("cart-0"));
        // Pod names may have dots; namespaces may not.
        let id = ProxyIdentity::from_node(Some(&mk_node("a.b.shop", &[]))).unwrap();
        assert_eq!(id.pod.as_deref(), Some("a.b"));
        assert_eq!(id.namespace.as_str(), "shop");
        let istio = mk_node("sidecar~10.1.0.7~web-1.front~front.svc.cluster.local", &[]);
        let id = ProxyIdentity::from_node(Some(&istio)).unwrap();
        assert_eq!(id.pod_ref(), "front/web-1");
        assert_eq!(id.ips, vec!["10.1.0.7".parse::<IpAddr>().unwrap()]);
        // Metadata wins; a namespace alone is a client without a pod.
        let node = mk_node("cart-0.shop", &[(NAMESPACE, string("other"))]);
        assert_eq!(
            ProxyIdentity::from_node(Some(&node)).unwrap().pod_ref(),
            "other/cart-0"
        );
        let node = mk_node("client", &[(NAMESPACE, string("web"))]);
        let id = ProxyIdentity::from_node(Some(&node)).unwrap();
        assert_eq!((id.pod_ref().as_str(), id.workload_key()), ("web", None));
    }

    #[test]
    fn grpc_clients_are_told_from_envoy_by_user_agent() {
        for (agent, kind) in [
            ("envoy", ProxyKind::Envoy),
            ("", ProxyKind::Envoy),
            ("gRPC C-core", ProxyKind::Grpc),
            ("gRPC Go", ProxyKind::Grpc),
            ("grpc-java", ProxyKind::Grpc),
        ] {
            let mut node = mk_node("client.web", &[]);
            node.user_agent_name = agent.to_string();
            let id = ProxyIdentity::from_node(Some(&node)).unwrap();
            assert_eq!(id.kind, kind, "{agent:?}");
        }
    }

    fn mk_labels(labels: &[(String, String)]) -> Value {
        Value {
            kind: Some(Kind::StructValue(Struct {
                fields: labels.iter().map(|(k, v)| (k.clone(), string(v))).collect(),
            })),
        }
    }

    fn refused(node: &Node, limits: &NodeLimits) -> NodeError {
        ProxyIdentity::from_node_within(Some(node), limits).unwrap_err()
    }

    #[test]
    fn nodes_over_a_limit_are_refused_with_a_short_message() {
        let limits = NodeLimits::default();
        let huge = "x".repeat(1 << 20);
        let mut node = mk_node(&format!("{huge}.shop"), &[]);
        let err = refused(&node, &limits);
        assert_eq!(err.limit(), Some("node_id"));
        assert_eq!(err.status().code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            err.to_string(),
            "node id is 1048581 bytes, over the limit of 1024 (--node-id-max-bytes)"
        );
        node.id = "cart-0.shop".into();
        node.cluster = huge.clone();
        assert_eq!(refused(&node, &limits).limit(), Some("node_cluster"));
        let node = mk_node("cart-0.shop", &[("BLOB", string(&huge))]);
        assert_eq!(refused(&node, &limits).limit(), Some("node_metadata"));

        // Labels: Kubernetes' own bounds pass, one byte more does not.
        let key = format!("{}/{}", "p".repeat(253), "n".repeat(63));
        let ok = mk_node(
            "cart-0.shop",
            &[(LABELS, mk_labels(&[(key.clone(), "v".repeat(63))]))],
        );
        let id = ProxyIdentity::from_node_within(Some(&ok), &limits).unwrap();
        assert_eq!(id.labels[&key].len(), 63);
        let long_key = mk_node(
            "cart-0.shop",
            &[(LABELS, mk_labels(&[(format!("{key}n"), "v".into())]))],
        );
        assert_eq!(refused(&long_key, &limits).limit(), Some("node_label_key"));
        let long_value = mk_node(
            "cart-0.shop",
            &[(LABELS, mk_labels(&[("app".into(), "v".repeat(64))]))],
        );
        let err = refused(&long_value, &limits);
        assert_eq!(err.limit(), Some("node_label_value"));
        assert!(
            err.to_string().contains("--node-label-value-max-bytes"),
            "{err}"
        );
        let many: Vec<(String, String)> = (0..=limits.labels)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let err = refused(
            &mk_node("cart-0.shop", &[(LABELS, mk_labels(&many))]),
            &limits,
        );
        assert_eq!(err.limit(), Some("node_labels"));
        assert!(err.to_string().contains("257 labels"), "{err}");
    }

    #[test]
    fn refusals_repeat_at_most_a_clip_of_the_node() {
        // Under a generous id limit, a namespace-less id is still not echoed whole.
        let limits = NodeLimits {
            id_bytes: 1 << 21,
            ..NodeLimits::default()
        };
        let err = refused(&mk_node(&"x".repeat(1 << 20), &[]), &limits);
        assert!(matches!(err, NodeError::NoNamespace(_)));
        assert!(
            err.to_string().len() < 1024,
            "{} bytes",
            err.to_string().len()
        );
        assert_eq!(err.status().code(), tonic::Code::InvalidArgument);
        let bad = mk_node("x", &[(NAMESPACE, string(&"N".repeat(100_000)))]);
        let err = refused(&bad, &limits);
        assert!(matches!(err, NodeError::InvalidNamespace { .. }));
        assert!(
            err.to_string().len() < 1024,
            "{} bytes",
            err.to_string().len()
        );
    }

    #[test]
    fn no_namespace_is_refused_with_a_hint() {
        for id in ["client", "", "pod.", "a~b~c"] {
            let err = ProxyIdentity::from_node(Some(&mk_node(id, &[]))).unwrap_err();
            assert_eq!(err, NodeError::NoNamespace(id.to_string()), "{id}");
            assert!(err.to_string().contains("node.metadata.NAMESPACE"), "{err}");
            assert!(err.to_string().contains("<pod>.<namespace>"), "{err}");
        }
        assert_eq!(ProxyIdentity::from_node(None), Err(NodeError::Missing));
        let bad = mk_node("x", &[(NAMESPACE, string("Not_A_Namespace"))]);
        assert!(matches!(
            ProxyIdentity::from_node(Some(&bad)),
            Err(NodeError::InvalidNamespace { .. })
        ));
    }
}
