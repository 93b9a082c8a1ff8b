//! Discovery documents built from the resource table: `/version`, `/api`, `/apis`,
//! `/apis/<group>`, `/api/v1` and `/apis/<group>/<version>`, in the legacy form and in the
//! aggregated form (`apidiscovery.k8s.io` v2 and v2beta1) that kubectl 1.27+ asks for first.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api_error::json_response;
use crate::resources::{self, ResourceType};

/// Which table rows answer right now (a CRD may stop serving some versions).
pub type Served<'a> = &'a dyn Fn(&ResourceType) -> bool;

/// The Kubernetes version the fixture claims to be.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The aggregated-discovery version the client accepts, if any (`v2` preferred).
fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    let wants = |v: &str| {
        accept.split(',').any(|part| {
            let params: Vec<&str> = part.split(';').map(str::trim).collect();
            params.contains(&"g=apidiscovery.k8s.io")
                && params.contains(&format!("v={v}").as_str())
                && params.contains(&"as=APIGroupDiscoveryList")
        })
    };
    ["v2", "v2beta1"].into_iter().find(|v| wants(v))
}

/// `/api` (core) or `/apis` (named groups).
pub fn root(core: bool, headers: &HeaderMap, server_address: &str, served: Served) -> Response {
    if let Some(v) = aggregated_version(headers) {
        let items: Vec<Value> = resources::groups_where(served)
            .into_iter()
            .filter(|(g, _)| g.is_empty() == core)
            .map(|(g, versions)| aggregated_group(g, &versions, served))
            .collect();
        let body = json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": format!("apidiscovery.k8s.io/{v}"),
            "metadata": {},
            "items": items,
        });
        let ct = format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, ct)],
            body.to_string(),
        )
            .into_response();
    }
    let body = if core {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    } else {
        let groups: Vec<Value> = resources::groups_where(served)
            .into_iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, versions)| api_group(g, &versions))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    };
    json_response(StatusCode::OK, &body)
}

/// `/apis/<group>`, if served.
pub fn group(name: &str, served: Served) -> Option<Value> {
    resources::groups_where(served)
        .into_iter()
        .find(|(g, _)| !g.is_empty() && *g == name)
        .map(|(g, versions)| {
            let mut doc = api_group(g, &versions);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

fn group_version(g: &str, v: &str) -> String {
    if g.is_empty() {
        v.to_string()
    } else {
        format!("{g}/{v}")
    }
}

fn api_group(g: &str, versions: &[&str]) -> Value {
    let gv = |v: &str| json!({"groupVersion": group_version(g, v), "version": v});
    json!({
        "name": g,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(versions[0]),
    })
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(g: &str, v: &str, served: Served) -> Option<Value> {
    let mut resources = Vec::new();
    for r in resources::in_group_version(g, v).filter(|r| served(r)) {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
            "shortNames": r.short_names,
            "categories": r.categories,
            "storageVersionHash": "",
        }));
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(g, v),
        "resources": resources,
    }))
}

fn aggregated_group(g: &str, versions: &[&str], served: Served) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = resources::in_group_version(g, v)
                .filter(|r| served(r))
                .map(aggregated_resource)
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let metadata = if g.is_empty() {
        json!({})
    } else {
        json!({"name": g})
    };
    json!({"metadata": metadata, "versions": versions})
}

fn aggregated_resource(r: &ResourceType) -> Value {
    let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let mut out = json!({
        "resource": r.plural,
        "responseKind": kind,
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
        "shortNames": r.short_names,
        "categories": r.categories,
    });
    if r.has_status {
        out["subresources"] = json!([{
            "subresource": "status",
            "responseKind": kind,
            "verbs": ["get", "patch", "update"],
        }]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn aggregated_discovery_is_chosen_from_accept() {
        let mut h = HeaderMap::new();
        assert_eq!(aggregated_version(&h), None);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"),
        );
        assert_eq!(aggregated_version(&h), Some("v2"));
    }

    #[test]
    fn resource_lists_include_status_subresources() {
        let list = resource_list("gateway.networking.k8s.io", "v1", &|_| true).unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"httproutes") && names.contains(&"httproutes/status"));
        assert!(!names.contains(&"referencegrants/status"));
        assert!(resource_list("nope.io", "v1", &|_| true).is_none());
        assert_eq!(
            group("gateway.networking.k8s.io", &|_| true).unwrap()["preferredVersion"]["version"],
            "v1"
        );
    }
}
