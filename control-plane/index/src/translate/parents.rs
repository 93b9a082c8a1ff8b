//! Which Service ports a parentRef attaches a route to.

use lanyard_model::{ServiceKey, ServicePortKey};

use crate::api::ParentReference;
use crate::status::reasons;
use crate::translate::services::{DeclaredProtocol, Services};

/// The outcome of one Service parentRef.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Attachment {
    /// Attached to these ports of the Service.
    Ports(ServiceKey, Vec<ServicePortKey>),
    /// Not attached: an `Accepted=False` reason and message.
    Rejected {
        reason: &'static str,
        message: String,
    },
}

/// Resolves a Service parentRef of a route in `route_namespace`.
///
/// `port` (or `sectionName`, the port's name) limits the route to that port; without either
/// the route attaches to every port that can carry HTTP: ports declared HTTP, HTTP/2 or gRPC,
/// and ports that declare nothing. A port that declares an opaque protocol (`tcp`, `https`,
/// ...) never takes an HTTP route.
pub(super) fn attach(
    route_namespace: &str,
    parent: &ParentReference,
    services: &Services,
) -> Attachment {
    let namespace = parent.namespace.as_deref().unwrap_or(route_namespace);
    let key = ServiceKey::new(namespace, &parent.name);
    let Some(service) = services.services.get(&key) else {
        return Attachment::Rejected {
            reason: reasons::NO_MATCHING_PARENT,
            message: format!("Service {key} not found"),
        };
    };
    // Sidecars pick a Service's routes by the ClusterIP a client dialled; a headless
    // Service has none, so no client would ever get the route. GEP-1294: headless Services
    // SHOULD NOT be supported as parents.
    if services.headless.contains(&key) {
        return Attachment::Rejected {
            reason: reasons::NO_MATCHING_PARENT,
            message: format!(
                "Service {key} is headless (clusterIP: None): clients reach its pods by their own addresses, which no mesh route matches; route a Service that has a ClusterIP"
            ),
        };
    }
    let declared = |port: u16| {
        services
            .declared
            .get(&(key.clone(), port))
            .copied()
            .unwrap_or(DeclaredProtocol::Unknown)
    };
    let by_name = match &parent.section_name {
        Some(section) => match service
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(section))
        {
            Some(p) => Some(p.port),
            None => {
                return Attachment::Rejected {
                    reason: reasons::NO_MATCHING_PARENT,
                    message: format!("Service {key} has no port named {section}"),
                };
            }
        },
        None => None,
    };
    let by_number = match parent.port {
        Some(port) => match service.ports.iter().find(|p| i32::from(p.port) == port) {
            Some(p) => Some(p.port),
            None => {
                return Attachment::Rejected {
                    reason: reasons::NO_MATCHING_PARENT,
                    message: format!("Service {key} has no port {port}"),
                };
            }
        },
        None => None,
    };
    let chosen = match (by_name, by_number) {
        (Some(a), Some(b)) if a != b => {
            return Attachment::Rejected {
                reason: reasons::NO_MATCHING_PARENT,
                message: format!(
                    "sectionName {} and port {b} name different ports of Service {key}",
                    parent.section_name.as_deref().unwrap_or_default()
                ),
            };
        }
        (a, b) => a.or(b),
    };
    if let Some(port) = chosen {
        if declared(port) == DeclaredProtocol::Opaque {
            return Attachment::Rejected {
                reason: reasons::NOT_ALLOWED_BY_LISTENERS,
                message: format!(
                    "port {port} of Service {key} declares a protocol that is not HTTP; set appProtocol: http (or http2, grpc) to route it"
                ),
            };
        }
        return Attachment::Ports(key.clone(), vec![ServicePortKey::new(key, port)]);
    }
    let ports: Vec<ServicePortKey> = service
        .ports
        .iter()
        .filter(|p| declared(p.port) != DeclaredProtocol::Opaque)
        .map(|p| ServicePortKey::new(key.clone(), p.port))
        .collect();
    if ports.is_empty() {
        return Attachment::Rejected {
            reason: reasons::NOT_ALLOWED_BY_LISTENERS,
            message: format!("Service {key} has no port that can carry HTTP"),
        };
    }
    Attachment::Ports(key, ports)
}
