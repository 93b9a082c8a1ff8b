//! The generated CRDs: the committed files in `crds/` are up to date, the schemas are
//! structural, and SMI manifests validate against the schema of their version.
//!
//! `LANYARD_UPDATE_GOLDEN=1 cargo test -p lanyard-webhook --test crds` rewrites `crds/`
//! (as `cargo run -p lanyard-webhook --bin lanyard-crdgen` does).

use std::path::{Path, PathBuf};

use lanyard_index::api::smi::convert::{Version, WEIGHTS_ANNOTATION, convert};
use lanyard_webhook::crds::{self, CrdFile};
use serde::Deserialize;
use serde_json::{Value, json};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn update_golden() -> bool {
    std::env::var_os("LANYARD_UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty())
}

#[test]
fn committed_crds_match_the_generated_ones() {
    let mut stale = Vec::new();
    for file in crds::all() {
        let path = workspace().join("crds").join(file.path);
        let text = file.render();
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        if update_golden() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        } else {
            stale.push(file.path);
        }
    }
    assert!(
        stale.is_empty(),
        "crds/{stale:?} differ from the generated CRDs; run `{}` (or this test with \
         LANYARD_UPDATE_GOLDEN=1) and review the diff",
        crds::GENERATE_COMMAND
    );
}

#[test]
fn smi_crds_serve_every_version_and_store_v1alpha4() {
    for file in crds::all() {
        let spec = &file.crd.spec;
        let names: Vec<_> = spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            ["v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"],
            "{}",
            file.path
        );
        assert!(spec.versions.iter().all(|v| v.served), "{}", file.path);
        let stored: Vec<_> = spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| &v.name)
            .collect();
        assert_eq!(stored, ["v1alpha4"], "{}", file.path);
        assert!(spec.versions.iter().all(|v| v.subresources.is_none()));
        assert_eq!(
            spec.names.categories.as_deref(),
            Some(&["smi".to_string()][..])
        );
        let conversion = serde_json::to_value(&spec.conversion).unwrap();
        assert_eq!(
            conversion,
            json!({"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": {"service": {"name": "lanyard-webhook",
                    "namespace": "lanyard-system", "path": "/convert", "port": 443}}}})
        );
    }
}

/// Kubernetes' structural schema rules, as far as they concern what schemars produces.
fn check_structural(path: &str, node: &Value, errors: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        errors.push(format!("{path}: not an object"));
        return;
    };
    let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    match map.get("type") {
        Some(Value::String(_)) => {}
        None if int_or_string || preserve => {}
        other => errors.push(format!("{path}: type is {other:?}")),
    }
    for banned in [
        "$ref",
        "$schema",
        "$defs",
        "definitions",
        "oneOf",
        "allOf",
        "not",
        "default",
        "title",
    ] {
        if map.contains_key(banned) {
            errors.push(format!("{path}: has {banned}"));
        }
    }
    if let Some(any_of) = map.get("anyOf")
        && !(int_or_string && any_of == &json!([{"type": "integer"}, {"type": "string"}]))
    {
        errors.push(format!("{path}: anyOf {any_of}"));
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        for (name, child) in properties {
            check_structural(&format!("{path}.{name}"), child, errors);
        }
        if let Some(required) = map.get("required") {
            for r in required.as_array().unwrap() {
                if !properties.contains_key(r.as_str().unwrap()) {
                    errors.push(format!("{path}: requires unknown {r}"));
                }
            }
        }
    }
    if let Some(items) = map.get("items") {
        check_structural(&format!("{path}[]"), items, errors);
    }
    if let Some(additional @ Value::Object(_)) = map.get("additionalProperties") {
        check_structural(&format!("{path}{{}}"), additional, errors);
    }
}

#[test]
fn generated_schemas_are_structural() {
    let mut errors = Vec::new();
    for file in crds::all() {
        for version in Version::ALL {
            let schema = file.schema(version.as_str()).unwrap();
            check_structural(
                &format!("{}@{version}", file.crd.spec.names.kind),
                &schema,
                &mut errors,
            );
            assert_eq!(schema["properties"]["metadata"], json!({"type": "object"}));
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// The CRD for an object's group and kind, and its version.
fn crd_for<'a>(files: &'a [CrdFile], object: &Value) -> Option<(&'a CrdFile, String)> {
    let (group, version) = object["apiVersion"].as_str()?.rsplit_once('/')?;
    let file = files
        .iter()
        .find(|f| f.crd.spec.group == group && f.crd.spec.names.kind == object["kind"])?;
    Some((file, version.to_string()))
}

/// The messages of every schema violation of `object` in its own version.
fn violations(files: &[CrdFile], object: &Value) -> Vec<String> {
    let (file, version) = crd_for(files, object).expect("an SMI kind Lanyard serves");
    let schema = file
        .schema(&version)
        .unwrap_or_else(|| panic!("no schema for {version}"));
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn is_smi(object: &Value) -> bool {
    object["apiVersion"]
        .as_str()
        .is_some_and(|a| a.contains(".smi-spec.io/"))
}

/// Every SMI manifest the tests use: the golden cases and the EXAMPLES.md fixture.
fn examples() -> Vec<(String, Value)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(workspace().join("tests/golden/cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("smi-") && name.ends_with(".in.yaml")
        })
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "the golden SMI cases moved: {paths:?}");
    paths.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smi-examples.yaml"));
    paths
        .iter()
        .flat_map(|p| {
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            documents(p).into_iter().filter(is_smi).map(move |o| {
                (
                    format!("{file}: {} {}", o["kind"], o["metadata"]["name"]),
                    o,
                )
            })
        })
        .collect()
}

/// Examples the CRD schemas refuse on purpose, with where the one violation is: Lanyard reads
/// them (in file mode, or from other CRDs), and the translator or the reader reports them.
const REFUSED: &[(&str, &str)] = &[
    // A weight that is not a number: the API server refuses it at apply time.
    (
        "smi-edge-cases.in.yaml: \"TrafficSplit\" \"malformed-weight\"",
        "/spec/backends/0/weight: ",
    ),
];

fn refused_at(name: &str) -> Option<&'static str> {
    REFUSED.iter().find(|(n, _)| *n == name).map(|(_, at)| *at)
}

#[test]
fn smi_examples_validate_against_the_schema_of_their_version() {
    let files = crds::all();
    let examples = examples();
    assert!(examples.len() >= 15, "{}", examples.len());
    let mut failures = Vec::new();
    for (name, object) in &examples {
        let errors = violations(&files, object);
        if let Some(at) = refused_at(name) {
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            assert!(errors[0].starts_with(at), "{name}: {errors:?}");
        } else if !errors.is_empty() {
            failures.push(format!("{name}: {errors:?}"));
        }
    }
    for (name, _) in REFUSED {
        assert!(
            examples.iter().any(|(n, _)| n == name),
            "{name} is no longer among the examples"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn smi_examples_convert_to_objects_valid_in_every_version() {
    let files = crds::all();
    for (name, object) in examples() {
        if refused_at(&name).is_some() {
            continue;
        }
        let group = object["apiVersion"]
            .as_str()
            .unwrap()
            .rsplit_once('/')
            .unwrap()
            .0;
        for version in Version::ALL {
            let converted = convert(&object, &format!("{group}/{version}"))
                .unwrap_or_else(|e| panic!("{name} to {version}: {e}"));
            let errors = violations(&files, &converted);
            assert!(
                errors.is_empty(),
                "{name} as {version}: {errors:?}\n{converted:#}"
            );
            let back = convert(&converted, object["apiVersion"].as_str().unwrap()).unwrap();
            // Quantities come back as written, the text kept in an annotation of its own.
            assert_eq!(
                without_kept_weights(back),
                object,
                "{name} to {version} and back"
            );
        }
    }
}

fn without_kept_weights(mut object: Value) -> Value {
    let meta = object["metadata"].as_object_mut().unwrap();
    if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        annotations.remove(WEIGHTS_ANNOTATION);
        if annotations.is_empty() {
            meta.remove("annotations");
        }
    }
    object
}

#[test]
fn every_quantity_the_crd_accepts_converts_and_reads_back_as_written() {
    let files = crds::all();
    let split = |weights: [&str; 2]| {
        json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
            "metadata": {"name": "s", "namespace": "shop"},
            "spec": {"service": "web", "backends": [
                {"service": "web-v1", "weight": weights[0]},
                {"service": "web-v2", "weight": weights[1]}]}})
    };
    for weights in [
        ["1e3", "2T"],
        ["1Ti", "1500u"],
        ["1.", ".5"],
        ["+1E-2", "1E"],
        ["7n", "3Ei"],
        ["1e999999999", "1"],
        ["0", "1"],
    ] {
        let object = split(weights);
        let errors = violations(&files, &object);
        assert!(errors.is_empty(), "{weights:?}: {errors:?}");
        let hub = convert(&object, "split.smi-spec.io/v1alpha4")
            .unwrap_or_else(|e| panic!("{weights:?}: {e}"));
        assert!(violations(&files, &hub).is_empty(), "{weights:?}: {hub:#}");
        let back = convert(&hub, "split.smi-spec.io/v1alpha1").unwrap();
        assert_eq!(without_kept_weights(back), object, "{weights:?}");
    }
    for weight in ["1e1.5", "1e.5", "1e1234567890", "1K", "1 k", "k"] {
        assert!(
            !violations(&files, &split([weight, "1"])).is_empty(),
            "{weight:?} is accepted"
        );
    }
}

fn with(mut object: Value, pointer: &str, value: Option<Value>) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = object.pointer_mut(parent).unwrap();
    match value {
        Some(v) => parent[key] = v,
        None => {
            parent.as_object_mut().unwrap().remove(key);
        }
    }
    object
}

#[test]
fn bad_manifests_do_not_validate() {
    let files = crds::all();
    let split = |version: &str, weight: Value| {
        json!({"apiVersion": format!("split.smi-spec.io/{version}"), "kind": "TrafficSplit",
            "metadata": {"name": "s", "namespace": "shop"},
            "spec": {"service": "web", "backends": [{"service": "web-v1", "weight": weight}]}})
    };
    let route_group = json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
        "metadata": {"name": "g"}, "spec": {"matches": [{"name": "m", "methods": ["GET"]}]}});
    assert!(violations(&files, &split("v1alpha2", json!(10))).is_empty());
    assert!(violations(&files, &split("v1alpha1", json!("500m"))).is_empty());
    assert!(violations(&files, &split("v1alpha1", json!(2))).is_empty());
    assert!(violations(&files, &route_group).is_empty());

    let bad = [
        (
            "weight \"ten\" in v1alpha2",
            split("v1alpha2", json!("ten")),
            "/spec/backends/0/weight",
        ),
        (
            "weight 1.5 in v1alpha4",
            split("v1alpha4", json!(1.5)),
            "/spec/backends/0/weight",
        ),
        (
            "weight \"ten\" in v1alpha1",
            split("v1alpha1", json!("ten")),
            "/spec/backends/0/weight",
        ),
        (
            "weight true in v1alpha1",
            split("v1alpha1", json!(true)),
            "/spec/backends/0/weight",
        ),
        (
            "no spec.service",
            with(split("v1alpha2", json!(1)), "/spec/service", None),
            "/spec",
        ),
        (
            "no backend service",
            with(
                split("v1alpha3", json!(1)),
                "/spec/backends/0/service",
                None,
            ),
            "/spec/backends/0",
        ),
        (
            "no weight",
            with(split("v1alpha4", json!(1)), "/spec/backends/0/weight", None),
            "/spec/backends/0",
        ),
        (
            "a match of kind TCPRoute",
            with(
                split("v1alpha3", json!(1)),
                "/spec/matches",
                Some(json!([{"kind": "TCPRoute", "name": "db"}])),
            ),
            "/spec/matches/0/kind",
        ),
        (
            "method FETCH",
            with(
                route_group.clone(),
                "/spec/matches/0/methods",
                Some(json!(["FETCH"])),
            ),
            "/spec/matches/0/methods/0",
        ),
        (
            "a match without name",
            with(route_group.clone(), "/spec/matches/0/name", None),
            "/spec/matches/0",
        ),
        (
            "v1alpha4 HTTPRouteGroup without spec",
            with(route_group.clone(), "/spec", None),
            "",
        ),
        (
            "ports as a string",
            json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute", "metadata": {"name": "t"},
                "spec": {"matches": {"ports": "5432"}}}),
            "/spec/matches/ports",
        ),
    ];
    for (what, object, at) in bad {
        let errors = violations(&files, &object);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{at}: "))),
            "{what}: expected an error at {at:?}, got {errors:?}"
        );
    }
}
