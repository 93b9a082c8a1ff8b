use super::*;

#[test]
fn every_embedded_crd_reads() {
    assert_eq!(load_error(), None);
    assert!(
        crds()
            .schema("gateway.networking.k8s.io/v1", "HTTPRoute")
            .is_some()
    );
}

fn rules_of<'a>(schema: &'a Schema, out: &mut Vec<&'a rules::Rule>) {
    out.extend(schema.rules.iter());
    for sub in schema
        .properties
        .values()
        .chain(schema.items.as_deref())
        .chain(schema.additional_properties.as_deref())
        .chain(schema.any_of.iter())
    {
        rules_of(sub, out);
    }
}

#[test]
fn every_rule_of_every_crd_compiles() {
    let mut count = 0;
    for version in &crds().versions {
        let mut rules = Vec::new();
        rules_of(&version.schema, &mut rules);
        for rule in rules {
            count += 1;
            assert!(
                rule.program.is_ok(),
                "{} {}: {}: {:?}",
                version.kind,
                version.version,
                rule.rule,
                rule.program.as_ref().err()
            );
        }
    }
    // HTTPRoute v1 and v1beta1 (178), GRPCRoute v1 (33).
    assert!(count >= 200, "{count}");
}

use serde_json::{Value, json};

fn mk_route(spec: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "shop"},
        "spec": spec,
    })
}

fn mk_parent() -> Value {
    json!({"group": "", "kind": "Service", "name": "web"})
}

fn check(mut object: Value) -> (Value, Result<(), Invalid>) {
    let api_version = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let schema = crds()
        .schema(&api_version, &kind)
        .unwrap_or_else(|| panic!("no schema for {api_version} {kind}"));
    let result = schema.default_and_validate(&mut object);
    (object, result)
}

fn messages(object: Value) -> Vec<String> {
    match check(object).1 {
        Ok(()) => Vec::new(),
        Err(e) => e.causes.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_plain_route_is_valid() {
    let route = mk_route(json!({
        "parentRefs": [mk_parent()],
        "rules": [{"backendRefs": [{"name": "web-v1", "port": 80}]}],
    }));
    assert_eq!(messages(route), Vec::<String>::new());
}

#[test]
fn seventeen_rules_are_too_many() {
    let rules: Vec<Value> = (0..17).map(|_| json!({})).collect();
    let (_, result) = check(mk_route(
        json!({"parentRefs": [mk_parent()], "rules": rules}),
    ));
    let e = result.unwrap_err();
    assert_eq!(
        e.to_string(),
        "HTTPRoute.gateway.networking.k8s.io \"r\" is invalid: [spec.rules: Too many: 17: must \
         have at most 16 items, <nil>: Invalid value: null: some validation rules were not \
         checked because the object was invalid; correct the existing errors to complete \
         validation]"
    );
    assert_eq!(e.causes[0].error_type, ErrorType::TooMany);
}

#[test]
fn a_path_with_a_double_slash_fails_its_rule_with_its_message_and_path() {
    let route = mk_route(json!({
        "parentRefs": [mk_parent()],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/a//b"}}]}],
    }));
    assert_eq!(
        messages(route),
        [
            "spec.rules[0].matches[0].path: Invalid value: must not contain '//' when type one of \
          ['Exact', 'PathPrefix']"
        ]
    );
}

#[test]
fn a_header_name_must_match_its_pattern() {
    let route = mk_route(json!({
        "parentRefs": [mk_parent()],
        "rules": [{"matches": [{"headers": [{"name": "bad name", "value": "x"}]}]}],
    }));
    assert_eq!(
        messages(route),
        [
            "spec.rules[0].matches[0].headers[0].name: Invalid value: \"bad name\": \
          spec.rules[0].matches[0].headers[0].name in body should match \
          '^[A-Za-z0-9!#$%&'*+\\-.^_\\x60|~]+$'"
        ]
    );
}

#[test]
fn an_enum_lists_the_supported_values() {
    let route = mk_route(json!({
        "parentRefs": [mk_parent()],
        "rules": [{"matches": [{"method": "Foo"}]}],
    }));
    let messages = messages(route);
    assert_eq!(
        messages[0],
        "spec.rules[0].matches[0].method: Unsupported value: \"Foo\": supported values: \
         \"GET\", \"HEAD\", \"POST\", \"PUT\", \"DELETE\", \"CONNECT\", \"OPTIONS\", \"TRACE\", \
         \"PATCH\""
    );
    assert_eq!(messages.len(), 2, "{messages:?}");
}

#[test]
fn a_missing_required_field_is_required() {
    let route = mk_route(json!({"parentRefs": [{"kind": "Service"}]}));
    assert_eq!(
        messages(route)[0],
        "spec.parentRefs[0].name: Required value"
    );
}

#[test]
fn duplicate_map_list_keys_are_duplicates() {
    let route = mk_route(json!({
        "parentRefs": [mk_parent()],
        "rules": [{"matches": [{"headers": [
            {"name": "x-a", "value": "1"},
            {"name": "x-a", "value": "2"},
        ]}]}],
    }));
    assert_eq!(
        messages(route),
        ["spec.rules[0].matches[0].headers[1]: Duplicate value: {\"name\":\"x-a\"}"]
    );
}

#[test]
fn a_parent_ref_is_defaulted_to_a_gateway_of_the_gateway_api_group() {
    let route = mk_route(json!({"parentRefs": [{"name": "web"}]}));
    let (route, result) = check(route);
    assert_eq!(result, Ok(()));
    assert_eq!(
        route["spec"]["parentRefs"][0],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"})
    );
    // A Service parent without a group gets the Gateway API group: it names no Service.
    let route = mk_route(json!({"parentRefs": [{"kind": "Service", "name": "web"}]}));
    let (route, _) = check(route);
    assert_eq!(
        route["spec"]["parentRefs"][0]["group"],
        json!("gateway.networking.k8s.io")
    );
}

#[test]
fn backend_weights_default_to_one_and_rules_to_a_prefix_match() {
    let route = mk_route(json!({
        "parentRefs": [mk_parent()],
        "rules": [{"backendRefs": [{"name": "web-v1", "port": 80}]}],
    }));
    let (route, result) = check(route);
    assert_eq!(result, Ok(()));
    let rule = &route["spec"]["rules"][0];
    assert_eq!(rule["backendRefs"][0]["weight"], json!(1));
    assert_eq!(
        rule["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/"}}])
    );
}

#[test]
fn absent_rules_are_defaulted() {
    let (route, result) = check(mk_route(json!({"parentRefs": [mk_parent()]})));
    assert_eq!(result, Ok(()));
    assert_eq!(
        route["spec"]["rules"],
        json!([{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}])
    );
}

#[test]
fn a_nested_default_waits_for_its_parent_object() {
    // `timeouts` has no default of its own: nothing inside it appears.
    let (route, _) = check(mk_route(
        json!({"parentRefs": [mk_parent()], "rules": [{}]}),
    ));
    assert!(route["spec"]["rules"][0].get("timeouts").is_none());
}

#[test]
fn rules_using_durations_compare_them() {
    let route = |request: &str, backend: &str| {
        mk_route(json!({
            "parentRefs": [mk_parent()],
            "rules": [{"timeouts": {"request": request, "backendRequest": backend}}],
        }))
    };
    assert_eq!(messages(route("10s", "1s")), Vec::<String>::new());
    assert_eq!(
        messages(route("1s", "10s")),
        [
            "spec.rules[0].timeouts: Invalid value: backendRequest timeout cannot be longer than \
          request timeout"
        ]
    );
}

#[test]
fn a_null_without_default_is_dropped_and_one_with_default_defaulted() {
    let route = mk_route(json!({"parentRefs": [{"name": "web", "kind": null, "port": null}]}));
    let (route, result) = check(route);
    assert_eq!(result, Ok(()));
    assert_eq!(route["spec"]["parentRefs"][0]["kind"], json!("Gateway"));
    assert!(route["spec"]["parentRefs"][0].get("port").is_none());
}

#[test]
fn a_value_of_the_wrong_type_is_invalid_and_blocks_the_rules() {
    let route = mk_route(json!({"parentRefs": [{"name": 7}]}));
    assert_eq!(
        messages(route),
        [
            "spec.parentRefs[0].name: Invalid value: \"integer\": spec.parentRefs[0].name in \
             body must be of type string: \"integer\"",
            "<nil>: Invalid value: null: some validation rules were not checked because the \
             object was invalid; correct the existing errors to complete validation",
        ]
    );
}

#[test]
fn numbers_out_of_range_and_too_long_strings() {
    let route = mk_route(json!({
        "parentRefs": [mk_parent()],
        "hostnames": ["a".repeat(254)],
        "rules": [{"backendRefs": [{"name": "web", "port": 70000, "weight": 1_000_001}]}],
    }));
    let messages = messages(route);
    assert!(
        messages
            .contains(&"spec.hostnames[0]: Too long: may not be more than 253 bytes".to_string()),
        "{messages:?}"
    );
    assert!(
        messages.contains(
            &"spec.rules[0].backendRefs[0].port: Invalid value: 70000: \
              spec.rules[0].backendRefs[0].port in body should be less than or equal to 65535"
                .to_string()
        ),
        "{messages:?}"
    );
    assert!(
        messages.contains(
            &"spec.rules[0].backendRefs[0].weight: Invalid value: 1000001: \
              spec.rules[0].backendRefs[0].weight in body should be less than or equal to 1e+06"
                .to_string()
        ),
        "{messages:?}"
    );
}

#[test]
fn an_unknown_version_or_kind_has_no_schema() {
    assert!(
        crds()
            .schema("gateway.networking.k8s.io/v2", "HTTPRoute")
            .is_none()
    );
    assert!(crds().schema("v1", "Service").is_none());
    assert!(
        crds()
            .schema("gateway.networking.k8s.io/v1beta1", "HTTPRoute")
            .is_some()
    );
    assert!(
        crds()
            .schema("split.smi-spec.io/v1alpha1", "TrafficSplit")
            .is_some()
    );
}

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn documents(path: &std::path::Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// The SMI manifests the webhook's CRD tests use (webhook/tests/crds.rs: the golden SMI cases
/// and its EXAMPLES.md fixture), by `file: Kind name`.
fn smi_examples() -> Vec<(String, Value)> {
    let cases = workspace().join("tests/golden/cases");
    let mut paths: Vec<_> = std::fs::read_dir(&cases)
        .unwrap_or_else(|e| panic!("{cases:?}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("smi-") && n.ends_with(".in.yaml"))
        })
        .collect();
    paths.sort();
    paths.push(workspace().join("webhook/tests/fixtures/smi-examples.yaml"));
    let mut examples = Vec::new();
    for path in paths {
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for object in documents(&path) {
            if object["apiVersion"]
                .as_str()
                .is_some_and(|a| a.contains(".smi-spec.io/"))
            {
                let name = format!("{file}: {} {}", object["kind"], object["metadata"]["name"]);
                examples.push((name, object));
            }
        }
    }
    examples
}

#[test]
fn smi_examples_validate_in_their_version_except_the_one_refused_on_purpose() {
    let examples = smi_examples();
    assert!(examples.len() >= 15, "{}", examples.len());
    let mut refused = Vec::new();
    for (name, object) in examples {
        for message in messages(object) {
            refused.push(format!("{name}: {message}"));
        }
    }
    // The same one the webhook's tests list as refused by the schema (webhook/tests/crds.rs).
    assert_eq!(
        refused,
        [
            "smi-edge-cases.in.yaml: \"TrafficSplit\" \"malformed-weight\": \
             spec.backends[0].weight: Invalid value: \"string\": spec.backends[0].weight in \
             body must be of type integer: \"string\"",
        ]
    );
}

#[test]
fn bad_smi_manifests_are_refused_in_every_version() {
    let split = |version: &str, weight: Value| {
        json!({"apiVersion": format!("split.smi-spec.io/{version}"), "kind": "TrafficSplit",
            "metadata": {"name": "s", "namespace": "shop"},
            "spec": {"service": "web", "backends": [{"service": "web-v1", "weight": weight}]}})
    };
    assert_eq!(
        messages(split("v1alpha1", json!("500m"))),
        Vec::<String>::new()
    );
    assert_eq!(messages(split("v1alpha1", json!(2))), Vec::<String>::new());
    assert_eq!(messages(split("v1alpha2", json!(10))), Vec::<String>::new());
    assert_eq!(
        messages(split("v1alpha4", json!(1.5))),
        [
            "spec.backends[0].weight: Invalid value: \"number\": spec.backends[0].weight in body \
          must be of type integer: \"number\""
        ]
    );
    assert_eq!(
        messages(split("v1alpha1", json!(true)))[0],
        "spec.backends[0].weight: Invalid value: \"boolean\": spec.backends[0].weight in body \
         must be of type integer,string: \"boolean\""
    );
    let mut no_service = split("v1alpha3", json!(1));
    no_service["spec"]["backends"][0]
        .as_object_mut()
        .map(|b| b.remove("service"));
    assert_eq!(
        messages(no_service)[0],
        "spec.backends[0].service: Required value"
    );
    let route_group = json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
        "metadata": {"name": "g"}, "spec": {"matches": [{"name": "m", "methods": ["FETCH"]}]}});
    let messages = messages(route_group);
    assert!(
        messages[0].starts_with("spec.matches[0].methods[0]: Unsupported value: \"FETCH\""),
        "{messages:?}"
    );
}

#[test]
fn parent_rules_read_namespace_through_its_escaped_name() {
    let parent = |namespace: &str, section: &str| {
        json!({"group": "", "kind": "Service", "name": "web", "namespace": namespace,
            "sectionName": section})
    };
    // Same parent twice (same namespace), once without sectionName.
    let mut same = parent("shop", "http");
    same.as_object_mut().map(|p| p.remove("sectionName"));
    let route = mk_route(json!({"parentRefs": [parent("shop", "http"), same]}));
    assert_eq!(
        messages(route),
        [
            "spec.parentRefs: Invalid value: sectionName must be specified when parentRefs \
          includes 2 or more references to the same parent"
        ]
    );
    // Same parent and sectionName twice: `exists_one` finds two.
    let route = mk_route(json!({"parentRefs": [parent("shop", "http"), parent("shop", "http")]}));
    assert_eq!(
        messages(route),
        [
            "spec.parentRefs: Invalid value: sectionName must be unique when parentRefs \
          includes 2 or more references to the same parent"
        ]
    );
    // Different namespaces are different parents: only `namespace` tells them apart.
    let route = mk_route(json!({"parentRefs": [parent("shop", "http"), parent("other", "http")]}));
    assert_eq!(messages(route), Vec::<String>::new());
}

#[test]
fn a_repeated_filter_fails_the_filter_rule() {
    let modifier = json!({"type": "RequestHeaderModifier",
        "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}]}});
    let route = mk_route(json!({
        "parentRefs": [mk_parent()],
        "rules": [{"filters": [modifier.clone(), modifier]}],
    }));
    assert_eq!(
        messages(route),
        ["spec.rules[0].filters: Invalid value: RequestHeaderModifier filter cannot be repeated"]
    );
}

/// Every YAML file under `dir`, recursively, sorted.
fn yaml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn examples_and_golden_inputs_are_valid_but_for_the_cases_about_invalid_objects() {
    let mut checked = 0;
    let mut refused = Vec::new();
    let mut paths = yaml_files(&workspace().join("examples"));
    paths.extend(yaml_files(&workspace().join("tests/golden/cases")));
    for path in paths {
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for object in documents(&path) {
            let (Some(api_version), Some(kind)) =
                (object["apiVersion"].as_str(), object["kind"].as_str())
            else {
                continue;
            };
            if crds().schema(api_version, kind).is_none() {
                continue;
            }
            checked += 1;
            if let Err(e) = check(object).1 {
                refused.push(format!("{file}: {}", e.name));
            }
        }
    }
    assert!(checked >= 40, "{checked}");
    // The golden cases that show how the translator treats objects a cluster refuses.
    assert_eq!(
        refused,
        [
            "invalid-routes.in.yaml: bad-rewrite",
            "invalid-routes.in.yaml: redirect-and-backends",
            "smi-edge-cases.in.yaml: malformed-weight",
        ]
    );
}

/// A CRD of one version with the given `spec` schema, read as the embedded ones are.
fn mk_crd(spec: Value) -> VersionSchema {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "spec": {"group": "example.com", "names": {"kind": "Widget"}, "versions": [{
            "name": "v1", "served": true,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "metadata": {"type": "object"}, "spec": spec}}},
        }]},
    });
    let mut versions = Vec::new();
    let text = serde_json::to_string(&crd).unwrap_or_default();
    if let Err(e) = read_crd(&text, &mut versions) {
        panic!("{e}");
    }
    versions.remove(0)
}

fn widget_messages(crd: &VersionSchema, spec: Value) -> Vec<String> {
    let mut object = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": spec});
    match crd.default_and_validate(&mut object) {
        Ok(()) => Vec::new(),
        Err(e) => e.causes.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn message_expressions_field_paths_and_reasons_shape_the_error() {
    let crd = mk_crd(json!({"type": "object",
    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
    "x-kubernetes-validations": [
        {"rule": "self.min <= self.max", "messageExpression": "'min ' + string(self.min) + ' is above max'",
         "fieldPath": ".min"},
        {"rule": "self.max < 100", "message": "max too big", "reason": "FieldValueForbidden"},
        {"rule": "self.min == oldSelf.min", "message": "immutable"},
        {"rule": "self.max != 7"},
    ]}));
    assert_eq!(
        widget_messages(&crd, json!({"min": 800, "max": 700})),
        [
            "spec.min: Invalid value: min 800 is above max",
            "spec: Forbidden: max too big"
        ]
    );
    assert_eq!(
        widget_messages(&crd, json!({"min": 1, "max": 7})),
        ["spec: Invalid value: failed rule: self.max != 7"]
    );
}

#[test]
fn a_rule_calling_an_unknown_function_fails_naming_the_rule() {
    let crd = mk_crd(json!({"type": "object", "x-kubernetes-validations": [
        {"rule": "self.isWidget()", "message": "must be a widget"}]}));
    assert_eq!(
        widget_messages(&crd, json!({})),
        [
            "spec: Invalid value: \"object\": rule compile error: undeclared reference to \
          'isWidget' (rule: self.isWidget())"
        ]
    );
}

#[test]
fn a_rule_that_errors_at_run_time_names_the_rule() {
    let crd = mk_crd(
        json!({"type": "object", "properties": {"a": {"type": "string"}},
        "x-kubernetes-validations": [{"rule": "self.a == 'x'", "message": "a must be x"}]}),
    );
    let messages = widget_messages(&crd, json!({}));
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with("spec: Invalid value: \"object\": ")
            && messages[0].ends_with(" evaluating rule: a must be x"),
        "{messages:?}"
    );
}

#[test]
fn an_int32_out_of_range_and_sets_with_duplicates() {
    let crd = mk_crd(json!({"type": "object", "properties": {
        "n": {"type": "integer", "format": "int32"},
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
    }}));
    assert_eq!(
        widget_messages(
            &crd,
            json!({"n": 3_000_000_000_i64, "tags": ["a", "b", "a", "a"]})
        ),
        [
            "<nil>: Invalid value: \"\": Checked value must be of type integer with format int32 in spec.n",
            "spec.tags[2]: Duplicate value: \"a\"",
        ]
    );
}

#[test]
fn a_grpc_method_match_needs_a_service_or_a_method() {
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": "g", "namespace": "shop"},
        "spec": {"parentRefs": [mk_parent()], "rules": [{"matches": [{"method": {"type": "Exact"}}]}]},
    });
    assert_eq!(
        messages(route),
        [
            "spec.rules[0].matches[0].method: Invalid value: One or both of 'service' or 'method' \
          must be specified"
        ]
    );
}
