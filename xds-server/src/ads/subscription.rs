//! What a stream asked for of one type, and what that selects in a snapshot.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::ProxyRef;
use crate::cache::{MeshSnapshot, TypeView};
use crate::resource::{Resource, ResourceType};
use crate::version::Version;

/// The name that subscribes to everything the server has for the proxy.
pub const WILDCARD: &str = "*";

/// The subscription of one type on one stream.
///
/// Wildcard follows the xDS rules: `*` subscribes to everything for the proxy. State of
/// the world: a client that has never named a resource of the type on this stream (all its
/// requests had empty `resource_names`) is a legacy wildcard subscriber; once it names
/// resources, an empty list means none. Incremental: a first request that subscribes to
/// nothing is a legacy wildcard subscription, the same as subscribing to `*`; names
/// subscribed later are added to it, and only unsubscribing `*` ends it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Whether the client ever named a resource (or `*`) of this type on the stream.
    explicit: bool,
}

impl Subscription {
    /// The subscription a SotW request's `resource_names` give, after `previous`.
    pub fn sotw(names: &[String], previous: &Subscription) -> Subscription {
        let explicit = previous.explicit || !names.is_empty();
        Subscription {
            wildcard: names.iter().any(|n| n == WILDCARD) || !explicit,
            names: names.iter().filter(|n| *n != WILDCARD).cloned().collect(),
            explicit,
        }
    }

    /// The subscription of a first delta request.
    pub fn delta_initial(subscribe: &[String]) -> Subscription {
        let mut subscription = Subscription::default();
        if subscribe.is_empty() {
            subscription.wildcard = true;
        } else {
            subscription.apply(subscribe, &[]);
        }
        subscription
    }

    /// Applies a later delta request. Returns the names no longer subscribed (the client
    /// drops them itself), or all but the named ones when wildcard is turned off (`None`).
    ///
    /// Naming resources never ends a wildcard subscription, legacy or explicit: only
    /// unsubscribing `*` does. Envoy's delta client (Envoy v1.36
    /// source/extensions/config_subscription/grpc/delta_subscription_state.cc,
    /// `isInitialRequestForLegacyWildcard` and `updateSubscriptionInterest`) records a legacy
    /// wildcard first request as a subscription to `*`, keeps it when it later subscribes
    /// names (sending only the names), and drops it only by unsubscribing `*`.
    pub fn apply(&mut self, subscribe: &[String], unsubscribe: &[String]) -> Dropped {
        let was_wildcard = self.wildcard;
        self.explicit |= !subscribe.is_empty();
        for name in subscribe {
            if name == WILDCARD {
                self.wildcard = true;
            } else {
                self.names.insert(name.clone());
            }
        }
        let mut dropped = Vec::new();
        for name in unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
            } else if self.names.remove(name) {
                dropped.push(name.clone());
            }
        }
        if was_wildcard && !self.wildcard {
            Dropped::AllButNamed
        } else {
            Dropped::Names(dropped)
        }
    }

    /// Whether the subscription is a wildcard one.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Whether `name` is asked for by name.
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// `*` first when wildcard, then up to `limit` names; and the number of names.
    pub fn summary(&self, limit: usize) -> (Vec<String>, usize) {
        let shown = self
            .wildcard
            .then(|| WILDCARD.to_string())
            .into_iter()
            .chain(self.names.iter().take(limit).cloned())
            .collect();
        (shown, self.names.len())
    }
}

/// What a delta request's unsubscriptions take away from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// These names.
    Names(Vec<String>),
    /// Wildcard ended: everything not named.
    AllButNamed,
}

/// The resources a subscription selects.
#[derive(Clone, Debug)]
pub struct Selected {
    /// Sorted by name.
    pub resources: Arc<[Arc<Resource>]>,
    /// The version of the set.
    pub version: Version,
    /// Names asked for that do not exist for this proxy.
    pub missing: Vec<String>,
    /// The proxy's whole view, when that is what was selected (its encoded form is shared).
    pub view: Option<Arc<TypeView>>,
}

impl Selected {
    /// Whether the set holds a resource named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.resources
            .binary_search_by(|r| r.name().cmp(name))
            .is_ok()
    }
}

/// What `subscription` selects of type `ty` for `proxy` in `snapshot`.
pub fn select(
    snapshot: &MeshSnapshot,
    proxy: &ProxyRef,
    ty: ResourceType,
    subscription: &Subscription,
) -> Selected {
    let mut missing = Vec::new();
    if subscription.wildcard {
        let view = snapshot.view(ty, proxy);
        let mut extra = Vec::new();
        for name in &subscription.names {
            if view.get(name).is_some() {
                continue;
            }
            match snapshot.lookup(ty, proxy, name) {
                Some(found) => extra.push(found),
                None => missing.push(name.clone()),
            }
        }
        if extra.is_empty() {
            return Selected {
                resources: view.resources().clone(),
                version: view.version(),
                missing,
                view: Some(view),
            };
        }
        let mut all: Vec<Arc<Resource>> = view.resources().to_vec();
        all.extend(extra);
        all.sort_by(|a, b| a.name().cmp(b.name()));
        return selected(all, missing);
    }
    let mut found = Vec::with_capacity(subscription.names.len());
    for name in &subscription.names {
        match snapshot.lookup(ty, proxy, name) {
            Some(resource) => found.push(resource),
            None => missing.push(name.clone()),
        }
    }
    selected(found, missing)
}

fn selected(resources: Vec<Arc<Resource>>, missing: Vec<String>) -> Selected {
    let version = Version::of_set(resources.iter().map(|r| (r.name(), r.version())));
    Selected {
        resources: resources.into(),
        version,
        missing,
        view: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sotw_legacy_wildcard_ends_once_names_are_given() {
        let first = Subscription::sotw(&[], &Subscription::default());
        assert!(first.is_wildcard());
        let again = Subscription::sotw(&[], &first);
        assert!(again.is_wildcard());
        let named = Subscription::sotw(&names(&["a"]), &again);
        assert!(!named.is_wildcard());
        let emptied = Subscription::sotw(&[], &named);
        assert!(!emptied.is_wildcard());
        assert!(emptied.names().is_empty());
        let star = Subscription::sotw(&names(&["*", "b"]), &emptied);
        assert!(star.is_wildcard());
        assert_eq!(star.summary(10), (names(&["*", "b"]), 1));
    }

    #[test]
    fn delta_subscribe_and_unsubscribe() {
        let mut sub = Subscription::delta_initial(&[]);
        assert!(sub.is_wildcard());
        // Naming a resource keeps the legacy wildcard and adds the name (Envoy's delta
        // client sends only the name and still counts itself subscribed to `*`).
        assert_eq!(sub.apply(&names(&["a"]), &[]), Dropped::Names(vec![]));
        assert!(sub.is_wildcard());
        assert_eq!(sub.summary(10), (names(&["*", "a"]), 1));
        // Unsubscribing `*` ends it, the named resources stay.
        assert_eq!(sub.apply(&[], &names(&["*"])), Dropped::AllButNamed);
        assert!(!sub.is_wildcard());
        assert_eq!(sub.names().iter().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            sub.apply(&names(&["*", "b"]), &names(&["a"])),
            Dropped::Names(names(&["a"]))
        );
        assert!(sub.is_wildcard());
        // An explicit `*` survives names too.
        assert_eq!(sub.apply(&names(&["c"]), &[]), Dropped::Names(vec![]));
        assert!(sub.is_wildcard());
        assert_eq!(sub.apply(&[], &names(&["*"])), Dropped::AllButNamed);
        assert_eq!(sub.names().iter().collect::<Vec<_>>(), ["b", "c"]);
        // Unsubscribing everything after that is not a wildcard: an empty set.
        sub.apply(&[], &names(&["b", "c"]));
        assert!(!sub.is_wildcard() && sub.names().is_empty());
        let named = Subscription::delta_initial(&names(&["x"]));
        assert!(!named.is_wildcard());
        let star = Subscription::delta_initial(&names(&["*"]));
        assert!(star.is_wildcard() && star.names().is_empty());
    }
}
