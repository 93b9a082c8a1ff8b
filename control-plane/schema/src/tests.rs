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
