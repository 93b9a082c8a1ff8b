//! `labelSelector` and `fieldSelector` query parameters.
//!
//! Label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, joined by
//! commas. Field selectors: `path=v`, `path==v`, `path!=v` joined by commas, where `path` is any
//! dotted path into the object (`metadata.name`, `metadata.namespace`, `spec.nodeName`, ...);
//! a real server allows only a few paths per kind, this one allows all.

use serde_json::Value;

use crate::api_error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label and field selector pair; empty selectors match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Selector, ApiError> {
        Ok(Selector {
            labels: parse_labels(labels.unwrap_or(""))?,
            fields: parse_fields(fields.unwrap_or(""))?,
        })
    }

    /// A selector for one object name (`fieldSelector=metadata.name=NAME`).
    pub fn with_name(mut self, name: &str) -> Selector {
        self.fields
            .push(Requirement::Equals("metadata.name".into(), name.into()));
        self
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let field = |path: &str| -> Option<String> {
            let mut cur = obj;
            for part in path.split('.') {
                cur = cur.get(part)?;
            }
            Some(match cur {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        self.labels
            .iter()
            .all(|r| holds(r, |k| label(k).map(str::to_string)))
            && self.fields.iter().all(|r| match r {
                // A missing field compares as the empty string, as on a real server.
                Requirement::Equals(k, v) => field(k).unwrap_or_default() == *v,
                Requirement::NotEquals(k, v) => field(k).unwrap_or_default() != *v,
                other => holds(other, field),
            })
    }
}

fn holds(r: &Requirement, get: impl Fn(&str) -> Option<String>) -> bool {
    match r {
        Requirement::Equals(k, v) => get(k).as_deref() == Some(v),
        Requirement::NotEquals(k, v) => get(k).as_deref() != Some(v),
        Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
        Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
        Requirement::Exists(k) => get(k).is_some(),
        Requirement::NotExists(k) => get(k).is_none(),
    }
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_labels(s: &str) -> Result<Vec<Requirement>, ApiError> {
    split_terms(s).into_iter().map(parse_label_term).collect()
}

fn parse_label_term(t: &str) -> Result<Requirement, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "unable to parse requirement: invalid label selector {t:?}"
        ))
    };
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    for (op, notin) in [(" notin ", true), (" in ", false)] {
        if let Some((k, rest)) = t.split_once(op) {
            let values = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?
                .split(',')
                .map(|v| v.trim().to_string())
                .collect();
            let k = k.trim().to_string();
            return Ok(if notin {
                Requirement::NotIn(k, values)
            } else {
                Requirement::In(k, values)
            });
        }
    }
    if let Some(k) = t.strip_prefix('!') {
        return Ok(Requirement::NotExists(k.trim().into()));
    }
    if t.contains(char::is_whitespace) || t.contains('(') {
        return Err(bad());
    }
    Ok(Requirement::Exists(t.into()))
}

fn parse_fields(s: &str) -> Result<Vec<Requirement>, ApiError> {
    split_terms(s)
        .into_iter()
        .map(|t| {
            if let Some((k, v)) = t.split_once("!=") {
                Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Ok(Requirement::Equals(k.trim().into(), v.trim().into()))
            } else {
                Err(ApiError::bad_request(format!(
                    "invalid field selector: {t:?}"
                )))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj() -> Value {
        json!({"metadata": {"name": "a", "namespace": "n", "labels": {"app": "web", "tier": "fe"}}, "spec": {"nodeName": "x"}})
    }

    fn sel(l: &str, f: &str) -> Selector {
        Selector::parse(Some(l), Some(f)).unwrap()
    }

    #[test]
    fn label_selectors() {
        assert!(sel("app=web", "").matches(&obj()));
        assert!(sel("app==web,tier", "").matches(&obj()));
        assert!(!sel("app!=web", "").matches(&obj()));
        assert!(sel("app in (api, web),!missing", "").matches(&obj()));
        assert!(!sel("tier notin (fe)", "").matches(&obj()));
        assert!(!sel("missing", "").matches(&obj()));
        assert!(Selector::parse(Some("a in b"), None).is_err());
    }

    #[test]
    fn field_selectors() {
        assert!(sel("", "metadata.name=a").matches(&obj()));
        assert!(!sel("", "metadata.name=b").matches(&obj()));
        assert!(sel("", "metadata.namespace==n,spec.nodeName!=y").matches(&obj()));
        assert!(!Selector::default().with_name("z").matches(&obj()));
    }
}
