//! The objects the watches have seen, kept as one [`Objects`] store.
//!
//! Each watch covers one kind, in every namespace or in one. A relist (`Init`, `InitApply`…,
//! `InitDone`) is buffered and replaces exactly the objects the watch covers only when it is
//! done, so a snapshot never sees a half-listed kind.
//!
//! An update that changes nothing the translator reads (objects arrive trimmed, see
//! [`super::trim`], so what is left differs only by its `resourceVersion`) is dropped before
//! the store: no snapshot, no translation, no copy (as controller-runtime's
//! `predicate.ResourceVersionChangedPredicate` and `GenerationChangedPredicate` drop events,
//! controller-runtime v0.19 pkg/predicate/predicate.go, but after trimming). Such an update of
//! an HTTPRoute or GRPCRoute is a status write: when it is not one of this controller's own
//! ([`OwnWrites`], checked when the snapshot is taken, after the debounce, so that the write's
//! answer has arrived) another writer may have removed this controller's entries, so the
//! route is stored and the status writer gets a snapshot with its new `resourceVersion`.
//!
//! The objects are one `Arc<Objects>` shared with the snapshot last taken: the first change
//! after it copies them once (copy on write), so at rest there is one copy, not one in the
//! store and one per snapshot still held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lanyard_index::{Kind, Object, ObjectKey, ObjectRef, Objects};

/// The `resourceVersion` each route (by uid) had after this controller's last status write
/// on it, shared by the status writer and the store.
#[derive(Clone, Debug, Default)]
pub struct OwnWrites(Arc<Mutex<HashMap<String, String>>>);

impl OwnWrites {
    /// Notes a status write that left route `uid` at `resource_version`.
    pub fn record(&self, uid: &str, resource_version: &str) {
        self.lock()
            .insert(uid.to_string(), resource_version.to_string());
    }

    /// Forgets the routes whose uid `keep` refuses.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|uid, _| keep(uid));
    }

    /// Whether route `uid` at `resource_version` is what this controller's write left.
    pub fn is_own(&self, uid: &str, resource_version: &str) -> bool {
        self.lock()
            .get(uid)
            .is_some_and(|rv| rv == resource_version)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one watch covers: a kind, in every namespace (`None`) or in one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub kind: Kind,
    pub namespace: Option<String>,
}

impl Watched {
    /// Whether an object of this watch's kind with this key is one the watch lists.
    pub fn covers(&self, key: &ObjectKey) -> bool {
        match &self.namespace {
            None => true,
            Some(ns) => key.namespace == *ns,
        }
    }
}

/// What a watch reports, already parsed.
#[derive(Debug)]
pub enum Change {
    /// A relist starts.
    Init,
    /// An object of the relist.
    InitApply(Object),
    /// The relist is complete.
    InitDone,
    /// An object was added or changed.
    Apply(Object),
    /// An object was deleted.
    Delete(ObjectRef),
    /// The kind is not served (its CRD is not installed): it has no objects.
    Missing,
}

/// The store, the relists in progress, and which watches have listed once.
#[derive(Debug)]
pub struct Store {
    watches: Vec<Watched>,
    /// Shared with the snapshot last taken ([`Store::take_changed`]): a change after it
    /// copies the objects once (copy on write), so at rest there is one copy.
    objects: Arc<Objects>,
    pub(super) relists: Vec<Option<Vec<Object>>>,
    synced: Vec<bool>,
    changed: bool,
    /// Routes updated with nothing read changed since the last snapshot (status writes),
    /// checked against [`OwnWrites`] when the snapshot is taken.
    status_writes: Vec<Object>,
}

impl Store {
    pub fn new(watches: Vec<Watched>) -> Self {
        let n = watches.len();
        Self {
            watches,
            objects: Arc::default(),
            relists: vec![None; n],
            synced: vec![false; n],
            changed: false,
            status_writes: Vec::new(),
        }
    }

    /// The watches, by index.
    pub fn watches(&self) -> &[Watched] {
        &self.watches
    }

    /// Applies a change reported by watch number `watch`.
    pub fn apply(&mut self, watch: usize, change: Change) {
        match change {
            Change::Init => self.relists[watch] = Some(Vec::new()),
            Change::InitApply(object) => match &mut self.relists[watch] {
                Some(buffer) => buffer.push(object),
                None => self.put(object),
            },
            Change::InitDone => {
                let listed = self.relists[watch].take().unwrap_or_default();
                self.replace(watch, listed);
            }
            Change::Apply(object) => self.put(object),
            Change::Delete(object) => {
                self.status_writes.retain(|o| o.object_ref() != object);
                if self.objects.contains(&object) {
                    Arc::make_mut(&mut self.objects).delete(&object);
                    self.changed = true;
                }
            }
            Change::Missing => {
                self.relists[watch] = None;
                self.replace(watch, Vec::new());
            }
        }
    }

    fn put(&mut self, object: Object) {
        let key = object.object_ref();
        if let Some(mut stored) = self.objects.get(&key) {
            let new_version = object.metadata().resource_version.clone();
            let moved = stored.metadata().resource_version != new_version;
            stored.metadata_mut().resource_version = new_version;
            if stored == object {
                // Only the resourceVersion moved: an update of something Lanyard does not
                // read (trimmed away), dropped; or a status write on a route, decided when
                // the snapshot is taken.
                if moved && matches!(key.kind, Kind::HttpRoute | Kind::GrpcRoute) {
                    self.status_writes.retain(|o| o.object_ref() != key);
                    self.status_writes.push(object);
                }
                return;
            }
        }
        self.status_writes.retain(|o| o.object_ref() != key);
        Arc::make_mut(&mut self.objects).apply(object);
        self.changed = true;
    }

    fn replace(&mut self, watch: usize, listed: Vec<Object>) {
        let watched = &self.watches[watch];
        self.status_writes
            .retain(|o| o.kind() != watched.kind || !watched.covers(&o.key()));
        let objects = Arc::make_mut(&mut self.objects);
        objects.retain(watched.kind, |key| !watched.covers(key));
        for object in listed {
            objects.apply(object);
        }
        self.synced[watch] = true;
        self.changed = true;
    }

    /// Whether watch number `watch` has listed (or found its kind missing) at least once.
    pub fn is_synced(&self, watch: usize) -> bool {
        self.synced[watch]
    }

    /// Whether every watch has listed (or found its kind missing) at least once.
    pub fn all_synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// The objects, if something the translator reads happened to them since the last call,
    /// or a route's status was written by someone other than this controller (`own`); the
    /// publisher compares them with what it published.
    pub fn take_changed(&mut self, own: &OwnWrites) -> Option<Arc<Objects>> {
        for route in std::mem::take(&mut self.status_writes) {
            let meta = route.metadata();
            let mine = match (&meta.uid, &meta.resource_version) {
                (Some(uid), Some(rv)) => own.is_own(uid, rv),
                _ => false,
            };
            if !mine {
                Arc::make_mut(&mut self.objects).apply(route);
                self.changed = true;
            }
        }
        std::mem::take(&mut self.changed).then(|| self.objects.clone())
    }

    /// The objects (shared with the snapshots that hold them).
    pub fn objects(&self) -> &Arc<Objects> {
        &self.objects
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn mk_service(ns: &str, name: &str) -> Object {
        Object::Service(Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn services(store: &Store) -> Vec<String> {
        store
            .objects()
            .services
            .keys()
            .map(ToString::to_string)
            .collect()
    }

    fn mk_store() -> Store {
        Store::new(vec![
            Watched {
                kind: Kind::Service,
                namespace: Some("a".into()),
            },
            Watched {
                kind: Kind::Service,
                namespace: Some("b".into()),
            },
        ])
    }

    #[test]
    fn a_relist_replaces_only_the_objects_of_its_watch_and_only_when_done() {
        let mut store = mk_store();
        store.apply(0, Change::Init);
        store.apply(0, Change::InitApply(mk_service("a", "one")));
        assert!(services(&store).is_empty(), "a half relist is not applied");
        store.apply(0, Change::InitDone);
        assert!(!store.all_synced());
        store.apply(1, Change::Init);
        store.apply(1, Change::InitApply(mk_service("b", "two")));
        store.apply(1, Change::InitDone);
        assert!(store.all_synced());
        assert_eq!(services(&store), ["a/one", "b/two"]);
        assert!(store.take_changed(&OwnWrites::default()).is_some());
        assert!(store.take_changed(&OwnWrites::default()).is_none());

        // Watch 0 relists (after a 410 Gone, say): "one" was deleted meanwhile.
        store.apply(0, Change::Init);
        store.apply(0, Change::InitApply(mk_service("a", "three")));
        assert_eq!(services(&store), ["a/one", "b/two"]);
        store.apply(0, Change::InitDone);
        assert_eq!(services(&store), ["a/three", "b/two"]);
        assert!(store.take_changed(&OwnWrites::default()).is_some());
    }

    #[test]
    fn events_apply_and_delete_and_a_relist_with_the_same_objects_gives_the_same_objects() {
        let mut store = mk_store();
        store.apply(0, Change::Apply(mk_service("a", "one")));
        store.apply(1, Change::Apply(mk_service("b", "two")));
        store.apply(1, Change::Delete(mk_service("b", "two").object_ref()));
        assert_eq!(services(&store), ["a/one"]);
        let before = store.take_changed(&OwnWrites::default()).unwrap();
        store.apply(0, Change::Init);
        store.apply(0, Change::InitApply(mk_service("a", "one")));
        store.apply(0, Change::InitDone);
        store.apply(1, Change::Delete(mk_service("b", "gone").object_ref()));
        assert_eq!(store.take_changed(&OwnWrites::default()), Some(before));
    }

    fn mk_route(rv: &str) -> Object {
        Object::HttpRoute(lanyard_index::api::HttpRoute {
            metadata: ObjectMeta {
                namespace: Some("a".into()),
                name: Some("r".into()),
                uid: Some("u-r".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn an_update_of_nothing_read_is_dropped_before_the_store() {
        let own = OwnWrites::default();
        let mut store = mk_store();
        let mut one = mk_service("a", "one");
        one.metadata_mut().resource_version = Some("1".into());
        store.apply(0, Change::Apply(one.clone()));
        assert!(store.take_changed(&own).is_some());
        one.metadata_mut().resource_version = Some("2".into());
        store.apply(0, Change::Apply(one.clone()));
        assert!(store.take_changed(&own).is_none(), "only the version moved");
        let stored = store.objects().get(&one.object_ref()).unwrap();
        assert_eq!(
            stored.metadata().resource_version.as_deref(),
            Some("1"),
            "dropped before the store"
        );
        one.metadata_mut().labels = Some([("app".to_string(), "x".to_string())].into());
        store.apply(0, Change::Apply(one));
        assert!(store.take_changed(&own).is_some(), "a label is read");
    }

    #[test]
    fn only_another_writers_status_write_on_a_route_makes_a_snapshot() {
        let own = OwnWrites::default();
        let mut store = Store::new(vec![Watched {
            kind: Kind::HttpRoute,
            namespace: None,
        }]);
        store.apply(0, Change::Apply(mk_route("1")));
        assert!(store.take_changed(&own).is_some());
        // This controller's write left the route at 2.
        own.record("u-r", "2");
        store.apply(0, Change::Apply(mk_route("2")));
        assert!(store.take_changed(&own).is_none());
        // Someone else's write: the status writer must look again.
        store.apply(0, Change::Apply(mk_route("3")));
        let objects = store
            .take_changed(&own)
            .expect("a snapshot for the status writer");
        assert_eq!(
            objects
                .http_routes
                .values()
                .next()
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("3")
        );
    }

    #[test]
    fn the_snapshot_shares_the_stores_objects_until_a_change() {
        let own = OwnWrites::default();
        let mut store = mk_store();
        store.apply(0, Change::Apply(mk_service("a", "one")));
        let taken = store.take_changed(&own).unwrap();
        assert!(Arc::ptr_eq(&taken, &store.objects), "no copy at rest");
        store.apply(0, Change::Apply(mk_service("a", "one")));
        assert!(
            Arc::ptr_eq(&taken, &store.objects),
            "a dropped update copies nothing"
        );
        store.apply(0, Change::Apply(mk_service("a", "two")));
        assert!(!Arc::ptr_eq(&taken, &store.objects), "a change copies once");
        assert_eq!(
            taken.services.len(),
            1,
            "the snapshot's objects stay as taken"
        );
    }

    #[test]
    fn a_missing_kind_counts_as_synced_and_empty() {
        let mut store = mk_store();
        store.apply(0, Change::Apply(mk_service("a", "one")));
        store.apply(0, Change::Missing);
        store.apply(1, Change::Missing);
        assert!(store.all_synced());
        assert!(services(&store).is_empty());
    }
}
