//! A small ADS client for tests: one stream, requests sent without waiting, responses
//! received with a bounded wait.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};

use super::WAIT;
use crate::resource::ResourceType;
use crate::type_url;
use crate::{Cluster, ClusterLoadAssignment, Listener, RouteConfiguration};

/// A node with this id and no metadata.
pub fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        ..Default::default()
    }
}

/// A node whose metadata names its namespace (and pod).
pub fn node_in(id: &str, namespace: &str, pod: Option<&str>) -> Node {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let mut fields = HashMap::from([(crate::node::NAMESPACE.to_string(), string(namespace))]);
    if let Some(pod) = pod {
        fields.insert(crate::node::POD_NAME.to_string(), string(pod));
    }
    Node {
        id: id.to_string(),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

/// The name of an encoded resource of a type Lanyard serves.
pub fn resource_name(any: &Any) -> String {
    let bytes = any.value.as_slice();
    match ResourceType::from_type_url(&any.type_url) {
        Some(ResourceType::Cluster) => Cluster::decode(bytes).map(|c| c.name),
        Some(ResourceType::Endpoint) => {
            ClusterLoadAssignment::decode(bytes).map(|c| c.cluster_name)
        }
        Some(ResourceType::Listener) => Listener::decode(bytes).map(|l| l.name),
        Some(ResourceType::Route) => RouteConfiguration::decode(bytes).map(|r| r.name),
        None => return format!("<{}>", any.type_url),
    }
    .unwrap_or_else(|e| format!("<undecodable: {e}>"))
}

/// Names of the resources of a SotW response, in order.
pub fn names(response: &DiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(resource_name).collect()
}

/// Names of the resources of a delta response, in order.
pub fn delta_names(response: &DeltaDiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(|r| r.name.clone()).collect()
}

/// Decodes the resource of a SotW response named `name`.
pub fn find<M: Message + Default>(response: &DiscoveryResponse, name: &str) -> Option<M> {
    response
        .resources
        .iter()
        .find(|any| resource_name(any) == name)
        .and_then(|any| M::decode(any.value.as_slice()).ok())
}

fn to_strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn connect(
    address: SocketAddr,
    window: Option<u32>,
) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let channel = tokio::time::timeout(
        WAIT,
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("valid URI")
            .initial_stream_window_size(window)
            .initial_connection_window_size(window)
            .connect(),
    )
    .await
    .expect("connecting timed out")
    .expect("cannot connect to the ADS server");
    AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20)
}

/// A state-of-the-world stream.
#[derive(Debug)]
pub struct SotwClient {
    node: Node,
    requests: mpsc::UnboundedSender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
    /// Per type URL: the names last asked for and the version last accepted.
    state: BTreeMap<String, (Vec<String>, String)>,
    /// Per type URL: the nonce of the latest response.
    nonces: BTreeMap<String, String>,
    /// Envoy's habits, when the client was opened with [`SotwClient::envoy`].
    habit: Option<Warming>,
}

/// What an Envoy-habit client knows of its clusters: each cluster's encoded config (to
/// tell a re-created cluster from an unchanged one), and the EDS clusters still warming.
#[derive(Debug, Default)]
struct Warming {
    /// Cluster name -> (encoded cluster, EDS service name if it is an EDS cluster).
    clusters: BTreeMap<String, (Vec<u8>, Option<String>)>,
    /// EDS service names of clusters added or re-created and not yet given a
    /// ClusterLoadAssignment.
    warming: BTreeSet<String>,
}

impl Warming {
    /// Takes in the clusters of an update: `updated` (name, encoded) and `removed` names
    /// (SotW: every cluster not in `updated`). Returns the EDS service names of clusters
    /// added, of clusters re-created (config changed), and of clusters removed.
    ///
    /// Envoy v1.36 source/common/upstream/cds_api_helper.cc `CdsApiHelper::onConfigUpdate`
    /// hands every cluster to `ClusterManagerImpl::addOrUpdateCluster`, which skips a
    /// cluster whose config hash is unchanged and otherwise builds a new cluster that
    /// stays in `warming_clusters_` until its initialization (for EDS: the first
    /// ClusterLoadAssignment, `EdsClusterImpl::onConfigUpdate`) completes.
    fn take(
        &mut self,
        updated: Vec<(String, Vec<u8>)>,
        removed: Vec<String>,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let (mut added, mut recreated, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for (name, bytes) in updated {
            let eds = eds_service(&bytes);
            match self.clusters.get(&name) {
                Some((old, _)) if *old == bytes => continue,
                Some(_) => recreated.extend(eds.clone()),
                None => added.extend(eds.clone()),
            }
            if let Some(service) = &eds {
                self.warming.insert(service.clone());
            }
            self.clusters.insert(name, (bytes, eds));
        }
        for name in removed {
            if let Some((_, Some(service))) = self.clusters.remove(&name) {
                self.warming.remove(&service);
                gone.push(service);
            }
        }
        (added, recreated, gone)
    }

    /// The EDS service names of every cluster held, sorted.
    fn eds_names(&self) -> Vec<String> {
        let names: BTreeSet<String> = self
            .clusters
            .values()
            .filter_map(|(_, eds)| eds.clone())
            .collect();
        names.into_iter().collect()
    }
}

impl Warming {
    /// The clusters warming for a client that may have no Envoy habits (then none).
    fn of(habit: &Option<Warming>) -> &BTreeSet<String> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        habit.as_ref().map_or(&NONE, |h| &h.warming)
    }
}

/// What [`wait_warm`] needs of a client of either protocol.
trait Habits {
    type Response;
    fn warming(&self) -> &BTreeSet<String>;
    fn responses(&mut self) -> &mut Streaming<Self::Response>;
    /// Handles a response as Envoy does.
    fn observe(&mut self, response: &Self::Response);
}

impl Habits for SotwClient {
    type Response = DiscoveryResponse;
    fn warming(&self) -> &BTreeSet<String> {
        Warming::of(&self.habit)
    }
    fn responses(&mut self) -> &mut Streaming<DiscoveryResponse> {
        &mut self.responses
    }
    fn observe(&mut self, response: &DiscoveryResponse) {
        SotwClient::observe(self, response);
    }
}

impl Habits for DeltaClient {
    type Response = DeltaDiscoveryResponse;
    fn warming(&self) -> &BTreeSet<String> {
        Warming::of(&self.habit)
    }
    fn responses(&mut self) -> &mut Streaming<DeltaDiscoveryResponse> {
        &mut self.responses
    }
    fn observe(&mut self, response: &DeltaDiscoveryResponse) {
        DeltaClient::observe(self, response);
    }
}

/// Receives (and handles as Envoy does) responses until no cluster is warming, for at most
/// `within`; the responses received, or what is still warming then.
async fn wait_warm<C: Habits>(
    client: &mut C,
    within: Duration,
) -> Result<Vec<C::Response>, BTreeSet<String>> {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while !client.warming().is_empty() {
        match tokio::time::timeout_at(deadline, client.responses().message()).await {
            Ok(Ok(Some(response))) => {
                client.observe(&response);
                received.push(response);
            }
            Ok(Ok(None)) => panic!("the stream ended while clusters were warming"),
            Ok(Err(status)) => panic!("the stream failed: {status}"),
            Err(_) => return Err(client.warming().clone()),
        }
    }
    Ok(received)
}

/// The EDS service name of an encoded cluster, when it is an EDS cluster.
fn eds_service(bytes: &[u8]) -> Option<String> {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };
    let cluster = Cluster::decode(bytes).ok()?;
    if cluster.cluster_discovery_type != Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    {
        return None;
    }
    let service = cluster
        .eds_cluster_config
        .map(|c| c.service_name)
        .unwrap_or_default();
    Some(if service.is_empty() {
        cluster.name
    } else {
        service
    })
}

/// The names of the ClusterLoadAssignments in encoded resources.
fn assignment_names<'a>(resources: impl Iterator<Item = &'a Any>) -> Vec<String> {
    resources
        .filter_map(|any| ClusterLoadAssignment::decode(any.value.as_slice()).ok())
        .map(|cla| cla.cluster_name)
        .collect()
}

impl SotwClient {
    /// Opens a stream; the node goes with every request.
    pub async fn connect(address: SocketAddr, node: Node) -> SotwClient {
        Self::open(address, node, None).await
    }

    /// Opens a stream on a connection with HTTP/2 flow-control windows of `window` bytes
    /// (hyper's defaults are megabytes): a client that stops reading then holds up the
    /// server's writes to it soon.
    pub async fn connect_with_window(address: SocketAddr, node: Node, window: u32) -> SotwClient {
        Self::open(address, node, Some(window)).await
    }

    async fn open(address: SocketAddr, node: Node, window: Option<u32>) -> SotwClient {
        let mut client = connect(address, window).await;
        let (requests, rx) = mpsc::unbounded_channel();
        let responses = tokio::time::timeout(
            WAIT,
            client.stream_aggregated_resources(UnboundedReceiverStream::new(rx)),
        )
        .await
        .expect("opening the stream timed out")
        .expect("cannot open the stream")
        .into_inner();
        SotwClient {
            node,
            requests,
            responses,
            state: BTreeMap::new(),
            nonces: BTreeMap::new(),
            habit: None,
        }
    }

    /// Opens a stream that behaves as Envoy's SotW ADS client does: it ACKs every response
    /// (NACKs none), and after a CDS response that adds or re-creates EDS clusters it asks
    /// for their ClusterLoadAssignments again and keeps them warming until one arrives (see
    /// [`SotwClient::warming`], [`SotwClient::wait_warm`]).
    pub async fn envoy(address: SocketAddr, node: Node) -> SotwClient {
        let mut client = Self::open(address, node, None).await;
        client.habit = Some(Warming::default());
        client
    }

    /// The EDS service names of clusters added or re-created that have had no
    /// ClusterLoadAssignment since (Envoy-habit clients only; empty otherwise).
    pub fn warming(&self) -> &BTreeSet<String> {
        Warming::of(&self.habit)
    }

    /// Whether no cluster is warming.
    pub fn is_warm(&self) -> bool {
        self.warming().is_empty()
    }

    /// Receives (and handles as Envoy does) responses until no cluster is warming, for at
    /// most `within`; returns the responses received, or what is still warming then.
    pub async fn wait_warm(
        &mut self,
        within: Duration,
    ) -> Result<Vec<DiscoveryResponse>, BTreeSet<String>> {
        wait_warm(self, within).await
    }

    /// Envoy's handling of a response (Envoy-habit clients only).
    ///
    /// Follows Envoy v1.36 source/extensions/config_subscription/grpc/grpc_mux_impl.cc:
    /// each response's nonce becomes the `response_nonce` of the type's later requests
    /// (`onDiscoveryResponse`) and the ACK carries its version; an EDS cluster built by a
    /// CDS update calls `GrpcMuxImpl::addWatch`, which queues an EDS request with every
    /// watched name (`sendDiscoveryRequest`) even when the names did not change, so a
    /// re-created cluster re-sends the same names at the last accepted version and the
    /// latest EDS nonce. `CdsApiHelper::onConfigUpdate` pauses EDS while it applies the
    /// clusters, so that request goes out once, before the CDS ACK.
    fn observe(&mut self, response: &DiscoveryResponse) {
        let Some(habit) = self.habit.as_mut() else {
            return;
        };
        if response.type_url == type_url::CLUSTER {
            let updated: Vec<(String, Vec<u8>)> = response
                .resources
                .iter()
                .map(|any| (resource_name(any), any.value.clone()))
                .collect();
            let removed: Vec<String> = habit
                .clusters
                .keys()
                .filter(|name| !updated.iter().any(|(n, _)| n == *name))
                .cloned()
                .collect();
            let (added, recreated, gone) = habit.take(updated, removed);
            let names = habit.eds_names();
            self.nonces
                .insert(response.type_url.clone(), response.nonce.clone());
            if !added.is_empty() || !recreated.is_empty() || !gone.is_empty() {
                let (_, version) = self
                    .state
                    .get(type_url::ENDPOINT)
                    .cloned()
                    .unwrap_or_default();
                self.state.insert(
                    type_url::ENDPOINT.to_string(),
                    (names.clone(), version.clone()),
                );
                let nonce = self
                    .nonces
                    .get(type_url::ENDPOINT)
                    .cloned()
                    .unwrap_or_default();
                self.send(DiscoveryRequest {
                    version_info: version,
                    resource_names: names,
                    type_url: type_url::ENDPOINT.to_string(),
                    response_nonce: nonce,
                    ..Default::default()
                });
            }
        } else if response.type_url == type_url::ENDPOINT {
            for name in assignment_names(response.resources.iter()) {
                habit.warming.remove(&name);
            }
        }
        self.ack(response);
    }

    /// Sends a request as given (the node is filled in).
    pub fn send(&mut self, mut request: DiscoveryRequest) {
        request.node = Some(self.node.clone());
        self.requests.send(request).expect("the stream is open");
    }

    /// Subscribes to `names` of a type (empty: legacy wildcard), without a nonce.
    pub fn subscribe(&mut self, type_url: &str, names: &[&str]) {
        let names = to_strings(names);
        let version = self
            .state
            .get(type_url)
            .map(|s| s.1.clone())
            .unwrap_or_default();
        self.state
            .insert(type_url.to_string(), (names.clone(), version.clone()));
        self.send(DiscoveryRequest {
            version_info: version,
            resource_names: names,
            type_url: type_url.to_string(),
            ..Default::default()
        });
    }

    /// Changes the names of a type, replying to `response` (ACK).
    pub fn resubscribe(&mut self, response: &DiscoveryResponse, names: &[&str]) {
        let entry = self.state.entry(response.type_url.clone()).or_default();
        entry.0 = to_strings(names);
        self.ack(response);
    }

    /// ACKs a response: its version and nonce, the names last asked for.
    pub fn ack(&mut self, response: &DiscoveryResponse) {
        self.nonces
            .insert(response.type_url.clone(), response.nonce.clone());
        let entry = self.state.entry(response.type_url.clone()).or_default();
        entry.1 = response.version_info.clone();
        let names = entry.0.clone();
        self.send(DiscoveryRequest {
            version_info: response.version_info.clone(),
            resource_names: names,
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        });
    }

    /// NACKs a response: the version last accepted, its nonce, an error.
    pub fn nack(&mut self, response: &DiscoveryResponse, message: &str) {
        let (names, version) = self
            .state
            .get(&response.type_url)
            .cloned()
            .unwrap_or_default();
        self.send(DiscoveryRequest {
            version_info: version,
            resource_names: names,
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(rpc::Status {
                code: 3,
                message: message.to_string(),
                details: vec![],
            }),
            ..Default::default()
        });
    }

    /// The next response; panics after [`WAIT`] or on a stream error.
    pub async fn recv(&mut self) -> DiscoveryResponse {
        match self.next().await {
            Ok(response) => response,
            Err(status) => panic!("the stream failed: {status}"),
        }
    }

    /// The next response or the status that ended the stream; panics after [`WAIT`]. An
    /// Envoy-habit client has handled it as Envoy does (ACKed it, asked for EDS).
    pub async fn next(&mut self) -> Result<DiscoveryResponse, Status> {
        match tokio::time::timeout(WAIT, self.responses.message()).await {
            Ok(Ok(Some(response))) => {
                self.observe(&response);
                Ok(response)
            }
            Ok(Ok(None)) => Err(Status::ok("the stream ended")),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no response within {WAIT:?}"),
        }
    }

    /// The next response, however long it takes (for long-running measurements).
    pub async fn next_untimed(&mut self) -> Result<DiscoveryResponse, Status> {
        match self.responses.message().await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(Status::ok("the stream ended")),
            Err(status) => Err(status),
        }
    }

    /// Receives responses until one of `type_url` comes; panics on any other type.
    pub async fn recv_type(&mut self, type_url: &str) -> DiscoveryResponse {
        let response = self.recv().await;
        assert_eq!(
            response.type_url, type_url,
            "expected a response of another type"
        );
        response
    }
}

/// An incremental stream.
#[derive(Debug)]
pub struct DeltaClient {
    node: Node,
    requests: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
    /// Envoy's habits, when the client was opened with [`DeltaClient::envoy`].
    habit: Option<Warming>,
}

impl DeltaClient {
    /// Opens a stream; the node goes with every request.
    pub async fn connect(address: SocketAddr, node: Node) -> DeltaClient {
        let mut client = connect(address, None).await;
        let (requests, rx) = mpsc::unbounded_channel();
        let responses = tokio::time::timeout(
            WAIT,
            client.delta_aggregated_resources(UnboundedReceiverStream::new(rx)),
        )
        .await
        .expect("opening the stream timed out")
        .expect("cannot open the stream")
        .into_inner();
        DeltaClient {
            node,
            requests,
            responses,
            habit: None,
        }
    }

    /// Opens a stream that behaves as Envoy's delta ADS client does: it ACKs every
    /// response, subscribes to the ClusterLoadAssignments of EDS clusters a CDS response
    /// adds, unsubscribes those of removed clusters, and keeps added and re-created
    /// clusters warming until their ClusterLoadAssignment arrives.
    pub async fn envoy(address: SocketAddr, node: Node) -> DeltaClient {
        let mut client = Self::connect(address, node).await;
        client.habit = Some(Warming::default());
        client
    }

    /// The EDS service names of clusters added or re-created that have had no
    /// ClusterLoadAssignment since (Envoy-habit clients only; empty otherwise).
    pub fn warming(&self) -> &BTreeSet<String> {
        Warming::of(&self.habit)
    }

    /// Whether no cluster is warming.
    pub fn is_warm(&self) -> bool {
        self.warming().is_empty()
    }

    /// Receives (and handles as Envoy does) responses until no cluster is warming, for at
    /// most `within`; returns the responses received, or what is still warming then.
    pub async fn wait_warm(
        &mut self,
        within: Duration,
    ) -> Result<Vec<DeltaDiscoveryResponse>, BTreeSet<String>> {
        wait_warm(self, within).await
    }

    /// Envoy's handling of a delta response (Envoy-habit clients only).
    ///
    /// Follows Envoy v1.36 source/extensions/config_subscription/grpc/new_grpc_mux_impl.cc
    /// and watch_map.cc: a cluster built by a CDS update adds an EDS watch
    /// (`NewGrpcMuxImpl::addWatch` -> `updateWatch`), and `WatchMap::updateWatchInterest`
    /// reports a name as added to the subscription only when no other watch holds it
    /// (`findAdditions`). A re-created cluster's new watch is added while the old cluster
    /// (still active until the new one warms) holds the name, so Envoy's delta client
    /// sends no EDS request for it: the new cluster warms only if the server sends the
    /// ClusterLoadAssignment unasked. A new cluster's name is subscribed; a removed
    /// cluster's is unsubscribed (`findRemovals`).
    fn observe(&mut self, response: &DeltaDiscoveryResponse) {
        let Some(habit) = self.habit.as_mut() else {
            return;
        };
        if response.type_url == type_url::CLUSTER {
            let updated: Vec<(String, Vec<u8>)> = response
                .resources
                .iter()
                .filter_map(|r| Some((r.name.clone(), r.resource.as_ref()?.value.clone())))
                .collect();
            let (added, _recreated, gone) = habit.take(updated, response.removed_resources.clone());
            if !added.is_empty() || !gone.is_empty() {
                self.send(DeltaDiscoveryRequest {
                    type_url: type_url::ENDPOINT.to_string(),
                    resource_names_subscribe: added,
                    resource_names_unsubscribe: gone,
                    ..Default::default()
                });
            }
        } else if response.type_url == type_url::ENDPOINT {
            for r in &response.resources {
                habit.warming.remove(&r.name);
            }
        }
        self.ack(response);
    }

    /// Sends a request as given (the node is filled in).
    pub fn send(&mut self, mut request: DeltaDiscoveryRequest) {
        request.node = Some(self.node.clone());
        self.requests.send(request).expect("the stream is open");
    }

    /// Changes a subscription (no nonce).
    pub fn subscribe(&mut self, type_url: &str, subscribe: &[&str], unsubscribe: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: to_strings(subscribe),
            resource_names_unsubscribe: to_strings(unsubscribe),
            ..Default::default()
        });
    }

    /// A first request on a new stream that says which versions the client holds.
    pub fn resume(&mut self, type_url: &str, subscribe: &[&str], held: &BTreeMap<String, String>) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: to_strings(subscribe),
            initial_resource_versions: held.clone().into_iter().collect(),
            ..Default::default()
        });
    }

    /// ACKs a response.
    pub fn ack(&mut self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        });
    }

    /// NACKs a response.
    pub fn nack(&mut self, response: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(rpc::Status {
                code: 3,
                message: message.to_string(),
                details: vec![],
            }),
            ..Default::default()
        });
    }

    /// The next response; panics after [`WAIT`] or on a stream error.
    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        match self.next().await {
            Ok(response) => response,
            Err(status) => panic!("the stream failed: {status}"),
        }
    }

    /// The next response or the status that ended the stream; panics after [`WAIT`]. An
    /// Envoy-habit client has handled it as Envoy does (ACKed it, changed EDS interest).
    pub async fn next(&mut self) -> Result<DeltaDiscoveryResponse, Status> {
        match tokio::time::timeout(WAIT, self.responses.message()).await {
            Ok(Ok(Some(response))) => {
                self.observe(&response);
                Ok(response)
            }
            Ok(Ok(None)) => Err(Status::ok("the stream ended")),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no response within {WAIT:?}"),
        }
    }
}
