//! Workloads: the pods that run a sidecar, and what they serve.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::keys::{ServiceKey, WorkloadKey};
use crate::service::Protocol;

/// A pod.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Workload {
    pub key: WorkloadKey,
    /// Pod IPs (IPv4 and/or IPv6).
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Ports the pod serves for Services that select it, sorted by port.
    pub inbound: Vec<InboundPort>,
}

/// A port the local application listens on, reached through the inbound listener.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InboundPort {
    /// The container (target) port.
    pub port: u16,
    pub protocol: Protocol,
    /// The Services whose selector picks this pod and whose target port this is.
    pub services: Vec<ServiceKey>,
}
