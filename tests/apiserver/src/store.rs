//! The in-memory object store: objects per resource, one global monotonic `resourceVersion`,
//! a bounded history of changes for watches to resume from, and the open watches to notify.
//!
//! Every write goes through [`Store::write`], which runs the caller's decision under the store
//! lock, so checks such as "stale resourceVersion" and the write itself are atomic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::api_error::ApiError;
use crate::object::meta_mut;
use crate::resources::{ResourceType, StorageKey};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as kept in the history and sent to watches.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub key: StorageKey,
    pub namespace: String,
    pub kind: ChangeType,
    /// The object after the change; for deletes, its last state with the delete's version.
    pub object: Value,
    /// The object before the change, for selector transitions.
    pub old: Option<Value>,
}

/// What a watch receives from the store.
#[derive(Debug, Clone)]
pub enum Signal {
    Change(Arc<Change>),
    /// End the watch with this error event (e.g. an injected 410 Gone).
    Error(ApiError),
}

/// An object's place in its collection: (namespace, name); namespace is `""` when cluster-scoped.
pub type ObjectKey = (String, String);

/// What a write decided to do.
pub enum Outcome {
    /// Store this object (created or replaced).
    Put(Value),
    /// Remove the object.
    Delete,
    /// Change nothing and answer with this value.
    Unchanged(Value),
}

struct Watcher {
    key: StorageKey,
    tx: mpsc::UnboundedSender<Signal>,
}

#[derive(Default)]
pub struct Inner {
    rv: u64,
    objects: HashMap<StorageKey, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<Change>>,
    /// Watches may resume from any version at or after this one.
    oldest_resumable: u64,
    history_limit: usize,
    watchers: Vec<Watcher>,
    pending_gone: HashMap<StorageKey, usize>,
}

/// Shared, lock-protected store.
#[derive(Default)]
pub struct Store {
    inner: Mutex<Inner>,
}

/// Where a new watch starts.
pub struct WatchStart {
    /// Events to send before live ones, oldest first.
    pub backlog: Vec<Signal>,
    pub rx: mpsc::UnboundedReceiver<Signal>,
    /// The store version when the watch was registered.
    pub rv: u64,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let store = Store::default();
        store.lock().history_limit = history_limit.max(1);
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current global resourceVersion.
    pub fn rv(&self) -> u64 {
        self.lock().rv
    }

    /// The oldest version a watch may resume from.
    pub fn oldest_resumable(&self) -> u64 {
        self.lock().oldest_resumable
    }

    pub fn get(&self, key: StorageKey, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&key)
            .and_then(|c| c.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// All objects of a resource (in `ns` if given), sorted by namespace and name, and the
    /// current version.
    pub fn list(&self, key: StorageKey, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(&key)
            .map(|c| {
                c.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
    }

    /// Runs `decide` on the current object under the lock and commits its outcome. Returns the
    /// stored object (for deletes: the last state, stamped with the delete's version).
    pub fn write(
        &self,
        r: &ResourceType,
        ns: &str,
        name: &str,
        decide: impl FnOnce(Option<&Value>) -> Result<Outcome, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let id = (ns.to_string(), name.to_string());
        let current = inner
            .objects
            .get(&r.storage_key())
            .and_then(|c| c.get(&id))
            .cloned();
        match decide(current.as_ref())? {
            Outcome::Unchanged(v) => Ok(v),
            Outcome::Put(obj) => Ok(inner.commit(r.storage_key(), id, Some(obj), current)),
            Outcome::Delete => match current {
                Some(_) => Ok(inner.commit(r.storage_key(), id, None, current)),
                None => Err(ApiError::not_found(r.group, r.plural, name)),
            },
        }
    }

    /// Deletes every object in namespace `ns`, of every resource (namespace deletion).
    pub fn delete_namespace_contents(&self, ns: &str) {
        let mut inner = self.lock();
        let doomed: Vec<(StorageKey, ObjectKey)> = inner
            .objects
            .iter()
            .flat_map(|(k, c)| {
                c.keys()
                    .filter(|(n, _)| n == ns)
                    .map(move |id| (*k, id.clone()))
            })
            .collect();
        for (key, id) in doomed {
            let current = inner.objects.get(&key).and_then(|c| c.get(&id)).cloned();
            inner.commit(key, id, None, current);
        }
    }

    /// Registers a watch on `key`. Its backlog is the current objects as `Added` changes when
    /// `snapshot`, else the history after version `from`. Answers 410 when `from` is older than
    /// the kept history, or when a 410 was injected for this resource.
    pub fn watch(
        &self,
        key: StorageKey,
        from: Option<u64>,
        snapshot: bool,
    ) -> Result<WatchStart, ApiError> {
        let mut inner = self.lock();
        if let Some(n) = inner.pending_gone.get_mut(&key).filter(|n| **n > 0) {
            *n -= 1;
            let (rv, oldest) = (from.unwrap_or(inner.rv), inner.oldest_resumable);
            return Err(ApiError::gone(rv, oldest.max(rv + 1)));
        }
        let mut backlog = Vec::new();
        if snapshot {
            let objects = inner.objects.get(&key).into_iter().flatten();
            backlog = objects
                .map(|((ns, _), obj)| {
                    let rv = crate::object::resource_version(obj)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    Signal::Change(Arc::new(Change {
                        rv,
                        key,
                        namespace: ns.clone(),
                        kind: ChangeType::Added,
                        object: obj.clone(),
                        old: None,
                    }))
                })
                .collect();
        } else if let Some(from) = from {
            if from < inner.oldest_resumable {
                return Err(ApiError::gone(from, inner.oldest_resumable));
            }
            backlog = inner
                .history
                .iter()
                .filter(|c| c.rv > from && c.key == key)
                .map(|c| Signal::Change(c.clone()))
                .collect();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        inner.watchers.push(Watcher { key, tx });
        Ok(WatchStart {
            backlog,
            rx,
            rv: inner.rv,
        })
    }

    /// Drains what a watch has been sent so far, with the version it is then current to.
    pub fn catch_up(&self, rx: &mut mpsc::UnboundedReceiver<Signal>) -> (Vec<Signal>, u64) {
        let inner = self.lock();
        let mut out = Vec::new();
        while let Ok(s) = rx.try_recv() {
            out.push(s);
        }
        (out, inner.rv)
    }

    /// Test hook: ends every open watch of `key` with a 410 Gone error event, or, if none is
    /// open, makes the next watch of `key` answer one.
    pub fn inject_gone(&self, key: StorageKey) {
        let mut inner = self.lock();
        let rv = inner.rv;
        let (hit, kept): (Vec<Watcher>, Vec<Watcher>) = std::mem::take(&mut inner.watchers)
            .into_iter()
            .partition(|w| w.key == key);
        inner.watchers = kept;
        let mut told = 0;
        for w in hit {
            if w.tx.send(Signal::Error(ApiError::gone(rv, rv + 1))).is_ok() {
                told += 1;
            }
        }
        if told == 0 {
            *inner.pending_gone.entry(key).or_default() += 1;
        }
    }

    /// Test hook: closes the open watch streams of `key` (all when `None`) without an error event.
    pub fn cut_watches(&self, key: Option<StorageKey>) {
        self.lock()
            .watchers
            .retain(|w| key.is_some_and(|k| w.key != k));
    }

    /// Test hook: forgets all history, so every watch resuming from an older version gets 410.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.oldest_resumable = inner.rv;
    }

    /// Number of open watch streams.
    pub fn open_watches(&self) -> usize {
        let mut inner = self.lock();
        inner.watchers.retain(|w| !w.tx.is_closed());
        inner.watchers.len()
    }
}

impl Inner {
    fn commit(
        &mut self,
        key: StorageKey,
        id: ObjectKey,
        new: Option<Value>,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let (kind, mut object) = match (new, &old) {
            (Some(obj), None) => (ChangeType::Added, obj),
            (Some(obj), Some(_)) => (ChangeType::Modified, obj),
            (None, Some(o)) => (ChangeType::Deleted, o.clone()),
            (None, None) => unreachable!("commit of nothing"),
        };
        meta_mut(&mut object).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let collection = self.objects.entry(key).or_default();
        if kind == ChangeType::Deleted {
            collection.remove(&id);
        } else {
            collection.insert(id.clone(), object.clone());
        }
        let change = Arc::new(Change {
            rv,
            key,
            namespace: id.0,
            kind,
            object: object.clone(),
            old,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(evicted) = self.history.pop_front() {
                self.oldest_resumable = evicted.rv;
            }
        }
        self.watchers
            .retain(|w| w.key != key || w.tx.send(Signal::Change(change.clone())).is_ok());
        object
    }
}
