//! The client-side Listener (an `api_listener` holding an HttpConnectionManager), as gRPC:
//! src/core/xds/grpc/xds_listener_parser.cc (LdsResourceParse, LdsResourceParseClient,
//! HttpConnectionManagerParse) reads it.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter::ConfigType,
};
use prost::Message;

use super::route_config::check_route_config_at;
use super::{
    HttpFilterKind, ROUTER, Report, Violation, check_duration, extract_extension, field,
    filter_for_top_level_type, is_ads_or_self,
};

const HCM_TYPE: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// What gRPC NACKs in the Listener a client (`xds:///NAME`) gets. An inline `route_config` is
/// checked as a RouteConfiguration would be.
pub fn check_listener(listener: &Listener) -> Vec<Violation> {
    let mut report = Report::default();
    let Some(api_listener) = &listener.api_listener else {
        if listener.address.is_none() {
            report.add("", "Listener has neither address nor ApiListener");
        } else {
            // gRPC would read it as a server Listener, which a client cannot use.
            report.add("api_listener", "field not present: not a client listener");
        }
        return report.violations;
    };
    let path = "api_listener.api_listener";
    let Some(ext) = extract_extension(api_listener.api_listener.as_ref(), path, &mut report) else {
        return report.violations;
    };
    if ext.type_name != HCM_TYPE {
        report.add(path, "unsupported filter type");
        return report.violations;
    }
    match ext.bytes.map(HttpConnectionManager::decode) {
        Some(Ok(hcm)) => check_http_connection_manager(&hcm, &ext.path, &mut report),
        _ => report.add(path, "could not parse HttpConnectionManager config"),
    }
    report.violations
}

/// gRPC: HttpConnectionManagerParse with `is_client` true.
fn check_http_connection_manager(hcm: &HttpConnectionManager, path: &str, report: &mut Report) {
    // A41 (xDS RBAC): gRPC takes the peer address as it is.
    if hcm.xff_num_trusted_hops != 0 {
        report.add(field(path, "xff_num_trusted_hops"), "must be zero");
    }
    if !hcm.original_ip_detection_extensions.is_empty() {
        report.add(
            field(path, "original_ip_detection_extensions"),
            "must be empty",
        );
    }
    if let Some(d) = hcm
        .common_http_protocol_options
        .as_ref()
        .and_then(|o| o.max_stream_duration.as_ref())
    {
        check_duration(
            d,
            &field(path, "common_http_protocol_options.max_stream_duration"),
            report,
        );
    }
    check_http_filters(hcm, &field(path, "http_filters"), report);
    match &hcm.route_specifier {
        Some(RouteSpecifier::RouteConfig(config)) => {
            check_route_config_at(config, &field(path, "route_config"), report);
        }
        Some(RouteSpecifier::Rds(rds)) => {
            let spath = field(path, "rds.config_source");
            match &rds.config_source {
                None => report.add(spath, "field not present"),
                Some(source) if !is_ads_or_self(source) => {
                    report.add(spath, "ConfigSource does not specify ADS or SELF");
                }
                Some(_) => {}
            }
        }
        Some(RouteSpecifier::ScopedRoutes(_)) | None => {
            report.add(path, "neither route_config nor rds fields are present");
        }
    }
}

/// gRPC: the `http_filters` part of HttpConnectionManagerParse: names non-empty and unique,
/// every filter known and usable on clients unless optional, at least one, and the router
/// (the only terminal filter) last and only last.
fn check_http_filters(hcm: &HttpConnectionManager, path: &str, report: &mut Report) {
    let before = report.count();
    let mut names = BTreeSet::new();
    let mut kept: Vec<&'static HttpFilterKind> = Vec::new();
    for (i, filter) in hcm.http_filters.iter().enumerate() {
        let fpath = format!("{path}[{i}]");
        if filter.name.is_empty() {
            report.add(field(&fpath, "name"), "empty filter name");
            continue;
        }
        if !names.insert(filter.name.as_str()) {
            report.add(
                field(&fpath, "name"),
                format!("duplicate HTTP filter name: {}", filter.name),
            );
            continue;
        }
        let cpath = field(&fpath, "typed_config");
        let typed_config = match &filter.config_type {
            Some(ConfigType::TypedConfig(any)) => Some(any),
            Some(ConfigType::ConfigDiscovery(_)) | None => None,
        };
        let Some(ext) = extract_extension(typed_config, &cpath, report) else {
            continue;
        };
        let Some(kind) = filter_for_top_level_type(&ext.type_name) else {
            if !filter.is_optional {
                report.add(cpath, "unsupported filter type");
            }
            continue;
        };
        if !kind.on_clients {
            if !filter.is_optional {
                report.add(cpath, "filter is not supported on clients");
            }
            continue;
        }
        // Of the filters' own configs only the router's is checked (it has no rules beyond
        // being a Router). gRPC: xds_bootstrap_grpc_builder.cc
        // (XdsHttpRouterFilterFactory::ParseTopLevelConfig).
        if ext.type_name == ROUTER && ext.bytes.is_none_or(|b| Router::decode(b).is_err()) {
            report.add(cpath, "could not parse router filter config");
        }
        kept.push(kind);
    }
    if report.count() == before && kept.is_empty() {
        report.add(path, "expected at least one HTTP filter");
    }
    let last = kept.len().saturating_sub(1);
    for (i, kind) in kept.iter().enumerate() {
        if i != last && kind.terminal {
            report.add(
                path,
                format!(
                    "terminal filter for config type {} must be the last filter in the chain",
                    kind.config_type
                ),
            );
        }
        if i == last && !kind.terminal {
            report.add(
                path,
                format!(
                    "non-terminal filter for config type {} is the last filter in the chain",
                    kind.config_type
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        ConfigSource, config_source::ConfigSourceSpecifier,
    };
    use envoy_types::pb::envoy::config::listener::v3::ApiListener;
    use envoy_types::pb::envoy::config::route::v3::{
        Route, RouteConfiguration, RouteMatch, VirtualHost, route_match::PathSpecifier,
    };
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
    use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter, Rds, ScopedRoutes,
    };
    use envoy_types::pb::google::protobuf::Any;

    use super::*;
    use crate::protobuf::{ads_config_source, any, socket_address};

    fn mk_filter(name: &str, config: Any) -> HttpFilter {
        HttpFilter {
            name: name.into(),
            config_type: Some(ConfigType::TypedConfig(config)),
            ..Default::default()
        }
    }

    fn router() -> HttpFilter {
        mk_filter("envoy.filters.http.router", any(&Router::default()))
    }

    fn mk_hcm(filters: Vec<HttpFilter>) -> HttpConnectionManager {
        HttpConnectionManager {
            http_filters: filters,
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                config_source: Some(ads_config_source()),
                route_config_name: "r".into(),
            })),
            ..Default::default()
        }
    }

    fn mk_listener(hcm: &HttpConnectionManager) -> Listener {
        Listener {
            name: "cart:80".into(),
            api_listener: Some(ApiListener {
                api_listener: Some(any(hcm)),
            }),
            ..Default::default()
        }
    }

    fn check(hcm: &HttpConnectionManager) -> Vec<Violation> {
        check_listener(&mk_listener(hcm))
    }

    fn messages(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.message.as_str()).collect()
    }

    const HCM: &str = "api_listener.api_listener{envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager}";

    #[test]
    fn router_alone_over_ads_passes() {
        assert_eq!(check(&mk_hcm(vec![router()])), vec![]);
    }

    #[test]
    fn router_must_be_last() {
        let fault = mk_filter("fault", any(&HttpFault::default()));
        assert_eq!(
            check(&mk_hcm(vec![router(), fault.clone()])),
            vec![
                Violation::new(
                    format!("{HCM}.http_filters"),
                    "terminal filter for config type envoy.extensions.filters.http.router.v3.Router must be the last filter in the chain"
                ),
                Violation::new(
                    format!("{HCM}.http_filters"),
                    "non-terminal filter for config type envoy.extensions.filters.http.fault.v3.HTTPFault is the last filter in the chain"
                ),
            ]
        );
        assert_eq!(check(&mk_hcm(vec![fault, router()])), vec![]);
    }

    #[test]
    fn at_least_one_filter() {
        assert_eq!(
            messages(&check(&mk_hcm(vec![]))),
            ["expected at least one HTTP filter"]
        );
    }

    #[test]
    fn unknown_filters_fail_unless_optional() {
        let unknown = mk_filter(
            "cors",
            Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors".into(),
                value: vec![],
            },
        );
        let bad = check(&mk_hcm(vec![unknown.clone(), router()]));
        assert_eq!(
            bad,
            vec![Violation::new(
                format!("{HCM}.http_filters[0].typed_config"),
                "unsupported filter type"
            )]
        );
        let optional = HttpFilter {
            is_optional: true,
            ..unknown
        };
        assert_eq!(check(&mk_hcm(vec![optional, router()])), vec![]);
    }

    #[test]
    fn rbac_is_not_for_clients() {
        let rbac = mk_filter("rbac", any(&Rbac::default()));
        assert_eq!(
            messages(&check(&mk_hcm(vec![rbac.clone(), router()]))),
            ["filter is not supported on clients"]
        );
        let optional = HttpFilter {
            is_optional: true,
            ..rbac
        };
        assert_eq!(check(&mk_hcm(vec![optional, router()])), vec![]);
    }

    #[test]
    fn filter_names_non_empty_and_unique() {
        let bad = check(&mk_hcm(vec![
            mk_filter("", any(&HttpFault::default())),
            mk_filter("f", any(&HttpFault::default())),
            mk_filter("f", any(&HttpFault::default())),
            router(),
        ]));
        assert_eq!(
            bad,
            vec![
                Violation::new(format!("{HCM}.http_filters[0].name"), "empty filter name"),
                Violation::new(
                    format!("{HCM}.http_filters[2].name"),
                    "duplicate HTTP filter name: f"
                ),
            ]
        );
    }

    #[test]
    fn filter_without_typed_config() {
        let bad = check(&mk_hcm(vec![HttpFilter {
            name: "x".into(),
            ..Default::default()
        }]));
        assert_eq!(
            bad,
            vec![Violation::new(
                format!("{HCM}.http_filters[0].typed_config"),
                "field not present"
            )]
        );
    }

    #[test]
    fn rds_must_come_over_ads_or_self() {
        let mut hcm = mk_hcm(vec![router()]);
        hcm.route_specifier = Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                    Default::default(),
                )),
                ..Default::default()
            }),
            route_config_name: "r".into(),
        }));
        assert_eq!(
            check(&hcm),
            vec![Violation::new(
                format!("{HCM}.rds.config_source"),
                "ConfigSource does not specify ADS or SELF"
            )]
        );
        hcm.route_specifier = Some(RouteSpecifier::Rds(Rds::default()));
        assert_eq!(messages(&check(&hcm)), ["field not present"]);
    }

    #[test]
    fn scoped_routes_are_not_read() {
        let mut hcm = mk_hcm(vec![router()]);
        hcm.route_specifier = Some(RouteSpecifier::ScopedRoutes(ScopedRoutes::default()));
        assert_eq!(
            messages(&check(&hcm)),
            ["neither route_config nor rds fields are present"]
        );
    }

    #[test]
    fn inline_route_config_is_checked() {
        let mut hcm = mk_hcm(vec![router()]);
        hcm.route_specifier = Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            virtual_hosts: vec![VirtualHost {
                domains: vec!["*".into()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::PathSeparatedPrefix("/a".into())),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }));
        assert_eq!(
            check(&hcm),
            vec![Violation::new(
                format!(
                    "{HCM}.route_config.virtual_hosts[0].routes[0].match.path_separated_prefix"
                ),
                "invalid path specifier"
            )]
        );
    }

    #[test]
    fn xff_and_ip_detection() {
        let mut hcm = mk_hcm(vec![router()]);
        hcm.xff_num_trusted_hops = 1;
        assert_eq!(
            check(&hcm),
            vec![Violation::new(
                format!("{HCM}.xff_num_trusted_hops"),
                "must be zero"
            )]
        );
    }

    #[test]
    fn api_listener_must_hold_an_http_connection_manager() {
        let listener = Listener {
            api_listener: Some(ApiListener {
                api_listener: Some(any(&Router::default())),
            }),
            ..Default::default()
        };
        assert_eq!(
            check_listener(&listener),
            vec![Violation::new(
                "api_listener.api_listener",
                "unsupported filter type"
            )]
        );
        let garbage = Listener {
            api_listener: Some(ApiListener {
                api_listener: Some(Any {
                    type_url: format!("type.googleapis.com/{HCM_TYPE}"),
                    value: vec![0xff, 0xff],
                }),
            }),
            ..Default::default()
        };
        assert_eq!(
            messages(&check_listener(&garbage)),
            ["could not parse HttpConnectionManager config"]
        );
    }

    #[test]
    fn listener_without_api_listener() {
        assert_eq!(
            messages(&check_listener(&Listener::default())),
            ["Listener has neither address nor ApiListener"]
        );
        let server = Listener {
            address: Some(socket_address("0.0.0.0", 80)),
            ..Default::default()
        };
        assert_eq!(check_listener(&server).len(), 1);
    }

    #[test]
    fn http_max_stream_duration_range() {
        use envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions;
        use envoy_types::pb::google::protobuf::Duration;
        let mut hcm = mk_hcm(vec![router()]);
        hcm.common_http_protocol_options = Some(HttpProtocolOptions {
            max_stream_duration: Some(Duration {
                seconds: 1,
                nanos: -1,
            }),
            ..Default::default()
        });
        assert_eq!(
            check(&hcm),
            vec![Violation::new(
                format!("{HCM}.common_http_protocol_options.max_stream_duration.nanos"),
                "value must be in the range [0, 999999999]"
            )]
        );
    }

    #[test]
    fn router_config_must_be_a_router() {
        let typed_struct = Any {
            type_url: "type.googleapis.com/xds.type.v3.TypedStruct".into(),
            value: super::super::TypedStruct {
                type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                    .into(),
            }
            .encode_to_vec(),
        };
        assert_eq!(
            check(&mk_hcm(vec![mk_filter("router", typed_struct)])),
            vec![Violation::new(
                format!("{HCM}.http_filters[0].typed_config"),
                "could not parse router filter config"
            )]
        );
    }
}
