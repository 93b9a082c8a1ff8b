//! Runs the loopback Kubernetes API server test fixture until killed, for manual kubectl use:
//! `lanyard-test-apiserver [PORT] [--webhook-service NAMESPACE/NAME[:PORT]=ADDR]...` prints
//! the kubeconfig path to use with `kubectl --kubeconfig`. `--webhook-service` (repeatable)
//! says where a conversion webhook's Service listens, since there is no cluster DNS: e.g.
//! `--webhook-service lanyard-system/lanyard-webhook:443=127.0.0.1:9443`
//! ([`Config::webhook_services`]). A test fixture, not a product feature.

use std::collections::HashMap;
use std::net::SocketAddr;

use lanyard_test_apiserver::{ApiServer, Config};

const USAGE: &str = "usage: lanyard-test-apiserver [PORT] \
                     [--webhook-service NAMESPACE/NAME[:PORT]=ADDR]...";

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{msg}\n{USAGE}"))
}

/// `NAMESPACE/NAME[:PORT]=ADDR` -> (`"NAMESPACE/NAME[:PORT]"`, ADDR).
fn webhook_service(spec: &str) -> std::io::Result<(String, SocketAddr)> {
    let (key, addr) = spec
        .split_once('=')
        .ok_or_else(|| bad(format!("--webhook-service {spec:?}: expected KEY=ADDR")))?;
    let (namespace, name) = key.split_once('/').unwrap_or(("", ""));
    let name = match name.split_once(':') {
        Some((name, port)) => {
            port.parse::<u16>().map_err(|e| {
                bad(format!(
                    "--webhook-service {spec:?}: bad port {port:?}: {e}"
                ))
            })?;
            name
        }
        None => name,
    };
    if namespace.is_empty() || name.is_empty() {
        return Err(bad(format!(
            "--webhook-service {spec:?}: expected NAMESPACE/NAME[:PORT] before '='"
        )));
    }
    let addr = addr.parse().map_err(|e| {
        bad(format!(
            "--webhook-service {spec:?}: bad address {addr:?}: {e}"
        ))
    })?;
    Ok((key.to_string(), addr))
}

fn parse_args() -> std::io::Result<Config> {
    let mut port = None;
    let mut webhook_services = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        } else if let Some(spec) = arg.strip_prefix("--webhook-service=") {
            let (key, addr) = webhook_service(spec)?;
            webhook_services.insert(key, addr);
        } else if arg == "--webhook-service" {
            let spec = args
                .next()
                .ok_or_else(|| bad("--webhook-service needs a value".into()))?;
            let (key, addr) = webhook_service(&spec)?;
            webhook_services.insert(key, addr);
        } else if arg.starts_with('-') || port.is_some() {
            return Err(bad(format!("unexpected argument {arg:?}")));
        } else {
            port = Some(
                arg.parse()
                    .map_err(|e| bad(format!("bad port {arg:?}: {e}")))?,
            );
        }
    }
    Ok(Config {
        port: port.unwrap_or(0),
        webhook_services,
        ..Config::default()
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let config = match parse_args() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("lanyard-test-apiserver: {e}");
            std::process::exit(2);
        }
    };
    let server = ApiServer::start(config).await?;
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
