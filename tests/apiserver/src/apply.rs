//! Server-side apply and `metadata.managedFields`, simplified from structured-merge-diff.
//!
//! What is modelled: each manager's owned field set (per manager, operation and subresource);
//! an apply merges the applied configuration into the live object (maps recursively, keyed lists
//! item by item, sets as unions, atomic lists and scalars replaced — see [`Schema`]), removes
//! fields the manager applied before but no longer applies and nobody else owns, and refuses with
//! 409 when it would change a field another manager owns unless `force=true`, which takes the
//! field over. Updates (PUT and the other patches) give their manager the fields they changed and
//! take those fields from other managers. What is not: type-aware defaulting of the applied
//! configuration, `x-kubernetes-map-type: atomic` maps, and version conversion of managed fields.
//! Client-sent `managedFields` replace the stored ones on update and patch when non-empty (as
//! kubectl's client-side to server-side apply migration needs); `[{}]` clears them.

use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::fields::{self, FieldSet};
use crate::object::{Part, meta, now_rfc3339};
use crate::resources::ResourceType;
use crate::schema::{ListType, Schema};

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

/// What one write is: which resource and part, and who makes it.
pub struct Writer<'a> {
    pub r: &'a ResourceType,
    pub schema: &'a Schema,
    pub part: Part,
    pub manager: &'a str,
}

impl Writer<'_> {
    fn subresource(&self) -> Option<String> {
        (self.part == Part::Status).then(|| "status".to_string())
    }

    fn is_mine(&self, e: &Entry, operation: &str) -> bool {
        e.manager == self.manager && e.operation == operation && e.subresource == self.subresource()
    }

    fn own(&self, entries: &mut Vec<Entry>, operation: &str) -> usize {
        if let Some(i) = entries.iter().position(|e| self.is_mine(e, operation)) {
            return i;
        }
        entries.push(Entry {
            manager: self.manager.to_string(),
            operation: operation.to_string(),
            api_version: self.r.api_version(),
            time: String::new(),
            subresource: self.subresource(),
            fields: FieldSet::new(),
        });
        entries.len() - 1
    }

    /// The part of `obj` a manager can own through this write: `.status` only for the status
    /// subresource; otherwise everything but `.status` (when the kind has a status subresource)
    /// and but server-owned metadata.
    pub fn ownable(&self, obj: &Value) -> Value {
        let mut out = json!({});
        let Some(o) = obj.as_object() else { return out };
        for (k, v) in o {
            let keep = match (self.part, k.as_str()) {
                (_, "apiVersion" | "kind") => false,
                (Part::Status, f) => f == "status",
                (Part::Main, "status") => !self.r.has_status,
                (Part::Main, "metadata") => false,
                (Part::Main, _) => true,
            };
            if keep {
                out[k.as_str()] = v.clone();
            }
        }
        if self.part == Part::Main
            && let Some(m) = obj.get("metadata").and_then(Value::as_object)
        {
            let mut kept = json!({});
            for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(v) = m.get(f) {
                    kept[f] = v.clone();
                }
            }
            if kept.as_object().is_some_and(|m| !m.is_empty()) {
                out["metadata"] = kept;
            }
        }
        out
    }

    /// Ownership after an update from `old` (`None` on create) to `new`, starting from the
    /// entries `new` carries (the stored ones, or those the client rewrote): the writer gains the
    /// fields it changed, other managers lose them.
    pub fn record_update(&self, old: Option<&Value>, new: &Value) -> Vec<Entry> {
        let mut entries = if old.is_some() {
            read_entries(new)
        } else {
            Vec::new()
        };
        let new_fields = fields::field_set(&self.ownable(new), self.r, self.schema);
        let changed: FieldSet = new_fields
            .into_iter()
            .filter(|p| {
                let Some(old) = old else { return true };
                let member = p
                    .last()
                    .is_some_and(|t| t.starts_with("k:") || t.starts_with("v:"));
                let before = fields::get_at(old, p);
                if member {
                    before.is_none()
                } else {
                    before != fields::get_at(new, p)
                }
            })
            .collect();
        if changed.is_empty() && old.is_some() {
            return entries;
        }
        for e in entries.iter_mut().filter(|e| !self.is_mine(e, "Update")) {
            e.fields.retain(|p| !changed.contains(p));
        }
        let i = self.own(&mut entries, "Update");
        entries[i].fields.extend(changed);
        entries[i].time = now_rfc3339();
        entries
    }

    /// Server-side apply of `applied` onto `live` (`None` when the object does not exist yet).
    /// Returns the merged object (server metadata still to be set by the caller) and the
    /// ownership to record.
    pub fn apply(
        &self,
        live: Option<&Value>,
        applied: &Value,
        force: bool,
    ) -> Result<(Value, Vec<Entry>), ApiError> {
        let config = self.ownable(applied);
        let applied_fields = fields::field_set(&config, self.r, self.schema);
        let mut entries = live.map(read_entries).unwrap_or_default();
        let mut obj = live.cloned().unwrap_or_else(|| applied.clone());

        let mut conflicts = Vec::new();
        let mut conflicting = FieldSet::new();
        for e in entries.iter_mut().filter(|e| e.manager != self.manager) {
            let clashing: Vec<_> = e
                .fields
                .intersection(&applied_fields)
                .filter(|p| p.last().is_some_and(|t| t.starts_with("f:")))
                .filter(|p| fields::get_at(&obj, p) != fields::get_at(&config, p))
                .cloned()
                .collect();
            for p in clashing {
                conflicts.push((e.manager.clone(), fields::display(&p)));
                conflicting.insert(p.clone());
                if force {
                    e.fields.remove(&p);
                }
            }
        }
        if !conflicts.is_empty() && !force {
            // As a real server does for manager "kubectl": conflicts on fields the
            // last-applied-configuration annotation holds are a client-side to server-side apply
            // upgrade, and are forced.
            let allowed = self.last_applied_fields(live);
            let all_allowed = conflicting.iter().all(|p| allowed.contains(p));
            if self.manager != "kubectl" || !all_allowed {
                return Err(ApiError::apply_conflicts(&conflicts));
            }
            for e in entries.iter_mut().filter(|e| e.manager != self.manager) {
                e.fields.retain(|p| !conflicting.contains(p));
            }
        }

        let previous = entries
            .iter()
            .find(|e| self.is_mine(e, "Apply"))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        // Shortest first, so a dropped list item goes whole; never strip an item's key fields.
        let mut dropped: Vec<_> = previous.difference(&applied_fields).cloned().collect();
        dropped.sort_by_key(Vec::len);
        let mut removed: Vec<fields::FieldPath> = Vec::new();
        for p in dropped {
            let owned_elsewhere = entries
                .iter()
                .filter(|e| !self.is_mine(e, "Apply"))
                .any(|e| e.fields.iter().any(|q| q.starts_with(&p)));
            if owned_elsewhere || removed.iter().any(|r| p.starts_with(r)) || fields::in_key(&p) {
                continue;
            }
            fields::remove_at(&mut obj, &p);
            removed.push(p);
        }

        if live.is_some() {
            merge(&mut obj, &config, &mut Vec::new(), self.r, self.schema);
        }
        // Also as a real server does: kubectl's server-side apply keeps an existing
        // last-applied-configuration annotation in step with what it applied.
        const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
        if self.manager == "kubectl"
            && let Some(annotations) = obj
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            && annotations.contains_key(LAST_APPLIED)
        {
            let mut last = applied.clone();
            if let Some(a) = last
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                a.remove(LAST_APPLIED);
            }
            annotations.insert(LAST_APPLIED.into(), Value::String(last.to_string()));
        }
        let i = self.own(&mut entries, "Apply");
        entries[i].fields = applied_fields;
        entries[i].time = now_rfc3339();
        entries[i].api_version = self.r.api_version();
        Ok((obj, entries))
    }
}

impl Writer<'_> {
    /// The fields of the `kubectl.kubernetes.io/last-applied-configuration` annotation.
    fn last_applied_fields(&self, live: Option<&Value>) -> FieldSet {
        let annotation = live
            .and_then(|l| l.pointer("/metadata/annotations"))
            .and_then(|a| a.get("kubectl.kubernetes.io/last-applied-configuration"))
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str::<Value>(s).ok());
        annotation
            .map(|a| fields::field_set(&self.ownable(&a), self.r, self.schema))
            .unwrap_or_default()
    }
}

/// Merges an applied configuration into `target`.
fn merge(
    target: &mut Value,
    config: &Value,
    names: &mut Vec<String>,
    r: &ResourceType,
    schema: &Schema,
) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, v) in c {
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                names.push(k.clone());
                match t.get_mut(k) {
                    Some(existing) => merge(existing, v, names, r, schema),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
                names.pop();
            }
        }
        (Value::Array(t), Value::Array(c)) => match schema.list_type(r, names) {
            ListType::Atomic => *t = c.clone(),
            ListType::Set => {
                for v in c {
                    if !t.contains(v) {
                        t.push(v.clone());
                    }
                }
            }
            ListType::Map(keys) => {
                for item in c {
                    let token = fields::key_token(item, keys);
                    let key: serde_json::Map<String, Value> =
                        serde_json::from_str(&token[2..]).unwrap_or_default();
                    match t.iter_mut().find(|i| fields::item_matches(i, &key)) {
                        Some(existing) => merge(existing, item, names, r, schema),
                        None => t.push(item.clone()),
                    }
                }
            }
        },
        (target, config) => *target = config.clone(),
    }
}

/// The entries recorded in `obj.metadata.managedFields`.
pub fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = meta(obj)
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| Entry {
            manager: str_field(e, "manager"),
            operation: str_field(e, "operation"),
            api_version: str_field(e, "apiVersion"),
            time: str_field(e, "time"),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .map(str::to_string),
            fields: e.get("fieldsV1").map(fields::decode).unwrap_or_default(),
        })
        .collect()
}

fn str_field(v: &Value, f: &str) -> String {
    v.get(f)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Stores `entries` in `obj.metadata.managedFields`, keeping only paths present in `obj` and
/// dropping managers left with none.
pub fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter_map(|mut e| {
            e.fields.retain(|p| fields::get_at(obj, p).is_some());
            if e.fields.is_empty() {
                return None;
            }
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields::encode(&e.fields),
            });
            if let Some(s) = e.subresource {
                v["subresource"] = json!(s);
            }
            Some(v)
        })
        .collect();
    let m = crate::object::meta_mut(obj);
    if list.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(list));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;
    use crate::schema::RouteParents;

    fn route() -> &'static ResourceType {
        resources::find("gateway.networking.k8s.io", "v1", "httproutes").unwrap()
    }

    fn status_apply(
        schema: &Schema,
        live: &Value,
        manager: &str,
        parents: Value,
        force: bool,
    ) -> Result<Value, ApiError> {
        let w = Writer {
            r: route(),
            schema,
            part: Part::Status,
            manager,
        };
        let (mut obj, entries) =
            w.apply(Some(live), &json!({"status": {"parents": parents}}), force)?;
        write_entries(&mut obj, entries);
        Ok(obj)
    }

    fn parent(controller: &str) -> Value {
        json!({"parentRef": {"name": "svc", "kind": "Service", "group": ""}, "controllerName": controller,
               "conditions": [{"type": "Accepted", "status": "True"}]})
    }

    #[test]
    fn atomic_route_parents_conflict_unless_forced() {
        let schema = Schema::default();
        let live = json!({"metadata": {"name": "r"}, "spec": {}});
        let a = status_apply(&schema, &live, "a", json!([parent("a")]), false).unwrap();
        let err = status_apply(&schema, &a, "b", json!([parent("b")]), false).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"a\": .status.parents"),
            "{}",
            err.message
        );
        let b = status_apply(&schema, &a, "b", json!([parent("b")]), true).unwrap();
        assert_eq!(b["status"]["parents"], json!([parent("b")]));
        let managers: Vec<_> = read_entries(&b).into_iter().map(|e| e.manager).collect();
        assert_eq!(managers, vec!["b"]);
    }

    #[test]
    fn keyed_route_parents_keep_other_controllers_entries() {
        let schema = Schema {
            route_parents: RouteParents::KeyedByParentAndController,
        };
        let live = json!({"metadata": {"name": "r"}, "spec": {}});
        let a = status_apply(&schema, &live, "a", json!([parent("a")]), false).unwrap();
        let ab = status_apply(&schema, &a, "b", json!([parent("b")]), false).unwrap();
        assert_eq!(ab["status"]["parents"], json!([parent("a"), parent("b")]));
        let b_only = status_apply(&schema, &ab, "a", json!([]), false).unwrap();
        assert_eq!(b_only["status"]["parents"], json!([parent("b")]));
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let schema = Schema::default();
        let w = Writer {
            r: route(),
            schema: &schema,
            part: Part::Main,
            manager: "m",
        };
        let first = json!({"metadata": {"name": "r", "labels": {"x": "1", "y": "2"}}, "spec": {"hostnames": ["a"]}});
        let (mut obj, entries) = w.apply(None, &first, false).unwrap();
        write_entries(&mut obj, entries);
        let second =
            json!({"metadata": {"name": "r", "labels": {"x": "1"}}, "spec": {"hostnames": ["b"]}});
        let (obj, _) = w.apply(Some(&obj), &second, false).unwrap();
        assert_eq!(obj["metadata"]["labels"], json!({"x": "1"}));
        assert_eq!(obj["spec"]["hostnames"], json!(["b"]));
    }

    #[test]
    fn updates_take_changed_fields_from_appliers() {
        let schema = Schema::default();
        let applier = Writer {
            r: route(),
            schema: &schema,
            part: Part::Main,
            manager: "applier",
        };
        let (mut obj, entries) = applier
            .apply(
                None,
                &json!({"metadata": {"name": "r"}, "spec": {"a": 1, "b": 1}}),
                false,
            )
            .unwrap();
        write_entries(&mut obj, entries);
        let mut new = obj.clone();
        new["spec"]["a"] = json!(2);
        let updater = Writer {
            r: route(),
            schema: &schema,
            part: Part::Main,
            manager: "editor",
        };
        let entries = updater.record_update(Some(&obj), &new);
        let editor = entries.iter().find(|e| e.manager == "editor").unwrap();
        assert_eq!(editor.fields.len(), 1);
        let applied = entries.iter().find(|e| e.manager == "applier").unwrap();
        assert_eq!(applied.fields.len(), 1, "{:?}", applied.fields);
    }
}
