//! Outbound listeners: `virtualOutbound` on the capture port and one `<ip>_<port>` listener
//! per ClusterIP and Service port.

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use lanyard_model::{Service, ServicePort, ServicePortKey};

use super::filters::{
    http_connection_manager, http_connection_manager_filter, outbound_http_filters, rds,
    tcp_proxy_filter,
};
use crate::names;
use crate::protobuf::{bool_value, socket_address};

/// `virtualOutbound` on 0.0.0.0:`port`: with `use_original_dst`, Envoy hands each redirected
/// connection to the listener bound (without binding) to its original destination; when
/// there is none, the default chain forwards it unchanged through `PassthroughCluster`.
pub fn virtual_outbound(port: u16) -> Listener {
    Listener {
        name: names::VIRTUAL_OUTBOUND_LISTENER.to_string(),
        address: Some(socket_address("0.0.0.0", port)),
        use_original_dst: Some(bool_value(true)),
        traffic_direction: TrafficDirection::Outbound as i32,
        default_filter_chain: Some(FilterChain {
            name: names::PASSTHROUGH_CLUSTER.to_string(),
            filters: vec![tcp_proxy_filter(
                names::PASSTHROUGH_CLUSTER,
                names::PASSTHROUGH_CLUSTER,
            )],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One listener per ClusterIP of `service` for `port`, named `<ip>_<port>`, not bound
/// (`bind_to_port: false`: only reachable through `virtualOutbound`'s hand-off). The Service
/// is identified by the destination ClusterIP, never by the Host header
/// (MeshClusterIPMatching). HTTP ports get an HttpConnectionManager with RDS `<fqdn>:<port>`;
/// TCP ports a tcp_proxy to the port's cluster. Headless Services get none.
pub fn cluster_ip_listeners(
    service: &Service,
    port: &ServicePort,
    cluster_domain: &str,
) -> Vec<Listener> {
    let key = ServicePortKey::new(service.key.clone(), port.port);
    let cluster = names::outbound_cluster(&key, cluster_domain);
    service
        .cluster_ips
        .iter()
        .map(|ip| {
            let name = names::cluster_ip_listener(*ip, port.port);
            let filter = if port.protocol.is_http() {
                let hcm = http_connection_manager(
                    &format!("outbound_{name}"),
                    rds(&names::route_config(&key, cluster_domain)),
                    outbound_http_filters(),
                );
                http_connection_manager_filter(&hcm)
            } else {
                tcp_proxy_filter(&cluster, &cluster)
            };
            Listener {
                address: Some(socket_address(ip, port.port)),
                bind_to_port: Some(bool_value(false)),
                traffic_direction: TrafficDirection::Outbound as i32,
                filter_chains: vec![FilterChain {
                    filters: vec![filter],
                    ..Default::default()
                }],
                name,
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{CodecType, RouteSpecifier};
    use lanyard_model::Protocol;

    use super::*;
    use crate::fixtures::{hcm_of, mk_service, tcp_proxy_cluster};

    #[test]
    fn virtual_outbound_hands_off_and_passes_through() {
        let listener = virtual_outbound(15001);
        assert_eq!(listener.name, "virtualOutbound");
        assert_eq!(listener.address, Some(socket_address("0.0.0.0", 15001)));
        assert_eq!(listener.use_original_dst, Some(bool_value(true)));
        let chain = listener.default_filter_chain.as_ref().unwrap();
        assert_eq!(tcp_proxy_cluster(&chain.filters[0]), "PassthroughCluster");
    }

    #[test]
    fn dual_stack_http_port_gets_one_unbound_listener_per_cluster_ip() {
        let service = mk_service(
            "shop",
            "cart",
            &["10.96.0.7", "fd00::7"],
            &[(80, Protocol::Http)],
        );
        let listeners = cluster_ip_listeners(&service, &service.ports[0], "cluster.local");
        let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["10.96.0.7_80", "fd00::7_80"]);
        assert_eq!(listeners[1].address, Some(socket_address("fd00::7", 80)));
        for listener in &listeners {
            assert_eq!(listener.bind_to_port, Some(bool_value(false)));
            let hcm = hcm_of(&listener.filter_chains[0].filters[0]);
            assert_eq!(hcm.codec_type, CodecType::Auto as i32);
            let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
                panic!("no RDS");
            };
            assert_eq!(rds.route_config_name, "cart.shop.svc.cluster.local:80");
            assert_eq!(
                hcm.http_filters.last().unwrap().name,
                "envoy.filters.http.router"
            );
        }
    }

    #[test]
    fn tcp_port_proxies_to_its_cluster() {
        let service = mk_service("db", "pg", &["10.96.0.9"], &[(5432, Protocol::Tcp)]);
        let listeners = cluster_ip_listeners(&service, &service.ports[0], "cluster.local");
        assert_eq!(listeners.len(), 1);
        assert_eq!(
            tcp_proxy_cluster(&listeners[0].filter_chains[0].filters[0]),
            "outbound|5432||pg.db.svc.cluster.local"
        );
    }

    #[test]
    fn headless_service_gets_no_listener() {
        let service = mk_service(
            "db",
            "pg",
            &[],
            &[(5432, Protocol::Tcp), (80, Protocol::Http)],
        );
        for port in &service.ports {
            assert!(cluster_ip_listeners(&service, port, "cluster.local").is_empty());
        }
    }
}
