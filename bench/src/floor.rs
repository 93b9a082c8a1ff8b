//! The floor: a minimal ADS server that sends DiscoveryResponses encoded before the run
//! (bytes written to the HTTP/2 stream as they are, no protobuf encoding, no
//! bookkeeping). What it costs to deliver the bytes is what no server can beat; the real
//! server's figures are reported as ratios to it.
//!
//! Each proxy (node id `proxy-<i>`) gets, on its first request of a type, the
//! pre-encoded response of that type for it (none when the floor has none: an idle
//! stream); [`Floor::push`] sends more later.

use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::mesh::Shape;
use crate::wire::TYPES;

/// Pre-encoded responses, per proxy and type (in [`TYPES`] order).
pub type Initial = Vec<[Option<Bytes>; 4]>;

type Sender = mpsc::Sender<Result<Bytes, Status>>;

struct State {
    initial: Initial,
    streams: Mutex<HashMap<usize, Sender>>,
}

/// A running floor server.
#[derive(Clone)]
pub struct Floor {
    state: Arc<State>,
    stop: Arc<watch::Sender<bool>>,
}

impl Floor {
    /// Serves on `listener` until dropped... or [`Floor::stop`].
    pub fn start(listener: TcpListener, initial: Initial) -> Floor {
        let state = Arc::new(State {
            initial,
            streams: Mutex::default(),
        });
        let (stop, mut stopped) = watch::channel(false);
        let service = FloorService {
            state: state.clone(),
        };
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                // As the real server's (XdsServer::serve_ads).
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
        Floor {
            state,
            stop: Arc::new(stop),
        }
    }

    /// Sends pre-encoded bytes to proxy `p`'s stream; false if it has none.
    pub async fn push(&self, p: usize, bytes: Bytes) -> bool {
        let sender = self
            .state
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p)
            .cloned();
        match sender {
            Some(sender) => sender.send(Ok(bytes)).await.is_ok(),
            None => false,
        }
    }

    /// Ends every stream and stops serving.
    pub fn stop(&self) {
        self.state
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.stop.send_replace(true);
    }
}

/// Passes pre-encoded bytes through; decodes requests with prost.
struct RawCodec<M>(PhantomData<M>);

impl<M> Default for RawCodec<M> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

struct ProstDecoder<M>(PhantomData<M>);

impl<M: prost::Message + Default> Decoder for ProstDecoder<M> {
    type Item = M;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        M::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<M: prost::Message + Default + Send + 'static> Codec for RawCodec<M> {
    type Encode = Bytes;
    type Decode = M;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<M>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<M> {
        ProstDecoder(PhantomData)
    }
}

/// What the floor reads of a request.
trait FloorRequest: prost::Message + Default + Send + 'static {
    fn node_id(&self) -> Option<&str>;
    fn type_url(&self) -> &str;
    /// A request without a nonce: the proxy asks for the type.
    fn is_initial(&self) -> bool;
}

impl FloorRequest for DiscoveryRequest {
    fn node_id(&self) -> Option<&str> {
        self.node.as_ref().map(|n| n.id.as_str())
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn is_initial(&self) -> bool {
        self.response_nonce.is_empty()
    }
}

impl FloorRequest for DeltaDiscoveryRequest {
    fn node_id(&self) -> Option<&str> {
        self.node.as_ref().map(|n| n.id.as_str())
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn is_initial(&self) -> bool {
        self.response_nonce.is_empty()
    }
}

struct Method<M> {
    state: Arc<State>,
    _request: PhantomData<M>,
}

impl<M: FloorRequest> StreamingService<M> for Method<M> {
    type Response = Bytes;
    type ResponseStream = ReceiverStream<Result<Bytes, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<M>>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(serve_stream(state, request.into_inner(), tx));
            Ok(Response::new(ReceiverStream::new(rx)))
        })
    }
}

async fn serve_stream<M: FloorRequest>(state: Arc<State>, mut requests: Streaming<M>, tx: Sender) {
    let mut proxy = None;
    while let Ok(Some(request)) = requests.message().await {
        if proxy.is_none()
            && let Some(p) = request.node_id().and_then(Shape::proxy_index)
        {
            proxy = Some(p);
            state
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p, tx.clone());
        }
        let (Some(p), true) = (proxy, request.is_initial()) else {
            continue;
        };
        let Some(t) = TYPES.iter().position(|t| *t == request.type_url()) else {
            continue;
        };
        if let Some(bytes) = state.initial.get(p).and_then(|r| r[t].clone())
            && tx.send(Ok(bytes)).await.is_err()
        {
            return;
        }
    }
}

#[derive(Clone)]
struct FloorService {
    state: Arc<State>,
}

impl NamedService for FloorService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<B> tonic::codegen::Service<http::Request<B>> for FloorService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let state = self.state.clone();
        match req.uri().path() {
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources" => {
                Box::pin(async move {
                    let method = Method::<DiscoveryRequest> {
                        state,
                        _request: PhantomData,
                    };
                    let mut grpc = Grpc::new(RawCodec::<DiscoveryRequest>::default());
                    Ok(grpc.streaming(method, req).await)
                })
            }
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources" => {
                Box::pin(async move {
                    let method = Method::<DeltaDiscoveryRequest> {
                        state,
                        _request: PhantomData,
                    };
                    let mut grpc = Grpc::new(RawCodec::<DeltaDiscoveryRequest>::default());
                    Ok(grpc.streaming(method, req).await)
                })
            }
            _ => {
                Box::pin(async move { Ok(Status::unimplemented("not an ADS method").into_http()) })
            }
        }
    }
}
