//! Field paths and field sets in the `FieldsV1` form `metadata.managedFields` uses:
//! `f:<name>` for a field, `k:<json>` for an item of a keyed list, `v:<json>` for a value of a set.
//! A path names a field some manager owns; an atomic list or a scalar is one leaf.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::resources::ResourceType;
use crate::schema::{ListType, Schema};

/// One path from the object root, as `FieldsV1` tokens.
pub type FieldPath = Vec<String>;

/// A set of owned field paths.
pub type FieldSet = BTreeSet<FieldPath>;

/// The paths a value sets: its leaves, the items of keyed lists and the values of sets.
pub fn field_set(value: &Value, r: &ResourceType, schema: &Schema) -> FieldSet {
    let mut out = FieldSet::new();
    walk(value, &mut Vec::new(), &mut Vec::new(), r, schema, &mut out);
    out
}

fn walk(
    v: &Value,
    tokens: &mut FieldPath,
    names: &mut Vec<String>,
    r: &ResourceType,
    schema: &Schema,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                tokens.push(format!("f:{k}"));
                names.push(k.clone());
                walk(child, tokens, names, r, schema, out);
                names.pop();
                tokens.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match schema.list_type(r, names) {
            ListType::Atomic => {
                out.insert(tokens.clone());
            }
            ListType::Set => {
                for item in items {
                    let mut p = tokens.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    tokens.push(key_token(item, keys));
                    out.insert(tokens.clone());
                    walk(item, tokens, names, r, schema, out);
                    tokens.pop();
                }
            }
        },
        _ => {
            if !tokens.is_empty() {
                out.insert(tokens.clone());
            }
        }
    }
}

/// The `k:` token of a keyed-list item: its key fields, sorted, as compact JSON.
pub fn key_token(item: &Value, keys: &[&str]) -> String {
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    let mut m = Map::new();
    for k in sorted {
        if let Some(v) = item.get(k) {
            m.insert(k.to_string(), v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

/// Whether `path` runs through a key field of a keyed-list item (such fields go with the item).
pub fn in_key(path: &[String]) -> bool {
    path.windows(2).any(|w| match (step(&w[0]), step(&w[1])) {
        (Some(Step::Key(k)), Some(Step::Field(f))) => k.contains_key(&f),
        _ => false,
    })
}

/// Whether a list `item` is the one a `k:` token names (every key field in the token matches).
pub fn item_matches(item: &Value, key: &Map<String, Value>) -> bool {
    !key.is_empty() && key.iter().all(|(k, v)| item.get(k) == Some(v))
}

enum Step {
    Field(String),
    Key(Map<String, Value>),
    Val(Value),
}

fn step(token: &str) -> Option<Step> {
    let (kind, rest) = token.split_at_checked(2)?;
    match kind {
        "f:" => Some(Step::Field(rest.to_string())),
        "k:" => serde_json::from_str(rest).ok().map(Step::Key),
        "v:" => serde_json::from_str(rest).ok().map(Step::Val),
        _ => None,
    }
}

/// The value at `path`, if present.
pub fn get_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for token in path {
        cur = match step(token)? {
            Step::Field(f) => cur.as_object()?.get(&f)?,
            Step::Key(k) => cur.as_array()?.iter().find(|i| item_matches(i, &k))?,
            Step::Val(v) => cur.as_array()?.iter().find(|i| **i == v)?,
        };
    }
    Some(cur)
}

fn get_at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for token in path {
        cur = match step(token)? {
            Step::Field(f) => cur.as_object_mut()?.get_mut(&f)?,
            Step::Key(k) => cur
                .as_array_mut()?
                .iter_mut()
                .find(|i| item_matches(i, &k))?,
            Step::Val(v) => cur.as_array_mut()?.iter_mut().find(|i| **i == v)?,
        };
    }
    Some(cur)
}

/// Removes the field or list item at `path`, if present.
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(container) = get_at_mut(obj, parent) else {
        return;
    };
    match step(last) {
        Some(Step::Field(f)) => {
            if let Some(m) = container.as_object_mut() {
                m.remove(&f);
            }
        }
        Some(Step::Key(k)) => {
            if let Some(a) = container.as_array_mut() {
                a.retain(|i| !item_matches(i, &k));
            }
        }
        Some(Step::Val(v)) => {
            if let Some(a) = container.as_array_mut() {
                a.retain(|i| *i != v);
            }
        }
        None => {}
    }
}

/// A readable form of a path for conflict messages: `.spec.ports[port=80]`.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for token in path {
        match step(token) {
            Some(Step::Field(f)) => {
                out.push('.');
                out.push_str(&f);
            }
            Some(Step::Key(k)) => {
                let parts: Vec<String> = k.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Some(Step::Val(v)) => out.push_str(&format!("[={v}]")),
            None => out.push_str(token),
        }
    }
    out
}

/// The `fieldsV1` JSON of a set: nested token maps, `"."` marking a member that has children.
pub fn encode(set: &FieldSet) -> Value {
    let mut root = json!({});
    for path in set {
        let mut node = &mut root;
        for token in path {
            node = node
                .as_object_mut()
                .expect("fieldsV1 nodes are objects")
                .entry(token.clone())
                .or_insert_with(|| json!({}));
        }
    }
    for path in set {
        let mut node = &mut root;
        for token in path {
            node = &mut node[token.as_str()];
        }
        let m = node.as_object_mut().expect("fieldsV1 nodes are objects");
        if !m.is_empty() {
            m.insert(".".into(), json!({}));
        }
    }
    root
}

/// The set a `fieldsV1` JSON value encodes.
pub fn decode(fields: &Value) -> FieldSet {
    fn walk(node: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = node.as_object() else { return };
        for (k, child) in m {
            if k == "." {
                out.insert(prefix.clone());
                continue;
            }
            prefix.push(k.clone());
            if child.as_object().is_none_or(Map::is_empty) {
                out.insert(prefix.clone());
            } else {
                walk(child, prefix, out);
            }
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    fn svc() -> &'static ResourceType {
        resources::find("", "v1", "services").unwrap()
    }

    #[test]
    fn sets_round_trip_through_fields_v1() {
        let obj = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
                         "spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}], "clusterIPs": ["1.2.3.4"]}});
        let set = field_set(&obj, svc(), &Schema::default());
        let encoded = encode(&set);
        assert_eq!(
            encoded["f:spec"]["f:ports"]["k:{\"port\":80,\"protocol\":\"TCP\"}"]["."],
            json!({})
        );
        assert_eq!(encoded["f:spec"]["f:clusterIPs"], json!({}));
        assert_eq!(encoded["f:metadata"]["f:finalizers"]["v:\"x\""], json!({}));
        assert_eq!(decode(&encoded), set);
    }

    #[test]
    fn paths_find_and_remove_keyed_items() {
        let mut obj = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}});
        let path: FieldPath = vec!["f:spec".into(), "f:ports".into(), "k:{\"port\":81}".into()];
        assert_eq!(
            get_at(&obj, &path),
            Some(&json!({"port": 81, "protocol": "TCP"}))
        );
        assert_eq!(display(&path), ".spec.ports[port=81]");
        remove_at(&mut obj, &path);
        assert_eq!(
            obj["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP"}])
        );
    }
}
