//! Services, their ports and their endpoints.

use std::net::IpAddr;

use serde::Serialize;

use crate::keys::{ServiceKey, WorkloadKey};

/// A Service frontend (names and ClusterIPs) with its backends (endpoints per port).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Service {
    pub key: ServiceKey,
    /// ClusterIPs, IPv4 and/or IPv6. Empty for a headless Service.
    pub cluster_ips: Vec<IpAddr>,
    /// Ports, sorted by port number.
    pub ports: Vec<ServicePort>,
}

/// One port of a Service and the endpoints that serve it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServicePort {
    pub port: u16,
    pub name: Option<String>,
    pub protocol: Protocol,
    /// Endpoints for this port, sorted by address then port.
    pub endpoints: Vec<Endpoint>,
}

/// What the mesh knows about the traffic on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (or HTTP/2 negotiated by the client).
    Http,
    /// HTTP/2 without TLS (h2c), which gRPC uses.
    Http2,
    /// gRPC over HTTP/2.
    Grpc,
    /// Opaque TCP: forwarded, never parsed.
    Tcp,
}

impl Protocol {
    /// Whether the proxy parses HTTP on this port.
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }

    /// Whether upstream connections must use HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

/// One address serving a Service port.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
    /// Ready to take new traffic (EndpointSlice `conditions.ready`).
    pub ready: bool,
    /// Able to serve, even if terminating (`conditions.serving`).
    pub serving: bool,
    /// Shutting down (`conditions.terminating`).
    pub terminating: bool,
    pub zone: Option<String>,
    /// The pod behind the address, when known.
    pub workload: Option<WorkloadKey>,
}
