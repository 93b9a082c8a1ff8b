//! ClusterLoadAssignment, as gRPC: src/core/xds/grpc/xds_endpoint_parser.cc
//! (EdsResourceParse, LocalityParse, EndpointAddressesParse, DropParseAndAppend) reads it.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthStatus, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;

use super::{Report, Violation, field};

/// What gRPC NACKs in a ClusterLoadAssignment.
pub fn check_load_assignment(assignment: &ClusterLoadAssignment) -> Vec<Violation> {
    let mut report = Report::default();
    let locality_count = assignment.endpoints.len();
    let mut seen_addresses = BTreeSet::new();
    // Per priority: locality (region, zone, sub_zone) -> weight.
    let mut priorities: BTreeMap<u32, BTreeMap<(String, String, String), u32>> = BTreeMap::new();
    for (i, locality) in assignment.endpoints.iter().enumerate() {
        let path = format!("endpoints[{i}]");
        let Some(weight) = check_locality(locality, &path, &mut seen_addresses, &mut report) else {
            continue;
        };
        // Priorities must be contiguous from 0, so one at or past the number of localities
        // can never be.
        if usize::try_from(locality.priority).map_or(true, |p| p >= locality_count) {
            report.add(
                field(&path, "priority"),
                format!(
                    "priority {} >= number of localities ({locality_count})",
                    locality.priority
                ),
            );
            continue;
        }
        let name = locality
            .locality
            .as_ref()
            .map(|l| (l.region.clone(), l.zone.clone(), l.sub_zone.clone()))
            .unwrap_or_default();
        let localities = priorities.entry(locality.priority).or_default();
        match localities.entry(name) {
            Entry::Occupied(taken) => {
                let (region, zone, sub_zone) = taken.key();
                report.add(
                    path,
                    format!(
                        "duplicate locality {{region=\"{region}\", zone=\"{zone}\", sub_zone=\"{sub_zone}\"}} found in priority {}",
                        locality.priority
                    ),
                );
            }
            Entry::Vacant(free) => {
                free.insert(weight);
            }
        }
    }
    let highest = priorities.keys().next_back().copied();
    for priority in 0..highest.map_or(0, |h| h + 1) {
        match priorities.get(&priority) {
            None => report.add("endpoints", format!("priority {priority} empty")),
            Some(localities) => {
                let total: u64 = localities.values().map(|w| u64::from(*w)).sum();
                if total > u64::from(u32::MAX) {
                    report.add(
                        "endpoints",
                        format!(
                            "sum of locality weights for priority {priority} exceeds uint32 max"
                        ),
                    );
                }
            }
        }
    }
    if let Some(policy) = &assignment.policy {
        for (i, drop) in policy.drop_overloads.iter().enumerate() {
            let path = format!("policy.drop_overloads[{i}]");
            if drop.category.is_empty() {
                report.add(field(&path, "category"), "empty drop category name");
            }
            match &drop.drop_percentage {
                None => report.add(field(&path, "drop_percentage"), "field not present"),
                Some(p) if DenominatorType::try_from(p.denominator).is_err() => report.add(
                    field(&path, "drop_percentage.denominator"),
                    "unknown denominator type",
                ),
                Some(_) => {}
            }
        }
    }
    report.violations
}

/// gRPC: LocalityParse. The locality's weight, or `None` when gRPC leaves it out: no weight
/// (or 0) means no traffic; any error in it drops it too.
fn check_locality(
    locality: &LocalityLbEndpoints,
    path: &str,
    seen: &mut BTreeSet<SocketAddr>,
    report: &mut Report,
) -> Option<u32> {
    let before = report.count();
    let weight = locality
        .load_balancing_weight
        .as_ref()
        .map_or(0, |w| w.value);
    if weight == 0 {
        return None;
    }
    if locality.locality.is_none() {
        report.add(field(path, "locality"), "field not present");
        return None;
    }
    for (j, lb_endpoint) in locality.lb_endpoints.iter().enumerate() {
        let epath = field(path, &format!("lb_endpoints[{j}]"));
        for address in check_lb_endpoint(lb_endpoint, &epath, report) {
            if !seen.insert(address) {
                report.add(
                    &epath,
                    format!("duplicate endpoint address \"{}\"", uri(&address)),
                );
            }
        }
    }
    (report.count() == before).then_some(weight)
}

/// gRPC's `ipv4:` / `ipv6:` URI of an address (grpc_sockaddr_to_uri).
fn uri(address: &SocketAddr) -> String {
    match address {
        SocketAddr::V4(a) => format!("ipv4:{a}"),
        SocketAddr::V6(a) => format!("ipv6:{a}"),
    }
}

/// gRPC: EndpointAddressesParse. The endpoint's addresses; none when gRPC skips it (a health
/// status other than UNKNOWN, HEALTHY, DRAINING).
fn check_lb_endpoint(lb_endpoint: &LbEndpoint, path: &str, report: &mut Report) -> Vec<SocketAddr> {
    let usable = [
        HealthStatus::Unknown,
        HealthStatus::Healthy,
        HealthStatus::Draining,
    ];
    if !usable
        .iter()
        .any(|s| *s as i32 == lb_endpoint.health_status)
    {
        return Vec::new();
    }
    if lb_endpoint
        .load_balancing_weight
        .as_ref()
        .is_some_and(|w| w.value == 0)
    {
        report.add(
            field(path, "load_balancing_weight"),
            "must be greater than 0",
        );
    }
    let epath = field(path, "endpoint");
    let Some(HostIdentifier::Endpoint(endpoint)) = &lb_endpoint.host_identifier else {
        report.add(epath, "field not present");
        return Vec::new();
    };
    let mut addresses = Vec::new();
    if let Some(a) = parse_address(endpoint.address.as_ref(), &field(&epath, "address"), report) {
        addresses.push(a);
    }
    // Dual-stack endpoints (GRPC_EXPERIMENTAL_XDS_DUALSTACK_ENDPOINTS, on by default).
    for (k, additional) in endpoint.additional_addresses.iter().enumerate() {
        let apath = field(&epath, &format!("additional_addresses[{k}].address"));
        if let Some(a) = parse_address(additional.address.as_ref(), &apath, report) {
            addresses.push(a);
        }
    }
    addresses
}

/// gRPC: xds_common_types_parser.cc (ParseXdsAddress): a socket address, a port below 65536,
/// and an IP literal (parse_address.cc, grpc_parse_ipv4_hostport / grpc_parse_ipv6_hostport).
fn parse_address(address: Option<&Address>, path: &str, report: &mut Report) -> Option<SocketAddr> {
    let Some(address) = address else {
        report.add(path, "field not present");
        return None;
    };
    let spath = field(path, "socket_address");
    let Some(address::Address::SocketAddress(socket)) = &address.address else {
        report.add(spath, "field not present");
        return None;
    };
    // A named port reads as port 0, which gRPC takes.
    let port = match socket.port_specifier {
        Some(PortSpecifier::PortValue(p)) => p,
        _ => 0,
    };
    let Ok(port) = u16::try_from(port) else {
        report.add(field(&spath, "port_value"), "invalid port");
        return None;
    };
    match parse_ip(&socket.address) {
        Some(ip) => Some(SocketAddr::new(ip, port)),
        None => {
            let host_port = if socket.address.contains(':') {
                format!("[{}]:{port}", socket.address)
            } else {
                format!("{}:{port}", socket.address)
            };
            report.add(spath, format!("Failed to parse address:{host_port}"));
            None
        }
    }
}

/// An IPv4 or IPv6 literal; IPv6 may carry a numeric zone (`fe80::1%2`), whose zone is
/// dropped here.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, zone) = text.split_once('%')?;
    zone.parse::<u32>().ok()?;
    host.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{Locality, SocketAddress};
    use envoy_types::pb::envoy::config::endpoint::v3::{
        Endpoint, cluster_load_assignment::Policy, cluster_load_assignment::policy::DropOverload,
    };
    use envoy_types::pb::envoy::r#type::v3::FractionalPercent;

    use super::*;
    use crate::protobuf::{socket_address, u32_value};

    fn mk_lb_endpoint(ip: &str, port: u16) -> LbEndpoint {
        LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(ip, port)),
                ..Default::default()
            })),
            health_status: HealthStatus::Healthy as i32,
            ..Default::default()
        }
    }

    fn mk_locality(zone: &str, priority: u32, endpoints: Vec<LbEndpoint>) -> LocalityLbEndpoints {
        LocalityLbEndpoints {
            locality: Some(Locality {
                zone: zone.into(),
                ..Default::default()
            }),
            lb_endpoints: endpoints,
            load_balancing_weight: Some(u32_value(1)),
            priority,
            ..Default::default()
        }
    }

    fn check(localities: Vec<LocalityLbEndpoints>) -> Vec<String> {
        check_load_assignment(&ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: localities,
            ..Default::default()
        })
        .into_iter()
        .map(|v| v.to_string())
        .collect()
    }

    #[test]
    fn two_zones_pass() {
        assert_eq!(
            check(vec![
                mk_locality("a", 0, vec![mk_lb_endpoint("10.0.0.1", 80)]),
                mk_locality("b", 0, vec![mk_lb_endpoint("fd00::1", 80)]),
            ]),
            Vec::<String>::new()
        );
        assert_eq!(check(vec![]), Vec::<String>::new());
    }

    #[test]
    fn duplicate_addresses() {
        assert_eq!(
            check(vec![
                mk_locality("a", 0, vec![mk_lb_endpoint("10.0.0.1", 80)]),
                mk_locality("b", 0, vec![mk_lb_endpoint("10.0.0.1", 80)]),
            ]),
            ["endpoints[1].lb_endpoints[0]: duplicate endpoint address \"ipv4:10.0.0.1:80\""]
        );
        // The same IP on another port is another address.
        assert_eq!(
            check(vec![mk_locality(
                "a",
                0,
                vec![
                    mk_lb_endpoint("10.0.0.1", 80),
                    mk_lb_endpoint("10.0.0.1", 81)
                ]
            )]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn duplicate_localities_in_a_priority() {
        assert_eq!(
            check(vec![
                mk_locality("a", 0, vec![mk_lb_endpoint("10.0.0.1", 80)]),
                mk_locality("a", 0, vec![mk_lb_endpoint("10.0.0.2", 80)]),
            ]),
            [
                "endpoints[1]: duplicate locality {region=\"\", zone=\"a\", sub_zone=\"\"} found in priority 0"
            ]
        );
    }

    #[test]
    fn priorities_must_be_contiguous() {
        assert_eq!(
            check(vec![
                mk_locality("a", 1, vec![mk_lb_endpoint("10.0.0.1", 80)]),
                mk_locality("b", 1, vec![mk_lb_endpoint("10.0.0.2", 80)]),
            ]),
            ["endpoints: priority 0 empty"]
        );
        assert_eq!(
            check(vec![mk_locality(
                "a",
                1,
                vec![mk_lb_endpoint("10.0.0.1", 80)]
            )]),
            ["endpoints[0].priority: priority 1 >= number of localities (1)"]
        );
        assert_eq!(
            check(vec![
                mk_locality("a", 1, vec![mk_lb_endpoint("10.0.0.1", 80)]),
                mk_locality("b", 0, vec![mk_lb_endpoint("10.0.0.2", 80)]),
            ]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn locality_weight_sum_over_uint32() {
        let mut a = mk_locality("a", 0, vec![mk_lb_endpoint("10.0.0.1", 80)]);
        let mut b = mk_locality("b", 0, vec![mk_lb_endpoint("10.0.0.2", 80)]);
        a.load_balancing_weight = Some(u32_value(u32::MAX));
        b.load_balancing_weight = Some(u32_value(1));
        assert_eq!(
            check(vec![a, b]),
            ["endpoints: sum of locality weights for priority 0 exceeds uint32 max"]
        );
    }

    #[test]
    fn unweighted_localities_and_unhealthy_endpoints_are_skipped() {
        let mut unweighted = mk_locality("a", 5, vec![mk_lb_endpoint("bad", 80)]);
        unweighted.load_balancing_weight = None;
        let mut unhealthy = mk_lb_endpoint("bad", 80);
        unhealthy.health_status = HealthStatus::Unhealthy as i32;
        assert_eq!(
            check(vec![unweighted, mk_locality("b", 0, vec![unhealthy])]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn locality_without_locality_field() {
        let mut l = mk_locality("a", 0, vec![mk_lb_endpoint("10.0.0.1", 80)]);
        l.locality = None;
        assert_eq!(check(vec![l]), ["endpoints[0].locality: field not present"]);
    }

    #[test]
    fn endpoint_addresses_must_be_ip_literals_with_ports() {
        assert_eq!(
            check(vec![mk_locality(
                "a",
                0,
                vec![mk_lb_endpoint("cart.shop", 80)]
            )]),
            [
                "endpoints[0].lb_endpoints[0].endpoint.address.socket_address: Failed to parse address:cart.shop:80"
            ]
        );
        let big_port = LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "10.0.0.1".into(),
                        port_specifier: Some(PortSpecifier::PortValue(70_000)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            check(vec![mk_locality("a", 0, vec![big_port])]),
            [
                "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: invalid port"
            ]
        );
        assert_eq!(parse_ip("fe80::1%2"), "fe80::1".parse().ok());
    }

    #[test]
    fn endpoint_weight_zero() {
        let mut e = mk_lb_endpoint("10.0.0.1", 80);
        e.load_balancing_weight = Some(u32_value(0));
        assert_eq!(
            check(vec![mk_locality("a", 0, vec![e])]),
            ["endpoints[0].lb_endpoints[0].load_balancing_weight: must be greater than 0"]
        );
    }

    #[test]
    fn drop_overloads() {
        let assignment = ClusterLoadAssignment {
            policy: Some(Policy {
                drop_overloads: vec![
                    DropOverload {
                        category: String::new(),
                        drop_percentage: Some(FractionalPercent {
                            numerator: 1,
                            denominator: 7,
                        }),
                    },
                    DropOverload {
                        category: "lb".into(),
                        drop_percentage: None,
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let got: Vec<String> = check_load_assignment(&assignment)
            .into_iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "policy.drop_overloads[0].category: empty drop category name",
                "policy.drop_overloads[0].drop_percentage.denominator: unknown denominator type",
                "policy.drop_overloads[1].drop_percentage: field not present",
            ]
        );
    }

    #[test]
    fn endpoint_without_address() {
        let no_address = LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint::default())),
            ..Default::default()
        };
        let no_endpoint = LbEndpoint::default();
        assert_eq!(
            check(vec![mk_locality("a", 0, vec![no_address, no_endpoint])]),
            [
                "endpoints[0].lb_endpoints[0].endpoint.address: field not present",
                "endpoints[0].lb_endpoints[1].endpoint: field not present",
            ]
        );
    }
}
