//! Services, EndpointSlices and Pods into model services and workloads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort as K8sServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lanyard_model::{
    Endpoint, InboundPort, Protocol, Service as ModelService, ServiceKey, ServicePort, Workload,
    WorkloadKey,
};

use crate::objects::{ObjectKey, Objects};

/// The label EndpointSlices carry to name their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a Service port declares about its protocol, before routes are considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DeclaredProtocol {
    /// `appProtocol` or the port name says HTTP, HTTP/2 or gRPC.
    Http(Protocol),
    /// `appProtocol` or the port name says something that is not HTTP (tcp, tls, https, ...).
    Opaque,
    /// Nothing said: forwarded as TCP unless an HTTP route attaches to it.
    Unknown,
}

impl DeclaredProtocol {
    /// The protocol of a port no route attaches to.
    pub(super) fn without_routes(self) -> Protocol {
        match self {
            DeclaredProtocol::Http(p) => p,
            DeclaredProtocol::Opaque | DeclaredProtocol::Unknown => Protocol::Tcp,
        }
    }
}

/// Services with their ports and endpoints, and what each port declared.
pub(super) struct Services {
    pub services: BTreeMap<ServiceKey, ModelService>,
    pub declared: BTreeMap<(ServiceKey, u16), DeclaredProtocol>,
    /// Services with `clusterIP: None`.
    pub headless: BTreeSet<ServiceKey>,
}

/// Builds services (with endpoints) and workloads.
pub(super) fn build(
    objects: &Objects,
    warnings: &mut Vec<String>,
) -> (Services, BTreeMap<WorkloadKey, Workload>) {
    let slices = slices_by_service(objects);
    let mut services = BTreeMap::new();
    let mut declared = BTreeMap::new();
    let mut headless = BTreeSet::new();
    for (key, svc) in &objects.services {
        let Some(spec) = &svc.spec else { continue };
        let service_key = ServiceKey::new(&key.namespace, &key.name);
        if spec.cluster_ip.as_deref() == Some("None") {
            headless.insert(service_key.clone());
        }
        if spec.type_.as_deref() == Some("ExternalName") {
            warnings.push(format!(
                "Service {key}: ExternalName Services are not part of the mesh; clients reach them without routing"
            ));
            continue;
        }
        let no_slices = Vec::new();
        let own_slices = slices.get(&service_key).unwrap_or(&no_slices);
        let mut ports = Vec::new();
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Ok(number) = u16::try_from(port.port) else {
                warnings.push(format!("Service {key}: port {} is out of range", port.port));
                continue;
            };
            let protocol = declared_protocol(port);
            declared.insert((service_key.clone(), number), protocol);
            ports.push(ServicePort {
                port: number,
                name: port.name.clone(),
                protocol: protocol.without_routes(),
                endpoints: endpoints_for(port, own_slices),
            });
        }
        ports.sort_by_key(|p| p.port);
        ports.dedup_by_key(|p| p.port);
        services.insert(
            service_key.clone(),
            ModelService {
                key: service_key,
                cluster_ips: cluster_ips(svc),
                ports,
            },
        );
    }
    let workloads = workloads(objects);
    (
        Services {
            services,
            declared,
            headless,
        },
        workloads,
    )
}

/// The protocol a Service port declares through `appProtocol` or, failing that, its name
/// (`http`, `http-web`, `grpc-api`, `tcp-db`, ...), the conventions Istio and Linkerd users know.
pub(super) fn declared_protocol(port: &K8sServicePort) -> DeclaredProtocol {
    // Compared without regard to ASCII case, as the lower-cased names were.
    let one_of = |s: &str, names: &[&str]| names.iter().any(|n| s.eq_ignore_ascii_case(n));
    if let Some(app) = port.app_protocol.as_deref() {
        return if one_of(app, &["http", "kubernetes.io/ws"]) {
            DeclaredProtocol::Http(Protocol::Http)
        } else if one_of(app, &["http2", "h2c", "kubernetes.io/h2c"]) {
            DeclaredProtocol::Http(Protocol::Http2)
        } else if one_of(app, &["grpc", "grpc-web"]) {
            DeclaredProtocol::Http(Protocol::Grpc)
        } else {
            DeclaredProtocol::Opaque
        };
    }
    let name = port.name.as_deref().unwrap_or_default();
    let prefix = name.split('-').next().unwrap_or_default();
    if one_of(prefix, &["http"]) {
        DeclaredProtocol::Http(Protocol::Http)
    } else if one_of(prefix, &["http2", "h2c"]) {
        DeclaredProtocol::Http(Protocol::Http2)
    } else if one_of(prefix, &["grpc"]) {
        DeclaredProtocol::Http(Protocol::Grpc)
    } else if one_of(
        prefix,
        &["tcp", "tls", "https", "mongo", "mysql", "redis", "udp"],
    ) {
        DeclaredProtocol::Opaque
    } else {
        DeclaredProtocol::Unknown
    }
}

fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let mut raw: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
    if raw.is_empty() {
        raw.extend(spec.cluster_ip.iter());
    }
    let mut ips: Vec<IpAddr> = raw.iter().filter_map(|ip| ip.parse().ok()).collect();
    ips.dedup();
    ips
}

fn slices_by_service(objects: &Objects) -> BTreeMap<ServiceKey, Vec<&EndpointSlice>> {
    let mut by_service: BTreeMap<ServiceKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for (key, slice) in &objects.endpoint_slices {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let Some(service) = service {
            by_service
                .entry(ServiceKey::new(&key.namespace, service))
                .or_default()
                .push(slice);
        }
    }
    by_service
}

/// Endpoints of one Service port: the slice port with the same name (both unnamed counts).
fn endpoints_for(port: &K8sServicePort, slices: &[&EndpointSlice]) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue;
        }
        let Some(slice_port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port.name.as_deref().unwrap_or_default()
                && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
        }) else {
            continue;
        };
        let Some(number) = slice_port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            // The EndpointSlice API says a missing `ready` means ready, a missing `serving`
            // means the same as `ready`, and a missing `terminating` means not terminating.
            let ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(ready);
            let terminating = conditions.terminating.unwrap_or(false);
            let workload = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let ns = r
                        .namespace
                        .clone()
                        .or_else(|| slice.metadata.namespace.clone())?;
                    Some(WorkloadKey::new(ns, r.name.clone()?))
                });
            for address in &endpoint.addresses {
                let Ok(address) = address.parse::<IpAddr>() else {
                    continue;
                };
                if !seen.insert((address, number)) {
                    continue;
                }
                out.push(Endpoint {
                    address,
                    port: number,
                    ready,
                    serving,
                    terminating,
                    zone: endpoint.zone.clone(),
                    workload: workload.clone(),
                });
            }
        }
    }
    out.sort_by_key(|e| (e.address, e.port));
    out
}

fn workloads(objects: &Objects) -> BTreeMap<WorkloadKey, Workload> {
    let selecting = Selecting::new(objects);
    objects
        .pods
        .iter()
        .map(|(key, pod)| {
            let workload_key = WorkloadKey::new(&key.namespace, &key.name);
            let workload = Workload {
                key: workload_key.clone(),
                ips: pod_ips(pod),
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                service_account: pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".to_string()),
                inbound: inbound_ports(&selecting, key, pod),
            };
            (workload_key, workload)
        })
        .collect()
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    ips
}

/// Services with a non-empty selector, in key order, indexed by namespace and the first
/// label of their selector, so a pod only looks at the Services that may select it.
struct Selecting<'a> {
    services: Vec<(&'a ObjectKey, &'a ServiceSpec, &'a BTreeMap<String, String>)>,
    by_first_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
}

impl<'a> Selecting<'a> {
    fn new(objects: &'a Objects) -> Self {
        let mut services = Vec::new();
        let mut by_first_label: HashMap<_, Vec<usize>> = HashMap::new();
        for (key, svc) in &objects.services {
            let Some(spec) = &svc.spec else { continue };
            let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
                continue;
            };
            // Only names a range over the namespace, up to U+10FFFF, reaches.
            if key.name.as_str() > "\u{10FFFF}" {
                continue;
            }
            let Some((k, v)) = selector.iter().next() else {
                continue;
            };
            by_first_label
                .entry((key.namespace.as_str(), k.as_str(), v.as_str()))
                .or_default()
                .push(services.len());
            services.push((key, spec, selector));
        }
        Self {
            services,
            by_first_label,
        }
    }

    /// The Services of `namespace` whose selector picks `labels`, in key order.
    fn selecting(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a ServiceSpec)> {
        let mut found: Vec<usize> = labels
            .iter()
            .filter_map(|(k, v)| {
                self.by_first_label
                    .get(&(namespace, k.as_str(), v.as_str()))
            })
            .flatten()
            .copied()
            .collect();
        found.sort_unstable();
        let services = &self.services;
        found.into_iter().filter_map(move |i| {
            let (key, spec, selector) = services[i];
            selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
                .then_some((key, spec))
        })
    }
}

/// The container ports a pod serves for the Services whose selector picks it.
fn inbound_ports(selecting: &Selecting<'_>, pod_key: &ObjectKey, pod: &Pod) -> Vec<InboundPort> {
    let Some(labels) = pod.metadata.labels.as_ref() else {
        return Vec::new();
    };
    let mut by_port: BTreeMap<u16, InboundPort> = BTreeMap::new();
    for (key, spec) in selecting.selecting(&pod_key.namespace, labels) {
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Some(target) = target_port(port, pod) else {
                continue;
            };
            let protocol = declared_protocol(port).without_routes();
            let entry = by_port.entry(target).or_insert_with(|| InboundPort {
                port: target,
                protocol,
                services: Vec::new(),
            });
            // A port any Service declares as HTTP is served as HTTP.
            if entry.protocol == Protocol::Tcp {
                entry.protocol = protocol;
            }
            let service = ServiceKey::new(&key.namespace, &key.name);
            if !entry.services.contains(&service) {
                entry.services.push(service);
            }
        }
    }
    by_port.into_values().collect()
}

/// The container port a Service port reaches on a pod: `targetPort` as a number, as a
/// container port name, or the Service port itself when unset.
fn target_port(port: &K8sServicePort, pod: &Pod) -> Option<u16> {
    match &port.target_port {
        None => u16::try_from(port.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}
