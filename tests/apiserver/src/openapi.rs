//! A minimal OpenAPI v3 (`/openapi/v3`, `/openapi/v3/<api|apis/g>/<v>`) built from the resource
//! table, just enough for `kubectl apply` with its default `--validate=strict`.
//!
//! kubectl asks the OpenAPI v3 document of a kind's group/version whether its PATCH operation
//! takes the `fieldValidation` query parameter; when it does, kubectl leaves validation to the
//! server instead of downloading schemas. These documents therefore list, per resource, the
//! item path with a PATCH operation tagged `x-kubernetes-group-version-kind` that declares
//! `fieldValidation` (plus `dryRun`, `fieldManager`, `force`). They carry no schemas
//! (`components.schemas` is empty), so kubectl builds strategic merge patches for built-in kinds
//! from its compiled-in types, `kubectl explain` does not work, and the server accepts
//! `fieldValidation` but does not validate fields (unknown fields are stored as sent).
//! `/openapi/v2` is not served.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::api_error::{ApiError, json_response};
use crate::discovery::{KUBE_MAJOR, KUBE_MINOR};
use crate::resources::{self, ResourceType};

const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Changes whenever the documents do; clients cache by it.
const HASH: &str = "lanyard-test-apiserver-1";

/// Answers `/openapi/<rest...>`.
pub fn serve(rest: &[&str]) -> Response {
    if rest == ["v2"] {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, V2_PROTOBUF)],
            Vec::<u8>::new(),
        )
            .into_response();
    }
    let doc = match rest {
        ["v3"] => Some(root()),
        ["v3", "api", v] => group_version("", v),
        ["v3", "apis", g, v] => group_version(g, v),
        _ => None,
    };
    match doc {
        Some(doc) => json_response(StatusCode::OK, &doc),
        None => ApiError::no_route(&format!("/openapi/{}", rest.join("/"))).into_response(),
    }
}

fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn root() -> Value {
    let mut paths = Map::new();
    for (g, versions) in resources::groups() {
        for v in versions {
            let p = prefix(g, v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={HASH}")}),
            );
        }
    }
    json!({ "paths": paths })
}

fn group_version(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in resources::in_group_version(group, version) {
        paths.insert(item_path(r), json!({ "patch": patch_operation(r) }));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

fn item_path(r: &ResourceType) -> String {
    let ns = if r.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    format!("/{}{ns}/{}/{{name}}", prefix(r.group, r.version), r.plural)
}

fn patch_operation(r: &ResourceType) -> Value {
    let query = |name: &str, ty: &str| json!({"name": name, "in": "query", "schema": {"type": ty, "uniqueItems": true}});
    json!({
        "operationId": format!("patch{}", r.kind),
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": [
            query("dryRun", "string"),
            query("fieldManager", "string"),
            query("fieldValidation", "string"),
            query("force", "boolean"),
        ],
        "responses": {"200": {"description": "OK"}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_a_patch_operation_per_kind() {
        let root = root();
        assert_eq!(
            root["paths"]["apis/gateway.networking.k8s.io/v1"]["serverRelativeURL"],
            format!("/openapi/v3/apis/gateway.networking.k8s.io/v1?hash={HASH}")
        );
        let doc = group_version("gateway.networking.k8s.io", "v1").unwrap();
        let op = &doc["paths"]["/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/{name}"]
            ["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "HTTPRoute");
        assert!(
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(
            group_version("", "v1").unwrap()["paths"]
                .get("/api/v1/namespaces/{name}")
                .is_some()
        );
    }
}
