//! ADS clients an attacker writes with a gRPC library: whole, valid messages, just too many
//! or too big.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};

/// A client that sends and takes messages up to the server's 16 MiB cap and beyond.
async fn client(
    address: SocketAddr,
) -> anyhow::Result<AggregatedDiscoveryServiceClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

/// A string value.
pub fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// A node: `id`, `NAMESPACE` metadata when given, `LABELS` when given, and a user agent.
pub fn node(
    id: String,
    namespace: Option<&str>,
    labels: Option<HashMap<String, Value>>,
    user_agent: &str,
) -> Node {
    let mut fields = HashMap::new();
    if let Some(ns) = namespace {
        fields.insert(lanyard_xds::node::NAMESPACE.to_string(), string(ns));
    }
    if let Some(labels) = labels {
        fields.insert(
            lanyard_xds::node::LABELS.to_string(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
    }
    Node {
        id,
        user_agent_name: user_agent.to_string(),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

/// An ADS stream of either protocol: requests `Req` out, responses `Resp` back.
pub struct Stream<Req, Resp> {
    requests: mpsc::UnboundedSender<Req>,
    responses: Option<Streaming<Resp>>,
    /// The status the stream ended with, once it has.
    pub ended: Option<Status>,
}

/// A SotW stream.
pub type Sotw = Stream<DiscoveryRequest, DiscoveryResponse>;
/// A delta stream.
pub type Delta = Stream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

impl<Req, Resp> Stream<Req, Resp> {
    /// Sends `first` on a stream `open` opens from the requests' receiving end.
    async fn opened<F>(
        first: Req,
        open: impl FnOnce(UnboundedReceiverStream<Req>) -> F,
    ) -> anyhow::Result<Self>
    where
        F: std::future::Future<Output = Result<tonic::Response<Streaming<Resp>>, Status>>,
        Req: Send + Sync + 'static,
    {
        let (requests, rx) = mpsc::unbounded_channel();
        requests
            .send(first)
            .map_err(|_| anyhow::anyhow!("the request channel closed"))?;
        let (responses, ended) = match open(UnboundedReceiverStream::new(rx)).await {
            Ok(r) => (Some(r.into_inner()), None),
            Err(status) => (None, Some(status)),
        };
        Ok(Stream {
            requests,
            responses,
            ended,
        })
    }

    /// Sends a request.
    pub fn send(&self, request: Req) {
        let _ = self.requests.send(request);
    }

    /// The next response within `bound`; `None` on timeout or once the stream has ended
    /// (then `ended` holds its status).
    pub async fn recv(&mut self, bound: Duration) -> Option<Resp> {
        let responses = self.responses.as_mut()?;
        match tokio::time::timeout(bound, responses.message()).await {
            Err(_) => None,
            Ok(Ok(Some(r))) => Some(r),
            Ok(Ok(None)) => {
                self.ended = Some(Status::ok(""));
                self.responses = None;
                None
            }
            Ok(Err(status)) => {
                self.ended = Some(status);
                self.responses = None;
                None
            }
        }
    }
}

impl Sotw {
    /// Opens a SotW stream and sends `first`.
    pub async fn open(address: SocketAddr, first: DiscoveryRequest) -> anyhow::Result<Sotw> {
        let mut client = client(address).await?;
        Stream::opened(first, |rx| async move {
            client.stream_aggregated_resources(rx).await
        })
        .await
    }
}

impl Delta {
    /// Opens a delta stream and sends `first`.
    pub async fn open(address: SocketAddr, first: DeltaDiscoveryRequest) -> anyhow::Result<Delta> {
        let mut client = client(address).await?;
        Stream::opened(first, |rx| async move {
            client.delta_aggregated_resources(rx).await
        })
        .await
    }
}
