//! The report of a translation, as YAML or JSON: route status, diagnostics, the model and
//! what a proxy receives.
//!
//! ```yaml
//! status:                # one entry per route, sorted by kind, namespace and name
//! - kind: HTTPRoute
//!   namespace: default
//!   name: reviews
//!   status: {parents: [...]}
//! diagnostics: [...]     # what the loader found in the files, in file order
//! warnings: [...]        # the translator's warnings about objects other than routes
//! smi: [...]             # what became of each SMI TrafficSplit (left out when there is none)
//! model: {...}           # the intermediate model
//! xds: {...}             # the Envoy resources of one proxy
//! ```
//!
//! Everything is sorted, so a report is stable and can be diffed or kept as a golden file.

use lanyard_index::{RouteStatus, SmiOutcome, SmiReport};
use lanyard_model::Model;
use serde::Serialize;

use crate::diagnostics::Diagnostic;
use crate::error::{Error, Result};
use crate::nacks::{Rejection, Rejections, with_rejections};
use crate::snapshot::Snapshot;

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// YAML, as `kubectl get -o yaml` prints.
    #[default]
    Yaml,
    /// Pretty-printed JSON.
    Json,
}

/// Which parts of the report to show. Diagnostics and warnings are always shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Show {
    /// Everything.
    #[default]
    All,
    /// Route status only.
    Status,
    /// The intermediate model only.
    Model,
    /// The proxy's xDS resources only.
    Xds,
}

impl Show {
    /// Whether route status is shown.
    pub fn status(self) -> bool {
        matches!(self, Show::All | Show::Status)
    }

    /// Whether the model is shown.
    pub fn model(self) -> bool {
        matches!(self, Show::All | Show::Model)
    }

    /// Whether the proxy's xDS resources are shown.
    pub fn xds(self) -> bool {
        matches!(self, Show::All | Show::Xds)
    }
}

/// The status of one route, as it would be written to the object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteStatusEntry {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: String,
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub name: String,
    /// `{parents: [...]}`.
    pub status: serde_json::Value,
}

/// What became of one SMI TrafficSplit (SMI objects have no status field).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SmiEntry {
    pub namespace: String,
    /// The TrafficSplit's name.
    pub name: String,
    /// The root Service, `namespace/name`.
    pub service: String,
    /// `Applied`, `Degraded` (applied with backends left out), `Ignored` or `Invalid`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub message: String,
    /// What connected proxies reject of the split's configuration (live controller only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// SMI entries in the translation's order (sorted by split).
pub fn smi_entries(reports: &[SmiReport]) -> Vec<SmiEntry> {
    reports
        .iter()
        .map(|r| {
            let (outcome, reason) = match &r.outcome {
                SmiOutcome::Applied => ("Applied", None),
                SmiOutcome::Degraded { reason } => ("Degraded", Some(reason.clone())),
                SmiOutcome::Ignored { reason } => ("Ignored", Some(reason.clone())),
                SmiOutcome::Invalid { reason } => ("Invalid", Some(reason.clone())),
            };
            SmiEntry {
                namespace: r.split.key.namespace.clone(),
                name: r.split.key.name.clone(),
                service: r.service.clone(),
                outcome: outcome.to_string(),
                reason,
                message: r.message.clone(),
                rejected: None,
            }
        })
        .collect()
}

/// The whole report. Fields are serialized in this order; absent parts are left out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Every route's status, sorted by kind, namespace and name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<RouteStatusEntry>>,
    /// What the loader found in the files, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The translator's warnings about objects other than routes, sorted.
    pub warnings: Vec<String>,
    /// What became of each SMI TrafficSplit, sorted; left out when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub smi: Vec<SmiEntry>,
    /// xDS resources a proxy would refuse, kept from proxies; left out when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<WithheldEntry>,
    /// The intermediate model (see [`model_value`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<serde_json::Value>,
    /// The xDS resources of one proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xds: Option<serde_json::Value>,
}

impl Report {
    /// The parts of a snapshot that `show` asks for. `xds` is the rendered resources of the
    /// proxy (see [`lanyard_xds::render::resources_value`]), shown when `show` includes them.
    pub fn new(snapshot: &Snapshot, show: Show, xds: Option<serde_json::Value>) -> Result<Self> {
        let mut warnings = snapshot.translation.warnings.clone();
        warnings.sort();
        Ok(Self {
            status: show
                .status()
                .then(|| status_entries(&snapshot.translation.statuses)),
            diagnostics: snapshot.diagnostics.clone(),
            warnings,
            smi: smi_entries(&snapshot.translation.smi),
            withheld: withheld_entries(&snapshot.mesh),
            model: show
                .model()
                .then(|| model_value(&snapshot.translation.model))
                .transpose()?,
            xds: if show.xds() { xds } else { None },
        })
    }

    /// The report with what connected proxies reject: the `lanyard.dev/ProxiesRejected`
    /// condition in the status of rejected routes, `rejected` on rejected splits. Only the
    /// live controller knows this; `lanyardctl x translate` does not.
    pub fn with_rejections(mut self, snapshot: &Snapshot, rejections: &Rejections) -> Self {
        if rejections.by_object.is_empty() {
            return self;
        }
        if self.status.is_some() {
            self.status = Some(status_entries(&with_rejections(
                &snapshot.translation.statuses,
                rejections,
            )));
        }
        for (entry, report) in self.smi.iter_mut().zip(&snapshot.translation.smi) {
            entry.rejected = rejections.get(&report.split).map(Rejection::summary);
        }
        self
    }

    /// The report as text.
    pub fn render(&self, format: Format) -> Result<String> {
        match format {
            Format::Yaml => serde_yaml::to_string(self).map_err(|e| Error::Render(e.to_string())),
            Format::Json => serde_json::to_string_pretty(self)
                .map(|mut s| {
                    s.push('\n');
                    s
                })
                .map_err(|e| Error::Render(e.to_string())),
        }
    }
}

/// An xDS resource kept from proxies because they would refuse it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WithheldEntry {
    /// `Listener`, `RouteConfiguration`, `Cluster` or `ClusterLoadAssignment`.
    #[serde(rename = "type")]
    pub type_: String,
    pub name: String,
    /// Who would refuse it: `Envoy` or `gRPC`.
    pub receiver: String,
    /// What is served instead.
    pub kept: String,
    /// Each rule it breaks, with the field's path.
    pub violations: Vec<String>,
}

fn withheld_entries(mesh: &lanyard_xds::MeshResources) -> Vec<WithheldEntry> {
    mesh.withheld()
        .iter()
        .map(|w| {
            let f = &w.finding;
            WithheldEntry {
                type_: f
                    .type_
                    .message_name()
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                name: f.name.clone(),
                receiver: crate::snapshot::receiver_name(f.receiver).to_string(),
                kept: w.kept.as_str().to_string(),
                violations: f.violations.iter().map(|v| v.to_string()).collect(),
            }
        })
        .collect()
}

/// Route status entries sorted by kind, namespace and name.
pub fn status_entries(statuses: &[RouteStatus]) -> Vec<RouteStatusEntry> {
    let mut sorted: Vec<&RouteStatus> = statuses.iter().collect();
    sorted.sort_by(|a, b| a.route.cmp(&b.route));
    sorted
        .into_iter()
        .map(|s| RouteStatusEntry {
            kind: s.route.kind.as_str().to_string(),
            namespace: s.route.key.namespace.clone(),
            name: s.route.key.name.clone(),
            status: s.to_value(),
        })
        .collect()
}

/// The model as a JSON value.
///
/// The model's maps are keyed by structs (`ServiceKey`, `ServicePortKey`, ...), which JSON
/// cannot key by; they are keyed here by the keys' usual spelling: `namespace/name` and
/// `namespace/name:port`.
pub fn model_value(model: &Model) -> Result<serde_json::Value> {
    let yaml = serde_yaml::to_value(model).map_err(|e| Error::Render(e.to_string()))?;
    Ok(yaml_to_json(yaml))
}

fn yaml_to_json(value: serde_yaml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    use serde_yaml::Value as Y;
    match value {
        Y::Null => J::Null,
        Y::Bool(b) => J::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(J::Null, J::Number)
            }
        }
        Y::String(s) => J::String(s),
        Y::Sequence(items) => J::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => J::Object(
            map.into_iter()
                .map(|(k, v)| (key_string(&k), yaml_to_json(v)))
                .collect(),
        ),
        // serde_yaml writes enum variants with a value as tags (`!prefix /`): make them
        // `{prefix: /}`, as JSON serializers do.
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let mut map = serde_json::Map::new();
            map.insert(
                tag.trim_start_matches('!').to_string(),
                yaml_to_json(tagged.value),
            );
            J::Object(map)
        }
    }
}

/// A map key as a string: `namespace/name` for namespaced keys, `service:port` for port
/// keys, parts joined by `/` otherwise.
fn key_string(key: &serde_yaml::Value) -> String {
    use serde_yaml::Value as Y;
    match key {
        Y::Null => "~".to_string(),
        Y::Bool(b) => b.to_string(),
        Y::Number(n) => n.to_string(),
        Y::String(s) => s.clone(),
        Y::Sequence(items) => items.iter().map(key_string).collect::<Vec<_>>().join("/"),
        Y::Mapping(map) => {
            let field = |name: &str| map.get(name).map(key_string);
            match (
                field("namespace"),
                field("name"),
                field("service"),
                field("port"),
            ) {
                (Some(ns), Some(name), None, None) if map.len() == 2 => format!("{ns}/{name}"),
                (None, None, Some(service), Some(port)) if map.len() == 2 => {
                    format!("{service}:{port}")
                }
                _ => map.values().map(key_string).collect::<Vec<_>>().join("/"),
            }
        }
        Y::Tagged(tagged) => key_string(&tagged.value),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use lanyard_index::status::{Condition, ParentStatus};
    use lanyard_index::{Kind, ObjectKey, ObjectRef, Translation};
    use lanyard_model::{
        Action, Backend, BackendTarget, Forward, PathMatch, PortRouting, Protocol, RequestMatch,
        Route, RouteTable, Service, ServiceKey, ServicePort, ServicePortKey,
    };

    use super::*;
    use crate::diagnostics::Diagnostic;

    fn mk_status(kind: Kind, namespace: &str, name: &str) -> RouteStatus {
        RouteStatus {
            route: ObjectRef {
                kind,
                key: ObjectKey::new(namespace, name),
            },
            generation: None,
            parents: vec![ParentStatus {
                parent_ref: lanyard_index::api::ParentReference {
                    group: Some(String::new()),
                    kind: Some("Service".into()),
                    name: "svc".into(),
                    ..Default::default()
                },
                controller_name: "c".into(),
                conditions: vec![Condition::new("Accepted", true, "Accepted", "", None)],
            }],
        }
    }

    fn mk_model() -> Model {
        let key = ServiceKey::new("ns", "reviews");
        let port = ServicePortKey::new(key.clone(), 9080);
        let table = RouteTable {
            protocol: Protocol::Http,
            routes: vec![Route::new(
                RequestMatch {
                    path: PathMatch::Prefix("/".into()),
                    ..Default::default()
                },
                Action::Forward(Forward {
                    backends: vec![Backend::new(BackendTarget::Service(port.clone()), 1)],
                    rewrite: None,
                }),
            )],
        };
        Model {
            services: [(
                key.clone(),
                Service {
                    key: key.clone(),
                    cluster_ips: vec!["10.96.0.5".parse().unwrap()],
                    ports: vec![ServicePort {
                        port: 9080,
                        name: Some("http".into()),
                        protocol: Protocol::Http,
                        endpoints: vec![],
                    }],
                },
            )]
            .into(),
            workloads: BTreeMap::new(),
            routing: [(
                port,
                PortRouting {
                    producer: Some(table),
                    consumers: BTreeMap::new(),
                },
            )]
            .into(),
        }
    }

    fn mk_snapshot() -> Snapshot {
        Snapshot {
            generation: 1,
            objects: Default::default(),
            translation: Translation {
                model: mk_model(),
                statuses: vec![
                    mk_status(Kind::HttpRoute, "ns", "b"),
                    mk_status(Kind::GrpcRoute, "ns", "z"),
                    mk_status(Kind::HttpRoute, "ns", "a"),
                ],
                warnings: vec!["w2".into(), "w1".into()],
                smi: Vec::new(),
                provenance: BTreeMap::new(),
            },
            diagnostics: vec![Diagnostic::warning(PathBuf::from("f.yaml"), "careful")],
            mesh: Snapshot::placeholder().mesh,
            unused_kinds: BTreeMap::new(),
            last_valid_splits: Default::default(),
        }
    }

    #[test]
    fn model_maps_are_keyed_by_the_keys_usual_spelling() {
        let value = model_value(&mk_model()).unwrap();
        assert!(value["services"]["ns/reviews"].is_object(), "{value:#}");
        let route = &value["routing"]["ns/reviews:9080"]["producer"]["routes"][0];
        assert_eq!(route["matcher"]["path"], serde_json::json!({"prefix": "/"}));
        assert_eq!(
            route["action"]["forward"]["backends"][0]["target"]["service"]["port"],
            9080
        );
        assert_eq!(
            value["services"]["ns/reviews"]["cluster_ips"][0],
            "10.96.0.5"
        );
    }

    #[test]
    fn the_live_report_shows_what_proxies_reject() {
        let mut snapshot = mk_snapshot();
        let split = ObjectRef {
            kind: Kind::TrafficSplit,
            key: ObjectKey::new("ns", "split"),
        };
        snapshot.translation.smi.push(SmiReport {
            split: split.clone(),
            service: "ns/web".into(),
            outcome: SmiOutcome::Applied,
            message: "90/10".into(),
        });
        let rejection = Rejection {
            proxies: 1,
            type_: "RouteConfiguration".into(),
            resource: "reviews.ns.svc.cluster.local:9080".into(),
            version: "v".into(),
            others: 0,
            message: "bad regex".into(),
            proxy: "p".into(),
        };
        let route = ObjectRef {
            kind: Kind::HttpRoute,
            key: ObjectKey::new("ns", "b"),
        };
        let rejections = Rejections {
            by_object: [(route, rejection.clone()), (split, rejection.clone())].into(),
        };
        let plain = Report::new(&snapshot, Show::Status, None).unwrap();
        let live = plain.clone().with_rejections(&snapshot, &rejections);
        let json: serde_json::Value =
            serde_json::from_str(&live.render(Format::Json).unwrap()).unwrap();
        let conditions = &json["status"][1]["status"]["parents"][0]["conditions"];
        assert_eq!(json["status"][1]["name"], "b");
        assert_eq!(conditions[1]["type"], crate::nacks::CONDITION);
        assert_eq!(conditions[1]["message"], rejection.summary());
        assert_eq!(
            json["status"][0]["status"],
            plain.status.as_ref().unwrap()[0].status
        );
        assert_eq!(json["smi"][0]["rejected"], rejection.summary());
        assert_eq!(
            plain
                .clone()
                .with_rejections(&snapshot, &Rejections::default()),
            plain
        );
    }

    #[test]
    fn status_is_sorted_by_kind_namespace_and_name() {
        let report = Report::new(&mk_snapshot(), Show::Status, None).unwrap();
        let names: Vec<_> = report
            .status
            .as_ref()
            .unwrap()
            .iter()
            .map(|s| format!("{} {}/{}", s.kind, s.namespace, s.name))
            .collect();
        assert_eq!(
            names,
            ["HTTPRoute ns/a", "HTTPRoute ns/b", "GRPCRoute ns/z"]
        );
        assert_eq!(report.warnings, ["w1", "w2"]);
        assert!(report.model.is_none());
        assert!(report.xds.is_none());
        assert_eq!(
            report.status.unwrap()[0].status["parents"][0]["conditions"][0]["type"],
            "Accepted"
        );
    }

    #[test]
    fn smi_reports_are_shown_and_left_out_when_there_is_none() {
        let yaml = Report::new(&mk_snapshot(), Show::All, None)
            .unwrap()
            .render(Format::Yaml)
            .unwrap();
        assert!(!yaml.contains("smi:"), "{yaml}");
        let mut snapshot = mk_snapshot();
        snapshot.translation.smi = vec![SmiReport {
            split: ObjectRef {
                kind: Kind::TrafficSplit,
                key: ObjectKey::new("ns", "canary"),
            },
            service: "ns/web".into(),
            outcome: SmiOutcome::Ignored {
                reason: "GatewayAPIRoute".into(),
            },
            message: "an HTTPRoute wins".into(),
        }];
        let report = Report::new(&snapshot, Show::Status, None).unwrap();
        assert_eq!(
            report.smi,
            vec![SmiEntry {
                namespace: "ns".into(),
                name: "canary".into(),
                service: "ns/web".into(),
                outcome: "Ignored".into(),
                reason: Some("GatewayAPIRoute".into()),
                message: "an HTTPRoute wins".into(),
                rejected: None,
            }]
        );
        assert!(report.render(Format::Yaml).unwrap().contains("smi:"));
    }

    #[test]
    fn a_split_applied_without_some_backends_shows_as_degraded_with_its_reason() {
        let entries = smi_entries(&[SmiReport {
            split: ObjectRef {
                kind: Kind::TrafficSplit,
                key: ObjectKey::new("ns", "canary"),
            },
            service: "ns/web".into(),
            outcome: SmiOutcome::Degraded {
                reason: "BackendPortNotFound".into(),
            },
            message: "web-v2 has no port 80".into(),
        }]);
        assert_eq!(entries[0].outcome, "Degraded");
        assert_eq!(entries[0].reason.as_deref(), Some("BackendPortNotFound"));
    }

    #[test]
    fn show_selects_the_parts_and_diagnostics_are_always_there() {
        let xds = Some(serde_json::json!({"clusters": []}));
        let report = Report::new(&mk_snapshot(), Show::Xds, xds.clone()).unwrap();
        assert!(report.status.is_none() && report.model.is_none());
        assert_eq!(report.xds, xds);
        assert_eq!(report.diagnostics.len(), 1);
        let all = Report::new(&mk_snapshot(), Show::All, xds).unwrap();
        assert!(all.status.is_some() && all.model.is_some() && all.xds.is_some());
    }

    #[test]
    fn rendering_is_stable_and_in_report_order() {
        let snapshot = mk_snapshot();
        let yaml = Report::new(&snapshot, Show::All, None)
            .unwrap()
            .render(Format::Yaml)
            .unwrap();
        let again = Report::new(&snapshot, Show::All, None)
            .unwrap()
            .render(Format::Yaml)
            .unwrap();
        assert_eq!(yaml, again);
        let status = yaml
            .find("\nstatus:")
            .or(yaml.starts_with("status:").then_some(0));
        let model = yaml.find("\nmodel:");
        assert!(
            status.is_some() && model.is_some() && status < model,
            "{yaml}"
        );
        assert!(yaml.contains("file: f.yaml"), "{yaml}");
        assert!(yaml.contains("severity: warning"), "{yaml}");

        let json = Report::new(&snapshot, Show::Status, None)
            .unwrap()
            .render(Format::Json)
            .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["status"][0]["name"], "a");
        assert_eq!(parsed["diagnostics"][0]["message"], "careful");
    }
}
