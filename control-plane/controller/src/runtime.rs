//! The `lanyard-controller` process: flags, logging, and the run loop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use lanyard_index::status::DEFAULT_CONTROLLER_NAME;
use lanyard_xds::Limits;
use lanyard_xds::limits::{ConnectionLimits, StreamLimits};
use tokio::sync::watch;
use tracing::info;

use crate::error::{Error, Result};
use crate::files::{FileSource, FileWatcher};
use crate::k8s::KubeWatcher;
use crate::k8s::lease::{DEFAULT_LEASE_DURATION, DEFAULT_LEASE_NAME, LeaseSettings};
use crate::logs::log_snapshot;
use crate::nacks::Rejections;
use crate::report::{Format, Report, Show};
use crate::snapshot::{DEFAULT_CLUSTER_DOMAIN, DEFAULT_TRUST_DOMAIN, Settings, Snapshot};
use crate::xds::{Addresses, Serving};
use lanyard_xds::ServerConfig;
use lanyard_xds::limits::{ApiListenerLimits, DebugLimits, NodeLimits};

/// Where ADS is served by default (Istio's plain-text xDS port).
pub const DEFAULT_XDS_ADDRESS: &str = "127.0.0.1:15010";
/// Where the debug endpoint is served by default (Istio's monitoring port).
pub const DEFAULT_DEBUG_ADDRESS: &str = "127.0.0.1:15014";
/// Where `/metrics`, `/healthz` and `/readyz` are served by default: Istio's port for a
/// pod's merged Prometheus metrics and its health checks (pilot-agent, 15020), the same
/// two jobs; istiod's 15014 stays the debug endpoint, which shows every proxy's config.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:15020";

/// The Lanyard mesh controller: Gateway API (GAMMA) routes in, Envoy configuration out.
#[derive(Clone, Debug, Parser)]
#[command(name = "lanyard-controller", version, about)]
#[command(group(ArgGroup::new("source").required(true).args(["config_dir", "kubeconfig", "kubernetes"])))]
pub struct Args {
    /// Read manifests from this directory (recursively, *.yaml and *.yml) and watch it.
    #[arg(
        long,
        env = "LANYARD_CONFIG_DIR",
        value_name = "DIR",
        help_heading = "Sources"
    )]
    pub config_dir: Option<PathBuf>,

    /// Watch the Kubernetes API server this kubeconfig names (its current context).
    #[arg(long, value_name = "PATH", help_heading = "Sources")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch the Kubernetes API server found as kubectl and in-cluster clients find it: the
    /// kubeconfig named by $KUBECONFIG or ~/.kube/config, else the pod's service account.
    #[arg(long, help_heading = "Sources")]
    pub kubernetes: bool,

    /// With --kubeconfig or --kubernetes: watch only this namespace (repeatable); all
    /// namespaces when not given.
    #[arg(
        long = "namespace",
        value_name = "NS",
        conflicts_with = "config_dir",
        help_heading = "Sources"
    )]
    pub namespaces: Vec<String>,

    /// Serve ADS (xDS, state of the world and delta) on this address; port 0 picks a free
    /// port. The address is printed as `xds listening on ADDR`.
    #[arg(long, env = "LANYARD_XDS_ADDRESS", default_value = DEFAULT_XDS_ADDRESS, help_heading = "Serving")]
    pub xds_address: SocketAddr,

    /// Serve the debug endpoint (/debug/syncz, /debug/config_dump, /metrics, /healthz,
    /// /readyz) on this address; keep it on localhost (the /debug/ pages answer loopback
    /// peers only, see --debug-allow-remote). Printed as `debug listening on ADDR`.
    #[arg(long, env = "LANYARD_DEBUG_ADDRESS", default_value = DEFAULT_DEBUG_ADDRESS, help_heading = "Serving")]
    pub debug_address: SocketAddr,

    /// Serve /metrics, /healthz and /readyz (and nothing else) on this address: the port to
    /// expose to Prometheus and the kubelet (a Kubernetes deployment sets 0.0.0.0:15020).
    /// Printed as `metrics listening on ADDR`.
    #[arg(long, env = "LANYARD_METRICS_ADDRESS", default_value = DEFAULT_METRICS_ADDRESS, help_heading = "Serving")]
    pub metrics_address: SocketAddr,

    /// Serve the debug pages (/debug/*: every proxy's configuration) to any peer, not only
    /// to loopback ones. Off by default: use `kubectl port-forward`.
    #[arg(long, env = "LANYARD_DEBUG_ALLOW_REMOTE", help_heading = "Serving")]
    pub debug_allow_remote: bool,

    /// Refuse a proxy whose node.id is longer than this (bytes).
    #[arg(long, value_name = "BYTES", default_value_t = NodeLimits::default().id_bytes, help_heading = "Limits")]
    pub node_id_max_bytes: usize,
    /// Refuse a proxy whose node.cluster is longer than this (bytes).
    #[arg(long, value_name = "BYTES", default_value_t = NodeLimits::default().cluster_bytes, help_heading = "Limits")]
    pub node_cluster_max_bytes: usize,
    /// Refuse a proxy whose node.metadata encodes to more than this (bytes).
    #[arg(long, value_name = "BYTES", default_value_t = NodeLimits::default().metadata_bytes, help_heading = "Limits")]
    pub node_metadata_max_bytes: usize,
    /// Refuse a proxy with more node.metadata.LABELS than this.
    #[arg(long, value_name = "COUNT", default_value_t = NodeLimits::default().labels, help_heading = "Limits")]
    pub node_max_labels: usize,
    /// Refuse a proxy with a LABELS key longer than this (bytes).
    #[arg(long, value_name = "BYTES", default_value_t = NodeLimits::default().label_key_bytes, help_heading = "Limits")]
    pub node_label_key_max_bytes: usize,
    /// Refuse a proxy with a LABELS value longer than this (bytes).
    #[arg(long, value_name = "BYTES", default_value_t = NodeLimits::default().label_value_bytes, help_heading = "Limits")]
    pub node_label_value_max_bytes: usize,
    /// Clip each text field a proxy chose to this many bytes on the debug pages.
    #[arg(long, value_name = "BYTES", default_value_t = DebugLimits::default().text_bytes, help_heading = "Limits")]
    pub debug_text_max_bytes: usize,
    /// Show at most this many items of a list a proxy sized on the debug pages.
    #[arg(long, value_name = "COUNT", default_value_t = DebugLimits::default().list_items, help_heading = "Limits")]
    pub debug_max_list_items: usize,
    /// Keep at most this many API listeners (proxyless gRPC `xds:///NAME`) per snapshot.
    #[arg(long, value_name = "COUNT", default_value_t = ApiListenerLimits::default().entries, help_heading = "Limits")]
    pub api_listener_cache_entries: usize,
    /// Keep at most this many bytes of API listeners per snapshot.
    #[arg(long, value_name = "BYTES", default_value_t = ApiListenerLimits::default().bytes, help_heading = "Limits")]
    pub api_listener_cache_bytes: usize,

    /// On SIGTERM or Ctrl-C, how long, in seconds, connected proxies get to leave: ADS stops
    /// accepting connections, sends each an HTTP/2 GOAWAY and ends its streams with
    /// UNAVAILABLE (proxies reconnect to another replica); connections still open after
    /// this are closed and the process exits.
    #[arg(long, env = "LANYARD_SHUTDOWN_GRACE", value_name = "SECONDS", default_value_t = lanyard_xds::DEFAULT_SHUTDOWN_GRACE.as_secs_f64(), value_parser = grace_seconds, help_heading = "Serving")]
    pub shutdown_grace: f64,

    /// ADS connections open at once; one accepted past it is closed at once.
    #[arg(long, env = "LANYARD_MAX_CONNECTIONS", default_value_t = ConnectionLimits::default().max_connections, value_parser = at_least_one, help_heading = "Limits")]
    pub max_connections: usize,

    /// HTTP/2 streams one ADS connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "LANYARD_MAX_STREAMS_PER_CONNECTION", default_value_t = ConnectionLimits::default().max_streams_per_connection, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    pub max_streams_per_connection: u32,

    /// Seconds an ADS connection may stay without a stream (also one that never sends the
    /// HTTP/2 preface) before it is closed.
    #[arg(long, env = "LANYARD_CONNECTION_IDLE_TIMEOUT", value_name = "SECONDS", default_value_t = ConnectionLimits::default().idle_timeout.as_secs_f64(), value_parser = limit_seconds, help_heading = "Limits")]
    pub connection_idle_timeout: f64,

    /// Seconds after which an ADS connection is told to go away (HTTP/2 GOAWAY; its proxy
    /// reconnects, maybe to another replica); 0: never.
    #[arg(long, env = "LANYARD_MAX_CONNECTION_AGE", value_name = "SECONDS", default_value_t = 0.0, value_parser = age_seconds, help_heading = "Limits")]
    pub max_connection_age: f64,

    /// Seconds the streams of a connection told to go away for its age have before it is
    /// closed.
    #[arg(long, env = "LANYARD_MAX_CONNECTION_AGE_GRACE", value_name = "SECONDS", default_value_t = ConnectionLimits::default().max_age_grace.as_secs_f64(), value_parser = grace_seconds, help_heading = "Limits")]
    pub max_connection_age_grace: f64,

    /// Seconds an ADS stream may stay open without sending its first request.
    #[arg(long, env = "LANYARD_STREAM_FIRST_REQUEST_TIMEOUT", value_name = "SECONDS", default_value_t = StreamLimits::default().first_request_timeout.as_secs_f64(), value_parser = limit_seconds, help_heading = "Limits")]
    pub stream_first_request_timeout: f64,

    /// Resource names one ADS stream may subscribe to, per type.
    #[arg(long, env = "LANYARD_MAX_SUBSCRIBED_NAMES", default_value_t = StreamLimits::default().max_subscribed_names, value_parser = at_least_one, help_heading = "Limits")]
    pub max_subscribed_names: usize,

    /// Bytes of one resource name (or type URL) in an ADS request.
    #[arg(long, env = "LANYARD_MAX_NAME_LENGTH", default_value_t = StreamLimits::default().max_name_length, value_parser = at_least_one, help_heading = "Limits")]
    pub max_name_length: usize,

    /// Bytes of ADS requests still arriving (past the first 64 KiB of each) all streams may
    /// hold together; a stream that cannot get its share within 10 s is ended.
    #[arg(long, env = "LANYARD_MAX_PENDING_REQUEST_BYTES", default_value_t = StreamLimits::default().max_pending_request_bytes, value_parser = at_least_one, help_heading = "Limits")]
    pub max_pending_request_bytes: usize,

    /// The cluster's DNS domain.
    #[arg(long, env = "LANYARD_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,

    /// The controllerName written into route status.
    #[arg(long, env = "LANYARD_CONTROLLER_NAME", default_value = DEFAULT_CONTROLLER_NAME)]
    pub controller_name: String,

    /// With --kubeconfig or --kubernetes: the namespace of the coordination.k8s.io/v1 Lease
    /// that elects the replica writing route status.
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "default",
        help_heading = "Leader election"
    )]
    pub lease_namespace: String,

    /// The name of that Lease.
    #[arg(long, default_value = DEFAULT_LEASE_NAME, help_heading = "Leader election")]
    pub lease_name: String,

    /// How long, in seconds, after a replica last saw the Lease renewed (on its own clock) it
    /// may take the Lease over; the holder stops leading after two thirds of it without a
    /// successful renewal.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_LEASE_DURATION.as_secs(), value_parser = clap::value_parser!(u64).range(1..), help_heading = "Leader election")]
    pub lease_duration: u64,

    /// This replica's identity in the Lease (unique among replicas); default: host name and
    /// process id.
    #[arg(long, env = "POD_NAME", help_heading = "Leader election")]
    pub identity: Option<String>,

    /// The SPIFFE trust domain of workload identities.
    #[arg(long, env = "LANYARD_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,

    /// Translate once, print the route status report (YAML) and exit: non-zero when the
    /// input has errors (with --config-dir only).
    #[arg(long, conflicts_with_all = ["kubeconfig", "kubernetes"])]
    pub once: bool,

    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    #[arg(long, env = "LANYARD_LOG", default_value = "info")]
    pub log: String,
}

/// A grace period in seconds: finite, not negative, at most an hour.
fn grace_seconds(text: &str) -> std::result::Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|e| format!("not a number of seconds: {e}"))?;
    if !(0.0..=3600.0).contains(&seconds) {
        return Err("must be between 0 and 3600 seconds".to_string());
    }
    Ok(seconds)
}

/// A count of at least one.
fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count: {e}")),
    }
}

/// A timeout in seconds: finite, above 0, at most a day.
fn limit_seconds(text: &str) -> std::result::Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|e| format!("not a number of seconds: {e}"))?;
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err("must be above 0 and at most 86400 seconds".to_string());
    }
    Ok(seconds)
}

/// A connection age in seconds: 0 (never), or as [`limit_seconds`].
fn age_seconds(text: &str) -> std::result::Result<f64, String> {
    if text.parse::<f64>() == Ok(0.0) {
        return Ok(0.0);
    }
    limit_seconds(text)
}

impl Args {
    /// The ADS server's limits per connection and per stream the flags give.
    pub fn ads_limits(&self) -> (ConnectionLimits, StreamLimits) {
        let connection = ConnectionLimits {
            max_connections: self.max_connections,
            max_streams_per_connection: self.max_streams_per_connection,
            idle_timeout: Duration::from_secs_f64(self.connection_idle_timeout),
            max_age: (self.max_connection_age > 0.0)
                .then(|| Duration::from_secs_f64(self.max_connection_age)),
            max_age_grace: Duration::from_secs_f64(self.max_connection_age_grace),
            ..ConnectionLimits::default()
        };
        let stream = StreamLimits {
            first_request_timeout: Duration::from_secs_f64(self.stream_first_request_timeout),
            max_subscribed_names: self.max_subscribed_names,
            max_name_length: self.max_name_length,
            max_pending_request_bytes: self.max_pending_request_bytes,
            ..StreamLimits::default()
        };
        (connection, stream)
    }

    /// All the server's limits the flags give.
    pub fn limits(&self) -> Limits {
        let (connection, stream) = self.ads_limits();
        Limits {
            connection,
            stream,
            node: NodeLimits {
                id_bytes: self.node_id_max_bytes,
                cluster_bytes: self.node_cluster_max_bytes,
                metadata_bytes: self.node_metadata_max_bytes,
                labels: self.node_max_labels,
                label_key_bytes: self.node_label_key_max_bytes,
                label_value_bytes: self.node_label_value_max_bytes,
            },
            debug: DebugLimits {
                text_bytes: self.debug_text_max_bytes,
                list_items: self.debug_max_list_items,
            },
            api_listeners: ApiListenerLimits {
                entries: self.api_listener_cache_entries,
                bytes: self.api_listener_cache_bytes,
            },
        }
    }

    /// How long shutdown waits for proxies to leave.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace)
    }

    /// The translation settings the flags give.
    pub fn settings(&self) -> Settings {
        Settings {
            controller_name: self.controller_name.clone(),
            cluster_domain: self.cluster_domain.clone(),
            trust_domain: self.trust_domain.clone(),
        }
    }
}

impl Args {
    /// The leader election settings the flags give.
    pub fn lease_settings(&self) -> LeaseSettings {
        let identity = self.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "lanyard-controller".to_string());
            format!("{host}-{}", std::process::id())
        });
        LeaseSettings {
            namespace: self.lease_namespace.clone(),
            name: self.lease_name.clone(),
            identity,
            duration: Duration::from_secs(self.lease_duration),
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
    // What proxies reject: tracked by the server, reported by the status writer and Events.
    let (rejections, rejected) = watch::channel(Arc::new(Rejections::default()));
    let watcher = match (&args.config_dir, &args.kubeconfig, args.kubernetes) {
        (Some(dir), _, _) => {
            let source = FileSource::new([dir])?;
            if args.once {
                return run_once(source, &settings);
            }
            Source::Files(FileWatcher::start(source, settings.clone())?)
        }
        (None, kubeconfig, kubernetes) if kubeconfig.is_some() || kubernetes => {
            let client = kube_client(kubeconfig.as_deref()).await?;
            Source::Kubernetes(KubeWatcher::start(
                client,
                &args.namespaces,
                settings.clone(),
                args.lease_settings(),
                rejected.clone(),
            ))
        }
        (None, _, _) => return Err(Error::NoPaths),
    };
    let mut snapshots = watcher.subscribe();
    let mut serving = Serving::start(
        Addresses {
            xds: args.xds_address,
            debug: args.debug_address,
            metrics: args.metrics_address,
        },
        watcher.subscribe(),
        settings.xds_options(),
        rejections,
        ServerConfig {
            shutdown_grace: args.shutdown_grace(),
            limits: args.limits(),
            debug_allow_remote: args.debug_allow_remote,
            ..ServerConfig::default()
        },
    )
    .await?;
    if let Source::Kubernetes(watcher) = &watcher {
        serving.set_source_status(watcher.health());
    }
    let mut previous: Arc<Snapshot> = snapshots.borrow_and_update().clone();
    if !previous.is_placeholder() {
        log_snapshot(&previous, None);
    }

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
    // The Lease first, so that another replica writes status at once.
    let watcher = match watcher {
        Source::Kubernetes(watcher) => {
            watcher.shutdown().await;
            None
        }
        files => Some(files),
    };
    serving.stop().await;
    if let Some(watcher) = watcher {
        tokio::task::spawn_blocking(move || watcher.stop())
            .await
            .ok();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Where snapshots come from.
enum Source {
    Files(FileWatcher),
    Kubernetes(KubeWatcher),
}

impl Source {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        match self {
            Source::Files(w) => w.subscribe(),
            Source::Kubernetes(w) => w.subscribe(),
        }
    }

    fn stop(self) {
        match self {
            Source::Files(w) => w.stop(),
            Source::Kubernetes(w) => w.stop(),
        }
    }
}

/// A client for the API server a kubeconfig names, or (`None`) the one `kube::Config::infer`
/// finds.
async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                Error::Kubernetes(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| Error::Kubernetes(format!("kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            Error::Kubernetes(format!(
                "no Kubernetes configuration found ($KUBECONFIG, ~/.kube/config or in-cluster): {e}"
            ))
        })?,
    };
    let server = config.cluster_url.clone();
    let client = kube::Client::try_from(config)
        .map_err(|e| Error::Kubernetes(format!("cannot create a client for {server}: {e}")))?;
    info!(%server, "watching the Kubernetes API server");
    Ok(client)
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
        assert_eq!(args.shutdown_grace(), lanyard_xds::DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(args.metrics_address.to_string(), DEFAULT_METRICS_ADDRESS);
        assert!(!args.debug_allow_remote);
        assert_eq!(args.limits(), Limits::default());
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
        let grace = |value: &str| {
            Args::try_parse_from([
                "lanyard-controller",
                "--config-dir",
                "/x",
                "--shutdown-grace",
                value,
            ])
            .map(|args| args.shutdown_grace())
        };
        assert_eq!(grace("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(grace("0").unwrap(), Duration::ZERO);
        for bad in ["-1", "NaN", "inf", "1e9", "soon"] {
            assert!(grace(bad).is_err(), "{bad}");
        }
        assert!(args.debug_address.is_ipv6());
    }

    #[test]
    fn kubernetes_is_a_source_with_namespaces_and_a_trust_domain() {
        let args = Args::try_parse_from([
            "lanyard-controller",
            "--kubeconfig",
            "/k",
            "--namespace",
            "a",
            "--namespace",
            "b",
            "--trust-domain",
            "example.org",
        ])
        .unwrap();
        assert_eq!(args.kubeconfig.as_deref(), Some(Path::new("/k")));
        assert_eq!(args.namespaces, ["a", "b"]);
        assert_eq!(args.settings().trust_domain, "example.org");
        let lease = args.lease_settings();
        assert_eq!(lease.name, DEFAULT_LEASE_NAME);
        assert_eq!(lease.duration, DEFAULT_LEASE_DURATION);
        assert!(!lease.identity.is_empty());
        let args = Args::try_parse_from([
            "lanyard-controller",
            "--kubernetes",
            "--identity",
            "pod-a",
            "--lease-duration",
            "3",
        ])
        .unwrap();
        assert_eq!(args.lease_settings().identity, "pod-a");
        assert_eq!(args.lease_settings().duration, Duration::from_secs(3));
        let args = Args::try_parse_from(["lanyard-controller", "--kubernetes"]).unwrap();
        assert!(args.kubernetes && args.namespaces.is_empty());
        assert_eq!(args.settings().trust_domain, DEFAULT_TRUST_DOMAIN);
        // One source at a time, and --once only for files.
        for conflicting in [
            &["--config-dir", "/x", "--kubeconfig", "/k"][..],
            &["--kubernetes", "--kubeconfig", "/k"],
            &["--kubernetes", "--once"],
            &["--config-dir", "/x", "--namespace", "a"],
        ] {
            let argv = std::iter::once("lanyard-controller").chain(conflicting.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{conflicting:?}");
        }
    }

    #[tokio::test]
    async fn an_unreadable_kubeconfig_is_an_error_naming_it() {
        let Err(err) = kube_client(Some(Path::new("/nonexistent/kubeconfig"))).await else {
            panic!("a missing kubeconfig gave a client");
        };
        let err = err.to_string();
        assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
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
