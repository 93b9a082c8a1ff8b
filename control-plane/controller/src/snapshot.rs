//! A snapshot: one consistent view of the input and of what it translates to.
//!
//! Sources publish [`Snapshot`]s; the ADS server and the status reporting read them. A
//! snapshot is immutable and shared as `Arc<Snapshot>`.

use std::collections::BTreeMap;

use lanyard_index::status::DEFAULT_CONTROLLER_NAME;
use lanyard_index::{Objects, Translation};

use crate::diagnostics::{Diagnostic, Severity, count_errors};
use crate::files::Loaded;
use crate::smi::LastValidSplits;

/// The default DNS domain of the cluster.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// The default SPIFFE trust domain of workload identities.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

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
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Counts published snapshots, from 1. A new snapshot is published only when the
    /// objects or the diagnostics changed. 0 is a placeholder a source publishes before its
    /// first full load ([`Snapshot::placeholder`]); it is never served.
    pub generation: u64,
    /// Every object served (see [`crate::files`] for which ones).
    pub objects: Objects,
    /// The model, route status and translator warnings for `objects`.
    pub translation: Translation,
    /// What the loader found wrong (or did) in the input.
    pub diagnostics: Vec<Diagnostic>,
    /// Documents of kinds that do not affect the mesh, by kind.
    pub unused_kinds: BTreeMap<String, usize>,
    /// The last valid version of each TrafficSplit, kept in effect while an edit leaves it
    /// invalid (see [`crate::smi`]).
    pub last_valid_splits: LastValidSplits,
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
            objects: Objects::default(),
            translation: Translation::default(),
            diagnostics: Vec::new(),
            unused_kinds: BTreeMap::new(),
            last_valid_splits: LastValidSplits::default(),
        }
    }

    /// Whether this is [`Snapshot::placeholder`]: nothing loaded yet, not to be served.
    pub fn is_placeholder(&self) -> bool {
        self.generation == 0
    }

    /// Translates loaded objects, with nothing known from before.
    pub fn translate(generation: u64, loaded: Loaded, settings: &Settings) -> Self {
        Self::translate_after(&LastValidSplits::default(), generation, loaded, settings)
    }

    /// The snapshot that follows this one for newly loaded objects: the next generation,
    /// translated keeping what this one remembers (see [`crate::smi`]).
    pub fn next(&self, loaded: Loaded, settings: &Settings) -> Self {
        Self::translate_after(
            &self.last_valid_splits,
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
        }
    }

    fn translate_after(
        last_valid: &LastValidSplits,
        generation: u64,
        loaded: Loaded,
        settings: &Settings,
    ) -> Self {
        let (translation, last_valid_splits) =
            crate::smi::translate(&loaded.objects, &settings.index_options(), last_valid);
        Self {
            generation,
            objects: loaded.objects,
            translation,
            diagnostics: loaded.diagnostics,
            unused_kinds: loaded.unused_kinds,
            last_valid_splits,
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
