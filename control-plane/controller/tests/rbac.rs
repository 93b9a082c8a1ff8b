//! The RBAC the controller needs is written down once, in
//! `charts/lanyard/files/controller-rbac.yaml`: run `lanyard-controller --kubeconfig` against
//! the loopback API server through watches, route status writes, Events and the Lease, and
//! check that every request it made is allowed by those rules and that every rule is used.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lanyard_test_apiserver::{ApiServer, Config, Running};
use serde_yaml::Value;

mod cluster;
mod process;

use cluster::*;

/// Allowed by the rules but not exercised here: kube-runtime 4.2's `Recorder::publish`
/// patches an Event it already created when the same one is published again (a series).
const NOT_EXERCISED: &[(&str, &str, &str)] = &[("events.k8s.io", "events", "patch")];

/// (API group, resource or resource/subresource, verb) of each API request in the log after
/// the first `skip`; discovery and other non-resource requests are left out.
fn resource_requests(server: &Running, skip: usize) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in server.requests().into_iter().skip(skip) {
        let segments: Vec<&str> = r.path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => continue,
        };
        let rest = match rest {
            ["namespaces", _ns, resource, more @ ..] => {
                let mut v = vec![*resource];
                v.extend(more);
                v
            }
            other => other.to_vec(),
        };
        let resource = match rest.as_slice() {
            [] => continue, // discovery of a group version
            [resource] | [resource, _] => resource.to_string(),
            [resource, _, sub, ..] => format!("{resource}/{sub}"),
        };
        out.insert((group.to_string(), resource, r.verb.clone()));
    }
    out
}

/// Every (group, resource, verb) the rules allow.
fn allowed() -> BTreeSet<(String, String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../charts/lanyard/files/controller-rbac.yaml");
    let rules: Vec<Value> = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let strings = |rule: &Value, field: &str| -> Vec<String> {
        rule[field]
            .as_sequence()
            .unwrap_or_else(|| panic!("a rule without {field}: {rule:?}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let mut out = BTreeSet::new();
    for rule in &rules {
        for group in strings(rule, "apiGroups") {
            for resource in strings(rule, "resources") {
                for verb in strings(rule, "verbs") {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "no wildcards: {rule:?}"
                    );
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

fn mk_greeter() -> [String; 2] {
    [
        "apiVersion: v1\nkind: Service\nmetadata: {name: greeter, namespace: shop}\nspec: {ports: [{name: grpc, port: 50051}]}\n".to_string(),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: greeter, namespace: shop}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: greeter, port: 50051}]\n  rules: [{backendRefs: [{name: greeter, port: 50051}]}]\n".to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_is_allowed_by_the_chart_rbac_and_every_rule_is_used() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let kubeconfig = server.kubeconfig_path.clone();
    let [greeter, greeter_route] = mk_greeter();
    kubectl_apply(
        &kubeconfig,
        &[
            mk_shop(),
            mk_service("cart"),
            mk_service("cart-v1"),
            mk_service("cart-v2"),
            mk_route("cart-v2"),
            greeter,
            greeter_route,
            "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: cart-canary, namespace: shop}\nspec:\n  service: cart\n  backends:\n  - {service: cart-v1, weight: 90}\n  - {service: cart-v2, weight: 10}\n".to_string(),
        ],
    )
    .await;
    // Only what the controller does from here on counts.
    let before = server.requests().len();
    let controller = start(&kubeconfig);
    wait_ready(controller.debug).await;

    // Status of both route kinds, an Event, and the Lease renewed at least once.
    let allowed = allowed();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut used;
    loop {
        used = resource_requests(&server, before);
        let wanted = [
            ("gateway.networking.k8s.io", "httproutes/status", "patch"),
            ("gateway.networking.k8s.io", "grpcroutes/status", "patch"),
            ("events.k8s.io", "events", "create"),
            ("coordination.k8s.io", "leases", "update"),
        ];
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(g, r, v)| !used.contains(&(g.to_string(), r.to_string(), v.to_string())))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never made {missing:?}: {used:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let refused: Vec<_> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "requests the rules do not allow: {refused:?}"
    );
    let unused: Vec<_> = allowed
        .difference(&used)
        .filter(|(g, r, v)| !NOT_EXERCISED.contains(&(g.as_str(), r.as_str(), v.as_str())))
        .collect();
    assert!(unused.is_empty(), "rules never used: {unused:?}");
}
