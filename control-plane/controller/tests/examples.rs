//! The manifests in `examples/` load without problems and every route in them is accepted.

use std::path::PathBuf;

use lanyard_controller::ctl::{TranslateRequest, translate_files};
use lanyard_controller::proxy::ProxySelector;
use lanyard_controller::report::{Format, Show};
use lanyard_controller::{FileSource, Settings, Severity, Snapshot};
use lanyard_index::status::reasons;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn load_examples() -> Snapshot {
    let mut source = FileSource::new([examples_dir()]).expect("examples/ exists");
    Snapshot::translate(1, source.load(), &Settings::default())
}

#[test]
fn the_examples_load_without_errors_or_warnings() {
    let snapshot = load_examples();
    let problems: Vec<String> = snapshot
        .diagnostics
        .iter()
        .filter(|d| d.severity != Severity::Info)
        .map(ToString::to_string)
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        snapshot.translation.warnings.is_empty(),
        "{:#?}",
        snapshot.translation.warnings
    );
    let objects = &snapshot.objects;
    assert_eq!(objects.http_routes.len(), 2);
    assert_eq!(objects.grpc_routes.len(), 1);
    assert!(objects.services.len() >= 6);
    // Every Service got a ClusterIP.
    for (key, service) in &objects.services {
        let ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        assert!(
            ip.is_some_and(|ip| ip.starts_with("10.96.")),
            "{key}: {ip:?}"
        );
    }
}

#[test]
fn the_examples_smi_canary_is_applied() {
    let snapshot = load_examples();
    let smi = &snapshot.translation.smi;
    assert_eq!(smi.len(), 1, "{smi:#?}");
    assert_eq!(
        smi[0].split.to_string(),
        "TrafficSplit bookinfo/details-canary"
    );
    assert_eq!(
        smi[0].outcome,
        lanyard_index::SmiOutcome::Applied,
        "{smi:#?}"
    );
}

#[test]
fn every_route_in_the_examples_is_accepted_with_resolved_refs() {
    let snapshot = load_examples();
    let statuses = &snapshot.translation.statuses;
    assert_eq!(
        statuses.len(),
        snapshot.objects.http_routes.len() + snapshot.objects.grpc_routes.len(),
        "every route has a status"
    );
    for status in statuses {
        assert!(!status.parents.is_empty(), "{}: no parent", status.route);
        for parent in &status.parents {
            for type_ in [reasons::ACCEPTED, reasons::RESOLVED_REFS] {
                let condition = parent
                    .condition(type_)
                    .unwrap_or_else(|| panic!("{}: no {type_} condition", status.route));
                assert!(
                    condition.is_true(),
                    "{}: {type_} is {} ({}: {})",
                    status.route,
                    condition.status,
                    condition.reason,
                    condition.message
                );
            }
        }
    }
}

#[test]
fn lanyardctl_translates_the_examples_for_the_productpage_proxy() {
    let output = translate_files(&TranslateRequest {
        paths: vec![examples_dir()],
        proxy: "bookinfo/productpage-v1-7c9f8d6b5-4xk2m".parse().unwrap(),
        show: Show::All,
        format: Format::Yaml,
        settings: Settings::default(),
    })
    .expect("the examples translate");
    assert_eq!(output.errors, 0);
    for part in ["status:", "diagnostics:", "model:", "xds:"] {
        assert!(
            output
                .text
                .lines()
                .any(|l| l == part || l.starts_with(&format!("{part} "))),
            "no {part} in the report"
        );
    }
    let namespace_only = translate_files(&TranslateRequest {
        paths: vec![examples_dir()],
        proxy: ProxySelector::default(),
        show: Show::Xds,
        format: Format::Json,
        settings: Settings::default(),
    })
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&namespace_only.text).unwrap();
    assert!(value.get("xds").is_some());
    assert!(value.get("model").is_none());
}
