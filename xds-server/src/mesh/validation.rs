//! Validation before publishing: every resource of a translated mesh checked against the
//! rules of each kind of proxy that reads it ([`MeshResources::check`]), and what fails kept
//! from them ([`MeshResources::withhold`]).
//!
//! Envoy sidecars read everything: Envoy's protoc-gen-validate rules and the rules it applies
//! in code ([`crate::validate::pgv`], [`crate::validate::envoy`]). Proxyless gRPC clients read
//! the gRPC form of each route configuration, the API listener of each Service port, the
//! outbound clusters and the endpoints ([`crate::validate::grpc`]).
//!
//! A finding in a route configuration names the table routes its violations point at, so
//! that the caller can drop the rules that produced them and translate again; what is left
//! is withheld: the previous mesh's version of the resource stays in effect, or, with none, a
//! route configuration becomes the port's pass-through and anything else is left out.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use lanyard_model::{RoutingVariant, ServicePortKey};

use super::{Flavours, Inbound, MeshResources};
use crate::api_listeners::api_listener;
use crate::node::ProxyKind;
use crate::resource::ResourceType;
use crate::validate::{Violation, envoy, grpc, pgv};
use crate::{names, routes};

/// Which kind of proxy refuses a resource.
pub type Receiver = ProxyKind;

/// A resource one kind of proxy would refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub type_: ResourceType,
    pub name: String,
    pub receiver: Receiver,
    /// For a route configuration: the port and variant it serves, and which routes of the
    /// model's table the violations point at.
    pub table: Option<TableRef>,
    /// Every violation, with paths from the resource's root.
    pub violations: Vec<Violation>,
}

/// The table a route configuration finding came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRef {
    pub port: ServicePortKey,
    pub variant: RoutingVariant,
    /// By index into the table's routes, the violations of the Envoy or gRPC routes made
    /// from it, with paths from the route.
    pub routes: BTreeMap<usize, Vec<Violation>>,
    /// Whether some violation lies outside every route (the configuration as a whole).
    pub outside_routes: bool,
}

impl Finding {
    /// Whether dropping the table routes it names would remove every violation.
    pub fn is_in_routes_only(&self) -> bool {
        self.table
            .as_ref()
            .is_some_and(|t| !t.outside_routes && !t.routes.is_empty())
    }
}

/// What became of a resource that was withheld.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// The previous mesh's version stays in effect.
    Previous,
    /// No earlier version: the port's pass-through route configuration is served instead.
    PassThrough,
    /// No earlier version: the resource is left out.
    Nothing,
}

impl Kept {
    pub fn as_str(self) -> &'static str {
        match self {
            Kept::Previous => "the last valid version stays in effect",
            Kept::PassThrough => "pass-through is served instead",
            Kept::Nothing => "it is left out",
        }
    }
}

/// A resource kept from proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withheld {
    pub finding: Finding,
    pub kept: Kept,
}

/// Adds a finding for the resource when it has violations.
fn note(
    out: &mut Vec<Finding>,
    type_: ResourceType,
    name: &str,
    receiver: Receiver,
    violations: Vec<Violation>,
) {
    if !violations.is_empty() {
        out.push(Finding {
            type_,
            name: name.to_string(),
            receiver,
            table: None,
            violations,
        });
    }
}

/// The route index and the rest of a path under `virtual_hosts[0].routes[N]`.
fn route_of(path: &str) -> Option<(usize, &str)> {
    let rest = path.strip_prefix("virtual_hosts[0].routes[")?;
    let end = rest.find(']')?;
    let index = rest[..end].parse().ok()?;
    let tail = rest[end + 1..].trim_start_matches('.');
    Some((index, tail))
}

/// Attributes a route configuration's violations to table routes.
fn table_ref(
    port: &ServicePortKey,
    variant: &RoutingVariant,
    violations: &[Violation],
    origins: Option<&[usize]>,
) -> TableRef {
    let mut table = TableRef {
        port: port.clone(),
        variant: variant.clone(),
        routes: BTreeMap::new(),
        outside_routes: false,
    };
    for v in violations {
        let origin = route_of(&v.path).and_then(|(i, tail)| {
            let origin = match origins {
                Some(origins) => *origins.get(i)?,
                None => i,
            };
            Some((origin, tail))
        });
        match origin {
            Some((origin, tail)) => table
                .routes
                .entry(origin)
                .or_default()
                .push(Violation::new(tail, v.message.clone())),
            None => table.outside_routes = true,
        }
    }
    table
}

fn envoy_route_violations(config: &RouteConfiguration) -> Vec<Violation> {
    let mut v = pgv::check(config);
    v.extend(envoy::check_route_configuration(config));
    v
}

fn envoy_listener_violations(listener: &Listener) -> Vec<Violation> {
    let mut v = pgv::check(listener);
    v.extend(envoy::check_listener(listener));
    v
}

fn envoy_cluster_violations(cluster: &Cluster) -> Vec<Violation> {
    let mut v = pgv::check(cluster);
    v.extend(envoy::check_cluster(cluster));
    v
}

impl MeshResources {
    /// Every resource some kind of proxy would refuse, with why. Each distinct resource is
    /// checked once per kind of proxy that reads it.
    pub fn check(&self) -> Vec<Finding> {
        self.check_since(None)
    }

    /// [`MeshResources::check`], skipping every resource equal to the one of the same name
    /// (and variant) in `previous`, a mesh whose published resources all passed: the cost of
    /// a change follows what it changed.
    pub fn check_since(&self, previous: Option<&MeshResources>) -> Vec<Finding> {
        let mut out = Vec::new();
        for listener in &self.listeners {
            if previous
                .is_some_and(|p| same_as_in(&p.listeners, &listener.name, listener, |l| &l.name))
            {
                continue;
            }
            note(
                &mut out,
                ResourceType::Listener,
                &listener.name,
                ProxyKind::Envoy,
                envoy_listener_violations(listener),
            );
        }
        for cluster in &self.clusters {
            if previous
                .is_some_and(|p| same_as_in(&p.clusters, &cluster.name, cluster, |c| &c.name))
            {
                continue;
            }
            note(
                &mut out,
                ResourceType::Cluster,
                &cluster.name,
                ProxyKind::Envoy,
                envoy_cluster_violations(cluster),
            );
            // Proxyless clients ask only for the clusters their routes name: outbound ones.
            if cluster.name.starts_with("outbound|") {
                note(
                    &mut out,
                    ResourceType::Cluster,
                    &cluster.name,
                    ProxyKind::Grpc,
                    grpc::check_cluster(cluster),
                );
            }
        }
        note(
            &mut out,
            ResourceType::Cluster,
            &self.invalid_backend.name,
            ProxyKind::Grpc,
            grpc::check_cluster(&self.invalid_backend),
        );
        for assignment in &self.endpoints {
            let name = &assignment.cluster_name;
            if previous
                .is_some_and(|p| same_as_in(&p.endpoints, name, assignment, |e| &e.cluster_name))
            {
                continue;
            }
            note(
                &mut out,
                ResourceType::Endpoint,
                name,
                ProxyKind::Envoy,
                pgv::check(assignment.as_ref()),
            );
            note(
                &mut out,
                ResourceType::Endpoint,
                name,
                ProxyKind::Grpc,
                grpc::check_load_assignment(assignment),
            );
        }
        for inbound in self.distinct_inbound() {
            note(
                &mut out,
                ResourceType::Listener,
                &inbound.listener.name,
                ProxyKind::Envoy,
                envoy_listener_violations(&inbound.listener),
            );
            for cluster in &inbound.clusters {
                note(
                    &mut out,
                    ResourceType::Cluster,
                    &cluster.name,
                    ProxyKind::Envoy,
                    envoy_cluster_violations(cluster),
                );
            }
        }
        let domain = &self.options.cluster_domain;
        for port in &self.routes {
            let before = previous.and_then(|p| Some(&p.routes[p.routes_by_name(&port.name)?]));
            for (variant, flavours) in &port.variants {
                let earlier = before.and_then(|b| b.variants.get(variant));
                let mut push = |receiver: Receiver, v: Vec<Violation>, origins| {
                    if v.is_empty() {
                        return;
                    }
                    out.push(Finding {
                        type_: ResourceType::Route,
                        name: port.name.clone(),
                        receiver,
                        table: Some(table_ref(&port.key, variant, &v, origins)),
                        violations: v,
                    });
                };
                let same = |kind: ProxyKind| {
                    earlier.is_some_and(|e| **e.get(kind) == **flavours.get(kind))
                };
                if !same(ProxyKind::Envoy) {
                    push(
                        ProxyKind::Envoy,
                        envoy_route_violations(&flavours.envoy),
                        None,
                    );
                }
                if !same(ProxyKind::Grpc) {
                    push(
                        ProxyKind::Grpc,
                        grpc::check_route_configuration(&flavours.grpc),
                        flavours.grpc_origins.as_deref(),
                    );
                }
            }
            // An API listener depends only on its port, protocol and name.
            let protocol = self.directory.protocol(&port.key);
            if before.is_some()
                && previous.is_some_and(|p| p.directory.protocol(&port.key) == protocol)
            {
                continue;
            }
            // The API listener of the port, as any client name resolving to it gets it
            // (only its name differs).
            if let Some(protocol) = protocol {
                let listener = api_listener(&port.name, &port.key, protocol, domain);
                note(
                    &mut out,
                    ResourceType::Listener,
                    &port.name,
                    ProxyKind::Grpc,
                    grpc::check_listener(&listener),
                );
            }
        }
        out
    }

    /// Keeps every resource of `findings` from the proxies: the version in `previous` (the
    /// mesh published before, whose resources all passed) when it has one, else pass-through
    /// for a route configuration and nothing for anything else. A cluster, listener or
    /// assignment one kind of proxy refuses is withheld from both (they share names).
    pub fn withhold(&mut self, findings: Vec<Finding>, previous: Option<&MeshResources>) {
        for finding in findings {
            let name = finding.name.as_str();
            let kept = match finding.type_ {
                ResourceType::Route => self.withhold_route(&finding, previous),
                ResourceType::Cluster => {
                    let previous = previous.map(|p| p.clusters.as_slice()).unwrap_or_default();
                    replace(&mut self.clusters, previous, name, |c| &c.name).unwrap_or_else(|| {
                        // An inbound cluster (no user input reaches one): left out of the
                        // workloads whose version is refused.
                        self.edit_inbound(|inbound| {
                            inbound.clusters.retain(|c| {
                                c.name != name || envoy_cluster_violations(c).is_empty()
                            })
                        });
                        Kept::Nothing
                    })
                }
                ResourceType::Endpoint => {
                    let previous = previous.map(|p| p.endpoints.as_slice()).unwrap_or_default();
                    replace(&mut self.endpoints, previous, name, |e| &e.cluster_name)
                        .unwrap_or(Kept::Nothing)
                }
                ResourceType::Listener if finding.receiver == ProxyKind::Grpc => {
                    if let Some(port) = self.routes_by_name(name) {
                        let key = self.routes[port].key.clone();
                        self.withheld_api_listeners.insert(key);
                    }
                    Kept::Nothing
                }
                ResourceType::Listener => {
                    let previous = previous.map(|p| p.listeners.as_slice()).unwrap_or_default();
                    replace(&mut self.listeners, previous, name, |l| &l.name).unwrap_or_else(|| {
                        // A workload's inbound listener refused: it gets the one of a proxy
                        // with no known workload (pass-through) instead.
                        let fallback = self.no_workload.listener.clone();
                        self.edit_inbound(|inbound| {
                            if inbound.listener.name == name
                                && !envoy_listener_violations(&inbound.listener).is_empty()
                            {
                                inbound.listener = fallback.clone();
                            }
                        });
                        Kept::PassThrough
                    })
                }
            };
            self.withheld.push(Withheld { finding, kept });
        }
    }

    /// What [`MeshResources::withhold`] kept from proxies.
    pub fn withheld(&self) -> &[Withheld] {
        &self.withheld
    }

    fn routes_by_name(&self, name: &str) -> Option<usize> {
        self.routes
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
    }

    fn withhold_route(&mut self, finding: &Finding, previous: Option<&MeshResources>) -> Kept {
        let (Some(at), Some(table)) = (self.routes_by_name(&finding.name), &finding.table) else {
            return Kept::Nothing;
        };
        let earlier = previous.and_then(|p| {
            let at = p.routes_by_name(&finding.name)?;
            let flavours = p.routes[at].variants.get(&table.variant)?;
            Some(flavours.get(finding.receiver).clone())
        });
        let domain = self.options.cluster_domain.clone();
        let port = &mut self.routes[at];
        let Some(flavours) = port.variants.get_mut(&table.variant) else {
            return Kept::Nothing;
        };
        let (config, kept) = match earlier {
            Some(config) => (config, Kept::Previous),
            None => {
                let cluster = names::outbound_cluster(&port.key, &domain);
                let config = routes::single_cluster(&port.name, &cluster);
                (Arc::new(config), Kept::PassThrough)
            }
        };
        flavours.set(finding.receiver, config);
        kept
    }

    /// Every distinct inbound resource set once.
    fn distinct_inbound(&self) -> Vec<&Arc<Inbound>> {
        let mut inbound: Vec<&Arc<Inbound>> = self.inbound.values().collect();
        inbound.push(&self.no_workload);
        inbound.sort_by_key(|i| Arc::as_ptr(i));
        inbound.dedup_by_key(|i| Arc::as_ptr(i));
        inbound
    }

    /// Applies `edit` to every workload's inbound resources, keeping shared ones shared.
    fn edit_inbound(&mut self, mut edit: impl FnMut(&mut Inbound)) {
        let mut edited: BTreeMap<usize, Arc<Inbound>> = BTreeMap::new();
        let mut apply = |inbound: &mut Arc<Inbound>| {
            let key = Arc::as_ptr(inbound) as usize;
            let new = edited.entry(key).or_insert_with(|| {
                let mut copy = Inbound::clone(inbound);
                edit(&mut copy);
                Arc::new(copy)
            });
            *inbound = new.clone();
        };
        for inbound in self.inbound.values_mut() {
            apply(inbound);
        }
        apply(&mut self.no_workload);
    }
}

impl Flavours {
    fn set(&mut self, receiver: Receiver, config: Arc<RouteConfiguration>) {
        match receiver {
            ProxyKind::Envoy => self.envoy = config,
            ProxyKind::Grpc => {
                self.grpc = config;
                self.grpc_origins = None;
            }
        }
    }
}

/// Whether the name-sorted `items` hold a resource named `name` equal to `item`.
fn same_as_in<T: PartialEq>(
    items: &[Arc<T>],
    name: &str,
    item: &Arc<T>,
    name_of: impl Fn(&T) -> &String,
) -> bool {
    items
        .binary_search_by(|i| name_of(i).as_str().cmp(name))
        .is_ok_and(|at| Arc::ptr_eq(&items[at], item) || *items[at] == **item)
}

/// Replaces the resource `name` of the name-sorted `items` with `previous`'s, or removes it;
/// `None` when `items` has no such resource.
fn replace<T>(
    items: &mut Vec<Arc<T>>,
    previous: &[Arc<T>],
    name: &str,
    name_of: impl Fn(&T) -> &String,
) -> Option<Kept> {
    let at = items
        .binary_search_by(|i| name_of(i).as_str().cmp(name))
        .ok()?;
    Some(
        match previous.binary_search_by(|i| name_of(i).as_str().cmp(name)) {
            Ok(p) => {
                items[at] = previous[p].clone();
                Kept::Previous
            }
            Err(_) => {
                items.remove(at);
                Kept::Nothing
            }
        },
    )
}

#[cfg(test)]
mod tests;
