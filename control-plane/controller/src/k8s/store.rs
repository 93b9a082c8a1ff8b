//! The objects the watches have seen, kept as one [`Objects`] store.
//!
//! Each watch covers one kind, in every namespace or in one. A relist (`Init`, `InitApply`…,
//! `InitDone`) is buffered and replaces exactly the objects the watch covers only when it is
//! done, so a snapshot never sees a half-listed kind.

use lanyard_index::{Kind, Object, ObjectKey, ObjectRef, Objects};

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
            // A Namespace watch in namespace mode lists that one Namespace.
            Some(ns) if self.kind == Kind::Namespace => key.name == *ns,
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
    objects: Objects,
    pub(super) relists: Vec<Option<Vec<Object>>>,
    synced: Vec<bool>,
    changed: bool,
}

impl Store {
    pub fn new(watches: Vec<Watched>) -> Self {
        let n = watches.len();
        Self {
            watches,
            objects: Objects::default(),
            relists: vec![None; n],
            synced: vec![false; n],
            changed: false,
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
                if self.objects.contains(&object) {
                    self.objects.delete(&object);
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
        self.objects.apply(object);
        self.changed = true;
    }

    fn replace(&mut self, watch: usize, listed: Vec<Object>) {
        let watched = &self.watches[watch];
        self.objects
            .retain(watched.kind, |key| !watched.covers(key));
        for object in listed {
            self.objects.apply(object);
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

    /// The objects, if something happened to them since the last call (the publisher
    /// compares them with what it published).
    pub fn take_changed(&mut self) -> Option<Objects> {
        std::mem::take(&mut self.changed).then(|| self.objects.clone())
    }

    /// The objects.
    pub fn objects(&self) -> &Objects {
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
        assert!(store.take_changed().is_some());
        assert!(store.take_changed().is_none());

        // Watch 0 relists (after a 410 Gone, say): "one" was deleted meanwhile.
        store.apply(0, Change::Init);
        store.apply(0, Change::InitApply(mk_service("a", "three")));
        assert_eq!(services(&store), ["a/one", "b/two"]);
        store.apply(0, Change::InitDone);
        assert_eq!(services(&store), ["a/three", "b/two"]);
        assert!(store.take_changed().is_some());
    }

    #[test]
    fn events_apply_and_delete_and_a_relist_with_the_same_objects_gives_the_same_objects() {
        let mut store = mk_store();
        store.apply(0, Change::Apply(mk_service("a", "one")));
        store.apply(1, Change::Apply(mk_service("b", "two")));
        store.apply(1, Change::Delete(mk_service("b", "two").object_ref()));
        assert_eq!(services(&store), ["a/one"]);
        let before = store.take_changed().unwrap();
        store.apply(0, Change::Init);
        store.apply(0, Change::InitApply(mk_service("a", "one")));
        store.apply(0, Change::InitDone);
        store.apply(1, Change::Delete(mk_service("b", "gone").object_ref()));
        assert_eq!(store.take_changed(), Some(before));
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
