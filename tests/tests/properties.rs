//! Property tests over the translator's input: any manifests, however wrong, translate
//! without a panic, and the output keeps its invariants.

use std::collections::BTreeSet;

use lanyard_index::api::smi::convert::{WEIGHTS_ANNOTATION, convert};
use lanyard_index::{Objects, Options, Parsed, parse_value};
use lanyard_model::{Action, BackendTarget, NamespaceName};
use lanyard_xds::{ProxyRef, XdsOptions};
use proptest::prelude::*;
use serde_json::{Value, json};

const NAMESPACES: &[&str] = &["a", "b", "c"];
const NAMES: &[&str] = &["svc", "svc-v1", "svc-v2", "missing"];

fn any_of<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    prop::sample::select(items)
}

/// Strings that are sometimes valid and sometimes not.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_string()),
        Just("/api".to_string()),
        Just("/api/".to_string()),
        Just("".to_string()),
        Just("no-slash".to_string()),
        Just("/a//b".to_string()),
        Just("/(unclosed".to_string()),
        Just(".*".to_string()),
        Just("/v[0-9]+".to_string()),
        // Refused by RE2 itself, and by Envoy's program-size limit only.
        Just("/a{1001}".to_string()),
        Just("/[a-z]{1,60}".to_string()),
        // Control characters and Envoy's formatter syntax in header values and paths.
        Just("a\nb".to_string()),
        Just("x\u{1}y".to_string()),
        Just("50%".to_string()),
        "[ -~]{0,12}",
    ]
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(80)),
        Just(json!(8080)),
        Just(json!(7070)),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(70000)),
        Just(Value::Null),
    ]
}

fn service() -> impl Strategy<Value = Value> {
    (
        any_of(NAMESPACES),
        any_of(NAMES),
        prop::collection::vec(
            (
                any_of(&["http", "grpc", "tcp", "https", "", "http-alt"]),
                port(),
                any_of(&["", "http", "grpc", "kubernetes.io/h2c", "mysql"]),
            ),
            0..4,
        ),
        any_of(&["10.96.0.1", "None", "", "fd00::1", "not-an-ip"]),
    )
        .prop_map(|(ns, name, ports, ip)| {
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|(n, p, app)| {
                    let mut port = json!({"name": n, "port": p});
                    if !app.is_empty() {
                        port["appProtocol"] = json!(app);
                    }
                    port
                })
                .collect();
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"clusterIP": ip, "selector": {"app": name}, "ports": ports}})
        })
}

fn endpoint_slice() -> impl Strategy<Value = Value> {
    (
        any_of(NAMESPACES),
        any_of(NAMES),
        any_of(&["IPv4", "IPv6", "FQDN"]),
        prop::collection::vec(
            (
                any_of(&["10.0.0.1", "10.0.0.2", "::1", "x"]),
                any::<Option<bool>>(),
            ),
            0..3,
        ),
    )
        .prop_map(|(ns, name, family, endpoints)| {
            let endpoints: Vec<Value> = endpoints
                .into_iter()
                .map(|(a, ready)| json!({"addresses": [a], "conditions": {"ready": ready}}))
                .collect();
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": format!("{name}-x"), "namespace": ns,
                                "labels": {"kubernetes.io/service-name": name}},
                   "addressType": family,
                   "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 7070}],
                   "endpoints": endpoints})
        })
}

fn filter() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|v| json!({"type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": v.clone(), "value": "x"}], "remove": [v]}})),
        text().prop_map(|v| json!({"type": "RequestHeaderModifier",
            "requestHeaderModifier": {"add": [{"name": "x-v", "value": v}]}})),
        Just(json!({"type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"add": [{"name": "X-A", "value": "1"}]}})),
        (any_of(NAMES), port(), -10i32..120)
            .prop_map(|(n, p, pct)| json!({"type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": n, "port": p}, "percent": pct}})),
        (text(), any::<Option<i32>>()).prop_map(|(path, code)| json!({"type": "RequestRedirect",
            "requestRedirect": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": path},
                                "statusCode": code}})),
        text().prop_map(|path| json!({"type": "URLRewrite",
            "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": path}}})),
        Just(json!({"type": "CORS", "cors": {"allowOrigins": ["*"], "maxAge": -3}})),
        Just(json!({"type": "ExtensionRef", "extensionRef": {"name": "x"}})),
        Just(json!({"type": "Bogus"})),
        Just(json!({"type": "URLRewrite"})),
    ]
}

fn route_match() -> impl Strategy<Value = Value> {
    (
        any_of(&["Exact", "PathPrefix", "RegularExpression", "Weird"]),
        text(),
        prop::collection::vec((text(), text()), 0..3),
        any_of(&["", "GET", "POST", "FETCH"]),
    )
        .prop_map(|(kind, value, headers, method)| {
            let headers: Vec<Value> = headers
                .into_iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect();
            let mut m = json!({"path": {"type": kind, "value": value}, "headers": headers,
                               "queryParams": [{"name": "q", "value": "1"}]});
            if !method.is_empty() {
                m["method"] = json!(method);
            }
            m
        })
}

fn backend_ref() -> impl Strategy<Value = Value> {
    (
        any_of(NAMES),
        prop::option::of(any_of(NAMESPACES)),
        port(),
        prop::option::of(-5i32..2_000_005),
        any_of(&["", "Service", "Bucket"]),
    )
        .prop_map(|(name, ns, port, weight, kind)| {
            let mut b = json!({"name": name, "port": port});
            if let Some(ns) = ns {
                b["namespace"] = json!(ns);
            }
            if let Some(w) = weight {
                b["weight"] = json!(w);
            }
            if !kind.is_empty() {
                b["kind"] = json!(kind);
            }
            b
        })
}

fn route() -> impl Strategy<Value = Value> {
    (
        any_of(&["HTTPRoute", "GRPCRoute"]),
        any_of(NAMESPACES),
        any_of(&["r1", "r2", "r3"]),
        prop::collection::vec(
            (any_of(NAMES), prop::option::of(any_of(NAMESPACES)), port(), any_of(&["Service", "Gateway"])),
            0..3,
        ),
        prop::collection::vec(
            (
                prop::collection::vec(route_match(), 0..3),
                prop::collection::vec(filter(), 0..3),
                prop::collection::vec(backend_ref(), 0..4),
                any_of(&["", "1s", "10ms", "1h2m3s4ms", "bad", "0s"]),
            ),
            0..4,
        ),
    )
        .prop_map(|(kind, ns, name, parents, rules)| {
            let parents: Vec<Value> = parents
                .into_iter()
                .map(|(n, pns, port, k)| {
                    let mut p = json!({"group": if k == "Service" { "" } else { "gateway.networking.k8s.io" },
                                       "kind": k, "name": n, "port": port});
                    if let Some(pns) = pns {
                        p["namespace"] = json!(pns);
                    }
                    p
                })
                .collect();
            let rules: Vec<Value> = rules
                .into_iter()
                .map(|(matches, filters, backends, timeout)| {
                    let matches = if kind == "GRPCRoute" {
                        matches
                            .into_iter()
                            .map(|m| json!({"method": {"service": m["path"]["value"], "method": "M",
                                                        "type": if m["path"]["type"] == "RegularExpression" { "RegularExpression" } else { "Exact" }},
                                            "headers": m["headers"]}))
                            .collect()
                    } else {
                        matches
                    };
                    let mut rule = json!({"matches": matches, "filters": filters, "backendRefs": backends});
                    if kind == "HTTPRoute" && !timeout.is_empty() {
                        rule["timeouts"] = json!({"request": timeout});
                        rule["retry"] = json!({"codes": [503, 200], "attempts": 2, "backoff": timeout});
                    }
                    rule
                })
                .collect();
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": kind,
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"parentRefs": parents, "rules": rules}})
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (any_of(NAMESPACES), any_of(NAMES), any_of(&["10.1.0.1", "", "bad"])).prop_map(|(ns, app, ip)| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": format!("{app}-pod"), "namespace": ns, "labels": {"app": app}},
               "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
               "status": {"podIP": ip}})
    })
}

/// SMI weights: integers, quantities, negative, malformed or missing.
fn smi_weight() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..200).prop_map(|w| json!(w)),
        Just(json!(0)),
        Just(json!(-3)),
        Just(json!(1.5)),
        Just(json!("500m")),
        Just(json!("1")),
        Just(json!("1e3")),
        Just(json!("2T")),
        Just(json!("1Ti")),
        Just(json!("1500u")),
        Just(json!("-1")),
        Just(json!("lots")),
        Just(json!(u64::MAX)),
        Just(Value::Null),
    ]
}

fn traffic_split() -> impl Strategy<Value = Value> {
    (
        any_of(&["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]),
        any_of(NAMESPACES),
        any_of(&["t1", "t2", "t3"]),
        any_of(NAMES),
        prop::collection::vec((any_of(NAMES), smi_weight()), 0..4),
        prop::collection::vec(any_of(&["g1", "g2", "missing"]), 0..2),
        any_of(&["", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"]),
    )
        .prop_map(|(version, ns, name, root, backends, groups, created)| {
            let backends: Vec<Value> = backends
                .into_iter()
                .map(|(s, w)| json!({"service": s, "weight": w}))
                .collect();
            let mut split = json!({"apiVersion": format!("split.smi-spec.io/{version}"),
                   "kind": "TrafficSplit", "metadata": {"name": name, "namespace": ns},
                   "spec": {"service": root, "backends": backends}});
            if !created.is_empty() {
                split["metadata"]["creationTimestamp"] = json!(created);
            }
            if !groups.is_empty() && matches!(version, "v1alpha3" | "v1alpha4") {
                split["spec"]["matches"] = groups
                    .into_iter()
                    .map(|g| json!({"kind": "HTTPRouteGroup", "name": g}))
                    .collect();
            }
            split
        })
}

fn http_route_group() -> impl Strategy<Value = Value> {
    (
        any_of(NAMESPACES),
        any_of(&["g1", "g2"]),
        prop::collection::vec((text(), any_of(&["", "GET", "*"]), text()), 0..3),
    )
        .prop_map(|(ns, name, matches)| {
            let matches: Vec<Value> = matches
                .into_iter()
                .enumerate()
                .map(|(i, (path, method, header))| {
                    let mut m = json!({"name": format!("m{i}"), "pathRegex": path,
                                       "headers": [{"x-h": header}]});
                    if !method.is_empty() {
                        m["methods"] = json!([method]);
                    }
                    m
                })
                .collect();
            json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
                   "metadata": {"name": name, "namespace": ns}, "spec": {"matches": matches}})
        })
}

fn manifests() -> impl Strategy<Value = Vec<Value>> {
    (
        prop::collection::vec(service(), 0..6),
        prop::collection::vec(endpoint_slice(), 0..4),
        prop::collection::vec(route(), 0..6),
        prop::collection::vec(pod(), 0..3),
        prop::collection::vec(traffic_split(), 0..3),
        prop::collection::vec(http_route_group(), 0..2),
    )
        .prop_map(|(a, b, c, d, e, f)| {
            a.into_iter()
                .chain(b)
                .chain(c)
                .chain(d)
                .chain(e)
                .chain(f)
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_manifests_translate_without_panic_and_keep_invariants(docs in manifests()) {
        let mut objects = Objects::default();
        for doc in docs {
            for parsed in parse_value(doc, "default").into_iter().flatten() {
                if let Parsed::Object { object, .. } = parsed {
                    objects.apply(*object);
                }
            }
        }
        let translation = lanyard_index::translate(&objects, &Options::default());

        // Every TrafficSplit is reported exactly once, in order.
        let reported: Vec<_> = translation.smi.iter().map(|r| r.split.key.clone()).collect();
        let stored: Vec<_> = objects.traffic_splits.keys().cloned().collect();
        prop_assert_eq!(reported, stored);

        // Every status has Accepted and ResolvedRefs, for every Service parent, and
        // PartiallyInvalid only beside Accepted=True.
        for status in &translation.statuses {
            for parent in &status.parents {
                let types: Vec<&str> = parent.conditions.iter().map(|c| c.type_.as_str()).collect();
                prop_assert_eq!(&types[..2], &["Accepted", "ResolvedRefs"][..]);
                if types.len() > 2 {
                    prop_assert_eq!(&types[2..], &["PartiallyInvalid"][..]);
                    prop_assert_eq!(parent.conditions[0].status.as_str(), "True");
                }
            }
        }
        // Forwards always have a backend, and every resolved target exists in the model.
        for routing in translation.model.routing.values() {
            for table in routing.producer.iter().chain(routing.consumers.values()) {
                for route in &table.routes {
                    if let Action::Forward(forward) = &route.action {
                        prop_assert!(!forward.backends.is_empty());
                        for backend in &forward.backends {
                            prop_assert!(backend.weight > 0);
                            if let BackendTarget::Service(port) = &backend.target {
                                prop_assert!(translation.model.service_port(port).is_some());
                            }
                        }
                    }
                }
            }
        }

        let resources = lanyard_xds::translate(&translation.model, &XdsOptions::default());
        for ns in NAMESPACES {
            let proxy = resources.for_proxy(&ProxyRef::envoy(NamespaceName::new(*ns), None));
            // Consistency: every cluster a route names exists, but for the deliberate
            // invalid-backend cluster; every EDS cluster has its assignment.
            let clusters: BTreeSet<&str> = proxy.clusters.iter().map(|c| c.name.as_str()).collect();
            let assignments: BTreeSet<&str> = proxy.endpoints.iter().map(|c| c.cluster_name.as_str()).collect();
            let rendered = lanyard_xds::render::resources_value(&proxy);
            for name in referenced_clusters(&rendered) {
                prop_assert!(
                    clusters.contains(name.as_str()) || name == lanyard_xds::INVALID_BACKEND_CLUSTER,
                    "route names missing cluster {}", name
                );
            }
            for cluster in &proxy.clusters {
                if cluster.eds_cluster_config.is_some() {
                    prop_assert!(assignments.contains(cluster.name.as_str()));
                }
            }
            let yaml = lanyard_xds::render::to_yaml(&rendered);
            prop_assert!(!yaml.is_empty());
        }
    }

    /// Validation before publishing: whatever the input, no resource that is published (in
    /// the snapshot's mesh, which the ADS server serves) breaks a rule of Envoy or gRPC.
    #[test]
    fn no_input_publishes_a_resource_a_proxy_would_refuse(docs in manifests()) {
        let mut objects = Objects::default();
        for doc in docs {
            for parsed in parse_value(doc, "default").into_iter().flatten() {
                if let Parsed::Object { object, .. } = parsed {
                    objects.apply(*object);
                }
            }
        }
        let loaded = lanyard_controller::files::Loaded { objects: std::sync::Arc::new(objects), ..Default::default() };
        let settings = lanyard_controller::snapshot::Settings::default();
        let snapshot = lanyard_controller::snapshot::Snapshot::translate(1, loaded, &settings);
        prop_assert_eq!(snapshot.mesh.check(), vec![]);
    }

    #[test]
    fn arbitrary_text_in_a_manifest_file_never_panics_the_loader(text in "[ -~\n]{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input.yaml");
        std::fs::write(&file, &text).unwrap();
        let mut source = lanyard_controller::files::FileSource::new([file]).unwrap();
        let loaded = source.load();
        let _ = lanyard_index::translate(&loaded.objects, &Options::default());
    }
}

/// Every `cluster` (and weighted cluster name) routes refer to, from the rendered form.
fn referenced_clusters(rendered: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for route_config in rendered["routes"].as_array().into_iter().flatten() {
        for vhost in route_config["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for route in vhost["routes"].as_array().into_iter().flatten() {
                let action = &route["route"];
                if let Some(c) = action["cluster"].as_str() {
                    out.push(c.to_string());
                }
                for c in action["weighted_clusters"]["clusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    out.extend(c["name"].as_str().map(str::to_string));
                }
                for m in action["request_mirror_policies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    out.extend(m["cluster"].as_str().map(str::to_string));
                }
            }
        }
    }
    out
}

/// A Kubernetes quantity as someone might write it: a sign, digits with or without a
/// fraction, and any suffix or exponent.
fn quantity_text() -> impl Strategy<Value = String> {
    (
        any_of(&["", "+"]),
        "[0-9]{0,7}",
        prop::option::of("[0-9]{0,7}"),
        any_of(&[
            "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
            "e3", "E-2", "e+7", "e-12", "e40",
        ]),
    )
        .prop_filter_map("a quantity has a digit", |(sign, int, frac, suffix)| {
            let digits = int.len() + frac.as_ref().map_or(0, String::len);
            let text = match frac {
                Some(frac) => format!("{sign}{int}.{frac}{suffix}"),
                None => format!("{sign}{int}{suffix}"),
            };
            (digits > 0).then_some(text)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any v1alpha1 weights convert to whole numbers that fit Envoy (32 bits in total), keep
    /// zero and non-zero apart, agree with what the translator reads, and read back at
    /// v1alpha1 exactly as written, through any version.
    #[test]
    fn v1alpha1_quantities_convert_and_read_back_as_written(
        texts in prop::collection::vec(quantity_text(), 1..4),
        via in any_of(&["v1alpha2", "v1alpha3", "v1alpha4"]),
    ) {
        let backends: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"service": format!("web-v{i}"), "weight": t}))
            .collect();
        let v1 = json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "s", "namespace": "shop"},
            "spec": {"service": "web", "backends": backends}});
        let hub = convert(&v1, "split.smi-spec.io/v1alpha4").unwrap();
        let numbers: Vec<u64> = hub["spec"]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["weight"].as_u64().unwrap())
            .collect();
        prop_assert!(numbers.iter().sum::<u64>() <= u64::from(u32::MAX), "{:?}", numbers);
        for (text, &n) in texts.iter().zip(&numbers) {
            let zero = !text.chars().take_while(|c| !c.is_ascii_alphabetic()).any(|c| ('1'..='9').contains(&c));
            prop_assert_eq!(n == 0, zero, "{} became {}", text, n);
        }

        let mut objects = Objects::default();
        for parsed in parse_value(v1.clone(), "test") {
            if let Ok(Parsed::Object { object, .. }) = parsed {
                objects.apply(*object);
            }
        }
        let split = objects.traffic_splits.values().next().unwrap();
        let read: Vec<u64> = split.weights().into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(&read, &numbers);

        let there = convert(&hub, &format!("split.smi-spec.io/{via}")).unwrap();
        let up = convert(&there, "split.smi-spec.io/v1alpha4").unwrap();
        let mut back = convert(&up, "split.smi-spec.io/v1alpha1").unwrap();
        if let Some(meta) = back["metadata"].as_object_mut()
            && let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut)
        {
            a.remove(WEIGHTS_ANNOTATION);
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
        prop_assert_eq!(back, v1);
    }
}
