//! TrafficSplit lowering: objects built with `mk_*` helpers, assertions on tables and reports.

use lanyard_model::{
    BackendTarget, HeaderMatch, NamespaceName, PathMatch, RequestMatch, RouteTable, ServiceKey,
    ServicePortKey, StringMatch,
};
use serde_json::{Value, json};

use crate::objects::Object;
use crate::translate::smi::reasons;
use crate::translate::tests::{backends, mk_object, mk_service, run};
use crate::translate::{SmiOutcome, SmiReport, Translation};

/// A TrafficSplit of `version` on `root` with `(backend, weight)` backends.
fn mk_split(version: &str, name: &str, root: &str, backends: &[(&str, Value)]) -> Value {
    let backends: Vec<Value> = backends
        .iter()
        .map(|(s, w)| json!({"service": s, "weight": w}))
        .collect();
    json!({
        "apiVersion": format!("split.smi-spec.io/{version}"), "kind": "TrafficSplit",
        "metadata": {"name": name, "namespace": "app", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"service": root, "backends": backends}
    })
}

fn mk_group(name: &str, matches: Value) -> Object {
    mk_object(json!({
        "apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
        "metadata": {"name": name, "namespace": "app"},
        "spec": {"matches": matches}
    }))
}

fn base() -> Vec<Object> {
    vec![
        mk_service("app", "web", &[("http", 80), ("tcp", 9090)]),
        mk_service("app", "web-v1", &[("http", 80)]),
        mk_service("app", "web-v2", &[("http", 80)]),
    ]
}

fn port(name: &str, port: u16) -> ServicePortKey {
    ServicePortKey::new(ServiceKey::new("app", name), port)
}

fn svc(name: &str, p: u16) -> BackendTarget {
    BackendTarget::Service(port(name, p))
}

fn producer(t: &Translation, key: &ServicePortKey) -> Option<RouteTable> {
    t.model
        .table_for(key, &NamespaceName::new("client"))
        .cloned()
}

fn report<'a>(t: &'a Translation, name: &str) -> &'a SmiReport {
    t.smi
        .iter()
        .find(|r| r.split.key.name == name)
        .unwrap_or_else(|| panic!("no report for {name}: {:?}", t.smi))
}

fn invalid(reason: &str) -> SmiOutcome {
    SmiOutcome::Invalid {
        reason: reason.into(),
    }
}

fn ignored(reason: &str) -> SmiOutcome {
    SmiOutcome::Ignored {
        reason: reason.into(),
    }
}

#[test]
fn a_split_weights_every_http_port_of_the_root_and_leaves_opaque_ports_alone() {
    let mut objects = base();
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "canary",
        "web",
        &[("web-v1", json!(90)), ("web-v2", json!(10))],
    )));
    let t = run(objects);
    let table = producer(&t, &port("web", 80)).expect("a split table on web:80");
    assert_eq!(table.routes.len(), 1);
    assert_eq!(table.routes[0].matcher, RequestMatch::default());
    assert_eq!(
        backends(&table, 0),
        vec![(svc("web-v1", 80), 90), (svc("web-v2", 80), 10)]
    );
    assert!(producer(&t, &port("web", 9090)).is_none());
    let r = report(&t, "canary");
    assert_eq!(r.outcome, SmiOutcome::Applied);
    assert_eq!(r.service, "app/web");
    assert!(r.message.contains("port 9090 is not HTTP"), "{}", r.message);
}

#[test]
fn v1alpha1_quantities_are_reduced_to_their_ratio() {
    let mut objects = base();
    objects.push(mk_object(mk_split(
        "v1alpha1",
        "q",
        "web",
        &[("web-v1", json!("500m")), ("web-v2", json!("1"))],
    )));
    let t = run(objects);
    let table = producer(&t, &port("web", 80)).unwrap();
    assert_eq!(
        backends(&table, 0),
        vec![(svc("web-v1", 80), 1), (svc("web-v2", 80), 2)]
    );
}

#[test]
fn matches_split_only_matching_requests_and_the_rest_goes_to_the_root() {
    let mut objects = base();
    objects.push(mk_group(
        "beta",
        json!([
            {"name": "cookie", "headers": [{"Cookie": "^(.*;\\s*)?version=beta(;.*)?$"}, {"x-beta": "yes"}]},
            {"name": "api", "pathRegex": "^/api/.*$", "methods": ["GET", "post"]},
            {"name": "any", "pathRegex": "/x", "methods": ["*"]}
        ]),
    ));
    let mut split = mk_split(
        "v1alpha4",
        "ab",
        "web",
        &[("web-v1", json!(0)), ("web-v2", json!(100))],
    );
    split["spec"]["matches"] = json!([{"kind": "HTTPRouteGroup", "name": "beta"}]);
    objects.push(mk_object(split));
    let t = run(objects);
    let table = producer(&t, &port("web", 80)).unwrap();
    let matchers: Vec<&RequestMatch> = table.routes.iter().map(|r| &r.matcher).collect();
    assert_eq!(matchers.len(), 5);
    assert_eq!(
        matchers[0].headers,
        vec![
            HeaderMatch {
                name: "cookie".into(),
                value: StringMatch::Regex("^(.*;\\s*)?version=beta(;.*)?$".into())
            },
            HeaderMatch {
                name: "x-beta".into(),
                value: StringMatch::Exact("yes".into())
            },
        ]
    );
    assert_eq!(matchers[0].path, PathMatch::default());
    assert_eq!(matchers[1].path, PathMatch::Regex("^/api/.*$".into()));
    assert_eq!(matchers[1].method.as_deref(), Some("GET"));
    assert_eq!(matchers[2].method.as_deref(), Some("POST"));
    assert_eq!(matchers[3].method, None);
    // Weight 0 backends get no share; the catch-all goes to the root's own endpoints.
    assert_eq!(backends(&table, 0), vec![(svc("web-v2", 80), 100)]);
    assert_eq!(*matchers[4], RequestMatch::default());
    assert_eq!(backends(&table, 4), vec![(svc("web", 80), 1)]);
    assert_eq!(report(&t, "ab").outcome, SmiOutcome::Applied);
}

#[test]
fn a_gateway_api_route_on_the_root_wins_and_the_split_is_ignored() {
    let mut objects = base();
    objects.push(mk_object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "app"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web"}],
                 "rules": [{"backendRefs": [{"name": "web-v1", "port": 80}]}]}
    })));
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "canary",
        "web",
        &[("web-v2", json!(1))],
    )));
    let t = run(objects);
    let table = producer(&t, &port("web", 80)).unwrap();
    assert_eq!(backends(&table, 0), vec![(svc("web-v1", 80), 1)]);
    let r = report(&t, "canary");
    assert_eq!(r.outcome, ignored(reasons::GATEWAY_API_ROUTE));
    assert!(r.message.contains("port 80"), "{}", r.message);
}

#[test]
fn the_oldest_split_on_a_root_wins_then_the_first_by_name() {
    let mut objects = base();
    let mut young = mk_split("v1alpha2", "a-young", "web", &[("web-v1", json!(1))]);
    young["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    objects.push(mk_object(young));
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "c-old",
        "web",
        &[("web-v1", json!(1))],
    )));
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "b-old",
        "web",
        &[("web-v2", json!(1))],
    )));
    let t = run(objects);
    let table = producer(&t, &port("web", 80)).unwrap();
    assert_eq!(backends(&table, 0), vec![(svc("web-v2", 80), 1)]);
    assert_eq!(report(&t, "b-old").outcome, SmiOutcome::Applied);
    for loser in ["a-young", "c-old"] {
        let r = report(&t, loser);
        assert_eq!(r.outcome, ignored(reasons::SUPERSEDED), "{loser}");
        assert!(r.message.contains("app/b-old"), "{}", r.message);
    }
    let names: Vec<&str> = t.smi.iter().map(|r| r.split.key.name.as_str()).collect();
    assert_eq!(names, vec!["a-young", "b-old", "c-old"]);
}

#[test]
fn all_zero_negative_and_malformed_weights_leave_the_root_pass_through() {
    for (name, weights) in [
        ("zero", vec![json!(0), json!(0)]),
        ("negative", vec![json!(-1), json!(10)]),
        ("malformed", vec![json!("ten"), json!(10)]),
        ("fraction", vec![json!(1.5), json!(10)]),
    ] {
        let mut objects = base();
        objects.push(mk_object(mk_split(
            "v1alpha3",
            name,
            "web",
            &[
                ("web-v1", weights[0].clone()),
                ("web-v2", weights[1].clone()),
            ],
        )));
        let t = run(objects);
        assert!(producer(&t, &port("web", 80)).is_none(), "{name}");
        let expected = if name == "zero" {
            invalid(reasons::NO_WEIGHT)
        } else {
            invalid(reasons::INVALID_WEIGHT)
        };
        assert_eq!(report(&t, name).outcome, expected, "{name}");
    }
}

fn degraded(reason: &str) -> SmiOutcome {
    SmiOutcome::Degraded {
        reason: reason.into(),
    }
}

#[test]
fn a_missing_backend_is_left_out_and_reported() {
    let mut objects = base();
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "s",
        "web",
        &[("web-v1", json!(3)), ("gone", json!(1))],
    )));
    let t = run(objects);
    let table = producer(&t, &port("web", 80)).unwrap();
    assert_eq!(backends(&table, 0), vec![(svc("web-v1", 80), 3)]);
    let r = report(&t, "s");
    assert_eq!(r.outcome, degraded(reasons::BACKEND_NOT_FOUND));
    assert!(
        r.message
            .contains("backend Service app/gone not found, left out"),
        "{}",
        r.message
    );
    assert!(
        r.message.contains("port 80 split: web-v1 100%"),
        "{}",
        r.message
    );
}

#[test]
fn a_backend_without_the_root_port_is_left_out_even_with_one_port() {
    let mut objects = base();
    objects.push(mk_service("app", "web-alt", &[("http-alt", 8080)]));
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "s",
        "web",
        &[("web-v1", json!(90)), ("web-alt", json!(10))],
    )));
    let t = run(objects);
    let table = producer(&t, &port("web", 80)).unwrap();
    assert_eq!(backends(&table, 0), vec![(svc("web-v1", 80), 90)]);
    let r = report(&t, "s");
    assert_eq!(r.outcome, degraded(reasons::BACKEND_PORT_NOT_FOUND));
    assert!(
        r.message
            .contains("backend Service app/web-alt has no port 80, left out there"),
        "{}",
        r.message
    );
}

#[test]
fn each_root_port_keeps_the_backends_that_have_it() {
    let mut objects = vec![
        mk_service("app", "web", &[("http", 80), ("http-admin", 81)]),
        mk_service("app", "web-v1", &[("http", 80), ("http-admin", 81)]),
        mk_service("app", "web-v2", &[("http", 80)]),
    ];
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "s",
        "web",
        &[("web-v1", json!(1)), ("web-v2", json!(1))],
    )));
    let t = run(objects);
    assert_eq!(
        backends(&producer(&t, &port("web", 80)).unwrap(), 0),
        vec![(svc("web-v1", 80), 1), (svc("web-v2", 80), 1)]
    );
    assert_eq!(
        backends(&producer(&t, &port("web", 81)).unwrap(), 0),
        vec![(svc("web-v1", 81), 1)]
    );
    let r = report(&t, "s");
    assert_eq!(r.outcome, degraded(reasons::BACKEND_PORT_NOT_FOUND));
    assert!(
        r.message.starts_with(
            "app/web port 80 split: web-v1 50%, web-v2 50%; port 81 split: web-v1 100%; backend Service app/web-v2 has no port 81"
        ),
        "{}",
        r.message
    );
}

#[test]
fn a_port_every_backend_lacks_stays_pass_through() {
    let mut objects = vec![
        mk_service("app", "web", &[("http", 80), ("http-admin", 81)]),
        mk_service("app", "web-v1", &[("http", 80)]),
    ];
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "s",
        "web",
        &[("web-v1", json!(1)), ("gone", json!(0))],
    )));
    let t = run(objects);
    assert!(producer(&t, &port("web", 80)).is_some());
    assert!(producer(&t, &port("web", 81)).is_none());
    let r = report(&t, "s");
    // A missing backend with weight 0 gets nothing either way and is not reported.
    assert_eq!(r.outcome, degraded(reasons::BACKEND_PORT_NOT_FOUND));
    assert!(!r.message.contains("gone not found"), "{}", r.message);
    assert!(
        r.message
            .ends_with("port 81 has no backend left and stays pass-through"),
        "{}",
        r.message
    );
}

#[test]
fn a_split_whose_every_backend_is_left_out_is_invalid() {
    let mut objects = base();
    objects.push(mk_service("app", "web-alt", &[("http-alt", 8080)]));
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "ports",
        "web",
        &[("web-alt", json!(1))],
    )));
    let t = run(objects.clone());
    assert!(t.model.routing.is_empty(), "{:?}", t.model.routing);
    let r = report(&t, "ports");
    assert_eq!(r.outcome, invalid(reasons::BACKEND_PORT_NOT_FOUND));
    assert!(
        r.message
            .starts_with("no backend can serve root Service app/web port 80"),
        "{}",
        r.message
    );

    let mut objects = base();
    objects.push(mk_service("app", "web-alt", &[("http-alt", 8080)]));
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "mixed",
        "web",
        &[("web-alt", json!(1)), ("gone", json!(1))],
    )));
    let t = run(objects);
    assert!(t.model.routing.is_empty(), "{:?}", t.model.routing);
    let r = report(&t, "mixed");
    assert_eq!(r.outcome, invalid(reasons::BACKEND_NOT_FOUND));
    assert!(r.message.contains("app/gone not found"), "{}", r.message);
    assert!(
        r.message.contains("app/web-alt has no port 80"),
        "{}",
        r.message
    );
}

#[test]
fn a_backend_equal_to_the_root_reaches_the_root_endpoints() {
    let mut objects = base();
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "self",
        "web",
        &[("web", json!(1)), ("web-v2", json!(1))],
    )));
    let t = run(objects);
    let table = producer(&t, &port("web", 80)).unwrap();
    assert_eq!(
        backends(&table, 0),
        vec![(svc("web", 80), 1), (svc("web-v2", 80), 1)]
    );
    assert_eq!(report(&t, "self").outcome, SmiOutcome::Applied);
}

#[test]
fn missing_roots_groups_and_backends_lists_are_reported() {
    let mut objects = base();
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "no-root",
        "nowhere",
        &[("web-v1", json!(1))],
    )));
    objects.push(mk_object(mk_split("v1alpha2", "empty", "web-v1", &[])));
    let mut split = mk_split("v1alpha4", "no-group", "web-v2", &[("web-v1", json!(1))]);
    split["spec"]["matches"] = json!([{"kind": "HTTPRouteGroup", "name": "missing"}]);
    objects.push(mk_object(split));
    let mut split = mk_split("v1alpha4", "tcp-kind", "web", &[("web-v1", json!(1))]);
    split["spec"]["matches"] = json!([{"kind": "TCPRoute", "name": "db"}]);
    objects.push(mk_object(split));
    let t = run(objects);
    assert!(t.model.routing.is_empty(), "{:?}", t.model.routing);
    assert_eq!(
        report(&t, "no-root").outcome,
        ignored(reasons::ROOT_NOT_FOUND)
    );
    assert_eq!(report(&t, "empty").outcome, invalid(reasons::NO_BACKENDS));
    assert_eq!(
        report(&t, "no-group").outcome,
        invalid(reasons::INVALID_MATCH)
    );
    assert_eq!(
        report(&t, "tcp-kind").outcome,
        invalid(reasons::INVALID_MATCH)
    );
}

#[test]
fn invalid_regexes_header_names_and_huge_weights_make_the_split_invalid() {
    for (name, matches) in [
        (
            "bad-path",
            json!([{"name": "m", "pathRegex": "/(unclosed"}]),
        ),
        (
            "bad-header",
            json!([{"name": "m", "headers": [{"x-a": "[oops"}]}]),
        ),
        (
            "bad-name",
            json!([{"name": "m", "headers": [{"bad name": "v"}]}]),
        ),
        ("no-matches", json!([])),
    ] {
        let mut objects = base();
        objects.push(mk_group("g", matches));
        let mut split = mk_split("v1alpha4", name, "web", &[("web-v1", json!(1))]);
        split["spec"]["matches"] = json!([{"kind": "HTTPRouteGroup", "name": "g"}]);
        objects.push(mk_object(split));
        let t = run(objects);
        assert!(t.model.routing.is_empty(), "{name}");
        assert_eq!(
            report(&t, name).outcome,
            invalid(reasons::INVALID_MATCH),
            "{name}"
        );
    }
    let mut objects = base();
    objects.push(mk_object(mk_split(
        "v1alpha2",
        "huge",
        "web",
        &[
            ("web-v1", json!(4_000_000_000u64)),
            ("web-v2", json!(4_000_000_000u64)),
        ],
    )));
    let t = run(objects);
    assert!(t.model.routing.is_empty());
    assert_eq!(report(&t, "huge").outcome, invalid(reasons::INVALID_WEIGHT));
}

#[test]
fn smi_regexes_are_checked_with_re2_and_envoys_program_size_limit() {
    for (name, matches, expected) in [
        (
            "extended",
            json!([{"name": "m", "pathRegex": "(?x)/a b"}]),
            "HTTPRouteGroup app/g match \"m\": regular expression \"(?x)/a b\" is refused by Envoy: RE2 does not compile it: invalid perl operator: (?x",
        ),
        (
            "big-header",
            json!([{"name": "m", "headers": [{"x-a": "/[a-z]{1,60}"}]}]),
            "regular expression \"/[a-z]{1,60}\" is refused by Envoy: RE2 program size 124 is over the limit of 100",
        ),
    ] {
        let mut objects = base();
        objects.push(mk_group("g", matches));
        let mut split = mk_split("v1alpha4", name, "web", &[("web-v1", json!(1))]);
        split["spec"]["matches"] = json!([{"kind": "HTTPRouteGroup", "name": "g"}]);
        objects.push(mk_object(split));
        let t = run(objects);
        let r = report(&t, name);
        assert_eq!(r.outcome, invalid(reasons::INVALID_MATCH), "{name}");
        assert!(
            r.message.contains(expected),
            "{expected:?} not in {:?}",
            r.message
        );
    }
}
