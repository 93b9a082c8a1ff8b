//! Lanyard xDS: the pure translation of the mesh model (`lanyard-model`) into Envoy v3
//! resources (`envoy-types`), and a stable rendering of them.
//!
//! [`translate`] builds everything shared once; [`MeshResources::for_proxy`] assembles what
//! one sidecar gets from shared `Arc`s; [`MeshResources::api_listener`] answers proxyless gRPC
//! clients. [`render`] turns resources into sorted JSON / YAML for golden files and
//! `lanyardctl`.
//!
//! The translation, one module per resource kind: [`names`], `clusters`, `endpoints`,
//! `listeners`, `routes`, `api_listeners`, [`render`].
//!
//! Serving it, over the Aggregated Discovery Service (state of the world and delta):
//! - [`node`]: who a proxy is, from its xDS `Node` (the node-id / metadata convention);
//! - [`version`] and [`resource`]: resources encoded once, versioned by a hash of a
//!   canonical form of their content;
//! - [`cache`]: consistent snapshots and per-proxy views shared by proxies that see the same;
//! - [`ads`]: the protocol, one task per stream;
//! - [`server`]: [`XdsServer`]: debounced publishing, serving, graceful shutdown;
//! - [`status`], [`metrics`], [`debug`]: `/debug/syncz`, `/debug/config_dump`, `/metrics`.
//!
//! With the `testing` feature, `testing` has an ADS test client and model builders.

pub mod ads;
mod api_listeners;
pub mod cache;
mod clusters;
pub mod debug;
mod drain;
mod endpoints;
pub mod limits;
pub mod listen;
mod listeners;
mod mesh;
pub mod metrics;
pub mod names;
pub mod node;
mod protobuf;
pub mod render;
pub mod resource;
mod routes;
pub mod server;
pub mod status;
pub mod validate;
pub mod version;

#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fixtures;
#[cfg(feature = "testing")]
pub mod testing;

pub use api_listeners::ServiceDirectory;
pub use cache::{MeshSnapshot, SnapshotError};
pub use limits::Limits;
pub use mesh::{
    Finding, Kept, MeshResources, ProxyRef, ProxyResources, Receiver, TableRef, Withheld,
    XdsOptions, translate,
};
pub use names::INVALID_BACKEND_CLUSTER;
pub use node::{NodeError, ProxyIdentity};
pub use resource::{Resource, ResourceType};
pub use server::{DEFAULT_SHUTDOWN_GRACE, ServeError, ServerConfig, XdsServer};
pub use version::Version;

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
