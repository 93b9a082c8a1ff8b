//! The HTTPS listener: accepts TCP connections, completes the TLS handshake and serves the
//! [`endpoints::router`](crate::endpoints::router) over HTTP/1.1 on each connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::{Error, Result};

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound HTTPS listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
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
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes. Connections already open are left to finish on
    /// their own tasks.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors and the like: wait a little, keep serving.
                    Err(e) if is_transient(&e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(e) => return Err(Error::Accept(e)),
                },
            };
            let acceptor = self.acceptor.clone();
            let service = TowerToHyperService::new(self.router.clone());
            let span = tracing::debug_span!("connection", %peer);
            tokio::spawn(
                async move {
                    let tls =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        };
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await
                    {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                .instrument(span),
            );
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e
        .raw_os_error()
        .is_some_and(|code| code == 23 || code == 24) // ENFILE, EMFILE
}
