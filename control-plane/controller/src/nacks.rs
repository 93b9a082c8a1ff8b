//! NACKs in status: what connected proxies rejected, mapped to the routes and TrafficSplits
//! whose configuration it was.
//!
//! - [`ProxyNacks::from_streams`] reads, per connected proxy and per type, the NACK still
//!   outstanding (not followed by an ACK covering the rejected resources; see
//!   [`lanyard_xds::status::TypeSync::outstanding_nack`]).
//! - [`rejections`] maps each rejected resource to its Service port ([`Resolver`]: route
//!   configurations and gRPC API listeners `<fqdn>:<port>` (or any name a gRPC client
//!   resolves), sidecar listeners `<ip>_<port>`, clusters and endpoints
//!   `outbound|<port>||<fqdn>`) and the port to the route rules that produced its tables
//!   (`Translation.provenance`). A route configuration or API listener is the table of the
//!   proxy's namespace (its consumer routes, else the producer's); a cluster, endpoints or a
//!   sidecar listener belong to the whole port, so to every route on it. A TrafficSplit in
//!   effect is reached through its root Service's ports. Resources of no Service port
//!   (`virtualOutbound`, pass-through clusters) name no route.
//! - [`Damper`] keeps status from flapping: a new or changed rejection is published at most
//!   once per [`MIN_INTERVAL`] per object, and one that clears is withdrawn only after it has
//!   stayed clear for [`CLEAR_AFTER`], so a NACK that clears and comes back meanwhile writes
//!   nothing.
//! - [`with_rejections`] adds the [`CONDITION`] to every Service parent entry of a rejected
//!   route; a route whose proxies accept again loses the condition (it is removed, not set
//!   to `False`, so routes that were never rejected and routes that recovered look alike).
//!
//! Only the proxies connected to this replica are counted: with several replicas, the leader
//! reports what its own proxies rejected.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_index::{Condition, Kind, ObjectRef, RouteStatus, RuleRef, SmiOutcome, Translation};
use lanyard_model::{Model, NamespaceName, ServiceKey, ServicePortKey};
use lanyard_xds::ServiceDirectory;
use lanyard_xds::status::{Nack, StreamStatus};
use serde::Serialize;

/// The implementation-specific condition type (domain-prefixed, as the Gateway API requires
/// of conditions it does not define).
pub const CONDITION: &str = "lanyard.dev/ProxiesRejected";
/// Its reason while proxies reject the route's configuration.
pub const REASON: &str = "Rejected";
/// How much of a proxy's message a condition carries.
pub const MESSAGE_LIMIT: usize = 512;
/// At most one change of an object's published rejection per this long.
pub const MIN_INTERVAL: Duration = Duration::from_secs(3);
/// How long a rejection must stay clear before it is withdrawn.
pub const CLEAR_AFTER: Duration = Duration::from_secs(3);

/// The outstanding NACKs of one proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyNacks {
    /// `node.id`.
    pub proxy: String,
    /// Its namespace: which route tables it gets.
    pub namespace: NamespaceName,
    /// By type (`CDS`, `EDS`, `LDS`, `RDS`).
    pub nacks: Vec<(String, Nack)>,
}

impl ProxyNacks {
    /// The outstanding NACKs of every stream that has some, one entry per stream.
    pub fn from_streams(streams: &[Arc<StreamStatus>]) -> Vec<ProxyNacks> {
        streams
            .iter()
            .filter_map(|s| {
                let nacks = s.outstanding_nacks();
                (!nacks.is_empty()).then(|| ProxyNacks {
                    proxy: s.identity.node_id.clone(),
                    namespace: s.identity.namespace.clone(),
                    nacks,
                })
            })
            .collect()
    }
}

/// Service ports by the names Lanyard gives their resources.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    directory: ServiceDirectory,
}

impl Resolver {
    /// Indexes the Services of `model`.
    pub fn new(model: &Model, cluster_domain: &str) -> Self {
        Self {
            directory: ServiceDirectory::new(model, cluster_domain),
        }
    }

    /// The Service port whose resource of type `ty` (`CDS`...) is named `name`, for a proxy
    /// in `namespace` (short API listener names resolve there).
    pub fn port_of(
        &self,
        ty: &str,
        name: &str,
        namespace: &NamespaceName,
    ) -> Option<ServicePortKey> {
        let resolve = |n: &str| self.directory.resolve(n, namespace).map(|(key, _)| key);
        match ty {
            "RDS" => resolve(name),
            "LDS" => match name.rsplit_once('_') {
                Some((ip, port)) if ip.parse::<IpAddr>().is_ok() => {
                    resolve(&format!("[{ip}]:{port}")).or_else(|| resolve(&format!("{ip}:{port}")))
                }
                _ => resolve(name),
            },
            "CDS" | "EDS" => {
                let rest = name.strip_prefix("outbound|")?;
                let (port, fqdn) = rest.split_once("||")?;
                resolve(&format!("{fqdn}:{port}"))
            }
            _ => None,
        }
    }
}

/// Whether a resource of type `ty` is one namespace's view of a port (a route table), or
/// the whole port's.
fn per_namespace(ty: &str, name: &str) -> bool {
    match ty {
        "RDS" => true,
        // API listeners; a sidecar's `<ip>_<port>` listener is the whole port's.
        "LDS" => name
            .rsplit_once('_')
            .is_none_or(|(ip, _)| ip.parse::<IpAddr>().is_err()),
        _ => false,
    }
}

/// The resource type's message name, as people know it.
pub fn type_name(ty: &str) -> &str {
    match ty {
        "CDS" => "Cluster",
        "EDS" => "ClusterLoadAssignment",
        "LDS" => "Listener",
        "RDS" => "RouteConfiguration",
        other => other,
    }
}

/// What proxies rejected of one route's or TrafficSplit's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// How many proxies reject some of it.
    pub proxies: usize,
    /// The type of the resource rejected by the most of them (`RouteConfiguration`...).
    #[serde(rename = "type")]
    pub type_: String,
    /// Its name.
    pub resource: String,
    /// The version rejected.
    pub version: String,
    /// How many other resources of it are rejected.
    pub others: usize,
    /// One proxy's message (the first by node id), cut at [`MESSAGE_LIMIT`] bytes.
    pub message: String,
    /// That proxy's node id.
    pub proxy: String,
}

impl Rejection {
    /// `2 proxies rejected RouteConfiguration x:80 (version v): message`.
    pub fn summary(&self) -> String {
        let who = if self.proxies == 1 {
            "1 proxy".to_string()
        } else {
            format!("{} proxies", self.proxies)
        };
        let others = match self.others {
            0 => String::new(),
            1 => " and 1 other resource".to_string(),
            n => format!(" and {n} other resources"),
        };
        format!(
            "{who} rejected {} {} (version {}){others}: {}",
            self.type_, self.resource, self.version, self.message
        )
    }
}

/// What proxies reject, by route (HTTPRoute, GRPCRoute) and by TrafficSplit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    pub by_object: BTreeMap<ObjectRef, Rejection>,
}

impl Rejections {
    /// The rejection of a route or split, if any.
    pub fn get(&self, object: &ObjectRef) -> Option<&Rejection> {
        self.by_object.get(object)
    }
}

/// A rejected resource: type, name, version.
type ResourceId = (String, String, String);

/// What is rejected of one object, being counted.
#[derive(Default)]
struct Tally {
    proxies: BTreeSet<String>,
    /// Per resource: the proxies rejecting it, and the first one's message.
    resources: BTreeMap<ResourceId, (BTreeSet<String>, String, String)>,
}

impl Tally {
    fn add(&mut self, id: &ResourceId, proxy: &str, message: &str) {
        self.proxies.insert(proxy.to_string());
        let entry = self
            .resources
            .entry(id.clone())
            .or_insert_with(|| (BTreeSet::new(), proxy.to_string(), message.to_string()));
        if proxy < entry.1.as_str() {
            entry.1 = proxy.to_string();
            entry.2 = message.to_string();
        }
        entry.0.insert(proxy.to_string());
    }

    fn finish(self) -> Option<Rejection> {
        let others = self.resources.len().saturating_sub(1);
        // The resource the most proxies reject; ties: the first by type, name, version.
        let ((ty, resource, version), (_, proxy, message)) = self
            .resources
            .into_iter()
            .rev()
            .max_by_key(|(_, (proxies, _, _))| proxies.len())?;
        Some(Rejection {
            proxies: self.proxies.len(),
            type_: type_name(&ty).to_string(),
            resource,
            version,
            others,
            message: truncate(&message, MESSAGE_LIMIT),
            proxy,
        })
    }
}

/// `text` cut at `limit` bytes (at a character boundary), with `...` when cut.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Maps the outstanding NACKs of `proxies` to the routes and TrafficSplits of `translation`
/// whose configuration they rejected (see the module docs).
pub fn rejections(
    translation: &Translation,
    resolver: &Resolver,
    proxies: &[ProxyNacks],
) -> Rejections {
    // TrafficSplits in effect, by root Service.
    let mut splits: BTreeMap<ServiceKey, Vec<&ObjectRef>> = BTreeMap::new();
    for report in &translation.smi {
        if matches!(
            report.outcome,
            SmiOutcome::Applied | SmiOutcome::Degraded { .. }
        ) && let Some((ns, name)) = report.service.split_once('/')
        {
            splits
                .entry(ServiceKey::new(ns, name))
                .or_default()
                .push(&report.split);
        }
    }
    let mut tallies: BTreeMap<ObjectRef, Tally> = BTreeMap::new();
    let mut sorted: Vec<&ProxyNacks> = proxies.iter().collect();
    sorted.sort_by(|a, b| a.proxy.cmp(&b.proxy));
    for proxy in sorted {
        for (ty, nack) in &proxy.nacks {
            for resource in &nack.resources {
                let Some(port) = resolver.port_of(ty, &resource.name, &proxy.namespace) else {
                    continue;
                };
                let id = (ty.clone(), resource.name.clone(), resource.version.clone());
                let mut objects: BTreeSet<&ObjectRef> = BTreeSet::new();
                if let Some(origin) = translation.provenance.get(&port) {
                    let rules: Vec<&RuleRef> = if per_namespace(ty, &resource.name) {
                        origin
                            .consumers
                            .get(&proxy.namespace)
                            .unwrap_or(&origin.producer)
                            .iter()
                            .collect()
                    } else {
                        origin
                            .producer
                            .iter()
                            .chain(origin.consumers.values().flatten())
                            .collect()
                    };
                    objects.extend(rules.into_iter().map(|r| &r.route));
                }
                let has_producer = translation
                    .provenance
                    .get(&port)
                    .is_some_and(|o| !o.producer.is_empty());
                if !has_producer && let Some(found) = splits.get(&port.service) {
                    objects.extend(found.iter().copied());
                }
                for object in objects {
                    tallies.entry(object.clone()).or_default().add(
                        &id,
                        &proxy.proxy,
                        &nack.message,
                    );
                }
            }
        }
    }
    Rejections {
        by_object: tallies
            .into_iter()
            .filter_map(|(object, tally)| Some((object, tally.finish()?)))
            .collect(),
    }
}

/// The condition of a rejected route, for a parent whose status was computed at
/// `generation`.
pub fn condition(rejection: &Rejection, generation: Option<i64>) -> Condition {
    Condition::new(CONDITION, true, REASON, rejection.summary(), generation)
}

/// `statuses` with the [`CONDITION`] added to every parent entry of each rejected route.
pub fn with_rejections(statuses: &[RouteStatus], rejections: &Rejections) -> Vec<RouteStatus> {
    statuses
        .iter()
        .map(|status| {
            let mut status = status.clone();
            if let Some(rejection) = rejections.get(&status.route) {
                for parent in &mut status.parents {
                    let generation = parent
                        .conditions
                        .first()
                        .and_then(|c| c.observed_generation)
                        .or(status.generation);
                    parent.conditions.retain(|c| c.type_ != CONDITION);
                    parent.conditions.push(condition(rejection, generation));
                }
            }
            status
        })
        .collect()
}

/// Whether `object` is a TrafficSplit (rejections of splits go to Events).
pub fn is_split(object: &ObjectRef) -> bool {
    object.kind == Kind::TrafficSplit
}

/// Published state of one object.
#[derive(Clone, Debug, Default)]
struct Damped {
    published: Option<Rejection>,
    /// When `published` last changed.
    changed_at: Option<Instant>,
    /// Since when the object has been clear while still published.
    clear_since: Option<Instant>,
}

/// Rejections as published: rate-limited and with hysteresis (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Damper {
    objects: BTreeMap<ObjectRef, Damped>,
}

impl Damper {
    /// Takes the rejections as they are `now`; whether what is published changed.
    pub fn update(&mut self, now: Instant, current: &Rejections) -> bool {
        let keys: BTreeSet<ObjectRef> = self
            .objects
            .keys()
            .chain(current.by_object.keys())
            .cloned()
            .collect();
        let mut changed = false;
        for key in keys {
            let wanted = current.by_object.get(&key);
            let entry = self.objects.entry(key).or_default();
            let may_change = entry
                .changed_at
                .is_none_or(|at| now.duration_since(at) >= MIN_INTERVAL);
            match (wanted, &entry.published) {
                (Some(w), Some(p)) if w == p => entry.clear_since = None,
                (Some(w), _) => {
                    entry.clear_since = None;
                    if may_change {
                        entry.published = Some(w.clone());
                        entry.changed_at = Some(now);
                        changed = true;
                    }
                }
                (None, Some(_)) => {
                    let since = *entry.clear_since.get_or_insert(now);
                    if may_change && now.duration_since(since) >= CLEAR_AFTER {
                        entry.published = None;
                        entry.changed_at = Some(now);
                        entry.clear_since = None;
                        changed = true;
                    }
                }
                (None, None) => {}
            }
        }
        // Forget objects with nothing published once their rate limit has passed.
        self.objects.retain(|_, e| {
            e.published.is_some()
                || e.changed_at
                    .is_some_and(|at| now.duration_since(at) < MIN_INTERVAL)
        });
        changed
    }

    /// What is published.
    pub fn published(&self) -> Rejections {
        Rejections {
            by_object: self
                .objects
                .iter()
                .filter_map(|(k, e)| Some((k.clone(), e.published.clone()?)))
                .collect(),
        }
    }

    /// When a change held back now may be published, given the rejections of the last
    /// [`Damper::update`] (`None`: nothing is held back).
    pub fn next_due(&self, current: &Rejections) -> Option<Instant> {
        self.objects
            .iter()
            .filter_map(|(key, e)| {
                let wanted = current.by_object.get(key);
                if wanted == e.published.as_ref() {
                    return None;
                }
                let rate = e.changed_at.map(|at| at + MIN_INTERVAL);
                let hold = e.clear_since.map(|since| since + CLEAR_AFTER);
                match (rate, hold) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }
}

/// How often the streams are looked at for NACKs.
pub const POLL: Duration = Duration::from_secs(1);

/// Tracks the NACKs of `server`'s proxies against the current snapshot, and publishes the
/// damped [`Rejections`] on `out` whenever they change; until the server stops.
pub async fn track(
    server: lanyard_xds::XdsServer,
    snapshots: tokio::sync::watch::Receiver<Arc<crate::snapshot::Snapshot>>,
    cluster_domain: String,
    out: tokio::sync::watch::Sender<Arc<Rejections>>,
) {
    let stopped = server.stopped();
    tokio::pin!(stopped);
    let mut damper = Damper::default();
    let mut resolver: Option<(u64, Resolver)> = None;
    loop {
        let snapshot = snapshots.borrow().clone();
        let mut current = Rejections::default();
        if !snapshot.is_placeholder() {
            let proxies = ProxyNacks::from_streams(&server.streams());
            if !proxies.is_empty() || !damper.objects.is_empty() {
                if resolver
                    .as_ref()
                    .is_none_or(|(g, _)| *g != snapshot.generation)
                {
                    resolver = Some((
                        snapshot.generation,
                        Resolver::new(&snapshot.translation.model, &cluster_domain),
                    ));
                }
                if let Some((_, r)) = &resolver {
                    current = rejections(&snapshot.translation, r, &proxies);
                }
            }
        }
        let now = Instant::now();
        if damper.update(now, &current) {
            let published = damper.published();
            tracing::info!(
                rejected = published.by_object.len(),
                "objects whose configuration proxies reject changed"
            );
            out.send_replace(Arc::new(published));
        }
        let wait = damper
            .next_due(&current)
            .map_or(POLL, |due| due.saturating_duration_since(now).min(POLL));
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use lanyard_index::api::ParentReference;
    use lanyard_index::{ObjectKey, ParentStatus, PortProvenance, SmiReport};
    use lanyard_model::{Protocol, Service, ServicePort};
    use lanyard_xds::status::NackedResource;

    use super::*;

    const DOMAIN: &str = "cluster.local";

    fn mk_route(kind: Kind, ns: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind,
            key: ObjectKey::new(ns, name),
        }
    }

    fn mk_rules(route: &ObjectRef, n: usize) -> Vec<RuleRef> {
        (0..n)
            .map(|rule| RuleRef {
                route: route.clone(),
                rule,
            })
            .collect()
    }

    fn mk_port(ns: &str, name: &str, port: u16) -> ServicePortKey {
        ServicePortKey::new(ServiceKey::new(ns, name), port)
    }

    fn mk_service(ns: &str, name: &str, ip: &str, ports: &[u16]) -> (ServiceKey, Service) {
        let key = ServiceKey::new(ns, name);
        let service = Service {
            key: key.clone(),
            cluster_ips: vec![ip.parse().unwrap()],
            ports: ports
                .iter()
                .map(|&port| ServicePort {
                    port,
                    name: None,
                    protocol: Protocol::Http,
                    endpoints: vec![],
                })
                .collect(),
        };
        (key, service)
    }

    fn mk_nack(ty: &str, names: &[&str], message: &str) -> (String, Nack) {
        (
            ty.to_string(),
            Nack {
                version: "v2".into(),
                nonce: "n".into(),
                message: message.into(),
                at: "T".into(),
                resources: names
                    .iter()
                    .map(|n| NackedResource {
                        name: n.to_string(),
                        version: format!("{n}@v2"),
                    })
                    .collect(),
            },
        )
    }

    fn mk_proxy(id: &str, ns: &str, nacks: Vec<(String, Nack)>) -> ProxyNacks {
        ProxyNacks {
            proxy: id.into(),
            namespace: NamespaceName::new(ns),
            nacks,
        }
    }

    /// `shop/cart` (10.96.0.5, port 80) with producer route `shop/cart` (2 rules) and a
    /// consumer route `web/cart-web` for clients in `web`; `shop/plain` (port 9090) with a
    /// TrafficSplit `shop/split` in effect.
    fn mk_translation() -> (Translation, Resolver) {
        let producer = mk_route(Kind::HttpRoute, "shop", "cart");
        let consumer = mk_route(Kind::GrpcRoute, "web", "cart-web");
        let mut translation = Translation::default();
        for (key, service) in [
            mk_service("shop", "cart", "10.96.0.5", &[80]),
            mk_service("shop", "plain", "10.96.0.6", &[9090]),
        ] {
            translation.model.services.insert(key, service);
        }
        translation.provenance.insert(
            mk_port("shop", "cart", 80),
            PortProvenance {
                producer: mk_rules(&producer, 2),
                consumers: [(NamespaceName::new("web"), mk_rules(&consumer, 1))].into(),
            },
        );
        translation.smi.push(SmiReport {
            split: mk_route(Kind::TrafficSplit, "shop", "split"),
            service: "shop/plain".into(),
            outcome: SmiOutcome::Applied,
            message: String::new(),
        });
        let resolver = Resolver::new(&translation.model, DOMAIN);
        (translation, resolver)
    }

    #[test]
    fn resource_names_resolve_to_their_service_port() {
        let (_, r) = mk_translation();
        let shop = NamespaceName::new("shop");
        let cart = Some(mk_port("shop", "cart", 80));
        assert_eq!(
            r.port_of("RDS", "cart.shop.svc.cluster.local:80", &shop),
            cart
        );
        assert_eq!(
            r.port_of("LDS", "cart.shop.svc.cluster.local:80", &shop),
            cart
        );
        assert_eq!(
            r.port_of("LDS", "cart:80", &shop),
            cart,
            "a short API listener name"
        );
        assert_eq!(r.port_of("LDS", "10.96.0.5_80", &shop), cart);
        assert_eq!(
            r.port_of("CDS", "outbound|80||cart.shop.svc.cluster.local", &shop),
            cart
        );
        assert_eq!(
            r.port_of("EDS", "outbound|80||cart.shop.svc.cluster.local", &shop),
            cart
        );
        assert_eq!(r.port_of("LDS", "virtualOutbound", &shop), None);
        assert_eq!(r.port_of("CDS", "PassthroughCluster", &shop), None);
        assert_eq!(
            r.port_of("CDS", "outbound|81||cart.shop.svc.cluster.local", &shop),
            None
        );
    }

    #[test]
    fn a_route_table_maps_to_the_routes_of_the_proxys_namespace() {
        let (t, r) = mk_translation();
        let rds = "cart.shop.svc.cluster.local:80";
        let proxies = [
            mk_proxy("b", "shop", vec![mk_nack("RDS", &[rds], "bad regex b")]),
            mk_proxy("a", "other", vec![mk_nack("RDS", &[rds], "bad regex a")]),
            mk_proxy("c", "web", vec![mk_nack("RDS", &[rds], "bad in web")]),
        ];
        let got = rejections(&t, &r, &proxies);
        let producer = &got.by_object[&mk_route(Kind::HttpRoute, "shop", "cart")];
        assert_eq!(producer.proxies, 2);
        assert_eq!(producer.type_, "RouteConfiguration");
        assert_eq!(producer.resource, rds);
        assert_eq!(producer.version, format!("{rds}@v2"));
        assert_eq!(
            (producer.proxy.as_str(), producer.message.as_str()),
            ("a", "bad regex a")
        );
        assert_eq!(
            producer.summary(),
            format!("2 proxies rejected RouteConfiguration {rds} (version {rds}@v2): bad regex a")
        );
        let consumer = &got.by_object[&mk_route(Kind::GrpcRoute, "web", "cart-web")];
        assert_eq!(
            (consumer.proxies, consumer.message.as_str()),
            (1, "bad in web")
        );
        assert!(consumer.summary().starts_with("1 proxy rejected"));
        assert_eq!(got.by_object.len(), 2, "{got:?}");
    }

    #[test]
    fn a_cluster_maps_to_every_route_on_its_port_and_a_split_through_its_root() {
        let (t, r) = mk_translation();
        let proxies = [mk_proxy(
            "a",
            "shop",
            vec![
                mk_nack(
                    "CDS",
                    &["outbound|80||cart.shop.svc.cluster.local"],
                    "bad cluster",
                ),
                mk_nack(
                    "EDS",
                    &["outbound|9090||plain.shop.svc.cluster.local", "nope"],
                    "bad eds",
                ),
            ],
        )];
        let got = rejections(&t, &r, &proxies);
        let objects: Vec<String> = got.by_object.keys().map(|o| o.to_string()).collect();
        assert_eq!(objects.len(), 3, "{objects:?}");
        let split = &got.by_object[&mk_route(Kind::TrafficSplit, "shop", "split")];
        assert_eq!(split.type_, "ClusterLoadAssignment");
        assert_eq!(split.message, "bad eds");
        assert!(is_split(&mk_route(Kind::TrafficSplit, "shop", "split")));
        let consumer = &got.by_object[&mk_route(Kind::GrpcRoute, "web", "cart-web")];
        assert_eq!(consumer.type_, "Cluster");

        // Nothing outstanding, nothing rejected; unknown names map to nothing.
        assert!(rejections(&t, &r, &[]).by_object.is_empty());
        let stray = [mk_proxy(
            "a",
            "shop",
            vec![mk_nack("LDS", &["virtualOutbound"], "x")],
        )];
        assert!(rejections(&t, &r, &stray).by_object.is_empty());
    }

    #[test]
    fn the_resource_most_proxies_reject_is_named_and_long_messages_are_cut() {
        let (t, r) = mk_translation();
        let rds = "cart.shop.svc.cluster.local:80";
        let cds = "outbound|80||cart.shop.svc.cluster.local";
        let long = "é".repeat(MESSAGE_LIMIT);
        let proxies = [
            mk_proxy("a", "shop", vec![mk_nack("CDS", &[cds], "cluster")]),
            mk_proxy("b", "shop", vec![mk_nack("RDS", &[rds], &long)]),
            mk_proxy("c", "shop", vec![mk_nack("RDS", &[rds], "other")]),
        ];
        let got = rejections(&t, &r, &proxies);
        let producer = &got.by_object[&mk_route(Kind::HttpRoute, "shop", "cart")];
        assert_eq!(producer.proxies, 3);
        assert_eq!(producer.resource, rds);
        assert_eq!(producer.others, 1);
        assert_eq!(producer.proxy, "b");
        assert!(producer.message.len() <= MESSAGE_LIMIT && producer.message.ends_with("..."));
        assert!(producer.summary().contains("and 1 other resource:"));
    }

    fn mk_rejection(proxies: usize, message: &str) -> Rejection {
        Rejection {
            proxies,
            type_: "RouteConfiguration".into(),
            resource: "cart.shop.svc.cluster.local:80".into(),
            version: "v".into(),
            others: 0,
            message: message.into(),
            proxy: "a".into(),
        }
    }

    fn mk_rejections(r: Option<Rejection>) -> Rejections {
        Rejections {
            by_object: r
                .map(|r| (mk_route(Kind::HttpRoute, "shop", "cart"), r))
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn the_damper_publishes_at_once_then_rate_limits_and_holds_a_clear() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Damper::default();
        let none = mk_rejections(None);
        let one = mk_rejections(Some(mk_rejection(1, "bad")));
        let two = mk_rejections(Some(mk_rejection(2, "bad")));

        assert!(!d.update(at(0), &none));
        assert!(d.update(at(0), &one), "a new rejection shows at once");
        assert_eq!(d.published(), one);
        // A change within the interval waits for it.
        assert!(!d.update(at(1000), &two));
        assert_eq!(d.published(), one);
        assert_eq!(d.next_due(&two), Some(at(3000)));
        assert!(d.update(at(3000), &two));
        assert_eq!(d.published(), two);

        // Cleared, back within the hold: nothing is written either way.
        assert!(!d.update(at(7000), &none));
        assert_eq!(d.next_due(&none), Some(at(10_000)));
        assert!(!d.update(at(8000), &two));
        assert!(!d.update(at(9000), &none));
        assert!(
            !d.update(at(11_000), &none),
            "the hold restarts when it comes back"
        );
        assert_eq!(d.published(), two);
        // Clear for the whole hold: withdrawn.
        assert!(d.update(at(12_000), &none));
        assert_eq!(d.published(), none);
        assert_eq!(d.next_due(&none), None);
        // Back right after: the rate limit holds it back.
        assert!(!d.update(at(13_000), &one));
        assert!(d.update(at(15_000), &one));
    }

    #[test]
    fn a_rejected_route_gets_the_condition_on_every_parent() {
        let route = mk_route(Kind::HttpRoute, "shop", "cart");
        let parent = |name: &str| ParentStatus {
            parent_ref: serde_json::from_value::<ParentReference>(
                serde_json::json!({"group": "", "kind": "Service", "name": name}),
            )
            .unwrap(),
            controller_name: "lanyard.dev/mesh-controller".into(),
            conditions: vec![Condition::new("Accepted", true, "Accepted", "", Some(4))],
        };
        let status = RouteStatus {
            route: route.clone(),
            generation: Some(4),
            parents: vec![parent("cart"), parent("cart-alt")],
        };
        let other = RouteStatus {
            route: mk_route(Kind::HttpRoute, "shop", "other"),
            ..status.clone()
        };
        let statuses = [status, other.clone()];
        let got = with_rejections(&statuses, &mk_rejections(Some(mk_rejection(2, "bad"))));
        for parent in &got[0].parents {
            let c = parent.condition(CONDITION).unwrap();
            assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", REASON));
            assert_eq!(c.observed_generation, Some(4));
            assert!(
                c.message
                    .starts_with("2 proxies rejected RouteConfiguration")
            );
        }
        assert_eq!(got[1], other);
        assert_eq!(with_rejections(&statuses, &Rejections::default()), statuses);
    }
}
