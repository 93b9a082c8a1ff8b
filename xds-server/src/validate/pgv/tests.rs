use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant as Clock;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, LbConfig, LeastRequestLbConfig},
};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, KeyValue, KeyValueAppend, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    InternalRedirectPolicy, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, retry_policy::RetryBackOff, route, route_action::ClusterSpecifier,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use lanyard_model::Protocol;
use prost::{Message, Name};

use super::rules::TypeRules;
use super::table::{ElemType, Shape};
use super::*;
use crate::fixtures::{
    forward_to, mk_endpoint, mk_model, mk_route, mk_service, mk_table, prefix, set_producer, spk,
};
use crate::protobuf::any;

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

fn mk_route_to(cluster: &str) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn mk_vhost(domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: "vh".into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn mk_rc(vhosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: "rc".into(),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

fn mk_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        ..Default::default()
    }
}

fn mk_listener(hcm: &HttpConnectionManager) -> Listener {
    Listener {
        name: "l".into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn v(path: &str, message: &str) -> Violation {
    Violation::new(path, message)
}

/// `check`, asserting that `check_encoded` agrees.
fn run<M: prost::Message + prost::Name>(m: &M) -> Vec<Violation> {
    let found = check(m);
    assert_eq!(found, check_encoded(&M::full_name(), &m.encode_to_vec()));
    found
}

#[test]
fn every_rule_in_the_pool_compiles() {
    assert!(TABLES.errors.is_empty(), "{:#?}", TABLES.errors);
    let with_rules = TABLES
        .messages
        .iter()
        .filter(|m| {
            m.fields
                .iter()
                .any(|f| f.rules.required || f.rules.ty.is_some())
        })
        .count();
    assert!(with_rules > 100, "only {with_rules} messages carry rules");
}

#[test]
fn valid_resources_have_no_violations() {
    let rc = mk_rc(vec![mk_vhost(&["*"], vec![mk_route_to("c")])]);
    assert_eq!(run(&rc), []);
    assert_eq!(run(&mk_cluster("c")), []);
}

#[test]
fn string_min_len() {
    assert_eq!(
        run(&mk_cluster("")),
        [v("name", "value length must be at least 1 characters")]
    );
}

#[test]
fn repeated_min_items_and_item_pattern() {
    let rc = mk_rc(vec![mk_vhost(&[], vec![])]);
    assert_eq!(
        run(&rc),
        [v(
            "virtual_hosts[0].domains",
            "value must contain at least 1 item(s)"
        )]
    );
    // Envoy's rule for a domain is the loose header-value regex: "" passes, a newline does not.
    let rc = mk_rc(vec![mk_vhost(&["", "a\nb"], vec![])]);
    assert_eq!(
        run(&rc),
        [v(
            "virtual_hosts[0].domains[1]",
            r#"value does not match regex pattern "^[^\x00\n\r]*$""#
        )]
    );
}

#[test]
fn header_name_min_len_and_well_known_regex() {
    let header = |key: &str| HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: "v".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut rc = mk_rc(vec![]);
    rc.request_headers_to_add = vec![header(""), header("a\rb"), header("a b")];
    assert_eq!(
        run(&rc),
        [
            v(
                "request_headers_to_add[0].header.key",
                "value length must be at least 1 characters"
            ),
            v(
                "request_headers_to_add[1].header.key",
                r#"value does not match regex pattern "^[^\x00\n\r]*$""#
            ),
        ]
    );
}

#[test]
fn duration_required_and_gt_zero() {
    let with_backoff = |back_off: RetryBackOff| {
        let mut r = mk_route_to("c");
        if let Some(route::Action::Route(a)) = &mut r.action {
            a.retry_policy = Some(RetryPolicy {
                retry_back_off: Some(back_off),
                ..Default::default()
            });
        }
        mk_rc(vec![mk_vhost(&["*"], vec![r])])
    };
    let path = "virtual_hosts[0].routes[0].route.retry_policy.retry_back_off.base_interval";
    let zero = with_backoff(RetryBackOff {
        base_interval: Some(Duration::default()),
        ..Default::default()
    });
    assert_eq!(run(&zero), [v(path, "value must be greater than 0s")]);
    let absent = with_backoff(RetryBackOff::default());
    assert_eq!(run(&absent), [v(path, "value is required")]);
    let ok = with_backoff(RetryBackOff {
        base_interval: Some(Duration {
            seconds: 0,
            nanos: 25_000_000,
        }),
        ..Default::default()
    });
    assert_eq!(run(&ok), []);
}

#[test]
fn oneof_required() {
    let mut r = mk_route_to("c");
    r.r#match = Some(RouteMatch::default());
    let rc = mk_rc(vec![mk_vhost(&["*"], vec![r])]);
    assert_eq!(
        run(&rc),
        [v(
            "virtual_hosts[0].routes[0].match.path_specifier",
            "value is required"
        )]
    );
    let mut r = mk_route_to("c");
    r.action = Some(route::Action::Route(RouteAction::default()));
    let rc = mk_rc(vec![mk_vhost(&["*"], vec![r])]);
    assert_eq!(
        run(&rc),
        [v(
            "virtual_hosts[0].routes[0].route.cluster_specifier",
            "value is required"
        )]
    );
}

#[test]
fn oneof_member_rules_apply_when_it_is_set() {
    // `cluster` has `min_len: 1`; set to "" it is still the oneof's member.
    let rc = mk_rc(vec![mk_vhost(&["*"], vec![mk_route_to("")])]);
    assert_eq!(
        run(&rc),
        [v(
            "virtual_hosts[0].routes[0].route.cluster",
            "value length must be at least 1 characters"
        )]
    );
}

#[test]
fn any_is_unpacked_and_checked() {
    let hcm = HttpConnectionManager::default();
    let found = run(&mk_listener(&hcm));
    let path = format!("filter_chains[0].filters[0].typed_config{{{HCM}}}.stat_prefix");
    assert!(
        found.contains(&v(&path, "value length must be at least 1 characters")),
        "{found:#?}"
    );
    // Anys nest: an HTTP filter's typed config inside the HttpConnectionManager.
    let hcm = HttpConnectionManager {
        stat_prefix: "s".into(),
        http_filters: vec![
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter {
                name: "f".into(),
                config_type: Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(
                    any(&TypedExtensionConfig { name: String::new(), typed_config: None }),
                )),
                ..Default::default()
            },
        ],
        route_specifier: Some(
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier::RouteConfig(
                mk_rc(vec![mk_vhost(&[], vec![])]),
            ),
        ),
        ..Default::default()
    };
    let found = run(&mk_listener(&hcm));
    let inner = format!("filter_chains[0].filters[0].typed_config{{{HCM}}}");
    assert_eq!(
        found,
        [
            v(
                &format!(
                    "{inner}.http_filters[0].typed_config{{envoy.config.core.v3.TypedExtensionConfig}}.name"
                ),
                "value length must be at least 1 characters"
            ),
            v(
                &format!(
                    "{inner}.http_filters[0].typed_config{{envoy.config.core.v3.TypedExtensionConfig}}.typed_config"
                ),
                "value is required"
            ),
            v(
                &format!("{inner}.route_config.virtual_hosts[0].domains"),
                "value must contain at least 1 item(s)"
            ),
        ]
    );
}

#[test]
fn any_of_an_unknown_type_is_not_descended() {
    let mut l = mk_listener(&HttpConnectionManager::default());
    if let Some(filter::ConfigType::TypedConfig(a)) = &mut l.filter_chains[0].filters[0].config_type
    {
        *a = Any {
            type_url: "type.googleapis.com/example.Unknown".into(),
            value: vec![0xff],
        };
    }
    assert_eq!(run(&l), []);
}

#[test]
fn enum_defined_only() {
    let mut c = mk_cluster("c");
    c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(99));
    assert_eq!(
        run(&c),
        [v("type", "value must be one of the defined enum values")]
    );
}

#[test]
fn wrapper_takes_the_rules_of_its_scalar() {
    let mut c = mk_cluster("c");
    c.lb_config = Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
        choice_count: Some(UInt32Value { value: 1 }),
        ..Default::default()
    }));
    assert_eq!(
        run(&c),
        [v(
            "least_request_lb_config.choice_count",
            "value must be greater than or equal to 2"
        )]
    );
    // An absent wrapper is not checked (it is not required).
    c.lb_config = Some(LbConfig::LeastRequestLbConfig(
        LeastRequestLbConfig::default(),
    ));
    assert_eq!(run(&c), []);
}

#[test]
fn packed_repeated_max_items_and_unique() {
    let mut r = mk_route_to("c");
    if let Some(route::Action::Route(a)) = &mut r.action {
        a.internal_redirect_policy = Some(InternalRedirectPolicy {
            redirect_response_codes: vec![301, 302, 303, 307, 308, 301],
            response_headers_to_copy: vec!["a".into(), "b".into(), "a".into()],
            ..Default::default()
        });
    }
    let rc = mk_rc(vec![mk_vhost(&["*"], vec![r])]);
    let base = "virtual_hosts[0].routes[0].route.internal_redirect_policy";
    assert_eq!(
        run(&rc),
        [
            v(
                &format!("{base}.redirect_response_codes"),
                "value must contain no more than 5 item(s)"
            ),
            v(
                &format!("{base}.response_headers_to_copy[2]"),
                "repeated value must contain unique items"
            ),
        ]
    );
}

#[test]
#[allow(deprecated)] // KeyValueAppend.entry is the one `skip` field of Envoy's protos.
fn message_skip_is_not_descended() {
    // KeyValueAppend.entry is `skip`: its KeyValue's empty key is not checked.
    let kva = KeyValueAppend {
        entry: Some(KeyValue::default()),
        ..Default::default()
    };
    assert_eq!(run(&kva), []);
    let kv = KeyValue::default();
    assert_eq!(
        run(&kv),
        [v("key", "value length must be at least 1 characters")]
    );
}

#[test]
fn malformed_and_unknown_input_is_reported() {
    assert_eq!(
        check_encoded("example.Unknown", &[]),
        [v(
            "",
            "message type example.Unknown is not in envoy-types' descriptor set"
        )]
    );
    let found = check_encoded("envoy.config.cluster.v3.Cluster", &[0x0a, 0x05, b'a']);
    assert_eq!(found.len(), 1);
    assert!(
        found[0]
            .message
            .starts_with("malformed envoy.config.cluster.v3.Cluster")
    );
}

/// Every rule kind that messages reachable from the resources Lanyard emits use, for the
/// record (`cargo test -p lanyard-xds pgv::tests::rule_kinds -- --nocapture`); the test
/// fails if one of them is a kind the walk does not read.
#[test]
fn rule_kinds_reachable_from_lanyard_s_resources() {
    let roots = [
        "envoy.config.listener.v3.Listener",
        "envoy.config.route.v3.RouteConfiguration",
        "envoy.config.cluster.v3.Cluster",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "envoy.extensions.transport_sockets.tls.v3.Secret",
        HCM,
        "envoy.extensions.filters.http.router.v3.Router",
        "envoy.extensions.filters.http.cors.v3.Cors",
        "envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "envoy.extensions.filters.http.rbac.v3.RBAC",
        "envoy.extensions.filters.network.rbac.v3.RBAC",
    ];
    let mut seen = BTreeSet::new();
    let mut todo: Vec<usize> = roots
        .iter()
        .map(|r| {
            TABLES
                .index(r)
                .unwrap_or_else(|| panic!("{r} is in the pool"))
        })
        .collect();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    fn kind_name(ty: &TypeRules) -> String {
        match ty {
            TypeRules::Int(_) => "int".into(),
            TypeRules::Uint(_) => "uint".into(),
            TypeRules::Float(_) => "float".into(),
            TypeRules::Bool(_) => "bool".into(),
            TypeRules::Str(r) => format!(
                "string{}{}",
                if r.pattern.is_some() { "+pattern" } else { "" },
                r.well_known.map(|w| format!("+{w:?}")).unwrap_or_default()
            ),
            TypeRules::Bytes(_) => "bytes".into(),
            TypeRules::Enum(_) => "enum".into(),
            TypeRules::Repeated(r) => format!(
                "repeated[{}]",
                r.items
                    .as_ref()
                    .and_then(|i| i.ty.as_ref())
                    .map(kind_name)
                    .unwrap_or_default()
            ),
            TypeRules::Map(_) => "map".into(),
            TypeRules::Any(_) => "any".into(),
            TypeRules::Duration(_) => "duration".into(),
            TypeRules::Timestamp(_) => "timestamp".into(),
        }
    }
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        let m = &TABLES.messages[i];
        for o in &m.oneofs {
            if o.required {
                *kinds.entry("oneof.required".into()).or_default() += 1;
            }
        }
        for f in &m.fields {
            if f.rules.required {
                *kinds.entry("required".into()).or_default() += 1;
            }
            if f.rules.skip {
                *kinds.entry("skip".into()).or_default() += 1;
            }
            if let Some(ty) = &f.rules.ty {
                *kinds.entry(kind_name(ty)).or_default() += 1;
            }
            match (&f.shape, &f.elem) {
                (
                    Shape::Map {
                        value: ElemType::Message(j),
                        ..
                    },
                    _,
                )
                | (_, ElemType::Message(j)) => todo.push(*j),
                _ => {}
            }
        }
    }
    println!("{} message types reachable with rules", seen.len());
    for (k, n) in &kinds {
        println!("{n:6} {k}");
    }
    assert!(kinds.contains_key("oneof.required"));
    assert!(kinds.contains_key("duration"));
}

/// Every resource of the rich fixture passes, as every resource Lanyard serves must.
#[test]
fn rich_model_resources_are_valid() {
    let mesh = crate::translate(&crate::fixtures::rich_model(), &Default::default());
    let all = mesh.distinct();
    let mut found = Vec::new();
    for l in &all.listeners {
        found.extend(run(l.as_ref()).into_iter().map(|x| (l.name.clone(), x)));
    }
    for r in &all.routes {
        found.extend(run(r.as_ref()).into_iter().map(|x| (r.name.clone(), x)));
    }
    for c in &all.clusters {
        found.extend(run(c.as_ref()).into_iter().map(|x| (c.name.clone(), x)));
    }
    for e in &all.endpoints {
        found.extend(
            run(e.as_ref())
                .into_iter()
                .map(|x| (e.cluster_name.clone(), x)),
        );
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// `services` HTTP Services in ten namespaces, three endpoints each, each with a producer
/// route that splits between itself and the next one.
fn mk_mesh(services: usize) -> lanyard_model::Model {
    let ip = |base: u8, n: usize| format!("10.{base}.{}.{}", (n / 250) % 250, n % 250 + 1);
    let name = |i: usize| (format!("ns-{}", i % 10), format!("svc-{i}"));
    let mut all = Vec::new();
    for i in 0..services {
        let (ns, n) = name(i);
        let mut s = mk_service(&ns, &n, &[&ip(96, i)], &[(80, Protocol::Http)]);
        s.ports[0].endpoints = (0..3)
            .map(|k| mk_endpoint(&ip(1 + k as u8, i), 8080, None))
            .collect();
        all.push(s);
    }
    let mut model = mk_model(all, vec![]);
    for i in 0..services {
        let (ns, n) = name(i);
        let (next_ns, next) = name((i + 1) % services);
        let _ = next_ns;
        let me = spk(&ns, &n, 80);
        let other = spk(&ns, &next, 80);
        set_producer(
            &mut model,
            me.clone(),
            mk_table(vec![mk_route(
                prefix("/"),
                forward_to(&[(me, 90), (other, 10)]),
            )]),
        );
    }
    model
}

/// Throughput of `check_encoded` against encoding, on the rich fixture and a 1000-Service
/// mesh: `cargo test --release -p lanyard-xds --lib pgv::tests::throughput -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement, run by hand in release mode"]
fn throughput() {
    let start = Clock::now();
    let tables = TABLES.messages.len();
    println!(
        "tables: {tables} message types planned in {:?}",
        start.elapsed()
    );
    for (label, model, rounds) in [
        ("rich fixture", crate::fixtures::rich_model(), 2000),
        ("1000 Services", mk_mesh(1000), 50),
    ] {
        let mesh = crate::translate(&model, &Default::default());
        let all = mesh.distinct();
        let mut encoded: Vec<(String, Vec<u8>)> = Vec::new();
        let start = Clock::now();
        for _ in 0..rounds {
            encoded.clear();
            encoded.extend(
                all.listeners
                    .iter()
                    .map(|m| (Listener::full_name(), m.encode_to_vec())),
            );
            encoded.extend(
                all.routes
                    .iter()
                    .map(|m| (RouteConfiguration::full_name(), m.encode_to_vec())),
            );
            encoded.extend(
                all.clusters
                    .iter()
                    .map(|m| (Cluster::full_name(), m.encode_to_vec())),
            );
            encoded.extend(all.endpoints.iter().map(|m| {
                (
                    envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::full_name(
                    ),
                    m.encode_to_vec(),
                )
            }));
        }
        let encode = start.elapsed();
        let bytes: usize = encoded.iter().map(|(_, b)| b.len()).sum();
        let start = Clock::now();
        let mut violations = 0;
        for _ in 0..rounds {
            for (name, b) in &encoded {
                violations += check_encoded(name, b).len();
            }
        }
        let validate = start.elapsed();
        assert_eq!(violations, 0);
        let n = (encoded.len() * rounds) as f64;
        let mb = (bytes * rounds) as f64 / 1e6;
        println!(
            "{label}: {} resources, {:.1} KB; validate {:.0} resources/s, {:.0} MB/s; encode {:.0} resources/s, {:.0} MB/s",
            encoded.len(),
            bytes as f64 / 1e3,
            n / validate.as_secs_f64(),
            mb / validate.as_secs_f64(),
            n / encode.as_secs_f64(),
            mb / encode.as_secs_f64(),
        );
    }
}

#[test]
fn map_keys_and_min_pairs() {
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    let mut c = mk_cluster("c");
    c.metadata = Some(Metadata {
        filter_metadata: [
            (String::new(), Default::default()),
            ("ok".into(), Default::default()),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    });
    assert_eq!(
        run(&c),
        [v(
            r#"metadata.filter_metadata[""]"#,
            "value length must be at least 1 characters"
        )]
    );
    assert_eq!(
        check_encoded(
            "envoy.config.common.matcher.v3.Matcher.MatcherTree.MatchMap",
            &[]
        ),
        [v("map", "value must contain at least 1 pair(s)")]
    );
}

#[test]
fn enum_not_in() {
    use envoy_types::pb::envoy::config::core::v3::health_check::HttpHealthCheck;
    let hc = HttpHealthCheck {
        path: "/healthz".into(),
        method: 6, // CONNECT
        ..Default::default()
    };
    assert_eq!(run(&hc), [v("method", "value must not be in list [6]")]);
}

#[test]
fn double_range_in_a_wrapper() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::PreconnectPolicy;
    use envoy_types::pb::google::protobuf::DoubleValue;
    let mut c = mk_cluster("c");
    c.preconnect_policy = Some(PreconnectPolicy {
        per_upstream_preconnect_ratio: Some(DoubleValue { value: 3.5 }),
        ..Default::default()
    });
    assert_eq!(
        run(&c),
        [v(
            "preconnect_policy.per_upstream_preconnect_ratio",
            "value must be inside range [1, 3]"
        )]
    );
}

#[test]
fn strict_header_name_with_ignore_empty() {
    use envoy_types::pb::envoy::config::core::v3::UpstreamHttpProtocolOptions;
    let with = |name: &str| UpstreamHttpProtocolOptions {
        override_auto_sni_header: name.into(),
        ..Default::default()
    };
    assert_eq!(run(&with("")), []);
    assert_eq!(run(&with(":authority")), []);
    assert_eq!(
        run(&with("a b")),
        [v(
            "override_auto_sni_header",
            "value does not match regex pattern \"^:?[0-9a-zA-Z!#$%&'*+-.^_|~`]+$\""
        )]
    );
}
