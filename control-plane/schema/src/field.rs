//! Field errors worded as the API server words them.
//!
//! Kubernetes: apimachinery pkg/util/validation/field/errors.go (`Error.Error`, `ErrorBody`,
//! `ErrorType.String`) and pkg/util/validation/field/path.go (`Path.String`).

use std::fmt;

/// Which kind of problem a [`FieldError`] is; `Display` gives the API server's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Duplicate,
    Invalid,
    /// A value of the wrong JSON type (shown as `Invalid value`, like the API server).
    TypeInvalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
        })
    }
}

/// The offending value as the API server prints it.
#[derive(Clone, Debug, PartialEq)]
pub enum BadValue {
    /// Not printed (objects and lists in CEL errors, too-long strings).
    Omitted,
    /// Printed: strings quoted, numbers and booleans bare, anything else as JSON.
    Value(serde_json::Value),
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub error_type: ErrorType,
    /// `spec.rules[0].matches[0].path`; `<nil>` for errors about the whole object.
    pub field: String,
    pub bad_value: BadValue,
    pub detail: String,
}

impl FieldError {
    pub(crate) fn new(
        error_type: ErrorType,
        field: &str,
        bad_value: BadValue,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            error_type,
            field: field.to_string(),
            bad_value,
            detail: detail.into(),
        }
    }

    /// The message without the field, as in a `StatusCause`.
    pub fn body(&self) -> String {
        // Kubernetes: field/errors.go (Error.ErrorBody): some types never print the value.
        let mut body = match (self.error_type, &self.bad_value) {
            (ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong, _)
            | (_, BadValue::Omitted) => self.error_type.to_string(),
            (_, BadValue::Value(value)) => format!("{}: {}", self.error_type, go_value(value)),
        };
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }

    /// Whether the API server skips CEL rules after this error.
    // Kubernetes: apiextensions-apiserver pkg/registry/customresource/strategy.go (hasBlockingErr)
    pub(crate) fn blocks_cel(&self) -> bool {
        matches!(
            self.error_type,
            ErrorType::NotSupported
                | ErrorType::Required
                | ErrorType::TooLong
                | ErrorType::TooMany
                | ErrorType::TypeInvalid
        )
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// A value as Go's `%v` (numbers, booleans), `%q` (strings) or `json.Marshal` (the rest) prints it.
pub(crate) fn go_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => go_quote(s),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// Go's `strconv.Quote` for the characters YAML values hold.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A field path being built, printed as `field.Path` prints it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Path(String);

impl Path {
    pub fn child(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    pub fn key(&self, key: &str) -> Path {
        Path(format!("{}[{key}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_read_as_the_api_server_writes_them() {
        let too_many = FieldError::new(
            ErrorType::TooMany,
            "spec.rules",
            BadValue::Value(json!(17)),
            "must have at most 16 items",
        );
        assert_eq!(
            too_many.to_string(),
            "spec.rules: Too many: 17: must have at most 16 items"
        );
        let required = FieldError::new(
            ErrorType::Required,
            "spec.x",
            BadValue::Value(json!("")),
            "",
        );
        assert_eq!(required.to_string(), "spec.x: Required value");
        let invalid = FieldError::new(
            ErrorType::Invalid,
            "spec.x",
            BadValue::Value(json!("a\"b")),
            "bad",
        );
        assert_eq!(invalid.to_string(), r#"spec.x: Invalid value: "a\"b": bad"#);
        let omitted = FieldError::new(ErrorType::Invalid, "spec", BadValue::Omitted, "no");
        assert_eq!(omitted.to_string(), "spec: Invalid value: no");
        let dup = FieldError::new(
            ErrorType::Duplicate,
            "spec.l[1]",
            BadValue::Value(json!({"name": "a"})),
            "",
        );
        assert_eq!(
            dup.to_string(),
            r#"spec.l[1]: Duplicate value: {"name":"a"}"#
        );
    }

    #[test]
    fn paths_print_like_field_path() {
        let p = Path::default()
            .child("spec")
            .child("rules")
            .index(0)
            .key("k");
        assert_eq!(p.as_str(), "spec.rules[0][k]");
    }
}
