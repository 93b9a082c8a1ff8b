//! Writing route status back: `status.parents[]` of every HTTPRoute and GRPCRoute.
//!
//! For each route the translator's [`RouteStatus`](lanyard_index::RouteStatus) gives this
//! controller's entries (one per Service parent). The Gateway API CRDs declare `status.parents` an atomic list, so
//! each controller owns only the entries with its `controllerName`: the writer reads the
//! current status, keeps the entries of other controllers, replaces its own, and writes the
//! result on the `/status` subresource as a merge patch with the controller name as field
//! manager, guarded by the `uid` and `resourceVersion` it read (a concurrent write is a 409
//! Conflict, retried with backoff after a fresh read); no server-side apply `force` over
//! other managers. The list is capped at the CRD's [`MAX_PARENTS`], problems first, with
//! [`TRUNCATED_CONDITION`] and a warning when entries are left out. A condition keeps its
//! `lastTransitionTime` while its status does not change, and nothing is written when nothing
//! changed, so a restart does not flap status.
//!
//! What was written (or found up to date) is remembered per route uid with the
//! `resourceVersion` the route had after it, so a snapshot that does not change a route's
//! status costs no request, while a route recreated under the same name (another uid) or
//! changed by anyone else (another `resourceVersion`: its status may have lost this
//! controller's entries) is read and compared again. A failed write is tried again with a
//! per-route exponential backoff ([`backoff`]), reset when it succeeds or the route or its
//! status changes. Only the replica holding the Lease writes (see [`super::lease`]). The
//! CPU-bound part of a pass (computing and comparing every route's status) runs on tokio's
//! blocking pool, so it cannot stall ADS streams or watches.
//!
//! A route whose configuration connected proxies reject gets the
//! [`lanyard.dev/ProxiesRejected`](crate::nacks::CONDITION) condition in each of these
//! entries, from the damped (rate-limited, hysteresis) rejections of [`crate::nacks`]; a
//! change of them wakes the writer like a new snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use lanyard_index::{Condition, Kind, ObjectKey, ObjectRef, ParentStatus};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Versions;
use super::lease::{LeaderWork, RETRY_FAILED, while_leading};
use super::store::OwnWrites;
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

/// `maxItems` of `status.parents` in the Gateway API CRDs (gateway-api apis/v1/shared_types.go,
/// `RouteStatus.Parents`: `+kubebuilder:validation:MaxItems=32`, `maxItems: 32` in
/// crds/gateway-api-v1.6.1); a longer list is a 422 on
/// every write.
pub const MAX_PARENTS: usize = 32;
/// The condition added to each of this controller's entries when some had to be left out.
pub const TRUNCATED_CONDITION: &str = "lanyard.dev/ParentsTruncated";
/// The longest wait between two tries of a route whose status write keeps failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Whether an entry reports a problem: such entries are kept first when the list is capped.
fn reports_problem(parent: &ParentStatus) -> bool {
    parent.conditions.iter().any(|c| {
        if c.type_ == crate::nacks::CONDITION {
            c.status == "True"
        } else {
            c.status != "True"
        }
    })
}

/// This controller's entries, at most `room` of them: those reporting a problem first (a
/// user reads status to find what is wrong), then the others in order. When some are left
/// out, each kept entry gets [`TRUNCATED_CONDITION`] saying how many.
pub fn cap_parents(computed: &[ParentStatus], room: usize) -> Vec<ParentStatus> {
    if computed.len() <= room {
        return computed.to_vec();
    }
    let mut kept: Vec<&ParentStatus> = computed.iter().filter(|p| reports_problem(p)).collect();
    kept.extend(computed.iter().filter(|p| !reports_problem(p)));
    kept.truncate(room);
    let message = format!(
        "{} of this controller's {} parents are listed: status.parents holds at most {MAX_PARENTS} entries",
        kept.len(),
        computed.len()
    );
    kept.into_iter()
        .map(|p| {
            let mut p = p.clone();
            let generation = p.conditions.first().and_then(|c| c.observed_generation);
            p.conditions.push(Condition::new(
                TRUNCATED_CONDITION,
                true,
                "TooManyParents",
                message.clone(),
                generation,
            ));
            p
        })
        .collect()
}

/// The wait after the `failures`-th failed write of one route in a row: [`RETRY_FAILED`]
/// doubled per further failure up to [`MAX_BACKOFF`] (per item, as client-go's
/// `TypedItemExponentialFailureRateLimiter`, util/workqueue/default_rate_limiters.go, v0.31:
/// base doubled per failure of the item, capped, forgotten on success).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_FAILED.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// What is known of one route's status, by the route's uid.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    /// Written or found up to date, leaving the route at this `resourceVersion`; `seen` is
    /// the one the snapshot had. The store drops the watch's update for this controller's own
    /// write (nothing the translator reads changed), so later snapshots keep carrying `seen`
    /// until someone else changes the route.
    Written {
        resource_version: Option<String>,
        seen: Option<String>,
        computed: Vec<ParentStatus>,
    },
    /// The write of `computed` to the route at `resource_version` failed `failures` times in
    /// a row; not tried again before `retry_at`.
    Failing {
        resource_version: Option<String>,
        computed: Vec<ParentStatus>,
        failures: u32,
        retry_at: Instant,
    },
}

/// What to do for one route of a snapshot.
#[derive(Debug, PartialEq)]
enum Step {
    /// The route carries this status: nothing to do.
    Skip,
    /// Backing off after failures.
    Wait,
    /// Read, merge and write; `failures` so far for this same object and status.
    Write { failures: u32 },
}

/// Compares what is known of the route with the route the snapshot has (its
/// `resourceVersion`) and the status computed for it. Another writer's change of the status,
/// an edit, or a new object under the same name (another uid, so no `known`) all show as a
/// route the write did not leave, and are read again.
fn step(
    known: Option<&Known>,
    resource_version: Option<&str>,
    computed: &[ParentStatus],
    now: Instant,
) -> Step {
    match known {
        None => Step::Write { failures: 0 },
        Some(Known::Written {
            resource_version: rv,
            seen,
            computed: c,
        }) => {
            let unchanged =
                rv.as_deref() == resource_version || seen.as_deref() == resource_version;
            if unchanged && c == computed {
                Step::Skip
            } else {
                Step::Write { failures: 0 }
            }
        }
        Some(Known::Failing {
            resource_version: rv,
            computed: c,
            failures,
            retry_at,
        }) => {
            if rv.as_deref() != resource_version || c != computed {
                // The object or what to write changed: start over.
                Step::Write { failures: 0 }
            } else if now < *retry_at {
                Step::Wait
            } else {
                Step::Write {
                    failures: *failures,
                }
            }
        }
    }
}

/// While `leader` says this replica leads, writes the status of every route of every
/// snapshot; until the snapshots or the election end.
pub async fn run(
    client: Client,
    versions: Versions,
    controller_name: String,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    rejections: watch::Receiver<Arc<Rejections>>,
    leader: watch::Receiver<bool>,
    own_writes: OwnWrites,
) {
    let writer = StatusWriter {
        client,
        versions,
        controller_name,
        known: HashMap::new(),
        rejections,
        own_writes,
    };
    while_leading(writer, snapshots, leader).await;
}

/// What was written (or found up to date, or failed), per route uid.
struct StatusWriter {
    client: Client,
    /// The version each route kind is watched at: its status is written there.
    versions: Versions,
    controller_name: String,
    known: HashMap<String, Known>,
    rejections: watch::Receiver<Arc<Rejections>>,
    /// Where the store learns which route updates are this writer's own.
    own_writes: OwnWrites,
}

impl LeaderWork for StatusWriter {
    async fn handle(&mut self, snapshot: &Arc<Snapshot>) -> bool {
        let rejections = self.rejections.borrow_and_update().clone();
        write_all(
            &self.client,
            &self.versions,
            &self.controller_name,
            snapshot,
            &rejections,
            &mut self.known,
            &self.own_writes,
        )
        .await
    }

    fn forget(&mut self) {
        self.known.clear();
    }

    async fn woken(&mut self) {
        if self.rejections.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One route of a snapshot: where it is, its uid (its key when it has none) and
/// `resourceVersion`, and the status computed for it.
struct Pending {
    route: ObjectRef,
    /// The key in the writer's memory: the uid, or the route when it has none.
    uid: String,
    object_uid: Option<String>,
    resource_version: Option<String>,
    computed: Vec<ParentStatus>,
}

/// The routes of a snapshot with their computed status, in one pass over each list.
fn pending(snapshot: &Snapshot, rejections: &Rejections) -> Vec<Pending> {
    let statuses = with_rejections(&snapshot.translation.statuses, rejections);
    let mut by_route: HashMap<ObjectRef, Vec<ParentStatus>> =
        statuses.into_iter().map(|s| (s.route, s.parents)).collect();
    let mut out = Vec::new();
    let mut push = |kind: Kind, key: &ObjectKey, meta: &ObjectMeta| {
        let route = ObjectRef {
            kind,
            key: key.clone(),
        };
        let computed = by_route.remove(&route).unwrap_or_default();
        out.push(Pending {
            uid: meta.uid.clone().unwrap_or_else(|| route.to_string()),
            object_uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            route,
            computed,
        });
    };
    for (key, r) in &snapshot.objects.http_routes {
        push(Kind::HttpRoute, key, &r.metadata);
    }
    for (key, r) in &snapshot.objects.grpc_routes {
        push(Kind::GrpcRoute, key, &r.metadata);
    }
    out
}

/// What a pass writes: the routes whose status is to be written now, each with its failures
/// so far, and whether some back off.
struct Plan {
    writes: Vec<(Pending, u32)>,
    waiting: bool,
}

/// The CPU-bound part of a pass: computes every route's status (with what proxies reject),
/// forgets routes that left the snapshot and compares the rest with what is known. Linear in
/// routes, but at 10k routes still milliseconds of work: run off the async runtime.
fn plan(
    snapshot: &Snapshot,
    rejections: &Rejections,
    known: &mut HashMap<String, Known>,
    now: Instant,
) -> Plan {
    let routes = pending(snapshot, rejections);
    let uids: HashSet<&str> = routes.iter().map(|p| p.uid.as_str()).collect();
    known.retain(|uid, _| uids.contains(uid.as_str()));
    let mut plan = Plan {
        writes: Vec::new(),
        waiting: false,
    };
    for p in routes {
        match step(
            known.get(&p.uid),
            p.resource_version.as_deref(),
            &p.computed,
            now,
        ) {
            Step::Skip => {}
            Step::Wait => plan.waiting = true,
            Step::Write { failures } => plan.writes.push((p, failures)),
        }
    }
    plan
}

/// One pass over the routes of a snapshot, with what proxies reject; `false` if a write
/// failed or waits to be tried again.
///
/// The plan is made on tokio's blocking pool, so a large snapshot does not hold a runtime
/// worker that ADS streams and watches need (tokio docs, `spawn_blocking`: CPU-bound work
/// that would block the executor). Cancelling the pass (leadership lost) drops the wait for
/// it; the writer's memory goes with it, as it is forgotten on lost leadership anyway.
async fn write_all(
    client: &Client,
    versions: &Versions,
    controller_name: &str,
    snapshot: &Arc<Snapshot>,
    rejections: &Arc<Rejections>,
    known: &mut HashMap<String, Known>,
    own_writes: &OwnWrites,
) -> bool {
    let (snapshot, rejections, mut memory) =
        (snapshot.clone(), rejections.clone(), std::mem::take(known));
    let planned = tokio::task::spawn_blocking(move || {
        let plan = plan(&snapshot, &rejections, &mut memory, Instant::now());
        (plan, memory)
    })
    .await;
    let plan = match planned {
        Ok((plan, memory)) => {
            *known = memory;
            // Routes that left the snapshot left `known` in the plan.
            own_writes.retain(|uid| known.contains_key(uid));
            plan
        }
        Err(e) => {
            warn!(error = %e, "planning the status pass failed: everything is read again");
            return false;
        }
    };
    let mut ok = !plan.waiting;
    for (p, failures) in &plan.writes {
        let entry = match write_route(
            client,
            versions,
            controller_name,
            &p.route,
            p.object_uid.as_deref(),
            &p.computed,
        )
        .await
        {
            Ok(resource_version) => {
                // The watch sees this write too: the store does not take it for a change.
                if let Some(rv) = &resource_version {
                    own_writes.record(&p.uid, rv);
                }
                Known::Written {
                    resource_version: resource_version.or_else(|| p.resource_version.clone()),
                    seen: p.resource_version.clone(),
                    computed: p.computed.clone(),
                }
            }
            Err(e) => {
                let failures = failures + 1;
                let wait = backoff(failures);
                warn!(route = %p.route, error = %e, failures, retry_in = ?wait,
                    "cannot write the route's status, will retry");
                ok = false;
                Known::Failing {
                    resource_version: p.resource_version.clone(),
                    computed: p.computed.clone(),
                    failures,
                    retry_at: Instant::now() + wait,
                }
            }
        };
        known.insert(p.uid.clone(), entry);
    }
    ok
}

/// Reads the route's status, merges this controller's entries and writes the result if it
/// changed, retrying on conflict; the route's `resourceVersion` after that.
///
/// `status.parents` is an atomic list, so a server-side apply of it takes the whole list from
/// whoever applied it before (and needs `force` to do so). As Gateway API implementations do
/// (Envoy Gateway internal/provider/kubernetes/status_updater.go, `UpdateHandler.apply`, at
/// commit 00a217fc: a read, then `Status().Update` with its `resourceVersion`), this writes a merge patch guarded by the
/// `resourceVersion` it read, changing only this controller's entries: no `force` over
/// another manager's fields, and a concurrent writer is a 409, read again.
async fn write_route(
    client: &Client,
    versions: &Versions,
    controller_name: &str,
    route: &ObjectRef,
    uid: Option<&str>,
    computed: &[ParentStatus],
) -> Result<Option<String>, String> {
    let resource: ApiResource = versions.resource(route.kind);
    let ObjectKey { namespace, name } = &route.key;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let params = PatchParams {
        field_manager: Some(controller_name.to_string()),
        ..PatchParams::default()
    };
    let mut backoff = CONFLICT_BACKOFF;
    for _ in 0..CONFLICT_ATTEMPTS {
        let current = match api.get_status(name).await {
            Ok(current) => current,
            // Deleted meanwhile: nothing to write.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        if uid.is_some() && current.metadata.uid.as_deref() != uid {
            // Replaced meanwhile: the next snapshot has the new object.
            return Ok(None);
        }
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
        let others = parents
            .iter()
            .filter(|e| e["controllerName"].as_str() != Some(controller_name))
            .count();
        let room = MAX_PARENTS.saturating_sub(others);
        let capped = cap_parents(computed, room);
        if capped.len() < computed.len() {
            warn!(%route, parents = computed.len(), listed = capped.len(), others,
                "too many parents for status.parents (at most {MAX_PARENTS}): some are left out");
        }
        let merged = merge_parents(&parents, &capped, controller_name, &now);
        if merged == parents {
            debug!(%route, "status up to date");
            return Ok(current.metadata.resource_version);
        }
        let patch = json!({
            "metadata": {
                "uid": current.metadata.uid,
                "resourceVersion": current.metadata.resource_version,
            },
            "status": {"parents": merged},
        });
        match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
            Ok(written) => {
                info!(%route, "status written");
                return Ok(written.metadata.resource_version);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(%route, "status write conflicted, reading again");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "still conflicting after {CONFLICT_ATTEMPTS} attempts"
    ))
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn the_memory_is_by_object_and_follows_its_resource_version() {
        let computed = vec![mk_parent("cart", true)];
        let now = Instant::now();
        let written = Known::Written {
            resource_version: Some("7".into()),
            seen: Some("6".into()),
            computed: computed.clone(),
        };
        // The route as written: nothing to do.
        assert_eq!(step(Some(&written), Some("7"), &computed, now), Step::Skip);
        // Snapshots still carry the version from before the write (the store dropped the
        // watch's update for it): nothing to do either.
        assert_eq!(step(Some(&written), Some("6"), &computed, now), Step::Skip);
        // Anyone wrote the route since (its status may have lost our entries): read again.
        assert_eq!(
            step(Some(&written), Some("8"), &computed, now),
            Step::Write { failures: 0 }
        );
        // Another status to write.
        assert_eq!(
            step(Some(&written), Some("7"), &[mk_parent("cart", false)], now),
            Step::Write { failures: 0 }
        );
        // A new object under the same name has another uid: nothing known.
        assert_eq!(
            step(None, Some("7"), &computed, now),
            Step::Write { failures: 0 }
        );
    }

    #[test]
    fn failed_writes_back_off_per_route_until_the_route_changes() {
        let computed = vec![mk_parent("cart", true)];
        let now = Instant::now();
        let failing = Known::Failing {
            resource_version: Some("7".into()),
            computed: computed.clone(),
            failures: 3,
            retry_at: now + backoff(3),
        };
        assert_eq!(step(Some(&failing), Some("7"), &computed, now), Step::Wait);
        assert_eq!(
            step(Some(&failing), Some("7"), &computed, now + backoff(3)),
            Step::Write { failures: 3 }
        );
        // An edit of the route, or another status, starts over.
        assert_eq!(
            step(Some(&failing), Some("8"), &computed, now),
            Step::Write { failures: 0 }
        );
        assert_eq!(
            step(Some(&failing), Some("7"), &[mk_parent("cart", false)], now),
            Step::Write { failures: 0 }
        );

        assert_eq!(backoff(1), RETRY_FAILED);
        assert_eq!(backoff(2), RETRY_FAILED * 2);
        assert_eq!(backoff(3), RETRY_FAILED * 4);
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn parents_are_capped_problems_first_and_say_so() {
        let computed: Vec<ParentStatus> = (0..40)
            .map(|i| mk_parent(&format!("svc-{i}"), i != 35))
            .collect();
        // A list that fits is left as it is.
        assert_eq!(cap_parents(&computed[..32], MAX_PARENTS), computed[..32]);

        let other = json!({"parentRef": {"name": "gw"}, "controllerName": "example.com/gateway", "conditions": []});
        let room = MAX_PARENTS - 1;
        let capped = cap_parents(&computed, room);
        assert_eq!(capped.len(), room);
        // The one parent whose backend is missing is kept, first.
        assert_eq!(capped[0].parent_ref, computed[35].parent_ref);
        assert_eq!(capped[1].parent_ref, computed[0].parent_ref);
        for p in &capped {
            let truncated = p
                .conditions
                .iter()
                .find(|c| c.type_ == TRUNCATED_CONDITION)
                .unwrap();
            assert_eq!(truncated.status, "True");
            assert!(
                truncated.message.contains("31 of this controller's 40"),
                "{}",
                truncated.message
            );
        }
        let merged = merge_parents(std::slice::from_ref(&other), &capped, ME, "T");
        assert_eq!(merged.len(), MAX_PARENTS);
        assert_eq!(merged[0], other);
    }

    /// A snapshot of `routes` HTTPRoutes whose status is known written, and that memory.
    fn mk_written_routes(routes: usize) -> (Snapshot, HashMap<String, Known>) {
        use lanyard_index::RouteStatus;
        use lanyard_index::api::HttpRoute;

        let mut snapshot = Snapshot::placeholder();
        snapshot.generation = 1;
        let computed = vec![mk_parent("cart", true)];
        let mut known = HashMap::new();
        for i in 0..routes {
            let key = ObjectKey::new("shop", format!("route-{i}"));
            let uid = format!("uid-{i}");
            let route = HttpRoute {
                metadata: ObjectMeta {
                    name: Some(key.name.clone()),
                    namespace: Some(key.namespace.clone()),
                    uid: Some(uid.clone()),
                    resource_version: Some("1".into()),
                    ..ObjectMeta::default()
                },
                spec: Default::default(),
            };
            Arc::make_mut(&mut snapshot.objects)
                .http_routes
                .insert(key.clone(), route);
            snapshot.translation.statuses.push(RouteStatus {
                route: ObjectRef {
                    kind: Kind::HttpRoute,
                    key,
                },
                generation: Some(1),
                parents: computed.clone(),
            });
            known.insert(
                uid,
                Known::Written {
                    resource_version: Some("1".into()),
                    seen: Some("1".into()),
                    computed: computed.clone(),
                },
            );
        }
        (snapshot, known)
    }

    /// On a runtime with one thread (as a loaded controller's worker is), another task runs
    /// while a large pass is planned: the plan does not hold the thread ADS and the watches
    /// need. Before the plan moved to the blocking pool, a pass with nothing to write never
    /// yielded and the other task did not run at all.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_pass_leaves_the_runtime_thread_to_other_tasks() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        const ROUTES: usize = 20_000;
        let (snapshot, mut known) = mk_written_routes(ROUTES);
        let snapshot = Arc::new(snapshot);
        // Never asked anything: every route is up to date.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        };
        let rejections = Arc::new(Rejections::default());
        let ok = write_all(
            &client,
            &Versions::default(),
            ME,
            &snapshot,
            &rejections,
            &mut known,
            &OwnWrites::default(),
        )
        .await;
        let during = ticks.load(Ordering::Relaxed);
        ticker.abort();
        assert!(ok, "nothing to write, nothing failing");
        assert_eq!(known.len(), ROUTES, "the memory came back from the plan");
        assert!(
            during > 0,
            "no other task ran during the pass: it held the runtime's only thread"
        );
    }
}
