//! What one client may make the server hold, do or log (`lanyard_xds::limits`), over real
//! sockets: each attack is refused or bounded, and the server says which limit.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use lanyard_xds::Limits;
use lanyard_xds::limits::{ConnectionLimits, StreamLimits};
use lanyard_xds::testing::client::{DeltaClient, node};
use lanyard_xds::testing::{TestServer, WAIT};
use tonic::Code;
use tracing_subscriber::fmt::MakeWriter;

use crate::mesh::*;

/// What the server logs while the guard lives (INFO and above), on this thread: a
/// `#[tokio::test]` runs the server's tasks on the test's thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn delta_refuses_the_17th_unknown_type_even_after_answering_the_others() {
    let server = TestServer::start(&base()).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    for i in 0..16 {
        let type_url = format!("type.googleapis.com/example.Unknown{i}");
        client.subscribe(&type_url, &["a"], &[]);
        let response = client.recv().await;
        assert_eq!(response.type_url, type_url);
        assert_eq!(response.removed_resources, ["a"]);
    }
    client.subscribe("type.googleapis.com/example.Unknown16", &[], &[]);
    let status = client.next().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("too many type URLs"),
        "{status:?}"
    );
    assert_eq!(server.server.metrics().refusals("unknown_types"), 1);
}

#[tokio::test]
async fn the_same_version_nacked_a_thousand_times_is_one_warning() {
    let (log, _guard) = Captured::start();
    let server = TestServer::start(&base()).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(CDS, &[], &[]);
    let clusters = client.recv().await;
    // Each with another message: the client cannot make a warning new by changing it.
    let filler = "x".repeat(4_000);
    for i in 0..1000 {
        client.nack(&clusters, &format!("rejected ({i}): {filler}"));
    }
    // Requests of a stream are handled in order: once this is answered, so were the NACKs.
    client.subscribe(LDS, &[], &[]);
    client.recv().await;
    let text = log.text();
    let warnings = text.lines().filter(|l| l.contains("NACK")).count();
    assert_eq!(warnings, 1, "{}", &text[..text.len().min(4000)]);
    // The proxy's message is clipped, not copied whole.
    assert!(text.len() < 16 << 10, "{} bytes of log", text.len());
    assert_eq!(
        server
            .server
            .metrics()
            .of(lanyard_xds::ResourceType::Cluster)
            .nacks
            .load(std::sync::atomic::Ordering::Relaxed),
        1000
    );
}

#[tokio::test]
async fn a_megabyte_node_id_gives_bounded_logs_and_statuses() {
    let (log, _guard) = Captured::start();
    // Ids this long are refused by default (--node-id-max-bytes): an operator who raised the
    // limit still gets bounded logs.
    let mut limits = Limits::default();
    limits.node.id_bytes = 2 << 20;
    let server = TestServer::start_limited(&base(), limits).await;
    // Accepted (pod.namespace): the stream's span carries the id, clipped.
    let long = format!("{}.shop", "a".repeat(1 << 20));
    let mut client = DeltaClient::connect(server.ads, node(&long)).await;
    client.subscribe(CDS, &[], &[]);
    client.recv().await;
    client.send(DeltaDiscoveryRequest::default());
    let status = client.next().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // Refused (no namespace): the log and the status quote a clipped id.
    let refused = "\u{1}".repeat(1 << 20);
    let mut client = DeltaClient::connect(server.ads, node(&refused)).await;
    client.subscribe(CDS, &[], &[]);
    let status = client.next().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().len() < 4 << 10,
        "{}",
        status.message().len()
    );
    let text = log.text();
    assert!(text.contains("ending the stream"), "{text}");
    assert!(text.contains("refusing an ADS stream"), "{text}");
    assert!(text.len() < 32 << 10, "{} bytes of log", text.len());
}

#[tokio::test]
async fn a_stream_that_sends_no_request_is_ended_and_shows_as_open_meanwhile() {
    let server = TestServer::start_limited(
        &base(),
        Limits {
            stream: StreamLimits {
                first_request_timeout: Duration::from_millis(300),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    let metrics = server.server.metrics();
    tokio::time::timeout(WAIT, async {
        while metrics
            .open_streams
            .load(std::sync::atomic::Ordering::Relaxed)
            != 1
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the silent stream is not counted open");
    let status = client.next().await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("--stream-first-request-timeout"),
        "{status:?}"
    );
    assert_eq!(metrics.refusals("first_request_timeout"), 1);
    // A proxy that asks at once is served.
    let mut proxy = DeltaClient::connect(server.ads, node(CART_0)).await;
    proxy.subscribe(CDS, &[], &[]);
    proxy.recv().await;
}

/// The first bytes of a gRPC message: its header announcing `len` bytes, then `sent` of
/// them.
fn unfinished(len: usize, sent: usize) -> Bytes {
    let mut buf = Vec::with_capacity(5 + sent);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    buf.resize(5 + sent, 0);
    buf.into()
}

/// Opens a delta stream over raw h2 and sends `data` as its request body, without ending
/// it; returns the response future and the request sender (kept open by the caller).
async fn raw_h2_partial(
    server: &TestServer,
    data: Bytes,
) -> (
    h2::client::ResponseFuture,
    h2::SendStream<Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(server.ads).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}{}",
            server.ads,
            lanyard_xds::ads::http::DELTA_PATH
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = h2.send_request(request, false).unwrap();
    send.reserve_capacity(data.len());
    send.send_data(data, false).unwrap();
    (response, send, driver)
}

#[tokio::test]
async fn requests_still_arriving_share_a_budget_and_a_stream_over_it_is_ended() {
    let server = TestServer::start_limited(
        &base(),
        Limits {
            stream: StreamLimits {
                max_pending_request_bytes: 256 << 10,
                free_request_bytes: 16 << 10,
                pending_bytes_wait: Duration::from_millis(300),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    // 1 MiB announced, 200 KiB sent: 184 KiB charged, within the budget; it waits for
    // the rest.
    let (first, _first_send, _d1) = raw_h2_partial(&server, unfinished(1 << 20, 200 << 10)).await;
    tokio::time::timeout(WAIT, async {
        while server.server.pending_request_bytes() < 150 << 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first partial request was not charged");
    // A second one of the same: the budget has 72 KiB left, it waits, then is ended.
    let (second, _second_send, _d2) = raw_h2_partial(&server, unfinished(1 << 20, 200 << 10)).await;
    let response = tokio::time::timeout(WAIT, second)
        .await
        .expect("no response")
        .unwrap();
    let mut body = response.into_body();
    let trailers = tokio::time::timeout(WAIT, async {
        while body.data().await.is_some() {}
        body.trailers().await
    })
    .await
    .expect("the stream over the budget was not ended")
    .unwrap()
    .unwrap();
    let status = tonic::Status::from_header_map(&trailers).unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-pending-request-bytes"),
        "{status:?}"
    );
    assert_eq!(server.server.metrics().refusals("pending_request_bytes"), 1);
    // Everyone else is unaffected: a proxy is served while the first still holds its part.
    let mut proxy = DeltaClient::connect(server.ads, node(CART_0)).await;
    proxy.subscribe(CDS, &[], &[]);
    proxy.recv().await;
    // What the first holds goes back when it leaves.
    drop((first, _first_send, _d1));
    tokio::time::timeout(WAIT, async {
        while server.server.pending_request_bytes() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the budget was not given back");
}

#[tokio::test]
async fn a_connection_advertises_its_stream_limit() {
    let server = TestServer::start_limited(
        &base(),
        Limits {
            connection: ConnectionLimits {
                max_streams_per_connection: 3,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(server.ads).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let h2 = tokio::time::timeout(WAIT, h2.ready())
        .await
        .unwrap()
        .unwrap();
    // The client learns the server's SETTINGS once the connection is up; until then it
    // assumes no limit.
    let advertised = tokio::time::timeout(WAIT, async {
        loop {
            let max = h2.current_max_send_streams();
            if max != usize::MAX {
                return max;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("no stream limit in the server's SETTINGS");
    assert_eq!(advertised, 3);
    drop(h2);
}

/// Resident memory of this process, in bytes (Linux).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A measurement, run by hand (`--run-ignored only`): how much 20 streams that each send
/// 8 MiB of an unfinished 16 MiB request add to the resident memory, with a 16 MiB budget.
#[tokio::test]
#[ignore = "a measurement: prints figures"]
async fn measure_memory_of_unfinished_requests() {
    let server = TestServer::start_limited(
        &base(),
        Limits {
            stream: StreamLimits {
                max_pending_request_bytes: 16 << 20,
                pending_bytes_wait: Duration::from_secs(600),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let data = unfinished(16 << 20, 8 << 20);
    let before = rss();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(raw_h2_partial(&server, data.clone()).await);
    }
    // Let the data flow until it stops (every stream done or held by flow control).
    let mut last = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss();
        if now == last {
            break;
        }
        last = now;
    }
    eprintln!(
        "20 streams x 8 MiB unfinished: RSS +{} MiB (held by the budget: {} MiB)",
        (rss().saturating_sub(before)) >> 20,
        server.server.pending_request_bytes() >> 20
    );
    drop(held);
}
