//! Lanyard's intermediate model of the mesh.
//!
//! Everything the xDS translator needs, and nothing about where it came from: no Kubernetes
//! objects, no Envoy messages, no names of the routes that produced a rule. The index in
//! `lanyard-index` lowers HTTPRoute, GRPCRoute (and later SMI TrafficSplit) into these types;
//! `lanyard-xds` turns them into Envoy resources.
//!
//! All collections are ordered (`BTreeMap`, sorted `Vec`s) so that the model, and anything
//! rendered from it, is deterministic.

mod keys;
mod routes;
mod service;
mod workload;

use std::collections::BTreeMap;

pub use keys::{NamespaceName, ServiceKey, ServicePortKey, WorkloadKey};
pub use routes::{
    Action, Backend, BackendTarget, Cors, Forward, HeaderMatch, HeaderModifier, Mirror, PathMatch,
    PathRewrite, QueryMatch, Redirect, RequestMatch, Retry, Route, RouteTable, StringMatch,
    Timeouts, UrlRewrite,
};
pub use service::{Endpoint, Protocol, Service, ServicePort};
pub use workload::{InboundPort, Workload};

use serde::Serialize;

/// The whole mesh as the translator sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Model {
    /// Every Service, by namespace and name.
    pub services: BTreeMap<ServiceKey, Service>,
    /// Every workload (pod) that may run a sidecar, by namespace and name.
    pub workloads: BTreeMap<WorkloadKey, Workload>,
    /// Routing attached to a Service port. A port that is absent here has no route attached
    /// and is plain pass-through to the Service's endpoints.
    pub routing: BTreeMap<ServicePortKey, PortRouting>,
}

/// The route tables attached to one Service port.
///
/// GAMMA distinguishes producer routes (in the Service's namespace, seen by every client)
/// from consumer routes (in another namespace, seen only by clients in that namespace).
/// When a client's namespace has consumer routes for a port, they replace the producer
/// routes for that client.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PortRouting {
    /// Routes from the Service's own namespace.
    pub producer: Option<RouteTable>,
    /// Routes from other namespaces, by the namespace of the route (= of its clients).
    pub consumers: BTreeMap<NamespaceName, RouteTable>,
}

/// Which version of a port's routing a client sees.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RoutingVariant {
    /// No route attached for this client: pass-through to the Service's endpoints.
    Passthrough,
    /// The producer table.
    Producer,
    /// The consumer table of this namespace.
    Consumer(NamespaceName),
}

impl PortRouting {
    /// The variant a client in `client_namespace` sees.
    pub fn variant_for(&self, client_namespace: &NamespaceName) -> RoutingVariant {
        if self.consumers.contains_key(client_namespace) {
            RoutingVariant::Consumer(client_namespace.clone())
        } else if self.producer.is_some() {
            RoutingVariant::Producer
        } else {
            RoutingVariant::Passthrough
        }
    }

    /// The table of a variant, `None` for pass-through.
    pub fn table(&self, variant: &RoutingVariant) -> Option<&RouteTable> {
        match variant {
            RoutingVariant::Passthrough => None,
            RoutingVariant::Producer => self.producer.as_ref(),
            RoutingVariant::Consumer(ns) => self.consumers.get(ns),
        }
    }
}

impl Model {
    /// The routing variant a client in `client_namespace` sees for a Service port.
    pub fn variant_for(
        &self,
        port: &ServicePortKey,
        client_namespace: &NamespaceName,
    ) -> RoutingVariant {
        self.routing
            .get(port)
            .map(|r| r.variant_for(client_namespace))
            .unwrap_or(RoutingVariant::Passthrough)
    }

    /// The route table a client in `client_namespace` sees for a Service port, `None` when
    /// the port is pass-through for that client.
    pub fn table_for(
        &self,
        port: &ServicePortKey,
        client_namespace: &NamespaceName,
    ) -> Option<&RouteTable> {
        let routing = self.routing.get(port)?;
        routing.table(&routing.variant_for(client_namespace))
    }

    /// Looks up a Service port.
    pub fn service_port(&self, key: &ServicePortKey) -> Option<(&Service, &ServicePort)> {
        let service = self.services.get(&key.service)?;
        let port = service.ports.iter().find(|p| p.port == key.port)?;
        Some((service, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_table() -> RouteTable {
        RouteTable {
            protocol: Protocol::Http,
            routes: vec![],
        }
    }

    #[test]
    fn consumer_routes_replace_producer_routes_only_in_their_namespace() {
        let mut routing = PortRouting {
            producer: Some(mk_table()),
            ..Default::default()
        };
        routing
            .consumers
            .insert(NamespaceName::new("consumer"), mk_table());
        assert_eq!(
            routing.variant_for(&NamespaceName::new("consumer")),
            RoutingVariant::Consumer(NamespaceName::new("consumer"))
        );
        assert_eq!(
            routing.variant_for(&NamespaceName::new("other")),
            RoutingVariant::Producer
        );
    }

    #[test]
    fn a_port_without_routing_is_passthrough() {
        let model = Model::default();
        let key = ServicePortKey::new(ServiceKey::new("ns", "svc"), 80);
        assert_eq!(
            model.variant_for(&key, &NamespaceName::new("ns")),
            RoutingVariant::Passthrough
        );
        let only_consumers = PortRouting {
            producer: None,
            consumers: [(NamespaceName::new("a"), mk_table())].into(),
        };
        assert_eq!(
            only_consumers.variant_for(&NamespaceName::new("b")),
            RoutingVariant::Passthrough
        );
    }
}
