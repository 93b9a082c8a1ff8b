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
    let label = describe(&value, default_namespace);
    let with_label = |d: Diagnostic| match &label {
        Some(label) => d.with_object(label.clone()),
        None => d,
    };
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
    fn unused_kinds_are_only_counted() {
        let contents = parse(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\n",
        );
        assert!(contents.diagnostics.is_empty());
        assert!(contents.objects.is_empty());
        assert_eq!(contents.unused.get("Deployment"), Some(&2));
    }
}
