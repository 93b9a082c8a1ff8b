//! `x-kubernetes-validations`: CEL rules, evaluated with `self` bound to the node.
//!
//! Kubernetes: apiextensions-apiserver pkg/apiserver/schema/cel/validation.go
//! (Validator.validate, validateExpressions, fieldErrorForReason, ruleMessageOrDefault,
//! ruleErrorString) and pkg/apiserver/schema/cel/model (property name escaping).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::objects::Key;
use cel::{Context, Env, Program};
use serde_json::Value;

use crate::field::{BadValue, ErrorType, FieldError, Path};
use crate::schema::{Schema, SchemaError};

/// The functions (and operators) a rule may call: those the shipped CRDs use, which the `cel`
/// crate implements as Kubernetes' CEL environment does. Macros (`has`, `all`, `exists`,
/// `exists_one`, `filter`, `map`) are expanded by the parser and never show up here.
/// Anything else makes the rule fail with a message naming it, instead of passing unchecked.
const KNOWN_FUNCTIONS: &[&str] = &[
    "size",
    "matches",
    "startsWith",
    "endsWith",
    "contains",
    "duration",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "type",
    // Operators, as the parser names them.
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_&&_",
    "_||_",
    "!_",
    "-_",
    "_+_",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "_?_:_",
    "_[_]",
    "@in",
    "@not_strictly_false",
];

/// One rule, compiled once.
#[derive(Debug)]
pub(crate) struct Rule {
    pub rule: String,
    pub message: String,
    pub message_expression: Option<(String, Program)>,
    /// `fieldPath`, normalised to a child path (`.spec.x` -> `spec.x`).
    pub field_path: Option<String>,
    pub reason: Option<String>,
    /// The compiled rule, or why it cannot be evaluated.
    pub program: Result<Program, String>,
    /// Transition rules compare with the stored object; without one they are not run.
    pub uses_old_self: bool,
}

fn compile(source: &str) -> Result<Program, String> {
    let program = ENV.compile(source).map_err(|e| e.to_string())?;
    let references = program.references();
    let mut unknown: Vec<&str> = references
        .functions()
        .into_iter()
        .filter(|f| !KNOWN_FUNCTIONS.contains(f))
        .collect();
    unknown.sort_unstable();
    if let Some(first) = unknown.first() {
        return Err(format!("undeclared reference to '{first}'"));
    }
    Ok(program)
}

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

impl Rule {
    pub fn parse(value: &Value, path: &str) -> Result<Rule, SchemaError> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
        let Some(rule) = text("rule") else {
            return Err(SchemaError::Invalid {
                path: path.to_string(),
                message: "a validation rule needs `rule`".to_string(),
            });
        };
        let program = compile(&rule);
        let uses_old_self = program
            .as_ref()
            .is_ok_and(|p| p.references().has_variable("oldSelf"));
        let message_expression = match text("messageExpression") {
            Some(source) => match compile(&source) {
                Ok(program) => Some((source, program)),
                Err(e) => {
                    return Err(SchemaError::Invalid {
                        path: path.to_string(),
                        message: format!("messageExpression {source:?}: {e}"),
                    });
                }
            },
            None => None,
        };
        Ok(Rule {
            message: text("message").unwrap_or_default(),
            message_expression,
            field_path: text("fieldPath").map(|p| p.trim_start_matches('.').to_string()),
            reason: text("reason"),
            program,
            uses_old_self,
            rule,
        })
    }

    /// The rule's message, or `failed rule: <rule>` without one.
    fn message_or_default(&self) -> String {
        let message = self.message.trim();
        if message.is_empty() {
            format!("failed rule: {}", self.rule.trim())
        } else {
            message.to_string()
        }
    }

    /// How errors about the rule name it: its message, or the rule without one.
    fn error_string(&self) -> &str {
        let message = self.message.trim();
        if message.is_empty() {
            self.rule.trim()
        } else {
            message
        }
    }
}

/// Evaluates every rule on `value` and below it: a node's own rules, then its items or
/// properties.
pub(crate) fn validate(value: &Value, schema: &Schema, path: &Path, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        return;
    }
    if !schema.rules.is_empty() {
        evaluate(value, schema, path, errors);
    }
    match value {
        Value::Array(items) => {
            if let Some(item_schema) = schema.items.as_deref() {
                for (i, item) in items.iter().enumerate() {
                    validate(item, item_schema, &path.index(i), errors);
                }
            }
        }
        Value::Object(map) => {
            if let Some(additional) = schema.additional_properties.as_deref() {
                for (key, v) in map {
                    validate(v, additional, &path.key(key), errors);
                }
            }
            for (name, prop) in &schema.properties {
                if let Some(v) = map.get(name) {
                    validate(v, prop, &path.child(name), errors);
                }
            }
        }
        _ => {}
    }
}

fn evaluate(value: &Value, schema: &Schema, path: &Path, errors: &mut Vec<FieldError>) {
    // An error about a rule that could not run carries the schema's type as its value.
    let type_value = BadValue::Value(Value::String(schema.type_.clone()));
    let mut context = Context::with_env(ENV.clone());
    context.add_variable_from_value("self", to_cel(value, Some(schema)));
    for rule in &schema.rules {
        if rule.uses_old_self {
            continue;
        }
        let program = match &rule.program {
            Ok(program) => program,
            Err(e) => {
                errors.push(FieldError::new(
                    ErrorType::Invalid,
                    path.as_str(),
                    type_value.clone(),
                    format!("rule compile error: {e} (rule: {})", rule.rule.trim()),
                ));
                continue;
            }
        };
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => continue,
            Ok(cel::Value::Bool(false)) => {}
            Ok(other) => {
                errors.push(FieldError::new(
                    ErrorType::Invalid,
                    path.as_str(),
                    type_value.clone(),
                    format!(
                        "rule returned {other:?} instead of a bool evaluating rule: {}",
                        rule.error_string()
                    ),
                ));
                continue;
            }
            Err(e) => {
                errors.push(FieldError::new(
                    ErrorType::Invalid,
                    path.as_str(),
                    type_value.clone(),
                    format!("{e} evaluating rule: {}", rule.error_string()),
                ));
                continue;
            }
        }

        let field = match &rule.field_path {
            Some(child) if !child.is_empty() => path.child(child),
            _ => path.clone(),
        };
        let detail = rule
            .message_expression
            .as_ref()
            .and_then(|(_, program)| match program.execute(&context) {
                Ok(cel::Value::String(s)) => {
                    let s = s.trim();
                    (!s.is_empty() && !s.contains('\n')).then(|| s.to_string())
                }
                _ => None,
            })
            .unwrap_or_else(|| rule.message_or_default());
        // Objects and lists are not printed.
        let bad_value = if matches!(schema.type_.as_str(), "object" | "array") {
            BadValue::Omitted
        } else {
            BadValue::Value(value.clone())
        };
        errors.push(match rule.reason.as_deref() {
            Some("FieldValueForbidden") => {
                FieldError::new(ErrorType::Forbidden, field.as_str(), bad_value, detail)
            }
            Some("FieldValueRequired") => {
                FieldError::new(ErrorType::Required, field.as_str(), bad_value, detail)
            }
            Some("FieldValueDuplicate") => {
                FieldError::new(ErrorType::Duplicate, field.as_str(), bad_value, "")
            }
            _ => FieldError::new(ErrorType::Invalid, field.as_str(), bad_value, detail),
        });
    }
}

/// CEL's reserved words: a property with one of these names is `__name__` in rules.
const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// A property name as rules see it: reserved words as `__word__`, and `__`, `.`, `-`, `/`
/// spelt out. `None` for names rules cannot reach.
// Kubernetes: apiserver pkg/cel/escaping.go (Escape)
pub(crate) fn escape(name: &str) -> Option<String> {
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '.' | '-' | '/'));
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
    if !first_ok || !rest_ok {
        return None;
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("__") {
            out.push_str("__underscores__");
            rest = after;
            continue;
        }
        match c {
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(out)
}

/// A JSON value as a CEL value; properties of objects with a schema get escaped names, map
/// keys (additionalProperties) stay as they are.
// Kubernetes: apiextensions-apiserver pkg/apiserver/schema/cel/values.go (UnstructuredToVal)
fn to_cel(value: &Value, schema: Option<&Schema>) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            let integer = schema.is_some_and(|s| s.type_ == "integer" || s.int_or_string);
            match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => cel::Value::Int(i),
                (None, Some(u), _) => cel::Value::UInt(u),
                (None, None, Some(f)) if integer && f.fract() == 0.0 => cel::Value::Int(f as i64),
                (None, None, Some(f)) => cel::Value::Float(f),
                (None, None, None) => cel::Value::Null,
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.items.as_deref());
            cel::Value::List(Arc::new(
                items.iter().map(|i| to_cel(i, item_schema)).collect(),
            ))
        }
        Value::Object(map) => {
            let mut out: HashMap<Key, cel::Value> = HashMap::with_capacity(map.len());
            for (key, v) in map {
                let (name, sub) = match schema {
                    Some(s) if s.properties.contains_key(key) => {
                        let Some(name) = escape(key) else { continue };
                        (name, s.properties.get(key))
                    }
                    Some(s) => (key.clone(), s.additional_properties.as_deref()),
                    None => (key.clone(), None),
                };
                out.insert(Key::from(name), to_cel(v, sub));
            }
            cel::Value::from(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_kubernetes_escapes_them() {
        assert_eq!(escape("namespace").as_deref(), Some("__namespace__"));
        assert_eq!(escape("a-b").as_deref(), Some("a__dash__b"));
        assert_eq!(escape("a.b/c").as_deref(), Some("a__dot__b__slash__c"));
        assert_eq!(escape("a__b").as_deref(), Some("a__underscores__b"));
        assert_eq!(escape("name").as_deref(), Some("name"));
        assert_eq!(escape("1a"), None);
        assert_eq!(escape("a b"), None);
    }

    #[test]
    fn an_unknown_function_is_a_compile_error_naming_it() {
        let e = compile("self.isFoo()").unwrap_err();
        assert_eq!(e, "undeclared reference to 'isFoo'");
    }
}
