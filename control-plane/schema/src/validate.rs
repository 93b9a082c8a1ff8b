//! OpenAPI v3 validation and list-type checks, worded as the API server words them.
//!
//! Kubernetes: kube-openapi pkg/validation/validate (schema.go: the order of the validators;
//! type.go, validator.go, slice_validator.go, object_validator.go) and
//! pkg/validation/errors/schema.go (messages); apiextensions-apiserver
//! pkg/apiserver/validation/validation.go (kubeOpenAPIResultToFieldErrors: how they become field
//! errors) and pkg/apiserver/schema/listtype/validation.go (sets and maps).

use std::collections::HashMap;

use serde_json::Value;

use crate::field::{BadValue, ErrorType, FieldError, Path, go_quote};
use crate::schema::{ListType, Schema};

/// kube-openapi validates the request body: every message says "in body".
const IN: &str = "in body";

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): `65535`, `1e+06`, `0.5`.
pub(crate) fn go_float(f: f64) -> String {
    let exponent = if f == 0.0 {
        0
    } else {
        f.abs().log10().floor() as i32
    };
    // Go switches to an exponent when it is below -4 or at least 6 (strconv/ftoa.go, %g shortest).
    if (-4..6).contains(&exponent) {
        return format!("{f}");
    }
    // Rust writes `1e6` / `1.5e-7`; Go writes `1e+06` / `1.5e-07`.
    let rust = format!("{f:e}");
    match rust.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ("-", d),
                None => ("+", exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => rust,
    }
}

fn types_of(schema: &Schema) -> String {
    if schema.int_or_string {
        "integer,string".to_string()
    } else {
        schema.type_.clone()
    }
}

fn type_matches(schema: &Schema, value: &Value) -> bool {
    let actual = json_type(value);
    if schema.int_or_string {
        return matches!(actual, "integer" | "string")
            || value.as_f64().is_some_and(|f| f.fract() == 0.0);
    }
    match schema.type_.as_str() {
        "" => true,
        "integer" => {
            actual == "integer"
                || (actual == "number" && value.as_f64().is_some_and(|f| f.fract() == 0.0))
        }
        "number" => matches!(actual, "integer" | "number"),
        t => t == actual,
    }
}

/// `{path} in body must be of type {type}: "{value}"`, as an `Invalid value` holding `value`.
fn type_error(path: &Path, type_name: &str, value: &str) -> FieldError {
    FieldError::new(
        ErrorType::TypeInvalid,
        path.as_str(),
        BadValue::Value(Value::String(value.to_string())),
        format!(
            "{} {IN} must be of type {type_name}: {}",
            path.as_str(),
            go_quote(value)
        ),
    )
}

fn invalid(path: &Path, value: Value, detail: String) -> FieldError {
    FieldError::new(
        ErrorType::Invalid,
        path.as_str(),
        BadValue::Value(value),
        detail,
    )
}

fn count(n: usize) -> Value {
    Value::from(n as u64)
}

/// Validates `value` against `schema`, appending errors in the API server's order.
pub(crate) fn openapi(value: &Value, schema: &Schema, path: &Path, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if !schema.nullable && (!schema.type_.is_empty() || schema.int_or_string) {
            errors.push(type_error(path, &types_of(schema), "null"));
        }
        return;
    }
    if !type_matches(schema, value) {
        errors.push(type_error(path, &types_of(schema), json_type(value)));
        return;
    }

    if !schema.any_of.is_empty() {
        let any_valid = schema.any_of.iter().any(|branch| {
            let mut branch_errors = Vec::new();
            openapi(value, branch, path, &mut branch_errors);
            branch_errors.is_empty()
        });
        if !any_valid {
            errors.push(FieldError::new(
                ErrorType::Invalid,
                "<nil>",
                BadValue::Value(Value::String(String::new())),
                format!(
                    "{} must validate at least one schema (anyOf)",
                    path.as_str()
                ),
            ));
        }
    }

    match value {
        Value::String(s) => {
            if let Some(e) = string_error(s, schema, path) {
                errors.push(e);
            }
            if let Some(e) = format_error(s, schema, path) {
                errors.push(e);
            }
        }
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                number_errors(value, f, schema, path, errors);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.items.as_deref() {
                for (i, item) in items.iter().enumerate() {
                    openapi(item, item_schema, &path.index(i), errors);
                }
            }
            if let Some(min) = schema.min_items
                && (items.len() as u64) < min
            {
                errors.push(invalid(
                    path,
                    count(items.len()),
                    format!("{} {IN} should have at least {min} items", path.as_str()),
                ));
            }
            if let Some(max) = schema.max_items
                && (items.len() as u64) > max
            {
                errors.push(too_many(path, items.len(), max));
            }
        }
        _ => {}
    }

    if !schema.enum_values.is_empty() && !schema.enum_values.iter().any(|e| same(e, value)) {
        let supported: Vec<String> = schema
            .enum_values
            .iter()
            .map(|e| match e {
                Value::String(s) => go_quote(s),
                other => go_quote(&other.to_string()),
            })
            .collect();
        errors.push(FieldError::new(
            ErrorType::NotSupported,
            path.as_str(),
            BadValue::Value(value.clone()),
            format!("supported values: {}", supported.join(", ")),
        ));
    }

    if let Value::Object(map) = value {
        let n = map.len();
        if let Some(min) = schema.min_properties
            && (n as u64) < min
        {
            errors.push(invalid(
                path,
                count(n),
                format!(
                    "{} {IN} should have at least {min} properties",
                    path.as_str()
                ),
            ));
        }
        if let Some(max) = schema.max_properties
            && (n as u64) > max
        {
            errors.push(too_many(path, n, max));
        }
        if let Some(additional) = schema.additional_properties.as_deref() {
            for (key, v) in map {
                if !schema.properties.contains_key(key) {
                    openapi(v, additional, &path.child(key), errors);
                }
            }
        }
        for (name, prop) in &schema.properties {
            if let Some(v) = map.get(name) {
                openapi(v, prop, &path.child(name), errors);
            }
        }
        for name in &schema.required {
            if !map.contains_key(name) {
                errors.push(FieldError::new(
                    ErrorType::Required,
                    path.child(name).as_str(),
                    BadValue::Value(Value::String(String::new())),
                    "",
                ));
            }
        }
    }
}

fn too_many(path: &Path, actual: usize, max: u64) -> FieldError {
    let noun = if max == 1 { "item" } else { "items" };
    FieldError::new(
        ErrorType::TooMany,
        path.as_str(),
        BadValue::Value(count(actual)),
        format!("must have at most {max} {noun}"),
    )
}

/// Equality as Go's `reflect.DeepEqual` after conversion sees it: numbers by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The first of maxLength, minLength, pattern that fails (kube-openapi stops at the first).
fn string_error(s: &str, schema: &Schema, path: &Path) -> Option<FieldError> {
    // Lengths count Unicode code points (kube-openapi: validate/values.go, utf8.RuneCountInString).
    let len = s.chars().count() as u64;
    if let Some(max) = schema.max_length
        && len > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        // Kubernetes: field.TooLong omits the value.
        return Some(FieldError::new(
            ErrorType::TooLong,
            path.as_str(),
            BadValue::Value(Value::String("<value omitted>".to_string())),
            format!("may not be more than {max} {unit}"),
        ));
    }
    if let Some(min) = schema.min_length
        && len < min
    {
        return Some(invalid(
            path,
            Value::String(s.to_string()),
            format!("{} {IN} should be at least {min} chars long", path.as_str()),
        ));
    }
    if let Some((source, regex)) = &schema.pattern
        && !regex.is_match(s)
    {
        return Some(invalid(
            path,
            Value::String(s.to_string()),
            format!("{} {IN} should match '{source}'", path.as_str()),
        ));
    }
    None
}

/// The string formats the API server checks that the shipped CRDs use.
// Kubernetes: apiextensions-apiserver pkg/apiserver/validation/formats.go (supported formats)
// and kube-openapi pkg/validation/strfmt (what each accepts).
fn format_error(s: &str, schema: &Schema, path: &Path) -> Option<FieldError> {
    if !(schema.type_ == "string" || schema.type_.is_empty()) {
        return None;
    }
    let valid = match schema.format.replace('-', "").as_str() {
        "datetime" => is_date_time(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "k8sshortname" => is_dns_label(s, false),
        "k8slongname" => {
            s.len() <= 253 && !s.is_empty() && s.split('.').all(|l| is_dns_label(l, true))
        }
        _ => true,
    };
    if valid {
        return None;
    }
    Some(FieldError::new(
        ErrorType::TypeInvalid,
        path.as_str(),
        BadValue::Value(Value::String(s.to_string())),
        format!(
            "{} {IN} must be of type {}: {}",
            path.as_str(),
            schema.format,
            go_quote(s)
        ),
    ))
}

fn is_dns_label(s: &str, any_length: bool) -> bool {
    !s.is_empty()
        && (any_length || s.len() <= 63)
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 3339 date-time, as strfmt's `IsDateTime` accepts it (`T`, `t` or a space between).
fn is_date_time(s: &str) -> bool {
    let normalised: String = s
        .char_indices()
        .map(|(i, c)| {
            if i == 10 && (c == ' ' || c == 't') {
                'T'
            } else {
                c
            }
        })
        .collect();
    chrono::DateTime::parse_from_rfc3339(&normalised).is_ok()
}

fn number_errors(
    value: &Value,
    f: f64,
    schema: &Schema,
    path: &Path,
    errors: &mut Vec<FieldError>,
) {
    // kube-openapi checks that an int32 fits first (validate/values.go, IsValueValidAgainstRange);
    // its plain error becomes an `Invalid value` of the whole object (validation.go).
    if schema.type_ == "integer"
        && schema.format == "int32"
        && !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&f)
    {
        errors.push(FieldError::new(
            ErrorType::Invalid,
            "<nil>",
            BadValue::Value(Value::String(String::new())),
            format!(
                "Checked value must be of type integer with format int32 in {}",
                path.as_str()
            ),
        ));
    }
    if let Some(factor) = schema.multiple_of
        && factor > 0.0
        && (f / factor).fract() != 0.0
    {
        errors.push(invalid(
            path,
            value.clone(),
            format!(
                "{} {IN} should be a multiple of {}",
                path.as_str(),
                go_float(factor)
            ),
        ));
    }
    if let Some(min) = schema.minimum {
        let fails = if schema.exclusive_minimum {
            f <= min
        } else {
            f < min
        };
        if fails {
            let relation = if schema.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(invalid(
                path,
                value.clone(),
                format!(
                    "{} {IN} should be {relation} {}",
                    path.as_str(),
                    go_float(min)
                ),
            ));
        }
    }
    if let Some(max) = schema.maximum {
        let fails = if schema.exclusive_maximum {
            f >= max
        } else {
            f > max
        };
        if fails {
            let relation = if schema.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(invalid(
                path,
                value.clone(),
                format!(
                    "{} {IN} should be {relation} {}",
                    path.as_str(),
                    go_float(max)
                ),
            ));
        }
    }
}

/// `x-kubernetes-list-type: set` and `map`: duplicates are errors, at the second occurrence.
pub(crate) fn list_types(
    value: &Value,
    schema: &Schema,
    path: &Path,
    errors: &mut Vec<FieldError>,
) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if let Some(prop) = schema.properties.get(key) {
                    list_types(v, prop, &path.child(key), errors);
                } else if let Some(additional) = schema.additional_properties.as_deref() {
                    list_types(v, additional, &path.key(key), errors);
                }
            }
        }
        Value::Array(items) => {
            match &schema.list_type {
                Some(ListType::Set) => {
                    for i in first_repeats(items.iter()) {
                        errors.push(duplicate(path.index(i), items[i].clone()));
                    }
                }
                Some(ListType::Map(keys)) => map_list_errors(items, keys, path, errors),
                Some(ListType::Atomic) | None => {}
            }
            if let Some(item_schema) = schema.items.as_deref() {
                for (i, item) in items.iter().enumerate() {
                    list_types(item, item_schema, &path.index(i), errors);
                }
            }
        }
        _ => {}
    }
}

fn duplicate(path: Path, value: Value) -> FieldError {
    FieldError::new(
        ErrorType::Duplicate,
        path.as_str(),
        BadValue::Value(value),
        "",
    )
}

/// Indices of the second occurrence of each repeated value (Kubernetes: validateListSet).
fn first_repeats<'a>(values: impl Iterator<Item = &'a Value>) -> Vec<usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut repeats = Vec::new();
    for (i, v) in values.enumerate() {
        let times = seen.entry(canonical(v)).or_default();
        *times += 1;
        if *times == 2 {
            repeats.push(i);
        }
    }
    repeats
}

/// A key for equality: numbers by value, objects with sorted keys (serde_json's default map).
fn canonical(value: &Value) -> String {
    match value {
        Value::Number(n) => n.as_f64().map(|f| f.to_string()).unwrap_or_default(),
        other => other.to_string(),
    }
}

// Kubernetes: apiextensions-apiserver pkg/apiserver/schema/listtype/validation.go (validateListMap)
fn map_list_errors(items: &[Value], keys: &[String], path: &Path, errors: &mut Vec<FieldError>) {
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() && !item.is_null() {
            errors.push(invalid(
                &path.index(i),
                item.clone(),
                "must be an object for an array of list-type map".to_string(),
            ));
            return;
        }
    }
    // Each item's key: the key fields it has (an absent field is left out, so it compares
    // equal only to another item without it).
    let item_keys: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut key = serde_json::Map::new();
            if let Some(map) = item.as_object() {
                for k in keys {
                    if let Some(v) = map.get(k) {
                        key.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(key)
        })
        .collect();
    for i in first_repeats(item_keys.iter()) {
        errors.push(duplicate(path.index(i), item_keys[i].clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_prints_them() {
        assert_eq!(go_float(65535.0), "65535");
        assert_eq!(go_float(100000.0), "100000");
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(-1.0), "-1");
    }
}
