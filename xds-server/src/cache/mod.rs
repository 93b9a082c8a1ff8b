//! Snapshots of the translated mesh as the ADS server serves them: every resource encoded
//! once, versioned by its content, and assembled into per-proxy views that proxies with the
//! same view share.
//!
//! A [`MeshSnapshot`] is built from one [`MeshResources`] by [`MeshSnapshot::build`], which
//! refuses an inconsistent mesh (see [`consistency`]). Views are computed on first use and
//! kept for the snapshot's life: EDS is one view for every proxy, RDS one per namespace with
//! consumer routes (plus one for all other namespaces), LDS and CDS one per distinct set of
//! inbound ports.

pub mod consistency;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use lanyard_model::{NamespaceName, ServicePortKey};

use crate::limits::ApiListenerLimits;
use crate::node::{ProxyIdentity, ProxyKind};
use crate::resource::{Resource, ResourceType};
use crate::version::{CanonicalError, Version};
use crate::{MeshResources, ProxyRef, ProxyResources};

/// Why a snapshot was not built.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The resources reference each other wrongly; see [`consistency::problems`].
    #[error("inconsistent snapshot ({} problem(s)): {}", .0.len(), summary(.0))]
    Inconsistent(Vec<String>),
    /// A resource could not be versioned (a Lanyard bug).
    #[error("{0}")]
    Encode(#[from] CanonicalError),
}

fn summary(problems: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = problems
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > SHOWN {
        text.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    text
}

/// The resources of one type one proxy gets for a wildcard subscription, sorted by name,
/// with the version of the whole set.
#[derive(Debug)]
pub struct TypeView {
    resources: Arc<[Arc<Resource>]>,
    version: Version,
    /// `resources` as a SotW response's `resources` field, encoded on first use.
    sotw: OnceLock<bytes::Bytes>,
}

impl TypeView {
    fn new(resources: Vec<Arc<Resource>>) -> Self {
        let version = Version::of_set(resources.iter().map(|r| (r.name(), r.version())));
        TypeView {
            resources: resources.into(),
            version,
            sotw: OnceLock::new(),
        }
    }

    /// The resources encoded as a `DiscoveryResponse`'s `resources` field, once per view:
    /// every SotW stream with this view sends these bytes.
    pub fn sotw_resources(&self) -> &bytes::Bytes {
        self.sotw
            .get_or_init(|| crate::ads::wire::sotw_resources(&self.resources))
    }

    /// The resources, sorted by name.
    pub fn resources(&self) -> &Arc<[Arc<Resource>]> {
        &self.resources
    }

    /// The version of the set.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The resource with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<Resource>> {
        self.resources
            .binary_search_by(|r| r.name().cmp(name))
            .ok()
            .map(|i| &self.resources[i])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ViewKey {
    Listeners(usize),
    Clusters((usize, ProxyKind)),
    Routes((ProxyKind, Option<NamespaceName>)),
    Endpoints(ProxyKind),
}

/// Encoded resources by the address of the `Arc` `MeshResources` holds them in.
#[derive(Default)]
struct Encoded {
    by_ptr: HashMap<usize, Arc<Resource>>,
}

/// The encoded resources of a previous snapshot by type and name (names repeat: route
/// variants, inbound listeners), to reuse those whose encoding has not changed.
#[derive(Default)]
struct Previous<'a> {
    by_name: [HashMap<&'a str, Vec<&'a Arc<Resource>>>; 4],
    /// The encoding of the resource being compared.
    scratch: Vec<u8>,
}

impl<'a> Previous<'a> {
    fn of(snapshot: &'a MeshSnapshot) -> Self {
        let mut previous = Previous::default();
        for resource in snapshot.encoded.by_ptr.values() {
            if let Some(ty) = ResourceType::from_type_url(&resource.body().type_url) {
                previous.by_name[ty as usize]
                    .entry(resource.name())
                    .or_default()
                    .push(resource);
            }
        }
        previous
    }

    /// The previous resource of this type and name whose encoding is exactly `message`'s,
    /// if any: its version is the one `message` would get (the same bytes hash the same).
    fn find<M: prost::Message>(
        &mut self,
        ty: ResourceType,
        name: &str,
        message: &M,
    ) -> Option<&'a Arc<Resource>> {
        let candidates = self.by_name[ty as usize].get(name)?;
        self.scratch.clear();
        message.encode_raw(&mut self.scratch);
        candidates
            .iter()
            .copied()
            .find(|r| r.body().value == self.scratch)
    }
}

impl Encoded {
    fn add<M: prost::Message + prost::Name>(
        &mut self,
        ty: ResourceType,
        name: &str,
        message: &Arc<M>,
        previous: &mut Previous<'_>,
    ) -> Result<(), CanonicalError> {
        let ptr = Arc::as_ptr(message) as usize;
        if let std::collections::hash_map::Entry::Vacant(slot) = self.by_ptr.entry(ptr) {
            let resource = match previous.find(ty, name, message.as_ref()) {
                Some(unchanged) => unchanged.clone(),
                None => Arc::new(Resource::encode(name, message.as_ref())?),
            };
            slot.insert(resource);
        }
        Ok(())
    }

    fn get<M: prost::Message + prost::Name>(&self, name: &str, message: &Arc<M>) -> Arc<Resource> {
        match self.by_ptr.get(&(Arc::as_ptr(message) as usize)) {
            Some(resource) => resource.clone(),
            // Every resource of a view is among the distinct ones; encode anyway rather than
            // fail a proxy.
            None => {
                tracing::error!(name, "resource missing from the snapshot's encoded set");
                Arc::new(
                    Resource::encode(name, message.as_ref())
                        .expect("encoded once already when the snapshot was built"),
                )
            }
        }
    }
}

/// One published state of the mesh, as served.
pub struct MeshSnapshot {
    generation: u64,
    seen: Instant,
    mesh: Arc<MeshResources>,
    encoded: Encoded,
    counts: [usize; 4],
    views: Mutex<HashMap<ViewKey, Arc<TypeView>>>,
    api_listeners: Mutex<ApiListeners>,
}

/// API listeners built for names proxyless gRPC clients asked for, by the Service port the
/// name resolved to and the name (a listener is named as asked, so each spelling is its own
/// resource).
///
/// Clients choose the names, so: a name that resolves to nothing is not kept (resolving it
/// again is a few map look-ups); only a canonical spelling resolves (see
/// `api_listeners::split_host_port`), so a Service port has a few names, not endlessly many;
/// and what is kept is bounded in entries and bytes ([`ApiListenerLimits`]). Past either
/// bound a listener is built for each request and not kept.
#[derive(Debug, Default)]
struct ApiListeners {
    limits: ApiListenerLimits,
    by_port: HashMap<ServicePortKey, HashMap<String, Arc<Resource>>>,
    entries: usize,
    bytes: usize,
}

impl ApiListeners {
    fn get(&self, port: &ServicePortKey, name: &str) -> Option<Arc<Resource>> {
        self.by_port.get(port)?.get(name).cloned()
    }

    /// Keeps `built` as the listener `name` of `port` while the bounds allow; returns the
    /// one kept (an earlier one, if another stream built it first).
    fn store(&mut self, port: &ServicePortKey, built: Arc<Resource>) -> Arc<Resource> {
        if let Some(found) = self.get(port, built.name()) {
            return found;
        }
        let cost = ApiListeners::cost(&built);
        if self.entries < self.limits.entries && self.bytes + cost <= self.limits.bytes {
            self.entries += 1;
            self.bytes += cost;
            self.by_port
                .entry(port.clone())
                .or_default()
                .insert(built.name().to_string(), built.clone());
        }
        built
    }

    /// What keeping `resource` holds: its name twice (key and resource), its encoding twice
    /// (the `Any` and, once a delta stream sent it, its delta entry), and the maps' share.
    fn cost(resource: &Resource) -> usize {
        const OVERHEAD: usize = 256;
        2 * (resource.name().len() + resource.body().value.len()) + OVERHEAD
    }
}

impl std::fmt::Debug for MeshSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshSnapshot")
            .field("generation", &self.generation)
            .field("resources", &self.encoded.by_ptr.len())
            .finish_non_exhaustive()
    }
}

impl MeshSnapshot {
    /// Checks and encodes a mesh. `seen` is when the change that led to it was first seen
    /// (push latency and convergence are measured from it).
    pub fn build(
        generation: u64,
        seen: Instant,
        mesh: MeshResources,
    ) -> Result<MeshSnapshot, SnapshotError> {
        MeshSnapshot::build_reusing(None, generation, seen, mesh)
    }

    /// [`MeshSnapshot::build`], reusing the encoded resources of `previous` (typically the
    /// snapshot being served) whose encoding is unchanged: the same `Arc<Resource>`, with its
    /// version, instead of a new one hashed again. A change then costs one encode of each
    /// resource (and a comparison) plus the hash of what changed.
    pub fn build_reusing(
        previous: Option<&MeshSnapshot>,
        generation: u64,
        seen: Instant,
        mesh: MeshResources,
    ) -> Result<MeshSnapshot, SnapshotError> {
        let all = mesh.distinct();
        let problems = consistency::problems(&all);
        if !problems.is_empty() {
            return Err(SnapshotError::Inconsistent(problems));
        }
        let mut previous = previous.map(Previous::of).unwrap_or_default();
        let mut encoded = Encoded::default();
        let ProxyResources {
            listeners,
            routes,
            clusters,
            endpoints,
        } = &all;
        for l in listeners {
            encoded.add(ResourceType::Listener, &l.name, l, &mut previous)?;
        }
        for r in routes {
            encoded.add(ResourceType::Route, &r.name, r, &mut previous)?;
        }
        for c in clusters {
            encoded.add(ResourceType::Cluster, &c.name, c, &mut previous)?;
        }
        for e in endpoints {
            encoded.add(ResourceType::Endpoint, &e.cluster_name, e, &mut previous)?;
        }
        Ok(MeshSnapshot {
            generation,
            seen,
            counts: [
                clusters.len(),
                endpoints.len(),
                listeners.len(),
                routes.len(),
            ],
            mesh: Arc::new(mesh),
            encoded,
            views: Mutex::default(),
            api_listeners: Mutex::default(),
        })
    }

    /// Counts snapshots published by one server, from 1.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the change this snapshot carries was first seen.
    pub fn seen(&self) -> Instant {
        self.seen
    }

    /// The translated mesh.
    pub fn mesh(&self) -> &MeshResources {
        &self.mesh
    }

    /// How many distinct resources of a type the snapshot holds (route variants and inbound
    /// listeners count once each).
    pub fn distinct_count(&self, ty: ResourceType) -> usize {
        self.counts[ty as usize]
    }

    /// Which view of the mesh a proxy gets: its namespace, and its workload when the model
    /// knows the pod (else its namespace's view without inbound listeners).
    pub fn proxy_ref(&self, identity: &ProxyIdentity) -> ProxyRef {
        let workload = identity
            .workload_key()
            .filter(|key| self.mesh.has_workload(key));
        ProxyRef {
            namespace: identity.namespace.clone(),
            workload,
            kind: identity.kind,
        }
    }

    /// What a wildcard subscription of this type gives the proxy.
    pub fn view(&self, ty: ResourceType, proxy: &ProxyRef) -> Arc<TypeView> {
        let key = match ty {
            ResourceType::Listener => ViewKey::Listeners(self.mesh.inbound_key(proxy)),
            ResourceType::Cluster => ViewKey::Clusters((self.mesh.inbound_key(proxy), proxy.kind)),
            ResourceType::Route => {
                ViewKey::Routes(self.mesh.routes_key(&proxy.namespace, proxy.kind))
            }
            ResourceType::Endpoint => ViewKey::Endpoints(proxy.kind),
        };
        if let Some(view) = lock(&self.views).get(&key) {
            return view.clone();
        }
        let resources: Vec<Arc<Resource>> = match ty {
            ResourceType::Listener => self
                .mesh
                .listeners_for(proxy)
                .iter()
                .map(|l| self.encoded.get(&l.name, l))
                .collect(),
            ResourceType::Cluster => self
                .mesh
                .clusters_for(proxy)
                .iter()
                .map(|c| self.encoded.get(&c.name, c))
                .collect(),
            ResourceType::Route => self
                .mesh
                .routes_for(&proxy.namespace, proxy.kind)
                .iter()
                .map(|r| self.encoded.get(&r.name, r))
                .collect(),
            ResourceType::Endpoint => self
                .mesh
                .endpoints_for(proxy.kind)
                .iter()
                .map(|e| self.encoded.get(&e.cluster_name, e))
                .collect(),
        };
        let view = Arc::new(TypeView::new(resources));
        lock(&self.views).entry(key).or_insert(view).clone()
    }

    /// The resource `name` of a type for a proxy that asks for it by name: from its view,
    /// or for LDS a proxyless gRPC API listener (`xds:///NAME`) resolved in its namespace.
    pub fn lookup(&self, ty: ResourceType, proxy: &ProxyRef, name: &str) -> Option<Arc<Resource>> {
        if let Some(found) = self.view(ty, proxy).get(name) {
            return Some(found.clone());
        }
        if ty != ResourceType::Listener {
            return None;
        }
        let (port, protocol) = self.mesh.api_listener_port(name, &proxy.namespace)?;
        if let Some(found) = lock(&self.api_listeners).get(&port, name) {
            return Some(found);
        }
        let listener = self.mesh.api_listener_of(name, &port, protocol);
        match Resource::encode(name, &listener) {
            Ok(built) => Some(lock(&self.api_listeners).store(&port, Arc::new(built))),
            Err(e) => {
                tracing::error!(error = %e, name, "cannot encode API listener");
                None
            }
        }
    }

    /// Sets the bounds of the API listeners this snapshot keeps (before it is shared).
    pub fn with_api_listener_limits(mut self, limits: ApiListenerLimits) -> Self {
        self.api_listeners
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .limits = limits;
        self
    }

    /// How many API listeners the snapshot keeps, and the bytes they hold (as counted
    /// against [`ApiListenerLimits`]).
    pub fn api_listeners_kept(&self) -> (usize, usize) {
        let cache = lock(&self.api_listeners);
        (cache.entries, cache.bytes)
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked (views are only ever
/// inserted whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use lanyard_model::WorkloadKey;

    use super::*;
    use crate::fixtures::rich_model;
    use crate::{XdsOptions, translate};

    fn mk_snapshot() -> MeshSnapshot {
        let mesh = translate(&rich_model(), &XdsOptions::default());
        MeshSnapshot::build(1, Instant::now(), mesh).unwrap()
    }

    fn proxy(ns: &str, pod: Option<&str>) -> ProxyRef {
        ProxyRef::envoy(NamespaceName::new(ns), pod.map(|p| WorkloadKey::new(ns, p)))
    }

    #[test]
    fn views_match_for_proxy_and_are_shared() {
        let snapshot = mk_snapshot();
        let cart0 = proxy("shop", Some("cart-0"));
        let expected = snapshot.mesh().for_proxy(&cart0);
        let names = |ty| -> Vec<String> {
            snapshot
                .view(ty, &cart0)
                .resources()
                .iter()
                .map(|r| r.name().to_string())
                .collect()
        };
        assert_eq!(
            names(ResourceType::Listener),
            expected
                .listeners
                .iter()
                .map(|l| l.name.clone())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            names(ResourceType::Cluster),
            expected
                .clusters
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        );
        // Same inbound ports: the same view object; no workload: another.
        let cart1 = proxy("shop", Some("cart-1"));
        assert!(Arc::ptr_eq(
            &snapshot.view(ResourceType::Cluster, &cart0),
            &snapshot.view(ResourceType::Cluster, &cart1)
        ));
        assert!(!Arc::ptr_eq(
            &snapshot.view(ResourceType::Cluster, &cart0),
            &snapshot.view(ResourceType::Cluster, &proxy("shop", None))
        ));
        // Namespaces without consumer routes share RDS; `web` has its own.
        let rds = |ns| snapshot.view(ResourceType::Route, &proxy(ns, None));
        assert!(Arc::ptr_eq(&rds("a"), &rds("b")));
        assert!(!Arc::ptr_eq(&rds("a"), &rds("web")));
        assert_ne!(rds("a").version(), rds("web").version());
        // Each shared resource is one encoded object.
        let a = rds("a");
        let web = rds("web");
        let cart9090 = "cart.shop.svc.cluster.local:9090";
        assert!(Arc::ptr_eq(
            a.get(cart9090).unwrap(),
            web.get(cart9090).unwrap()
        ));
    }

    #[test]
    fn versions_are_stable_across_builds_and_follow_content() {
        let a = mk_snapshot();
        let b = mk_snapshot();
        let p = proxy("web", Some("nope"));
        for ty in ResourceType::ALL {
            let versions = |s: &MeshSnapshot| -> BTreeMap<String, Version> {
                s.view(ty, &p)
                    .resources()
                    .iter()
                    .map(|r| (r.name().to_string(), r.version()))
                    .collect()
            };
            assert_eq!(versions(&a), versions(&b), "{ty}");
            assert_eq!(a.view(ty, &p).version(), b.view(ty, &p).version());
        }
        let mut model = rich_model();
        model.services.values_mut().next().unwrap().ports[0]
            .endpoints
            .pop();
        let c = MeshSnapshot::build(2, Instant::now(), translate(&model, &XdsOptions::default()))
            .unwrap();
        assert_ne!(
            a.view(ResourceType::Endpoint, &p).version(),
            c.view(ResourceType::Endpoint, &p).version()
        );
        for ty in [
            ResourceType::Cluster,
            ResourceType::Listener,
            ResourceType::Route,
        ] {
            assert_eq!(a.view(ty, &p).version(), c.view(ty, &p).version(), "{ty}");
        }
    }

    #[test]
    fn rebuilding_reuses_unchanged_resources() {
        let a = mk_snapshot();
        let mut model = rich_model();
        model.services.values_mut().next().unwrap().ports[0]
            .endpoints
            .pop();
        let mesh = || translate(&model, &XdsOptions::default());
        let reused = MeshSnapshot::build_reusing(Some(&a), 2, Instant::now(), mesh()).unwrap();
        let fresh = MeshSnapshot::build(2, Instant::now(), mesh()).unwrap();
        let p = proxy("web", Some("nope"));
        let (mut shared, mut changed) = (0, 0);
        for ty in ResourceType::ALL {
            let (old, new) = (a.view(ty, &p), reused.view(ty, &p));
            // The same versions as a snapshot built from nothing.
            assert_eq!(new.version(), fresh.view(ty, &p).version(), "{ty}");
            for r in new.resources().iter() {
                match old.get(r.name()) {
                    Some(o) if o.body() == r.body() => {
                        assert!(Arc::ptr_eq(o, r), "{ty} {} encoded again", r.name());
                        shared += 1;
                    }
                    _ => changed += 1,
                }
            }
        }
        assert!(shared > 0);
        // The endpoint that changed is encoded anew, with a new version.
        assert!(changed > 0);
        assert_ne!(
            a.view(ResourceType::Endpoint, &p).version(),
            reused.view(ResourceType::Endpoint, &p).version()
        );
    }

    #[test]
    fn api_listeners_are_looked_up_by_name_in_the_proxy_namespace() {
        let snapshot = mk_snapshot();
        let client = proxy("shop", None);
        let found = snapshot
            .lookup(ResourceType::Listener, &client, "cart:9090")
            .unwrap();
        assert_eq!(found.name(), "cart:9090");
        assert!(
            snapshot
                .lookup(ResourceType::Listener, &proxy("other", None), "cart:9090")
                .is_none()
        );
        assert!(
            snapshot
                .lookup(ResourceType::Listener, &client, "virtualOutbound")
                .is_some()
        );
        assert!(
            snapshot
                .lookup(ResourceType::Cluster, &client, "cart:9090")
                .is_none()
        );
    }

    #[test]
    fn unknown_api_listener_names_are_not_kept() {
        let snapshot = mk_snapshot();
        let client = proxy("shop", None);
        for i in 0..100_000 {
            let name = format!("nope-{i}.shop:80");
            assert!(
                snapshot
                    .lookup(ResourceType::Listener, &client, &name)
                    .is_none()
            );
        }
        assert_eq!(snapshot.api_listeners_kept(), (0, 0));
        // A name that resolves is kept and answered from the cache.
        let first = snapshot
            .lookup(ResourceType::Listener, &client, "cart:9090")
            .unwrap();
        let again = snapshot
            .lookup(ResourceType::Listener, &client, "cart:9090")
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again), "a resolved name is kept");
        assert_eq!(snapshot.api_listeners_kept().0, 1);
    }

    #[test]
    fn spellings_of_one_port_are_refused_and_one_name_is_one_entry() {
        let snapshot = mk_snapshot();
        // `cart` in `shop` and `cart.shop` asked from anywhere name the same port.
        for ns in ["shop", "a", "b", "web"] {
            for _ in 0..3 {
                assert!(
                    snapshot
                        .lookup(ResourceType::Listener, &proxy(ns, None), "cart.shop:9090")
                        .is_some()
                );
            }
        }
        let client = proxy("shop", None);
        for zeros in 0..2000 {
            for name in [
                format!("cart:+{}9090", "0".repeat(zeros)),
                format!("cart:0{}9090", "0".repeat(zeros)),
            ] {
                assert!(
                    snapshot
                        .lookup(ResourceType::Listener, &client, &name)
                        .is_none(),
                    "{name}"
                );
            }
        }
        assert_eq!(snapshot.api_listeners_kept().0, 1);
    }

    #[test]
    fn kept_api_listeners_are_bounded_in_entries_and_bytes() {
        let limits = ApiListenerLimits {
            entries: 3,
            bytes: 1 << 20,
        };
        let snapshot = mk_snapshot().with_api_listener_limits(limits);
        let client = proxy("shop", None);
        let names = [
            "cart:9090",
            "cart.shop:9090",
            "cart.shop.svc:9090",
            "cart.shop.svc.cluster.local:9090",
            "cart.shop.svc.cluster.local.:9090",
        ];
        for name in names {
            let found = snapshot.lookup(ResourceType::Listener, &client, name);
            assert_eq!(found.unwrap().name(), name, "answered past the bound");
        }
        assert_eq!(snapshot.api_listeners_kept().0, 3);
        let one = snapshot.api_listeners_kept().1 / 3;
        let snapshot = mk_snapshot().with_api_listener_limits(ApiListenerLimits {
            entries: 100,
            bytes: 2 * one + one / 2,
        });
        for name in names {
            assert!(
                snapshot
                    .lookup(ResourceType::Listener, &client, name)
                    .is_some()
            );
        }
        let (entries, bytes) = snapshot.api_listeners_kept();
        assert_eq!(entries, 2, "{bytes} bytes");
        assert!(bytes <= 2 * one + one / 2);
    }

    #[test]
    fn an_inconsistent_mesh_is_refused() {
        let mut mesh = translate(&rich_model(), &XdsOptions::default());
        mesh.drop_endpoints_for_tests();
        let err = MeshSnapshot::build(1, Instant::now(), mesh).unwrap_err();
        assert!(matches!(err, SnapshotError::Inconsistent(_)));
        assert!(
            err.to_string().contains("has no ClusterLoadAssignment"),
            "{err}"
        );
    }
}
