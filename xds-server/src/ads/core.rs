//! The part of a stream both protocols share: who it is, the snapshot it serves, the
//! per-type bookkeeping of nonces, ACKs and NACKs, and the loop that drives it.
//!
//! A stream runs as one task. It reads requests, takes new snapshots from a `watch`
//! (only ever the latest one), and computes a response only when its outbound queue (one
//! slot) has room: a slow or stuck client holds at most one response and one snapshot, and
//! when it catches up it gets the latest state, not every state in between.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc;
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::ProxyRef;
use crate::cache::MeshSnapshot;
use crate::limits::{CLIENT_TEXT, StreamLimits, clip, prefix};
use crate::metrics::Metrics;
use crate::node::ProxyIdentity;
use crate::resource::{Resource, ResourceType};
use crate::server::Shared;
use crate::status::{
    Applied, Held, Nack, NackedResource, Protocol, Running, StreamStatus, timestamp,
};

/// How many names of a subscription the status shows.
const SHOWN_NAMES: usize = 20;
/// How many distinct unknown type URLs a stream may ask for before it is refused.
pub const MAX_UNKNOWN_TYPES: usize = 16;
/// How many distinct warnings a stream remembers having logged.
pub const WARNED_KEYS: usize = 64;
/// How much of a NACK's message is searched for the names of the resources it rejected.
const SEARCHED_NACK_BYTES: usize = 64 << 10;
/// How much of a NACK's message the stream's status keeps.
const KEPT_NACK_BYTES: usize = 4 << 10;

static NONCES: AtomicU64 = AtomicU64::new(0);

/// A nonce no other response of this server has had.
pub fn next_nonce() -> String {
    NONCES
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(1)
        .to_string()
}

/// One protocol's handling of a stream.
pub trait Responder: Send + Sized + 'static {
    /// DiscoveryRequest or DeltaDiscoveryRequest.
    type Request: Send + 'static;
    /// The response, encoded for the wire ([`super::wire::Frame`]).
    type Response: Send + 'static;
    /// Which protocol this is.
    const PROTOCOL: Protocol;

    /// The node of a request.
    fn node(request: &Self::Request) -> Option<&Node>;
    /// The type URL of a request.
    fn type_url(request: &Self::Request) -> &str;
    /// A responder for a stream.
    fn new(core: StreamCore) -> Self;
    /// The shared part.
    fn core_mut(&mut self) -> &mut StreamCore;
    /// Handles a request; an error ends the stream with that status.
    fn on_request(&mut self, request: Self::Request) -> Result<(), Status>;
    /// Marks every subscribed type for evaluation against a new snapshot.
    fn on_snapshot(&mut self, seen: Instant);
    /// Whether a type awaits evaluation.
    fn has_pending(&self) -> bool;
    /// The next response in push order, if any type has one to send.
    fn next_response(&mut self) -> Option<Self::Response>;
    /// What the stream holds, for a config dump.
    fn held(&self) -> Vec<Held>;
    /// Whether a type has a change to send that waits on the proxy (make before break):
    /// the stream is not synced while it does.
    fn waiting(&self) -> bool {
        false
    }
}

/// Checks what every ADS request must carry, then hands the request to the protocol.
fn dispatch<R: Responder>(responder: &mut R, request: R::Request) -> Result<(), Status> {
    if R::type_url(&request).is_empty() {
        return Err(Status::invalid_argument(
            "type_url is required on an aggregated (ADS) stream",
        ));
    }
    responder.on_request(request)
}

/// What a request says about the last response of its type.
#[derive(Debug, PartialEq)]
pub enum Reply<'a> {
    /// No nonce: a first request (or the client starting the type over).
    Initial,
    /// The latest response was applied.
    Ack,
    /// The latest response was rejected, with this message.
    Nack(&'a str),
    /// A nonce that is not the latest: neither ACK nor NACK.
    Stale,
}

/// Bookkeeping of one type on one stream.
#[derive(Debug, Default)]
pub struct Progress {
    /// Evaluate at the next chance to send.
    pub pending: bool,
    /// Send even if nothing changed (a first request, a changed subscription).
    pub force: bool,
    /// When the change awaiting evaluation was first seen.
    pub changed_at: Option<Instant>,
    /// When the oldest change sent but not yet acknowledged was seen.
    pub unacked_change: Option<Instant>,
    /// Nonce of the latest response.
    pub nonce: Option<String>,
    /// Version of the latest response.
    pub version: Option<String>,
    /// The latest response has had no ACK or NACK yet (see [`super::order`]).
    pub awaiting_reply: bool,
}

impl Progress {
    /// Classifies a request by its nonce and error detail.
    pub fn reply<'a>(&self, nonce: &str, error: Option<&'a rpc::Status>) -> Reply<'a> {
        if nonce.is_empty() {
            Reply::Initial
        } else if self.nonce.as_deref() != Some(nonce) {
            Reply::Stale
        } else {
            match error {
                Some(error) => Reply::Nack(&error.message),
                None => Reply::Ack,
            }
        }
    }

    /// A new snapshot: evaluate, and time what goes out from `seen`.
    pub fn on_snapshot(&mut self, seen: Instant) {
        self.pending = true;
        self.changed_at.get_or_insert(seen);
    }

    /// The client asked for something new: answer even if nothing changed.
    pub fn answer(&mut self) {
        self.pending = true;
        self.force = true;
    }
}

/// Who a stream is and what it serves.
#[derive(Debug)]
pub struct StreamCore {
    /// The proxy (one copy, shared with its entry in the registry).
    pub identity: Arc<ProxyIdentity>,
    /// Its place in the registry.
    pub status: Arc<StreamStatus>,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// The snapshot served, once there is one.
    pub snapshot: Option<Arc<MeshSnapshot>>,
    /// The proxy's view of `snapshot`.
    pub proxy: ProxyRef,
    /// What the proxy runs, per type, as its ACKs and NACKs tell.
    applied: BTreeMap<ResourceType, Applied>,
    /// What the stream may ask for and hold.
    pub limits: StreamLimits,
    /// Warnings already logged in full, by what they are about (see [`StreamCore::once`]).
    warned: BTreeMap<(&'static str, String), u64>,
}

impl StreamCore {
    /// A stream of this proxy, before any snapshot.
    pub fn new(
        identity: impl Into<Arc<ProxyIdentity>>,
        status: Arc<StreamStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let identity = identity.into();
        let proxy = ProxyRef {
            namespace: identity.namespace.clone(),
            workload: None,
            kind: identity.kind,
        };
        StreamCore {
            identity,
            status,
            metrics,
            snapshot: None,
            proxy,
            applied: BTreeMap::new(),
            limits: StreamLimits::default(),
            warned: BTreeMap::new(),
        }
    }

    /// Checks the names of a request against the stream's limits: each at most
    /// `max_name_length` bytes, and at most `max_subscribed_names` of them (`count`: how
    /// many the type's subscription holds with this request's).
    pub fn check_names<'a>(
        &self,
        type_url: &str,
        names: impl IntoIterator<Item = &'a String>,
        count: usize,
    ) -> Result<(), Status> {
        let limits = &self.limits;
        if count > limits.max_subscribed_names {
            self.metrics.refused("subscribed_names");
            return Err(Status::resource_exhausted(format!(
                "{count} names subscribed to for {}: more than this server allows on one stream per type ({}, --max-subscribed-names)",
                clip(type_url, CLIENT_TEXT),
                limits.max_subscribed_names
            )));
        }
        if let Some(name) = names.into_iter().find(|n| n.len() > limits.max_name_length) {
            self.metrics.refused("name_length");
            return Err(Status::resource_exhausted(format!(
                "a resource name of {} bytes for {}: longer than this server allows ({} bytes, --max-name-length): {}",
                name.len(),
                clip(type_url, CLIENT_TEXT),
                limits.max_name_length,
                clip(name, CLIENT_TEXT)
            )));
        }
        Ok(())
    }

    /// `None` when a warning of kind `kind` about `what` is the first on this stream, else
    /// how many times it came: the same NACK re-sent in a loop is logged once in full, then
    /// at debug level with its count. `what` is chosen by the server (a type and the version
    /// it sent), never the client's text, so that a client cannot make each warning new by
    /// changing its message. At most [`WARNED_KEYS`] are remembered; then they are forgotten.
    pub fn once(&mut self, kind: &'static str, what: std::fmt::Arguments<'_>) -> Option<u64> {
        let mut what = what.to_string();
        if what.len() > CLIENT_TEXT {
            what = clip(&what, CLIENT_TEXT).to_string();
        }
        let key = (kind, what);
        if let Some(count) = self.warned.get_mut(&key) {
            *count += 1;
            return Some(*count);
        }
        if self.warned.len() >= WARNED_KEYS {
            self.warned.clear();
        }
        self.warned.insert(key, 1);
        None
    }

    /// Serves a new snapshot.
    pub fn set_snapshot(&mut self, snapshot: Arc<MeshSnapshot>) {
        self.proxy = snapshot.proxy_ref(&self.identity);
        self.status.set_generation(snapshot.generation());
        self.snapshot = Some(snapshot);
    }

    /// Records a response going out.
    pub fn pushed(
        &self,
        ty: ResourceType,
        progress: &mut Progress,
        version: String,
        nonce: String,
        resources: usize,
        removed: usize,
    ) {
        let metrics = self.metrics.of(ty);
        metrics.pushes.fetch_add(1, Ordering::Relaxed);
        if let Some(seen) = progress.changed_at.take() {
            metrics.push_latency.observe(seen.elapsed());
            progress.unacked_change.get_or_insert(seen);
        }
        progress.force = false;
        progress.awaiting_reply = true;
        debug!(r#type = %ty, %version, %nonce, resources, removed, "push");
        self.status.update(ty.short_name(), |s| {
            s.version_sent = Some(version.clone());
            s.nonce_sent = Some(nonce.clone());
            s.last_push = Some(timestamp(SystemTime::now()));
            s.resources_sent = resources;
            s.pushes += 1;
        });
        progress.version = Some(version);
        progress.nonce = Some(nonce);
    }

    /// Records the resources of a state-of-the-world response (the whole set, sorted).
    pub fn sent_set(&mut self, ty: ResourceType, set: Arc<[Arc<Resource>]>) {
        self.applied.entry(ty).or_default().sent_set(set);
    }

    /// Records a resource the proxy already runs (an incremental client's
    /// `initial_resource_versions` that match).
    pub fn holds(&mut self, ty: ResourceType, resource: &Arc<Resource>) {
        self.applied.entry(ty).or_default().holds(resource);
    }

    /// Records the changes an incremental response carries.
    pub fn sent_changes(
        &mut self,
        ty: ResourceType,
        updates: &[Arc<Resource>],
        removed: &[String],
    ) {
        self.applied
            .entry(ty)
            .or_default()
            .sent_changes(updates, removed);
    }

    /// What the proxy runs of what it holds (`held`, per type): for a config dump.
    pub fn running(&self, held: Vec<Held>) -> Vec<Running> {
        held.iter()
            .map(|h| {
                self.applied
                    .get(&h.ty)
                    .map(|a| a.running(h))
                    .unwrap_or_else(|| Applied::default().running(h))
            })
            .collect()
    }

    /// Records an ACK or NACK of the latest response (`reply` is neither Initial nor Stale).
    /// `rejected` gives, for a NACK, the resources the proxy rejected (see
    /// [`crate::status::rejected_resources`]).
    pub fn replied(
        &mut self,
        ty: ResourceType,
        progress: &mut Progress,
        reply: &Reply<'_>,
        rejected: impl FnOnce(&str) -> Vec<NackedResource>,
    ) {
        let version = progress.version.clone().unwrap_or_default();
        let nonce = progress.nonce.clone().unwrap_or_default();
        if matches!(reply, Reply::Ack | Reply::Nack(_)) {
            progress.awaiting_reply = false;
        }
        match reply {
            Reply::Ack => {
                if let Some(seen) = progress.unacked_change.take() {
                    self.metrics.of(ty).convergence.observe(seen.elapsed());
                }
                debug!(r#type = %ty, %version, %nonce, "ack");
                self.applied
                    .entry(ty)
                    .or_default()
                    .acked(Some(version.clone()));
                self.status
                    .update(ty.short_name(), |s| s.version_acked = Some(version));
            }
            Reply::Nack(message) => {
                progress.unacked_change = None;
                self.metrics.of(ty).nacks.fetch_add(1, Ordering::Relaxed);
                // Resource names are looked for in the first SEARCHED_NACK_BYTES only: the
                // search is linear in the message times the resources.
                let resources = rejected(prefix(message, SEARCHED_NACK_BYTES));
                let names: Vec<&str> = resources.iter().map(|r| r.name.as_str()).collect();
                let error = clip(message, CLIENT_TEXT);
                match self.once("nack", format_args!("{ty} {version}")) {
                    None => {
                        warn!(r#type = %ty, %version, %nonce, %error, resources = ?names, "NACK: the proxy rejected the config and keeps its previous one; not re-sending this version")
                    }
                    Some(times) => {
                        debug!(r#type = %ty, %version, %nonce, %error, times, "the same NACK again")
                    }
                }
                let nack = Nack {
                    version,
                    nonce,
                    message: clip(message, KEPT_NACK_BYTES).to_string(),
                    at: timestamp(SystemTime::now()),
                    resources,
                };
                self.applied.entry(ty).or_default().nacked(
                    &nack.resources,
                    &nack.message,
                    &nack.at,
                );
                self.status.update(ty.short_name(), |s| {
                    s.outstanding_nack = Some(nack.clone());
                    s.last_nack = Some(nack);
                });
            }
            Reply::Initial | Reply::Stale => {}
        }
    }

    /// Counts and logs a reply to a superseded response (its nonce is not the latest). The
    /// xDS protocol (Envoy v1.36 api/xds_protocol.rst, "ACK and NACK semantics summary" and
    /// "Resource updates") uses the nonce to tell which response a reply is about, so this
    /// is not an ACK or NACK of what the proxy now holds and changes no state; but a NACK
    /// still says the proxy refused an earlier version, so it is a warning with the proxy's
    /// message rather than nothing.
    pub fn stale(
        &mut self,
        ty: ResourceType,
        nonce: &str,
        latest: Option<&str>,
        error: Option<&rpc::Status>,
    ) {
        let metrics = self.metrics.of(ty);
        let latest = latest.unwrap_or("");
        match error {
            Some(error) => {
                metrics.stale_nacks.fetch_add(1, Ordering::Relaxed);
                let nonce = clip(nonce, CLIENT_TEXT);
                let error = clip(&error.message, CLIENT_TEXT);
                match self.once("stale_nack", format_args!("{ty} {latest}")) {
                    None => warn!(
                        r#type = %ty,
                        %nonce,
                        latest,
                        %error,
                        "NACK of a superseded response (stale nonce): the proxy refused an earlier version; the latest is not affected"
                    ),
                    Some(times) => {
                        debug!(r#type = %ty, %nonce, %error, times, "the same stale NACK again")
                    }
                }
                self.status.update(ty.short_name(), |s| s.stale_nacks += 1);
            }
            None => {
                metrics.stale_acks.fetch_add(1, Ordering::Relaxed);
                debug!(r#type = %ty, nonce = %clip(nonce, CLIENT_TEXT), latest, "ACK of a superseded response (stale nonce)");
            }
        }
    }

    /// Shows a subscription in the status.
    pub fn subscribed(&self, ty: &str, subscription: &super::subscription::Subscription) {
        let (shown, count) = subscription.summary(SHOWN_NAMES);
        self.status.update(ty, |s| {
            s.subscribed = shown;
            s.subscribed_count = count;
        });
    }

    /// Counts and logs a request for a type Lanyard does not serve (logged once per type
    /// and stream).
    pub fn unknown_type(&mut self, type_url: &str) {
        self.metrics.unknown_types.fetch_add(1, Ordering::Relaxed);
        let ty = clip(type_url, CLIENT_TEXT);
        match self.once("unknown_type", format_args!("{ty}")) {
            None => tracing::error!(
                r#type = %ty,
                "request for a type Lanyard does not serve: answering with no resources"
            ),
            Some(times) => {
                debug!(r#type = %ty, times, "another request for a type Lanyard does not serve")
            }
        }
    }
}

/// The status that ends a stream whose requests could not be read, logged: a request over
/// the size limit is RESOURCE_EXHAUSTED and one that does not parse is INTERNAL, as gRPC's
/// status code table has them ("Sent or received message was larger than configured limit",
/// "Error parsing request proto": grpc/grpc doc/statuscodes.md); tonic reports the first as
/// OUT_OF_RANGE. A client that went away (CANCELLED) is not a warning.
fn failed(status: Status, when: &str) -> Status {
    let status = if status.code() == tonic::Code::OutOfRange {
        Status::resource_exhausted(format!("request over the size limit: {}", status.message()))
    } else {
        status
    };
    if status.code() == tonic::Code::Cancelled {
        debug!(%status, "the client's stream ended {when}");
    } else {
        warn!(code = ?status.code(), message = status.message(), "ending the stream: the client's stream failed {when}");
    }
    status
}

/// Runs one stream: its first request names the proxy; then requests, snapshots and room
/// in the outbound queue drive the responder until the client leaves or the server shuts
/// down.
pub async fn drive<R: Responder>(
    shared: Arc<Shared>,
    mut requests: Streaming<R::Request>,
    tx: mpsc::Sender<Result<R::Response, Status>>,
) {
    let wait = shared.limits.stream.first_request_timeout;
    let first = match tokio::time::timeout(wait, requests.next()).await {
        Err(_) => {
            shared.metrics.refused("first_request_timeout");
            debug!("ending a stream that sent no request");
            let _ = tx
                .send(Err(Status::deadline_exceeded(format!(
                    "no request within {} ms of opening the stream (--stream-first-request-timeout)",
                    wait.as_millis()
                ))))
                .await;
            return;
        }
        Ok(first) => first,
    };
    let first = match first {
        Some(Ok(first)) => first,
        Some(Err(status)) => {
            let _ = tx
                .send(Err(failed(status, "before its first request")))
                .await;
            return;
        }
        None => return,
    };
    let identity = match ProxyIdentity::from_node_within(R::node(&first), &shared.limits.node) {
        Ok(identity) => Arc::new(identity),
        Err(e) => {
            if let Some(limit) = e.limit() {
                shared.metrics.refused(limit);
            }
            warn!(error = %e, "refusing an ADS stream");
            let _ = tx.send(Err(e.status())).await;
            return;
        }
    };
    let span =
        info_span!("ads", node = %clip(&identity.node_id, CLIENT_TEXT), protocol = ?R::PROTOCOL);
    run::<R>(shared, identity, first, requests, tx)
        .instrument(span)
        .await;
}

async fn run<R: Responder>(
    shared: Arc<Shared>,
    identity: Arc<ProxyIdentity>,
    first: R::Request,
    mut requests: Streaming<R::Request>,
    tx: mpsc::Sender<Result<R::Response, Status>>,
) {
    let (registration, mut dumps) =
        shared
            .registry
            .register(identity.clone(), R::PROTOCOL, shared.metrics.clone());
    info!(
        namespace = %identity.namespace,
        pod = %clip(identity.pod.as_deref().unwrap_or(""), CLIENT_TEXT),
        "connected"
    );
    let mut core = StreamCore::new(
        identity,
        registration.status().clone(),
        shared.metrics.clone(),
    );
    core.limits = shared.limits.stream.clone();
    let mut responder = R::new(core);
    let mut snapshots = shared.snapshots.clone();
    let current = snapshots.borrow_and_update().clone();
    if let Some(snapshot) = current {
        responder.core_mut().set_snapshot(snapshot);
    }
    if let Err(status) = dispatch(&mut responder, first) {
        warn!(%status, "ending the stream");
        let _ = tx.send(Err(status)).await;
        return;
    }
    let mut shutdown = shared.shutdown.clone();
    if *shutdown.borrow_and_update() {
        end_for_shutdown(&tx, shared.shutdown_grace).await;
        return;
    }
    let mut synced = 0;
    loop {
        if !responder.has_pending() && !responder.waiting() {
            let core = responder.core_mut();
            if let Some(generation) = core.snapshot.as_ref().map(|s| s.generation())
                && generation != synced
            {
                synced = generation;
                core.status.set_synced(generation);
            }
        }
        let ready = responder.has_pending() && responder.core_mut().snapshot.is_some();
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                end_for_shutdown(&tx, shared.shutdown_grace).await;
                break;
            }
            request = requests.next() => match request {
                Some(Ok(request)) => {
                    if let Err(status) = dispatch(&mut responder, request) {
                        warn!(%status, "ending the stream");
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
                Some(Err(status)) => {
                    let _ = tx.send(Err(failed(status, "while reading a request"))).await;
                    break;
                }
                None => break,
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    // The publisher stops only on shutdown; it may be seen gone first.
                    end_for_shutdown(&tx, shared.shutdown_grace).await;
                    break;
                }
                let latest = snapshots.borrow_and_update().clone();
                if let Some(snapshot) = latest {
                    let seen = snapshot.seen();
                    responder.core_mut().set_snapshot(snapshot);
                    responder.on_snapshot(seen);
                }
            }
            Some(reply) = dumps.recv() => {
                let held = responder.held();
                let _ = reply.send(responder.core_mut().running(held));
            }
            permit = tx.reserve(), if ready => match permit {
                Ok(permit) => {
                    if let Some(response) = responder.next_response() {
                        permit.send(Ok(response));
                    }
                }
                Err(_) => break,
            },
        }
    }
    info!("disconnected");
}

/// Ends a stream on shutdown with UNAVAILABLE, after the response already queued. Envoy's
/// `GrpcStream::onRemoteClose` (envoyproxy/envoy main at 032e125,
/// source/extensions/config_subscription/grpc/grpc_stream.h) opens a new stream after a
/// jittered backoff whatever the status, and logs UNAVAILABLE quietly as retriable; gRPC's
/// xDS client (grpc-go at c858ed2, xds/internal/clients/xdsclient/ads_stream.go, `runner`) does
/// the same, without backoff when the stream had delivered a response. A client that
/// does not read holds the queue; it waits at most `grace`, the server closes the
/// connection after that anyway.
async fn end_for_shutdown<T>(tx: &mpsc::Sender<Result<T, Status>>, grace: std::time::Duration) {
    let ended = tx.send(Err(Status::unavailable(crate::server::SHUTTING_DOWN)));
    let _ = tokio::time::timeout(grace, ended).await;
}
