//! Every name Lanyard gives an Envoy resource or filter, in one place.
//!
//! The shapes follow Istio's so that people who know Istio's config dumps can read ours:
//! `outbound|<port>||<fqdn>` clusters, `inbound|<port>||` local clusters, `<ip>_<port>`
//! listeners, `virtualOutbound` / `virtualInbound`, `PassthroughCluster`.

use std::net::IpAddr;

use lanyard_model::{ServiceKey, ServicePortKey};

/// The listener on the outbound capture port (iptables REDIRECT target for outbound TCP).
pub const VIRTUAL_OUTBOUND_LISTENER: &str = "virtualOutbound";
/// The listener on the inbound capture port (iptables REDIRECT target for inbound TCP).
pub const VIRTUAL_INBOUND_LISTENER: &str = "virtualInbound";
/// ORIGINAL_DST cluster for outbound destinations the mesh does not know.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// ORIGINAL_DST cluster for inbound ports the workload does not declare.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
/// A cluster that is deliberately never defined: routes send the share of traffic that
/// belongs to an unresolved backend here, and the route's `cluster_not_found_response_code`
/// turns it into a 500 (Gateway API rule for invalid backend references).
pub const INVALID_BACKEND_CLUSTER: &str = "lanyard|invalid-backend";

/// Well-known Envoy extension names.
pub mod filters {
    /// HTTP CORS filter.
    pub const CORS: &str = "envoy.filters.http.cors";
    /// HTTP router filter; always the last HTTP filter.
    pub const ROUTER: &str = "envoy.filters.http.router";
    /// Network filter: HTTP connection manager.
    pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
    /// Network filter: TCP proxy.
    pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
    /// Listener filter that restores the pre-REDIRECT destination address.
    pub const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";
    /// Key of `Cluster.typed_extension_protocol_options` for upstream HTTP options.
    pub const HTTP_PROTOCOL_OPTIONS: &str =
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
}

/// `name.namespace.svc.<cluster_domain>`.
pub fn service_fqdn(port: &ServicePortKey, cluster_domain: &str) -> String {
    port.service.fqdn(cluster_domain)
}

/// Outbound EDS cluster (and its ClusterLoadAssignment) of a Service port:
/// `outbound|<port>||<name>.<ns>.svc.<cluster_domain>`.
pub fn outbound_cluster(port: &ServicePortKey, cluster_domain: &str) -> String {
    outbound_cluster_of(&port.service, port.port, cluster_domain)
}

/// [`outbound_cluster`] of `service` and `port`.
pub fn outbound_cluster_of(service: &ServiceKey, port: u16, cluster_domain: &str) -> String {
    // One allocation: `service_fqdn` inlined.
    format!(
        "outbound|{port}||{}.{}.svc.{cluster_domain}",
        service.name, service.namespace
    )
}

/// Local cluster of a workload's inbound port: `inbound|<port>||`.
pub fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

/// RouteConfiguration of an HTTP Service port: `<fqdn>:<port>`. It is also the name of its
/// single virtual host.
pub fn route_config(port: &ServicePortKey, cluster_domain: &str) -> String {
    let service = &port.service;
    format!(
        "{}.{}.svc.{cluster_domain}:{}",
        service.name, service.namespace, port.port
    )
}

/// Outbound listener of one ClusterIP and port: `<ip>_<port>` (IPv6 without brackets,
/// as Istio writes it).
pub fn cluster_ip_listener(ip: IpAddr, port: u16) -> String {
    format!("{ip}_{port}")
}

#[cfg(test)]
mod tests {
    use lanyard_model::ServiceKey;

    use super::*;

    fn key() -> ServicePortKey {
        ServicePortKey::new(ServiceKey::new("shop", "cart"), 8080)
    }

    #[test]
    fn outbound_cluster_follows_istio_shape() {
        assert_eq!(
            outbound_cluster(&key(), "cluster.local"),
            "outbound|8080||cart.shop.svc.cluster.local"
        );
        assert_eq!(
            outbound_cluster(&key(), "example.org"),
            "outbound|8080||cart.shop.svc.example.org"
        );
    }

    #[test]
    fn route_config_is_fqdn_and_port() {
        assert_eq!(
            route_config(&key(), "cluster.local"),
            "cart.shop.svc.cluster.local:8080"
        );
    }

    #[test]
    fn inbound_and_listener_names() {
        assert_eq!(inbound_cluster(9090), "inbound|9090||");
        assert_eq!(
            cluster_ip_listener("10.96.0.10".parse().unwrap(), 80),
            "10.96.0.10_80"
        );
        assert_eq!(
            cluster_ip_listener("fd00::a".parse().unwrap(), 443),
            "fd00::a_443"
        );
    }
}
