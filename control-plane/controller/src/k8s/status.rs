//! Writing route status back: `status.parents[]` of every HTTPRoute and GRPCRoute.
//!
//! For each route the translator's [`RouteStatus`](lanyard_index::RouteStatus) gives this
//! controller's entries (one per Service parent). The Gateway API CRDs declare `status.parents` an atomic list, so a
//! server-side apply replaces it whole: the writer reads the current status, keeps the
//! entries of other controllers, replaces its own, and applies the result on the `/status`
//! subresource with the controller name as field manager and `force`, guarded by the
//! `resourceVersion` it read (a concurrent write is a 409 Conflict, retried with backoff
//! after a fresh read). A condition keeps its `lastTransitionTime` while its status does not
//! change, and nothing is written when nothing changed, so a restart does not flap status.
//!
//! What was written (or found up to date) is remembered per route, so a snapshot that does
//! not change a route's status costs no request. Only the replica holding the Lease writes
//! (see [`super::lease`]).
//!
//! A route whose configuration connected proxies reject gets the
//! [`lanyard.dev/ProxiesRejected`](crate::nacks::CONDITION) condition in each of these
//! entries, from the damped (rate-limited, hysteresis) rejections of [`crate::nacks`]; a
//! change of them wakes the writer like a new snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use lanyard_index::{Kind, ObjectKey, ObjectRef, ParentStatus};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::api_resource;
use super::lease::{LeaderWork, while_leading};
use crate::nacks::{Rejections, with_rejections};
use crate::snapshot::Snapshot;

/// How many times a write is tried when it conflicts with another writer.
const CONFLICT_ATTEMPTS: u32 = 5;
/// The wait after the first conflict; doubled after each.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(100);

/// `status.parents` after replacing this controller's entries of `current` with `computed`.
/// Other controllers' entries are kept, in order, first. A condition whose status is the same
/// as in the entry for the same parent keeps that entry's `lastTransitionTime`; others get
/// `now` (RFC 3339).
pub fn merge_parents(
    current: &[Value],
    computed: &[ParentStatus],
    controller_name: &str,
    now: &str,
) -> Vec<Value> {
    let is_ours = |entry: &Value| entry["controllerName"].as_str() == Some(controller_name);
    let mut merged: Vec<Value> = current.iter().filter(|e| !is_ours(e)).cloned().collect();
    for parent in computed {
        let parent_ref = serde_json::to_value(&parent.parent_ref).unwrap_or(Value::Null);
        let previous = current
            .iter()
            .find(|e| is_ours(e) && e["parentRef"] == parent_ref);
        let conditions: Vec<Value> = parent
            .conditions
            .iter()
            .map(|c| {
                let since = previous
                    .and_then(|p| p["conditions"].as_array())
                    .and_then(|cs| {
                        cs.iter().find(|old| {
                            old["type"].as_str() == Some(c.type_.as_str())
                                && old["status"].as_str() == Some(c.status.as_str())
                        })
                    })
                    .and_then(|old| old["lastTransitionTime"].as_str())
                    .unwrap_or(now);
                let mut condition = json!({
                    "type": c.type_,
                    "status": c.status,
                    "reason": c.reason,
                    "message": c.message,
                    "lastTransitionTime": since,
                });
                if let Some(generation) = c.observed_generation {
                    condition["observedGeneration"] = json!(generation);
                }
                condition
            })
            .collect();
        merged.push(json!({
            "parentRef": parent_ref,
            "controllerName": controller_name,
            "conditions": conditions,
        }));
    }
    merged
}

/// While `leader` says this replica leads, writes the status of every route of every
/// snapshot; until the snapshots or the election end.
pub async fn run(
    client: Client,
    controller_name: String,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    rejections: watch::Receiver<Arc<Rejections>>,
    leader: watch::Receiver<bool>,
) {
    let writer = StatusWriter {
        client,
        controller_name,
        written: BTreeMap::new(),
        rejections,
    };
    while_leading(writer, snapshots, leader).await;
}

/// What was written (or found up to date), per route.
struct StatusWriter {
    client: Client,
    controller_name: String,
    written: BTreeMap<ObjectRef, Vec<ParentStatus>>,
    rejections: watch::Receiver<Arc<Rejections>>,
}

impl LeaderWork for StatusWriter {
    async fn handle(&mut self, snapshot: &Snapshot) -> bool {
        let rejections = self.rejections.borrow_and_update().clone();
        write_all(
            &self.client,
            &self.controller_name,
            snapshot,
            &rejections,
            &mut self.written,
        )
        .await
    }

    fn forget(&mut self) {
        self.written.clear();
    }

    async fn woken(&mut self) {
        if self.rejections.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One pass over the routes of a snapshot, with what proxies reject; `false` if a write
/// failed.
async fn write_all(
    client: &Client,
    controller_name: &str,
    snapshot: &Snapshot,
    rejections: &Rejections,
    written: &mut BTreeMap<ObjectRef, Vec<ParentStatus>>,
) -> bool {
    let statuses = with_rejections(&snapshot.translation.statuses, rejections);
    let routes: Vec<ObjectRef> = (snapshot.objects.http_routes.keys())
        .map(|key| (Kind::HttpRoute, key))
        .chain(
            snapshot
                .objects
                .grpc_routes
                .keys()
                .map(|key| (Kind::GrpcRoute, key)),
        )
        .map(|(kind, key)| ObjectRef {
            kind,
            key: key.clone(),
        })
        .collect();
    written.retain(|route, _| routes.contains(route));
    let mut ok = true;
    for route in routes {
        let computed: Vec<ParentStatus> = statuses
            .iter()
            .find(|s| s.route == route)
            .map(|s| s.parents.clone())
            .unwrap_or_default();
        if written.get(&route) == Some(&computed) {
            continue;
        }
        match write_route(client, controller_name, &route, &computed).await {
            Ok(()) => {
                written.insert(route, computed);
            }
            Err(e) => {
                warn!(%route, error = %e, "cannot write the route's status, will retry");
                ok = false;
            }
        }
    }
    ok
}

/// Reads the route's status, merges this controller's entries and applies the result if it
/// changed, retrying on conflict.
async fn write_route(
    client: &Client,
    controller_name: &str,
    route: &ObjectRef,
    computed: &[ParentStatus],
) -> Result<(), String> {
    let resource: ApiResource = api_resource(route.kind);
    let ObjectKey { namespace, name } = &route.key;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let params = PatchParams::apply(controller_name).force();
    let mut backoff = CONFLICT_BACKOFF;
    for _ in 0..CONFLICT_ATTEMPTS {
        let current = match api.get_status(name).await {
            Ok(current) => current,
            // Deleted meanwhile: nothing to write.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let parents: Vec<Value> = current
            .data
            .pointer("/status/parents")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now()
            .round(k8s_openapi::jiff::Unit::Second)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now().to_string());
        let merged = merge_parents(&parents, computed, controller_name, &now);
        if merged == parents {
            debug!(%route, "status up to date");
            return Ok(());
        }
        let patch = json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "resourceVersion": current.metadata.resource_version,
            },
            "status": {"parents": merged},
        });
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => {
                info!(%route, "status written");
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(%route, "status write conflicted, reading again");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "still conflicting after {CONFLICT_ATTEMPTS} attempts"
    ))
}

#[cfg(test)]
mod tests {
    use lanyard_index::Condition;
    use lanyard_index::api::ParentReference;

    use super::*;

    const ME: &str = "lanyard.dev/mesh-controller";

    fn mk_parent(service: &str, resolved: bool) -> ParentStatus {
        let parent_ref: ParentReference =
            serde_json::from_value(json!({"group": "", "kind": "Service", "name": service}))
                .unwrap();
        ParentStatus {
            parent_ref,
            controller_name: ME.to_string(),
            conditions: vec![
                Condition::new("Accepted", true, "Accepted", "", Some(1)),
                Condition::new(
                    "ResolvedRefs",
                    resolved,
                    if resolved {
                        "ResolvedRefs"
                    } else {
                        "BackendNotFound"
                    },
                    "",
                    Some(1),
                ),
            ],
        }
    }

    fn condition<'a>(parents: &'a [Value], type_: &str) -> &'a Value {
        parents
            .iter()
            .filter(|p| p["controllerName"] == ME)
            .flat_map(|p| p["conditions"].as_array().unwrap())
            .find(|c| c["type"] == type_)
            .unwrap()
    }

    #[test]
    fn other_controllers_entries_are_kept_and_ours_replaced() {
        let other = json!({"parentRef": {"name": "gw"}, "controllerName": "example.com/gateway", "conditions": []});
        let first = merge_parents(
            std::slice::from_ref(&other),
            &[mk_parent("cart", true)],
            ME,
            "T1",
        );
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], other);
        assert_eq!(condition(&first, "Accepted")["lastTransitionTime"], "T1");
        assert_eq!(condition(&first, "Accepted")["observedGeneration"], 1);

        // The same status later: nothing changes, timestamps included.
        assert_eq!(
            merge_parents(&first, &[mk_parent("cart", true)], ME, "T2"),
            first
        );

        // ResolvedRefs turns False: only it gets a new time.
        let broken = merge_parents(&first, &[mk_parent("cart", false)], ME, "T3");
        assert_eq!(condition(&broken, "Accepted")["lastTransitionTime"], "T1");
        assert_eq!(
            condition(&broken, "ResolvedRefs")["lastTransitionTime"],
            "T3"
        );
        assert_eq!(
            condition(&broken, "ResolvedRefs")["reason"],
            "BackendNotFound"
        );

        // No Service parent any more: our entries go, the other stays.
        assert_eq!(merge_parents(&broken, &[], ME, "T4"), vec![other]);
    }

    #[test]
    fn nothing_to_write_for_a_route_without_our_parents() {
        assert!(merge_parents(&[], &[], ME, "T").is_empty());
    }
}
