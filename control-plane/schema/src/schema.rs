//! A CRD version's `openAPIV3Schema`, read into the structural form the API server validates with.
//!
//! Kubernetes: apiextensions-apiserver pkg/apiserver/schema (Structural, NewStructural).

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use crate::rules::Rule;

/// Why an embedded CRD cannot be used; a bug in Lanyard's build, reported by the tests.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: path.to_string(),
        message: message.into(),
    }
}

/// `x-kubernetes-list-type`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// One node of a structural schema.
#[derive(Debug, Default)]
pub(crate) struct Schema {
    /// `type`; empty when unset (only with int-or-string or preserve-unknown-fields).
    pub type_: String,
    pub format: String,
    pub nullable: bool,
    pub int_or_string: bool,
    pub enum_values: Vec<Value>,
    pub pattern: Option<(String, Regex)>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub minimum: Option<f64>,
    pub exclusive_minimum: bool,
    pub maximum: Option<f64>,
    pub exclusive_maximum: bool,
    pub multiple_of: Option<f64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub required: Vec<String>,
    /// Sorted by name, so errors come in a stable order (Go's map order is random).
    pub properties: BTreeMap<String, Schema>,
    pub items: Option<Box<Schema>>,
    pub additional_properties: Option<Box<Schema>>,
    pub any_of: Vec<Schema>,
    pub default: Option<Value>,
    pub list_type: Option<ListType>,
    pub rules: Vec<Rule>,
}

/// Keywords that change what is valid but that no CRD Lanyard ships uses; refused rather than
/// ignored, so a new CRD using them fails the tests instead of validating less.
const UNSUPPORTED: &[&str] = &["allOf", "oneOf", "not", "uniqueItems", "patternProperties"];

impl Schema {
    pub fn parse(value: &Value, path: &str) -> Result<Schema, SchemaError> {
        let Some(node) = value.as_object() else {
            return Err(invalid(path, "a schema must be an object"));
        };
        if let Some(keyword) = UNSUPPORTED.iter().find(|k| node.contains_key(**k)) {
            return Err(invalid(path, format!("`{keyword}` is not supported")));
        }
        let str_of = |key: &str| node.get(key).and_then(Value::as_str).unwrap_or("");
        let bool_of = |key: &str| node.get(key).and_then(Value::as_bool).unwrap_or(false);
        let u64_of = |key: &str| node.get(key).and_then(Value::as_u64);
        let f64_of = |key: &str| node.get(key).and_then(Value::as_f64);

        let pattern = match node.get("pattern").and_then(Value::as_str) {
            Some(p) => Some((
                p.to_string(),
                Regex::new(p).map_err(|e| invalid(path, format!("pattern {p:?}: {e}")))?,
            )),
            None => None,
        };
        let mut properties = BTreeMap::new();
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                properties.insert(
                    name.clone(),
                    Schema::parse(sub, &format!("{path}.properties.{name}"))?,
                );
            }
        }
        let items = match node.get("items") {
            Some(items) => Some(Box::new(Schema::parse(items, &format!("{path}.items"))?)),
            None => None,
        };
        let additional_properties = match node.get("additionalProperties") {
            Some(Value::Object(_)) => Some(Box::new(Schema::parse(
                &node["additionalProperties"],
                &format!("{path}.additionalProperties"),
            )?)),
            // `true` is the default; `false` is not allowed in structural schemas.
            Some(Value::Bool(true)) | None => None,
            Some(_) => {
                return Err(invalid(
                    path,
                    "additionalProperties must be a schema or true",
                ));
            }
        };
        let mut any_of = Vec::new();
        if let Some(list) = node.get("anyOf").and_then(Value::as_array) {
            for (i, sub) in list.iter().enumerate() {
                any_of.push(Schema::parse(sub, &format!("{path}.anyOf[{i}]"))?);
            }
        }
        let list_type = match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            None => None,
            Some("atomic") => Some(ListType::Atomic),
            Some("set") => Some(ListType::Set),
            Some("map") => {
                let keys = node
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    return Err(invalid(path, "list type map without map keys"));
                }
                Some(ListType::Map(keys))
            }
            Some(other) => return Err(invalid(path, format!("unknown list type {other:?}"))),
        };
        let mut rules = Vec::new();
        if let Some(list) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            for (i, rule) in list.iter().enumerate() {
                rules.push(Rule::parse(
                    rule,
                    &format!("{path}.x-kubernetes-validations[{i}]"),
                )?);
            }
        }

        // Structural schemas: a node says its type unless it takes anything.
        if str_of("type").is_empty()
            && !bool_of("x-kubernetes-int-or-string")
            && !bool_of("x-kubernetes-preserve-unknown-fields")
            && !node.contains_key("anyOf")
        {
            return Err(invalid(path, "a schema without a type"));
        }

        Ok(Schema {
            type_: str_of("type").to_string(),
            format: str_of("format").to_string(),
            nullable: bool_of("nullable"),
            int_or_string: bool_of("x-kubernetes-int-or-string"),
            enum_values: node
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            pattern,
            min_length: u64_of("minLength"),
            max_length: u64_of("maxLength"),
            minimum: f64_of("minimum"),
            exclusive_minimum: bool_of("exclusiveMinimum"),
            maximum: f64_of("maximum"),
            exclusive_maximum: bool_of("exclusiveMaximum"),
            multiple_of: f64_of("multipleOf"),
            min_items: u64_of("minItems"),
            max_items: u64_of("maxItems"),
            min_properties: u64_of("minProperties"),
            max_properties: u64_of("maxProperties"),
            required: node
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            properties,
            items,
            additional_properties,
            any_of,
            default: node.get("default").cloned(),
            list_type,
            rules,
        })
    }

    /// Whether this node or any below it has CEL rules.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
            || self
                .properties
                .values()
                .chain(self.items.as_deref())
                .chain(self.additional_properties.as_deref())
                .chain(self.any_of.iter())
                .any(Schema::has_rules)
    }

    /// The schema of a property or of a map value, if the schema says anything about it.
    pub fn property(&self, name: &str) -> Option<&Schema> {
        self.properties
            .get(name)
            .or(self.additional_properties.as_deref())
    }
}
