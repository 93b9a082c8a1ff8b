//! `lanyard-webhook`: serves Lanyard's webhooks (`POST /convert`, `GET /healthz`, `GET /metrics`)
//! over HTTPS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lanyard_webhook::{Server, endpoints, tls};

/// How often the certificate files are checked for a new pair.
const CERT_CHECK_PERIOD: Duration = Duration::from_secs(10);

/// Lanyard's HTTPS webhooks for the Kubernetes API server: SMI CRD conversion at /convert.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on: loopback by default; a Kubernetes deployment, where the API
    /// server calls the webhook through its Service, sets `0.0.0.0:9443`.
    #[arg(long, default_value = "127.0.0.1:9443", env = "LANYARD_WEBHOOK_LISTEN")]
    listen: SocketAddr,
    /// Serving certificate chain (PEM), leaf first.
    #[arg(long, env = "LANYARD_WEBHOOK_TLS_CERT")]
    tls_cert: PathBuf,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "LANYARD_WEBHOOK_TLS_KEY")]
    tls_key: PathBuf,
    /// Seconds a client has to send a request's headers; an idle keep-alive connection is
    /// closed after as long.
    #[arg(long, value_name = "SECONDS", default_value_t = lanyard_webhook::server::DEFAULT_HEADER_READ_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout: u64,
    /// On SIGTERM or Ctrl-C, seconds conversions in flight get to finish before the process
    /// exits.
    #[arg(long, value_name = "SECONDS", default_value_t = lanyard_webhook::server::DEFAULT_SHUTDOWN_GRACE.as_secs(), value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_grace: u64,
    /// Connections open at once at most; past it the webhook accepts no more until one
    /// closes.
    #[arg(long, value_name = "COUNT", default_value_t = lanyard_webhook::server::DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let (cert, tls) = tls::ReloadingCert::load(&args.tls_cert, &args.tls_key)
        .context("loading the serving certificate")?;
    // Rotated files are picked up without a restart; expiry is logged ahead of time.
    tokio::spawn(cert.clone().watch(CERT_CHECK_PERIOD));
    let server = Server::bind(args.listen, tls, endpoints::router_with_certificate(cert))
        .await?
        .header_read_timeout(Duration::from_secs(args.header_read_timeout))
        .shutdown_grace(Duration::from_secs(args.shutdown_grace))
        .max_connections(usize::try_from(args.max_connections).unwrap_or(usize::MAX));
    tracing::info!(address = %server.local_addr(), "serving /convert and /healthz over HTTPS");
    // One plain line for scripts that pass port 0 (the log line above may be coloured).
    println!("webhook listening on {}", server.local_addr());
    server.serve(shutdown()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
