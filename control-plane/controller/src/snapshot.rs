//! A snapshot: one consistent view of the input and of what it translates to.
//!
//! Sources publish [`Snapshot`]s; the ADS server and the status reporting read them. A
//! snapshot is immutable and shared as `Arc<Snapshot>`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lanyard_index::status::DEFAULT_CONTROLLER_NAME;
use lanyard_index::{Objects, RuleRef, Translation};
use lanyard_model::{Model, RoutingVariant};
use lanyard_xds::{Finding, MeshResources, Receiver};

use crate::diagnostics::{Diagnostic, Severity, count_errors};
use crate::files::Loaded;
use crate::smi::LastValidSplits;

/// The default DNS domain of the cluster.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// The default SPIFFE trust domain of workload identities.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Translations run by this process ([`translations`]).
static TRANSLATIONS: AtomicU64 = AtomicU64::new(0);

/// How many translations of loaded objects this process has run (the
/// `lanyard_translations_total` metric).
pub fn translations() -> u64 {
    TRANSLATIONS.load(Ordering::Relaxed)
}

/// Settings shared by every translation the controller and `lanyardctl` run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `controllerName` written into route status.
    pub controller_name: String,
    /// The cluster's DNS domain (`svc.<domain>` names).
    pub cluster_domain: String,
    /// The SPIFFE trust domain of workload identities (`spiffe://<domain>/ns/…/sa/…`); kept
    /// for the certificate authority, nothing reads it yet.
    pub trust_domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            controller_name: DEFAULT_CONTROLLER_NAME.to_string(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
        }
    }
}

impl Settings {
    /// The options of the index translation.
    pub fn index_options(&self) -> lanyard_index::Options {
        lanyard_index::Options {
            controller_name: self.controller_name.clone(),
            ..lanyard_index::Options::default()
        }
    }

    /// The options of the xDS translation.
    pub fn xds_options(&self) -> lanyard_xds::XdsOptions {
        lanyard_xds::XdsOptions {
            cluster_domain: self.cluster_domain.clone(),
            ..Default::default()
        }
    }
}

/// The input as last loaded, and its translation.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Counts published snapshots, from 1. A new snapshot is published only when the
    /// objects or the diagnostics changed. 0 is a placeholder a source publishes before its
    /// first full load ([`Snapshot::placeholder`]); it is never served.
    pub generation: u64,
    /// Every object served (see [`crate::files`] for which ones), shared with the source's
    /// store until it changes.
    pub objects: Arc<Objects>,
    /// The model, route status and translator warnings for `objects`.
    pub translation: Translation,
    /// What the loader found wrong (or did) in the input.
    pub diagnostics: Vec<Diagnostic>,
    /// Documents of kinds that do not affect the mesh, by kind.
    pub unused_kinds: BTreeMap<String, usize>,
    /// The last valid version of each TrafficSplit, kept in effect while an edit leaves it
    /// invalid (see [`crate::smi`]).
    pub last_valid_splits: LastValidSplits,
    /// The xDS resources of `translation.model`, checked against what each kind of proxy
    /// accepts: what would be refused is withheld ([`MeshResources::withheld`]). This is
    /// what the ADS server publishes.
    pub mesh: Arc<MeshResources>,
}

/// Counts worth a log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Services in the model.
    pub services: usize,
    /// HTTPRoutes and GRPCRoutes in the input.
    pub routes: usize,
    /// Workloads (pods) that may run a proxy.
    pub workloads: usize,
    /// Error diagnostics.
    pub errors: usize,
    /// Warning diagnostics and translator warnings.
    pub warnings: usize,
}

impl Snapshot {
    /// What a source publishes before its first full load: generation 0, no objects.
    pub fn placeholder() -> Self {
        Self {
            generation: 0,
            objects: Arc::default(),
            translation: Translation::default(),
            diagnostics: Vec::new(),
            unused_kinds: BTreeMap::new(),
            last_valid_splits: LastValidSplits::default(),
            mesh: Arc::new(lanyard_xds::translate(
                &Model::default(),
                &lanyard_xds::XdsOptions::default(),
            )),
        }
    }

    /// Whether this is [`Snapshot::placeholder`]: nothing loaded yet, not to be served.
    pub fn is_placeholder(&self) -> bool {
        self.generation == 0
    }

    /// Translates loaded objects, with nothing known from before.
    pub fn translate(generation: u64, loaded: Loaded, settings: &Settings) -> Self {
        Self::translate_after(
            &LastValidSplits::default(),
            None,
            generation,
            loaded,
            settings,
        )
    }

    /// The snapshot that follows this one for newly loaded objects: the next generation,
    /// translated keeping what this one remembers (see [`crate::smi`]).
    pub fn next(&self, loaded: Loaded, settings: &Settings) -> Self {
        let previous = (!self.is_placeholder()).then_some(self.mesh.as_ref());
        Self::translate_after(
            &self.last_valid_splits,
            previous,
            self.generation + 1,
            loaded,
            settings,
        )
    }

    /// The snapshot that follows this one when the objects are the same and only what the
    /// loader found changed: the next generation, with this one's translation.
    pub fn with_diagnostics(&self, loaded: Loaded) -> Self {
        Self {
            generation: self.generation + 1,
            objects: loaded.objects,
            translation: self.translation.clone(),
            diagnostics: loaded.diagnostics,
            unused_kinds: loaded.unused_kinds,
            last_valid_splits: self.last_valid_splits.clone(),
            mesh: self.mesh.clone(),
        }
    }

    /// Translates, then validates before anything is published: the xDS resources are
    /// checked against the rules of each kind of proxy that reads them. Rules whose routes
    /// would be refused are dropped (`PartiallyInvalid`, as for rules that break the spec)
    /// and the objects translated again; whatever is still refused is withheld, keeping the
    /// version `previous` published.
    fn translate_after(
        last_valid: &LastValidSplits,
        previous: Option<&MeshResources>,
        generation: u64,
        loaded: Loaded,
        settings: &Settings,
    ) -> Self {
        TRANSLATIONS.fetch_add(1, Ordering::Relaxed);
        let mut options = settings.index_options();
        let xds_options = settings.xds_options();
        let (mut translation, mut last_valid_splits) =
            crate::smi::translate(&loaded.objects, &options, last_valid);
        let mut mesh = lanyard_xds::translate(&translation.model, &xds_options);
        let mut findings = mesh.check_since(previous);
        let rejected = rejected_rules(&findings, &translation);
        if !rejected.is_empty() {
            options.rejected_rules = rejected;
            (translation, last_valid_splits) =
                crate::smi::translate(&loaded.objects, &options, last_valid);
            mesh = lanyard_xds::translate(&translation.model, &xds_options);
            findings = mesh.check_since(previous);
        }
        mesh.withhold(findings, previous);
        Self {
            generation,
            objects: loaded.objects,
            translation,
            diagnostics: loaded.diagnostics,
            unused_kinds: loaded.unused_kinds,
            last_valid_splits,
            mesh: Arc::new(mesh),
        }
    }

    /// How many error diagnostics the input gave.
    pub fn errors(&self) -> usize {
        count_errors(&self.diagnostics)
    }

    /// Whether the input had errors.
    pub fn has_errors(&self) -> bool {
        self.errors() > 0
    }

    /// Counts of services, routes, workloads and problems.
    pub fn summary(&self) -> Summary {
        let model = &self.translation.model;
        Summary {
            services: model.services.len(),
            routes: self.objects.http_routes.len() + self.objects.grpc_routes.len(),
            workloads: model.workloads.len(),
            errors: self.errors(),
            warnings: self
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Warning)
                .count()
                + self.translation.warnings.len(),
        }
    }
}

/// The rules to drop so that no proxy refuses what is left: those whose routes are the only
/// place the violations of a route configuration lie, traced back through the translation's
/// provenance. A finding with a violation outside every route, or in a table no route rule
/// made (SMI), gives none: its resource is withheld instead.
fn rejected_rules(findings: &[Finding], translation: &Translation) -> BTreeMap<RuleRef, String> {
    let mut out: BTreeMap<RuleRef, String> = BTreeMap::new();
    for finding in findings.iter().filter(|f| f.is_in_routes_only()) {
        let Some(table) = &finding.table else {
            continue;
        };
        let Some(provenance) = translation.provenance.get(&table.port) else {
            continue;
        };
        let rules = match &table.variant {
            RoutingVariant::Producer => &provenance.producer,
            RoutingVariant::Consumer(namespace) => match provenance.consumers.get(namespace) {
                Some(rules) => rules,
                None => continue,
            },
            RoutingVariant::Passthrough => continue,
        };
        for (route, violations) in &table.routes {
            let Some(rule) = rules.get(*route) else {
                continue;
            };
            let why = violations
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            out.entry(rule.clone()).or_insert_with(|| {
                format!(
                    "{} would refuse its route: {why}",
                    receiver_name(finding.receiver)
                )
            });
        }
    }
    out
}

/// How status messages name a kind of proxy.
pub fn receiver_name(receiver: Receiver) -> &'static str {
    match receiver {
        Receiver::Envoy => "Envoy",
        Receiver::Grpc => "gRPC",
    }
}

#[cfg(test)]
mod tests {
    use lanyard_index::status::RouteStatus;

    use super::*;
    use crate::files::FileSource;

    const SERVICE: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
";

    /// A route whose rule 1 sets a header to `value`, beside a valid rule 0.
    fn route(value: &str) -> String {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web, port: 80}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /ok}}}}]
    backendRefs: [{{name: web, port: 80}}]
  - name: tagged
    matches: [{{path: {{type: PathPrefix, value: /tagged}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: x-tag, value: "{value}"}}]
    backendRefs: [{{name: web, port: 80}}]
"#
        )
    }

    fn load(yaml: &str) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.yaml"), format!("{SERVICE}---{yaml}")).unwrap();
        FileSource::new([dir.path().to_path_buf()]).unwrap().load()
    }

    fn conditions(snapshot: &Snapshot) -> Vec<(String, String, String)> {
        let status: &RouteStatus = &snapshot.translation.statuses[0];
        status.parents[0]
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.message.clone()))
            .collect()
    }

    fn route_paths(snapshot: &Snapshot) -> Vec<String> {
        let config = snapshot
            .mesh
            .for_proxy(&lanyard_xds::ProxyRef::envoy(
                lanyard_model::NamespaceName::new("default"),
                None,
            ))
            .routes
            .into_iter()
            .find(|r| r.name == "web.default.svc.cluster.local:80")
            .unwrap();
        config.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| format!("{:?}", r.r#match))
            .collect()
    }

    #[test]
    fn a_rule_a_proxy_would_refuse_is_dropped_before_anything_is_published() {
        // The CRD lets any header value through; Envoy refuses a newline in one (its
        // HeaderValue.value rule), and the translator alone does not know.
        let snapshot = Snapshot::translate(1, load(&route("line1\\nline2")), &Settings::default());
        let found = conditions(&snapshot);
        assert_eq!(found[0].1, "True", "{found:?}");
        assert_eq!(found[2].0, "PartiallyInvalid");
        assert!(
            found[2].2.starts_with(
                "Dropped Rule(s) 1 (tagged): Envoy would refuse its route: \
                 request_headers_to_add[0].header.value: value does not match regex pattern"
            ),
            "{found:?}"
        );
        assert_eq!(snapshot.mesh.check(), []);
        assert_eq!(snapshot.mesh.withheld(), []);
        let paths = route_paths(&snapshot);
        assert_eq!(paths.len(), 1, "{paths:?}");
        assert!(paths[0].contains("/ok"), "{paths:?}");

        let valid = Snapshot::translate(1, load(&route("plain")), &Settings::default());
        assert_eq!(conditions(&valid).len(), 2);
        assert_eq!(route_paths(&valid).len(), 2);
    }
}
