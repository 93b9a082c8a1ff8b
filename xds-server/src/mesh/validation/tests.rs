//! Tests of validation before publishing on translated meshes.

use lanyard_model::{Model, NamespaceName, PathMatch, Protocol, RoutingVariant};

use super::*;
use crate::fixtures::{forward_to, mk_model, mk_route, mk_service, mk_table, set_producer, spk};
use crate::mesh::{ProxyRef, XdsOptions, translate};

/// A Service `a/web` with an HTTP port 80 whose producer table has these paths.
fn model_with(paths: Vec<PathMatch>) -> Model {
    let mut model = mk_model(
        vec![mk_service(
            "a",
            "web",
            &["10.0.0.1"],
            &[(80, Protocol::Http)],
        )],
        vec![],
    );
    let target = forward_to(&[(spk("a", "web", 80), 1)]);
    let routes = paths
        .into_iter()
        .map(|p| mk_route(p, target.clone()))
        .collect();
    set_producer(&mut model, spk("a", "web", 80), mk_table(routes));
    model
}

fn routes_of(mesh: &MeshResources, kind: ProxyKind) -> Arc<RouteConfiguration> {
    let mut proxy = ProxyRef::envoy(NamespaceName::new("a"), None);
    proxy.kind = kind;
    let name = "web.a.svc.cluster.local:80";
    mesh.for_proxy(&proxy)
        .routes
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

// RE2 refuses counted repetitions over 1000; so do Envoy and gRPC.
const REFUSED: &str = "/a{1001}";

#[test]
fn a_valid_mesh_has_no_findings() {
    let model = model_with(vec![
        PathMatch::Prefix("/api".into()),
        PathMatch::Regex("/v[0-9]+".into()),
    ]);
    let mesh = translate(&model, &XdsOptions::default());
    assert_eq!(mesh.check(), []);
    let mesh = translate(&crate::fixtures::rich_model(), &XdsOptions::default());
    assert_eq!(mesh.check(), []);
}

#[test]
fn a_refused_route_is_found_for_both_receivers_and_traced_to_its_table_route() {
    // The prefix becomes two routes in the gRPC form: the refused regex is route 2 there and
    // route 1 in the Envoy form, and table route 1 in both.
    let model = model_with(vec![
        PathMatch::Prefix("/api".into()),
        PathMatch::Regex(REFUSED.into()),
    ]);
    let mesh = translate(&model, &XdsOptions::default());
    let findings = mesh.check();
    let receivers: Vec<_> = findings.iter().map(|f| f.receiver).collect();
    assert_eq!(
        receivers,
        [ProxyKind::Envoy, ProxyKind::Grpc],
        "{findings:#?}"
    );
    for f in &findings {
        assert_eq!(f.type_, ResourceType::Route);
        assert_eq!(f.name, "web.a.svc.cluster.local:80");
        assert!(f.is_in_routes_only(), "{f:#?}");
        let table = f.table.as_ref().unwrap();
        assert_eq!(table.port, spk("a", "web", 80));
        assert_eq!(table.variant, RoutingVariant::Producer);
        assert_eq!(table.routes.keys().copied().collect::<Vec<_>>(), [1]);
        let v = &table.routes[&1][0];
        assert!(v.path.starts_with("match.safe_regex"), "{v}");
    }
    let grpc = &findings[1].violations[0];
    assert!(
        grpc.path.starts_with("virtual_hosts[0].routes[2]."),
        "{grpc}"
    );
}

#[test]
fn a_withheld_route_configuration_keeps_the_previous_version() {
    let good = translate(
        &model_with(vec![PathMatch::Prefix("/api".into())]),
        &XdsOptions::default(),
    );
    let mut bad = translate(
        &model_with(vec![PathMatch::Regex(REFUSED.into())]),
        &XdsOptions::default(),
    );
    let findings = bad.check();
    assert_eq!(findings.len(), 2);
    bad.withhold(findings, Some(&good));
    for kind in [ProxyKind::Envoy, ProxyKind::Grpc] {
        assert!(Arc::ptr_eq(&routes_of(&bad, kind), &routes_of(&good, kind)));
    }
    let kept: Vec<_> = bad.withheld().iter().map(|w| w.kept).collect();
    assert_eq!(kept, [Kept::Previous, Kept::Previous]);
    assert_eq!(bad.check(), []);
}

#[test]
fn with_no_previous_version_a_refused_route_configuration_becomes_pass_through() {
    let mut bad = translate(
        &model_with(vec![PathMatch::Regex(REFUSED.into())]),
        &XdsOptions::default(),
    );
    let findings = bad.check();
    bad.withhold(findings, None);
    let expected = routes::single_cluster(
        "web.a.svc.cluster.local:80",
        "outbound|80||web.a.svc.cluster.local",
    );
    for kind in [ProxyKind::Envoy, ProxyKind::Grpc] {
        assert_eq!(*routes_of(&bad, kind), expected);
    }
    assert_eq!(bad.withheld()[0].kept, Kept::PassThrough);
    assert_eq!(bad.check(), []);
}

#[test]
fn a_withheld_cluster_keeps_the_previous_version_or_is_left_out() {
    let model = model_with(vec![PathMatch::Prefix("/".into())]);
    let previous = translate(&model, &XdsOptions::default());
    let name = "outbound|80||web.a.svc.cluster.local";
    let finding = Finding {
        type_: ResourceType::Cluster,
        name: name.into(),
        receiver: ProxyKind::Grpc,
        table: None,
        violations: vec![Violation::new("", "refused")],
    };
    let proxy = ProxyRef::envoy(NamespaceName::new("a"), None);
    let find = |mesh: &MeshResources| {
        mesh.for_proxy(&proxy)
            .clusters
            .into_iter()
            .find(|c| c.name == name)
    };

    let mut mesh = translate(&model, &XdsOptions::default());
    mesh.withhold(vec![finding.clone()], Some(&previous));
    assert!(Arc::ptr_eq(
        &find(&mesh).unwrap(),
        &find(&previous).unwrap()
    ));
    assert_eq!(mesh.withheld()[0].kept, Kept::Previous);

    let mut mesh = translate(&model, &XdsOptions::default());
    mesh.withhold(vec![finding], None);
    assert_eq!(find(&mesh), None);
    assert_eq!(mesh.withheld()[0].kept, Kept::Nothing);
}

#[test]
fn a_withheld_api_listener_is_not_served() {
    let model = model_with(vec![PathMatch::Prefix("/".into())]);
    let mut mesh = translate(&model, &XdsOptions::default());
    let ns = NamespaceName::new("a");
    assert!(mesh.api_listener("web.a:80", &ns).is_some());
    mesh.withhold(
        vec![Finding {
            type_: ResourceType::Listener,
            name: "web.a.svc.cluster.local:80".into(),
            receiver: ProxyKind::Grpc,
            table: None,
            violations: vec![Violation::new("", "refused")],
        }],
        None,
    );
    assert_eq!(mesh.api_listener("web.a:80", &ns), None);
}

#[test]
fn checking_since_a_previous_mesh_skips_what_did_not_change() {
    let good = translate(
        &model_with(vec![PathMatch::Prefix("/api".into())]),
        &XdsOptions::default(),
    );
    // The same mesh again: nothing to check, so nothing found even where a full check
    // would find something (here nothing).
    assert_eq!(good.check_since(Some(&good)), []);
    // A changed route configuration is checked; the rest is skipped.
    let bad = translate(
        &model_with(vec![PathMatch::Regex(REFUSED.into())]),
        &XdsOptions::default(),
    );
    assert_eq!(bad.check_since(Some(&good)), bad.check());
    // A resource equal to the previous one is trusted: the previous mesh passed.
    assert_eq!(bad.check_since(Some(&bad)), []);
}
