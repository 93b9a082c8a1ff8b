//! The `lanyard-controller` process: flags, logging, and the run loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{ArgGroup, Parser};
use lanyard_index::status::DEFAULT_CONTROLLER_NAME;
use tracing::info;

use crate::error::{Error, Result};
use crate::files::{FileSource, FileWatcher};
use crate::logs::log_snapshot;
use crate::report::{Format, Report, Show};
use crate::snapshot::{DEFAULT_CLUSTER_DOMAIN, Settings, Snapshot};
use crate::xds::Serving;

/// Where ADS is served by default (Istio's plain-text xDS port).
pub const DEFAULT_XDS_ADDRESS: &str = "127.0.0.1:15010";
/// Where the debug endpoint is served by default (Istio's monitoring port).
pub const DEFAULT_DEBUG_ADDRESS: &str = "127.0.0.1:15014";

/// The Lanyard mesh controller: Gateway API (GAMMA) routes in, Envoy configuration out.
#[derive(Clone, Debug, Parser)]
#[command(name = "lanyard-controller", version, about)]
#[command(group(ArgGroup::new("source").required(true).args(["config_dir"])))]
pub struct Args {
    /// Read manifests from this directory (recursively, *.yaml and *.yml) and watch it.
    #[arg(
        long,
        env = "LANYARD_CONFIG_DIR",
        value_name = "DIR",
        help_heading = "Sources"
    )]
    pub config_dir: Option<PathBuf>,

    /// Serve ADS (xDS, state of the world and delta) on this address; port 0 picks a free
    /// port. The address is printed as `xds listening on ADDR`.
    #[arg(long, env = "LANYARD_XDS_ADDRESS", default_value = DEFAULT_XDS_ADDRESS, help_heading = "Serving")]
    pub xds_address: SocketAddr,

    /// Serve the debug endpoint (/debug/syncz, /debug/config_dump, /metrics, /healthz,
    /// /readyz) on this address; keep it on localhost. Printed as `debug listening on ADDR`.
    #[arg(long, env = "LANYARD_DEBUG_ADDRESS", default_value = DEFAULT_DEBUG_ADDRESS, help_heading = "Serving")]
    pub debug_address: SocketAddr,

    /// The cluster's DNS domain.
    #[arg(long, env = "LANYARD_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,

    /// The controllerName written into route status.
    #[arg(long, env = "LANYARD_CONTROLLER_NAME", default_value = DEFAULT_CONTROLLER_NAME)]
    pub controller_name: String,

    /// Translate once, print the route status report (YAML) and exit: non-zero when the
    /// input has errors.
    #[arg(long)]
    pub once: bool,

    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    #[arg(long, env = "LANYARD_LOG", default_value = "info")]
    pub log: String,
}

impl Args {
    /// The translation settings the flags give.
    pub fn settings(&self) -> Settings {
        Settings {
            controller_name: self.controller_name.clone(),
            cluster_domain: self.cluster_domain.clone(),
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` when set, else by `default_filter`.
pub fn init_tracing(default_filter: &str) -> Result<()> {
    use std::io::IsTerminal;

    use tracing_subscriber::EnvFilter;
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => EnvFilter::try_new(default_filter)
            .map_err(|e| Error::LogFilter(format!("{default_filter:?}: {e}")))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| Error::LogFilter(e.to_string()))
}

/// Runs the controller, serving xDS, until Ctrl-C or SIGTERM (or once, with `--once`).
pub async fn run(args: Args) -> Result<ExitCode> {
    let settings = args.settings();
    let Some(dir) = args.config_dir else {
        return Err(Error::NoPaths);
    };
    let source = FileSource::new([dir])?;
    if args.once {
        return run_once(source, &settings);
    }
    let watcher = FileWatcher::start(source, settings.clone())?;
    let mut snapshots = watcher.subscribe();
    let mut serving = Serving::start(
        args.xds_address,
        args.debug_address,
        watcher.subscribe(),
        settings.xds_options(),
    )
    .await?;
    let mut previous: Arc<Snapshot> = snapshots.borrow_and_update().clone();
    log_snapshot(&previous, None);

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut failure = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            e = serving.failed() => {
                failure = Some(e);
                break;
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                log_snapshot(&snapshot, Some(&previous));
                previous = snapshot;
            }
        }
    }
    info!("shutting down");
    serving.stop().await;
    tokio::task::spawn_blocking(move || watcher.stop())
        .await
        .ok();
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn run_once(mut source: FileSource, settings: &Settings) -> Result<ExitCode> {
    let snapshot = Snapshot::translate(1, source.load(), settings);
    log_snapshot(&snapshot, None);
    let text = Report::new(&snapshot, Show::Status, None)?.render(Format::Yaml)?;
    print!("{text}");
    Ok(if snapshot.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("received Ctrl-C"),
        () = term => info!("received SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn a_source_is_required_and_defaults_apply() {
        assert!(Args::try_parse_from(["lanyard-controller"]).is_err());
        let args = Args::try_parse_from(["lanyard-controller", "--config-dir", "/x"]).unwrap();
        assert_eq!(args.settings(), Settings::default());
        assert!(!args.once);
        assert_eq!(args.xds_address.to_string(), DEFAULT_XDS_ADDRESS);
        assert_eq!(args.debug_address.to_string(), DEFAULT_DEBUG_ADDRESS);
        let args = Args::try_parse_from([
            "lanyard-controller",
            "--config-dir",
            "/x",
            "--xds-address",
            "127.0.0.1:0",
            "--debug-address",
            "[::1]:0",
        ])
        .unwrap();
        assert_eq!(args.xds_address.port(), 0);
        assert!(args.debug_address.is_ipv6());
    }

    #[test]
    fn once_reports_status_and_fails_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "kind: [broken\n").unwrap();
        let source = FileSource::new([dir.path()]).unwrap();
        assert_eq!(
            run_once(source, &Settings::default()).unwrap(),
            ExitCode::FAILURE
        );
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
        )
        .unwrap();
        let source = FileSource::new([dir.path()]).unwrap();
        assert_eq!(
            run_once(source, &Settings::default()).unwrap(),
            ExitCode::SUCCESS
        );
    }
}
