//! Serving the snapshots over xDS: the ADS server and the debug endpoint of
//! [`lanyard_xds::XdsServer`], fed with the translation of every snapshot whose model
//! changed.

use std::net::SocketAddr;
use std::sync::Arc;

use lanyard_xds::{MeshResources, ServeError, ServerConfig, XdsOptions, XdsServer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::nacks::{self, Rejections};
use crate::report::{Format, Report, Show};
use crate::snapshot::Snapshot;

/// `GET /debug/translation`: the current snapshot's route status, diagnostics, translator
/// warnings and SMI reports, as JSON (the report `lanyardctl x translate --show status`
/// prints for files), with what proxies reject: the `lanyard.dev/ProxiesRejected`
/// condition in route status and `rejected` on SMI entries, as the leader writes them.
pub fn translation_router(
    snapshots: watch::Receiver<Arc<Snapshot>>,
    rejections: watch::Receiver<Arc<Rejections>>,
) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;

    let handler = move || {
        let snapshot = snapshots.borrow().clone();
        let rejections = rejections.borrow().clone();
        async move {
            if snapshot.is_placeholder() {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: nothing loaded yet\n",
                )
                    .into_response();
            }
            let rendered = Report::new(&snapshot, Show::Status, None)
                .map(|report| report.with_rejections(&snapshot, &rejections))
                .and_then(|report| report.render(Format::Json));
            match rendered {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
            }
        }
    };
    axum::Router::new().route("/debug/translation", axum::routing::get(handler))
}

/// The ADS server and the debug endpoint, running.
#[derive(Debug)]
pub struct Serving {
    server: XdsServer,
    /// Where ADS listens.
    pub xds_address: SocketAddr,
    /// Where the debug endpoint listens.
    pub debug_address: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    failures: mpsc::Receiver<ServeError>,
}

impl Serving {
    /// Binds both addresses (port 0 picks a free port), prints `xds listening on ADDR` and
    /// `debug listening on ADDR` on stdout, and serves until [`Serving::stop`]; meanwhile
    /// publishes what the proxies reject on `rejections` (see [`nacks::track`]).
    pub async fn start(
        xds_address: SocketAddr,
        debug_address: SocketAddr,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        options: XdsOptions,
        rejections: watch::Sender<Arc<Rejections>>,
        shutdown_grace: std::time::Duration,
        limits: lanyard_xds::Limits,
    ) -> Result<Serving> {
        let bind = |address: SocketAddr, what: &'static str| async move {
            lanyard_xds::listen::listen(address).map_err(|error| Error::Bind {
                what,
                address,
                error,
            })
        };
        let xds_listener = bind(xds_address, "xDS").await?;
        let debug_listener = bind(debug_address, "debug").await?;
        let local = |listener: &TcpListener, what, address| {
            listener.local_addr().map_err(|error| Error::Bind {
                what,
                address,
                error,
            })
        };
        let xds_address = local(&xds_listener, "xDS", xds_address)?;
        let debug_address = local(&debug_listener, "debug", debug_address)?;

        let server = XdsServer::start(ServerConfig {
            shutdown_grace,
            limits,
            ..ServerConfig::default()
        });
        let (failed, failures) = mpsc::channel(2);
        let mut tasks = Vec::new();
        let ads = server.clone();
        let report = failed.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = ads.serve_ads(xds_listener).await {
                let _ = report.send(e).await;
            }
        }));
        let debug = server.clone();
        let translation = translation_router(snapshots.clone(), rejections.subscribe());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = debug.serve_debug_with(debug_listener, translation).await {
                let _ = failed.send(e).await;
            }
        }));
        tasks.push(tokio::spawn(nacks::track(
            server.clone(),
            snapshots.clone(),
            options.cluster_domain.clone(),
            rejections,
        )));
        tasks.push(tokio::spawn(feed(server.clone(), snapshots)));

        println!("xds listening on {xds_address}");
        println!("debug listening on {debug_address}");
        info!(%xds_address, %debug_address, "serving xDS and the debug endpoint");
        Ok(Serving {
            server,
            xds_address,
            debug_address,
            tasks,
            failures,
        })
    }

    /// Lets the source report its readiness on `/readyz` and its series on `/metrics`.
    pub fn set_source_status(&self, source: Arc<dyn lanyard_xds::debug::SourceStatus>) {
        self.server.set_source_status(source);
    }

    /// Resolves when a server fails.
    pub async fn failed(&mut self) -> Error {
        match self.failures.recv().await {
            Some(e) => Error::Serve(e.to_string()),
            None => std::future::pending().await,
        }
    }

    /// Drains ADS (see [`XdsServer::serve_ads`]: GOAWAY, streams ended with UNAVAILABLE,
    /// connections closed after the grace period at the latest), stops the debug endpoint
    /// and waits for both.
    pub async fn stop(self) {
        self.server.shutdown();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Hands the server the checked xDS resources of every snapshot that has new ones (a
/// snapshot with only new diagnostics keeps the previous ones), until the server stops. A
/// placeholder snapshot is not served, so `/readyz` waits for the source's first full load.
async fn feed(server: XdsServer, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    let stopped = server.stopped();
    tokio::pin!(stopped);
    let mut served: Option<Arc<Snapshot>> = None;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        server.metrics().translations.store(
            crate::snapshot::translations(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let same = snapshot.is_placeholder()
            || served
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(&s.mesh, &snapshot.mesh));
        if !same {
            for withheld in snapshot.mesh.withheld() {
                let f = &withheld.finding;
                warn!(
                    resource = %f.name,
                    r#type = ?f.type_,
                    receiver = crate::snapshot::receiver_name(f.receiver),
                    kept = withheld.kept.as_str(),
                    violations = %f.violations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "),
                    "withheld a resource a proxy would refuse"
                );
            }
            server.publish(MeshResources::clone(&snapshot.mesh));
            served = Some(snapshot);
        }
        tokio::select! {
            () = &mut stopped => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
    }
}
