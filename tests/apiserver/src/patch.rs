//! PATCH bodies other than server-side apply: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902, via the `json-patch` crate) and strategic merge patch.
//!
//! Strategic merge patch is implemented as a merge patch whose lists follow [`Schema`]: keyed
//! lists merge item by item on their first key (`patchMergeKey`), `metadata.finalizers` merges
//! as a set, and every other list is replaced. The directives `$patch: replace|delete|merge`,
//! `$retainKeys` and `$deleteFromPrimitiveList/<field>` are honoured; `$setElementOrder/<field>`
//! is accepted and ignored (new items are appended). As on a real server, strategic merge patch
//! is refused with 415 for custom resources.

use serde_json::{Map, Value};

use crate::api_error::ApiError;
use crate::resources::ResourceType;
use crate::schema::{ListType, Schema};

/// The patch types the server accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<PatchType, ApiError> {
        let base = content_type.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// Applies a merge, JSON or strategic patch to `target`.
pub fn apply_patch(
    kind: PatchType,
    r: &ResourceType,
    schema: &Schema,
    target: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    let parse = || {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
    };
    match kind {
        PatchType::Merge => {
            let patch = parse()?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            let mut out = target.clone();
            json_patch::merge(&mut out, &patch);
            Ok(out)
        }
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            let mut out = target.clone();
            json_patch::patch(&mut out, &patch).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(out)
        }
        PatchType::Strategic => {
            if r.is_custom() {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            let patch = parse()?;
            let mut out = target.clone();
            strategic_merge(&mut out, &patch, &mut Vec::new(), r, schema);
            Ok(out)
        }
        PatchType::Apply => unreachable!("server-side apply is handled by the apply module"),
    }
}

/// Merges `patch` into `target` with strategic-merge-patch rules.
pub fn strategic_merge(
    target: &mut Value,
    patch: &Value,
    path: &mut Vec<String>,
    r: &ResourceType,
    schema: &Schema,
) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (key, value) in p {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) = (
                target.get_mut(field).and_then(Value::as_array_mut),
                value.as_array(),
            ) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        let t = target.as_object_mut().expect("target is an object");
        if value.is_null() || value.get("$patch").and_then(Value::as_str) == Some("delete") {
            t.remove(key);
            continue;
        }
        path.push(key.clone());
        match (t.get_mut(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge(existing, value, path, r, schema)
            }
            (Some(Value::Array(existing)), Value::Array(items)) => {
                let merged = merge_list(existing, items, path, r, schema);
                t.insert(key.clone(), Value::Array(merged));
            }
            (_, Value::Array(items)) => {
                let merged = merge_list(&[], items, path, r, schema);
                t.insert(key.clone(), Value::Array(merged));
            }
            _ => {
                t.insert(key.clone(), strip_directives(value));
            }
        }
        path.pop();
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array)
        && let Some(t) = target.as_object_mut()
    {
        t.retain(|k, _| keep.iter().any(|v| v.as_str() == Some(k)));
    }
}

fn merge_list(
    existing: &[Value],
    items: &[Value],
    path: &mut Vec<String>,
    r: &ResourceType,
    schema: &Schema,
) -> Vec<Value> {
    let replace = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    if replace {
        return items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip_directives)
            .collect();
    }
    match schema.list_type(r, path) {
        ListType::Atomic => items.iter().map(strip_directives).collect(),
        ListType::Set => {
            let mut out = existing.to_vec();
            for i in items {
                if !out.contains(i) {
                    out.push(i.clone());
                }
            }
            out
        }
        ListType::Map(keys) => {
            let key = keys[0];
            let mut out = existing.to_vec();
            for item in items {
                let id = item.get(key);
                let pos = out.iter().position(|e| id.is_some() && e.get(key) == id);
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => strategic_merge(&mut out[i], item, path, r, schema),
                    (None, false) => out.push(strip_directives(item)),
                }
            }
            out
        }
    }
}

/// `value` without `$`-directives, at every depth.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;
    use serde_json::json;

    fn svc() -> &'static ResourceType {
        resources::find("", "v1", "services").unwrap()
    }

    fn route() -> &'static ResourceType {
        resources::find("gateway.networking.k8s.io", "v1", "httproutes").unwrap()
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let target = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        let out = apply_patch(
            PatchType::Merge,
            route(),
            &Schema::default(),
            &target,
            br#"{"a":{"b":null,"c":[3]},"e":2}"#,
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"c": [3]}, "d": 1, "e": 2}));
    }

    #[test]
    fn json_patch_applies_and_reports_failed_tests() {
        let target = json!({"spec": {"x": 1}});
        let ok = apply_patch(
            PatchType::Json,
            route(),
            &Schema::default(),
            &target,
            br#"[{"op":"replace","path":"/spec/x","value":2}]"#,
        )
        .unwrap();
        assert_eq!(ok, json!({"spec": {"x": 2}}));
        let bad = apply_patch(
            PatchType::Json,
            route(),
            &Schema::default(),
            &target,
            br#"[{"op":"test","path":"/spec/x","value":5}]"#,
        );
        assert_eq!(bad.unwrap_err().code, 422);
    }

    #[test]
    fn strategic_merge_keeps_unpatched_fields_of_keyed_items() {
        let target = json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}], "clusterIPs": ["a"]}});
        let patch = json!({"spec": {"$setElementOrder/ports": [{"port": 80}], "ports": [{"port": 80, "targetPort": 8080}, {"port": 81, "$patch": "delete"}], "clusterIPs": ["b"]}});
        let out = apply_patch(
            PatchType::Strategic,
            svc(),
            &Schema::default(),
            &target,
            patch.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}])
        );
        assert_eq!(out["spec"]["clusterIPs"], json!(["b"]));
    }

    #[test]
    fn strategic_merge_directives() {
        let target = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"selector": {"x": "1", "y": "2"}}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}, "spec": {"selector": {"$patch": "replace", "z": "3"}}});
        let out = apply_patch(
            PatchType::Strategic,
            svc(),
            &Schema::default(),
            &target,
            patch.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["spec"]["selector"], json!({"z": "3"}));
    }

    #[test]
    fn strategic_merge_is_refused_for_custom_resources() {
        let err = apply_patch(
            PatchType::Strategic,
            route(),
            &Schema::default(),
            &json!({}),
            b"{}",
        )
        .unwrap_err();
        assert_eq!(err.code, 415);
    }

    #[test]
    fn unknown_content_types_are_415() {
        assert_eq!(
            PatchType::from_content_type("text/plain").unwrap_err().code,
            415
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml").unwrap(),
            PatchType::Apply
        );
    }
}
