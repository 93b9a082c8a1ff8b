//! The ADS connections being served: how many may be open, how long one may stay idle or
//! open at all, and closing those still open at the end of shutdown's grace period.
//!
//! tonic owns each connection once accepted and offers no way to close one. Each accepted
//! socket is kept twice: the tokio stream tonic serves, and a duplicate handle of the same
//! socket kept here. Shutting the duplicate down (`shutdown(2)`, both directions) ends the
//! socket for both: the connection's task reads end-of-file and ends.
//!
//! - **Connection limit.** A connection accepted while [`ConnectionLimits::max_connections`]
//!   are open is closed at once (counted: `limit="connections"`).
//! - **Idle.** A connection with no ADS stream for [`ConnectionLimits::idle_timeout`] is
//!   closed: also one that never sent the HTTP/2 preface, or whose streams all ended. hyper
//!   v1 has no such timeout for HTTP/2 (its header-read timeout is HTTP/1's); tonic v0.14
//!   has none either. The streams of a connection are known from the connection info tonic
//!   puts in each request's extensions ([`AdsConnectInfo`]).
//! - **Age.** tonic v0.14.9 (transport/server/mod.rs, `connection_timeout_future`) sends a
//!   GOAWAY at `max_connection_age` only when no `max_connection_age_grace` is set; with
//!   one, it sleeps age + grace and closes without a GOAWAY first. So tonic is given the
//!   age alone (GOAWAY), and the connection is closed here at age + grace, as grpc-go's
//!   `MaxConnectionAge` / `MaxConnectionAgeGrace` do (v1.6x
//!   internal/transport/http2_server.go, `keepalive`).
//! - **Accept errors.** Out of file descriptors (EMFILE, ENFILE) or memory, accepting
//!   again at once fails again: the loop waits [`ACCEPT_BACKOFF`] first, as hyper's
//!   former server and axum v0.8 `serve` (serve/listener.rs, `handle_accept_error`) do,
//!   instead of spinning (tonic v0.14.9 retries at once). Errors about one connection
//!   (reset before it was accepted) are skipped.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;

/// How long the accept loop waits after an error that is not about one connection.
pub const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The connections open now, each by a duplicate handle of its socket.
#[derive(Debug)]
pub(crate) struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, std::net::TcpStream>>,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
}

impl Connections {
    /// No connection yet; at most `limits` of them.
    pub(crate) fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Self {
        Connections {
            next: AtomicU64::new(0),
            open: Mutex::default(),
            limits,
            metrics,
        }
    }

    /// The connections `listener` accepts, each tracked here until it is dropped; those
    /// over the limit are closed at once.
    pub(crate) fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Tracked>> + Send + 'static {
        let listener = Arc::new(listener);
        accept_loop(move || {
            let listener = listener.clone();
            async move { listener.accept().await.map(|(io, _)| io) }
        })
        .filter_map(move |io| std::future::ready(self.track(io).transpose()))
    }

    fn track(self: &Arc<Self>, io: TcpStream) -> io::Result<Option<Tracked>> {
        if lock(&self.open).len() >= self.limits.max_connections {
            self.metrics.refused("connections");
            debug!(
                max = self.limits.max_connections,
                "closing an ADS connection: the server has as many as --max-connections allows"
            );
            return Ok(None);
        }
        let std = io.into_std()?;
        let handle = match std.try_clone() {
            Ok(handle) => handle,
            // Out of file descriptors: a connection that cannot be closed early is not served.
            Err(e) => {
                self.metrics.refused("file_descriptors");
                debug!(error = %e, "cannot duplicate an ADS socket: closing it");
                return Ok(None);
            }
        };
        let io = TcpStream::from_std(std)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(id, handle);
        self.metrics
            .open_connections
            .fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::default());
        tokio::spawn(watch(self.clone(), id, state.clone()));
        Ok(Some(Tracked {
            io,
            id,
            state,
            connections: self.clone(),
        }))
    }

    /// Shuts down every connection still open; returns how many there were.
    pub(crate) fn close_all(&self) -> usize {
        let open = std::mem::take(&mut *lock(&self.open));
        for socket in open.values() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        open.len()
    }

    /// Shuts down one connection; whether it was open.
    fn close(&self, id: u64) -> bool {
        match lock(&self.open).remove(&id) {
            Some(socket) => {
                let _ = socket.shutdown(std::net::Shutdown::Both);
                true
            }
            None => false,
        }
    }

    /// How many connections are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.open).len()
    }
}

/// Closes connection `id` once it has been idle (no stream) for the idle timeout, or at
/// its maximum age plus grace; ends when the connection does.
async fn watch(connections: Arc<Connections>, id: u64, state: Arc<ConnState>) {
    let limits = &connections.limits;
    let closed_at = limits
        .max_age
        .map(|age| tokio::time::Instant::now() + age + limits.max_age_grace);
    let aged = async {
        match closed_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(aged);
    let mut seen = state.activity.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            () = state.gone.notified() => return,
            () = &mut aged => {
                if connections.close(id) {
                    debug!("closed an ADS connection at its maximum age and grace (--max-connection-age)");
                }
                return;
            }
            () = tokio::time::sleep(limits.idle_timeout) => {
                let now = state.activity.load(Ordering::Relaxed);
                if now == seen && state.streams.load(Ordering::Relaxed) == 0 {
                    if connections.close(id) {
                        connections.metrics.refused("idle_timeout");
                        debug!(
                            idle_ms = limits.idle_timeout.as_millis() as u64,
                            "closed an ADS connection with no stream (--connection-idle-timeout)"
                        );
                    }
                    return;
                }
                seen = now;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts what `accept` gives, skipping errors about one connection and waiting
/// [`ACCEPT_BACKOFF`] after any other (out of file descriptors, memory), logged as a
/// warning at most once a minute.
pub(crate) fn accept_loop<T, F, Fut>(accept: F) -> impl Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<T>> + Send,
{
    futures::stream::unfold(
        (accept, None::<tokio::time::Instant>),
        |(mut accept, mut warned)| async move {
            loop {
                match accept().await {
                    Ok(io) => return Some((io, (accept, warned))),
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        let now = tokio::time::Instant::now();
                        if warned.is_none_or(|at| now >= at + Duration::from_secs(60)) {
                            warned = Some(now);
                            warn!(error = %e, backoff_ms = ACCEPT_BACKOFF.as_millis() as u64, "cannot accept ADS connections");
                        } else {
                            debug!(error = %e, "cannot accept ADS connections");
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        },
    )
}

/// Errors about one connection, not the listener (axum v0.8 serve/listener.rs has the same
/// list).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What the connection's streams tell its watcher.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Streams open now.
    streams: AtomicUsize,
    /// Streams opened and closed, ever: unchanged over an idle period means no stream came.
    activity: AtomicU64,
    /// The connection is gone.
    gone: Notify,
}

/// The connection a request came on, as tonic puts it in the request's extensions.
#[derive(Clone, Debug)]
pub struct AdsConnectInfo {
    state: Arc<ConnState>,
}

impl AdsConnectInfo {
    /// A stream opened on this connection; it counts as open until the guard is dropped.
    pub(crate) fn stream_opened(&self) -> StreamOnConnection {
        self.state.streams.fetch_add(1, Ordering::Relaxed);
        self.state.activity.fetch_add(1, Ordering::Relaxed);
        StreamOnConnection(self.state.clone())
    }
}

/// See [`AdsConnectInfo::stream_opened`].
#[derive(Debug)]
pub(crate) struct StreamOnConnection(Arc<ConnState>);

impl Drop for StreamOnConnection {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        self.0.activity.fetch_add(1, Ordering::Relaxed);
    }
}

/// An accepted connection, forgotten by [`Connections`] when dropped.
#[derive(Debug)]
pub(crate) struct Tracked {
    io: TcpStream,
    id: u64,
    state: Arc<ConnState>,
    connections: Arc<Connections>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        lock(&self.connections.open).remove(&self.id);
        self.connections
            .metrics
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
        self.state.gone.notify_one();
    }
}

impl Connected for Tracked {
    type ConnectInfo = AdsConnectInfo;

    fn connect_info(&self) -> AdsConnectInfo {
        AdsConnectInfo {
            state: self.state.clone(),
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn closing_ends_the_served_socket_and_dropping_forgets_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(Connections::new(
            ConnectionLimits::default(),
            Arc::default(),
        ));
        let mut incoming = Box::pin(connections.clone().incoming(listener));
        let _client = TcpStream::connect(address).await.unwrap();
        let mut served = incoming.next().await.unwrap().unwrap();
        assert_eq!(connections.len(), 1);
        // A read that waits on the socket is woken by the shutdown of its duplicate.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let n = served.read(&mut buf).await;
            (n.ok(), served)
        });
        tokio::task::yield_now().await;
        assert_eq!(connections.close_all(), 1);
        let (read, served) = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .expect("the read was not woken")
            .unwrap();
        assert_eq!(read, Some(0), "end of file");
        assert_eq!(connections.len(), 0);
        let _second = TcpStream::connect(address).await.unwrap();
        let second = incoming.next().await.unwrap().unwrap();
        assert_eq!(connections.len(), 1);
        drop((served, second));
        assert_eq!(connections.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_about_the_server_are_retried_once_a_second_not_in_a_loop() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        // Out of file descriptors for the first 100 attempts, then a connection.
        let mut accepted = Box::pin(accept_loop(move || {
            let attempt = counted.fetch_add(1, Ordering::Relaxed);
            async move {
                if attempt < 100 {
                    Err(io::Error::from_raw_os_error(24)) // EMFILE
                } else {
                    Ok(attempt)
                }
            }
        }));
        let waited = tokio::time::timeout(Duration::from_millis(10_500), accepted.next()).await;
        assert!(waited.is_err(), "accepted after {:?} attempts", waited);
        let tried = attempts.load(Ordering::Relaxed);
        assert!((10..=12).contains(&tried), "{tried} attempts in 10.5 s");
        // Errors about one connection are skipped at once.
        let mut reset = 0;
        let mut accepted = Box::pin(accept_loop(move || {
            reset += 1;
            let n = reset;
            async move {
                if n < 100 {
                    Err(io::Error::from(io::ErrorKind::ConnectionReset))
                } else {
                    Ok(n)
                }
            }
        }));
        assert_eq!(accepted.next().await, Some(100));
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_and_one_is_served_once_another_leaves() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let connections = Arc::new(Connections::new(
            ConnectionLimits {
                max_connections: 2,
                ..Default::default()
            },
            metrics.clone(),
        ));
        let mut incoming = Box::pin(connections.clone().incoming(listener));
        let _a = TcpStream::connect(address).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(address).await.unwrap();
        let second = incoming.next().await.unwrap().unwrap();
        assert_eq!(metrics.open_connections.load(Ordering::Relaxed), 2);
        // Past the limit: closed at once, the client reads end-of-file.
        let mut third = TcpStream::connect(address).await.unwrap();
        let next = tokio::spawn(async move {
            let next = incoming.next().await;
            (next, incoming)
        });
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
            .await
            .expect("the connection past the limit was not closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(metrics.refusals("connections"), 1);
        assert_eq!(connections.len(), 2);
        // One leaves: the next is served.
        drop(first);
        assert_eq!(metrics.open_connections.load(Ordering::Relaxed), 1);
        let _fourth = TcpStream::connect(address).await.unwrap();
        let (served, _incoming) = tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("the connection after one left was not accepted")
            .unwrap();
        let served = served.expect("a connection").expect("accepted");
        assert_eq!(connections.len(), 2);
        drop((second, served));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_streams_is_closed_after_the_idle_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let connections = Arc::new(Connections::new(
            ConnectionLimits {
                idle_timeout: Duration::from_secs(60),
                ..Default::default()
            },
            metrics.clone(),
        ));
        let mut incoming = Box::pin(connections.clone().incoming(listener));
        let _idle = TcpStream::connect(address).await.unwrap();
        let idle = incoming.next().await.unwrap().unwrap();
        let _busy = TcpStream::connect(address).await.unwrap();
        let busy = incoming.next().await.unwrap().unwrap();
        let stream = busy.connect_info().stream_opened();
        tokio::time::sleep(Duration::from_secs(125)).await;
        // The idle one is closed (forgotten here), the one with a stream is not.
        assert_eq!(connections.len(), 1);
        assert_eq!(metrics.refusals("idle_timeout"), 1);
        // Once its stream ends, it is idle too.
        drop(stream);
        tokio::time::sleep(Duration::from_secs(125)).await;
        assert_eq!(connections.len(), 0);
        assert_eq!(metrics.refusals("idle_timeout"), 2);
        drop((idle, busy));
    }
}
