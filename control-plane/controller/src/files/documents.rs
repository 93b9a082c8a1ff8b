//! One file's text into objects and diagnostics.

use std::collections::BTreeMap;
use std::path::Path;

use lanyard_index::{Object, ParseError, Parsed, parse_value};
use serde::Deserialize;

use crate::diagnostics::Diagnostic;

/// What one file gave.
#[derive(Debug, Default)]
pub(crate) struct FileContents {
    /// The objects of every document that parsed, in document order.
    pub objects: Vec<Object>,
    pub diagnostics: Vec<Diagnostic>,
    /// Documents of kinds that do not affect the mesh (Deployment, ...), by kind.
    pub unused: BTreeMap<String, usize>,
}

impl FileContents {
    /// Whether any document of the file failed.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Splits a multi-document YAML text and parses every document.
///
/// A YAML syntax error ends the file: the documents before it are kept, nothing after it
/// is read (the YAML parser cannot find its way back).
pub(crate) fn parse_file(file: &Path, text: &str, default_namespace: &str) -> FileContents {
    let mut contents = FileContents::default();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let value = match serde_json::Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                contents.diagnostics.push(Diagnostic::error(
                    file,
                    format!(
                        "document {number}: invalid YAML: {e} (the rest of the file is not read)"
                    ),
                ));
                break;
            }
        };
        // `---` with nothing (or only comments) after it.
        if value.is_null() {
            continue;
        }
        parse_document(file, number, value, default_namespace, &mut contents);
    }
    contents
}

fn parse_document(
    file: &Path,
    number: usize,
    value: serde_json::Value,
    default_namespace: &str,
    contents: &mut FileContents,
) {
    // A List's items are checked and named one by one, as `kubectl apply` sends them.
    if is_list(&value) {
        let items = match value {
            serde_json::Value::Object(mut map) => map.remove("items"),
            _ => None,
        };
        if let Some(serde_json::Value::Array(items)) = items {
            for item in items {
                parse_object(file, number, item, default_namespace, contents);
            }
        }
        return;
    }
    parse_object(file, number, value, default_namespace, contents);
}

/// Whether `parse_value` would read this document as a List of objects.
fn is_list(value: &serde_json::Value) -> bool {
    value
        .get("apiVersion")
        .is_some_and(serde_json::Value::is_string)
        && value
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(serde_json::Value::is_array)
}

/// Defaults and validates an object of a kind Lanyard ships a CRD for, as the API server
/// would before anyone could read it; other kinds pass unchanged.
fn admit(value: &mut serde_json::Value) -> Result<(), lanyard_schema::Invalid> {
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    let kind = value.get("kind").and_then(|v| v.as_str());
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return Ok(());
    };
    match lanyard_schema::crds().schema(api_version, kind) {
        Some(schema) => schema.default_and_validate(value),
        None => Ok(()),
    }
}

fn parse_object(
    file: &Path,
    number: usize,
    mut value: serde_json::Value,
    default_namespace: &str,
    contents: &mut FileContents,
) {
    let label = describe(&value, default_namespace);
    let with_label = |d: Diagnostic| match &label {
        Some(label) => d.with_object(label.clone()),
        None => d,
    };
    if let Err(invalid) = admit(&mut value) {
        contents.diagnostics.push(with_label(Diagnostic::error(
            file,
            format!("document {number}: {invalid}"),
        )));
        return;
    }
    for result in parse_value(value, default_namespace) {
        match result {
            Ok(Parsed::Object {
                object,
                unknown_fields,
            }) => {
                let name = object.object_ref().to_string();
                for field in unknown_fields {
                    contents.diagnostics.push(
                        Diagnostic::warning(
                            file,
                            format!(
                                "document {number}: unknown field `{field}` (ignored; is it misspelt?)"
                            ),
                        )
                        .with_object(name.clone()),
                    );
                }
                contents.objects.push(*object);
            }
            Ok(Parsed::Unused { kind, .. }) => {
                *contents.unused.entry(kind).or_default() += 1;
            }
            Err(ParseError::UnknownKind { api_version, kind }) => {
                contents.diagnostics.push(with_label(Diagnostic::warning(
                    file,
                    format!(
                        "document {number}: unknown kind {kind} ({api_version}): Lanyard does not read it, skipped"
                    ),
                )));
            }
            Err(e) => {
                contents.diagnostics.push(with_label(Diagnostic::error(
                    file,
                    format!("document {number}: {e}"),
                )));
            }
        }
    }
}

/// `Kind namespace/name` from a raw document, as far as it can be read, for messages about
/// documents that do not parse. `None` for Lists, whose items are parsed one by one.
fn describe(value: &serde_json::Value, default_namespace: &str) -> Option<String> {
    let kind = value.get("kind")?.as_str()?;
    if value.get("items").is_some_and(serde_json::Value::is_array) {
        return None;
    }
    let name = value.pointer("/metadata/name").and_then(|n| n.as_str());
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(default_namespace);
    Some(match name {
        Some(name) if kind == "Namespace" => format!("{kind} {name}"),
        Some(name) => format!("{kind} {namespace}/{name}"),
        None => kind.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Severity;

    fn parse(text: &str) -> FileContents {
        parse_file(Path::new("dir/f.yaml"), text, "default")
    }

    const SERVICE: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n";

    #[test]
    fn every_document_is_read_and_empty_documents_are_skipped() {
        let text = format!(
            "---\n# only a comment\n---\n{SERVICE}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: n}}\n---\n"
        );
        let contents = parse(&text);
        assert!(
            contents.diagnostics.is_empty(),
            "{:?}",
            contents.diagnostics
        );
        let names: Vec<_> = contents
            .objects
            .iter()
            .map(|o| o.object_ref().to_string())
            .collect();
        assert_eq!(names, ["Service default/s", "Namespace n"]);
    }

    #[test]
    fn a_yaml_syntax_error_keeps_the_documents_before_it_and_names_the_document() {
        let text = format!("{SERVICE}---\nkind: [unclosed\n---\n{SERVICE}");
        let contents = parse(&text);
        assert_eq!(contents.objects.len(), 1);
        assert!(contents.has_errors());
        assert_eq!(contents.diagnostics.len(), 1);
        let d = &contents.diagnostics[0];
        assert_eq!(d.file, Path::new("dir/f.yaml"));
        assert!(
            d.message.starts_with("document 2: invalid YAML"),
            "{}",
            d.message
        );
    }

    #[test]
    fn an_invalid_object_is_an_error_naming_document_and_object() {
        let text = format!(
            "{SERVICE}---\napiVersion: v1\nkind: Service\nmetadata: {{name: bad, namespace: ns}}\nspec: {{ports: [{{port: eighty}}]}}\n"
        );
        let contents = parse(&text);
        assert_eq!(contents.objects.len(), 1);
        let d = &contents.diagnostics[0];
        assert_eq!(d.severity, Severity::Error);
        assert_eq!(d.object.as_deref(), Some("Service ns/bad"));
        assert!(d.message.starts_with("document 2: "), "{}", d.message);
    }

    #[test]
    fn a_document_that_is_not_an_object_is_an_error() {
        let contents = parse("- a\n- b\n");
        assert!(contents.has_errors());
        assert!(contents.objects.is_empty());
        assert!(
            contents.diagnostics[0]
                .message
                .starts_with("document 1: not a Kubernetes object")
        );
    }

    #[test]
    fn an_unknown_kind_is_a_warning_naming_the_kind() {
        let contents = parse("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n");
        assert!(!contents.has_errors());
        let d = &contents.diagnostics[0];
        assert_eq!(d.severity, Severity::Warning);
        assert_eq!(d.object.as_deref(), Some("Widget default/w"));
        assert!(
            d.message.contains("unknown kind Widget (example.com/v1)"),
            "{}",
            d.message
        );
    }

    #[test]
    fn an_unknown_field_is_a_warning_naming_object_and_path() {
        let contents = parse(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\nspec:\n  parentRefs: [{group: '', kind: Service, name: s}]\n  rules: [{matchs: []}]\n",
        );
        assert!(!contents.has_errors());
        assert_eq!(contents.objects.len(), 1);
        let d = &contents.diagnostics[0];
        assert_eq!(d.severity, Severity::Warning);
        assert_eq!(d.object.as_deref(), Some("HTTPRoute ns/r"));
        assert!(d.message.contains("`spec.rules.0.matchs`"), "{}", d.message);
    }

    #[test]
    fn a_route_gets_the_api_servers_defaults_before_it_is_read() {
        // Without `group`, the API server makes this parentRef a Gateway API one, so it does
        // not name the Service: the route's parent is a Gateway.
        let contents = parse(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\nspec:\n  parentRefs: [{kind: Service, name: s}]\n",
        );
        assert!(
            contents.diagnostics.is_empty(),
            "{:?}",
            contents.diagnostics
        );
        let Some(Object::HttpRoute(route)) = contents.objects.first() else {
            panic!("{:?}", contents.objects);
        };
        let parent = &route.spec.parent_refs[0];
        assert_eq!(parent.group.as_deref(), Some("gateway.networking.k8s.io"));
        assert_eq!(route.spec.rules.len(), 1);
    }

    #[test]
    fn the_items_of_a_list_are_checked_one_by_one() {
        let contents = parse(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: gateway.networking.k8s.io/v1\n  kind: HTTPRoute\n  metadata: {name: bad, namespace: ns}\n  spec: {parentRefs: [{kind: Service}]}\n- apiVersion: gateway.networking.k8s.io/v1\n  kind: HTTPRoute\n  metadata: {name: good, namespace: ns}\n  spec: {parentRefs: [{group: '', kind: Service, name: s}]}\n",
        );
        assert_eq!(contents.objects.len(), 1);
        assert_eq!(
            contents.objects[0].object_ref().to_string(),
            "HTTPRoute ns/good"
        );
        assert_eq!(contents.diagnostics.len(), 1);
        let d = &contents.diagnostics[0];
        assert_eq!(d.object.as_deref(), Some("HTTPRoute ns/bad"));
        assert_eq!(
            d.message,
            "document 1: HTTPRoute.gateway.networking.k8s.io \"bad\" is invalid: [spec.parentRefs[0].name: Required value, <nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation]"
        );
    }

    #[test]
    fn unused_kinds_are_only_counted() {
        let contents = parse(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\n",
        );
        assert!(contents.diagnostics.is_empty());
        assert!(contents.objects.is_empty());
        assert_eq!(contents.unused.get("Deployment"), Some(&2));
    }
}
