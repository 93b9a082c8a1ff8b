//! The table of resource types the fixture serves. Discovery, routing, storage and the
//! status-subresource rules are all driven from [`RESOURCES`]; to serve another kind, add a row.

/// One served group/version/resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    /// Whether the resource has a `/status` subresource. If so, writes to the main resource
    /// ignore `.status` and writes to `/status` change only `.status`.
    pub has_status: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
}

impl ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Objects are stored once per (group, plural): every served version of a kind sees the
    /// same objects, with `apiVersion` rewritten (no conversion of the body).
    pub fn storage_key(&self) -> StorageKey {
        StorageKey {
            group: self.group,
            plural: self.plural,
        }
    }

    /// Whether a real cluster serves this kind from a CustomResourceDefinition (so it takes no
    /// strategic merge patch and its list items carry `apiVersion`/`kind`).
    pub fn is_custom(&self) -> bool {
        let builtin = self.group.is_empty()
            || (self.group.ends_with(".k8s.io") && self.group != "gateway.networking.k8s.io");
        !builtin
    }

    /// Verbs on the main resource, as discovery advertises them.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// Key of one object collection in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey {
    pub group: &'static str,
    pub plural: &'static str,
}

const fn row(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    has_status: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        kind,
        plural,
        singular: "",
        namespaced,
        has_status,
        short_names: &[],
        categories: &[],
    }
}

const fn named(
    mut r: ResourceType,
    singular: &'static str,
    short: &'static [&'static str],
) -> ResourceType {
    r.singular = singular;
    r.short_names = short;
    r
}

const fn category(mut r: ResourceType, categories: &'static [&'static str]) -> ResourceType {
    r.categories = categories;
    r
}

const APIEXT: &str = "apiextensions.k8s.io";
const ADMISSION: &str = "admissionregistration.k8s.io";
const GATEWAY: &str = "gateway.networking.k8s.io";
const SPLIT: &str = "split.smi-spec.io";
const SPECS: &str = "specs.smi-spec.io";
const ACCESS: &str = "access.smi-spec.io";
const GW_API: &[&str] = &["gateway-api"];
const SMI: &[&str] = &["smi"];

/// Every served resource. The first row of a group names its preferred version.
#[rustfmt::skip]
pub static RESOURCES: &[ResourceType] = &[
    named(row("", "v1", "Namespace", "namespaces", false, true), "namespace", &["ns"]),
    named(row("", "v1", "Service", "services", true, true), "service", &["svc"]),
    named(row("", "v1", "Pod", "pods", true, true), "pod", &["po"]),
    named(row("", "v1", "ConfigMap", "configmaps", true, false), "configmap", &["cm"]),
    named(row("", "v1", "Event", "events", true, false), "event", &["ev"]),
    named(row("events.k8s.io", "v1", "Event", "events", true, false), "event", &["ev"]),
    named(row("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, false), "endpointslice", &[]),
    named(row("coordination.k8s.io", "v1", "Lease", "leases", true, false), "lease", &[]),
    named(row(APIEXT, "v1", "CustomResourceDefinition", "customresourcedefinitions", false, true), "customresourcedefinition", &["crd", "crds"]),
    // Stored only, never enforced: `kubectl apply -f` of the Gateway API CRD folder, which
    // ships a ValidatingAdmissionPolicy, then succeeds.
    named(row(ADMISSION, "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", false, true), "validatingadmissionpolicy", &[]),
    named(row(ADMISSION, "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", false, false), "validatingadmissionpolicybinding", &[]),
    category(named(row(GATEWAY, "v1", "HTTPRoute", "httproutes", true, true), "httproute", &[]), GW_API),
    category(named(row(GATEWAY, "v1", "GRPCRoute", "grpcroutes", true, true), "grpcroute", &[]), GW_API),
    category(named(row(GATEWAY, "v1", "ReferenceGrant", "referencegrants", true, false), "referencegrant", &["refgrant"]), GW_API),
    category(named(row(GATEWAY, "v1beta1", "HTTPRoute", "httproutes", true, true), "httproute", &[]), GW_API),
    category(named(row(GATEWAY, "v1beta1", "ReferenceGrant", "referencegrants", true, false), "referencegrant", &["refgrant"]), GW_API),
    // As Gateway API releases before v1.1 serve GRPCRoute (experimental channel).
    category(named(row(GATEWAY, "v1alpha2", "GRPCRoute", "grpcroutes", true, true), "grpcroute", &[]), GW_API),
    category(named(row(SPLIT, "v1alpha4", "TrafficSplit", "trafficsplits", true, false), "trafficsplit", &["ts"]), SMI),
    category(named(row(SPLIT, "v1alpha3", "TrafficSplit", "trafficsplits", true, false), "trafficsplit", &["ts"]), SMI),
    category(named(row(SPLIT, "v1alpha2", "TrafficSplit", "trafficsplits", true, false), "trafficsplit", &["ts"]), SMI),
    category(named(row(SPLIT, "v1alpha1", "TrafficSplit", "trafficsplits", true, false), "trafficsplit", &["ts"]), SMI),
    category(named(row(SPECS, "v1alpha4", "HTTPRouteGroup", "httproutegroups", true, false), "httproutegroup", &["htr"]), SMI),
    category(named(row(SPECS, "v1alpha4", "TCPRoute", "tcproutes", true, false), "tcproute", &["tr"]), SMI),
    category(named(row(SPECS, "v1alpha3", "HTTPRouteGroup", "httproutegroups", true, false), "httproutegroup", &["htr"]), SMI),
    category(named(row(SPECS, "v1alpha3", "TCPRoute", "tcproutes", true, false), "tcproute", &["tr"]), SMI),
    category(named(row(SPECS, "v1alpha2", "HTTPRouteGroup", "httproutegroups", true, false), "httproutegroup", &["htr"]), SMI),
    category(named(row(SPECS, "v1alpha2", "TCPRoute", "tcproutes", true, false), "tcproute", &["tr"]), SMI),
    category(named(row(SPECS, "v1alpha1", "HTTPRouteGroup", "httproutegroups", true, false), "httproutegroup", &["htr"]), SMI),
    category(named(row(SPECS, "v1alpha1", "TCPRoute", "tcproutes", true, false), "tcproute", &["tr"]), SMI),
    category(named(row(ACCESS, "v1alpha3", "TrafficTarget", "traffictargets", true, false), "traffictarget", &["tt"]), SMI),
];

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Resources whose kind or plural is `name` (case-insensitive), in table order.
pub fn by_kind_or_plural(name: &str) -> impl Iterator<Item = &'static ResourceType> + '_ {
    RESOURCES
        .iter()
        .filter(move |r| r.kind.eq_ignore_ascii_case(name) || r.plural.eq_ignore_ascii_case(name))
}

/// The resource with this `apiVersion` and `kind`.
pub fn by_api_version_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Served groups in table order, each with its versions in table order (preferred first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    groups_where(|_| true)
}

/// [`groups`] counting only the rows `keep` accepts (versions a CRD does not serve drop out).
pub fn groups_where(
    keep: impl Fn(&ResourceType) -> bool,
) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| keep(r)) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Resources served in one group/version.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceType> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// `("", "v1")` for `v1`, `("g", "v")` for `g/v`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_unique_and_named() {
        for (i, a) in RESOURCES.iter().enumerate() {
            assert!(!a.singular.is_empty(), "{} has no singular", a.kind);
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "duplicate {}/{}/{}",
                    a.group,
                    a.version,
                    a.plural
                );
            }
        }
    }

    #[test]
    fn groups_list_preferred_version_first() {
        let groups = groups();
        let gw = groups.iter().find(|(g, _)| *g == GATEWAY).unwrap();
        assert_eq!(gw.1, vec!["v1", "v1beta1", "v1alpha2"]);
        assert_eq!(groups[0].0, "");
    }
}
