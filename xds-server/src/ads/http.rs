//! The ADS service at the HTTP level, without tonic's response encoder: requests are
//! decoded by tonic's [`Streaming`], responses are written as the pre-encoded chunks of
//! their [`Frame`]s, and the status goes out as gRPC trailers.
//!
//! tonic's generated server encodes every message into a per-stream `BytesMut` that grows
//! to the largest response and keeps that allocation for the stream's life; here nothing
//! is encoded per stream but the few per-stream fields, and the shared bytes are handed to
//! HTTP/2 as they are.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::codegen::http::{self, HeaderMap, HeaderValue, header};
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::budget::Budgeted;
use super::core::{self, Responder};
use super::wire::Frame;
use super::{delta, sotw};
use crate::server::Shared;

/// The gRPC service name.
pub const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
/// State of the world.
pub const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// Incremental.
pub const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// The largest request accepted by default ([`crate::limits::StreamLimits::max_request_bytes`]).
pub const MAX_REQUEST_SIZE: usize = 16 << 20;

/// The ADS service: a `tower::Service` over HTTP requests, for a tonic (or axum) router.
#[derive(Clone, Debug)]
pub struct AdsService {
    shared: Arc<Shared>,
}

impl AdsService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        AdsService { shared }
    }

    /// Answers one HTTP request: opens a stream, or refuses it with a trailers-only status.
    pub fn handle(&self, request: http::Request<Body>) -> http::Response<Body> {
        match request.uri().path() {
            SOTW_PATH => self.open::<sotw::Sotw>(request),
            DELTA_PATH => self.open::<delta::Delta>(request),
            _ => Status::unimplemented("").into_http(),
        }
    }

    fn open<R>(&self, request: http::Request<Body>) -> http::Response<Body>
    where
        R: Responder<Response = Frame>,
        R::Request: prost::Message + Default,
    {
        // A stream opened on a connection told to go away, before it went.
        if *self.shared.shutdown.borrow() {
            return Status::unavailable(crate::server::SHUTTING_DOWN).into_http();
        }
        if let Some(encoding) = request.headers().get("grpc-encoding")
            && encoding != "identity"
        {
            return Status::unimplemented(format!(
                "Content is compressed with `{}` which isn't supported",
                encoding.to_str().unwrap_or("?")
            ))
            .into_http();
        }
        // Counted open from now, on its connection too (which is not idle while it is).
        let on_connection = request
            .extensions()
            .get::<crate::drain::AdsConnectInfo>()
            .map(|c| c.stream_opened());
        let open = OpenStream::new(self.shared.metrics.clone());
        let limits = &self.shared.limits.stream;
        let body = Budgeted::new(
            request.into_body(),
            self.shared.pending_requests.clone(),
            limits.clone(),
            self.shared.metrics.clone(),
        );
        let requests = Streaming::new_request(
            ProstDecoder::<R::Request>(PhantomData),
            body,
            None,
            Some(limits.max_request_bytes),
        );
        // One slot: the stream task computes a response only when the previous one left.
        let (tx, rx) = mpsc::channel(1);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let _open = (open, on_connection);
            core::drive::<R>(shared, requests, tx).await;
        });
        let mut response = http::Response::new(Body::new(ResponseBody::new(rx)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        response
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE;
}

impl tonic::codegen::Service<http::Request<Body>> for AdsService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        std::future::ready(Ok(self.handle(request)))
    }
}

/// Counts a stream in `lanyard_xds_open_streams` while it lives.
#[derive(Debug)]
struct OpenStream(Arc<crate::metrics::Metrics>);

impl OpenStream {
    fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        metrics
            .open_streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenStream(metrics)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0
            .open_streams
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Decodes requests with prost.
struct ProstDecoder<M>(PhantomData<M>);

impl<M: prost::Message + Default + Send + 'static> Decoder for ProstDecoder<M> {
    type Item = M;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        // INTERNAL, as gRPC's status code table has it for "Error parsing request proto"
        // (grpc/grpc doc/statuscodes.md).
        M::decode(src).map(Some).map_err(|e| {
            Status::internal(format!(
                "the request is not a valid {}: {e}",
                std::any::type_name::<M>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message")
            ))
        })
    }
}

/// A response stream's body: each frame's chunks as HTTP/2 data, then the status as
/// trailers (OK when the stream task ends without an error).
#[derive(Debug)]
pub struct ResponseBody {
    rx: mpsc::Receiver<Result<Frame, Status>>,
    chunks: std::vec::IntoIter<Bytes>,
    done: bool,
}

impl ResponseBody {
    /// Sends what `rx` carries.
    pub fn new(rx: mpsc::Receiver<Result<Frame, Status>>) -> Self {
        ResponseBody {
            rx,
            chunks: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.chunks.next() {
                return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let status = match ready!(this.rx.poll_recv(cx)) {
                Some(Ok(frame)) => {
                    this.chunks = frame.into_chunks().into_iter();
                    continue;
                }
                Some(Err(status)) => status,
                None => Status::new(Code::Ok, ""),
            };
            this.done = true;
            this.rx.close();
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers(&status)))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.chunks.len() == 0
    }
}

fn trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.clear();
        let _ = Status::internal("invalid status").add_header(&mut trailers);
    }
    trailers
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use http_body::Body as _;

    use super::*;

    async fn next(body: &mut ResponseBody) -> Option<http_body::Frame<Bytes>> {
        poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|f| f.unwrap())
    }

    #[tokio::test]
    async fn frames_go_out_as_their_chunks_then_the_status_as_trailers() {
        let (tx, rx) = mpsc::channel(1);
        let mut body = ResponseBody::new(rx);
        assert!(!body.is_end_stream());
        let shared = Bytes::from_static(b"\x12\x00");
        let frame = Frame::sotw("v", "t", "1", shared.clone());
        let chunks = frame.clone().into_chunks();
        tx.send(Ok(frame)).await.unwrap();
        let first = next(&mut body).await.unwrap().into_data().unwrap();
        assert_eq!(first, chunks[0]);
        let second = next(&mut body).await.unwrap().into_data().unwrap();
        assert_eq!(second.as_ptr(), shared.as_ptr());
        tx.send(Err(Status::invalid_argument("no namespace")))
            .await
            .unwrap();
        let trailers = next(&mut body).await.unwrap().into_trailers().unwrap();
        let status = Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "no namespace");
        assert!(body.is_end_stream());
        assert!(next(&mut body).await.is_none());
        // The stream task sees the body go.
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn a_stream_that_ends_ends_with_ok() {
        let (tx, rx) = mpsc::channel(1);
        let mut body = ResponseBody::new(rx);
        drop(tx);
        let trailers = next(&mut body).await.unwrap().into_trailers().unwrap();
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        assert!(next(&mut body).await.is_none());
    }
}
