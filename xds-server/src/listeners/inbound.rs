//! The inbound listener: `virtualInbound` on the capture port, one filter chain per port the
//! workload serves.

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use lanyard_model::Protocol;

use super::filters::{
    http_connection_manager, http_connection_manager_filter, inline_routes, router,
    tcp_proxy_filter,
};
use crate::names;
use crate::protobuf::{any, socket_address, u32_value};
use crate::routes;

/// `virtualInbound` on 0.0.0.0:`port`.
///
/// The `original_dst` listener filter restores the address the client dialled (the pod IP and
/// the container port) before filter chain selection, so chains match on `destination_port`.
/// Unlike `virtualOutbound`, `use_original_dst` stays unset: connections are served here and
/// never handed to another listener. `inbound` is the workload's `(port, protocol)` list,
/// sorted by port; a port listed twice keeps its first protocol. Every chain forwards to the
/// local application through `inbound|<port>||`; other ports go to `InboundPassthroughCluster`.
pub fn virtual_inbound(port: u16, inbound: &[(u16, Protocol)]) -> Listener {
    let mut chains: Vec<FilterChain> = Vec::with_capacity(inbound.len());
    let mut last_port = None;
    for &(target_port, protocol) in inbound {
        if last_port == Some(target_port) {
            continue;
        }
        last_port = Some(target_port);
        chains.push(inbound_chain(target_port, protocol));
    }
    Listener {
        name: names::VIRTUAL_INBOUND_LISTENER.to_string(),
        address: Some(socket_address("0.0.0.0", port)),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: vec![ListenerFilter {
            name: names::filters::ORIGINAL_DST.to_string(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                &OriginalDst {},
            ))),
            ..Default::default()
        }],
        filter_chains: chains,
        default_filter_chain: Some(FilterChain {
            name: names::INBOUND_PASSTHROUGH_CLUSTER.to_string(),
            filters: vec![tcp_proxy_filter(
                names::INBOUND_PASSTHROUGH_CLUSTER,
                names::INBOUND_PASSTHROUGH_CLUSTER,
            )],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn inbound_chain(port: u16, protocol: Protocol) -> FilterChain {
    let cluster = names::inbound_cluster(port);
    let filter = if protocol.is_http() {
        let hcm = http_connection_manager(
            &format!("inbound_{port}"),
            inline_routes(routes::single_cluster(&cluster, &cluster)),
            vec![router()],
        );
        http_connection_manager_filter(&hcm)
    } else {
        tcp_proxy_filter(&cluster, &cluster)
    };
    FilterChain {
        name: cluster,
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(u32_value(u32::from(port))),
            ..Default::default()
        }),
        filters: vec![filter],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::route::v3::{route, route_action::ClusterSpecifier};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;

    use super::*;
    use crate::fixtures::{hcm_of, tcp_proxy_cluster};

    #[test]
    fn chains_per_port_by_destination_port() {
        let listener = virtual_inbound(
            15006,
            &[
                (8080, Protocol::Http),
                (9000, Protocol::Tcp),
                (9000, Protocol::Http),
            ],
        );
        assert_eq!(listener.name, "virtualInbound");
        assert_eq!(listener.address, Some(socket_address("0.0.0.0", 15006)));
        assert_eq!(
            listener.listener_filters[0].name,
            "envoy.filters.listener.original_dst"
        );
        assert_eq!(listener.use_original_dst, None);
        let ports: Vec<u32> = listener
            .filter_chains
            .iter()
            .map(|c| {
                c.filter_chain_match
                    .as_ref()
                    .unwrap()
                    .destination_port
                    .unwrap()
                    .value
            })
            .collect();
        assert_eq!(ports, [8080, 9000]);

        let hcm = hcm_of(&listener.filter_chains[0].filters[0]);
        let Some(RouteSpecifier::RouteConfig(routes)) = &hcm.route_specifier else {
            panic!("no inline routes");
        };
        let Some(route::Action::Route(action)) = &routes.virtual_hosts[0].routes[0].action else {
            panic!("no route action");
        };
        assert_eq!(
            action.cluster_specifier,
            Some(ClusterSpecifier::Cluster("inbound|8080||".into()))
        );
        assert_eq!(
            hcm.http_filters.last().unwrap().name,
            "envoy.filters.http.router"
        );
        assert_eq!(
            tcp_proxy_cluster(&listener.filter_chains[1].filters[0]),
            "inbound|9000||"
        );
    }

    #[test]
    fn unknown_ports_pass_through() {
        let listener = virtual_inbound(15006, &[]);
        assert!(listener.filter_chains.is_empty());
        let chain = listener.default_filter_chain.as_ref().unwrap();
        assert_eq!(
            tcp_proxy_cluster(&chain.filters[0]),
            "InboundPassthroughCluster"
        );
    }
}
