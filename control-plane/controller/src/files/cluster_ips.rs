//! ClusterIPs for Services that have none, since no API server allocates them in file mode.
//!
//! Each such Service gets an address in `10.96.0.0/16` derived from the 32-bit FNV-1a hash
//! of `namespace/name`; on a collision (with an explicitly given ClusterIP or one assigned
//! already) the next free address is taken (linear probing). Services are assigned in
//! namespace/name order, so the same set of Services always gets the same addresses,
//! whatever files they are in. `10.96.0.0` and `10.96.255.255` are never assigned.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use k8s_openapi::api::core::v1::Service;

use crate::diagnostics::Diagnostic;

/// The range addresses are assigned from: `10.96.0.0/16`.
const BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SIZE: u32 = 1 << 16;

/// 32-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Whether the Service needs an address: no `spec.clusterIP(s)`, not headless (`None`), not
/// `ExternalName`.
fn needs_address(service: &Service) -> bool {
    let Some(spec) = &service.spec else {
        return true;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return false;
    }
    spec.cluster_ip.as_deref().is_none_or(str::is_empty)
        && spec.cluster_ips.as_ref().is_none_or(Vec::is_empty)
}

/// The addresses given explicitly in Services' `spec.clusterIP` and `spec.clusterIPs`.
fn explicit_addresses<'a>(services: impl Iterator<Item = &'a Service>) -> BTreeSet<IpAddr> {
    services
        .filter_map(|s| s.spec.as_ref())
        .flat_map(|spec| {
            spec.cluster_ip
                .iter()
                .chain(spec.cluster_ips.iter().flatten())
        })
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// Assigns addresses to the Services that need one (see the module docs), writing them into
/// `spec.clusterIP` and `spec.clusterIPs`, with an info diagnostic each. A Service that has
/// only `spec.clusterIPs` gets `spec.clusterIP` set to its first entry, as the API server does.
pub(crate) fn assign<'a>(
    services: impl IntoIterator<Item = (&'a Path, &'a mut Service)>,
) -> Vec<Diagnostic> {
    let mut services: Vec<_> = services.into_iter().collect();
    services.sort_by_key(|(_, s)| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    let mut taken = explicit_addresses(services.iter().map(|(_, s)| &**s));
    let mut diagnostics = Vec::new();
    for (file, service) in services {
        if let Some(spec) = service.spec.as_mut()
            && spec.cluster_ip.as_deref().is_none_or(str::is_empty)
            && let Some(first) = spec.cluster_ips.as_ref().and_then(|ips| ips.first())
        {
            spec.cluster_ip = Some(first.clone());
        }
        if !needs_address(service) {
            continue;
        }
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let object = format!("Service {namespace}/{name}");
        let Some(address) = free_address(&format!("{namespace}/{name}"), &taken) else {
            diagnostics.push(
                Diagnostic::error(file, "no free address left in 10.96.0.0/16 for a ClusterIP")
                    .with_object(object),
            );
            continue;
        };
        taken.insert(IpAddr::V4(address));
        let spec = service.spec.get_or_insert_with(Default::default);
        spec.cluster_ip = Some(address.to_string());
        spec.cluster_ips = Some(vec![address.to_string()]);
        diagnostics.push(
            Diagnostic::info(
                file,
                format!("no spec.clusterIP: assigned {address} (file mode has no API server to allocate one)"),
            )
            .with_object(object),
        );
    }
    diagnostics
}

fn free_address(key: &str, taken: &BTreeSet<IpAddr>) -> Option<Ipv4Addr> {
    let start = fnv1a(key.as_bytes()) % SIZE;
    (0..SIZE)
        .map(|probe| (start + probe) % SIZE)
        .filter(|offset| *offset != 0 && *offset != SIZE - 1)
        .map(|offset| Ipv4Addr::from(BASE + offset))
        .find(|address| !taken.contains(&IpAddr::V4(*address)))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::diagnostics::Severity;

    fn mk_service(namespace: &str, name: &str, cluster_ip: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: cluster_ip.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cluster_ip(service: &Service) -> Option<&str> {
        service.spec.as_ref()?.cluster_ip.as_deref()
    }

    fn assign_all(services: &mut [Service]) -> Vec<Diagnostic> {
        assign(services.iter_mut().map(|s| (Path::new("f.yaml"), s)))
    }

    fn expected(key: &str) -> String {
        Ipv4Addr::from(BASE + fnv1a(key.as_bytes()) % SIZE).to_string()
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn a_service_without_address_gets_one_derived_from_its_name_written_into_both_fields() {
        let mut services = [mk_service("ns", "reviews", None)];
        let diagnostics = assign_all(&mut services);
        let spec = services[0].spec.as_ref().unwrap();
        let want = expected("ns/reviews");
        assert_eq!(spec.cluster_ip.as_deref(), Some(want.as_str()));
        assert_eq!(spec.cluster_ips.as_deref(), Some(&[want.clone()][..]));
        assert!(want.starts_with("10.96."));
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].severity, Severity::Info);
        assert_eq!(diagnostics[0].object.as_deref(), Some("Service ns/reviews"));
        assert!(diagnostics[0].message.contains(&want));
    }

    #[test]
    fn a_service_without_spec_gets_one_too() {
        let mut services = [Service {
            spec: None,
            ..mk_service("ns", "s", None)
        }];
        assign_all(&mut services);
        assert_eq!(cluster_ip(&services[0]), Some(expected("ns/s").as_str()));
    }

    #[test]
    fn explicit_headless_and_external_name_services_are_left_alone() {
        let mut external = mk_service("ns", "ext", None);
        external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        let mut services = [
            mk_service("ns", "explicit", Some("10.0.0.7")),
            mk_service("ns", "headless", Some("None")),
            external,
        ];
        let diagnostics = assign_all(&mut services);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(cluster_ip(&services[0]), Some("10.0.0.7"));
        assert_eq!(cluster_ip(&services[1]), Some("None"));
        assert_eq!(cluster_ip(&services[2]), None);
    }

    #[test]
    fn only_cluster_ips_given_fills_in_cluster_ip() {
        let mut service = mk_service("ns", "s", None);
        service.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.0.0.9".into()]);
        let mut services = [service];
        assert!(assign_all(&mut services).is_empty());
        assert_eq!(cluster_ip(&services[0]), Some("10.0.0.9"));
    }

    #[test]
    fn an_explicit_address_is_never_reused_and_collisions_probe_to_the_next_address() {
        let want = expected("ns/a");
        let next = Ipv4Addr::from(BASE + fnv1a(b"ns/a") % SIZE + 1).to_string();
        // `ns/b` sorts after `ns/a`, holds the address `ns/a` would get explicitly.
        let mut services = [
            mk_service("ns", "a", None),
            mk_service("ns", "b", Some(&want)),
        ];
        assign_all(&mut services);
        assert_eq!(cluster_ip(&services[0]), Some(next.as_str()));
        assert_eq!(cluster_ip(&services[1]), Some(want.as_str()));
    }

    #[test]
    fn colliding_hashes_among_assigned_services_probe_in_name_order() {
        let taken = BTreeSet::new();
        let first = free_address("ns/a", &taken).unwrap();
        let second = free_address("ns/a", &[IpAddr::V4(first)].into()).unwrap();
        assert_ne!(first, second);
        // Two services, where the second's hash points at the first's address: find names
        // whose hashes collide in the /16 by searching a small space.
        let target = fnv1a(b"ns/svc-0") % SIZE;
        let other = (1..200_000)
            .map(|i| format!("svc-{i}"))
            .find(|n| fnv1a(format!("ns/{n}").as_bytes()) % SIZE == target)
            .expect("a colliding name in the search space");
        let mut services = [
            mk_service("ns", &other, None),
            mk_service("ns", "svc-0", None),
        ];
        assign_all(&mut services);
        let a = cluster_ip(&services[0]).unwrap().to_string();
        let b = cluster_ip(&services[1]).unwrap().to_string();
        assert_ne!(a, b);
        // Assignment follows name order, not input order: the same with the input reversed.
        let mut reversed = [
            mk_service("ns", "svc-0", None),
            mk_service("ns", &other, None),
        ];
        assign_all(&mut reversed);
        assert_eq!(cluster_ip(&reversed[0]), Some(b.as_str()));
        assert_eq!(cluster_ip(&reversed[1]), Some(a.as_str()));
    }

    #[test]
    fn the_network_and_broadcast_addresses_are_skipped() {
        let all_but_edges: BTreeSet<IpAddr> = (1..SIZE - 1)
            .filter(|o| *o != 5)
            .map(|o| IpAddr::V4(Ipv4Addr::from(BASE + o)))
            .collect();
        assert_eq!(
            free_address("any", &all_but_edges),
            Some(Ipv4Addr::new(10, 96, 0, 5))
        );
        let full: BTreeSet<IpAddr> = (1..SIZE - 1)
            .map(|o| IpAddr::V4(Ipv4Addr::from(BASE + o)))
            .collect();
        assert_eq!(free_address("any", &full), None);
    }
}
