//! Lanyard xDS: the pure translation of the mesh model (`lanyard-model`) into Envoy v3
//! resources (`envoy-types`), and a stable rendering of them.
//!
//! [`translate`] builds everything shared once; [`MeshResources::for_proxy`] assembles what
//! one sidecar gets from shared `Arc`s; [`MeshResources::api_listener`] answers proxyless gRPC
//! clients. [`render`] turns resources into sorted JSON / YAML for golden files and
//! `lanyardctl`. No networking here: the ADS server serves what this crate builds.
//!
//! One module per resource kind: [`names`], `clusters`, `endpoints`, `listeners`, `routes`,
//! `api_listeners`, [`render`].

mod api_listeners;
mod clusters;
mod endpoints;
mod listeners;
mod mesh;
pub mod names;
mod protobuf;
pub mod render;
mod routes;

#[cfg(test)]
mod fixtures;

pub use mesh::{MeshResources, ProxyRef, ProxyResources, XdsOptions, translate};
pub use names::INVALID_BACKEND_CLUSTER;

/// Re-exported so callers can name the resource types without depending on envoy-types'
/// module layout.
pub use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    route::v3::RouteConfiguration,
};

/// xDS type URLs of the resources Lanyard serves.
pub mod type_url {
    /// LDS.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// CDS.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// SDS.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    use prost::Name;

    use super::*;

    #[test]
    fn type_urls_match_the_generated_types() {
        assert_eq!(type_url::LISTENER, Listener::type_url());
        assert_eq!(type_url::ROUTE, RouteConfiguration::type_url());
        assert_eq!(type_url::CLUSTER, Cluster::type_url());
        assert_eq!(type_url::ENDPOINT, ClusterLoadAssignment::type_url());
        assert_eq!(type_url::SECRET, Secret::type_url());
    }
}
