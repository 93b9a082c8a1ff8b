//! What each connected proxy has been sent and has acknowledged, per type: the data of
//! `/debug/syncz`, and the way to ask a stream for what it holds (`/debug/config_dump`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::node::ProxyIdentity;
use crate::resource::{Resource, ResourceType};

/// Which ADS variant a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// State of the world (`StreamAggregatedResources`).
    Sotw,
    /// Incremental (`DeltaAggregatedResources`).
    Delta,
}

/// A rejected response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Nack {
    /// The version the proxy rejected.
    pub version: String,
    /// The nonce of the rejected response.
    pub nonce: String,
    /// The proxy's `error_detail.message`.
    pub message: String,
    /// When it came.
    pub at: String,
    /// The resources it rejected, with their versions, sorted by name: those of the response
    /// that the message names, else every resource the response changed (at most
    /// [`MAX_NACKED_RESOURCES`]).
    pub resources: Vec<NackedResource>,
}

/// One resource of a rejected response.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct NackedResource {
    pub name: String,
    pub version: String,
}

/// How many resources a [`Nack`] names at most.
pub const MAX_NACKED_RESOURCES: usize = 50;

/// Which of `candidates` (resources a rejected response carried or changed) the proxy
/// rejected: those whose name its message contains (Envoy and gRPC name the resource they
/// refuse when they can), else all of them; sorted, at most [`MAX_NACKED_RESOURCES`].
pub fn rejected_resources<'a>(
    message: &str,
    candidates: impl IntoIterator<Item = &'a Arc<Resource>>,
) -> Vec<NackedResource> {
    let all: Vec<&Arc<Resource>> = candidates.into_iter().collect();
    let named: Vec<&&Arc<Resource>> = all
        .iter()
        .filter(|r| !r.name().is_empty() && message.contains(r.name()))
        .collect();
    let chosen: Vec<&Arc<Resource>> = if named.is_empty() {
        all
    } else {
        named.into_iter().copied().collect()
    };
    let mut out: Vec<NackedResource> = chosen
        .into_iter()
        .map(|r| NackedResource {
            name: r.name().to_string(),
            version: r.version().to_string(),
        })
        .collect();
    out.sort();
    out.dedup();
    out.truncate(MAX_NACKED_RESOURCES);
    out
}

/// The sync state of one type on one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeSync {
    /// `*` for a wildcard subscription, then the names asked for (at most 20 shown).
    pub subscribed: Vec<String>,
    /// How many names are subscribed.
    pub subscribed_count: usize,
    /// Version of the last response (SotW: of the set; delta: of the set the proxy holds).
    pub version_sent: Option<String>,
    /// Nonce of the last response.
    pub nonce_sent: Option<String>,
    /// The last version the proxy acknowledged.
    pub version_acked: Option<String>,
    /// The last NACK.
    pub last_nack: Option<Nack>,
    /// The last NACK, less the resources the proxy has accepted since: `None` once a later
    /// ACK covered all of them (state of the world: any later ACK, since it accepts the
    /// whole set; delta: an ACK of a response carrying the resource). What route status
    /// reports as rejected.
    pub outstanding_nack: Option<Nack>,
    /// NACKs of superseded responses (stale nonces): counted and logged, not recorded as
    /// [`Self::last_nack`].
    pub stale_nacks: u64,
    /// When the last response went out (RFC 3339).
    pub last_push: Option<String>,
    /// Resources in the last response.
    pub resources_sent: usize,
    /// Responses sent.
    pub pushes: u64,
}

impl TypeSync {
    /// Records that the proxy accepted the resources `names`, or (`None`) everything it was
    /// sent of this type: they are no longer outstanding.
    pub fn accepted<'a>(&mut self, names: Option<impl IntoIterator<Item = &'a str>>) {
        let Some(names) = names else {
            self.outstanding_nack = None;
            return;
        };
        let Some(nack) = &mut self.outstanding_nack else {
            return;
        };
        let accepted: std::collections::BTreeSet<&str> = names.into_iter().collect();
        nack.resources
            .retain(|r| !accepted.contains(r.name.as_str()));
        if nack.resources.is_empty() {
            self.outstanding_nack = None;
        }
    }
}

/// What a stream holds of one type, for a config dump: resources sorted by name.
#[derive(Clone, Debug)]
pub struct Held {
    /// The type.
    pub ty: ResourceType,
    /// The version of the set, as last sent.
    pub version: Option<String>,
    /// The resources the proxy was last sent and has not been told to drop.
    pub resources: Vec<Arc<Resource>>,
}

/// A request to a stream for what its proxy runs.
pub type DumpRequest = oneshot::Sender<Vec<Running>>;

/// What a proxy runs of one type, as its ACKs and NACKs tell, for a config dump.
#[derive(Clone, Debug)]
pub struct Running {
    /// The type.
    pub ty: ResourceType,
    /// The version of the last response the proxy acknowledged.
    pub version: Option<String>,
    /// The resources the proxy accepted and still holds, sorted by name.
    pub active: Vec<Arc<Resource>>,
    /// The resources it rejected (and runs the active version of, if any), sorted by name.
    pub rejected: Vec<Rejected>,
}

/// A resource a proxy rejected.
#[derive(Clone, Debug)]
pub struct Rejected {
    /// The rejected resource, as sent.
    pub resource: Arc<Resource>,
    /// The proxy's `error_detail.message`.
    pub details: String,
    /// When the NACK came (RFC 3339).
    pub at: String,
}

/// What a proxy runs of one type: the resources of the responses it acknowledged, less
/// those it rejected, which it keeps at their previous version. Envoy applies the valid
/// resources of a response it NACKs and keeps the previous version of those it rejects
/// (Envoy v1.36 source/common/upstream/cds_api_helper.cc `CdsApiHelper::onConfigUpdate`,
/// source/common/listener_manager/lds_api.cc `LdsApiImpl::onConfigUpdate`: each resource
/// is added on its own and the errors are collected into the NACK's message); its config
/// dump shows the version it runs as active and the rejected one in `error_state`.
#[derive(Debug, Default)]
pub struct Applied {
    running: BTreeMap<Arc<str>, Arc<Resource>>,
    rejected: BTreeMap<Arc<str>, Rejected>,
    version: Option<String>,
    /// Sent since the last ACK or NACK of the latest response: a whole set (state of the
    /// world), then changes (`None`: removed).
    sent_set: Option<Arc<[Arc<Resource>]>>,
    sent_changes: BTreeMap<Arc<str>, Option<Arc<Resource>>>,
}

impl Applied {
    /// A state-of-the-world response: the whole set.
    pub fn sent_set(&mut self, set: Arc<[Arc<Resource>]>) {
        self.sent_set = Some(set);
        self.sent_changes.clear();
    }

    /// An incremental response: updates and removals.
    pub fn sent_changes(&mut self, updates: &[Arc<Resource>], removed: &[String]) {
        for resource in updates {
            self.sent_changes
                .insert(resource.shared_name().clone(), Some(resource.clone()));
        }
        for name in removed {
            self.sent_changes.insert(Arc::from(name.as_str()), None);
        }
    }

    /// A resource the proxy runs without having been sent it on this stream.
    pub fn holds(&mut self, resource: &Arc<Resource>) {
        self.running
            .insert(resource.shared_name().clone(), resource.clone());
    }

    /// The proxy acknowledged the latest response, of `version`.
    pub fn acked(&mut self, version: Option<String>) {
        self.apply(&BTreeSet::new(), "", "");
        self.version = version;
    }

    /// The proxy rejected the latest response: the resources `rejected` (by name) with
    /// `details`; the rest of what was sent is applied.
    pub fn nacked(&mut self, rejected: &[NackedResource], details: &str, at: &str) {
        let names: BTreeSet<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
        self.apply(&names, details, at);
    }

    fn apply(&mut self, rejected: &BTreeSet<&str>, details: &str, at: &str) {
        let reject = |rejected_map: &mut BTreeMap<Arc<str>, Rejected>, r: &Arc<Resource>| {
            rejected_map.insert(
                r.shared_name().clone(),
                Rejected {
                    resource: r.clone(),
                    details: details.to_string(),
                    at: at.to_string(),
                },
            );
        };
        if let Some(set) = self.sent_set.take() {
            let mut running = BTreeMap::new();
            for resource in set.iter() {
                if rejected.contains(resource.name()) {
                    reject(&mut self.rejected, resource);
                    if let Some(kept) = self.running.get(resource.name()) {
                        running.insert(kept.shared_name().clone(), kept.clone());
                    }
                } else {
                    self.rejected.remove(resource.name());
                    running.insert(resource.shared_name().clone(), resource.clone());
                }
            }
            self.rejected
                .retain(|name, _| running.contains_key(name) || set_has(&set, name));
            self.running = running;
        }
        for (name, change) in std::mem::take(&mut self.sent_changes) {
            match change {
                Some(resource) if rejected.contains(resource.name()) => {
                    reject(&mut self.rejected, &resource);
                }
                Some(resource) => {
                    self.rejected.remove(&name);
                    self.running.insert(name, resource);
                }
                None => {
                    self.rejected.remove(&name);
                    self.running.remove(&name);
                }
            }
        }
    }

    /// What the proxy runs, of the resources it still holds: `held` is what it was sent and
    /// not told to drop (an incremental client drops what it unsubscribes from itself).
    pub fn running(&self, held: &Held) -> Running {
        let names: BTreeSet<&str> = held.resources.iter().map(|r| r.name()).collect();
        Running {
            ty: held.ty,
            version: self.version.clone(),
            active: self
                .running
                .iter()
                .filter(|(name, _)| names.contains(name.as_ref()))
                .map(|(_, r)| r.clone())
                .collect(),
            rejected: self
                .rejected
                .iter()
                .filter(|(name, _)| {
                    names.contains(name.as_ref()) || self.running.contains_key(name.as_ref())
                })
                .map(|(_, r)| r.clone())
                .collect(),
        }
    }
}

fn set_has(set: &[Arc<Resource>], name: &str) -> bool {
    set.binary_search_by(|r| r.name().cmp(name)).is_ok()
}

/// One connected stream.
#[derive(Debug)]
pub struct StreamStatus {
    /// Server-wide stream number.
    pub id: u64,
    /// Who is connected (shared with the stream).
    pub identity: Arc<ProxyIdentity>,
    /// Which protocol.
    pub protocol: Protocol,
    /// When it connected (RFC 3339).
    pub connected_at: String,
    inner: Mutex<StatusInner>,
    dump: mpsc::Sender<DumpRequest>,
}

#[derive(Debug, Default)]
struct StatusInner {
    generation: u64,
    synced: u64,
    types: BTreeMap<String, TypeSync>,
}

impl StreamStatus {
    /// Updates the sync state of a type (`CDS`..., or an unknown type URL).
    pub fn update(&self, ty: &str, f: impl FnOnce(&mut TypeSync)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(inner.types.entry(ty.to_string()).or_default());
    }

    /// Records which snapshot the stream serves.
    pub fn set_generation(&self, generation: u64) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation = generation;
    }

    /// Records that every response the stream owes for snapshot `generation` has been
    /// queued.
    pub fn set_synced(&self, generation: u64) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).synced = generation;
    }

    /// The outstanding NACK of every type that has one (see [`TypeSync::outstanding_nack`]),
    /// by type (`CDS`...).
    pub fn outstanding_nacks(&self) -> Vec<(String, Nack)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .types
            .iter()
            .filter_map(|(ty, sync)| Some((ty.clone(), sync.outstanding_nack.clone()?)))
            .collect()
    }

    /// The last snapshot whose responses the stream has all queued (0: none).
    pub fn synced_generation(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).synced
    }

    /// The sync state of one type (`CDS`..., or an unknown type URL).
    pub fn type_sync(&self, ty: &str) -> Option<TypeSync> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .types
            .get(ty)
            .cloned()
    }

    /// The sync state of every type.
    pub fn types(&self) -> BTreeMap<String, TypeSync> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .types
            .clone()
    }

    /// The generation of the snapshot the stream serves.
    pub fn generation(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    /// Asks the stream for what its proxy runs; `None` when it has ended.
    pub async fn running(&self) -> Option<Vec<Running>> {
        let (tx, rx) = oneshot::channel();
        self.dump.send(tx).await.ok()?;
        rx.await.ok()
    }
}

/// Every connected stream.
#[derive(Debug, Default)]
pub struct Registry {
    streams: Mutex<BTreeMap<u64, Arc<StreamStatus>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// Registers a stream; it stays listed until the returned registration is dropped.
    /// The receiver gets the dump requests the stream must answer.
    pub fn register(
        self: &Arc<Self>,
        identity: impl Into<Arc<ProxyIdentity>>,
        protocol: Protocol,
        metrics: Arc<Metrics>,
    ) -> (Registration, mpsc::Receiver<DumpRequest>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (dump, requests) = mpsc::channel(4);
        let status = Arc::new(StreamStatus {
            id,
            identity: identity.into(),
            protocol,
            connected_at: timestamp(SystemTime::now()),
            inner: Mutex::default(),
            dump,
        });
        self.lock().insert(id, status.clone());
        metrics.connected.fetch_add(1, Ordering::Relaxed);
        let registration = Registration {
            registry: self.clone(),
            status,
            metrics,
        };
        (registration, requests)
    }

    /// Every connected stream, by id.
    pub fn streams(&self) -> Vec<Arc<StreamStatus>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<StreamStatus>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stream's place in the registry, removed on drop.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    status: Arc<StreamStatus>,
    metrics: Arc<Metrics>,
}

impl Registration {
    /// The stream's status.
    pub fn status(&self) -> &Arc<StreamStatus> {
        &self.status
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.status.id);
        self.metrics.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// RFC 3339 in UTC with milliseconds, as protobuf's JSON writes a Timestamp.
pub fn timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil: (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_nack_names_what_its_message_names_else_everything_it_changed() {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        let resource = |name: &str| {
            let cluster = Cluster {
                name: name.to_string(),
                ..Default::default()
            };
            Arc::new(Resource::encode(name, &cluster).unwrap())
        };
        let (a, b) = (resource("outbound|80||a"), resource("outbound|80||b"));
        let names = |r: Vec<NackedResource>| r.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(rejected_resources("cluster outbound|80||b: bad", [&a, &b])),
            ["outbound|80||b"]
        );
        assert_eq!(
            names(rejected_resources("bad", [&b, &a])),
            ["outbound|80||a", "outbound|80||b"]
        );
        let many: Vec<Arc<Resource>> = (0..80).map(|i| resource(&format!("c{i:02}"))).collect();
        assert_eq!(rejected_resources("bad", &many).len(), MAX_NACKED_RESOURCES);
    }

    #[test]
    fn an_outstanding_nack_loses_what_is_accepted_and_goes_when_nothing_is_left() {
        let nack = Nack {
            version: "v2".into(),
            nonce: "n".into(),
            message: "bad".into(),
            at: "T".into(),
            resources: ["a", "b"]
                .map(|name| NackedResource {
                    name: name.into(),
                    version: "x".into(),
                })
                .to_vec(),
        };
        let mut sync = TypeSync {
            last_nack: Some(nack.clone()),
            outstanding_nack: Some(nack.clone()),
            ..Default::default()
        };
        sync.accepted(Some(["c"]));
        assert_eq!(sync.outstanding_nack.as_ref(), Some(&nack));
        sync.accepted(Some(["a"]));
        let left = sync.outstanding_nack.as_ref().unwrap();
        assert_eq!(left.resources.len(), 1);
        assert_eq!(left.resources[0].name, "b");
        sync.accepted(Some(["b"]));
        assert_eq!(sync.outstanding_nack, None);
        assert_eq!(sync.last_nack, Some(nack.clone()), "the history stays");

        sync.outstanding_nack = Some(nack);
        sync.accepted(None::<[&str; 0]>);
        assert_eq!(sync.outstanding_nack, None, "a whole-set ACK clears it");
    }

    fn cluster(name: &str, variant: &str) -> Arc<Resource> {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        let cluster = Cluster {
            name: name.to_string(),
            alt_stat_name: variant.to_string(),
            ..Default::default()
        };
        Arc::new(Resource::encode(name, &cluster).unwrap())
    }

    fn rejected(names: &[&str]) -> Vec<NackedResource> {
        names
            .iter()
            .map(|n| NackedResource {
                name: n.to_string(),
                version: String::new(),
            })
            .collect()
    }

    fn shown(applied: &Applied, sent: &[&Arc<Resource>]) -> (Vec<String>, Vec<String>) {
        let held = Held {
            ty: ResourceType::Cluster,
            version: None,
            resources: sent.iter().map(|r| (*r).clone()).collect(),
        };
        let running = applied.running(&held);
        let id = |r: &Arc<Resource>| format!("{}={}", r.name(), r.body_variant());
        (
            running.active.iter().map(id).collect(),
            running.rejected.iter().map(|r| id(&r.resource)).collect(),
        )
    }

    trait Variant {
        fn body_variant(&self) -> String;
    }

    impl Variant for Arc<Resource> {
        fn body_variant(&self) -> String {
            use envoy_types::pb::envoy::config::cluster::v3::Cluster;
            use prost::Message;
            let any = self.body();
            Cluster::decode(any.value.as_slice()).unwrap().alt_stat_name
        }
    }

    #[test]
    fn a_nack_keeps_the_previous_version_of_what_it_rejects_and_applies_the_rest() {
        let (a1, a2, a3) = (cluster("a", "1"), cluster("a", "2"), cluster("a", "3"));
        let (b1, b2, c1) = (cluster("b", "1"), cluster("b", "2"), cluster("c", "1"));
        // State of the world.
        let mut sotw = Applied::default();
        sotw.sent_set(vec![a1.clone(), b1.clone()].into());
        assert_eq!(
            shown(&sotw, &[&a1, &b1]).0,
            Vec::<String>::new(),
            "not yet ACKed"
        );
        sotw.acked(Some("v1".into()));
        assert_eq!(shown(&sotw, &[&a1, &b1]).0, ["a=1", "b=1"]);
        sotw.sent_set(vec![a2.clone(), b2.clone(), c1.clone()].into());
        sotw.nacked(&rejected(&["a", "c"]), "bad a and c", "T");
        let sent = [&a2, &b2, &c1];
        assert_eq!(
            shown(&sotw, &sent),
            (
                vec!["a=1".into(), "b=2".into()],
                vec!["a=2".into(), "c=1".into()]
            )
        );
        sotw.sent_set(vec![a3.clone(), b2.clone()].into());
        sotw.acked(Some("v3".into()));
        assert_eq!(
            shown(&sotw, &[&a3, &b2]),
            (vec!["a=3".into(), "b=2".into()], vec![])
        );

        // Incremental.
        let mut delta = Applied::default();
        delta.holds(&b1);
        delta.sent_changes(std::slice::from_ref(&a1), &[]);
        delta.acked(Some("d1".into()));
        delta.sent_changes(std::slice::from_ref(&a2), &[]);
        delta.sent_changes(std::slice::from_ref(&c1), &["b".to_string()]);
        delta.nacked(&rejected(&["a"]), "bad a", "T");
        assert_eq!(
            shown(&delta, &[&a2, &c1]),
            (vec!["a=1".into(), "c=1".into()], vec!["a=2".into()])
        );
        // The client unsubscribed from c: no longer shown.
        assert_eq!(shown(&delta, &[&a2]).0, ["a=1"]);
        delta.sent_changes(&[], &["a".to_string()]);
        delta.acked(Some("d2".into()));
        assert_eq!(shown(&delta, &[&c1]), (vec!["c=1".into()], vec![]));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(timestamp(t), "2024-02-29T12:34:56.789Z");
    }
}
