//! Tests of the loading rules (see the module docs), each on a temporary directory.

use std::path::Path;

use lanyard_index::{Kind, ObjectKey, ObjectRef};

use super::*;
use crate::diagnostics::Severity;

fn mk_service(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {{ports: [{{port: 80}}]}}\n"
    )
}

fn mk_namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n")
}

fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn service(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind: Kind::Service,
        key: ObjectKey::new(namespace, name),
    }
}

fn namespace(name: &str) -> ObjectRef {
    ObjectRef {
        kind: Kind::Namespace,
        key: ObjectKey::new("", name),
    }
}

fn errors(loaded: &Loaded) -> Vec<&Diagnostic> {
    loaded.diagnostics.iter().filter(|d| d.is_error()).collect()
}

fn load(dir: &Path) -> Loaded {
    FileSource::new([dir]).unwrap().load()
}

#[test]
fn yaml_and_yml_files_are_read_recursively_and_other_files_ignored() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &mk_namespace("a"));
    write(dir.path(), "sub/deeper/b.yml", &mk_namespace("b"));
    write(dir.path(), "notes.txt", &mk_namespace("txt"));
    write(dir.path(), "c.json", &mk_namespace("json"));
    write(dir.path(), ".hidden.yaml", &mk_namespace("hidden"));
    write(
        dir.path(),
        "..2024_01_01/d.yaml",
        &mk_namespace("configmap-copy"),
    );
    let loaded = load(dir.path());
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.files, 2);
    let names: Vec<_> = loaded
        .objects
        .namespaces
        .keys()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn a_single_file_is_accepted_whatever_its_extension() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "one.yaml", &mk_namespace("one"));
    write(dir.path(), "two.txt", &mk_namespace("two"));
    let loaded = FileSource::new([dir.path().join("two.txt")])
        .unwrap()
        .load();
    assert!(loaded.objects.contains(&namespace("two")));
    assert!(!loaded.objects.contains(&namespace("one")));
}

#[test]
fn several_paths_are_merged_and_a_missing_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "x/a.yaml", &mk_namespace("a"));
    write(dir.path(), "y/b.yaml", &mk_namespace("b"));
    let loaded = FileSource::new([dir.path().join("x"), dir.path().join("y/b.yaml")])
        .unwrap()
        .load();
    assert_eq!(loaded.objects.namespaces.len(), 2);
    let missing = dir.path().join("missing");
    assert!(matches!(
        FileSource::new([missing]),
        Err(Error::Path { .. })
    ));
    assert!(matches!(
        FileSource::new(Vec::<PathBuf>::new()),
        Err(Error::NoPaths)
    ));
}

#[test]
fn every_document_of_a_file_is_read_with_the_default_namespace() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
    );
    let loaded = load(dir.path());
    assert!(loaded.objects.contains(&service("default", "s")));
    assert!(loaded.objects.contains(&namespace("n")));
}

#[test]
fn a_broken_file_is_an_error_naming_it_and_the_rest_is_still_served() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.yaml", &mk_service("ns", "good"));
    write(dir.path(), "bad.yaml", "kind: [unclosed\n");
    let loaded = load(dir.path());
    assert!(loaded.objects.contains(&service("ns", "good")));
    let errors = errors(&loaded);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, dir.path().join("bad.yaml"));
    assert!(errors[0].message.contains("document 1"), "{}", errors[0]);
}

#[test]
fn an_invalid_document_is_an_error_naming_file_document_and_object() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: bad, namespace: ns}}\nspec: {{ports: [{{port: eighty}}]}}\n",
            mk_namespace("n")
        ),
    );
    let loaded = load(dir.path());
    let errors = errors(&loaded);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, dir.path().join("a.yaml"));
    assert_eq!(errors[0].object.as_deref(), Some("Service ns/bad"));
    assert!(
        errors[0].message.starts_with("document 2:"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_broken_file_keeps_serving_its_last_good_objects() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &mk_service("ns", "old"));
    let mut source = FileSource::new([dir.path()]).unwrap();
    assert!(source.load().objects.contains(&service("ns", "old")));

    // A new valid object next to a broken one: the file has errors, so neither the new
    // object nor the loss of the old one is taken.
    write(
        dir.path(),
        "a.yaml",
        &format!("{}---\nkind: [broken\n", mk_service("ns", "new")),
    );
    let loaded = source.load();
    assert!(loaded.objects.contains(&service("ns", "old")));
    assert!(!loaded.objects.contains(&service("ns", "new")));
    assert_eq!(errors(&loaded).len(), 1);
    assert!(
        loaded
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning
                && d.message.contains("last load without errors")),
        "{:?}",
        loaded.diagnostics
    );

    // Fixed: the new content is served.
    write(dir.path(), "a.yaml", &mk_service("ns", "new"));
    let loaded = source.load();
    assert!(errors(&loaded).is_empty());
    assert!(loaded.objects.contains(&service("ns", "new")));
    assert!(!loaded.objects.contains(&service("ns", "old")));
}

#[test]
fn a_file_that_never_loaded_cleanly_serves_the_documents_that_parsed() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        &format!("{}---\nkind: [broken\n", mk_service("ns", "parsed")),
    );
    let loaded = load(dir.path());
    assert!(loaded.objects.contains(&service("ns", "parsed")));
    assert_eq!(errors(&loaded).len(), 1);
}

#[test]
fn an_unreadable_file_keeps_its_last_good_objects() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &mk_service("ns", "s"));
    let mut source = FileSource::new([dir.path()]).unwrap();
    source.load();
    std::fs::write(dir.path().join("a.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    let loaded = source.load();
    assert!(loaded.objects.contains(&service("ns", "s")));
    assert!(errors(&loaded)[0].message.contains("not UTF-8"));
}

#[test]
fn unknown_kinds_and_fields_are_warnings_and_the_objects_are_served() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec: {ports: [{port: 80}], clusterIP: 10.0.0.1, selectr: {app: a}}\n",
    );
    let loaded = load(dir.path());
    assert!(errors(&loaded).is_empty());
    assert!(loaded.objects.contains(&service("ns", "s")));
    let warnings: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].message.contains("unknown kind Widget"));
    assert_eq!(warnings[1].object.as_deref(), Some("Service ns/s"));
    assert!(
        warnings[1].message.contains("`spec.selectr`"),
        "{}",
        warnings[1]
    );
}

#[test]
fn unused_kinds_are_counted_without_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
    );
    write(
        dir.path(),
        "b.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: e}\n",
    );
    let loaded = load(dir.path());
    assert!(loaded.diagnostics.is_empty());
    assert_eq!(loaded.unused_kinds.get("Deployment"), Some(&2));
}

#[test]
fn a_duplicate_across_files_is_an_error_naming_both_and_the_first_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    let first = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec: {ports: [{port: 80}], clusterIP: 10.0.0.1}\n";
    let second = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec: {ports: [{port: 81}], clusterIP: 10.0.0.2}\n";
    // `b/` sorts before `c.yaml`, whatever the order the files were written in.
    write(dir.path(), "c.yaml", second);
    write(dir.path(), "b/a.yaml", first);
    let loaded = load(dir.path());
    let errors = errors(&loaded);
    assert_eq!(errors.len(), 1);
    let d = errors[0];
    assert_eq!(d.file, dir.path().join("c.yaml"));
    assert_eq!(d.object.as_deref(), Some("Service ns/s"));
    assert!(
        d.message
            .contains(&dir.path().join("b/a.yaml").display().to_string()),
        "{d}"
    );
    let kept = &loaded.objects.services[&ObjectKey::new("ns", "s")];
    assert_eq!(
        kept.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("10.0.0.1")
    );
}

#[test]
fn a_duplicate_does_not_make_the_losing_file_fall_back_to_its_last_good_load() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.yaml", &mk_service("ns", "own"));
    let mut source = FileSource::new([dir.path()]).unwrap();
    source.load();
    write(
        dir.path(),
        "b.yaml",
        &format!(
            "{}---\n{}",
            mk_service("ns", "shared"),
            mk_service("ns", "own2")
        ),
    );
    write(dir.path(), "a.yaml", &mk_service("ns", "shared"));
    let loaded = source.load();
    assert_eq!(errors(&loaded).len(), 1);
    assert!(loaded.objects.contains(&service("ns", "own2")));
    assert!(!loaded.objects.contains(&service("ns", "own")));
}

#[test]
fn a_duplicate_within_a_file_is_an_error_and_the_first_definition_wins() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {first: 'yes'}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
    );
    let loaded = load(dir.path());
    let errors = errors(&loaded);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("more than once in this file"));
    let kept = &loaded.objects.namespaces[&ObjectKey::new("", "n")];
    assert!(kept.metadata.labels.as_ref().unwrap().contains_key("first"));
}

#[test]
fn a_deleted_file_drops_its_objects_and_its_last_good_load() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &mk_service("ns", "s"));
    let mut source = FileSource::new([dir.path()]).unwrap();
    assert!(source.load().objects.contains(&service("ns", "s")));
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let loaded = source.load();
    assert!(!loaded.objects.contains(&service("ns", "s")));
    assert!(loaded.diagnostics.is_empty());
    // Re-created broken: nothing of the old content comes back.
    write(dir.path(), "a.yaml", "kind: [broken\n");
    assert!(!source.load().objects.contains(&service("ns", "s")));
}

#[test]
fn loading_is_deterministic_and_diagnostics_are_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "z.yaml", "kind: [broken\n");
    write(
        dir.path(),
        "m/a.yaml",
        "apiVersion: x/v1\nkind: Widget\nmetadata: {name: w}\n",
    );
    write(dir.path(), "a.yaml", &mk_service("ns", "s"));
    let first = load(dir.path());
    let second = load(dir.path());
    assert_eq!(first, second);
    let files: Vec<_> = first.diagnostics.iter().map(|d| d.file.clone()).collect();
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(files, sorted);
    assert_eq!(files.len(), 3, "{:?}", first.diagnostics);
}

#[test]
fn services_without_cluster_ip_get_one_written_in_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &mk_service("ns", "auto"));
    write(
        dir.path(),
        "b.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: headless, namespace: ns}\nspec: {clusterIP: None, ports: [{port: 80}]}\n",
    );
    let loaded = load(dir.path());
    let spec = loaded.objects.services[&ObjectKey::new("ns", "auto")]
        .spec
        .clone()
        .unwrap();
    let ip = spec.cluster_ip.unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    assert_eq!(spec.cluster_ips, Some(vec![ip.clone()]));
    let info: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Info)
        .collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].file, dir.path().join("a.yaml"));
    assert!(info[0].message.contains(&ip));
    let headless = &loaded.objects.services[&ObjectKey::new("ns", "headless")];
    assert_eq!(
        headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );

    // The address depends on the Service, not on the file it is in.
    let other = tempfile::tempdir().unwrap();
    write(other.path(), "elsewhere/x.yml", &mk_service("ns", "auto"));
    let again = load(other.path());
    assert_eq!(
        again.objects.services[&ObjectKey::new("ns", "auto")]
            .spec
            .as_ref()
            .unwrap()
            .cluster_ip
            .as_deref(),
        Some(ip.as_str())
    );
}

#[test]
fn an_empty_directory_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path());
    assert_eq!(loaded, Loaded::default());
}

#[cfg(unix)]
#[test]
fn a_file_named_twice_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "manifests/a.yaml", &mk_service("ns", "s"));
    let alias = dir.path().join("alias");
    std::os::unix::fs::symlink(dir.path().join("manifests"), &alias).unwrap();
    let loaded = FileSource::new([dir.path().join("manifests"), alias.join("a.yaml")])
        .unwrap()
        .load();
    assert!(
        loaded.diagnostics.iter().all(|d| !d.is_error()),
        "{:?}",
        loaded.diagnostics
    );
    assert_eq!(loaded.files, 1);
}

fn mk_route(name: &str, rules: usize) -> String {
    let rules = vec!["{}"; rules].join(", ");
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  parentRefs: [{{group: '', kind: Service, name: s}}]\n  rules: [{rules}]\n"
    )
}

fn route(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind: Kind::HttpRoute,
        key: ObjectKey::new(namespace, name),
    }
}

#[test]
fn a_route_the_api_server_would_refuse_is_reported_and_the_valid_one_served() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "routes.yaml",
        &format!("{}---\n{}", mk_route("too-many", 17), mk_route("fine", 2)),
    );
    let loaded = load(dir.path());
    assert!(loaded.objects.contains(&route("ns", "fine")));
    assert!(!loaded.objects.contains(&route("ns", "too-many")));
    let errors = errors(&loaded);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].file, dir.path().join("routes.yaml"));
    assert_eq!(errors[0].object.as_deref(), Some("HTTPRoute ns/too-many"));
    assert!(
        errors[0].message.starts_with(
            "document 1: HTTPRoute.gateway.networking.k8s.io \"too-many\" is invalid: \
             [spec.rules: Too many: 17: must have at most 16 items, "
        ),
        "{}",
        errors[0].message
    );
}
