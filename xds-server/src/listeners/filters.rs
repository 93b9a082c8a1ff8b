//! Network and HTTP filters the listeners are made of.

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
    http_connection_manager::{CodecType, RouteSpecifier},
    http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};

use crate::names::filters;
use crate::protobuf::{ads_config_source, any};

/// Route configuration fetched over ADS by name.
pub fn rds(route_config_name: &str) -> RouteSpecifier {
    RouteSpecifier::Rds(Rds {
        config_source: Some(ads_config_source()),
        route_config_name: route_config_name.to_string(),
    })
}

/// Route configuration carried inline.
pub fn inline_routes(route_config: RouteConfiguration) -> RouteSpecifier {
    RouteSpecifier::RouteConfig(route_config)
}

/// An HttpConnectionManager with codec AUTO (HTTP/1.1 or HTTP/2 by sniffing).
/// `http_filters` must end with the router.
pub fn http_connection_manager(
    stat_prefix: &str,
    routes: RouteSpecifier,
    http_filters: Vec<HttpFilter>,
) -> HttpConnectionManager {
    HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix: stat_prefix.to_string(),
        http_filters,
        route_specifier: Some(routes),
        ..Default::default()
    }
}

/// The HTTP filters of outbound (client-side) connection managers: CORS (optional, so a
/// client without it still accepts the config), then the router.
pub fn outbound_http_filters() -> Vec<HttpFilter> {
    vec![cors(), router()]
}

/// `envoy.filters.http.cors`, enabled per route through `typed_per_filter_config`.
pub fn cors() -> HttpFilter {
    HttpFilter {
        name: filters::CORS.to_string(),
        is_optional: true,
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&Cors {}))),
        ..Default::default()
    }
}

/// `envoy.filters.http.router`: always last.
pub fn router() -> HttpFilter {
    HttpFilter {
        name: filters::ROUTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    }
}

/// The HttpConnectionManager as a network filter.
pub fn http_connection_manager_filter(hcm: &HttpConnectionManager) -> Filter {
    Filter {
        name: filters::HTTP_CONNECTION_MANAGER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(hcm))),
    }
}

/// A tcp_proxy to `cluster`.
pub fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    Filter {
        name: filters::TCP_PROXY.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&proxy))),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn outbound_filters_end_with_router_and_cors_is_optional() {
        let filters = outbound_http_filters();
        assert_eq!(filters.last().unwrap().name, "envoy.filters.http.router");
        assert_eq!(filters[0].name, "envoy.filters.http.cors");
        assert!(filters[0].is_optional);
        let Some(http_filter::ConfigType::TypedConfig(config)) = &filters[0].config_type else {
            panic!("no typed config");
        };
        assert_eq!(
            config.type_url,
            "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
        );
    }

    #[test]
    fn tcp_proxy_points_at_cluster() {
        let filter = tcp_proxy_filter("stats", "PassthroughCluster");
        assert_eq!(filter.name, "envoy.filters.network.tcp_proxy");
        let Some(filter::ConfigType::TypedConfig(config)) = filter.config_type else {
            panic!("no typed config");
        };
        let proxy = TcpProxy::decode(config.value.as_slice()).unwrap();
        assert_eq!(proxy.stat_prefix, "stats");
        assert_eq!(
            proxy.cluster_specifier,
            Some(ClusterSpecifier::Cluster("PassthroughCluster".into()))
        );
    }
}
