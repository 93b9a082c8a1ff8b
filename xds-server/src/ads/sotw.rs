//! State of the world (`StreamAggregatedResources`).
//!
//! - Each response of a type carries every resource the subscription selects: for LDS and
//!   CDS that is the full set (a resource left out is removed); for RDS and EDS, the
//!   subscribed names that exist (names that do not exist are left out).
//! - `version_info` is the version of that set; a type is pushed only when it changes, or
//!   when the client asked for something new (a first request, a changed subscription).
//! - A request whose `response_nonce` is not the latest of its type is stale: it is not an
//!   ACK or a NACK, but a changed subscription in it is answered (gRPC changes its EDS
//!   names before ACKing).
//! - A NACK is recorded and logged; the rejected version is not re-sent: the next push is
//!   the next new version.
//! - A type Lanyard does not serve is answered with an empty response (and an error log
//!   and metric), never left unanswered; an empty `type_url` ends the stream with
//!   `InvalidArgument`.

use std::collections::BTreeMap;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::Status;

use super::core::{MAX_UNKNOWN_TYPES, Progress, Reply, Responder, StreamCore, next_nonce};
use super::order::{Order, settled};
use super::subscription::{Selected, Subscription, select};
use super::wire::{self, Frame};
use std::sync::Arc;

use crate::cache::MeshSnapshot;
use crate::resource::{Resource, ResourceType};
use crate::status::{Held, Protocol, rejected_resources};
use crate::version::Version;

/// A SotW stream.
#[derive(Debug)]
pub struct Sotw {
    core: StreamCore,
    types: BTreeMap<ResourceType, SotwType>,
    unknown: BTreeMap<String, UnknownType>,
    order: Order,
}

#[derive(Debug, Default)]
struct SotwType {
    subscription: Subscription,
    progress: Progress,
    sent: Option<Selected>,
    /// The resources of the last response the proxy acknowledged: what a NACK of a later
    /// response is compared with to tell what it rejected.
    acked: Option<Arc<[Arc<Resource>]>>,
}

#[derive(Debug, Default)]
struct UnknownType {
    names: Vec<String>,
    pending: bool,
    nonce: Option<String>,
}

impl Responder for Sotw {
    type Request = DiscoveryRequest;
    type Response = Frame;
    const PROTOCOL: Protocol = Protocol::Sotw;

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn type_url(request: &DiscoveryRequest) -> &str {
        &request.type_url
    }

    fn new(core: StreamCore) -> Self {
        Sotw {
            core,
            types: BTreeMap::new(),
            unknown: BTreeMap::new(),
            order: Order::default(),
        }
    }

    fn core_mut(&mut self) -> &mut StreamCore {
        &mut self.core
    }

    fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        let Some(ty) = ResourceType::from_type_url(&request.type_url) else {
            return self.on_unknown(request);
        };
        self.core.check_names(
            &request.type_url,
            &request.resource_names,
            request.resource_names.len(),
        )?;
        let state = self.types.entry(ty).or_default();
        let subscription = Subscription::sotw(&request.resource_names, &state.subscription);
        let changed = subscription != state.subscription;
        let reply = state
            .progress
            .reply(&request.response_nonce, request.error_detail.as_ref());
        match reply {
            Reply::Initial => {
                state.subscription = subscription;
                state.progress.answer();
                state.progress.awaiting_reply = false;
                if !request.version_info.is_empty() {
                    let version = request.version_info.clone();
                    self.core
                        .status
                        .update(ty.short_name(), |s| s.version_acked = Some(version));
                }
            }
            Reply::Stale => {
                self.core.stale(
                    ty,
                    &request.response_nonce,
                    state.progress.nonce.as_deref(),
                    request.error_detail.as_ref(),
                );
                if changed {
                    state.subscription = subscription;
                    state.progress.answer();
                }
            }
            Reply::Ack | Reply::Nack(_) => {
                let SotwType {
                    sent,
                    acked,
                    progress,
                    ..
                } = &mut *state;
                self.core.replied(ty, progress, &reply, |message| {
                    rejected_resources(message, changed_since(sent.as_ref(), acked.as_deref()))
                });
                if matches!(reply, Reply::Ack) {
                    *acked = sent.as_ref().map(|s| s.resources.clone());
                    // The proxy accepted the whole set: nothing it rejected is outstanding.
                    self.core
                        .status
                        .update(ty.short_name(), |s| s.accepted(None::<[&str; 0]>));
                }
                if changed {
                    state.subscription = subscription;
                    state.progress.answer();
                }
            }
        }
        self.core.subscribed(ty.short_name(), &state.subscription);
        if ty == ResourceType::Cluster && matches!(reply, Reply::Ack | Reply::Nack(_)) {
            let eds = self
                .types
                .get(&ResourceType::Endpoint)
                .map(|t| &t.subscription);
            self.order
                .clusters_replied(matches!(reply, Reply::Ack), eds);
        }
        self.release_removals();
        Ok(())
    }

    fn on_snapshot(&mut self, seen: Instant) {
        for state in self.types.values_mut() {
            state.progress.on_snapshot(seen);
        }
    }

    fn has_pending(&self) -> bool {
        self.types
            .iter()
            .any(|(ty, t)| t.progress.pending && !self.order.blocks(*ty))
            || self.unknown.values().any(|u| u.pending)
    }

    fn next_response(&mut self) -> Option<Frame> {
        loop {
            for ty in ResourceType::ALL {
                if let Some(response) = self.respond(ty) {
                    return Some(response);
                }
            }
            if !self.release_removals() {
                break;
            }
        }
        let (type_url, state) = self.unknown.iter_mut().find(|(_, u)| u.pending)?;
        state.pending = false;
        let nonce = next_nonce();
        state.nonce = Some(nonce.clone());
        Some(Frame::sotw(
            &Version::of_set([]).to_string(),
            type_url,
            &nonce,
            Default::default(),
        ))
    }

    fn waiting(&self) -> bool {
        self.types
            .iter()
            .any(|(ty, t)| t.progress.pending && self.order.blocks(*ty))
    }

    fn held(&self) -> Vec<Held> {
        self.types
            .iter()
            .map(|(ty, state)| Held {
                ty: *ty,
                version: state.progress.version.clone(),
                resources: state
                    .sent
                    .as_ref()
                    .map(|s| s.resources.to_vec())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

impl Sotw {
    /// The response of a type, when it is pending and has something new (or must answer),
    /// in make-before-break order ([`super::order`]).
    fn respond(&mut self, ty: ResourceType) -> Option<Frame> {
        let dependents_settled = self.dependents_settled();
        let state = self.types.get_mut(&ty)?;
        if !state.progress.pending || self.order.blocks(ty) {
            return None;
        }
        let snapshot = self.core.snapshot.clone()?;
        state.progress.pending = false;
        let mut selected = select(&snapshot, &self.core.proxy, ty, &state.subscription);
        if ty == ResourceType::Cluster {
            self.order.removals_held = false;
            if let Some(sent) = &state.sent {
                let removed: Vec<Arc<Resource>> = sent
                    .resources
                    .iter()
                    .filter(|r| !selected.contains(r.name()))
                    .cloned()
                    .collect();
                if !removed.is_empty() && !dependents_settled {
                    // Keep them until the listeners and routes that named them are replaced.
                    self.order.removals_held = true;
                    selected = keeping(selected, removed);
                }
            }
        }
        let unchanged = state
            .sent
            .as_ref()
            .is_some_and(|sent| sent.version == selected.version);
        if ty == ResourceType::Endpoint {
            // Sent now, or unchanged since it was sent.
            self.order.endpoints_evaluated(&state.subscription);
        }
        if unchanged && !state.progress.force {
            state.progress.changed_at = None;
            return None;
        }
        let built = if ty == ResourceType::Cluster {
            built_clusters(state.sent.as_ref(), &selected)
        } else {
            Vec::new()
        };
        let nonce = next_nonce();
        let version = selected.version.to_string();
        // A whole view's resources are encoded once and shared; a named selection's here.
        let resources = match selected.view.take() {
            Some(view) => view.sotw_resources().clone(),
            None => wire::sotw_resources(&selected.resources),
        };
        let response = Frame::sotw(&version, ty.type_url(), &nonce, resources);
        self.core.pushed(
            ty,
            &mut state.progress,
            version,
            nonce,
            selected.resources.len(),
            0,
        );
        self.core.sent_set(ty, selected.resources.clone());
        state.sent = Some(selected);
        self.clusters_sent(&snapshot, built);
        Some(response)
    }

    /// Whether LDS and RDS have settled, so that clusters they named may be removed.
    fn dependents_settled(&self) -> bool {
        [ResourceType::Listener, ResourceType::Route]
            .iter()
            .all(|ty| settled(self.types.get(ty).map(|t| &t.progress)))
    }

    /// Sends the removals CDS held back once LDS and RDS have settled; whether CDS became
    /// pending.
    fn release_removals(&mut self) -> bool {
        if !self.order.removals_held || !self.dependents_settled() {
            return false;
        }
        match self.types.get_mut(&ResourceType::Cluster) {
            Some(cds) if !cds.progress.pending => {
                cds.progress.pending = true;
                true
            }
            _ => false,
        }
    }

    /// A CDS response built (added or re-created) these clusters (`true`: re-created, or
    /// possibly so): each EDS cluster is owed its ClusterLoadAssignment, and a re-created
    /// one whose assignment the proxy holds gets it again, unchanged or not (Envoy warms a
    /// re-created cluster until an assignment arrives; its repeated EDS request names
    /// nothing new, so it would otherwise be taken for an ACK). Istio does the same
    /// (pilot/pkg/xds: `WatchedResource.AlwaysRespond` for EDS when CDS is pushed).
    fn clusters_sent(&mut self, snapshot: &MeshSnapshot, built: Vec<(Arc<str>, bool)>) {
        let Some(eds) = self.types.get_mut(&ResourceType::Endpoint) else {
            return;
        };
        let mut resend = false;
        for (name, recreated) in built {
            if snapshot
                .lookup(ResourceType::Endpoint, &self.core.proxy, &name)
                .is_none()
            {
                continue;
            }
            let held = eds.subscription.is_wildcard() || eds.subscription.names().contains(&*name);
            resend |= recreated && held;
            self.order.owed.insert(name.to_string());
        }
        if resend {
            eds.progress.answer();
        }
    }

    fn on_unknown(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        if !self.unknown.contains_key(&request.type_url) && self.unknown.len() >= MAX_UNKNOWN_TYPES
        {
            self.core.metrics.refused("unknown_types");
            return Err(Status::invalid_argument(format!(
                "too many type URLs Lanyard does not serve (more than {MAX_UNKNOWN_TYPES}); Lanyard serves {}",
                served_types()
            )));
        }
        self.core.check_names(
            &request.type_url,
            std::iter::once(&request.type_url).chain(&request.resource_names),
            request.resource_names.len(),
        )?;
        let state = self.unknown.entry(request.type_url.clone()).or_default();
        let first = state.nonce.is_none() && !state.pending;
        if !first && !request.response_nonce.is_empty() && state.names == request.resource_names {
            // The reply to our empty answer, or a stale request: nothing new to say.
            return Ok(());
        }
        state.names = request.resource_names;
        state.pending = true;
        self.core.unknown_type(&request.type_url);
        let names = state.names.len();
        self.core.status.update(&request.type_url, |s| {
            s.subscribed_count = names;
        });
        Ok(())
    }
}

/// `selected` and the clusters it would remove, kept.
fn keeping(selected: Selected, kept: Vec<Arc<Resource>>) -> Selected {
    let mut all = selected.resources.to_vec();
    all.extend(kept);
    all.sort_by(|a, b| a.name().cmp(b.name()));
    let version = Version::of_set(all.iter().map(|r| (r.name(), r.version())));
    Selected {
        resources: all.into(),
        version,
        missing: selected.missing,
        view: None,
    }
}

/// The clusters of `selected` that are new or changed since `sent` (with whether they were
/// there before); all of them, as possibly re-created, on the first response of a stream
/// (the proxy may hold other versions from an earlier stream).
fn built_clusters(sent: Option<&Selected>, selected: &Selected) -> Vec<(Arc<str>, bool)> {
    selected
        .resources
        .iter()
        .filter_map(|r| {
            let Some(sent) = sent else {
                return Some((r.shared_name().clone(), true));
            };
            match sent.resources.binary_search_by(|s| s.name().cmp(r.name())) {
                Ok(i) if sent.resources[i].version() == r.version() => None,
                Ok(_) => Some((r.shared_name().clone(), true)),
                Err(_) => Some((r.shared_name().clone(), false)),
            }
        })
        .collect()
}

/// The resources of `sent` that are new or changed since `acked`.
fn changed_since<'a>(
    sent: Option<&'a Selected>,
    acked: Option<&'a [Arc<Resource>]>,
) -> impl Iterator<Item = &'a Arc<Resource>> {
    sent.into_iter()
        .flat_map(|s| s.resources.iter())
        .filter(move |r| {
            acked.is_none_or(|acked| {
                acked
                    .binary_search_by(|a| a.name().cmp(r.name()))
                    .map_or(true, |i| acked[i].version() != r.version())
            })
        })
}

/// The type URLs Lanyard serves, for error messages.
pub fn served_types() -> String {
    ResourceType::ALL
        .iter()
        .map(|t| t.type_url())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Sotw {
    /// For tests: the subscription of a type.
    #[cfg(test)]
    fn subscription(&self, ty: ResourceType) -> Option<&Subscription> {
        self.types.get(&ty).map(|t| &t.subscription)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

    use super::*;
    use crate::cache::MeshSnapshot;
    use crate::fixtures::rich_model;
    use crate::{XdsOptions, translate};

    fn mk_sotw() -> (Sotw, crate::status::Registration) {
        crate::fixtures::mk_responder(Default::default())
    }

    fn request(ty: ResourceType, names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: ty.type_url().into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    const CART: &str = "outbound|80||cart.shop.svc.cluster.local";
    const CART_V2: &str = "outbound|80||cart-v2.shop.svc.cluster.local";

    /// Serves `model` as snapshot `generation`.
    fn publish(sotw: &mut Sotw, model: &lanyard_model::Model, generation: u64) {
        let snapshot = MeshSnapshot::build(
            generation,
            Instant::now(),
            translate(model, &XdsOptions::default()),
        )
        .unwrap();
        sotw.core.set_snapshot(Arc::new(snapshot));
        sotw.on_snapshot(Instant::now());
    }

    /// Receives the next response (of type `ty`) and ACKs it.
    fn recv_ack(sotw: &mut Sotw, ty: ResourceType, names: &[&str]) -> DiscoveryResponse {
        let response: DiscoveryResponse = sotw
            .next_response()
            .unwrap_or_else(|| panic!("no {ty} response"))
            .decode()
            .unwrap();
        assert_eq!(response.type_url, ty.type_url());
        let mut ack = request(ty, names, &response.nonce);
        ack.version_info = response.version_info.clone();
        sotw.on_request(ack).unwrap();
        response
    }

    fn resource_names(response: &DiscoveryResponse) -> Vec<String> {
        crate::testing::client::names(response)
    }

    #[test]
    fn a_recreated_cluster_gets_its_unchanged_assignment_again_after_the_clusters() {
        let (mut sotw, _r) = mk_sotw();
        sotw.on_request(request(ResourceType::Cluster, &[], ""))
            .unwrap();
        recv_ack(&mut sotw, ResourceType::Cluster, &[]);
        sotw.on_request(request(ResourceType::Endpoint, &[CART], ""))
            .unwrap();
        let endpoints = recv_ack(&mut sotw, ResourceType::Endpoint, &[CART]);
        assert!(sotw.next_response().is_none());

        // cart:80 becomes h2c: its cluster changes, its assignment does not.
        let mut model = rich_model();
        crate::fixtures::set_protocol(&mut model, "cart", lanyard_model::Protocol::Http2);
        publish(&mut sotw, &model, 2);
        let clusters = recv_ack(&mut sotw, ResourceType::Cluster, &[]);
        assert!(resource_names(&clusters).contains(&CART.to_string()));
        // Envoy re-creates the cluster and warms it until an assignment arrives.
        let again = recv_ack(&mut sotw, ResourceType::Endpoint, &[CART]);
        assert_eq!(resource_names(&again), [CART]);
        assert_eq!(again.version_info, endpoints.version_info);
        assert_ne!(again.nonce, endpoints.nonce);
        // ACKs are not answered.
        assert!(sotw.next_response().is_none());
    }

    #[test]
    fn a_removed_cluster_goes_after_the_listeners_that_named_it() {
        let (mut sotw, _r) = mk_sotw();
        sotw.on_request(request(ResourceType::Cluster, &[], ""))
            .unwrap();
        recv_ack(&mut sotw, ResourceType::Cluster, &[]);
        sotw.on_request(request(ResourceType::Listener, &[], ""))
            .unwrap();
        recv_ack(&mut sotw, ResourceType::Listener, &[]);
        assert!(sotw.next_response().is_none());

        let mut model = rich_model();
        model.services.retain(|k, _| k.name != "cart-v2");
        model.routing.clear();
        publish(&mut sotw, &model, 2);
        let listeners: DiscoveryResponse = sotw.next_response().unwrap().decode().unwrap();
        assert_eq!(listeners.type_url, ResourceType::Listener.type_url());
        // Until the proxy has answered the listeners, the cluster stays.
        assert!(sotw.next_response().is_none());
        let mut ack = request(ResourceType::Listener, &[], &listeners.nonce);
        ack.version_info = listeners.version_info.clone();
        sotw.on_request(ack).unwrap();
        assert!(sotw.has_pending());
        let clusters = recv_ack(&mut sotw, ResourceType::Cluster, &[]);
        assert!(!resource_names(&clusters).contains(&CART_V2.to_string()));
        assert!(resource_names(&clusters).contains(&CART.to_string()));
    }

    #[test]
    fn listeners_wait_until_a_new_cluster_has_its_endpoints() {
        let (mut sotw, _r) = mk_sotw();
        sotw.on_request(request(ResourceType::Cluster, &[], ""))
            .unwrap();
        recv_ack(&mut sotw, ResourceType::Cluster, &[]);
        sotw.on_request(request(ResourceType::Endpoint, &[CART], ""))
            .unwrap();
        let endpoints = recv_ack(&mut sotw, ResourceType::Endpoint, &[CART]);
        sotw.on_request(request(ResourceType::Listener, &[], ""))
            .unwrap();
        recv_ack(&mut sotw, ResourceType::Listener, &[]);

        let mut model = rich_model();
        let mut extra = crate::fixtures::mk_service(
            "shop",
            "extra",
            &["10.96.0.42"],
            &[(80, lanyard_model::Protocol::Http)],
        );
        extra.ports[0].endpoints = vec![crate::fixtures::mk_endpoint("10.1.0.42", 8080, None)];
        model.services.insert(extra.key.clone(), extra);
        publish(&mut sotw, &model, 2);
        let extra = "outbound|80||extra.shop.svc.cluster.local";
        let clusters: DiscoveryResponse = sotw.next_response().unwrap().decode().unwrap();
        assert!(resource_names(&clusters).contains(&extra.to_string()));
        // The new listener waits for the new cluster's endpoints.
        assert!(sotw.next_response().is_none());
        assert!(sotw.waiting() && !sotw.has_pending());
        // As Envoy does: it asks for the new cluster's assignment before it ACKs the clusters.
        let mut ask = request(ResourceType::Endpoint, &[CART, extra], &endpoints.nonce);
        ask.version_info = endpoints.version_info.clone();
        sotw.on_request(ask).unwrap();
        let endpoints = recv_ack(&mut sotw, ResourceType::Endpoint, &[CART, extra]);
        assert!(resource_names(&endpoints).contains(&extra.to_string()));
        let listeners: DiscoveryResponse = sotw.next_response().unwrap().decode().unwrap();
        assert_eq!(listeners.type_url, ResourceType::Listener.type_url());
        assert!(!sotw.waiting());
    }

    #[test]
    fn a_first_request_is_answered_and_an_ack_is_not() {
        let (mut sotw, _r) = mk_sotw();
        sotw.on_request(request(ResourceType::Cluster, &[], ""))
            .unwrap();
        let response: DiscoveryResponse = sotw.next_response().unwrap().decode().unwrap();
        assert!(!response.resources.is_empty());
        sotw.on_request(request(ResourceType::Cluster, &[], &response.nonce))
            .unwrap();
        assert!(sotw.next_response().is_none());
        assert!(
            sotw.subscription(ResourceType::Cluster)
                .unwrap()
                .is_wildcard()
        );
    }
}
