//! Streams whose requests cannot be read end with a real gRPC status, seen from a raw
//! client that writes the request bytes itself.

use bytes::{BufMut, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use lanyard_xds::ads::http::{DELTA_PATH, MAX_REQUEST_SIZE};
use lanyard_xds::testing::client::node;
use lanyard_xds::testing::{TestServer, WAIT};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status};

use crate::mesh::*;

/// Requests go out as the bytes given; responses are decoded.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct ResponseDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = DeltaDiscoveryResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        DeltaDiscoveryResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = DeltaDiscoveryResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

/// Opens a delta stream, sends `messages`, and returns the status the stream ends with,
/// after the responses before it.
async fn status_after(server: &TestServer, messages: Vec<Bytes>) -> (Status, usize) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.ads))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let requests = tokio_stream::iter(messages);
    // Keep the request stream open after the messages: the server ends the stream, not us.
    let requests = tokio_stream::StreamExt::chain(requests, tokio_stream::pending());
    let mut responses = grpc
        .streaming(
            tonic::Request::new(requests),
            PathAndQuery::from_static(DELTA_PATH),
            RawCodec,
        )
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    loop {
        match tokio::time::timeout(WAIT, responses.message()).await {
            Ok(Ok(Some(_))) => received += 1,
            Ok(Ok(None)) => return (Status::ok(""), received),
            Ok(Err(status)) => return (status, received),
            Err(_) => panic!("the stream did not end within {WAIT:?}"),
        }
    }
}

fn valid_first() -> Bytes {
    DeltaDiscoveryRequest {
        node: Some(node(CART_0)),
        type_url: CDS.to_string(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

#[tokio::test]
async fn a_request_that_does_not_parse_ends_the_stream_with_internal() {
    let server = TestServer::start(&base()).await;
    // Field 1 (node), length-delimited, says 5 bytes and carries 1.
    let malformed = Bytes::from_static(&[0x0a, 0x05, b'a']);
    let (status, received) = status_after(&server, vec![malformed.clone()]).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status
            .message()
            .contains("not a valid DeltaDiscoveryRequest"),
        "{status:?}"
    );
    assert_eq!(received, 0);
    // The same after a good first request: the CDS response comes, then the status.
    let (status, received) = status_after(&server, vec![valid_first(), malformed]).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(received <= 1);
}

#[tokio::test]
async fn a_request_over_the_size_limit_ends_the_stream_with_resource_exhausted() {
    let server = TestServer::start(&base()).await;
    let huge = Bytes::from(vec![0u8; MAX_REQUEST_SIZE + 1]);
    let (status, _) = status_after(&server, vec![valid_first(), huge]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("size limit"), "{status:?}");
}
