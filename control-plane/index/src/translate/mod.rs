//! Objects in, model and status out.
//!
//! [`translate`] is pure: the same objects always give the same model and status, whatever
//! order they arrived in. It is split by what it builds:
//! - [`services`]: Services, EndpointSlices and Pods into model services and workloads;
//! - [`parents`]: which Service ports each route's parentRefs attach to;
//! - [`http`] and [`grpc`]: one route's rules lowered into model routes;
//! - [`filters`]: filters and the CRDs' validation rules;
//! - [`backends`]: backendRefs resolved (or not) against Services and ReferenceGrants;
//! - [`precedence`]: the Gateway API ordering of matches merged from several routes;
//! - [`tables`]: producer/consumer tables per Service port, conflicts, and status;
//! - [`smi`]: SMI TrafficSplits on ports no Gateway API producer route claims.

mod backends;
mod durations;
mod filters;
mod grpc;
mod http;
mod parents;
mod precedence;
mod services;
mod smi;
mod tables;

pub use smi::{SmiOutcome, SmiReport};

use std::collections::BTreeMap;

use lanyard_model::{Model, NamespaceName, Protocol, ServicePortKey};

use crate::objects::{ObjectRef, Objects};
use crate::status::{DEFAULT_CONTROLLER_NAME, RouteStatus};

/// Settings of a translation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `controllerName` written into route status.
    pub controller_name: String,
    /// Rules whose configuration a receiver (Envoy, a gRPC client) would refuse, found by
    /// validating an earlier translation, each with why. They are dropped like rules that
    /// violate the spec.
    pub rejected_rules: BTreeMap<RuleRef, String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            controller_name: DEFAULT_CONTROLLER_NAME.to_string(),
            rejected_rules: BTreeMap::new(),
        }
    }
}

/// One rule of a route: `rule` indexes the route's `spec.rules`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    pub route: ObjectRef,
    pub rule: usize,
}

/// Where the routes of one Service port's tables came from: each `Vec` is aligned index for
/// index with the routes of the matching [`lanyard_model::RouteTable`] in `Model.routing`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortProvenance {
    pub producer: Vec<RuleRef>,
    pub consumers: BTreeMap<NamespaceName, Vec<RuleRef>>,
}

/// The result of a translation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    pub model: Model,
    /// One entry per HTTPRoute and GRPCRoute that names at least one Service parent, sorted
    /// by kind, namespace and name.
    pub statuses: Vec<RouteStatus>,
    /// Problems with objects other than routes (routes report through their status), each
    /// naming the object.
    pub warnings: Vec<String>,
    /// What became of every SMI TrafficSplit (SMI has no status field), sorted by split.
    pub smi: Vec<SmiReport>,
    /// The rule each route of each Gateway API table came from, by Service port. Tables an
    /// SMI TrafficSplit produced have no entry here (nor in their port's entry).
    pub provenance: BTreeMap<ServicePortKey, PortProvenance>,
}

/// Translates every object into the model and the routes' status.
pub fn translate(objects: &Objects, options: &Options) -> Translation {
    let mut warnings = Vec::new();
    let (services, workloads) = services::build(objects, &mut warnings);
    let mut tables = tables::build(objects, &services, options);
    let smi = smi::apply(
        objects,
        &services,
        &mut tables.routing,
        &mut tables.routed_protocols,
    );
    let mut services = services.services;
    // A port that declared no protocol is served with the protocol of the routes on it,
    // and one that a GRPCRoute sends to (and no route is on) as gRPC: HTTP/2 upstream.
    let grpc_backends = tables
        .grpc_backends
        .into_iter()
        .map(|p| (p, Protocol::Grpc));
    for (port, protocol) in tables.routed_protocols.into_iter().chain(grpc_backends) {
        let Some(service) = services.get_mut(&port.service) else {
            continue;
        };
        if let Some(p) = service.ports.iter_mut().find(|p| p.port == port.port)
            && p.protocol == Protocol::Tcp
        {
            p.protocol = protocol;
        }
    }
    Translation {
        model: Model {
            services,
            workloads,
            routing: tables.routing,
        },
        statuses: tables.statuses,
        warnings,
        smi,
        provenance: tables.provenance,
    }
}

#[cfg(test)]
mod smi_tests;
#[cfg(test)]
mod tests;
