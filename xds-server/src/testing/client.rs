//! A small ADS client for tests: one stream, requests sent without waiting, responses
//! received with a bounded wait.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

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
        }
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

    /// The next response or the status that ended the stream; panics after [`WAIT`].
    pub async fn next(&mut self) -> Result<DiscoveryResponse, Status> {
        match tokio::time::timeout(WAIT, self.responses.message()).await {
            Ok(Ok(Some(response))) => Ok(response),
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
        }
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

    /// The next response or the status that ended the stream; panics after [`WAIT`].
    pub async fn next(&mut self) -> Result<DeltaDiscoveryResponse, Status> {
        match tokio::time::timeout(WAIT, self.responses.message()).await {
            Ok(Ok(Some(response))) => Ok(response),
            Ok(Ok(None)) => Err(Status::ok("the stream ended")),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no response within {WAIT:?}"),
        }
    }
}
