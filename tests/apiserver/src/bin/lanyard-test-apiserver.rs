//! Runs the loopback Kubernetes API server test fixture until killed, for manual kubectl use:
//! `lanyard-test-apiserver [PORT]` prints the kubeconfig path to use with `kubectl --kubeconfig`.
//! A test fixture, not a product feature.

use lanyard_test_apiserver::{ApiServer, Config};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = match std::env::args().nth(1) {
        Some(p) => p
            .parse()
            .map_err(|e| std::io::Error::other(format!("bad port {p:?}: {e}")))?,
        None => 0,
    };
    let server = ApiServer::start(Config {
        port,
        ..Config::default()
    })
    .await?;
    println!("{}", server.kubeconfig_path.display());
    eprintln!(
        "lanyard-test-apiserver (a test fixture) listening on {}",
        server.base_url
    );
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
