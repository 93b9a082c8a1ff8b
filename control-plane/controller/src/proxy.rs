//! Which proxy's view of the mesh to show.

use std::fmt;
use std::str::FromStr;

use lanyard_index::{Kind, ObjectKey, ObjectRef, Objects};
use lanyard_model::{NamespaceName, WorkloadKey};
use lanyard_xds::ProxyRef;

use crate::error::{Error, Result};
use crate::files::DEFAULT_NAMESPACE;

/// A proxy, named by its pod or only by the namespace of a client without a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxySelector {
    /// A client in this namespace, not tied to any pod (no inbound listeners).
    Namespace(NamespaceName),
    /// The sidecar of this pod.
    Pod(WorkloadKey),
}

impl Default for ProxySelector {
    /// A client in the `default` namespace.
    fn default() -> Self {
        ProxySelector::Namespace(NamespaceName::new(DEFAULT_NAMESPACE))
    }
}

impl FromStr for ProxySelector {
    type Err = Error;

    /// Parses a pod as `NAMESPACE/POD`.
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(ProxySelector::Pod(WorkloadKey::new(namespace, name)))
            }
            _ => Err(Error::InvalidProxy(s.to_string())),
        }
    }
}

impl fmt::Display for ProxySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySelector::Namespace(ns) => write!(f, "a client in namespace {ns}"),
            ProxySelector::Pod(pod) => write!(f, "pod {pod}"),
        }
    }
}

impl ProxySelector {
    /// The proxy, checked against the input: a pod must be one of its Pods.
    pub fn resolve(&self, objects: &Objects) -> Result<ProxyRef> {
        match self {
            ProxySelector::Namespace(namespace) => Ok(ProxyRef::envoy(namespace.clone(), None)),
            ProxySelector::Pod(pod) => {
                let object = ObjectRef {
                    kind: Kind::Pod,
                    key: ObjectKey::new(pod.namespace.as_str(), pod.name.as_str()),
                };
                if !objects.contains(&object) {
                    return Err(Error::UnknownProxy {
                        proxy: pod.to_string(),
                        known: objects.pods.keys().map(ToString::to_string).collect(),
                    });
                }
                Ok(ProxyRef::envoy(pod.namespace.clone(), Some(pod.clone())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use lanyard_index::Object;

    use super::*;

    fn mk_objects(pods: &[(&str, &str)]) -> Objects {
        let mut objects = Objects::default();
        for (namespace, name) in pods {
            objects.apply(Object::Pod(Pod {
                metadata: ObjectMeta {
                    namespace: Some((*namespace).into()),
                    name: Some((*name).into()),
                    ..Default::default()
                },
                ..Default::default()
            }));
        }
        objects
    }

    #[test]
    fn a_pod_is_named_namespace_slash_name() {
        assert_eq!(
            "ns/p".parse::<ProxySelector>().unwrap(),
            ProxySelector::Pod(WorkloadKey::new("ns", "p"))
        );
        for bad in ["p", "/p", "ns/", "a/b/c"] {
            let err = bad.parse::<ProxySelector>().unwrap_err();
            assert!(matches!(err, Error::InvalidProxy(_)), "{bad}");
            assert!(err.to_string().contains("NAMESPACE/POD"), "{err}");
        }
    }

    #[test]
    fn a_pod_of_the_input_resolves_to_its_workload() {
        let objects = mk_objects(&[("ns", "p")]);
        let proxy = "ns/p"
            .parse::<ProxySelector>()
            .unwrap()
            .resolve(&objects)
            .unwrap();
        assert_eq!(proxy.namespace, NamespaceName::new("ns"));
        assert_eq!(proxy.workload, Some(WorkloadKey::new("ns", "p")));
        let proxy = ProxySelector::default().resolve(&objects).unwrap();
        assert_eq!(proxy.namespace, NamespaceName::new("default"));
        assert_eq!(proxy.workload, None);
    }

    #[test]
    fn a_pod_not_in_the_input_is_an_error_listing_the_pods_there_are() {
        let objects = mk_objects(&[("ns", "a"), ("other", "b")]);
        let err = "ns/missing"
            .parse::<ProxySelector>()
            .unwrap()
            .resolve(&objects)
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("pod ns/missing is not in the input"),
            "{message}"
        );
        assert!(message.contains("NAMESPACE/POD"), "{message}");
        assert!(message.contains("--namespace"), "{message}");
        assert!(message.contains("ns/a, other/b"), "{message}");
        let err = "ns/missing"
            .parse::<ProxySelector>()
            .unwrap()
            .resolve(&Objects::default())
            .unwrap_err();
        assert!(err.to_string().contains("has no Pods"), "{err}");
    }
}
