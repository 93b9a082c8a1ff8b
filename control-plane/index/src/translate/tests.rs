//! Translator unit tests: objects built with `mk_*` helpers, assertions on model and status.

use lanyard_model::{
    Action, BackendTarget, NamespaceName, PathMatch, PathRewrite, Protocol, RouteTable, ServiceKey,
    ServicePortKey,
};
use serde_json::{Value, json};

use crate::objects::{Kind, Object, ObjectKey, ObjectRef, Objects, Parsed, parse_value};
use crate::status::RouteStatus;
use crate::translate::{Options, RuleRef, Translation, translate};

pub(super) fn mk_object(value: Value) -> Object {
    match parse_value(value, "default").remove(0) {
        Ok(Parsed::Object { object, .. }) => *object,
        other => panic!("not an object: {other:?}"),
    }
}

/// A Service with `(name, port)` ports; names starting with `http`/`grpc`/`tcp` declare the
/// protocol.
pub(super) fn mk_service(ns: &str, name: &str, ports: &[(&str, u16)]) -> Object {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "targetPort": 8000 + p % 1000}))
        .collect();
    mk_object(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"app": name}, "ports": ports}
    }))
}

fn mk_http_route(ns: &str, name: &str, spec: Value) -> Object {
    mk_object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "generation": 3},
        "spec": spec
    }))
}

fn mk_grpc_route(ns: &str, name: &str, spec: Value) -> Object {
    mk_object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    }))
}

fn mk_parent(ns: &str, name: &str) -> Value {
    json!({"group": "", "kind": "Service", "name": name, "namespace": ns})
}

fn mk_backend(name: &str, port: u16, weight: i32) -> Value {
    json!({"name": name, "port": port, "weight": weight})
}

fn mk_objects(objects: Vec<Object>) -> Objects {
    let mut store = Objects::default();
    for o in objects {
        store.apply(o);
    }
    store
}

pub(super) fn run(objects: Vec<Object>) -> Translation {
    translate(&mk_objects(objects), &Options::default())
}

fn port(ns: &str, name: &str, port: u16) -> ServicePortKey {
    ServicePortKey::new(ServiceKey::new(ns, name), port)
}

fn table<'a>(t: &'a Translation, key: &ServicePortKey, client_ns: &str) -> Option<&'a RouteTable> {
    t.model.table_for(key, &NamespaceName::new(client_ns))
}

fn status_of<'a>(t: &'a Translation, name: &str) -> &'a RouteStatus {
    t.statuses
        .iter()
        .find(|s| s.route.key.name == name)
        .unwrap_or_else(|| panic!("no status for {name}"))
}

/// `(type, status, reason)` of each condition of the first parent.
fn conditions(status: &RouteStatus) -> Vec<(String, String, String)> {
    status.parents[0]
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

fn cond(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.into(), s.into(), r.into())
}

pub(super) fn backends(table: &RouteTable, index: usize) -> Vec<(BackendTarget, u32)> {
    match &table.routes[index].action {
        Action::Forward(f) => f
            .backends
            .iter()
            .map(|b| (b.target.clone(), b.weight))
            .collect(),
        other => panic!("not a forward: {other:?}"),
    }
}

fn base() -> Vec<Object> {
    vec![
        mk_service(
            "app",
            "echo",
            &[("http", 80), ("http-alt", 8080), ("tcp", 9090)],
        ),
        mk_service("app", "echo-v1", &[("http", 80)]),
        mk_service("app", "echo-v2", &[("http", 80)]),
    ]
}

#[test]
fn producer_routes_apply_to_every_client_and_consumer_routes_to_their_namespace_only() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "producer",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    objects.push(mk_http_route(
        "client",
        "consumer",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"backendRefs": [{"name": "echo-v2", "namespace": "app", "port": 80}]}]}),
    ));
    objects.push(mk_object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "allow-client", "namespace": "app"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "client"}],
                 "to": [{"group": "", "kind": "Service"}]}
    })));
    let t = run(objects);
    let echo = port("app", "echo", 80);
    let v1 = BackendTarget::Service(port("app", "echo-v1", 80));
    let v2 = BackendTarget::Service(port("app", "echo-v2", 80));
    assert_eq!(
        backends(table(&t, &echo, "app").unwrap(), 0),
        vec![(v1.clone(), 1)]
    );
    assert_eq!(
        backends(table(&t, &echo, "other").unwrap(), 0),
        vec![(v1, 1)]
    );
    assert_eq!(
        backends(table(&t, &echo, "client").unwrap(), 0),
        vec![(v2, 1)]
    );
    for name in ["producer", "consumer"] {
        assert_eq!(
            conditions(status_of(&t, name)),
            vec![
                cond("Accepted", "True", "Accepted"),
                cond("ResolvedRefs", "True", "ResolvedRefs")
            ],
            "{name}"
        );
    }
}

#[test]
fn a_port_limits_the_route_and_no_port_means_every_http_port() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "only-80",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo-v1", "port": 80}],
               "rules": [{"backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    objects.push(mk_http_route(
        "app",
        "all-ports",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"backendRefs": [mk_backend("echo-v2", 80, 1)]}]}),
    ));
    let t = run(objects);
    assert!(table(&t, &port("app", "echo-v1", 80), "app").is_some());
    assert!(table(&t, &port("app", "echo", 80), "app").is_some());
    assert!(table(&t, &port("app", "echo", 8080), "app").is_some());
    // A port declared `tcp` does not take HTTP routes unless named explicitly.
    assert!(table(&t, &port("app", "echo", 9090), "app").is_none());
}

#[test]
fn an_opaque_port_named_explicitly_is_not_allowed() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "on-tcp",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 9090}],
               "rules": [{"backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    let t = run(objects);
    assert_eq!(
        conditions(status_of(&t, "on-tcp"))[0],
        cond("Accepted", "False", "NotAllowedByListeners")
    );
    assert!(t.model.routing.is_empty());
}

#[test]
fn an_unnamed_port_takes_the_protocol_of_the_routes_on_it() {
    let objects = vec![
        mk_object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "plain", "namespace": "app"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}, {"port": 81}]}})),
        mk_grpc_route(
            "app",
            "g",
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "plain", "port": 81}],
                   "rules": [{"backendRefs": [mk_backend("plain", 81, 1)]}]}),
        ),
    ];
    let t = run(objects);
    let ports = &t.model.services[&ServiceKey::new("app", "plain")].ports;
    assert_eq!(ports[0].protocol, Protocol::Tcp);
    assert_eq!(ports[1].protocol, Protocol::Grpc);
}

#[test]
fn missing_parents_and_ports_are_reported() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "no-service",
        json!({"parentRefs": [mk_parent("app", "nope")], "rules": [{}]}),
    ));
    objects.push(mk_http_route(
        "app",
        "no-port",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 1234}],
               "rules": [{}]}),
    ));
    objects.push(mk_http_route(
        "app",
        "no-section",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "sectionName": "nope"}],
               "rules": [{}]}),
    ));
    objects.push(mk_http_route(
        "app",
        "gateway-only",
        json!({"parentRefs": [{"name": "some-gateway"}], "rules": [{}]}),
    ));
    // Without a group, `kind: Service` is read in the CRD's default group
    // (gateway.networking.k8s.io), as the API server stores it: not a core Service.
    objects.push(mk_http_route(
        "app",
        "no-group",
        json!({"parentRefs": [{"kind": "Service", "name": "echo"}],
               "rules": [{"backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    let mut headless = mk_service("app", "stateful", &[("http", 80)]);
    if let Object::Service(svc) = &mut headless {
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    }
    objects.push(headless);
    objects.push(mk_http_route(
        "app",
        "on-headless",
        json!({"parentRefs": [mk_parent("app", "stateful")],
               "rules": [{"backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    let t = run(objects);
    for name in ["no-service", "no-port", "no-section", "on-headless"] {
        assert_eq!(
            conditions(status_of(&t, name))[0],
            cond("Accepted", "False", "NoMatchingParent"),
            "{name}"
        );
    }
    let headless = &status_of(&t, "on-headless").parents[0].conditions[0];
    assert!(
        headless.message.contains("headless"),
        "{}",
        headless.message
    );
    // Routes on Gateways belong to another controller: no status from us.
    assert!(
        t.statuses
            .iter()
            .all(|s| s.route.key.name != "gateway-only" && s.route.key.name != "no-group")
    );
    assert!(t.model.routing.is_empty());
}

#[test]
fn routes_on_one_service_merge_by_precedence() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "b-prefix",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                          "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                         {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                          "backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    objects.push(mk_http_route(
        "app",
        "a-exact",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"matches": [{"path": {"type": "Exact", "value": "/api/x"}},
                                      {"path": {"type": "PathPrefix", "value": "/api"},
                                       "headers": [{"name": "X-Canary", "value": "1"}]}],
                          "backendRefs": [mk_backend("echo-v2", 80, 1)]}]}),
    ));
    let t = run(objects);
    let paths: Vec<(PathMatch, usize)> = table(&t, &port("app", "echo", 80), "app")
        .unwrap()
        .routes
        .iter()
        .map(|r| (r.matcher.path.clone(), r.matcher.headers.len()))
        .collect();
    assert_eq!(
        paths,
        vec![
            (PathMatch::Exact("/api/x".into()), 0),
            (PathMatch::Prefix("/api".into()), 1),
            (PathMatch::Prefix("/api".into()), 0),
            (PathMatch::Prefix("/".into()), 0),
        ]
    );
}

#[test]
fn grpc_routes_win_over_http_routes_on_the_same_parent() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "web",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    objects.push(mk_http_route(
        "app",
        "web-80",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
               "rules": [{"backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    objects.push(mk_grpc_route(
        "app",
        "rpc",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
               "rules": [{"backendRefs": [mk_backend("echo-v2", 80, 1)]}]}),
    ));
    let t = run(objects);
    let table80 = table(&t, &port("app", "echo", 80), "app").unwrap();
    assert_eq!(table80.protocol, Protocol::Grpc);
    assert_eq!(table80.routes.len(), 1);
    assert_eq!(
        conditions(status_of(&t, "web-80"))[0],
        cond("Accepted", "False", "Conflicted")
    );
    // `web` still serves port 8080, so it stays accepted, with the conflict in the message.
    let web = &status_of(&t, "web").parents[0].conditions[0];
    assert!(web.is_true());
    assert!(web.message.contains("GRPCRoute app/rpc"), "{}", web.message);
    assert_eq!(
        table(&t, &port("app", "echo", 8080), "app")
            .unwrap()
            .protocol,
        Protocol::Http
    );
}

#[test]
fn unresolvable_backends_keep_their_share_and_are_reported() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "broken",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"backendRefs": [
                   mk_backend("echo-v1", 80, 80),
                   mk_backend("missing", 80, 10),
                   {"group": "example.com", "kind": "Bucket", "name": "b", "port": 80, "weight": 10},
                   mk_backend("echo-v2", 80, 0)]}]}),
    ));
    let t = run(objects);
    let routes = table(&t, &port("app", "echo", 80), "app").unwrap();
    assert_eq!(
        backends(routes, 0),
        vec![
            (BackendTarget::Service(port("app", "echo-v1", 80)), 80),
            (BackendTarget::Unresolved, 10),
            (BackendTarget::Unresolved, 10),
        ]
    );
    let status = status_of(&t, "broken");
    assert_eq!(
        conditions(status),
        vec![
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "False", "BackendNotFound")
        ]
    );
    let message = &status.parents[0].conditions[1].message;
    assert!(
        message.contains("Service app/missing not found"),
        "{message}"
    );
    assert!(message.contains("Bucket"), "{message}");
}

#[test]
fn a_backend_appearing_later_resolves() {
    let route = mk_http_route(
        "app",
        "r",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"backendRefs": [mk_backend("late", 80, 1)]}]}),
    );
    let mut objects = base();
    objects.push(route.clone());
    let before = run(objects.clone());
    assert_eq!(
        backends(table(&before, &port("app", "echo", 80), "app").unwrap(), 0),
        vec![(BackendTarget::Unresolved, 1)]
    );
    objects.push(mk_service("app", "late", &[("http", 80)]));
    let after = run(objects.clone());
    assert_eq!(
        backends(table(&after, &port("app", "echo", 80), "app").unwrap(), 0),
        vec![(BackendTarget::Service(port("app", "late", 80)), 1)]
    );
    // The same objects in the opposite order give the same result.
    objects.reverse();
    assert_eq!(run(objects), after);
}

#[test]
fn cross_namespace_backends_need_a_grant_unless_they_are_the_parent() {
    let mut objects = base();
    objects.push(mk_http_route(
        "client",
        "to-parent",
        json!({"parentRefs": [mk_parent("app", "echo-v1")],
               "rules": [{"backendRefs": [{"name": "echo-v1", "namespace": "app", "port": 80}]}]}),
    ));
    objects.push(mk_http_route(
        "client",
        "to-other",
        json!({"parentRefs": [mk_parent("app", "echo-v1")],
               "rules": [{"backendRefs": [{"name": "echo-v2", "namespace": "app", "port": 80}]}]}),
    ));
    let t = run(objects);
    assert_eq!(
        conditions(status_of(&t, "to-parent"))[1],
        cond("ResolvedRefs", "True", "ResolvedRefs")
    );
    assert_eq!(
        conditions(status_of(&t, "to-other"))[1],
        cond("ResolvedRefs", "False", "RefNotPermitted")
    );
}

#[test]
fn no_usable_weight_answers_500() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "zero",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"backendRefs": [mk_backend("echo-v1", 80, 0)]}, {"matches": [{"path": {"type": "Exact", "value": "/none"}}]}]}),
    ));
    let t = run(objects);
    let routes = &table(&t, &port("app", "echo", 80), "app").unwrap().routes;
    assert!(
        routes
            .iter()
            .all(|r| r.action == Action::DirectResponse { status: 500 })
    );
}

#[test]
fn spec_violations_reject_the_route_with_a_message() {
    let cases = [
        (
            json!([{"matches": [{"path": {"type": "Exact", "value": "/a"}}],
                    "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]}]),
            "ReplacePrefixMatch needs exactly one match",
        ),
        (
            json!([{"matches": [{"path": {"type": "RegularExpression", "value": "/(a"}}]}]),
            "regular expression \"/(a\" is refused by Envoy: RE2 does not compile it: missing ): /(a",
        ),
        (
            json!([{"filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 302}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]}]),
            "cannot have backendRefs",
        ),
        (
            json!([{"matches": [{"path": {"value": "no-slash"}}]}]),
            "must start with /",
        ),
        (
            json!([{"timeouts": {"request": "1s", "backendRequest": "2s"}, "backendRefs": [mk_backend("echo-v1", 80, 1)]}]),
            "backendRequest must not be longer",
        ),
        (
            json!([{"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "a b", "value": "1"}]}}]}]),
            "is not a valid header name",
        ),
        (
            json!([{"backendRefs": [{"name": "echo-v1"}]}]),
            "must set a port",
        ),
    ];
    for (rules, expected) in cases {
        let mut objects = base();
        objects.push(mk_http_route(
            "app",
            "bad",
            json!({"parentRefs": [mk_parent("app", "echo")], "rules": rules}),
        ));
        let t = run(objects);
        let accepted = &status_of(&t, "bad").parents[0].conditions[0];
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", "UnsupportedValue")
        );
        assert!(
            accepted.message.contains(expected),
            "{expected:?} not in {:?}",
            accepted.message
        );
        assert_eq!(accepted.observed_generation, Some(3));
        assert!(
            t.model.routing.is_empty(),
            "a rejected route must not route"
        );
    }
}

/// The messages of every condition on `name`'s parents.
fn messages_of(t: &Translation, name: &str) -> Vec<String> {
    status_of(t, name)
        .parents
        .iter()
        .flat_map(|p| p.conditions.iter().map(|c| c.message.clone()))
        .collect()
}

#[test]
fn regexes_are_checked_with_re2_and_envoys_program_size_limit() {
    // `(?x)` compiles in Rust's regex, not in RE2; `/[a-z]{1,60}` compiles in both, but its RE2
    // program (124 instructions) is over Envoy's default limit of 100.
    let refusals = [
        (
            "(?x)/a b",
            "rule 0: regular expression \"(?x)/a b\" is refused by Envoy: RE2 does not compile it: invalid perl operator: (?x",
        ),
        (
            "/[a-z]{1,60}",
            "rule 0: regular expression \"/[a-z]{1,60}\" is refused by Envoy: RE2 program size 124 is over the limit of 100",
        ),
    ];
    for (regex, expected) in refusals {
        let matches = [
            json!({"path": {"type": "RegularExpression", "value": regex}}),
            json!({"headers": [{"type": "RegularExpression", "name": "x-a", "value": regex}]}),
            json!({"queryParams": [{"type": "RegularExpression", "name": "a", "value": regex}]}),
        ];
        for m in matches {
            let mut objects = base();
            objects.push(mk_http_route(
                "app",
                "bad",
                json!({"parentRefs": [mk_parent("app", "echo")],
                       "rules": [{"matches": [m], "backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
            ));
            let t = run(objects);
            let messages = messages_of(&t, "bad");
            assert!(
                messages.iter().any(|msg| msg.contains(expected)),
                "{expected:?} not in {messages:?}"
            );
        }
    }
    // RE2 reads `[a-z&&b]` as a class with `&`; it is accepted (and Rust's reading is not used).
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "amp",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"matches": [{"path": {"type": "RegularExpression", "value": "/[a-z&&b]"}}],
                          "backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    let t = run(objects);
    let routes = &table(&t, &port("app", "echo", 80), "app").unwrap().routes;
    assert!(
        routes
            .iter()
            .any(|r| r.matcher.path == PathMatch::Regex("/[a-z&&b]".into()))
    );
}

#[test]
fn grpc_regexes_are_checked_as_the_path_regex_they_become() {
    // Each part alone is within Envoy's limit; `/(?:svc)/(?:method)` is not.
    let part = "[a-z]{1,25}";
    assert_eq!(lanyard_re2::envoy_refusal(part), None);
    let mut objects = base();
    objects.push(mk_grpc_route(
        "app",
        "rpc",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 8080}],
               "rules": [{"matches": [{"method": {"type": "RegularExpression", "service": part, "method": part}}],
                          "backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    let t = run(objects);
    let expected = "rule 0: regular expression \"/(?:[a-z]{1,25})/(?:[a-z]{1,25})\" is refused by Envoy: RE2 program size 104 is over the limit of 100";
    let messages = messages_of(&t, "rpc");
    assert!(
        messages.iter().any(|msg| msg.contains(expected)),
        "{expected:?} not in {messages:?}"
    );
    // A part RE2 refuses is reported as itself.
    let mut objects = base();
    objects.push(mk_grpc_route(
        "app",
        "rpc",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 8080}],
               "rules": [{"matches": [{"method": {"type": "RegularExpression", "service": "(?R)"}}],
                          "backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    let messages = messages_of(&run(objects), "rpc");
    assert!(
        messages
            .iter()
            .any(|msg| msg.contains("regular expression \"(?R)\" is refused by Envoy")),
        "{messages:?}"
    );
}

#[test]
fn grpc_method_matches_become_paths() {
    let mut objects = base();
    objects.push(mk_grpc_route(
        "app",
        "rpc",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 8080}],
               "rules": [
                 {"matches": [{"method": {"service": "pkg.Echo", "method": "Say"}}], "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                 {"matches": [{"method": {"service": "pkg.Echo"}}], "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                 {"matches": [{"method": {"method": "Ping"}}], "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                 {"matches": [{"method": {"type": "RegularExpression", "service": "pkg\\..*"}}], "backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    let t = run(objects);
    let paths: Vec<PathMatch> = table(&t, &port("app", "echo", 8080), "app")
        .unwrap()
        .routes
        .iter()
        .map(|r| r.matcher.path.clone())
        .collect();
    assert_eq!(
        paths,
        vec![
            PathMatch::Exact("/pkg.Echo/Say".into()),
            PathMatch::Prefix("/pkg.Echo/".into()),
            PathMatch::Regex("/(?:pkg\\..*)/(?:[^/]+)".into()),
            PathMatch::Regex("/[^/]+/Ping".into()),
        ]
    );
}

#[test]
fn filters_timeouts_and_retries_are_lowered() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "full",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{
                 "filters": [
                   {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "X-A", "value": "1"}], "add": [{"name": "X-B", "value": "2"}], "remove": ["X-C"]}},
                   {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [{"name": "X-R", "value": "r"}]}},
                   {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "echo-v2", "port": 80}, "fraction": {"numerator": 1, "denominator": 4}}},
                   {"type": "CORS", "cors": {"allowOrigins": ["https://*.example.com"], "allowMethods": ["GET"]}},
                   {"type": "URLRewrite", "urlRewrite": {"hostname": "internal"}}],
                 "backendRefs": [{"name": "echo-v1", "port": 80, "filters": [
                   {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "X-Backend", "value": "v1"}]}}]}],
                 "timeouts": {"request": "10s", "backendRequest": "2s"},
                 "retry": {"codes": [503], "attempts": 3, "backoff": "100ms"}}]}),
    ));
    let t = run(objects);
    let route = &table(&t, &port("app", "echo", 80), "app").unwrap().routes[0];
    let rendered = serde_json::to_value(route).unwrap();
    assert_eq!(
        rendered["request_headers"],
        json!({"set": [["X-A", "1"]], "add": [["X-B", "2"]], "remove": ["X-C"]})
    );
    assert_eq!(rendered["response_headers"], json!({"set": [["X-R", "r"]]}));
    assert_eq!(rendered["mirrors"][0]["percent"], json!(25.0));
    assert_eq!(
        rendered["cors"]["allow_origins"],
        json!(["https://*.example.com"])
    );
    assert_eq!(rendered["cors"]["max_age_seconds"], json!(5));
    assert_eq!(
        rendered["action"]["forward"]["rewrite"],
        json!({"hostname": "internal"})
    );
    assert_eq!(
        rendered["action"]["forward"]["backends"][0]["response_headers"],
        json!({"add": [["X-Backend", "v1"]]})
    );
    assert_eq!(
        rendered["timeouts"],
        json!({"request": "10000ms", "backend_request": "2000ms"})
    );
    assert_eq!(
        rendered["retry"],
        json!({"codes": [503], "attempts": 3, "backoff": "100ms"})
    );
}

#[test]
fn endpoints_follow_slices_by_port_name_with_readiness_and_zone() {
    let objects = vec![
        mk_service("app", "echo", &[("http", 80), ("grpc", 7070)]),
        mk_object(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "echo-abc", "namespace": "app", "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 7070}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "zone": "z1", "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "echo-1", "namespace": "app"}},
                {"addresses": ["10.0.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}}]
        })),
    ];
    let t = run(objects);
    let service = &t.model.services[&ServiceKey::new("app", "echo")];
    assert_eq!(
        service.cluster_ips,
        vec!["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    let http = &service.ports[0];
    assert_eq!(
        (http.port, http.protocol, http.endpoints.len()),
        (80, Protocol::Http, 2)
    );
    assert_eq!(http.endpoints[0].address.to_string(), "10.0.0.1");
    assert!(!http.endpoints[0].ready && http.endpoints[0].serving && http.endpoints[0].terminating);
    assert_eq!(http.endpoints[1].port, 8080);
    assert_eq!(http.endpoints[1].zone.as_deref(), Some("z1"));
    assert_eq!(
        http.endpoints[1].workload.as_ref().map(|w| w.to_string()),
        Some("app/echo-1".into())
    );
    assert_eq!(service.ports[1].protocol, Protocol::Grpc);
    assert_eq!(service.ports[1].endpoints[0].port, 7070);
}

#[test]
fn workloads_serve_the_target_ports_of_services_that_select_them() {
    let objects = vec![
        mk_object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "app"},
            "spec": {"clusterIP": "10.96.0.30", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "web"}, {"name": "tcp-db", "port": 5432}]}})),
        mk_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "app", "labels": {"app": "web", "pod-template-hash": "x"}},
            "spec": {"serviceAccountName": "web-sa", "containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 3000}]}]},
            "status": {"podIP": "10.0.0.9"}})),
        mk_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "other", "namespace": "app", "labels": {"app": "other"}},
            "spec": {"containers": [{"name": "c"}]}})),
    ];
    let t = run(objects);
    let web = &t.model.workloads[&lanyard_model::WorkloadKey::new("app", "web-1")];
    assert_eq!(web.service_account, "web-sa");
    assert_eq!(web.ips[0].to_string(), "10.0.0.9");
    let inbound: Vec<(u16, Protocol)> = web.inbound.iter().map(|p| (p.port, p.protocol)).collect();
    assert_eq!(inbound, vec![(3000, Protocol::Http), (5432, Protocol::Tcp)]);
    let other = &t.model.workloads[&lanyard_model::WorkloadKey::new("app", "other")];
    assert!(other.inbound.is_empty());
    assert_eq!(other.service_account, "default");
}

/// `(type, status, reason, message)` of every condition of the first parent.
fn full_conditions(status: &RouteStatus) -> Vec<(String, String, String, String)> {
    status.parents[0]
        .conditions
        .iter()
        .map(|c| {
            (
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            )
        })
        .collect()
}

fn rule_ref(kind: Kind, ns: &str, name: &str, rule: usize) -> RuleRef {
    RuleRef {
        route: ObjectRef {
            kind,
            key: ObjectKey::new(ns, name),
        },
        rule,
    }
}

#[test]
fn an_invalid_rule_is_dropped_and_the_others_still_route() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "mixed",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [
                   {"matches": [{"path": {"type": "PathPrefix", "value": "/ok"}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                   {"name": "bad",
                    "matches": [{"path": {"type": "RegularExpression", "value": "/(a"}}],
                    "backendRefs": [mk_backend("echo-v2", 80, 1)]},
                   {"matches": [{"path": {"value": "no-slash"}}],
                    "backendRefs": [mk_backend("echo-v2", 80, 1)]}]}),
    ));
    let t = run(objects);
    let table80 = table(&t, &port("app", "echo", 80), "app").unwrap();
    assert_eq!(table80.routes.len(), 1);
    assert_eq!(
        table80.routes[0].matcher.path,
        PathMatch::Prefix("/ok".into())
    );
    let conditions = full_conditions(status_of(&t, "mixed"));
    assert_eq!(conditions.len(), 3, "{conditions:?}");
    assert_eq!(
        conditions[0],
        (
            "Accepted".into(),
            "True".into(),
            "Accepted".into(),
            "Route is accepted".into()
        )
    );
    let (type_, status, reason, message) = &conditions[2];
    assert_eq!(
        (type_.as_str(), status.as_str(), reason.as_str()),
        ("PartiallyInvalid", "True", "UnsupportedValue")
    );
    assert!(
        message.starts_with("Dropped Rule(s) 1 (bad): regular expression \"/(a\" is refused by Envoy: RE2 does not compile it: missing )"),
        "{message}"
    );
    assert!(
        message.contains("; 2: path \"no-slash\" must start with /"),
        "{message}"
    );
}

#[test]
fn a_route_whose_every_rule_is_invalid_is_not_accepted_and_not_partially_invalid() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "all-bad",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [
                   {"matches": [{"path": {"type": "RegularExpression", "value": "/(a"}}]},
                   {"matches": [{"path": {"type": "RegularExpression", "value": "/(b"}}]}]}),
    ));
    let t = run(objects);
    let conditions = conditions(status_of(&t, "all-bad"));
    assert_eq!(conditions[0], cond("Accepted", "False", "UnsupportedValue"));
    assert_eq!(conditions.len(), 2, "{conditions:?}");
    assert!(t.model.routing.is_empty());
}

#[test]
fn rules_a_receiver_rejected_are_dropped_with_the_reason_given() {
    let mut objects = base();
    objects.push(mk_grpc_route(
        "app",
        "rpc",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [
                   {"matches": [{"method": {"service": "a.A"}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                   {"name": "b", "matches": [{"method": {"service": "b.B"}}],
                    "backendRefs": [mk_backend("echo-v2", 80, 1)]}]}),
    ));
    let rejected = |rules: &[usize]| Options {
        rejected_rules: rules
            .iter()
            .map(|&r| {
                (
                    rule_ref(Kind::GrpcRoute, "app", "rpc", r),
                    "gRPC refuses it".to_string(),
                )
            })
            // A rule the route does not have is ignored.
            .chain([(
                rule_ref(Kind::GrpcRoute, "app", "rpc", 9),
                "no such rule".to_string(),
            )])
            .collect(),
        ..Options::default()
    };
    let store = mk_objects(objects);

    let t = translate(&store, &rejected(&[1]));
    let table80 = table(&t, &port("app", "echo", 80), "app").unwrap();
    assert_eq!(table80.routes.len(), 1);
    assert_eq!(
        table80.routes[0].matcher.path,
        PathMatch::Prefix("/a.A/".into())
    );
    let conditions = full_conditions(status_of(&t, "rpc"));
    assert_eq!(conditions[0].1, "True");
    assert_eq!(conditions[2].3, "Dropped Rule(s) 1 (b): gRPC refuses it");

    let t = translate(&store, &rejected(&[0, 1]));
    let conditions = full_conditions(status_of(&t, "rpc"));
    assert_eq!(
        (conditions[0].1.as_str(), conditions[0].2.as_str()),
        ("False", "UnsupportedValue")
    );
    assert_eq!(
        conditions[0].3,
        "rule 0: gRPC refuses it; rule 1 (b): gRPC refuses it"
    );
    assert!(t.model.routing.is_empty());
}

#[test]
fn provenance_names_the_rule_of_every_route_of_every_table() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "first",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [
                   {"matches": [{"path": {"type": "PathPrefix", "value": "/short"}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                   {"matches": [{"path": {"type": "Exact", "value": "/x"}},
                                {"path": {"type": "PathPrefix", "value": "/a/long/prefix"}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    objects.push(mk_http_route(
        "app",
        "second",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
               "rules": [
                   {"matches": [{"path": {"type": "PathPrefix", "value": "/medium"}}],
                    "backendRefs": [mk_backend("echo-v2", 80, 1)]}]}),
    ));
    objects.push(mk_http_route(
        "client",
        "consumer",
        json!({"parentRefs": [mk_parent("app", "echo")],
               "rules": [{"backendRefs": [{"name": "echo", "namespace": "app", "port": 80}]}]}),
    ));
    let t = run(objects);
    for (key, routing) in &t.model.routing {
        let origin = &t.provenance[key];
        assert_eq!(
            routing.producer.as_ref().map_or(0, |p| p.routes.len()),
            origin.producer.len(),
            "{key}"
        );
        assert_eq!(
            routing.consumers.keys().collect::<Vec<_>>(),
            origin.consumers.keys().collect::<Vec<_>>()
        );
        for (ns, consumer) in &routing.consumers {
            assert_eq!(consumer.routes.len(), origin.consumers[ns].len(), "{key}");
        }
    }
    let key80 = port("app", "echo", 80);
    let producer = t.model.routing[&key80].producer.as_ref().unwrap();
    let paths: Vec<&PathMatch> = producer.routes.iter().map(|r| &r.matcher.path).collect();
    assert_eq!(
        paths,
        [
            &PathMatch::Exact("/x".into()),
            &PathMatch::Prefix("/a/long/prefix".into()),
            &PathMatch::Prefix("/medium".into()),
            &PathMatch::Prefix("/short".into()),
        ]
    );
    let first = |rule| rule_ref(Kind::HttpRoute, "app", "first", rule);
    assert_eq!(
        t.provenance[&key80].producer,
        [
            first(1),
            first(1),
            rule_ref(Kind::HttpRoute, "app", "second", 0),
            first(0)
        ]
    );
    assert_eq!(
        t.provenance[&key80].consumers[&NamespaceName::new("client")],
        [rule_ref(Kind::HttpRoute, "client", "consumer", 0)]
    );
    assert_eq!(
        t.provenance[&port("app", "echo", 8080)].producer,
        [first(1), first(1), first(0)]
    );
}

#[test]
fn valid_edge_cases_of_the_spec_are_accepted() {
    let mut objects = base();
    objects.push(mk_http_route(
        "app",
        "edges",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
               "rules": [
                   {"matches": [{"path": {"type": "PathPrefix", "value": "/strip"}}],
                    "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": ""}}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                   {"matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}],
                    "timeouts": {"request": "10s", "backendRequest": "0s"},
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                   {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                        "set": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}],
                        "add": [{"name": "X-B", "value": "3"}, {"name": "x-b", "value": "4"}],
                        "remove": ["X-C", "x-c", "x-a"]}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    let t = run(objects);
    let conditions = full_conditions(status_of(&t, "edges"));
    assert_eq!(conditions.len(), 2, "{conditions:?}");
    assert_eq!(conditions[0].1, "True", "{conditions:?}");
    let routes = &table(&t, &port("app", "echo", 80), "app").unwrap().routes;
    assert_eq!(routes.len(), 3);
    let Action::Forward(forward) = &routes[0].action else {
        panic!("not a forward: {:?}", routes[0].action)
    };
    assert_eq!(
        forward.rewrite.as_ref().and_then(|r| r.path.clone()),
        Some(PathRewrite::Prefix(String::new()))
    );
    assert_eq!(
        routes[1].timeouts.backend_request,
        Some(std::time::Duration::ZERO)
    );
    // The first of equivalent names wins in each list.
    let headers = &routes[2].request_headers;
    assert_eq!(headers.set, [("X-A".to_string(), "1".to_string())]);
    assert_eq!(headers.add, [("X-B".to_string(), "3".to_string())]);
    assert_eq!(headers.remove, ["X-C", "x-a"]);
}

#[test]
fn grpc_routes_answer_unavailable_and_reach_their_backends_over_http2() {
    let mut objects = base();
    objects.push(mk_service(
        "app",
        "rpc-backends",
        &[("", 7000), ("http-legacy", 7001), ("tcp-raw", 7002)],
    ));
    objects.push(mk_grpc_route(
        "app",
        "rpc",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
               "rules": [
                   {"matches": [{"method": {"service": "a.A"}}],
                    "backendRefs": [mk_backend("rpc-backends", 7000, 1)]},
                   {"matches": [{"method": {"service": "b.B"}}],
                    "backendRefs": [mk_backend("rpc-backends", 7001, 1), mk_backend("rpc-backends", 7002, 1)]},
                   {"matches": [{"method": {"service": "c.C"}}]}]}),
    ));
    let t = run(objects);
    let rpc = table(&t, &port("app", "echo", 80), "app").unwrap();
    let routes = &rpc.routes;
    // A port that declares nothing is served as gRPC (HTTP/2) because a GRPCRoute sends to it.
    let backend_port = |p: u16| {
        t.model.services[&ServiceKey::new("app", "rpc-backends")]
            .ports
            .iter()
            .find(|x| x.port == p)
            .unwrap()
            .protocol
    };
    assert_eq!(backend_port(7000), Protocol::Grpc);
    assert_eq!(backend_port(7001), Protocol::Http);
    assert_eq!(backend_port(7002), Protocol::Tcp);
    assert_eq!(
        backends(rpc, 0),
        [(BackendTarget::Service(port("app", "rpc-backends", 7000)), 1)]
    );
    // Ports that declare HTTP/1.1 or TCP cannot carry gRPC: their shares are invalid.
    assert_eq!(
        backends(rpc, 1),
        [
            (BackendTarget::Unresolved, 1),
            (BackendTarget::Unresolved, 1)
        ]
    );
    let resolved = &status_of(&t, "rpc").parents[0].conditions[1];
    assert_eq!(
        (resolved.status.as_str(), resolved.reason.as_str()),
        ("False", "UnsupportedProtocol")
    );
    assert!(
        resolved.message.contains("HTTP/1.1"),
        "{}",
        resolved.message
    );
    // No backend: UNAVAILABLE for gRPC clients, which Envoy derives from 503.
    assert_eq!(routes[2].action, Action::DirectResponse { status: 503 });
}

#[test]
fn host_header_modifiers_become_host_rewrites() {
    let mut objects = base();
    let set_host = |host: &str| {
        json!([{"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "Host", "value": host}, {"name": "x-a", "value": "1"}]}}])
    };
    objects.push(mk_http_route(
        "app",
        "hosts",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
               "rules": [
                   {"matches": [{"path": {"value": "/rule"}}],
                    "filters": set_host("rule.example"),
                    "backendRefs": [{"name": "echo-v1", "port": 80, "filters": set_host("backend.example")}]},
                   {"matches": [{"path": {"value": "/both"}}],
                    "filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "rewrite.example"}},
                                {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                                    "add": [{"name": "host", "value": "header.example"}]}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                   {"name": "no-host",
                    "matches": [{"path": {"value": "/remove"}}],
                    "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["HOST"]}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]},
                   {"matches": [{"path": {"value": "/response"}}],
                    "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                        "set": [{"name": "Host", "value": "x"}]}}],
                    "backendRefs": [mk_backend("echo-v1", 80, 1)]}]}),
    ));
    let t = run(objects);
    let routes = &table(&t, &port("app", "echo", 80), "app").unwrap().routes;
    assert_eq!(routes.len(), 2, "the rule removing Host is dropped");
    let forward = |i: usize| match &routes[i].action {
        Action::Forward(f) => f.clone(),
        other => panic!("not a forward: {other:?}"),
    };
    let hostname = |i: usize| forward(i).rewrite.and_then(|r| r.hostname);
    // Sorted by path length: /remove is gone, /rule before /both.
    assert_eq!(routes[0].matcher.path, PathMatch::Prefix("/rule".into()));
    assert_eq!(hostname(0).as_deref(), Some("rule.example"));
    assert_eq!(
        routes[0].request_headers.set,
        [("x-a".to_string(), "1".to_string())]
    );
    let backend = &forward(0).backends[0];
    assert_eq!(backend.host_rewrite.as_deref(), Some("backend.example"));
    assert_eq!(
        backend.request_headers.set,
        [("x-a".to_string(), "1".to_string())]
    );
    // A URLRewrite hostname wins over a Host header modifier.
    assert_eq!(hostname(1).as_deref(), Some("rewrite.example"));
    assert!(routes[1].request_headers.is_empty());
    let conditions = full_conditions(status_of(&t, "hosts"));
    assert!(
        conditions[2]
            .3
            .starts_with("Dropped Rule(s) 2 (no-host): a RequestHeaderModifier cannot remove Host"),
        "{conditions:?}"
    );
    assert!(
        conditions[2]
            .3
            .contains("; 3: a ResponseHeaderModifier cannot change Host"),
        "{conditions:?}"
    );
}
