//! EDS: one ClusterLoadAssignment per Service port, named like its cluster.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
    lb_endpoint::HostIdentifier,
};
use lanyard_model::Endpoint;

use crate::protobuf::{socket_address, u32_value};

/// The assignment for `cluster_name`: one locality per zone (zone `""` for endpoints without
/// one), each with `load_balancing_weight` 1 (gRPC drops localities without a weight).
///
/// Ready endpoints are HEALTHY; endpoints that are not ready but still serving while
/// terminating are DRAINING (Envoy lets existing requests finish, sends no new ones); the rest
/// are left out. An assignment without endpoints is still returned: the cluster must not
/// stay warming.
pub fn load_assignment(cluster_name: &str, endpoints: &[Endpoint]) -> ClusterLoadAssignment {
    let mut zones: BTreeMap<&str, Vec<(&Endpoint, HealthStatus)>> = BTreeMap::new();
    for endpoint in endpoints {
        let Some(health) = health_status(endpoint) else {
            continue;
        };
        zones
            .entry(endpoint.zone.as_deref().unwrap_or(""))
            .or_default()
            .push((endpoint, health));
    }
    let localities = zones
        .into_iter()
        .map(|(zone, mut members)| {
            members.sort_by_key(|(e, _)| (e.address, e.port));
            LocalityLbEndpoints {
                locality: Some(Locality {
                    zone: zone.to_string(),
                    ..Default::default()
                }),
                lb_endpoints: members
                    .into_iter()
                    .map(|(e, health)| lb_endpoint(e, health))
                    .collect(),
                load_balancing_weight: Some(u32_value(1)),
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: localities,
        ..Default::default()
    }
}

fn health_status(endpoint: &Endpoint) -> Option<HealthStatus> {
    if endpoint.ready {
        Some(HealthStatus::Healthy)
    } else if endpoint.serving && endpoint.terminating {
        Some(HealthStatus::Draining)
    } else {
        None
    }
}

fn lb_endpoint(endpoint: &Endpoint, health: HealthStatus) -> LbEndpoint {
    LbEndpoint {
        health_status: health as i32,
        host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(socket_address(endpoint.address, endpoint.port)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};

    use super::*;
    use crate::fixtures::mk_endpoint;

    fn addresses(locality: &LocalityLbEndpoints) -> Vec<(String, u32, i32)> {
        locality
            .lb_endpoints
            .iter()
            .map(|lb| {
                let Some(HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
                    panic!("no endpoint")
                };
                let Some(address::Address::SocketAddress(sa)) =
                    &e.address.as_ref().unwrap().address
                else {
                    panic!("no socket address")
                };
                let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                    panic!("no port")
                };
                (sa.address.clone(), port, lb.health_status)
            })
            .collect()
    }

    #[test]
    fn one_weighted_locality_per_zone_with_sorted_endpoints() {
        let cla = load_assignment(
            "c",
            &[
                mk_endpoint("10.0.0.9", 8080, Some("b")),
                mk_endpoint("10.0.0.2", 8080, Some("a")),
                mk_endpoint("10.0.0.1", 8080, Some("b")),
                mk_endpoint("10.0.0.3", 8080, None),
            ],
        );
        assert_eq!(cla.cluster_name, "c");
        let zones: Vec<&str> = cla
            .endpoints
            .iter()
            .map(|l| l.locality.as_ref().unwrap().zone.as_str())
            .collect();
        assert_eq!(zones, ["", "a", "b"]);
        for locality in &cla.endpoints {
            assert_eq!(locality.load_balancing_weight, Some(u32_value(1)));
        }
        let healthy = HealthStatus::Healthy as i32;
        assert_eq!(
            addresses(&cla.endpoints[2]),
            [
                ("10.0.0.1".to_string(), 8080, healthy),
                ("10.0.0.9".to_string(), 8080, healthy)
            ]
        );
    }

    #[test]
    fn terminating_but_serving_endpoints_drain_and_others_are_left_out() {
        let mut draining = mk_endpoint("10.0.0.1", 80, None);
        draining.ready = false;
        draining.terminating = true;
        let mut not_serving = mk_endpoint("10.0.0.2", 80, None);
        not_serving.ready = false;
        not_serving.serving = false;
        not_serving.terminating = true;
        let mut starting = mk_endpoint("10.0.0.3", 80, None);
        starting.ready = false;
        starting.serving = false;
        let cla = load_assignment(
            "c",
            &[
                draining,
                not_serving,
                starting,
                mk_endpoint("10.0.0.4", 80, None),
            ],
        );
        assert_eq!(
            addresses(&cla.endpoints[0]),
            [
                ("10.0.0.1".to_string(), 80, HealthStatus::Draining as i32),
                ("10.0.0.4".to_string(), 80, HealthStatus::Healthy as i32)
            ]
        );
    }

    #[test]
    fn empty_assignment_is_still_an_assignment() {
        let cla = load_assignment("outbound|80||a.b.svc.cluster.local", &[]);
        assert_eq!(cla.cluster_name, "outbound|80||a.b.svc.cluster.local");
        assert!(cla.endpoints.is_empty());
    }
}
