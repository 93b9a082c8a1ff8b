//! The fixture against the real `kube::Client`: merge, JSON and strategic merge patches,
//! server-side apply with managed fields, the status subresource and generation rules.

mod support;

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use lanyard_test_apiserver::{Config, RouteParents};
use serde_json::{Value, json};
use support::{client, code, httproute, httproute_resource, raw, start, start_with};

fn service(name: &str, app: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap()
}

fn rv(obj: &impl kube::Resource) -> u64 {
    obj.meta()
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn merge_and_json_patches_record_their_field_manager() {
    let server = start().await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client(&server).await, "default", &httproute_resource());
    api.create(
        &PostParams::default(),
        &httproute("r", json!({"hostnames": ["a.example"], "rules": []})),
    )
    .await
    .unwrap();

    let merge = Patch::Merge(
        json!({"metadata": {"labels": {"team": "x"}}, "spec": {"hostnames": ["b.example"]}}),
    );
    let patched = api
        .patch(
            "r",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..PatchParams::default()
            },
            &merge,
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["hostnames"], json!(["b.example"]));
    assert_eq!(patched.metadata.generation, Some(2));
    let managers = patched.metadata.managed_fields.unwrap();
    let editor = managers
        .iter()
        .find(|m| m.manager.as_deref() == Some("editor"))
        .expect("editor recorded");
    assert_eq!(editor.operation.as_deref(), Some("Update"));
    let fields = &editor.fields_v1.as_ref().unwrap().0;
    assert!(fields["f:spec"].get("f:hostnames").is_some(), "{fields}");
    assert!(
        fields["f:metadata"]["f:labels"].get("f:team").is_some(),
        "{fields}"
    );

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/hostnames/0", "value": "b.example"},
        {"op": "add", "path": "/spec/hostnames/-", "value": "c.example"},
    ]))
    .unwrap();
    let patched = api
        .patch("r", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(
        patched.data["spec"]["hostnames"],
        json!(["b.example", "c.example"])
    );

    let failing: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/spec/hostnames/0", "value": "zzz"}]),
    )
    .unwrap();
    assert_eq!(
        code(
            api.patch("r", &PatchParams::default(), &Patch::Json::<()>(failing))
                .await
                .unwrap_err()
        ),
        422
    );
    let strategic = Patch::Strategic(json!({"spec": {}}));
    assert_eq!(
        code(
            api.patch("r", &PatchParams::default(), &strategic)
                .await
                .unwrap_err()
        ),
        415
    );
    let (status, _) = raw(
        &server,
        "PATCH",
        "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/r",
        "text/plain",
        "{}",
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(
        code(
            api.patch("nope", &PatchParams::default(), &merge)
                .await
                .unwrap_err()
        ),
        404
    );
}

#[tokio::test]
async fn strategic_merge_patch_merges_service_ports_by_port() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let mut svc = service("web", "web");
    svc.spec
        .as_mut()
        .unwrap()
        .ports
        .as_mut()
        .unwrap()
        .push(serde_json::from_value(json!({"name": "grpc", "port": 81})).unwrap());
    api.create(&PostParams::default(), &svc).await.unwrap();
    let patch = Patch::Strategic(json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}));
    let patched = api
        .patch("web", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let ports = serde_json::to_value(patched.spec.unwrap().ports.unwrap()).unwrap();
    assert_eq!(
        ports[0],
        json!({"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080})
    );
    assert_eq!(ports[1]["name"], "grpc");
}

#[tokio::test]
async fn server_side_apply_records_managers_and_reports_conflicts() {
    let server = start().await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client(&server).await, "default", &httproute_resource());
    let config = |hosts: Value| {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": "r", "labels": {"owner": "alice"}}, "spec": {"hostnames": hosts}})
    };
    let created = api
        .patch(
            "r",
            &PatchParams::apply("alice"),
            &Patch::Apply(config(json!(["a"]))),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let alice = created
        .metadata
        .managed_fields
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.manager.as_deref() == Some("alice"))
        .cloned()
        .unwrap();
    assert_eq!(alice.operation.as_deref(), Some("Apply"));

    let bob = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                     "metadata": {"name": "r"}, "spec": {"hostnames": ["b"]}});
    let err = api
        .patch("r", &PatchParams::apply("bob"), &Patch::Apply(bob.clone()))
        .await
        .unwrap_err();
    assert_eq!(code(err), 409);
    let forced = api
        .patch("r", &PatchParams::apply("bob").force(), &Patch::Apply(bob))
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["hostnames"], json!(["b"]));
    assert_eq!(forced.metadata.generation, Some(2));

    // Alice stops applying her label: it goes; bob's hostnames stay.
    let without_label = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"}, "spec": {}});
    let after = api
        .patch(
            "r",
            &PatchParams::apply("alice"),
            &Patch::Apply(without_label),
        )
        .await
        .unwrap();
    assert!(
        after
            .metadata
            .labels
            .as_ref()
            .is_none_or(|l| !l.contains_key("owner")),
        "{:?}",
        after.metadata.labels
    );
    assert_eq!(after.data["spec"]["hostnames"], json!(["b"]));

    let (status, body) = raw(
        &server,
        "PATCH",
        "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/r",
        "application/apply-patch+yaml",
        "{}",
    )
    .await;
    assert_eq!(status, 422, "apply without fieldManager: {body}");
}

fn parent(controller: &str) -> Value {
    json!({"parentRef": {"group": "", "kind": "Service", "name": "web"}, "controllerName": controller,
           "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                           "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1}]})
}

fn status_apply(parents: Value) -> Patch<Value> {
    Patch::Apply(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                        "metadata": {"name": "r"}, "status": {"parents": parents}}),
    )
}

#[tokio::test]
async fn route_parents_are_atomic_under_apply_as_the_crd_declares() {
    let server = start().await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client(&server).await, "default", &httproute_resource());
    api.create(
        &PostParams::default(),
        &httproute("r", json!({"rules": []})),
    )
    .await
    .unwrap();
    api.patch_status(
        "r",
        &PatchParams::apply("other.io/ctl"),
        &status_apply(json!([parent("other.io/ctl")])),
    )
    .await
    .unwrap();

    let ours = status_apply(json!([parent("lanyard.dev/ctl")]));
    assert_eq!(
        code(
            api.patch_status("r", &PatchParams::apply("lanyard"), &ours)
                .await
                .unwrap_err()
        ),
        409
    );
    // The way that works on a real server: keep the other entries and force.
    let both = status_apply(json!([parent("other.io/ctl"), parent("lanyard.dev/ctl")]));
    let written = api
        .patch_status("r", &PatchParams::apply("lanyard").force(), &both)
        .await
        .unwrap();
    assert_eq!(
        written.data["status"]["parents"].as_array().unwrap().len(),
        2
    );
    let status_entry = written
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("lanyard"))
        .unwrap();
    assert_eq!(status_entry.subresource.as_deref(), Some("status"));
}

#[tokio::test]
async fn route_parents_can_be_keyed_per_controller() {
    let server = start_with(Config {
        route_parents: RouteParents::KeyedByParentAndController,
        ..Config::default()
    })
    .await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client(&server).await, "default", &httproute_resource());
    api.create(
        &PostParams::default(),
        &httproute("r", json!({"rules": []})),
    )
    .await
    .unwrap();
    api.patch_status(
        "r",
        &PatchParams::apply("other.io/ctl"),
        &status_apply(json!([parent("other.io/ctl")])),
    )
    .await
    .unwrap();
    let ours = api
        .patch_status(
            "r",
            &PatchParams::apply("lanyard"),
            &status_apply(json!([parent("lanyard.dev/ctl")])),
        )
        .await
        .unwrap();
    assert_eq!(
        ours.data["status"]["parents"],
        json!([parent("other.io/ctl"), parent("lanyard.dev/ctl")])
    );
    let cleared = api
        .patch_status(
            "r",
            &PatchParams::apply("lanyard"),
            &status_apply(json!([])),
        )
        .await
        .unwrap();
    assert_eq!(
        cleared.data["status"]["parents"],
        json!([parent("other.io/ctl")])
    );
}

#[tokio::test]
async fn status_subresource_is_isolated_and_generation_tracks_spec() {
    let server = start().await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client(&server).await, "default", &httproute_resource());
    let mut route = httproute("r", json!({"hostnames": ["a"]}));
    route.data["status"] = json!({"parents": [parent("sneaky")]});
    let created = api.create(&PostParams::default(), &route).await.unwrap();
    assert!(created.data.get("status").is_none(), "create drops status");

    let status = Patch::Merge(
        json!({"status": {"parents": [parent("lanyard.dev/ctl")]}, "spec": {"hostnames": ["ignored"]}}),
    );
    let after_status = api
        .patch_status("r", &PatchParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(after_status.data["spec"]["hostnames"], json!(["a"]));
    assert_eq!(
        after_status.data["status"]["parents"][0]["controllerName"],
        "lanyard.dev/ctl"
    );
    assert_eq!(after_status.metadata.generation, Some(1));
    assert!(rv(&after_status) > rv(&created));

    let main = Patch::Merge(json!({"status": {"parents": []}, "metadata": {"labels": {"x": "y"}}}));
    let after_labels = api
        .patch("r", &PatchParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(
        after_labels.data["status"]["parents"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "main writes ignore status"
    );
    assert_eq!(
        after_labels.metadata.generation,
        Some(1),
        "labels do not bump generation"
    );

    let spec = Patch::Merge(json!({"spec": {"hostnames": ["b"]}}));
    assert_eq!(
        api.patch("r", &PatchParams::default(), &spec)
            .await
            .unwrap()
            .metadata
            .generation,
        Some(2)
    );

    let mut whole = api.get("r").await.unwrap();
    whole.data["status"] = json!({"parents": []});
    whole.data["spec"] = json!({"hostnames": ["ignored"]});
    let replaced = api
        .replace_status("r", &PostParams::default(), &whole)
        .await
        .unwrap();
    assert_eq!(replaced.data["status"]["parents"], json!([]));
    assert_eq!(replaced.data["spec"]["hostnames"], json!(["b"]));
    assert_eq!(replaced.metadata.generation, Some(2));
}
