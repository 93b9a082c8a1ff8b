//! The Kubernetes source: watches on the API server in, [`Snapshot`]s out.
//!
//! [`KubeWatcher`] runs one kube-runtime watcher per kind Lanyard reads (per kind and
//! namespace when namespaces are given), each in its own tracing span. Every object goes
//! through [`lanyard_index::parse_value`], as in file mode, into one [`Objects`] store (see
//! [`store`]). Changes are collected for [`DEBOUNCE`] after the first one, then translated and
//! published on the same kind of `watch` channel the [`FileWatcher`](crate::FileWatcher) uses,
//! so everything after it (ADS, the debug endpoint, logs) is shared.
//!
//! - Until every watch has listed once, the channel holds a placeholder snapshot
//!   (generation 0, [`Snapshot::is_placeholder`]) that is not served: `/readyz` turns ready
//!   with the first complete snapshot.
//! - A watch that fails, or gets `410 Gone`, relists with backoff; the relist replaces that
//!   watch's objects only once complete, so proxies keep their configuration meanwhile.
//! - Route status is written back by [`status`], and TrafficSplit reports are recorded as
//!   Events by [`events`], from every snapshot, by the replica that holds the Lease
//!   ([`lease`]).
//! - The SMI and Gateway API kinds are watched at the newest version the server serves that
//!   Lanyard reads (found by discovery, per resource, and found again if it stops being
//!   served; HTTPRoute v1 or v1beta1, GRPCRoute v1 or v1alpha2, ReferenceGrant v1, v1beta1
//!   or v1alpha2), and route status is written at that version ([`Versions`]). When none is
//!   served, the log and `/readyz` say which versions are needed.
//! - A kind the server does not serve (404: the Gateway API CRDs are not installed) is
//!   logged as a warning, counts as listed with no objects, and keeps being retried with
//!   backoff. A 404 on a re-watch after a list is not taken as the kind gone: the objects
//!   stay and the watch relists, and only a list answered 404 empties the kind.
//! - A watch the API server refuses (403) or fails: see [`health`]. An optional kind that
//!   never listed counts as listed with no objects, so that it does not hold snapshots
//!   back; a required kind holds `/readyz` back. Both say on `/readyz` which permission is
//!   missing, keep retrying with backoff and relist once allowed.

pub mod events;
pub mod health;
pub mod lease;
pub mod status;
pub mod store;
pub mod trim;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use lanyard_index::{Kind, Object, ObjectKey, ObjectRef, Objects, Parsed, parse_value};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::diagnostics::Diagnostic;
use crate::files::Loaded;
use crate::snapshot::{Settings, Snapshot};
use health::{Health, Unavailable, is_forbidden, is_required};
use lease::LeaseSettings;
use store::{Change, OwnWrites, Store, Watched};

/// How long to collect watch events after the first one before translating.
pub const DEBOUNCE: Duration = crate::files::DEBOUNCE;

/// Every kind Lanyard reads, in the order the watches start.
///
/// Namespaces are not watched: the translator reads nothing of them, and a watch of them
/// needs cluster-scoped RBAC even with `--namespace`. Injection reads a namespace's labels
/// from its own admission requests; what comes to read them from a watch adds the kind here.
pub const KINDS: [Kind; 9] = [
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Pod,
    Kind::HttpRoute,
    Kind::GrpcRoute,
    Kind::ReferenceGrant,
    Kind::TrafficSplit,
    Kind::HttpRouteGroup,
    Kind::TcpRoute,
];

/// The SMI versions Lanyard reads, newest first.
const SMI_VERSIONS: &[&str] = &["v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"];

/// Where the API server may serve a kind: group, plural, and the versions Lanyard reads,
/// preferred first. A kind with one version is watched at it; for a kind with several (the
/// SMI kinds, whose CRDs in the wild serve different versions: OSM's serve TrafficSplit only
/// at v1alpha2, Lanyard's serve them all; the Gateway API kinds, which older releases serve
/// only at beta or alpha versions) discovery picks the first one served.
fn served_as(kind: Kind) -> (&'static str, &'static str, &'static [&'static str]) {
    match kind {
        Kind::Namespace => ("", "namespaces", &["v1"]),
        Kind::Service => ("", "services", &["v1"]),
        Kind::EndpointSlice => ("discovery.k8s.io", "endpointslices", &["v1"]),
        Kind::Pod => ("", "pods", &["v1"]),
        // Gateway API v0.7-v0.8 serve HTTPRoute at v1beta1 only, and releases before v1.1
        // GRPCRoute at v1alpha2 only (experimental channel).
        Kind::HttpRoute => (
            "gateway.networking.k8s.io",
            "httproutes",
            &["v1", "v1beta1"],
        ),
        Kind::GrpcRoute => (
            "gateway.networking.k8s.io",
            "grpcroutes",
            &["v1", "v1alpha2"],
        ),
        Kind::ReferenceGrant => (
            "gateway.networking.k8s.io",
            "referencegrants",
            &["v1", "v1beta1", "v1alpha2"],
        ),
        Kind::TrafficSplit => ("split.smi-spec.io", "trafficsplits", SMI_VERSIONS),
        Kind::HttpRouteGroup => ("specs.smi-spec.io", "httproutegroups", SMI_VERSIONS),
        Kind::TcpRoute => ("specs.smi-spec.io", "tcproutes", SMI_VERSIONS),
    }
}

/// Where the API server serves a kind at its preferred version.
pub fn api_resource(kind: Kind) -> ApiResource {
    let (_, _, versions) = served_as(kind);
    api_resource_at(kind, versions[0])
}

/// Where the API server serves a kind at `version`.
pub fn api_resource_at(kind: Kind, version: &str) -> ApiResource {
    let (group, plural, _) = served_as(kind);
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind.as_str()),
        plural,
    )
}

/// The versions of `kind` Lanyard can watch, preferred first.
pub fn candidate_versions(kind: Kind) -> &'static [&'static str] {
    served_as(kind).2
}

/// The first of `candidates` that `served` (a group's versions, from discovery) contains.
pub fn pick_version<'a>(candidates: &[&'a str], served: &[String]) -> Option<&'a str> {
    candidates
        .iter()
        .copied()
        .find(|c| served.iter().any(|s| s == c))
}

/// Asks discovery at which versions of `group` the server serves `plural` (`None`: the
/// group is not served at all). A group version may serve some kinds and not others (Gateway
/// API v1.0 serves HTTPRoute at v1 and GRPCRoute only at v1alpha2), so each version's
/// resources are read, as kubectl's discovery does (client-go v0.31 discovery_client.go,
/// `ServerGroupsAndResources`).
async fn served_versions(
    client: &Client,
    group: &str,
    plural: &str,
) -> Result<Option<Vec<String>>, kube::Error> {
    let groups = client.list_api_groups().await?;
    let Some(found) = groups.groups.into_iter().find(|g| g.name == group) else {
        return Ok(None);
    };
    let mut served = Vec::new();
    for version in found.versions {
        let resources = match client
            .list_api_group_resources(&version.group_version)
            .await
        {
            Ok(resources) => resources,
            // Gone between the two requests.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => return Err(e),
        };
        if resources.resources.iter().any(|r| r.name == plural) {
            served.push(version.version);
        }
    }
    Ok(Some(served))
}

/// The version each kind is watched at, as discovery picked it, shared with the status
/// writer so that status goes to the version being watched.
#[derive(Clone, Debug, Default)]
pub struct Versions(Arc<Mutex<std::collections::BTreeMap<Kind, &'static str>>>);

impl Versions {
    fn set(&self, kind: Kind, version: &'static str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind, version);
    }

    /// Where `kind` is served at the version it is watched at (before a watch picked one:
    /// its preferred version).
    pub fn resource(&self, kind: Kind) -> ApiResource {
        let picked = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&kind)
            .copied();
        picked.map_or_else(|| api_resource(kind), |v| api_resource_at(kind, v))
    }
}

/// The watches for these namespaces (empty: all namespaces), one per kind and namespace.
pub fn watches(namespaces: &[String]) -> Vec<Watched> {
    KINDS
        .iter()
        .flat_map(|&kind| {
            if namespaces.is_empty() {
                vec![Watched {
                    kind,
                    namespace: None,
                }]
            } else {
                namespaces
                    .iter()
                    .map(|ns| Watched {
                        kind,
                        namespace: Some(ns.clone()),
                    })
                    .collect()
            }
        })
        .collect()
}

/// Parses an object from a watch with the same parser as file mode, trimmed first to what
/// Lanyard reads ([`trim`]). `Err` says why it cannot be read.
pub fn to_object(resource: &ApiResource, object: DynamicObject) -> Result<Object, String> {
    let mut value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    if let Some(map) = value.as_object_mut() {
        // List items may come without them.
        map.insert("apiVersion".into(), resource.api_version.clone().into());
        map.insert("kind".into(), resource.kind.clone().into());
    }
    if let Some(kind) = KINDS.into_iter().find(|k| k.as_str() == resource.kind) {
        trim::trim(kind, &mut value);
    }
    match parse_value(value, "").into_iter().next() {
        Some(Ok(Parsed::Object { object, .. })) => Ok(*object),
        Some(Ok(Parsed::Unused { kind, .. })) => Err(format!("unexpected kind {kind}")),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("empty object".to_string()),
    }
}

/// Whether a watcher error means the kind is not served (its CRD is not installed).
pub fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        _ => false,
    }
}

/// Whether a watcher error is a 404 on a watch after a list (not on the list itself), which
/// kube-runtime's watcher retries from the same resourceVersion without relisting.
pub fn is_rewatch_not_found(error: &watcher::Error) -> bool {
    is_not_found(error) && !matches!(error, watcher::Error::InitialListFailed(_))
}

/// How long to wait before relisting after a 404 on a re-watch, at first and at most.
const RELIST_AFTER_404: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_secs(30));

struct Shared {
    store: Mutex<Store>,
    changed: Notify,
    /// The status writer's own writes, so that they cause no snapshot.
    own_writes: OwnWrites,
    health: Arc<Health>,
    versions: Versions,
    /// Objects that do not parse (left out of the store), as snapshot diagnostics.
    unreadable: Mutex<std::collections::BTreeMap<ObjectRef, Diagnostic>>,
}

impl Shared {
    fn new(watches: Vec<Watched>) -> Self {
        Self {
            store: Mutex::new(Store::new(watches.clone())),
            changed: Notify::new(),
            own_writes: OwnWrites::default(),
            health: Arc::new(Health::new(watches)),
            versions: Versions::default(),
            unreadable: Mutex::default(),
        }
    }

    /// Records that `object` does not parse (`Some(error)`) or no longer needs saying so.
    fn set_unreadable(&self, object: &ObjectRef, path: &str, error: Option<&str>) {
        let mut unreadable = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match error {
            Some(e) => {
                let diagnostic =
                    Diagnostic::error(path, format!("cannot be read, left out until it can: {e}"))
                        .with_object(object.to_string());
                unreadable.insert(object.clone(), diagnostic.clone()) != Some(diagnostic)
            }
            None => unreadable.remove(object).is_some(),
        };
        drop(unreadable);
        if changed {
            self.changed.notify_one();
        }
    }

    /// After a relist of `watched`: forgets unreadable objects it covers that the relist
    /// did not report unreadable again (deleted or fixed meanwhile).
    fn relisted_unreadable(&self, watched: &Watched, again: &std::collections::HashSet<ObjectRef>) {
        self.unreadable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r, _| r.kind != watched.kind || !watched.covers(&r.key) || again.contains(r));
    }

    fn diagnostics(&self) -> Vec<Diagnostic> {
        self.unreadable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn is_synced(&self, watch: usize) -> bool {
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_synced(watch)
    }

    fn apply(&self, watch: usize, change: Change) {
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(watch, change);
        self.changed.notify_one();
    }
}

/// Publishes a [`Snapshot`] of the objects on an API server, and a new one whenever they
/// change (see the module docs). Dropping it stops the watches.
#[derive(Debug)]
pub struct KubeWatcher {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    tasks: Vec<JoinHandle<()>>,
    /// Ends the election (which releases the Lease).
    shutdown: watch::Sender<bool>,
    election: Option<JoinHandle<()>>,
    /// How long the election may take to release the Lease.
    release_within: Duration,
    health: Arc<Health>,
}

impl KubeWatcher {
    /// Starts the watches (`namespaces` empty: all namespaces), the publisher, and the route
    /// status writer and Event recorder (which also report what proxies reject, from
    /// `rejections`) with the leader election they wait for.
    pub fn start(
        client: Client,
        namespaces: &[String],
        settings: Settings,
        lease: LeaseSettings,
        rejections: watch::Receiver<Arc<crate::nacks::Rejections>>,
    ) -> Self {
        let watches = watches(namespaces);
        let shared = Arc::new(Shared::new(watches.clone()));
        let health = shared.health.clone();
        let (sender, snapshots) = watch::channel(Arc::new(Snapshot::placeholder()));
        let mut tasks: Vec<JoinHandle<()>> = watches
            .into_iter()
            .enumerate()
            .map(|(index, watched)| {
                let span = info_span!(
                    "watch",
                    kind = %watched.kind,
                    namespace = watched.namespace.as_deref().unwrap_or("*"),
                );
                tokio::spawn(
                    run_watch(client.clone(), index, watched, shared.clone()).instrument(span),
                )
            })
            .collect();
        let (leading, leader) = watch::channel(false);
        let reporter = kube::runtime::events::Reporter {
            controller: settings.controller_name.clone(),
            instance: Some(lease.identity.clone()),
        };
        let (shutdown, stopping) = watch::channel(false);
        let release_within = lease.renew_deadline();
        let election = tokio::spawn(
            lease::run(
                lease::KubeLease::new(client.clone(), &lease),
                lease,
                leading,
                stopping,
            )
            .instrument(info_span!("lease")),
        );
        tasks.push(tokio::spawn(
            events::run(
                client.clone(),
                reporter,
                snapshots.clone(),
                rejections.clone(),
                leader.clone(),
            )
            .instrument(info_span!("events")),
        ));
        tasks.push(tokio::spawn(
            status::run(
                client,
                shared.versions.clone(),
                settings.controller_name.clone(),
                snapshots.clone(),
                rejections,
                leader,
                shared.own_writes.clone(),
            )
            .instrument(info_span!("status")),
        ));
        tasks.push(tokio::spawn(
            publish(shared, sender, settings).instrument(info_span!("publish")),
        ));
        Self {
            snapshots,
            tasks,
            shutdown,
            election: Some(election),
            release_within,
            health,
        }
    }

    /// Which watches cannot be read, for `/readyz` and `/metrics`.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Stops leading and releases the Lease if this replica holds it (waiting at most a
    /// renew deadline), then stops the watches and the publisher.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(election) = self.election.take() {
            let bound = self.release_within + Duration::from_secs(1);
            if tokio::time::timeout(bound, election).await.is_err() {
                warn!("the election did not end in time");
            }
        }
        self.abort();
    }

    /// A receiver of every snapshot published from now on; it holds the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    /// The latest snapshot (a placeholder until the first full sync).
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// Stops the watches and the publisher.
    pub fn stop(mut self) {
        self.abort();
    }

    fn abort(&mut self) {
        for task in self.tasks.drain(..).chain(self.election.take()) {
            task.abort();
        }
    }
}

impl Drop for KubeWatcher {
    fn drop(&mut self) {
        self.abort();
    }
}

/// How long to wait before asking discovery again for a kind with several versions, at
/// first and at most.
const RESOLVE_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// Runs one watch until aborted, feeding its changes into the store. A kind Lanyard reads at
/// one version is watched there. A kind with several candidate versions is watched at the
/// one discovery finds served, and found again whenever that version stops being served
/// (the objects stay in the store meanwhile; the new watch's list replaces them).
async fn run_watch(client: Client, index: usize, watched: Watched, shared: Arc<Shared>) {
    let candidates = candidate_versions(watched.kind);
    if let [version] = candidates {
        let resource = api_resource_at(watched.kind, version);
        watch_resource(
            &client,
            index,
            &watched,
            &resource,
            &shared,
            OnMissing::Retry,
        )
        .await;
        return;
    }
    let (group, plural, _) = served_as(watched.kind);
    let mut delay = RESOLVE_BACKOFF.0;
    let mut reported_missing = false;
    loop {
        match served_versions(&client, group, plural).await {
            Ok(served) => match served
                .as_deref()
                .and_then(|served| pick_version(candidates, served))
            {
                Some(version) => {
                    let resource = api_resource_at(watched.kind, version);
                    info!(api_version = %resource.api_version, "watching the newest version served that Lanyard reads");
                    shared.versions.set(watched.kind, version);
                    reported_missing = false;
                    if watch_resource(
                        &client,
                        index,
                        &watched,
                        &resource,
                        &shared,
                        OnMissing::Return,
                    )
                    .await
                    {
                        delay = RESOLVE_BACKOFF.0;
                    }
                    info!(api_version = %resource.api_version, "no longer served: asking discovery again");
                }
                None => {
                    let served = served.unwrap_or_default();
                    let needs = format!(
                        "the API server to serve {plural:?} in API group {group:?} at one of the versions {}",
                        candidates.join(", ")
                    );
                    if !reported_missing {
                        let crds = if group == "gateway.networking.k8s.io" {
                            "the Gateway API CRDs"
                        } else {
                            "the SMI CRDs"
                        };
                        warn!(
                            served = ?served,
                            "the API server serves {kind} at no version Lanyard reads: treating it as empty, retrying with backoff; Lanyard needs {needs} (install or upgrade {crds})",
                            kind = watched.kind,
                        );
                        reported_missing = true;
                    }
                    shared.health.set(
                        index,
                        Some(Unavailable {
                            reason: "not_served",
                            needs,
                            error: format!(
                                "served at: {}",
                                if served.is_empty() {
                                    "none".to_string()
                                } else {
                                    served.join(", ")
                                }
                            ),
                        }),
                    );
                    shared.apply(index, Change::Missing);
                }
            },
            Err(e) => warn!(error = %e, "discovery failed, retrying with backoff"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RESOLVE_BACKOFF.1);
    }
}

/// What a watch does when the server says its resource is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnMissing {
    /// Report the kind as empty and keep retrying the same resource with backoff.
    Retry,
    /// Return, so that the caller can look for another version.
    Return,
}

/// Watches `resource` until aborted or, with [`OnMissing::Return`], until the server says
/// it is not served. Returns whether the watch listed at least once.
async fn watch_resource(
    client: &Client,
    index: usize,
    watched: &Watched,
    resource: &ApiResource,
    shared: &Shared,
    on_missing: OnMissing,
) -> bool {
    // Lists are served from the API server's watch cache (`resourceVersion=0`, kube-runtime
    // 4.2 watcher.rs `ListSemantic::Any`), not read from etcd with a quorum, as client-go's
    // reflector does for its first list (client-go v0.31 tools/cache/reflector.go,
    // `relistResourceVersion`). kube-runtime uses it for relists after a 410 as well; a list
    // older than what was seen is followed by the watch from its resourceVersion, which
    // replays what it missed, and a relist replaces a kind only once complete. The status
    // writer reads each route before writing, so an old resourceVersion costs a read only.
    let config = watcher::Config::default().any_semantic();
    let api: Api<DynamicObject> = match &watched.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let mut missing = false;
    let mut listed = false;
    let mut unreadable_in_relist = std::collections::HashSet::new();
    let mut relist_delay = RELIST_AFTER_404.0;
    'relist: loop {
        let mut events = watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let change = match event {
                Ok(watcher::Event::Init) => {
                    unreadable_in_relist.clear();
                    Change::Init
                }
                Ok(watcher::Event::InitDone) => {
                    if std::mem::take(&mut missing) {
                        info!("the kind is served now");
                    }
                    if let Some(was) = shared.health.set(index, None)
                        && was.reason != "not_served"
                    {
                        info!(api_version = %resource.api_version, "the kind can be read again: listed");
                    }
                    shared.relisted_unreadable(watched, &unreadable_in_relist);
                    debug!("listed");
                    listed = true;
                    relist_delay = RELIST_AFTER_404.0;
                    Change::InitDone
                }
                Ok(watcher::Event::InitApply(object)) => {
                    let key = object_ref(watched.kind, &object);
                    match to_object(resource, object) {
                        Ok(object) => {
                            shared.set_unreadable(&object.object_ref(), "", None);
                            Change::InitApply(object)
                        }
                        Err(e) => {
                            // The relist replaces the kind: a stale version goes with it.
                            if let Some(key) = key {
                                report_unreadable(shared, resource, &key, &e);
                                unreadable_in_relist.insert(key);
                            }
                            continue;
                        }
                    }
                }
                Ok(watcher::Event::Apply(object)) => {
                    let key = object_ref(watched.kind, &object);
                    match to_object(resource, object) {
                        Ok(object) => {
                            shared.set_unreadable(&object.object_ref(), "", None);
                            Change::Apply(object)
                        }
                        // An update that does not parse: the version stored is stale, so it
                        // goes, and the snapshot's diagnostics say why.
                        Err(e) => match key {
                            Some(key) => {
                                report_unreadable(shared, resource, &key, &e);
                                Change::Delete(key)
                            }
                            None => {
                                warn!(error = %e, "skipping an object without a name that cannot be read");
                                continue;
                            }
                        },
                    }
                }
                // Only the key of a deleted object is needed, parsed or not.
                Ok(watcher::Event::Delete(object)) => match object_ref(watched.kind, &object) {
                    Some(key) => {
                        shared.set_unreadable(&key, "", None);
                        Change::Delete(key)
                    }
                    None => {
                        warn!("skipping the deletion of an object without a name");
                        continue;
                    }
                },
                Err(e) if is_rewatch_not_found(&e) && on_missing == OnMissing::Retry => {
                    shared.health.count_error(index, &e);
                    // kube-runtime 4.2 watcher.rs (`step_trampolined`): a watch that fails to
                    // start stays in `State::InitListed` and is retried from the same
                    // resourceVersion; only a 410 returns to `State::Empty` and lists again. A
                    // 404 on a re-watch (a CRD version briefly unserved, an API server whose
                    // CRDs are not loaded yet) would then resume from the old version once the
                    // kind is back and never relist, and it does not say the kind is gone: keep
                    // its objects and start a new watcher, whose list replaces them (or, if the
                    // list 404s too, reports the kind missing).
                    warn!(
                        error = %e,
                        api_version = %resource.api_version,
                        "the API server answered 404 to a re-watch: keeping the objects, relisting"
                    );
                    tokio::time::sleep(relist_delay).await;
                    relist_delay = (relist_delay * 2).min(RELIST_AFTER_404.1);
                    continue 'relist;
                }
                Err(e) if is_not_found(&e) => {
                    shared.health.count_error(index, &e);
                    if on_missing == OnMissing::Return {
                        return listed;
                    }
                    shared
                        .health
                        .set(index, Some(Unavailable::new(watched, resource, &e)));
                    if !missing {
                        warn!(
                            api_version = %resource.api_version,
                            "the API server does not serve this kind (are the Gateway API CRDs installed?): treating it as empty, retrying with backoff"
                        );
                        missing = true;
                    }
                    Change::Missing
                }
                Err(e) => {
                    shared.health.count_error(index, &e);
                    let list_failed = matches!(e, watcher::Error::InitialListFailed(_));
                    if !list_failed && !is_forbidden(&e) {
                        // The watcher relists (or resumes) by itself after a backoff.
                        warn!(error = %e, "watch failed, retrying with backoff");
                        continue;
                    }
                    let unavailable = Unavailable::new(watched, resource, &e);
                    let was = shared.health.set(index, Some(unavailable.clone()));
                    if was.is_none_or(|was| was.reason != unavailable.reason) {
                        report_unavailable(watched.kind, &unavailable, &e);
                    } else {
                        debug!(error = %e, "still cannot read the kind");
                    }
                    if !list_failed {
                        // A refused re-watch: kube-runtime 4.2's watcher would retry it from
                        // the same resourceVersion and, once allowed, resume with no event to
                        // say so. Relist instead (as after a 404), whose InitDone says the
                        // kind can be read again.
                        tokio::time::sleep(relist_delay).await;
                        relist_delay = (relist_delay * 2).min(RELIST_AFTER_404.1);
                        continue 'relist;
                    }
                    // The watcher retries the list with backoff. Until one succeeds, an
                    // optional kind that never listed counts as listed with no objects (one
                    // that did keeps them), so that it does not hold every snapshot back.
                    if is_required(watched.kind) || shared.is_synced(index) {
                        continue;
                    }
                    Change::Missing
                }
            };
            shared.apply(index, change);
        }
        break 'relist listed;
    }
}

/// Where an object of `kind` from a watch is kept: its kind, namespace and name (`None`
/// without a name).
fn object_ref(kind: Kind, object: &DynamicObject) -> Option<ObjectRef> {
    let name = object.metadata.name.clone()?;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    Some(ObjectRef {
        kind,
        key: ObjectKey::new(namespace, name),
    })
}

/// Logs an object that does not parse and records it for the snapshot's diagnostics, under
/// its API path (where file mode gives the file).
fn report_unreadable(shared: &Shared, resource: &ApiResource, object: &ObjectRef, error: &str) {
    warn!(object = %object, error, "leaving out an object that cannot be read");
    let ObjectKey { namespace, name } = &object.key;
    let prefix = if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}", resource.api_version)
    };
    let path = if namespace.is_empty() {
        format!("{prefix}/{}/{name}", resource.plural)
    } else {
        format!("{prefix}/namespaces/{namespace}/{}/{name}", resource.plural)
    };
    shared.set_unreadable(object, &path, Some(error));
}

/// Logs, once per cause, why a watch cannot be read and what that means.
fn report_unavailable(kind: Kind, unavailable: &Unavailable, error: &watcher::Error) {
    let needs = &unavailable.needs;
    match (is_required(kind), unavailable.reason) {
        (true, "forbidden") => warn!(
            error = %error,
            "the API server refuses to let the controller read {kind}, which it needs: not ready until it may (grant {needs}); retrying with backoff"
        ),
        (true, _) => warn!(
            error = %error,
            "cannot read {kind}, which the controller needs: not ready until it can (it needs {needs}); retrying with backoff"
        ),
        (false, "forbidden") => warn!(
            error = %error,
            "the API server refuses to let the controller read {kind}: leaving it out, as if there were none (grant {needs} to use it); retrying with backoff"
        ),
        (false, _) => warn!(
            error = %error,
            "cannot read {kind}: leaving it out, as if there were none (it needs {needs}); retrying with backoff"
        ),
    }
}

/// Translates and publishes the store whenever it changed and every watch has listed,
/// collecting changes for [`DEBOUNCE`] first.
async fn publish(shared: Arc<Shared>, sender: watch::Sender<Arc<Snapshot>>, settings: Settings) {
    loop {
        shared.changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
        let current = sender.borrow().clone();
        let diagnostics = shared.diagnostics();
        let new_diagnostics = current.is_placeholder() || current.diagnostics != diagnostics;
        let objects: Option<Arc<Objects>> = {
            let mut store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
            if !store.all_synced() {
                None
            } else {
                store
                    .take_changed(&shared.own_writes)
                    .or_else(|| new_diagnostics.then(|| store.objects().clone()))
            }
        };
        let Some(objects) = objects else { continue };
        if !current.is_placeholder()
            && (Arc::ptr_eq(&current.objects, &objects) || current.objects == objects)
        {
            if new_diagnostics {
                let loaded = Loaded {
                    objects,
                    diagnostics,
                    ..Default::default()
                };
                sender.send_replace(Arc::new(current.with_diagnostics(loaded)));
            } else {
                debug!("no change");
            }
            continue;
        }
        let generation = current.generation + 1;
        let settings = settings.clone();
        let translated = tokio::task::spawn_blocking(move || {
            let loaded = Loaded {
                objects,
                diagnostics,
                ..Default::default()
            };
            current.next(loaded, &settings)
        })
        .instrument(info_span!("translate", generation))
        .await;
        match translated {
            Ok(snapshot) => {
                info!(
                    generation,
                    services = snapshot.objects.services.len(),
                    routes = snapshot.summary().routes,
                    "translated"
                );
                sender.send_replace(Arc::new(snapshot));
            }
            Err(e) => error!(error = %e, "translation panicked: keeping the previous snapshot"),
        }
        if sender.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use serde_json::json;

    use super::*;

    #[test]
    fn every_kind_has_a_watch_per_namespace() {
        assert_eq!(watches(&[]).len(), KINDS.len());
        let two = watches(&["a".into(), "b".into()]);
        assert_eq!(two.len(), 2 * KINDS.len());
        assert!(two.iter().all(|w| w.namespace.is_some()));
    }

    #[test]
    fn objects_from_the_api_server_go_through_the_file_parser() {
        let resource = api_resource(Kind::HttpRoute);
        let route = DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some("r".into()),
                namespace: Some("shop".into()),
                managed_fields: Some(vec![Default::default()]),
                ..Default::default()
            },
            data: json!({"spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "cart"}]}}),
        };
        let object = to_object(&resource, route).unwrap();
        assert_eq!(object.object_ref().to_string(), "HTTPRoute shop/r");
        assert!(object.metadata().managed_fields.is_none());

        let broken = DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            data: json!({"spec": {"ports": "eighty"}}),
        };
        assert!(to_object(&api_resource(Kind::Service), broken).is_err());
    }

    #[tokio::test]
    async fn a_kind_the_server_does_not_serve_counts_as_empty_and_is_retried() {
        let server = lanyard_test_apiserver::ApiServer::start(Default::default())
            .await
            .unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(&server.kubeconfig_path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = Client::try_from(config).unwrap();
        let watched = Watched {
            kind: Kind::HttpRoute,
            namespace: None,
        };
        // As if the Gateway API CRDs were not installed.
        let unserved = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v9", "HTTPRoute"),
            "httproutes",
        );
        let shared = Arc::new(Shared::new(vec![watched.clone()]));
        let watching = shared.clone();
        let task = tokio::spawn(async move {
            watch_resource(&client, 0, &watched, &unserved, &watching, OnMissing::Retry).await
        });
        let synced = async {
            while !shared.store.lock().unwrap().all_synced() {
                shared.changed.notified().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), synced)
            .await
            .expect("the missing kind was reported");
        assert!(!task.is_finished(), "the watch gave up");
        task.abort();
    }

    async fn loopback_client(server: &lanyard_test_apiserver::Running) -> Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&server.kubeconfig_path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn a_404_on_a_rewatch_keeps_the_routes_and_relists() {
        use lanyard_test_apiserver::Fault;
        let server = lanyard_test_apiserver::ApiServer::start(Default::default())
            .await
            .unwrap();
        let client = loopback_client(&server).await;
        let resource = api_resource(Kind::HttpRoute);
        let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
        let route = DynamicObject::new("r", &resource).data(
            json!({"spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "cart"}]}}),
        );
        let route = routes.create(&Default::default(), &route).await.unwrap();
        let key = to_object(&resource, route).unwrap().object_ref();
        let watched = Watched {
            kind: Kind::HttpRoute,
            namespace: None,
        };
        let shared = Arc::new(Shared::new(vec![watched.clone()]));
        let watching = shared.clone();
        let task = tokio::spawn(async move {
            watch_resource(&client, 0, &watched, &resource, &watching, OnMissing::Retry).await
        });
        let has_route = || shared.store.lock().unwrap().objects().contains(&key);
        let lists =
            || server.request_count("list", "/apis/gateway.networking.k8s.io/v1/httproutes");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !(shared.store.lock().unwrap().all_synced() && has_route()) {
            assert!(tokio::time::Instant::now() < deadline, "never listed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(lists(), 1);

        // The next watch of HTTPRoutes is answered 404 once (a CRD version briefly unserved).
        let fault = server.add_fault(
            Fault::status(404)
                .resource("httproutes")
                .watch(true)
                .times(1),
        );
        server.cut_watches(Some("HTTPRoute"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while lists() < 2 {
            assert!(
                has_route(),
                "a 404 on a re-watch emptied the kind before any relist"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "no relist after a 404 on a re-watch (fault hit {} times)",
                server.fault_hits(fault)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.fault_hits(fault), 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while shared.store.lock().unwrap().relists[0].is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relist never finished"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(has_route(), "the relist brought the route back");
        task.abort();
    }

    /// Waits (boundedly) for `f` to hold for the shared state.
    async fn wait_until(shared: &Shared, what: &str, f: impl Fn(&Shared) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !f(shared) {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_update_that_does_not_parse_removes_the_object_and_says_why_and_its_delete_is_applied()
     {
        let server = lanyard_test_apiserver::ApiServer::start(Default::default())
            .await
            .unwrap();
        let client = loopback_client(&server).await;
        let resource = api_resource(Kind::Service);
        let services: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), "default", &resource);
        let service = DynamicObject::new("cart", &resource)
            .data(json!({"spec": {"ports": [{"name": "http", "port": 80}]}}));
        services
            .create(&Default::default(), &service)
            .await
            .unwrap();
        let watched = Watched {
            kind: Kind::Service,
            namespace: None,
        };
        let shared = Arc::new(Shared::new(vec![watched.clone()]));
        let watching = shared.clone();
        let task = tokio::spawn(async move {
            watch_resource(&client, 0, &watched, &resource, &watching, OnMissing::Retry).await
        });
        let key = ObjectRef {
            kind: Kind::Service,
            key: ObjectKey::new("default", "cart"),
        };
        let stored = |s: &Shared| s.store.lock().unwrap().objects().contains(&key);
        wait_until(&shared, "never listed", stored).await;

        // The loopback server, like a CRD without a schema, stores what Lanyard cannot read.
        let broken = json!({"spec": {"ports": "eighty"}});
        services
            .patch(
                "cart",
                &Default::default(),
                &kube::api::Patch::Merge(&broken),
            )
            .await
            .unwrap();
        wait_until(&shared, "the stale version stayed", |s| !stored(s)).await;
        let diagnostics = shared.diagnostics();
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        let text = diagnostics[0].to_string();
        assert!(
            text.starts_with("error: /api/v1/namespaces/default/services/cart: Service default/cart: cannot be read"),
            "{text}"
        );

        // Its deletion (of a version that does not parse either) clears the diagnostic.
        services.delete("cart", &Default::default()).await.unwrap();
        wait_until(&shared, "the deletion was dropped", |s| {
            s.diagnostics().is_empty()
        })
        .await;
        task.abort();
    }

    #[test]
    fn the_newest_served_version_lanyard_reads_is_watched() {
        let served = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let smi = candidate_versions(Kind::TrafficSplit);
        // Lanyard's CRDs serve every version; OSM's serve TrafficSplit at v1alpha2 only.
        let all = served(&["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]);
        assert_eq!(pick_version(smi, &all), Some("v1alpha4"));
        assert_eq!(pick_version(smi, &served(&["v1alpha2"])), Some("v1alpha2"));
        assert_eq!(pick_version(smi, &served(&["v1beta9"])), None);
        assert_eq!(candidate_versions(Kind::Service), &["v1"]);
        assert_eq!(
            api_resource(Kind::TrafficSplit).api_version,
            "split.smi-spec.io/v1alpha4"
        );
        assert_eq!(
            api_resource_at(Kind::HttpRouteGroup, "v1alpha2").api_version,
            "specs.smi-spec.io/v1alpha2"
        );
    }

    #[test]
    fn a_404_means_the_kind_is_not_served() {
        let status = |code| {
            Box::new(kube::core::Status {
                code,
                ..Default::default()
            })
        };
        assert!(is_not_found(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(404))
        )));
        assert!(!is_not_found(&watcher::Error::InitialListFailed(
            kube::Error::Api(status(500))
        )));
        assert!(!is_not_found(&watcher::Error::WatchError(status(410))));
    }
}
