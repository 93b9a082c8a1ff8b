//! How lists merge, per field path: the little of the OpenAPI schema that strategic merge patch
//! and server-side apply need. Lists not named here are atomic (replaced whole), except any
//! `conditions` list, which is keyed by `type` as in every Kubernetes and Gateway API schema.

use crate::resources::ResourceType;

/// How a list merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole; owned as one field.
    Atomic,
    /// A set of scalars; each value owned separately.
    Set,
    /// Items keyed by these fields (`x-kubernetes-list-map-keys`); the first is the strategic
    /// merge patch `patchMergeKey`.
    Map(&'static [&'static str]),
}

/// How `status.parents` of Gateway API routes merges under server-side apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteParents {
    /// As the Gateway API v1.6.1 CRDs declare it (`x-kubernetes-list-type: atomic`): an apply
    /// of `status.parents` replaces the whole list, and conflicts with another manager that owns
    /// it unless forced. This is what a real API server does.
    #[default]
    Atomic,
    /// Non-standard: entries keyed by (`parentRef`, `controllerName`), so an apply replaces only
    /// the applier's entries. No real API server merges this way.
    KeyedByParentAndController,
}

/// The list-merge rules in force for one server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Schema {
    pub route_parents: RouteParents,
}

const NAME: &[&str] = &["name"];
const TYPE: &[&str] = &["type"];

impl Schema {
    /// The list type at `path` (field names from the object root; list levels not included).
    pub fn list_type(&self, r: &ResourceType, path: &[String]) -> ListType {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        match path.as_slice() {
            ["metadata", "finalizers"] => return ListType::Set,
            ["metadata", "ownerReferences"] => return ListType::Map(&["uid"]),
            [.., "conditions"] => return ListType::Map(TYPE),
            _ => {}
        }
        match (r.group, r.kind, path.as_slice()) {
            ("", "Service", ["spec", "ports"]) => ListType::Map(&["port", "protocol"]),
            (
                "",
                "Pod",
                [
                    "spec",
                    "containers" | "initContainers" | "ephemeralContainers",
                ],
            ) => ListType::Map(NAME),
            ("", "Pod", ["spec", _, "ports"]) => ListType::Map(&["containerPort", "protocol"]),
            ("", "Pod", ["spec", _, "env"]) => ListType::Map(NAME),
            ("", "Pod", ["spec", _, "volumeMounts"]) => ListType::Map(&["mountPath"]),
            ("", "Pod", ["spec", "volumes" | "imagePullSecrets"]) => ListType::Map(NAME),
            ("", "Pod", ["status", "podIPs"]) => ListType::Map(&["ip"]),
            ("gateway.networking.k8s.io", "HTTPRoute" | "GRPCRoute", ["status", "parents"]) => {
                match self.route_parents {
                    RouteParents::Atomic => ListType::Atomic,
                    RouteParents::KeyedByParentAndController => {
                        ListType::Map(&["parentRef", "controllerName"])
                    }
                }
            }
            _ => ListType::Atomic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    #[test]
    fn known_lists_are_keyed_and_others_atomic() {
        let svc = resources::find("", "v1", "services").unwrap();
        let route = resources::find("gateway.networking.k8s.io", "v1", "httproutes").unwrap();
        let s = Schema::default();
        assert_eq!(
            s.list_type(svc, &path("spec.ports")),
            ListType::Map(&["port", "protocol"])
        );
        assert_eq!(s.list_type(svc, &path("spec.clusterIPs")), ListType::Atomic);
        assert_eq!(
            s.list_type(route, &path("status.parents")),
            ListType::Atomic
        );
        assert_eq!(
            s.list_type(route, &path("status.parents.conditions")),
            ListType::Map(TYPE)
        );
        let keyed = Schema {
            route_parents: RouteParents::KeyedByParentAndController,
        };
        assert_eq!(
            keyed.list_type(route, &path("status.parents")),
            ListType::Map(&["parentRef", "controllerName"])
        );
    }
}
