//! Make before break: the order a stream's responses go out in when a change adds,
//! re-creates or removes clusters, shared by both protocols.
//!
//! Envoy's xDS protocol documentation (v1.36 docs/root/api-docs/xds_protocol.rst,
//! "Resource warming" and "Eventual consistency considerations") asks a server to push CDS,
//! then EDS, then LDS, then RDS, and to remove stale clusters (and their endpoints) only
//! after the listeners and routes that named them were replaced. Routes are not warmed:
//! Envoy v1.36 source/common/router/router.cc answers a route whose cluster it does not have
//! (or has only warming: `ClusterManagerImpl::getThreadLocalCluster` knows active clusters
//! only) with 503 "no cluster". So:
//!
//! - **Warming.** A cluster a CDS response adds or re-creates warms until its
//!   ClusterLoadAssignment arrives (Envoy v1.36 source/common/upstream/cluster_manager_impl.cc,
//!   `addOrUpdateCluster` puts it in `warming_clusters_`; source/extensions/clusters/eds/eds.cc
//!   `EdsClusterImpl::onConfigUpdate` ends its initialization). A re-created cluster whose
//!   assignment did not change gets it again: for SotW, Envoy's EDS request after the CDS
//!   response repeats the same names (see `testing::client`); for delta, Envoy sends none
//!   (its watch map already holds the name), so the server sends the assignment unasked,
//!   right after the CDS response. The streams mark EDS for that when they push CDS.
//! - **No route before its cluster is warm.** LDS and RDS responses wait while a cluster
//!   the last CDS response added or re-created is owed its ClusterLoadAssignment
//!   ([`Order::owed`]): until EDS has sent it, or the proxy's reply to that CDS response
//!   shows it does not ask for it.
//! - **No removal before the routes stop naming it.** A CDS response keeps the clusters it
//!   would remove while LDS or RDS has a change to evaluate or a response the proxy has not
//!   answered yet; once both are settled the removal goes out (SotW: the set without them;
//!   delta: `removed_resources`), and delta EDS removals of those clusters' assignments
//!   after it.

use std::collections::BTreeSet;

use super::core::Progress;
use super::subscription::Subscription;
use crate::resource::ResourceType;

/// The make-before-break state of one stream.
#[derive(Debug, Default)]
pub struct Order {
    /// EDS clusters the latest CDS responses added or re-created whose ClusterLoadAssignment
    /// has not been sent since.
    pub owed: BTreeSet<String>,
    /// CDS holds back removals until LDS and RDS have settled.
    pub removals_held: bool,
}

impl Order {
    /// Whether a response of `ty` must wait: LDS and RDS wait while clusters are owed
    /// their endpoints.
    pub fn blocks(&self, ty: ResourceType) -> bool {
        matches!(ty, ResourceType::Listener | ResourceType::Route) && !self.owed.is_empty()
    }

    /// After EDS was evaluated (and sent or found unchanged): every subscribed assignment
    /// has been sent (or does not exist); what stays owed is what the proxy has not asked
    /// for yet.
    pub fn endpoints_evaluated(&mut self, eds: &Subscription) {
        if eds.is_wildcard() {
            self.owed.clear();
        } else {
            self.owed.retain(|name| !eds.names().contains(name));
        }
    }

    /// The proxy replied to the latest CDS response: an accepted cluster whose assignment
    /// it has not subscribed to is not warmed through this stream (nothing to wait for); a
    /// rejected response warms nothing.
    pub fn clusters_replied(&mut self, accepted: bool, eds: Option<&Subscription>) {
        match eds {
            Some(eds) if accepted => {
                if !eds.is_wildcard() {
                    self.owed.retain(|name| eds.names().contains(name));
                }
            }
            _ => self.owed.clear(),
        }
    }
}

/// Whether a type is settled for a removal to follow it: not subscribed, or with nothing
/// to evaluate and no response awaiting the proxy's reply.
pub fn settled(progress: Option<&Progress>) -> bool {
    progress.is_none_or(|p| !p.pending && !p.awaiting_reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn owed_clusters_block_listeners_and_routes_until_sent_or_not_asked_for() {
        let mut order = Order::default();
        order.owed.extend(names(&["a", "b"]));
        assert!(order.blocks(ResourceType::Route) && order.blocks(ResourceType::Listener));
        assert!(!order.blocks(ResourceType::Endpoint) && !order.blocks(ResourceType::Cluster));
        // EDS evaluated before the proxy asked for b: a sent, b still owed.
        order.endpoints_evaluated(&Subscription::delta_initial(&names(&["a"])));
        assert_eq!(order.owed.iter().collect::<Vec<_>>(), ["b"]);
        // The proxy accepted the clusters without asking for b: nothing to wait for.
        order.clusters_replied(true, Some(&Subscription::delta_initial(&names(&["a"]))));
        assert!(order.owed.is_empty() && !order.blocks(ResourceType::Route));
    }

    #[test]
    fn a_rejected_cds_response_owes_nothing() {
        let mut order = Order::default();
        order.owed.insert("a".into());
        order.clusters_replied(false, Some(&Subscription::delta_initial(&names(&["a"]))));
        assert!(order.owed.is_empty());
    }

    #[test]
    fn settled_means_nothing_to_evaluate_and_nothing_unanswered() {
        assert!(settled(None));
        let mut progress = Progress::default();
        assert!(settled(Some(&progress)));
        progress.awaiting_reply = true;
        assert!(!settled(Some(&progress)));
        progress.awaiting_reply = false;
        progress.pending = true;
        assert!(!settled(Some(&progress)));
    }
}
