//! Objects from the watches are trimmed to what Lanyard reads before they are parsed and
//! stored, as client-go informers do with a transform (client-go v0.31
//! tools/cache/shared_informer.go, `SetTransform`; controller-runtime v0.19
//! pkg/cache/cache.go, `TransformStripManagedFields`).
//!
//! - Every kind keeps of its metadata only `name`, `namespace`, `uid`, `resourceVersion`
//!   (the status writer compares it), `generation` (route status carries it), `labels` and
//!   `annotations`; `managedFields`, `ownerReferences`, timestamps and the like go.
//! - `kubectl.kubernetes.io/last-applied-configuration` goes everywhere. The core kinds
//!   (Services, EndpointSlices, Pods) lose all their annotations: nothing reads
//!   them. The custom kinds keep theirs (the SMI conversion reads some).
//! - Pods keep `spec.serviceAccountName`, each container's `name` and `ports`, and
//!   `status.phase`, `podIP` and `podIPs`: what the translator reads (workload identity,
//!   named target ports, addresses). Volumes, env, probes, images and conditions go.

use lanyard_index::Kind;
use serde_json::{Map, Value};

/// The annotation `kubectl apply` leaves: a copy of the whole object.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

const METADATA: [&str; 7] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
];

/// Trims an object as the API server sent it (JSON) to what Lanyard reads.
pub fn trim(kind: Kind, object: &mut Value) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| METADATA.contains(&k.as_str()));
        let core = matches!(kind, Kind::Service | Kind::EndpointSlice | Kind::Pod);
        if core {
            meta.remove("annotations");
        } else if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut)
        {
            annotations.remove(LAST_APPLIED);
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    if kind == Kind::Pod {
        trim_pod(map);
    }
}

fn keep(map: &mut Map<String, Value>, fields: &[&str]) {
    map.retain(|k, _| fields.contains(&k.as_str()));
}

fn trim_pod(pod: &mut Map<String, Value>) {
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        keep(spec, &["serviceAccountName", "containers"]);
        if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                keep(container, &["name", "ports"]);
            }
        }
    }
    if let Some(status) = pod.get_mut("status").and_then(Value::as_object_mut) {
        keep(status, &["phase", "podIP", "podIPs"]);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mk_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "cart-1", "namespace": "shop", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "cart"},
                "annotations": {LAST_APPLIED: "{}", "prometheus.io/scrape": "true"},
                "managedFields": [{"manager": "kubectl"}],
                "ownerReferences": [{"kind": "ReplicaSet", "name": "cart"}],
                "creationTimestamp": "2026-11-30T10:00:00Z"
            },
            "spec": {
                "serviceAccountName": "cart", "nodeName": "n1",
                "containers": [{"name": "app", "image": "cart:1",
                                "env": [{"name": "K", "value": "V"}],
                                "ports": [{"name": "http", "containerPort": 8080}]}],
                "volumes": [{"name": "v"}]
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                       "hostIP": "192.168.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        })
    }

    #[test]
    fn a_pod_keeps_what_the_translator_reads() {
        let mut pod = mk_pod();
        trim(Kind::Pod, &mut pod);
        assert_eq!(
            pod,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "cart-1", "namespace": "shop", "uid": "u",
                             "resourceVersion": "7", "labels": {"app": "cart"}},
                "spec": {"serviceAccountName": "cart",
                         "containers": [{"name": "app",
                                         "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}
            })
        );
    }

    #[test]
    fn custom_kinds_keep_their_annotations_but_the_applied_copy() {
        let mut split = json!({
            "metadata": {"name": "s", "annotations": {LAST_APPLIED: "{}", "a": "b"},
                         "managedFields": []},
            "spec": {"service": "cart"}
        });
        trim(Kind::TrafficSplit, &mut split);
        assert_eq!(
            split,
            json!({"metadata": {"name": "s", "annotations": {"a": "b"}}, "spec": {"service": "cart"}})
        );
    }
}
