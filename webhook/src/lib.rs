//! Lanyard's webhooks, served over HTTPS to the Kubernetes API server.
//!
//! - [`endpoints`]: one module per endpoint (`/convert` for SMI CRD conversion, `/healthz`),
//!   each a thin HTTP handler around a pure function.
//! - [`server`]: the TLS listener (rustls with the ring provider) that serves the router.
//! - [`tls`]: the serving certificate and key, read from PEM files (and read again when
//!   they change, see [`tls::ReloadingCert`]).
//! - [`crds`]: Lanyard's CRDs, built from Rust types; `lanyard-crdgen` writes them to `crds/`.

pub mod crds;
pub mod endpoints;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use server::Server;

/// Why the webhook could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{what}: {message} (expected PEM)")]
    Pem { what: String, message: String },
    #[error("the TLS certificate and key do not make a server configuration: {0}")]
    Tls(rustls::Error),
    #[error("listening on {addr}: {error} (is the port already in use?)")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
