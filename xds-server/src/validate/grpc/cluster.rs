//! Cluster, as gRPC: src/core/xds/grpc/xds_cluster_parser.cc (CdsResourceParse and the
//! functions it calls) reads it.

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster, OutlierDetection,
    cluster::{
        ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy, RingHashLbConfig,
        ring_hash_lb_config::HashFunction,
    },
};
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::UInt32Value;
use prost::Message;

use super::{Report, Violation, check_duration, extract_extension, field, is_ads_or_self};

const UPSTREAM_TLS_CONTEXT: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const AGGREGATE_CLUSTER: &str = "envoy.extensions.clusters.aggregate.v3.ClusterConfig";
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// gRPC's ring size bound. gRPC: xds_cluster_parser.cc (ParseLbPolicyConfig).
const MAX_RING_SIZE: u64 = 8_388_608;

/// What gRPC NACKs in a Cluster.
pub fn check_cluster(cluster: &Cluster) -> Vec<Violation> {
    let mut report = Report::default();
    check_discovery_type(cluster, &mut report);
    check_lb_policy(cluster, &mut report);
    if let Some(socket) = &cluster.transport_socket {
        let path = "transport_socket.typed_config";
        let any = socket
            .config_type
            .as_ref()
            .map(|transport_socket::ConfigType::TypedConfig(any)| any);
        // HTTP CONNECT (Http11ProxyUpstreamTransport) is off by default.
        if let Some(ext) = extract_extension(any, path, &mut report) {
            if ext.type_name == UPSTREAM_TLS_CONTEXT {
                match ext.bytes.map(UpstreamTlsContext::decode) {
                    Some(Ok(tls)) => check_upstream_tls_context(&tls, &ext.path, &mut report),
                    _ => report.add(&ext.path, "can't decode UpstreamTlsContext"),
                }
            } else {
                report.add(field(path, "type_url"), "unsupported transport socket type");
            }
        }
    }
    if cluster.lrs_server.as_ref().is_some_and(|source| {
        !matches!(
            source.config_source_specifier,
            Some(envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Self_(_))
        )
    }) {
        report.add("lrs_server", "ConfigSource is not self");
    }
    if let Some(upstream) = &cluster.upstream_config {
        check_upstream_config(upstream.typed_config.as_ref(), &mut report);
    }
    if let Some(outlier) = &cluster.outlier_detection {
        check_outlier_detection(outlier, &mut report);
    }
    report.violations
}

/// gRPC: CdsResourceParse (discovery type), EdsConfigParse, LogicalDnsParse,
/// AggregateClusterParse. EDS, LOGICAL_DNS and the aggregate cluster type only.
fn check_discovery_type(cluster: &Cluster, report: &mut Report) {
    match &cluster.cluster_discovery_type {
        Some(ClusterDiscoveryType::ClusterType(custom)) => {
            let path = "cluster_type.typed_config";
            let Some(any) = &custom.typed_config else {
                report.add(path, "field not present");
                return;
            };
            let type_url = any
                .type_url
                .strip_prefix("type.googleapis.com/")
                .unwrap_or(&any.type_url);
            if type_url != AGGREGATE_CLUSTER {
                report.add(
                    field(path, "type_url"),
                    format!("unknown cluster_type extension: {type_url}"),
                );
                return;
            }
            let config_path = format!("{path}{{{AGGREGATE_CLUSTER}}}");
            match AggregateClusterConfig::decode(any.value.as_slice()) {
                Err(_) => report.add(config_path, "can't parse aggregate cluster config"),
                Ok(config) if config.clusters.is_empty() => {
                    report.add(field(&config_path, "clusters"), "must be non-empty");
                }
                Ok(_) => {}
            }
        }
        // Unset is STATIC (0).
        discovery => {
            let kind = match discovery {
                Some(ClusterDiscoveryType::Type(t)) => *t,
                _ => DiscoveryType::Static as i32,
            };
            if kind == DiscoveryType::Eds as i32 {
                check_eds_config(cluster, report);
            } else if kind == DiscoveryType::LogicalDns as i32 {
                check_logical_dns(cluster, report);
            } else {
                report.add("type", "unknown discovery type");
            }
        }
    }
}

/// The clusters of an aggregate cluster. envoy-types does not ship
/// `envoy.extensions.clusters.aggregate.v3.ClusterConfig`; gRPC reads only this field.
#[derive(Clone, PartialEq, Message)]
struct AggregateClusterConfig {
    #[prost(string, repeated, tag = "1")]
    clusters: Vec<String>,
}

/// gRPC: EdsConfigParse.
fn check_eds_config(cluster: &Cluster, report: &mut Report) {
    let path = "eds_cluster_config";
    let Some(eds) = &cluster.eds_cluster_config else {
        report.add(path, "field not present");
        return;
    };
    match &eds.eds_config {
        None => report.add(field(path, "eds_config"), "field not present"),
        Some(source) if !is_ads_or_self(source) => {
            report.add(field(path, "eds_config"), "ConfigSource is not ads or self");
        }
        Some(_) => {}
    }
    if eds.service_name.is_empty() && cluster.name.starts_with("xdstp:") {
        report.add(
            field(path, "service_name"),
            "must be set if Cluster resource has an xdstp name",
        );
    }
}

/// gRPC: LogicalDnsParse: exactly one locality with exactly one endpoint, a socket address
/// with a host and a port and no custom resolver.
fn check_logical_dns(cluster: &Cluster, report: &mut Report) {
    let path = "load_assignment";
    let Some(assignment) = &cluster.load_assignment else {
        report.add(path, "field not present for LOGICAL_DNS cluster");
        return;
    };
    let path = field(path, "endpoints");
    let [locality] = assignment.endpoints.as_slice() else {
        report.add(
            path,
            format!(
                "must contain exactly one locality for LOGICAL_DNS cluster, found {}",
                assignment.endpoints.len()
            ),
        );
        return;
    };
    let path = format!("{path}[0].lb_endpoints");
    let [lb_endpoint] = locality.lb_endpoints.as_slice() else {
        report.add(
            path,
            format!(
                "must contain exactly one endpoint for LOGICAL_DNS cluster, found {}",
                locality.lb_endpoints.len()
            ),
        );
        return;
    };
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    let path = format!("{path}[0].endpoint");
    let Some(HostIdentifier::Endpoint(endpoint)) = &lb_endpoint.host_identifier else {
        report.add(path, "field not present");
        return;
    };
    let path = field(&path, "address");
    let Some(address) = &endpoint.address else {
        report.add(path, "field not present");
        return;
    };
    let path = field(&path, "socket_address");
    let Some(address::Address::SocketAddress(socket)) = &address.address else {
        report.add(path, "field not present");
        return;
    };
    if !socket.resolver_name.is_empty() {
        report.add(
            field(&path, "resolver_name"),
            "LOGICAL_DNS clusters must NOT have a custom resolver name set",
        );
    }
    if socket.address.is_empty() {
        report.add(field(&path, "address"), "field not present");
    }
    if !matches!(socket.port_specifier, Some(PortSpecifier::PortValue(_))) {
        report.add(field(&path, "port_value"), "field not present");
    }
}

/// gRPC: ParseLbPolicyConfig: `load_balancing_policy` when set (only its presence of a
/// policy is checked here), else `lb_policy` ROUND_ROBIN (the default) or RING_HASH.
fn check_lb_policy(cluster: &Cluster, report: &mut Report) {
    if let Some(policy) = &cluster.load_balancing_policy {
        // gRPC: xds_lb_policy_registry.cc (ConvertXdsLbPolicyConfig).
        if policy.policies.is_empty() {
            report.add(
                "load_balancing_policy",
                "no supported load balancing policy config found",
            );
        }
        return;
    }
    if cluster.lb_policy == LbPolicy::RoundRobin as i32 {
        return;
    }
    if cluster.lb_policy != LbPolicy::RingHash as i32 {
        report.add("lb_policy", "LB policy is not supported");
        return;
    }
    if let Some(LbConfig::RingHashLbConfig(ring)) = &cluster.lb_config {
        check_ring_hash(ring, report);
    }
}

fn check_ring_hash(ring: &RingHashLbConfig, report: &mut Report) {
    let path = "ring_hash_lb_config";
    let in_range = |v: u64| (1..=MAX_RING_SIZE).contains(&v);
    let max = ring
        .maximum_ring_size
        .as_ref()
        .map_or(MAX_RING_SIZE, |v| v.value);
    if !in_range(max) {
        report.add(
            field(path, "maximum_ring_size"),
            "must be in the range of 1 to 8388608",
        );
    }
    if let Some(min) = ring.minimum_ring_size.as_ref().map(|v| v.value) {
        if !in_range(min) {
            report.add(
                field(path, "minimum_ring_size"),
                "must be in the range of 1 to 8388608",
            );
        }
        if min > max {
            report.add(
                field(path, "minimum_ring_size"),
                "cannot be greater than maximum_ring_size",
            );
        }
    }
    if ring.hash_function != HashFunction::XxHash as i32 {
        report.add(field(path, "hash_function"), "invalid hash function");
    }
}

/// gRPC: UpstreamTlsContextParse: SNI up to 255 bytes and a CA configured (by a certificate
/// provider instance or the system roots). The rest of CommonTlsContextParse
/// (xds_tls_context_parser.cc) is not checked.
fn check_upstream_tls_context(tls: &UpstreamTlsContext, path: &str, report: &mut Report) {
    if tls.sni.len() > 255 {
        report.add(field(path, "sni"), "must be shorter than 255 characters");
    }
    if !tls.common_tls_context.as_ref().is_some_and(has_ca_certs) {
        report.add(field(path, "common_tls_context"), "no CA certs configured");
    }
}

/// gRPC: xds_tls_context_parser.cc (CommonTlsContextParse, CertificateValidationContextParse).
fn has_ca_certs(common: &CommonTlsContext) -> bool {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CertificateValidationContext;
    let from = |v: &CertificateValidationContext| {
        v.ca_certificate_provider_instance.is_some() || v.system_root_certs.is_some()
    };
    match &common.validation_context_type {
        Some(ValidationContextType::ValidationContext(v)) => from(v),
        #[allow(deprecated)]
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            combined
                .default_validation_context
                .as_ref()
                .is_some_and(from)
                || combined
                    .validation_context_certificate_provider_instance
                    .is_some()
        }
        _ => false,
    }
}

/// gRPC: ParseUpstreamConfig: only HttpProtocolOptions, whose idle timeout it reads.
fn check_upstream_config(
    typed_config: Option<&envoy_types::pb::google::protobuf::Any>,
    report: &mut Report,
) {
    let path = "upstream_config.typed_config";
    let Some(ext) = extract_extension(typed_config, path, report) else {
        return;
    };
    if ext.type_name != HTTP_PROTOCOL_OPTIONS {
        report.add(field(path, "type_url"), "unsupported upstream config type");
        return;
    }
    let Some(Ok(options)) = ext.bytes.map(HttpProtocolOptions::decode) else {
        report.add(path, "can't decode HttpProtocolOptions");
        return;
    };
    if let Some(d) = options
        .common_http_protocol_options
        .as_ref()
        .and_then(|o| o.idle_timeout.as_ref())
    {
        check_duration(
            d,
            &field(path, "common_http_protocol_options.idle_timeout"),
            report,
        );
    }
}

/// gRPC: the outlier detection part of CdsResourceParse (A50).
fn check_outlier_detection(outlier: &OutlierDetection, report: &mut Report) {
    let path = "outlier_detection";
    for (name, d) in [
        ("interval", &outlier.interval),
        ("base_ejection_time", &outlier.base_ejection_time),
        ("max_ejection_time", &outlier.max_ejection_time),
    ] {
        if let Some(d) = d {
            check_duration(d, &field(path, name), report);
        }
    }
    let over_100 = |v: &Option<UInt32Value>| v.as_ref().is_some_and(|v| v.value > 100);
    for (name, value) in [
        ("max_ejection_percent", &outlier.max_ejection_percent),
        ("enforcing_success_rate", &outlier.enforcing_success_rate),
        (
            "enforcing_failure_percentage",
            &outlier.enforcing_failure_percentage,
        ),
    ] {
        if over_100(value) {
            report.add(field(path, name), "value must be <= 100");
        }
    }
    // gRPC 1.85.1 tests `enforcing_failure_percentage` again where it means
    // `failure_percentage_threshold`, so a threshold over 100 passes (and the repeated
    // error adds nothing new).
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        CustomClusterType, EdsClusterConfig,
    };
    use envoy_types::pb::envoy::config::core::v3::{
        ConfigSource, TransportSocket, config_source::ConfigSourceSpecifier,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
        lb_endpoint::HostIdentifier,
    };
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CertificateProviderPluginInstance;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CertificateValidationContext;
    use envoy_types::pb::google::protobuf::{Any, Duration, UInt64Value};

    use super::*;
    use crate::protobuf::{ads_config_source, any, socket_address, u32_value};

    fn mk_eds_cluster() -> Cluster {
        Cluster {
            name: "outbound|80||cart.shop.svc.cluster.local".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(ads_config_source()),
                service_name: String::new(),
            }),
            ..Default::default()
        }
    }

    fn messages(c: &Cluster) -> Vec<String> {
        check_cluster(c)
            .into_iter()
            .map(|v| v.to_string())
            .collect()
    }

    #[test]
    fn eds_over_ads_passes() {
        assert_eq!(messages(&mk_eds_cluster()), Vec::<String>::new());
    }

    #[test]
    fn eds_config_must_be_ads_or_self() {
        let mut c = mk_eds_cluster();
        c.eds_cluster_config = Some(EdsClusterConfig {
            eds_config: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                    Default::default(),
                )),
                ..Default::default()
            }),
            service_name: String::new(),
        });
        assert_eq!(
            messages(&c),
            ["eds_cluster_config.eds_config: ConfigSource is not ads or self"]
        );
        c.eds_cluster_config = None;
        assert_eq!(messages(&c), ["eds_cluster_config: field not present"]);
    }

    #[test]
    fn xdstp_names_need_a_service_name() {
        let mut c = mk_eds_cluster();
        c.name = "xdstp://x/envoy.config.cluster.v3.Cluster/a".into();
        assert_eq!(
            messages(&c),
            ["eds_cluster_config.service_name: must be set if Cluster resource has an xdstp name"]
        );
    }

    #[test]
    fn static_and_original_dst_clusters_are_refused() {
        let mut c = mk_eds_cluster();
        c.cluster_discovery_type = None;
        assert_eq!(messages(&c), ["type: unknown discovery type"]);
        c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ));
        assert_eq!(messages(&c), ["type: unknown discovery type"]);
    }

    fn mk_logical_dns(endpoints: Vec<LbEndpoint>) -> Cluster {
        Cluster {
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                DiscoveryType::LogicalDns as i32,
            )),
            load_assignment: Some(ClusterLoadAssignment {
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: endpoints,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn mk_lb_endpoint(host: &str, port: u16) -> LbEndpoint {
        LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(host, port)),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn logical_dns_needs_exactly_one_endpoint() {
        assert_eq!(
            messages(&mk_logical_dns(vec![mk_lb_endpoint("db.example", 5432)])),
            Vec::<String>::new()
        );
        assert_eq!(
            messages(&mk_logical_dns(vec![])),
            [
                "load_assignment.endpoints[0].lb_endpoints: must contain exactly one endpoint for LOGICAL_DNS cluster, found 0"
            ]
        );
        assert_eq!(
            messages(&mk_logical_dns(vec![mk_lb_endpoint("", 5432)])),
            [
                "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: field not present"
            ]
        );
        let mut c = mk_logical_dns(vec![]);
        c.load_assignment = None;
        assert_eq!(
            messages(&c),
            ["load_assignment: field not present for LOGICAL_DNS cluster"]
        );
    }

    #[test]
    fn aggregate_clusters_need_clusters() {
        let aggregate = |clusters: Vec<String>| {
            let mut c = mk_eds_cluster();
            c.cluster_discovery_type = Some(ClusterDiscoveryType::ClusterType(CustomClusterType {
                name: "envoy.clusters.aggregate".into(),
                typed_config: Some(Any {
                    type_url: format!("type.googleapis.com/{AGGREGATE_CLUSTER}"),
                    value: AggregateClusterConfig { clusters }.encode_to_vec(),
                }),
            }));
            messages(&c)
        };
        assert_eq!(aggregate(vec!["a".into()]), Vec::<String>::new());
        assert_eq!(
            aggregate(vec![]),
            [format!(
                "cluster_type.typed_config{{{AGGREGATE_CLUSTER}}}.clusters: must be non-empty"
            )]
        );
    }

    #[test]
    fn lb_policy_round_robin_or_ring_hash() {
        let mut c = mk_eds_cluster();
        c.lb_policy = LbPolicy::LeastRequest as i32;
        assert_eq!(messages(&c), ["lb_policy: LB policy is not supported"]);
        c.lb_policy = LbPolicy::RingHash as i32;
        assert_eq!(messages(&c), Vec::<String>::new());
        c.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: Some(UInt64Value { value: 4096 }),
            maximum_ring_size: Some(UInt64Value { value: 1024 }),
            hash_function: HashFunction::MurmurHash2 as i32,
        }));
        assert_eq!(
            messages(&c),
            [
                "ring_hash_lb_config.minimum_ring_size: cannot be greater than maximum_ring_size",
                "ring_hash_lb_config.hash_function: invalid hash function",
            ]
        );
    }

    #[test]
    fn transport_socket_must_be_tls_with_a_ca() {
        let with_socket = |config: Any| {
            let mut c = mk_eds_cluster();
            c.transport_socket = Some(TransportSocket {
                name: "tls".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
            });
            messages(&c)
        };
        let tls_path = format!("transport_socket.typed_config{{{UPSTREAM_TLS_CONTEXT}}}");
        assert_eq!(
            with_socket(any(&UpstreamTlsContext::default())),
            [format!(
                "{tls_path}.common_tls_context: no CA certs configured"
            )]
        );
        let with_ca = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                validation_context_type: Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        ca_certificate_provider_instance: Some(CertificateProviderPluginInstance {
                            instance_name: "default".into(),
                            certificate_name: String::new(),
                        }),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(with_socket(any(&with_ca)), Vec::<String>::new());
        let long_sni = UpstreamTlsContext {
            sni: "a".repeat(256),
            ..with_ca
        };
        assert_eq!(
            with_socket(any(&long_sni)),
            [format!(
                "{tls_path}.sni: must be shorter than 255 characters"
            )]
        );
        assert_eq!(
            with_socket(any(&HttpProtocolOptions::default())),
            ["transport_socket.typed_config.type_url: unsupported transport socket type"]
        );
    }

    #[test]
    fn lrs_server_must_be_self() {
        let mut c = mk_eds_cluster();
        c.lrs_server = Some(ads_config_source());
        assert_eq!(messages(&c), ["lrs_server: ConfigSource is not self"]);
    }

    #[test]
    fn outlier_detection_percentages_and_durations() {
        let mut c = mk_eds_cluster();
        c.outlier_detection = Some(OutlierDetection {
            max_ejection_percent: Some(u32_value(101)),
            interval: Some(Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..Default::default()
        });
        assert_eq!(
            messages(&c),
            [
                "outlier_detection.interval.seconds: value must be in the range [0, 315576000000]",
                "outlier_detection.max_ejection_percent: value must be <= 100",
            ]
        );
        c.outlier_detection = Some(OutlierDetection {
            max_ejection_percent: Some(u32_value(100)),
            ..Default::default()
        });
        assert_eq!(messages(&c), Vec::<String>::new());
    }

    #[test]
    fn upstream_config_must_be_http_protocol_options() {
        use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
        let with_config = |config: Any| {
            let mut c = mk_eds_cluster();
            c.upstream_config = Some(TypedExtensionConfig {
                name: "envoy.upstreams.http.http_protocol_options".into(),
                typed_config: Some(config),
            });
            messages(&c)
        };
        assert_eq!(
            with_config(any(&HttpProtocolOptions::default())),
            Vec::<String>::new()
        );
        assert_eq!(
            with_config(any(&UpstreamTlsContext::default())),
            ["upstream_config.typed_config.type_url: unsupported upstream config type"]
        );
    }
}
