//! The xDS server: takes translated meshes, publishes them as snapshots after a bounded
//! debounce, serves ADS and the debug endpoint, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::MeshResources;
use crate::ads::AdsService;
use crate::cache::MeshSnapshot;
use crate::debug::SourceStatus;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::status::Registry;

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("ADS server on {address}: {source}")]
    Ads {
        /// Where it listened.
        address: String,
        /// What tonic said.
        source: tonic::transport::Error,
    },
    /// The metrics and probes HTTP server failed.
    #[error("metrics server on {address}: {source}")]
    Metrics {
        /// Where it listened.
        address: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The debug HTTP server failed.
    #[error("debug server on {address}: {source}")]
    Debug {
        /// Where it listened.
        address: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// The default of [`ServerConfig::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What ends an ADS stream on shutdown: UNAVAILABLE, the code gRPC documents for a
/// transient condition to retry with backoff (grpc/grpc doc/statuscodes.md).
pub const SHUTTING_DOWN: &str = "the control plane is shutting down: reconnect";

/// How changes are batched, and how long shutdown waits for proxies to leave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// A snapshot is built once no new mesh has come for this long...
    pub debounce: Duration,
    /// ...or this long after the first change of a burst, whichever comes first.
    pub max_delay: Duration,
    /// On [`XdsServer::shutdown`], how long ADS connections get to close after their
    /// streams were ended; those still open then are closed.
    pub shutdown_grace: Duration,
    /// What one client may make the server hold, do or write.
    pub limits: Limits,
    /// Serve the debug pages (`/debug/*`) to any peer, not only to loopback ones.
    pub debug_allow_remote: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            debounce: Duration::from_millis(50),
            max_delay: Duration::from_millis(250),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            limits: Limits::default(),
            debug_allow_remote: false,
        }
    }
}

/// What every stream and the debug endpoint share.
#[derive(Debug)]
pub struct Shared {
    /// The latest published snapshot (`None` before the first).
    pub snapshots: watch::Receiver<Option<Arc<MeshSnapshot>>>,
    /// Connected streams.
    pub registry: Arc<Registry>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Becomes `true` on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// What the source of snapshots reports on `/readyz` and `/metrics`.
    pub source: std::sync::RwLock<Option<Arc<dyn SourceStatus>>>,
    /// How long shutdown waits for streams and connections to end.
    pub shutdown_grace: Duration,
    /// What one client may make the server hold, do or write.
    pub limits: Limits,
    /// Whether the debug pages are served to peers that are not loopback.
    pub debug_allow_remote: bool,
    /// Bytes of partially received requests all streams may hold (see
    /// [`crate::ads::budget`]).
    pub pending_requests: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// The source's status hook, if one is set.
    pub fn source_status(&self) -> Option<Arc<dyn SourceStatus>> {
        self.source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A mesh waiting to become a snapshot, with when its burst started.
struct Pending {
    mesh: MeshResources,
    first_seen: Instant,
}

struct Input {
    pending: Mutex<Option<Pending>>,
    notify: Notify,
}

/// The xDS server. Cheap to clone; every clone is the same server.
#[derive(Clone)]
pub struct XdsServer {
    shared: Arc<Shared>,
    input: Arc<Input>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer").finish_non_exhaustive()
    }
}

impl XdsServer {
    /// Starts the server's publishing task (on the current tokio runtime). Nothing is
    /// served until [`XdsServer::serve_ads`] / [`XdsServer::serve_debug`].
    pub fn start(config: ServerConfig) -> XdsServer {
        let (snapshot_tx, snapshots) = watch::channel(None);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            snapshots,
            registry: Arc::default(),
            metrics: Arc::default(),
            shutdown,
            source: std::sync::RwLock::new(None),
            shutdown_grace: config.shutdown_grace,
            limits: config.limits.clone(),
            debug_allow_remote: config.debug_allow_remote,
            pending_requests: Arc::new(tokio::sync::Semaphore::new(
                config.limits.stream.pending_request_permits(),
            )),
        });
        let input = Arc::new(Input {
            pending: Mutex::new(None),
            notify: Notify::new(),
        });
        tokio::spawn(publish_loop(
            input.clone(),
            config,
            snapshot_tx,
            shared.metrics.clone(),
            shared.shutdown.clone(),
        ));
        XdsServer {
            shared,
            input,
            shutdown: Arc::new(shutdown_tx),
        }
    }

    /// Hands over a new translation of the mesh. Bursts are batched (see [`ServerConfig`]);
    /// only the latest mesh of a burst becomes a snapshot. Push latency and convergence are
    /// measured from the first call of a burst.
    pub fn publish(&self, mesh: MeshResources) {
        let mut pending = lock(&self.input.pending);
        let first_seen = pending
            .as_ref()
            .map(|p| p.first_seen)
            .unwrap_or_else(Instant::now);
        *pending = Some(Pending { mesh, first_seen });
        drop(pending);
        self.input.notify.notify_one();
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> Option<Arc<MeshSnapshot>> {
        self.shared.snapshots.borrow().clone()
    }

    /// Follows the snapshots being served.
    pub fn snapshots(&self) -> watch::Receiver<Option<Arc<MeshSnapshot>>> {
        self.shared.snapshots.clone()
    }

    /// Whether a first snapshot has been published and the source (if it reports, see
    /// [`XdsServer::set_source_status`]) is ready.
    pub fn is_ready(&self) -> bool {
        self.shared.snapshots.borrow().is_some()
            && self
                .shared
                .source_status()
                .is_none_or(|s| s.readiness().ready)
    }

    /// Lets the source of snapshots report its readiness and detail on `/readyz` and its
    /// series on `/metrics`.
    pub fn set_source_status(&self, source: Arc<dyn SourceStatus>) {
        *self
            .shared
            .source
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// The ADS gRPC service, for a tonic server of the caller's (requests up to 16 MiB).
    pub fn ads_service(&self) -> AdsService {
        AdsService::new(self.shared.clone())
    }

    /// The debug HTTP endpoint (`/debug/syncz`, `/debug/config_dump`, `/metrics`, `/healthz`,
    /// `/readyz`), for an axum server of the caller's.
    pub fn debug_router(&self) -> axum::Router {
        crate::debug::router(self.shared.clone())
    }

    /// `/metrics`, `/healthz` and `/readyz` alone, for an axum server of the caller's: what
    /// Prometheus and the kubelet need, without any proxy's configuration.
    pub fn metrics_router(&self) -> axum::Router {
        crate::debug::metrics_router(self.shared.clone())
    }

    /// Every connected stream, with its sync status.
    pub fn streams(&self) -> Vec<Arc<crate::status::StreamStatus>> {
        self.shared.registry.streams()
    }

    /// Bytes of partially received requests the streams hold now (see
    /// [`crate::ads::budget`]).
    pub fn pending_request_bytes(&self) -> usize {
        self.shared.limits.stream.pending_request_permits()
            - self.shared.pending_requests.available_permits()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Serves ADS on `listener` until [`XdsServer::shutdown`], then drains: stops accepting
    /// (the listener is closed), sends every connection an HTTP/2 GOAWAY, ends every stream
    /// with UNAVAILABLE (proxies reconnect, to another replica since this one no longer
    /// listens) and waits for the connections to close, at most
    /// [`ServerConfig::shutdown_grace`]; connections still open then are closed.
    ///
    /// tonic v0.14.9 `Server::serve_with_incoming_shutdown` closes the listener and calls
    /// hyper's `graceful_shutdown` on each connection (h2 v0.4: a GOAWAY, a PING, then the
    /// final GOAWAY), then waits for every connection without a bound: a proxy that stopped
    /// reading (flow-control window full) or vanished without a FIN would hold the process.
    ///
    /// Meanwhile each connection is held to [`crate::limits::ConnectionLimits`]: HTTP/2
    /// settings (`SETTINGS_MAX_CONCURRENT_STREAMS`, `SETTINGS_MAX_HEADER_LIST_SIZE`, the
    /// initial windows; tonic v0.14.9 passes `None` for those it is not given, which drops
    /// hyper's own defaults), and the connection count, idle timeout and age that
    /// [`crate::drain`] enforces.
    pub async fn serve_ads(&self, listener: TcpListener) -> Result<(), ServeError> {
        let address = local_address(&listener);
        let limits = &self.shared.limits.connection;
        let open = Arc::new(crate::drain::Connections::new(
            limits.clone(),
            self.shared.metrics.clone(),
        ));
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(limits.max_streams_per_connection)
            .http2_max_header_list_size(limits.max_header_list_size)
            .initial_stream_window_size(limits.stream_window)
            .initial_connection_window_size(limits.connection_window);
        if let Some(age) = limits.max_age {
            // The GOAWAY; the close after the grace is `drain`'s (see there why).
            builder = builder.max_connection_age(age);
        }
        let serve = builder
            .add_service(self.ads_service())
            .serve_with_incoming_shutdown(open.clone().incoming(listener), self.stopped());
        tokio::pin!(serve);
        let grace = self.shared.shutdown_grace;
        let grace_over = {
            let stopped = self.stopped();
            async move {
                stopped.await;
                tokio::time::sleep(grace).await;
            }
        };
        tokio::select! {
            result = &mut serve => {
                return result.map_err(|source| ServeError::Ads { address, source });
            }
            () = grace_over => {}
        }
        let closed = open.close_all();
        warn!(
            connections = closed,
            grace_ms = grace.as_millis() as u64,
            "ADS connections still open at the end of the shutdown grace period: closed them"
        );
        // Their connection tasks now see the sockets shut; give tonic a moment to notice.
        match tokio::time::timeout(Duration::from_secs(1), serve).await {
            Ok(result) => result.map_err(|source| ServeError::Ads { address, source }),
            Err(_) => Ok(()),
        }
    }

    /// Serves the debug endpoint on `listener` until [`XdsServer::shutdown`].
    pub async fn serve_debug(&self, listener: TcpListener) -> Result<(), ServeError> {
        self.serve_debug_with(listener, axum::Router::new()).await
    }

    /// Serves the debug endpoint with more routes beside the server's own (the controller
    /// adds what it knows about the translation). The debug pages (`/debug/*`) answer only
    /// peers on a loopback address unless [`ServerConfig::debug_allow_remote`] is set; the
    /// probes and `/metrics` answer anyone.
    pub async fn serve_debug_with(
        &self,
        listener: TcpListener,
        extra: axum::Router,
    ) -> Result<(), ServeError> {
        let address = local_address(&listener);
        let router = self
            .debug_router()
            .merge(extra)
            .layer(axum::middleware::from_fn_with_state(
                self.shared.debug_allow_remote,
                crate::debug::loopback_only,
            ));
        self.serve_http(listener, router)
            .await
            .map_err(|source| ServeError::Debug { address, source })
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until
    /// [`XdsServer::shutdown`]: the port to expose to Prometheus and the kubelet.
    pub async fn serve_metrics(&self, listener: TcpListener) -> Result<(), ServeError> {
        let address = local_address(&listener);
        self.serve_http(listener, self.metrics_router())
            .await
            .map_err(|source| ServeError::Metrics { address, source })
    }

    async fn serve_http(
        &self,
        listener: TcpListener,
        router: axum::Router,
    ) -> Result<(), std::io::Error> {
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(self.stopped())
            .into_future();
        tokio::pin!(serve);
        let grace = self.shared.shutdown_grace;
        let stopped = self.stopped();
        tokio::select! {
            result = &mut serve => result,
            // A client in the middle of a long request does not hold shutdown either.
            () = async move { stopped.await; tokio::time::sleep(grace).await } => Ok(()),
        }
    }

    /// Stops publishing, ends every stream and lets the serve calls return.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`XdsServer::shutdown`] was called.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shared.shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|stopped| *stopped).await;
        }
    }
}

fn local_address(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_else(|e| e.to_string())
}

/// Waits for a change, lets the burst settle (bounded), builds and publishes its snapshot.
async fn publish_loop(
    input: Arc<Input>,
    config: ServerConfig,
    snapshots: watch::Sender<Option<Arc<MeshSnapshot>>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut generation = 0;
    loop {
        tokio::select! {
            () = input.notify.notified() => {}
            _ = shutdown.changed() => return,
        }
        let Some(first_seen) = lock(&input.pending).as_ref().map(|p| p.first_seen) else {
            continue;
        };
        let latest = first_seen + config.max_delay;
        loop {
            let quiet = (Instant::now() + config.debounce).min(latest);
            tokio::select! {
                () = tokio::time::sleep_until(quiet) => break,
                () = input.notify.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
        let Some(pending) = lock(&input.pending).take() else {
            continue;
        };
        let next = generation + 1;
        let seen = pending.first_seen.into_std();
        // Resources unchanged since the published snapshot keep its encoding and version.
        let previous = snapshots.borrow().clone();
        let api_listener_limits = config.limits.api_listeners.clone();
        let built = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            MeshSnapshot::build_reusing(previous.as_deref(), next, seen, pending.mesh).map(|s| {
                (
                    s.with_api_listener_limits(api_listener_limits),
                    started.elapsed(),
                )
            })
        })
        .await;
        match built {
            Ok(Ok((snapshot, took))) => {
                generation = next;
                info!(
                    generation,
                    clusters = snapshot.distinct_count(crate::resource::ResourceType::Cluster),
                    build_ms = took.as_millis() as u64,
                    "publishing snapshot"
                );
                metrics.snapshots.fetch_add(1, Ordering::Relaxed);
                metrics.generation.store(generation, Ordering::Relaxed);
                let withheld = snapshot.mesh().withheld().len() as u64;
                metrics.withheld.store(withheld, Ordering::Relaxed);
                snapshots.send_replace(Some(Arc::new(snapshot)));
            }
            Ok(Err(e)) => {
                metrics.rejected.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "not publishing this snapshot: proxies keep the previous one");
            }
            Err(e) => {
                metrics.rejected.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "building a snapshot panicked: proxies keep the previous one");
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::rich_model;
    use crate::{XdsOptions, translate};

    fn mesh() -> MeshResources {
        translate(&rich_model(), &XdsOptions::default())
    }

    async fn next_generation(rx: &mut watch::Receiver<Option<Arc<MeshSnapshot>>>) -> u64 {
        rx.changed().await.unwrap();
        rx.borrow_and_update().as_ref().unwrap().generation()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_gives_one_snapshot_within_the_max_delay() {
        let config = ServerConfig::default();
        let server = XdsServer::start(config.clone());
        let mut rx = server.snapshots();
        let start = Instant::now();
        // A change every 20 ms for 400 ms: never quiet for 50 ms.
        let publisher = {
            let server = server.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    server.publish(mesh());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        assert_eq!(next_generation(&mut rx).await, 1);
        let waited = start.elapsed();
        assert!(waited >= config.max_delay, "{waited:?}");
        // Paused time may jump to the publisher's next timer while the snapshot builds.
        assert!(
            waited < config.max_delay + Duration::from_millis(100),
            "{waited:?}"
        );
        publisher.await.unwrap();
        // The rest of the burst: one more snapshot, 50 ms after its last change.
        assert_eq!(next_generation(&mut rx).await, 2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!rx.has_changed().unwrap());
        server.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_change_waits_only_the_debounce() {
        let server = XdsServer::start(ServerConfig::default());
        let mut rx = server.snapshots();
        assert!(!server.is_ready());
        let start = Instant::now();
        server.publish(mesh());
        assert_eq!(next_generation(&mut rx).await, 1);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_millis(80),
            "{waited:?}"
        );
        assert!(server.is_ready());
    }

    #[tokio::test]
    async fn an_inconsistent_mesh_is_not_published_and_the_previous_stays() {
        let server = XdsServer::start(ServerConfig {
            debounce: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..ServerConfig::default()
        });
        let mut rx = server.snapshots();
        server.publish(mesh());
        assert_eq!(next_generation(&mut rx).await, 1);
        let mut broken = mesh();
        broken.drop_endpoints_for_tests();
        server.publish(broken);
        tokio::time::timeout(Duration::from_secs(5), async {
            while server.metrics().rejected.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the broken mesh was not rejected");
        assert_eq!(server.snapshot().unwrap().generation(), 1);
        assert!(!rx.has_changed().unwrap());
        // The next good mesh is published as generation 2.
        server.publish(mesh());
        assert_eq!(next_generation(&mut rx).await, 2);
    }
}
