//! Test support (the `testing` feature): an ADS client on envoy-types + tonic for both
//! protocols ([`client`]), a server on `127.0.0.1:0` with a fast debounce ([`TestServer`]),
//! a bare HTTP GET for the debug endpoint, and the model builders of the unit tests
//! ([`crate::fixtures`]).

pub mod client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lanyard_model::Model;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use crate::fixtures as model;
use crate::status::StreamStatus;
use crate::{ServerConfig, XdsOptions, XdsServer, translate};

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// An xDS server serving ADS and the debug endpoint on ephemeral localhost ports.
#[derive(Debug)]
pub struct TestServer {
    /// The server.
    pub server: XdsServer,
    /// Where ADS listens.
    pub ads: SocketAddr,
    /// Where the debug endpoint listens.
    pub debug: SocketAddr,
}

impl TestServer {
    /// Starts a server and publishes `model` (waits until it is served).
    pub async fn start(model: &Model) -> TestServer {
        Self::start_with(model, XdsOptions::default()).await
    }

    /// Starts a server with these translation options.
    pub async fn start_with(model: &Model, options: XdsOptions) -> TestServer {
        Self::start_configured(model, options, crate::Limits::default()).await
    }

    /// Starts a server with these limits.
    pub async fn start_limited(model: &Model, limits: crate::Limits) -> TestServer {
        Self::start_configured(model, XdsOptions::default(), limits).await
    }

    async fn start_configured(
        model: &Model,
        options: XdsOptions,
        limits: crate::Limits,
    ) -> TestServer {
        let server = XdsServer::start(ServerConfig {
            debounce: Duration::from_millis(2),
            max_delay: Duration::from_millis(20),
            limits,
            ..ServerConfig::default()
        });
        let ads_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ADS");
        let debug_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind debug");
        let ads = ads_listener.local_addr().expect("ADS address");
        let debug = debug_listener.local_addr().expect("debug address");
        let s = server.clone();
        tokio::spawn(async move { s.serve_ads(ads_listener).await });
        let s = server.clone();
        tokio::spawn(async move { s.serve_debug(debug_listener).await });
        let test = TestServer { server, ads, debug };
        test.publish_with(model, &options).await;
        test
    }

    /// Publishes a new model and waits until its snapshot is served; returns its generation.
    pub async fn publish(&self, model: &Model) -> u64 {
        self.publish_with(model, &XdsOptions::default()).await
    }

    async fn publish_with(&self, model: &Model, options: &XdsOptions) -> u64 {
        let mut snapshots = self.server.snapshots();
        let before = snapshots
            .borrow_and_update()
            .as_ref()
            .map_or(0, |s| s.generation());
        self.server.publish(translate(model, options));
        let published = tokio::time::timeout(
            WAIT,
            snapshots.wait_for(|s| s.as_ref().is_some_and(|s| s.generation() > before)),
        )
        .await
        .expect("no snapshot published in time")
        .expect("the server stopped");
        published.as_ref().map_or(0, |s| s.generation())
    }

    /// Waits (boundedly, polling) until a stream of `node_id` satisfies `f`.
    pub async fn wait_for_stream(
        &self,
        node_id: &str,
        what: &str,
        f: impl Fn(&StreamStatus) -> bool,
    ) -> Arc<StreamStatus> {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let streams = self.server.streams();
                if let Some(s) = streams
                    .into_iter()
                    .find(|s| s.identity.node_id == node_id && f(s))
                {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("stream {node_id}: not {what} within {WAIT:?}"))
    }

    /// Waits until the stream of `node_id` has queued all it owes for snapshot `generation`.
    pub async fn wait_synced(&self, node_id: &str, generation: u64) {
        self.wait_for_stream(node_id, &format!("synced to snapshot {generation}"), |s| {
            s.synced_generation() >= generation
        })
        .await;
    }

    /// Waits until the stream of `node_id` has recorded an ACK of `version` for `ty`.
    pub async fn wait_acked(&self, node_id: &str, ty: &str, version: &str) {
        self.wait_for_stream(node_id, &format!("{ty} ACKed at {version}"), |s| {
            s.type_sync(ty)
                .is_some_and(|t| t.version_acked.as_deref() == Some(version))
        })
        .await;
    }

    /// `GET path` on the debug endpoint: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.debug, path).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

/// A bare HTTP/1.1 GET: (status, body). Panics on I/O errors or after [`WAIT`].
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("HTTP GET timed out")
        .expect("HTTP GET failed");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
