//! The fixture against the real kubectl (`/usr/bin/kubectl`, or `LANYARD_KUBECTL`): apply,
//! get, wait and delete of built-in and Gateway API kinds, client- and server-side apply.

mod support;

use std::path::Path;

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use support::{Kubectl, client, httproute_resource, start};

fn service_yaml(target_port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: {target_port}
"
    )
}

fn route_yaml(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-split
  namespace: default
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: web
    port: 80
  rules:
  - backendRefs:
    - name: web-v1
      port: 80
      weight: {v1}
    - name: web-v2
      port: 80
      weight: {v2}
"
    )
}

fn weights(route: &Value) -> Vec<i64> {
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn kubectl_applies_gets_and_deletes_a_service_and_an_httproute() {
    let server = start().await;
    let k = Kubectl::new(&server);
    let svc = k.file("svc.yaml", &service_yaml(8080));
    let route = k.file("route.yaml", &route_yaml(80, 20));

    assert!(
        k.ok(&["apply", "-f", &svc])
            .await
            .contains("service/web created")
    );
    assert!(
        k.ok(&["apply", "-f", &route])
            .await
            .contains("httproute.gateway.networking.k8s.io/web-split created")
    );
    let stored = server
        .object(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            Some("default"),
            "web-split",
        )
        .unwrap();
    assert_eq!(weights(&stored), vec![80, 20]);
    assert!(
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // Second applies patch: strategic merge for the Service, merge patch for the HTTPRoute.
    k.file("svc.yaml", &service_yaml(9090));
    k.file("route.yaml", &route_yaml(90, 10));
    assert!(
        k.ok(&["apply", "-f", &svc])
            .await
            .contains("service/web configured")
    );
    assert!(k.ok(&["apply", "-f", &route]).await.contains("configured"));
    let ports = &server
        .object("v1", "Service", Some("default"), "web")
        .unwrap()["spec"]["ports"];
    assert_eq!(
        ports,
        &json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9090}])
    );
    assert_eq!(
        server.request_count("patch", "/api/v1/namespaces/default/services/web"),
        1
    );

    // A controller writes status; kubectl shows it.
    let api: Api<DynamicObject> =
        Api::namespaced_with(client(&server).await, "default", &httproute_resource());
    let status = json!({"status": {"parents": [{"parentRef": {"group": "", "kind": "Service", "name": "web", "port": 80},
        "controllerName": "lanyard.dev/controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "observedGeneration": 2, "lastTransitionTime": "2025-01-01T00:00:00Z"}]}]}});
    api.patch_status("web-split", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();

    let yaml = k.ok(&["get", "httproute", "web-split", "-o", "yaml"]).await;
    let got: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(weights(&got), vec![90, 10]);
    assert_eq!(got["metadata"]["generation"], json!(2));
    assert_eq!(
        got["status"]["parents"][0]["conditions"][0]["type"],
        "Accepted"
    );
    let table = k.ok(&["get", "httproutes"]).await;
    assert!(
        table.starts_with("NAME") && table.contains("web-split"),
        "{table}"
    );

    assert!(k.ok(&["delete", "-f", &route]).await.contains("deleted"));
    let gone = k.run(&["get", "httproute", "web-split"]).await;
    assert!(!gone.ok && gone.stderr.contains("NotFound"), "{gone:#?}");
    k.ok(&["delete", "service", "web"]).await;
    assert!(server.objects("v1", "Service").is_empty());
}

#[tokio::test]
async fn kubectl_server_side_apply_takes_over_from_client_side_apply() {
    let server = start().await;
    let k = Kubectl::new(&server);
    let route = k.file("route.yaml", &route_yaml(80, 20));
    k.ok(&["apply", "-f", &route]).await;
    k.file("route.yaml", &route_yaml(50, 50));
    assert!(
        k.ok(&["apply", "--server-side", "-f", &route])
            .await
            .contains("serverside-applied")
    );
    let stored = server
        .object(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            Some("default"),
            "web-split",
        )
        .unwrap();
    assert_eq!(weights(&stored), vec![50, 50]);
    let managers: Vec<(&str, &str)> = stored["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap(),
                m["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(managers.contains(&("kubectl", "Apply")), "{managers:?}");

    let resources = k.ok(&["api-resources"]).await;
    for name in [
        "httproutes",
        "grpcroutes",
        "referencegrants",
        "endpointslices",
        "leases",
        "trafficsplits",
        "customresourcedefinitions",
    ] {
        assert!(
            resources.contains(name),
            "{name} missing from:\n{resources}"
        );
    }
}

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: meshpolicies.lanyard.test
spec:
  group: lanyard.test
  names:
    kind: MeshPolicy
    plural: meshpolicies
    singular: meshpolicy
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
";

#[tokio::test]
async fn kubectl_applies_crds_and_waits_for_them() {
    let server = start().await;
    let k = Kubectl::new(&server);
    let dir = k.dir.path().join("crds");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("meshpolicy.yaml"), CRD).unwrap();
    let dir = dir.display().to_string();
    assert!(k.ok(&["apply", "-f", &dir]).await.contains("created"));
    let waited = k
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/meshpolicies.lanyard.test",
            "--timeout=10s",
        ])
        .await;
    assert!(waited.contains("condition met"), "{waited}");
    assert!(
        k.ok(&["get", "crds"])
            .await
            .contains("meshpolicies.lanyard.test")
    );
    k.ok(&["delete", "-f", &dir]).await;
    assert!(
        server
            .objects("apiextensions.k8s.io/v1", "CustomResourceDefinition")
            .is_empty()
    );
    assert!(Path::new(&dir).exists());
}
