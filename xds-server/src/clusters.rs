//! CDS: outbound EDS clusters per Service port, the pass-through clusters, and the local
//! inbound clusters of a workload.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{Http1ProtocolOptions, Http2ProtocolOptions};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
        explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::google::protobuf::Any;
use lanyard_model::{Protocol, ServicePortKey};

use crate::names;
use crate::protobuf::{ads_config_source, any, duration, socket_address};

/// Connect timeout of every cluster.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The EDS cluster of a Service port: `outbound|<port>||<fqdn>`, endpoints from ADS under the
/// same name, round robin, upstream HTTP protocol chosen by the port's protocol.
pub fn outbound(port: &ServicePortKey, protocol: Protocol, cluster_domain: &str) -> Cluster {
    Cluster {
        typed_extension_protocol_options: protocol_options(protocol),
        ..eds(names::outbound_cluster(port, cluster_domain))
    }
}

/// A round-robin EDS cluster `name` whose endpoints come from ADS under the same name.
fn eds(name: String) -> Cluster {
    Cluster {
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: name.clone(),
        }),
        name,
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

/// [`names::INVALID_BACKEND_CLUSTER`] as proxyless gRPC clients get it: an EDS cluster whose
/// assignment ([`invalid_backend_assignment`]) has no endpoints, so that the share of traffic
/// routed to a backend that does not resolve fails at once with UNAVAILABLE. Envoy sidecars
/// never get it: for them the name stays undefined and `cluster_not_found_response_code`
/// answers the share. A gRPC client that never receives a cluster it was sent to waits for
/// its does-not-exist timer (15 s) before its channel has any configuration.
// gRPC: src/core/xds/xds_client/xds_client.cc (the resource does-not-exist timer)
pub fn invalid_backend() -> Cluster {
    eds(names::INVALID_BACKEND_CLUSTER.to_string())
}

/// The empty assignment of [`invalid_backend`].
pub fn invalid_backend_assignment() -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: names::INVALID_BACKEND_CLUSTER.to_string(),
        ..Default::default()
    }
}

/// `PassthroughCluster`: ORIGINAL_DST, for outbound traffic to destinations the mesh does not
/// know.
pub fn passthrough() -> Cluster {
    original_dst(names::PASSTHROUGH_CLUSTER)
}

/// `InboundPassthroughCluster`: ORIGINAL_DST, for inbound traffic to ports the workload does
/// not declare.
pub fn inbound_passthrough() -> Cluster {
    original_dst(names::INBOUND_PASSTHROUGH_CLUSTER)
}

/// `inbound|<port>||`: STATIC cluster to the local application on 127.0.0.1:`port`.
pub fn inbound(port: u16, protocol: Protocol) -> Cluster {
    let name = names::inbound_cluster(port);
    Cluster {
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.clone(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address("127.0.0.1", port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        name,
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        lb_policy: LbPolicy::RoundRobin as i32,
        typed_extension_protocol_options: protocol_options(protocol),
        ..Default::default()
    }
}

fn original_dst(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        lb_policy: LbPolicy::ClusterProvided as i32,
        ..Default::default()
    }
}

/// `typed_extension_protocol_options` for a port's protocol: explicit HTTP/2 for gRPC and h2c,
/// "same as downstream" for HTTP (HTTP/1.1 or HTTP/2 as the client spoke), nothing for TCP.
fn protocol_options(protocol: Protocol) -> HashMap<String, Any> {
    let upstream = match protocol {
        Protocol::Grpc | Protocol::Http2 => {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            })
        }
        Protocol::Http => {
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            })
        }
        Protocol::Tcp => return HashMap::new(),
    };
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(upstream),
        ..Default::default()
    };
    HashMap::from([(
        names::filters::HTTP_PROTOCOL_OPTIONS.to_string(),
        any(&options),
    )])
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use prost::Message;

    use super::*;
    use crate::fixtures::spk;

    fn upstream_protocol(cluster: &Cluster) -> Option<UpstreamProtocolOptions> {
        let any = cluster
            .typed_extension_protocol_options
            .get(names::filters::HTTP_PROTOCOL_OPTIONS)?;
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        );
        HttpProtocolOptions::decode(any.value.as_slice())
            .unwrap()
            .upstream_protocol_options
    }

    #[test]
    fn outbound_cluster_is_eds_over_ads_named_like_istio() {
        let cluster = outbound(&spk("shop", "cart", 8080), Protocol::Http, "cluster.local");
        assert_eq!(cluster.name, "outbound|8080||cart.shop.svc.cluster.local");
        assert_eq!(
            cluster.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        let eds = cluster.eds_cluster_config.as_ref().unwrap();
        assert_eq!(eds.service_name, cluster.name);
        let source = eds.eds_config.as_ref().unwrap();
        assert!(matches!(
            source.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(cluster.connect_timeout, Some(duration(CONNECT_TIMEOUT)));
        assert_eq!(cluster.connect_timeout.unwrap().seconds, 10);
        assert_eq!(cluster.lb_policy, LbPolicy::RoundRobin as i32);
    }

    #[test]
    fn upstream_protocol_follows_port_protocol() {
        let key = spk("a", "b", 80);
        for protocol in [Protocol::Grpc, Protocol::Http2] {
            let options = upstream_protocol(&outbound(&key, protocol, "cluster.local"));
            assert!(
                matches!(
                    options,
                    Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                        ExplicitHttpConfig {
                            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(_))
                        }
                    ))
                ),
                "{protocol:?}: {options:?}"
            );
        }
        let http = upstream_protocol(&outbound(&key, Protocol::Http, "cluster.local"));
        assert!(matches!(
            http,
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_))
        ));
        let tcp = outbound(&key, Protocol::Tcp, "cluster.local");
        assert!(tcp.typed_extension_protocol_options.is_empty());
    }

    #[test]
    fn passthrough_clusters_use_original_destination() {
        for (cluster, name) in [
            (passthrough(), "PassthroughCluster"),
            (inbound_passthrough(), "InboundPassthroughCluster"),
        ] {
            assert_eq!(cluster.name, name);
            assert_eq!(
                cluster.cluster_discovery_type,
                Some(ClusterDiscoveryType::Type(
                    DiscoveryType::OriginalDst as i32
                ))
            );
            assert_eq!(cluster.lb_policy, LbPolicy::ClusterProvided as i32);
        }
    }

    #[test]
    fn inbound_cluster_is_static_to_localhost() {
        let cluster = inbound(9090, Protocol::Grpc);
        assert_eq!(cluster.name, "inbound|9090||");
        assert_eq!(
            cluster.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
        );
        let cla = cluster.load_assignment.as_ref().unwrap();
        let Some(HostIdentifier::Endpoint(endpoint)) =
            &cla.endpoints[0].lb_endpoints[0].host_identifier
        else {
            panic!("no endpoint");
        };
        assert_eq!(endpoint.address, Some(socket_address("127.0.0.1", 9090)));
        assert!(upstream_protocol(&cluster).is_some());
    }
}
