//! backendRefs and mirror targets resolved against Services and ReferenceGrants.

use std::collections::{BTreeMap, HashMap};

use lanyard_model::{Protocol, Service, ServiceKey, ServicePortKey};

use crate::api::{BackendObjectReference, GATEWAY_GROUP};
use crate::objects::{Kind, Objects};
use crate::status::reasons;
use crate::translate::services::{DeclaredProtocol, Services};

/// Why a reference did not resolve: a `ResolvedRefs` reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RefProblem {
    pub reason: &'static str,
    pub message: String,
}

/// What a route's references may reach.
pub(super) struct Resolver<'a> {
    pub objects: &'a Objects,
    /// The Services, by namespace and name.
    pub by_name: &'a ServicesByName<'a>,
    /// The route's kind and namespace, for ReferenceGrant checks.
    pub route_kind: Kind,
    pub route_namespace: &'a str,
    /// The Services the route attaches to: a route may always send to its own parents.
    pub parents: &'a [ServiceKey],
    /// What each Service port declares about its protocol.
    pub declared: &'a BTreeMap<(ServiceKey, u16), DeclaredProtocol>,
}

/// Services by namespace and name.
pub(super) type ServicesByName<'a> = HashMap<(&'a str, &'a str), &'a Service>;

/// Indexes `services` by namespace and name.
pub(super) fn by_name(services: &Services) -> ServicesByName<'_> {
    services
        .services
        .iter()
        .map(|(key, service)| ((key.namespace.as_str(), key.name.as_str()), service))
        .collect()
}

impl Resolver<'_> {
    /// Resolves a reference to a Service port.
    pub fn resolve(
        &self,
        reference: &BackendObjectReference,
    ) -> Result<ServicePortKey, RefProblem> {
        let group = reference.group.as_deref().unwrap_or("");
        let kind = reference.kind.as_deref().unwrap_or("Service");
        let namespace = reference
            .namespace
            .as_deref()
            .unwrap_or(self.route_namespace);
        // Formatted only for a message.
        let shown = || format!("{namespace}/{}", reference.name);
        if !group.is_empty() || kind != "Service" {
            let shown = shown();
            let group = if group.is_empty() { "core" } else { group };
            return Err(RefProblem {
                reason: reasons::INVALID_KIND,
                message: format!(
                    "backendRef {shown} is a {kind} ({group}); only core Services are supported"
                ),
            });
        }
        if namespace != self.route_namespace
            && !self
                .parents
                .iter()
                .any(|p| p.namespace.as_str() == namespace && p.name == reference.name)
            && !self.granted(namespace, &reference.name)
        {
            let shown = shown();
            return Err(RefProblem {
                reason: reasons::REF_NOT_PERMITTED,
                message: format!(
                    "backendRef to Service {shown} crosses namespaces and no ReferenceGrant in {namespace} allows it"
                ),
            });
        }
        let Some(svc) = self.by_name.get(&(namespace, reference.name.as_str())) else {
            return Err(RefProblem {
                reason: reasons::BACKEND_NOT_FOUND,
                message: format!("Service {} not found", shown()),
            });
        };
        let Some(port) = reference.port.and_then(|p| u16::try_from(p).ok()) else {
            return Err(RefProblem {
                reason: reasons::BACKEND_NOT_FOUND,
                message: format!("backendRef to Service {} has no port", shown()),
            });
        };
        if !svc.ports.iter().any(|p| p.port == port) {
            return Err(RefProblem {
                reason: reasons::BACKEND_NOT_FOUND,
                message: format!("Service {} has no port {port}", shown()),
            });
        }
        // gRPC needs HTTP/2. A port that declares nothing is served as HTTP/2 for a
        // GRPCRoute; one that declares HTTP/1.1 or a non-HTTP protocol cannot carry it, and
        // the spec makes such a backend invalid with UnsupportedProtocol.
        if self.route_kind == Kind::GrpcRoute {
            let declared = self
                .declared
                .get(&(svc.key.clone(), port))
                .copied()
                .unwrap_or(DeclaredProtocol::Unknown);
            let what = match declared {
                DeclaredProtocol::Http(Protocol::Http) => Some("HTTP/1.1"),
                DeclaredProtocol::Opaque => Some("a protocol that is not HTTP"),
                _ => None,
            };
            if let Some(what) = what {
                return Err(RefProblem {
                    reason: reasons::UNSUPPORTED_PROTOCOL,
                    message: format!(
                        "port {port} of Service {} declares {what} (appProtocol or port name), which cannot carry gRPC; declare grpc, http2 or kubernetes.io/h2c, or nothing",
                        shown()
                    ),
                });
            }
        }
        Ok(ServicePortKey::new(svc.key.clone(), port))
    }

    /// Whether a ReferenceGrant in `namespace` lets this route refer to Service `name`.
    fn granted(&self, namespace: &str, name: &str) -> bool {
        self.objects
            .reference_grants
            .iter()
            .filter(|(key, _)| key.namespace == namespace)
            .any(|(_, grant)| {
                grant.spec.from.iter().any(|f| {
                    f.group == GATEWAY_GROUP
                        && f.kind == self.route_kind.as_str()
                        && f.namespace == self.route_namespace
                }) && grant.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == "Service"
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
            })
    }
}
