//! The check a snapshot passes before it is published: every cluster a route sends traffic
//! to exists, and every EDS cluster has its ClusterLoadAssignment. A proxy given a route to a
//! missing cluster answers 503s; an EDS cluster without an assignment stays warming.

use std::collections::{BTreeSet, HashSet};

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route::Action, route_action::ClusterSpecifier,
};

use crate::{ProxyResources, names};

/// What is wrong with a set of resources (every resource of a mesh, variants included),
/// one sentence per problem, sorted. Empty when consistent.
pub fn problems(resources: &ProxyResources) -> Vec<String> {
    // Hashed: hundreds of thousands of lookups of names with long common prefixes.
    let clusters: HashSet<&str> = resources.clusters.iter().map(|c| c.name.as_str()).collect();
    let assignments: HashSet<&str> = resources
        .endpoints
        .iter()
        .map(|e| e.cluster_name.as_str())
        .collect();
    let mut problems = BTreeSet::new();
    for config in &resources.routes {
        for cluster in route_clusters(config) {
            if cluster != names::INVALID_BACKEND_CLUSTER && !clusters.contains(cluster) {
                problems.insert(format!(
                    "route configuration {:?} sends traffic to cluster {cluster:?}, which does not exist",
                    config.name
                ));
            }
        }
    }
    for cluster in &resources.clusters {
        let eds = matches!(
            cluster.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
        );
        if !eds {
            continue;
        }
        let service_name = cluster
            .eds_cluster_config
            .as_ref()
            .map(|c| c.service_name.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or(&cluster.name);
        if !assignments.contains(service_name) {
            problems.insert(format!(
                "EDS cluster {:?} has no ClusterLoadAssignment {service_name:?}",
                cluster.name
            ));
        }
    }
    problems.into_iter().collect()
}

/// Every cluster a route configuration names: route actions (single and weighted) and
/// mirrors, on routes and virtual hosts.
fn route_clusters(config: &RouteConfiguration) -> impl Iterator<Item = &str> {
    config.virtual_hosts.iter().flat_map(|host| {
        let host_mirrors = host
            .request_mirror_policies
            .iter()
            .map(|m| m.cluster.as_str());
        let routes = host.routes.iter().flat_map(|route| {
            let mut names = Vec::new();
            if let Some(Action::Route(action)) = &route.action {
                match &action.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(name)) => names.push(name.as_str()),
                    Some(ClusterSpecifier::WeightedClusters(weighted)) => {
                        names.extend(weighted.clusters.iter().map(|c| c.name.as_str()));
                    }
                    _ => {}
                }
                names.extend(
                    action
                        .request_mirror_policies
                        .iter()
                        .map(|m| m.cluster.as_str()),
                );
            }
            names
        });
        host_mirrors.chain(routes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::rich_model;
    use crate::{XdsOptions, translate};

    #[test]
    fn a_translated_mesh_is_consistent() {
        let mesh = translate(&rich_model(), &XdsOptions::default());
        let all = mesh.distinct();
        assert!(!all.routes.is_empty());
        assert_eq!(problems(&all), Vec::<String>::new());
    }

    #[test]
    fn missing_clusters_and_assignments_are_reported() {
        let mesh = translate(&rich_model(), &XdsOptions::default());
        let mut all = mesh.distinct();
        all.clusters
            .retain(|c| c.name != "outbound|80||cart-v2.shop.svc.cluster.local");
        all.endpoints
            .retain(|e| e.cluster_name != "outbound|80||cart.shop.svc.cluster.local");
        let found = problems(&all);
        assert!(
            found
                .iter()
                .any(|p| p.contains("sends traffic to cluster \"outbound|80||cart-v2")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p
                    .contains("EDS cluster \"outbound|80||cart.shop.svc.cluster.local\" has no")),
            "{found:#?}"
        );
        // The deliberate invalid-backend cluster is not a problem.
        assert!(
            !found
                .iter()
                .any(|p| p.contains(names::INVALID_BACKEND_CLUSTER))
        );
    }
}
