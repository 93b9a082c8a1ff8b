//! The translated mesh: everything shared built once by [`translate`], assembled per proxy
//! by [`MeshResources::for_proxy`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use lanyard_model::{
    Model, NamespaceName, PortRouting, Protocol, RouteTable, RoutingVariant, ServicePortKey,
    WorkloadKey,
};

use crate::api_listeners::{ServiceDirectory, api_listener};
use crate::listeners::{cluster_ip_listeners, virtual_inbound, virtual_outbound};
use crate::node::ProxyKind;
use crate::routes::RouteContext;
use crate::{clusters, endpoints, names, routes};

mod validation;

pub use validation::{Finding, Kept, Receiver, TableRef, Withheld};

/// Translation settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsOptions {
    /// Kubernetes cluster domain, `cluster.local` by default.
    pub cluster_domain: String,
    /// Port outbound traffic is redirected to (`virtualOutbound`), 15001 by default.
    pub outbound_port: u16,
    /// Port inbound traffic is redirected to (`virtualInbound`), 15006 by default.
    pub inbound_port: u16,
}

impl Default for XdsOptions {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_string(),
            outbound_port: 15001,
            inbound_port: 15006,
        }
    }
}

/// Which proxy asks: its namespace (which route variants it sees), for a sidecar its workload
/// (which inbound ports it serves), and its kind (which form of route configurations it reads).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProxyRef {
    /// The namespace of the client.
    pub namespace: NamespaceName,
    /// The pod the sidecar runs in, when known.
    pub workload: Option<WorkloadKey>,
    /// Envoy or proxyless gRPC.
    pub kind: ProxyKind,
}

impl ProxyRef {
    /// An Envoy sidecar (or a client without a pod) in `namespace`.
    pub fn envoy(namespace: NamespaceName, workload: Option<WorkloadKey>) -> Self {
        Self {
            namespace,
            workload,
            kind: ProxyKind::Envoy,
        }
    }
}

/// The resources of one proxy, each list sorted by resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyResources {
    /// LDS: `virtualOutbound`, `virtualInbound` and the `<ip>_<port>` listeners.
    pub listeners: Vec<Arc<Listener>>,
    /// RDS: `<fqdn>:<port>` per HTTP Service port, in the variant this proxy sees.
    pub routes: Vec<Arc<RouteConfiguration>>,
    /// CDS: outbound clusters, pass-through clusters, this workload's inbound clusters.
    pub clusters: Vec<Arc<Cluster>>,
    /// EDS: one assignment per outbound cluster.
    pub endpoints: Vec<Arc<ClusterLoadAssignment>>,
}

/// The whole mesh as Envoy resources. Built once per model by [`translate`]; cheap to query.
#[derive(Clone, Debug)]
pub struct MeshResources {
    options: XdsOptions,
    /// `virtualOutbound` and the ClusterIP listeners, sorted by name.
    listeners: Vec<Arc<Listener>>,
    /// Outbound and pass-through clusters, sorted by name.
    clusters: Vec<Arc<Cluster>>,
    /// Sorted by name.
    endpoints: Vec<Arc<ClusterLoadAssignment>>,
    /// What proxyless gRPC clients get for backends that do not resolve, beside `clusters`
    /// and `endpoints` (see [`clusters::invalid_backend`]).
    invalid_backend: Arc<Cluster>,
    invalid_backend_assignment: Arc<ClusterLoadAssignment>,
    /// HTTP Service ports, sorted by route configuration name.
    routes: Vec<PortRoutes>,
    inbound: BTreeMap<WorkloadKey, Arc<Inbound>>,
    /// For proxies without a known workload: pass-through only.
    no_workload: Arc<Inbound>,
    /// Namespaces that have consumer routes on some port: clients elsewhere all see the same
    /// route configurations.
    consumer_namespaces: BTreeSet<NamespaceName>,
    directory: ServiceDirectory,
    /// Ports whose API listener a check refused: gRPC clients get none for them.
    withheld_api_listeners: BTreeSet<ServicePortKey>,
    /// What [`MeshResources::withhold`] kept from proxies, and why.
    withheld: Vec<validation::Withheld>,
}

/// Every variant of one port's route configuration.
#[derive(Clone, Debug)]
struct PortRoutes {
    /// The Service port.
    key: ServicePortKey,
    /// Its route configuration's name.
    name: String,
    /// The port's routing with empty tables: only which variants exist matters, so that
    /// [`PortRouting::variant_for`] (the model's own rule) can pick one.
    shape: PortRouting,
    variants: BTreeMap<RoutingVariant, Flavours>,
}

/// One variant in the form each kind of proxy reads: the same `Arc` when the forms agree.
#[derive(Clone, Debug)]
struct Flavours {
    envoy: Arc<RouteConfiguration>,
    grpc: Arc<RouteConfiguration>,
    /// For each route of `grpc`, the table route it came from; `None` when `grpc` is `envoy`
    /// (route for route the table's).
    grpc_origins: Option<Arc<[usize]>>,
}

impl Flavours {
    /// Both forms of `table`, shared when proxyless gRPC needs nothing different.
    fn of(name: &str, table: &RouteTable, port: u16, ctx: &RouteContext<'_>) -> Self {
        let envoy = Arc::new(routes::for_table(name, table, port, ProxyKind::Envoy, ctx));
        if routes::differs_for_grpc(table) {
            let (grpc, origins) = routes::for_table_grpc(name, table, port, ctx);
            Flavours {
                envoy,
                grpc: Arc::new(grpc),
                grpc_origins: Some(origins.into()),
            }
        } else {
            Flavours {
                grpc: envoy.clone(),
                envoy,
                grpc_origins: None,
            }
        }
    }

    /// One form for both kinds.
    fn same(config: RouteConfiguration) -> Self {
        let config = Arc::new(config);
        Flavours {
            envoy: config.clone(),
            grpc: config,
            grpc_origins: None,
        }
    }

    fn get(&self, kind: ProxyKind) -> &Arc<RouteConfiguration> {
        match kind {
            ProxyKind::Envoy => &self.envoy,
            ProxyKind::Grpc => &self.grpc,
        }
    }
}

/// A workload's `virtualInbound` and its `inbound|<port>||` clusters (sorted by name).
#[derive(Clone, Debug)]
struct Inbound {
    listener: Arc<Listener>,
    clusters: Vec<Arc<Cluster>>,
}

/// Translates the model. Everything that does not depend on the proxy is built here, once:
/// clusters, endpoints, ClusterIP listeners, and each route configuration variant (producer
/// or pass-through, and one per consumer namespace); inbound listeners once per distinct set
/// of inbound ports. Deterministic: the same model gives the same resources in the same order.
pub fn translate(model: &Model, options: &XdsOptions) -> MeshResources {
    let domain = options.cluster_domain.as_str();
    let ctx = RouteContext::new(model, domain);
    let mut listeners = vec![Arc::new(virtual_outbound(options.outbound_port))];
    let mut clusters = vec![
        Arc::new(clusters::passthrough()),
        Arc::new(clusters::inbound_passthrough()),
    ];
    let mut endpoints = Vec::new();
    let mut routes = Vec::new();
    for service in model.services.values() {
        for port in &service.ports {
            let key = ServicePortKey::new(service.key.clone(), port.port);
            let cluster = clusters::outbound(&key, port.protocol, domain);
            if port.protocol.is_http() {
                let name = names::route_config(&key, domain);
                let routing = model.routing.get(&key);
                let variants = port_routes(&key, routing, &name, &cluster.name, &ctx);
                routes.push((name, variants));
            }
            endpoints.push(Arc::new(endpoints::load_assignment(
                &cluster.name,
                &port.endpoints,
            )));
            clusters.push(Arc::new(cluster));
            listeners.extend(
                cluster_ip_listeners(service, port, domain)
                    .into_iter()
                    .map(Arc::new),
            );
        }
    }
    sort_by_name(&mut listeners, |l| &l.name);
    sort_by_name(&mut clusters, |c| &c.name);
    sort_by_name(&mut endpoints, |e| &e.cluster_name);
    routes.sort_by(|a, b| a.0.cmp(&b.0));
    routes.dedup_by(|a, b| a.0 == b.0);

    let (inbound, no_workload) = inbound_resources(model, options.inbound_port);
    let consumer_namespaces = routes
        .iter()
        .flat_map(|(_, r)| r.shape.consumers.keys().cloned())
        .collect();
    MeshResources {
        options: options.clone(),
        listeners,
        clusters,
        endpoints,
        invalid_backend: Arc::new(clusters::invalid_backend()),
        invalid_backend_assignment: Arc::new(clusters::invalid_backend_assignment()),
        routes: routes.into_iter().map(|(_, r)| r).collect(),
        inbound,
        no_workload,
        consumer_namespaces,
        directory: ServiceDirectory::new(model, domain),
        withheld_api_listeners: BTreeSet::new(),
        withheld: Vec::new(),
    }
}

/// Every variant of the route configuration `name` of a port whose cluster is `cluster`.
fn port_routes(
    key: &ServicePortKey,
    routing: Option<&PortRouting>,
    name: &str,
    cluster: &str,
    ctx: &RouteContext<'_>,
) -> PortRoutes {
    let empty = |table: &RouteTable| RouteTable {
        protocol: table.protocol,
        routes: Vec::new(),
    };
    let mut shape = PortRouting::default();
    let mut variants = BTreeMap::new();
    match routing.and_then(|r| r.producer.as_ref()) {
        Some(table) => {
            shape.producer = Some(empty(table));
            variants.insert(
                RoutingVariant::Producer,
                Flavours::of(name, table, key.port, ctx),
            );
        }
        None => {
            variants.insert(
                RoutingVariant::Passthrough,
                Flavours::same(routes::single_cluster(name, cluster)),
            );
        }
    }
    for (namespace, table) in routing.iter().flat_map(|r| &r.consumers) {
        shape.consumers.insert(namespace.clone(), empty(table));
        variants.insert(
            RoutingVariant::Consumer(namespace.clone()),
            Flavours::of(name, table, key.port, ctx),
        );
    }
    PortRoutes {
        key: key.clone(),
        name: name.to_string(),
        shape,
        variants,
    }
}

/// One `Inbound` per distinct `(port, protocol)` list, shared by every workload that has it;
/// one `inbound|<port>||` cluster per `(port, protocol)`.
fn inbound_resources(
    model: &Model,
    inbound_port: u16,
) -> (BTreeMap<WorkloadKey, Arc<Inbound>>, Arc<Inbound>) {
    let mut cluster_cache: BTreeMap<(u16, Protocol), Arc<Cluster>> = BTreeMap::new();
    let mut by_ports: BTreeMap<Vec<(u16, Protocol)>, Arc<Inbound>> = BTreeMap::new();
    let mut build = |ports: Vec<(u16, Protocol)>| {
        by_ports
            .entry(ports)
            .or_insert_with_key(|ports| {
                let mut clusters: Vec<Arc<Cluster>> = ports
                    .iter()
                    .map(|&(port, protocol)| {
                        cluster_cache
                            .entry((port, protocol))
                            .or_insert_with(|| Arc::new(clusters::inbound(port, protocol)))
                            .clone()
                    })
                    .collect();
                sort_by_name(&mut clusters, |c| &c.name);
                Arc::new(Inbound {
                    listener: Arc::new(virtual_inbound(inbound_port, ports)),
                    clusters,
                })
            })
            .clone()
    };
    let no_workload = build(Vec::new());
    let by_workload = model
        .workloads
        .iter()
        .map(|(key, workload)| {
            let mut ports: Vec<(u16, Protocol)> = workload
                .inbound
                .iter()
                .map(|p| (p.port, p.protocol))
                .collect();
            ports.sort_by_key(|&(port, _)| port);
            ports.dedup_by_key(|&mut (port, _)| port);
            (key.clone(), build(ports))
        })
        .collect();
    (by_workload, no_workload)
}

/// Sorts by name (stable) and drops later duplicates: Envoy rejects duplicate names.
fn sort_by_name<T>(items: &mut Vec<Arc<T>>, name: impl Fn(&T) -> &String) {
    items.sort_by(|a, b| name(a).cmp(name(b)));
    items.dedup_by(|a, b| name(a) == name(b));
}

/// Merges two name-sorted lists into one.
fn merge_by_name<T>(a: &[Arc<T>], b: &[Arc<T>], name: impl Fn(&T) -> &String) -> Vec<Arc<T>> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if name(&b[j]) < name(&a[i]) {
            out.push(b[j].clone());
            j += 1;
        } else {
            out.push(a[i].clone());
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl MeshResources {
    /// What one sidecar gets for wildcard LDS/CDS plus its RDS/EDS: every resource sorted by
    /// name. Only assembles shared `Arc`s: per HTTP Service port the route configuration
    /// variant the proxy's namespace sees, plus the workload's inbound listener and clusters
    /// (pass-through only when the workload is unknown).
    pub fn for_proxy(&self, proxy: &ProxyRef) -> ProxyResources {
        ProxyResources {
            listeners: self.listeners_for(proxy),
            routes: self.routes_for(&proxy.namespace, proxy.kind),
            clusters: self.clusters_for(proxy),
            endpoints: self.endpoints_for(proxy.kind),
        }
    }

    /// Whether the model has this workload (pod).
    pub fn has_workload(&self, key: &WorkloadKey) -> bool {
        self.inbound.contains_key(key)
    }

    fn inbound_for(&self, proxy: &ProxyRef) -> &Arc<Inbound> {
        proxy
            .workload
            .as_ref()
            .and_then(|w| self.inbound.get(w))
            .unwrap_or(&self.no_workload)
    }

    /// LDS of a sidecar, sorted by name: the shared listeners and the workload's inbound one.
    pub(crate) fn listeners_for(&self, proxy: &ProxyRef) -> Vec<Arc<Listener>> {
        let inbound = self.inbound_for(proxy);
        let at = self
            .listeners
            .partition_point(|l| l.name < inbound.listener.name);
        let mut listeners = Vec::with_capacity(self.listeners.len() + 1);
        listeners.extend_from_slice(&self.listeners[..at]);
        listeners.push(inbound.listener.clone());
        listeners.extend_from_slice(&self.listeners[at..]);
        listeners
    }

    /// CDS of a sidecar, sorted by name: the shared clusters and the workload's inbound ones.
    /// A proxyless gRPC client gets the invalid-backend cluster as well.
    pub(crate) fn clusters_for(&self, proxy: &ProxyRef) -> Vec<Arc<Cluster>> {
        let clusters = merge_by_name(&self.clusters, &self.inbound_for(proxy).clusters, |c| {
            &c.name
        });
        match proxy.kind {
            ProxyKind::Envoy => clusters,
            ProxyKind::Grpc => merge_by_name(
                &clusters,
                std::slice::from_ref(&self.invalid_backend),
                |c| &c.name,
            ),
        }
    }

    /// RDS of a client of `kind` in `namespace`, sorted by name: per HTTP Service port the
    /// variant it sees, in the form it reads.
    pub(crate) fn routes_for(
        &self,
        namespace: &NamespaceName,
        kind: ProxyKind,
    ) -> Vec<Arc<RouteConfiguration>> {
        self.routes
            .iter()
            .map(|port| port.for_namespace(namespace).get(kind).clone())
            .collect()
    }

    /// EDS of a kind of proxy, sorted by name: the same for every sidecar; with the
    /// invalid-backend assignment for proxyless gRPC clients.
    pub(crate) fn endpoints_for(&self, kind: ProxyKind) -> Vec<Arc<ClusterLoadAssignment>> {
        match kind {
            ProxyKind::Envoy => self.endpoints.clone(),
            ProxyKind::Grpc => merge_by_name(
                &self.endpoints,
                std::slice::from_ref(&self.invalid_backend_assignment),
                |e| &e.cluster_name,
            ),
        }
    }

    /// Identifies a proxy's LDS and CDS: proxies with the same key get the same listeners
    /// and clusters (they share the workload's inbound resources). Valid as long as `self`.
    pub(crate) fn inbound_key(&self, proxy: &ProxyRef) -> usize {
        Arc::as_ptr(self.inbound_for(proxy)) as usize
    }

    /// Identifies a client's RDS: clients with the same key get the same route
    /// configurations. The namespace is `None` for every namespace without consumer routes.
    pub(crate) fn routes_key(
        &self,
        namespace: &NamespaceName,
        kind: ProxyKind,
    ) -> (ProxyKind, Option<NamespaceName>) {
        let namespace = self
            .consumer_namespaces
            .contains(namespace)
            .then(|| namespace.clone());
        (kind, namespace)
    }

    /// Every distinct resource once (each shared `Arc` once), for caches that encode them
    /// and checks that read them all. Names repeat: route variants of one port, the inbound
    /// listener of each distinct set of inbound ports.
    pub(crate) fn distinct(&self) -> ProxyResources {
        let mut inbound: Vec<&Arc<Inbound>> = self.inbound.values().collect();
        inbound.push(&self.no_workload);
        inbound.sort_by_key(|i| Arc::as_ptr(i));
        inbound.dedup_by_key(|i| Arc::as_ptr(i));
        let mut inbound_clusters: Vec<Arc<Cluster>> = inbound
            .iter()
            .flat_map(|i| i.clusters.iter().cloned())
            .collect();
        inbound_clusters.sort_by_key(Arc::as_ptr);
        inbound_clusters.dedup_by_key(|c| Arc::as_ptr(c));
        let mut clusters = self.clusters.clone();
        clusters.extend(inbound_clusters);
        clusters.push(self.invalid_backend.clone());
        let mut listeners = self.listeners.clone();
        listeners.extend(inbound.iter().map(|i| i.listener.clone()));
        let mut routes: Vec<Arc<RouteConfiguration>> = self
            .routes
            .iter()
            .flat_map(|port| port.variants.values())
            .flat_map(|f| [f.envoy.clone(), f.grpc.clone()])
            .collect();
        routes.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let mut endpoints = self.endpoints.clone();
        endpoints.push(self.invalid_backend_assignment.clone());
        ProxyResources {
            listeners,
            routes,
            clusters,
            endpoints,
        }
    }

    /// A proxyless gRPC client's API listener for `xds:///NAME`, resolved for a client in
    /// `client_namespace`; `None` if NAME is not a mesh Service port.
    ///
    /// NAME is `svc.ns.svc.<cluster_domain>`, `svc.ns.svc`, `svc.ns`, `svc` (a Service in
    /// `client_namespace`) or a ClusterIP (IPv6 in brackets when a port follows), each with
    /// an optional `:port`; without one, port 80 if the Service has it, else its only port.
    /// The listener is named NAME exactly; its HttpConnectionManager fetches RDS
    /// `<fqdn>:<port>` (a TCP port gets an inline pass-through route instead).
    pub fn api_listener(&self, name: &str, client_namespace: &NamespaceName) -> Option<Listener> {
        let (port, protocol) = self.api_listener_port(name, client_namespace)?;
        Some(self.api_listener_of(name, &port, protocol))
    }

    /// The Service port `xds:///NAME` names for a client in `client_namespace`, when its API
    /// listener is served (see [`MeshResources::api_listener`]).
    pub fn api_listener_port(
        &self,
        name: &str,
        client_namespace: &NamespaceName,
    ) -> Option<(ServicePortKey, Protocol)> {
        let (port, protocol) = self.directory.resolve(name, client_namespace)?;
        (!self.withheld_api_listeners.contains(&port)).then_some((port, protocol))
    }

    /// The API listener `name` for `port`, a port [`MeshResources::api_listener_port`] gave.
    pub fn api_listener_of(
        &self,
        name: &str,
        port: &ServicePortKey,
        protocol: Protocol,
    ) -> Listener {
        api_listener(name, port, protocol, &self.options.cluster_domain)
    }

    /// Drops every ClusterLoadAssignment, leaving an inconsistent mesh: for tests of the
    /// consistency check.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn drop_endpoints_for_tests(&mut self) {
        self.endpoints.clear();
    }

    /// The options the mesh was translated with.
    pub fn options(&self) -> &XdsOptions {
        &self.options
    }
}

impl PortRoutes {
    fn for_namespace(&self, namespace: &NamespaceName) -> &Flavours {
        let variant = self.shape.variant_for(namespace);
        self.variants
            .get(&variant)
            .expect("every variant PortRouting::variant_for can return is built")
    }
}

#[cfg(test)]
#[path = "mesh_tests.rs"]
mod tests;
