//! Golden translations: input manifests -> what `lanyardctl x translate -o yaml` prints
//! (route status, diagnostics, the model and one proxy's xDS resources), sorted and stable.
//!
//! `LANYARD_UPDATE_GOLDEN=1 cargo test -p lanyard-tests --test golden` rewrites the expected
//! files and deletes the ones no input produces any more.
//!
//! - `golden/conformance/<manifest>.out.yaml`: every Gateway API mesh conformance manifest,
//!   with `manifests.yaml` and our topology fixture, as the suite's client pod sees it (and
//!   `<manifest>.consumer.out.yaml` for the consumer namespace's client where it has routes).
//! - `golden/cases/<case>.in.yaml` -> `<case>.out.yaml`: Lanyard's own cases. A first line
//!   `# proxy: NAMESPACE/POD` (or `# proxy: NAMESPACE`) picks the proxy; the default is a
//!   client in namespace `default`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lanyard_controller::ctl::{TranslateRequest, translate_files};
use lanyard_controller::proxy::ProxySelector;
use lanyard_controller::report::{Format, Show};
use lanyard_controller::snapshot::Settings;
use lanyard_model::NamespaceName;
use lanyard_tests::{check_golden, conformance_dir, repo_root, update_golden};

const CLIENT: &str = "gateway-conformance-mesh/echo-v1-6d8f9b7c5-k2x7q";
const CONSUMER_CLIENT: &str = "gateway-conformance-mesh-consumer/echo-v1-7f9b6c8d4-m3q8j";

fn render(paths: Vec<PathBuf>, proxy: ProxySelector) -> String {
    let output = translate_files(&TranslateRequest {
        paths,
        proxy,
        show: Show::All,
        format: Format::Yaml,
        settings: Settings::default(),
    })
    .expect("translate");
    // Paths in diagnostics are made relative, so the files do not depend on the checkout.
    output
        .text
        .replace(&conformance_dir().display().to_string(), "<conformance>")
        .replace(&repo_root().display().to_string(), "<repo>")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Checks (or rewrites) every expected file, then removes (or reports) stale ones.
fn check_all(dir: &Path, produced: Vec<(PathBuf, String)>) {
    let mut failures = Vec::new();
    let expected: BTreeSet<PathBuf> = produced.iter().map(|(p, _)| p.clone()).collect();
    for (path, text) in &produced {
        if let Err(e) = check_golden(path, text) {
            failures.push(e);
        }
    }
    for existing in yaml_files(dir) {
        let name = existing.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".out.yaml") && !expected.contains(&existing) {
            if update_golden() {
                std::fs::remove_file(&existing).unwrap();
            } else {
                failures.push(format!(
                    "{} is not produced by any input any more",
                    existing.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn conformance_manifests_translate_to_their_golden_files() {
    let source = conformance_dir();
    let out_dir = repo_root().join("tests/golden/conformance");
    let base = vec![source.join("manifests.yaml"), out_dir.join("topology.yaml")];
    let mut produced = Vec::new();
    let manifests: Vec<PathBuf> = yaml_files(&source)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != "manifests.yaml" && name != "EXPECTATIONS.yaml"
        })
        .collect();
    assert!(manifests.len() >= 20, "found {} manifests", manifests.len());
    for manifest in manifests {
        let stem = manifest.file_stem().unwrap().to_string_lossy().to_string();
        let mut paths = base.clone();
        paths.push(manifest.clone());
        produced.push((
            out_dir.join(format!("{stem}.out.yaml")),
            render(paths.clone(), CLIENT.parse().unwrap()),
        ));
        let text = std::fs::read_to_string(&manifest).unwrap();
        if text.contains("namespace: gateway-conformance-mesh-consumer") {
            produced.push((
                out_dir.join(format!("{stem}.consumer.out.yaml")),
                render(paths, CONSUMER_CLIENT.parse().unwrap()),
            ));
        }
    }
    // The base topology alone: no route, plain pass-through (MeshBasic).
    produced.push((
        out_dir.join("no-routes.out.yaml"),
        render(base, CLIENT.parse().unwrap()),
    ));
    check_all(&out_dir, produced);
}

#[test]
fn own_cases_translate_to_their_golden_files() {
    let dir = repo_root().join("tests/golden/cases");
    let mut produced = Vec::new();
    let inputs: Vec<PathBuf> = yaml_files(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    assert!(inputs.len() >= 8, "found {} cases", inputs.len());
    for input in inputs {
        let text = std::fs::read_to_string(&input).unwrap();
        let proxy = match text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# proxy: "))
        {
            Some(p) if p.contains('/') => p.trim().parse().unwrap(),
            Some(ns) => ProxySelector::Namespace(NamespaceName::new(ns.trim())),
            None => ProxySelector::default(),
        };
        let name = input
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".in.yaml", ".out.yaml");
        produced.push((dir.join(name), render(vec![input], proxy)));
    }
    check_all(&dir, produced);
}
