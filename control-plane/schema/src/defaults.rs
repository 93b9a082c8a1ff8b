//! Defaulting, as the API server applies it when it decodes a custom resource.

use serde_json::Value;

use crate::schema::Schema;

/// Removes nulls the schema neither allows nor defaults.
// Kubernetes: apiextensions-apiserver pkg/apiserver/schema/defaulting/prunenulls.go
// (PruneNonNullableNullsWithoutDefaults)
pub(crate) fn prune_nulls(value: &mut Value, schema: Option<&Schema>) {
    match value {
        Value::Object(map) => {
            map.retain(|key, v| {
                let sub = schema.and_then(|s| s.property(key));
                !(v.is_null() && sub.is_some_and(|s| !s.nullable && s.default.is_none()))
            });
            for (key, v) in map.iter_mut() {
                prune_nulls(v, schema.and_then(|s| s.property(key)));
            }
        }
        Value::Array(items) => {
            let sub = schema.and_then(|s| s.items.as_deref());
            for item in items {
                prune_nulls(item, sub);
            }
        }
        _ => {}
    }
}

fn is_non_nullable_null(value: &Value, schema: &Schema) -> bool {
    value.is_null() && !schema.nullable
}

/// Fills in defaults: a property's default only inside an object that is there, then
/// recursively into every property (defaulted or not) and list item.
// Kubernetes: apiextensions-apiserver pkg/apiserver/schema/defaulting/algorithm.go (Default)
pub(crate) fn apply(value: &mut Value, schema: &Schema) {
    match value {
        Value::Object(map) => {
            for (key, prop) in &schema.properties {
                let Some(default) = &prop.default else {
                    continue;
                };
                match map.get(key) {
                    Some(v) if !is_non_nullable_null(v, prop) => {}
                    _ => {
                        map.insert(key.clone(), default.clone());
                    }
                }
            }
            for (key, v) in map.iter_mut() {
                if let Some(prop) = schema.properties.get(key) {
                    apply(v, prop);
                } else if let Some(additional) = schema.additional_properties.as_deref() {
                    if is_non_nullable_null(v, additional)
                        && let Some(default) = &additional.default
                    {
                        *v = default.clone();
                    }
                    apply(v, additional);
                }
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = schema.items.as_deref() else {
                return;
            };
            for item in items {
                if is_non_nullable_null(item, item_schema)
                    && let Some(default) = &item_schema.default
                {
                    *item = default.clone();
                }
                apply(item, item_schema);
            }
        }
        _ => {}
    }
}
