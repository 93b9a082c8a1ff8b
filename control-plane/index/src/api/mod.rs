//! The API objects Lanyard reads, as Rust types.
//!
//! Core Kubernetes kinds come from `k8s-openapi`; the Gateway API kinds used by the mesh
//! (GAMMA) profile are declared here, following `gateway.networking.k8s.io/v1` (and
//! `v1beta1` for ReferenceGrant) as of Gateway API v1.6. Fields Lanyard does not act on are
//! still accepted, so that any manifest the API server accepts also parses here. The SMI
//! kinds (TrafficSplit, HTTPRouteGroup, TCPRoute) are in [`smi`].

mod gateway;
pub mod smi;

pub use gateway::*;
pub use smi::{HttpRouteGroup, TcpRoute, TrafficSplit};
