//! Raw HTTP/2 (the `h2` crate tonic and hyper are built on) for what a gRPC client library
//! would not do: streams that never send a request, messages that never end, connections
//! that never send the preface.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The SotW ADS method.
pub const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// An HTTP/2 connection to the ADS port; its driver task ends with it.
pub struct Connection {
    send: SendRequest<Bytes>,
    driver: tokio::task::JoinHandle<()>,
    /// Streams opened and still held.
    streams: Vec<Held>,
}

/// One stream we opened: its request side, and its response as far as it has come.
struct Held {
    send: Option<h2::SendStream<Bytes>>,
    response: Response,
}

enum Response {
    Waiting(h2::client::ResponseFuture),
    Body(h2::RecvStream),
    Ended,
}

impl Response {
    /// Whether the server has ended the stream (a status, a reset or a closed
    /// connection), reading and dropping what it sent.
    fn ended(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        use std::future::Future;
        use std::task::Poll;
        loop {
            match self {
                Response::Ended => return true,
                Response::Waiting(future) => match std::pin::Pin::new(future).poll(cx) {
                    Poll::Pending => return false,
                    Poll::Ready(Ok(response)) => *self = Response::Body(response.into_body()),
                    Poll::Ready(Err(_)) => *self = Response::Ended,
                },
                Response::Body(body) => match body.poll_data(cx) {
                    Poll::Pending => return false,
                    Poll::Ready(Some(Ok(data))) => {
                        let _ = body.flow_control().release_capacity(data.len());
                    }
                    Poll::Ready(None | Some(Err(_))) => *self = Response::Ended,
                },
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn grpc_request(address: SocketAddr) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}{SOTW_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request")
}

impl Connection {
    /// Connects and completes the HTTP/2 handshake (the server's SETTINGS included).
    pub async fn open(address: SocketAddr) -> anyhow::Result<Connection> {
        let tcp = TcpStream::connect(address).await?;
        let (send, connection) = h2::client::Builder::new()
            // Our own receive windows do not matter; the server's limits do.
            .initial_max_send_streams(1)
            .handshake::<_, Bytes>(tcp)
            .await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let send = send.ready().await?;
        // The server's SETTINGS (its `max_concurrent_streams`) come with the handshake.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Connection {
            send,
            driver,
            streams: Vec::new(),
        })
    }

    /// Opens up to `count` ADS streams that send their headers and nothing else; stops
    /// early when the server does not let one more open within a second (its advertised
    /// `max_concurrent_streams`) or refuses. Returns how many were opened.
    pub async fn open_idle_streams(&mut self, address: SocketAddr, count: usize) -> usize {
        // One handle throughout: h2 tells only the handle that queued a stream over the
        // server's limit that it must wait (a clone would be ready at once).
        let mut handle = self.send.clone();
        let before = self.streams.len();
        // h2 queues streams over the server's limit in the client, unsent: open no more
        // than the server lets through.
        let room = handle.current_max_send_streams().saturating_sub(before);
        for _ in 0..count.min(room) {
            let ready = tokio::time::timeout(Duration::from_secs(1), handle.ready());
            let Ok(Ok(ready)) = ready.await else {
                // The last stream waits for a slot the server does not give: not opened.
                if self.streams.len() > before {
                    self.streams.pop();
                }
                break;
            };
            handle = ready;
            match handle.send_request(grpc_request(address), false) {
                Ok((response, stream)) => self.streams.push(Held {
                    send: Some(stream),
                    response: Response::Waiting(response),
                }),
                Err(_) => break,
            }
        }
        self.streams.len()
    }

    /// Opens `count` streams, each sending the start of a gRPC message that declares
    /// `declared` bytes and then up to `send` bytes of it, never the rest. Returns the bytes
    /// the server took (as far as its flow control let them in within `bound`).
    pub async fn unfinished_messages(
        &mut self,
        address: SocketAddr,
        count: usize,
        declared: u32,
        send: usize,
        bound: Duration,
    ) -> u64 {
        let before = self.streams.len();
        self.open_idle_streams(address, count).await;
        let chunk = Bytes::from(vec![0u8; 64 << 10]);
        let mut header = vec![0u8];
        header.extend_from_slice(&declared.to_be_bytes());
        let deadline = tokio::time::Instant::now() + bound;
        let mut tasks = Vec::new();
        for held in &mut self.streams[before..] {
            let Some(mut stream) = held.send.take() else {
                continue;
            };
            let chunk = chunk.clone();
            let header = Bytes::from(header.clone());
            tasks.push(tokio::spawn(async move {
                let mut sent = 0u64;
                if stream.send_data(header, false).is_err() {
                    return (sent, stream);
                }
                while (sent as usize) < send {
                    let piece = chunk.slice(..chunk.len().min(send - sent as usize));
                    stream.reserve_capacity(piece.len());
                    let capacity = std::future::poll_fn(|cx| stream.poll_capacity(cx));
                    match tokio::time::timeout_at(deadline, capacity).await {
                        Ok(Some(Ok(n))) if n > 0 => {
                            let n = n.min(piece.len());
                            if stream.send_data(piece.slice(..n), false).is_err() {
                                break;
                            }
                            sent += n as u64;
                        }
                        Ok(Some(Ok(_))) => continue,
                        _ => break,
                    }
                }
                (sent, stream)
            }));
        }
        let mut total = 0;
        for (task, held) in tasks.into_iter().zip(&mut self.streams[before..]) {
            if let Ok((sent, stream)) = task.await {
                total += sent;
                // Held open until the connection goes.
                held.send = Some(stream);
            }
        }
        total
    }

    /// How many of the held streams the server has ended or reset.
    pub async fn streams_ended(&mut self) -> usize {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(
                self.streams
                    .iter_mut()
                    .map(|held| held.response.ended(cx))
                    .filter(|ended| *ended)
                    .count(),
            )
        })
        .await
    }

    /// Of the streams not ended: how many have no response headers yet.
    pub fn streams_unanswered(&self) -> usize {
        self.streams
            .iter()
            .filter(|held| matches!(held.response, Response::Waiting(_)))
            .count()
    }

    /// Whether the connection has ended.
    pub fn closed(&self) -> bool {
        self.driver.is_finished()
    }

    /// Streams held.
    pub fn held(&self) -> usize {
        self.streams.len()
    }
}

/// A TCP connection that sends nothing; [`Silent::closed`] tells whether the server
/// has closed it.
pub struct Silent(TcpStream);

impl Silent {
    /// Connects.
    pub async fn connect(address: SocketAddr) -> std::io::Result<Silent> {
        Ok(Silent(TcpStream::connect(address).await?))
    }

    /// Reads (and drops) what the server sends; true once it has closed the connection.
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_millis(1), self.0.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}
