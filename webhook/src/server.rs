//! The HTTPS listener: accepts TCP connections, completes the TLS handshake and serves the
//! [`endpoints::router`](crate::endpoints::router) over HTTP/1.1 on each connection.
//!
//! A client has [`DEFAULT_HEADER_READ_TIMEOUT`] to send a request's headers, counted from
//! when the connection starts waiting for them, so the same bound closes a keep-alive
//! connection left idle (hyper v1.12 `proto/h1/conn.rs`, `poll_read_head`, arms the timer
//! before the first byte of each request; hyper enforces it only with a timer set, which
//! this server sets). On shutdown the listener closes, each connection finishes the request
//! it is serving and closes (hyper's `Connection::graceful_shutdown`), and connections still
//! open after the shutdown grace period are dropped.
//!
//! At most [`DEFAULT_MAX_CONNECTIONS`] connections are open at once: past that the server
//! stops accepting until one closes (the rest wait in the kernel's backlog), as tokio's
//! mini-redis does (v0.4 `src/server.rs`, a semaphore permit taken before `accept`). An
//! accept error other than a failed connection (out of file descriptors and the like) is
//! logged and followed by one second without accepting, as axum's `serve` does (axum v0.8
//! `src/serve/listener.rs`, `handle_accept_error`), instead of a loop that spins.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::{Error, Result};

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers, and how long an idle keep-alive
/// connection stays open: the API server's default webhook timeout.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How many connections are open at once at most. The API server keeps a few keep-alive
/// connections per replica; 512 stays under the common soft limit of 1024 file
/// descriptors with room for the process's own, so clients run into this bound, not into
/// `EMFILE`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// How long accepting pauses after an accept error that is not a failed connection.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// A bound HTTPS listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    header_read_timeout: Duration,
    shutdown_grace: Duration,
    max_connections: usize,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port, see [`Server::local_addr`]) to serve `router`.
    pub async fn bind(addr: SocketAddr, tls: Arc<ServerConfig>, router: Router) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| Error::Bind { addr, error })?;
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(tls),
            router,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        })
    }

    /// Sets how long a client has to send a request's headers (and an idle connection
    /// stays open).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets how many connections are open at once at most (at least 1).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Sets how long shutdown waits for requests in flight.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains: stops accepting, lets every request
    /// in flight finish (closing idle connections at once) and returns when all connections
    /// are closed, or after the shutdown grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let (draining, drain) = watch::channel(false);
        let mut connections = JoinSet::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        loop {
            let slot = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next() => continue,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next() => continue,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // The client gave up before the accept: nothing is wrong with the server.
                    Err(e) if is_connection_error(&e) => continue,
                    // Out of file descriptors and the like: pause, then keep serving.
                    Err(e) => {
                        tracing::error!(error = %e, pause = ?ACCEPT_ERROR_PAUSE, "accept failed");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        }
                    }
                },
            };
            let acceptor = self.acceptor.clone();
            let service = TowerToHyperService::new(self.router.clone());
            let span = tracing::debug_span!("connection", %peer);
            let mut drain = drain.clone();
            let header_read_timeout = self.header_read_timeout;
            connections.spawn(
                async move {
                    let _slot = slot;
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    let tls = tokio::select! {
                        handshake = handshake => match handshake {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        },
                        () = draining_began(&mut drain) => return,
                    };
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_read_timeout)
                        .serve_connection(TokioIo::new(tls), service);
                    let mut connection = std::pin::pin!(connection);
                    let ended = tokio::select! {
                        ended = connection.as_mut() => ended,
                        () = draining_began(&mut drain) => {
                            // Finish the request in flight (if any), then close.
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                .instrument(span),
            );
        }
        drop(self.listener);
        draining.send_replace(true);
        let open = connections.len();
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = connections.len(),
                grace = ?self.shutdown_grace,
                "requests still in flight at the end of the shutdown grace period: dropped"
            );
        } else if open > 0 {
            tracing::info!(connections = open, "connections drained");
        }
        Ok(())
    }
}

/// Resolves once shutdown began (or the server is gone).
async fn draining_began(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|d| *d).await;
}

/// An accept error that concerns one connection only (axum v0.8 `src/serve/listener.rs`,
/// `is_connection_error`).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_pauses_accepting_and_a_failed_connection_does_not() {
        use std::io::{Error, ErrorKind};
        // EMFILE and ENFILE (Linux): the process or the system is out of descriptors.
        for code in [24, 23] {
            assert!(!is_connection_error(&Error::from_raw_os_error(code)));
        }
        for kind in [ErrorKind::ConnectionAborted, ErrorKind::ConnectionReset] {
            assert!(is_connection_error(&Error::from(kind)));
        }
    }
}
