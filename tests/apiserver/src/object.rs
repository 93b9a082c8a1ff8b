//! Rules for object metadata the server owns: `uid`, `creationTimestamp`, `resourceVersion`,
//! `generation`, the status-subresource split, and per-kind defaulting.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::resources::ResourceType;

/// Which part of a resource a request writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: `.status` is kept from the stored object when the kind has a status
    /// subresource.
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
}

/// `metadata` fields only the server sets; client values are replaced by the stored ones.
const SERVER_META: &[&str] = &[
    "uid",
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name").filter(|n| !n.is_empty())
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion").filter(|rv| !rv.is_empty())
}

/// Finishes a new object: server metadata, `generation` 1, defaults, and no `.status` for kinds
/// with a status subresource (as a real server drops it on create).
pub fn prepare_create(r: &ResourceType, mut obj: Value, namespace: Option<&str>) -> Value {
    let m = meta_mut(&mut obj);
    for f in SERVER_META {
        m.remove(*f);
    }
    m.insert("uid".into(), Value::String(new_uid()));
    m.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    m.insert("generation".into(), json!(1));
    if let Some(ns) = namespace {
        m.insert("namespace".into(), Value::String(ns.to_string()));
    }
    if r.has_status
        && let Some(o) = obj.as_object_mut()
    {
        o.remove("status");
    }
    obj["apiVersion"] = Value::String(r.api_version());
    obj["kind"] = Value::String(r.kind.to_string());
    apply_defaults(r, &mut obj, None);
    obj
}

/// Builds the object an update stores from the client's `desired` object and the stored `old`:
/// server metadata comes from `old`, the status subresource rules pick `.status` or everything
/// else from `old`, and `generation` is bumped when anything outside metadata and status changed.
pub fn prepare_update(r: &ResourceType, part: Part, old: &Value, desired: Value) -> Value {
    let mut new = match part {
        Part::Status => {
            let mut new = old.clone();
            match desired.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            new
        }
        Part::Main => {
            let mut new = desired;
            if r.has_status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            new
        }
    };
    let old_meta = meta(old).cloned().unwrap_or_default();
    // A client may rewrite managedFields (kubectl does, moving client-side-apply ownership to
    // server-side apply); an absent or empty list keeps the stored one.
    let sent_fields = meta(&new)
        .and_then(|m| m.get("managedFields"))
        .filter(|f| f.as_array().is_some_and(|a| !a.is_empty()))
        .cloned();
    let m = meta_mut(&mut new);
    for f in SERVER_META {
        if *f == "managedFields"
            && let Some(sent) = &sent_fields
        {
            m.insert((*f).to_string(), sent.clone());
            continue;
        }
        match old_meta.get(*f) {
            Some(v) => m.insert((*f).to_string(), v.clone()),
            None => m.remove(*f),
        };
    }
    for f in ["name", "namespace"] {
        if let Some(v) = old_meta.get(f) {
            m.insert(f.to_string(), v.clone());
        }
    }
    new["apiVersion"] = Value::String(r.api_version());
    new["kind"] = Value::String(r.kind.to_string());
    apply_defaults(r, &mut new, Some(old));
    if spec_changed(old, &new) {
        let generation = meta(old)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
    }
    new
}

/// Whether anything but `apiVersion`, `kind`, `metadata` and `status` differs.
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    fn body(v: &Value) -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        for f in ["apiVersion", "kind", "metadata", "status"] {
            m.remove(f);
        }
        m
    }
    body(old) != body(new)
}

/// Whether two stored objects are the same write, ignoring managed-field timestamps.
pub fn same_content(a: &Value, b: &Value) -> bool {
    fn normalized(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(mf) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for entry in mf {
                if let Some(e) = entry.as_object_mut() {
                    e.remove("time");
                }
            }
        }
        v
    }
    normalized(a) == normalized(b)
}

/// Kind-specific defaults a real API server applies, kept to what clients of this fixture read.
/// Services: `type: ClusterIP`, an allocated `clusterIP` (kept across updates), port `protocol`
/// TCP and `targetPort` = `port`, `sessionAffinity: None`. CRDs: `Established` and
/// `NamesAccepted` conditions. Namespaces: `status.phase: Active`; Pods: `status.phase: Pending`
/// until a status write. Other kinds: none (no CRD schema defaulting).
fn apply_defaults(r: &ResourceType, obj: &mut Value, old: Option<&Value>) {
    match (r.group, r.kind) {
        ("", "Service") => default_service(obj, old),
        ("", kind @ ("Namespace" | "Pod")) if obj.get("status").is_none() => {
            let phase = if kind == "Pod" { "Pending" } else { "Active" };
            obj["status"] = json!({ "phase": phase });
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let now = now_rfc3339();
            let cond = |t: &str, reason: &str| json!({"type": t, "status": "True", "reason": reason, "message": "", "lastTransitionTime": now});
            if obj.pointer("/status/conditions").is_none() {
                obj["status"] = json!({
                    "acceptedNames": names,
                    "conditions": [cond("NamesAccepted", "NoConflicts"), cond("Established", "InitialNamesAccepted")],
                    "storedVersions": obj.pointer("/spec/versions").and_then(Value::as_array).map(|vs| {
                        vs.iter().filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>()
                    }).unwrap_or_default(),
                });
            }
        }
        _ => {}
    }
}

static NEXT_CLUSTER_IP: AtomicU64 = AtomicU64::new(1);

fn default_service(obj: &mut Value, old: Option<&Value>) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
    let spec = obj["spec"].as_object_mut().expect("spec is an object");
    spec.entry("type").or_insert(json!("ClusterIP"));
    spec.entry("sessionAffinity").or_insert(json!("None"));
    if spec
        .get("clusterIP")
        .is_none_or(|ip| ip.as_str() == Some(""))
    {
        let ip = old_ip.unwrap_or_else(|| {
            let n = NEXT_CLUSTER_IP.fetch_add(1, Ordering::Relaxed);
            json!(format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff))
        });
        spec.insert("clusterIP".into(), ip.clone());
        if ip.as_str() != Some("None") {
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                p.entry("targetPort").or_insert(port);
            }
        }
    }
}

/// A random, unique, UUID-shaped identifier.
pub fn new_uid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let a = h.finish();
    h.write_u64(a);
    let b = h.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// The current time as RFC 3339 in UTC with second precision, as Kubernetes writes it.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn uids_are_unique() {
        let a = new_uid();
        assert_ne!(a, new_uid());
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn generation_bumps_only_on_spec_changes() {
        let r = resources::find("gateway.networking.k8s.io", "v1", "httproutes").unwrap();
        let old = prepare_create(
            r,
            json!({"metadata": {"name": "a"}, "spec": {"x": 1}}),
            Some("ns"),
        );
        let labels = prepare_update(
            r,
            Part::Main,
            &old,
            json!({"metadata": {"name": "a", "labels": {"l": "v"}}, "spec": {"x": 1}}),
        );
        assert_eq!(labels["metadata"]["generation"], json!(1));
        let spec = prepare_update(
            r,
            Part::Main,
            &old,
            json!({"metadata": {"name": "a"}, "spec": {"x": 2}}),
        );
        assert_eq!(spec["metadata"]["generation"], json!(2));
        let status = prepare_update(
            r,
            Part::Status,
            &old,
            json!({"spec": {"x": 9}, "status": {"s": 1}}),
        );
        assert_eq!(status["metadata"]["generation"], json!(1));
        assert_eq!(status["spec"], json!({"x": 1}));
        assert_eq!(status["status"], json!({"s": 1}));
    }

    #[test]
    fn services_get_a_cluster_ip_that_survives_updates() {
        let r = resources::find("", "v1", "services").unwrap();
        let svc = prepare_create(
            r,
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
            Some("d"),
        );
        let ip = svc["spec"]["clusterIP"].clone();
        assert!(ip.as_str().unwrap().starts_with("10.96."));
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        let updated = prepare_update(
            r,
            Part::Main,
            &svc,
            json!({"metadata": {"name": "s"}, "spec": {"ports": []}}),
        );
        assert_eq!(updated["spec"]["clusterIP"], ip);
    }
}
