//! `lanyard-controller --config-dir DIR` serves ADS and the debug endpoint on the addresses
//! it prints, follows edits of DIR live, and shuts down cleanly on SIGTERM.

use std::ffi::OsStr;
use std::path::Path;

use std::time::{Duration, Instant};

use lanyard_xds::testing::client::{SotwClient, names, node};
use lanyard_xds::testing::{WAIT, http_get};
use lanyard_xds::type_url;

mod process;

use process::Controller;

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
    )
}

/// Replaces a file in one step, so the watcher never reads it half written.
fn replace(file: &Path, text: &str) {
    let aside = file.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, file).unwrap();
}

/// Starts the binary on `dir`.
fn start(dir: &Path) -> Controller {
    process::start(&[OsStr::new("--config-dir"), dir.as_os_str()])
}

#[tokio::test]
async fn serves_ads_follows_edits_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.yaml");
    std::fs::write(&file, service("cart", "10.96.0.10")).unwrap();
    let mut controller = start(dir.path());

    let mut client = SotwClient::connect(controller.xds, node("client.shop")).await;
    client.subscribe(type_url::CLUSTER, &[]);
    let first = client.recv_type(type_url::CLUSTER).await;
    let cart = "outbound|80||cart.shop.svc.cluster.local";
    assert!(
        names(&first).contains(&cart.to_string()),
        "{:?}",
        names(&first)
    );
    client.ack(&first);
    assert_eq!(http_get(controller.debug, "/readyz").await.0, 200);

    replace(
        &file,
        &format!(
            "{}---\n{}",
            service("cart", "10.96.0.10"),
            service("till", "10.96.0.11")
        ),
    );
    let next = client.recv_type(type_url::CLUSTER).await;
    assert!(
        names(&next).contains(&"outbound|80||till.shop.svc.cluster.local".to_string()),
        "{:?}",
        names(&next)
    );
    let (status, syncz) = http_get(controller.debug, "/debug/syncz").await;
    assert_eq!(status, 200);
    assert!(syncz.contains("\"node_id\":\"client.shop\""), "{syncz}");
    // The metrics port has the probes and /metrics, and no proxy's configuration.
    let (status, metrics) = http_get(controller.metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("lanyard_xds_connected_proxies 1\n"),
        "{metrics}"
    );
    assert_eq!(http_get(controller.metrics, "/readyz").await.0, 200);
    assert_eq!(http_get(controller.metrics, "/healthz").await.0, 200);
    for page in [
        "/debug/syncz",
        "/debug/config_dump?proxy=client.shop",
        "/debug/translation",
    ] {
        assert_eq!(http_get(controller.metrics, page).await.0, 404, "{page}");
    }

    controller.terminate();
    // The stream ends with UNAVAILABLE (clients reconnect elsewhere), not a reset, and the
    // process exits 0.
    let end = client.next().await.unwrap_err();
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end}");
    assert!(end.message().contains("shutting down"), "{end}");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = controller.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the controller did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "{status}");
}

/// Waits (boundedly) for the controller to exit; panics after [`WAIT`].
async fn wait_exit(controller: &mut Controller, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = controller.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A proxy that stopped reading (its flow-control window full) cannot hold the process:
/// after SIGTERM the other streams end with UNAVAILABLE at once, and the stuck connection is
/// closed when the grace period ends. Without the bound, tonic waits for it forever.
#[tokio::test]
async fn a_proxy_that_stopped_reading_does_not_hold_shutdown_past_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("services.yaml"),
        service("cart", "10.96.0.10"),
    )
    .unwrap();
    let mut controller = process::start(&[
        OsStr::new("--config-dir"),
        dir.path().as_os_str(),
        OsStr::new("--shutdown-grace"),
        OsStr::new("1"),
    ]);
    let mut good = SotwClient::connect(controller.xds, node("good.shop")).await;
    good.subscribe(type_url::CLUSTER, &[]);
    let first = good.recv_type(type_url::CLUSTER).await;
    good.ack(&first);
    // A 16-byte window: the first response does not fit, and nothing here reads it.
    let mut stuck = SotwClient::connect_with_window(controller.xds, node("stuck.shop"), 16).await;
    stuck.subscribe(type_url::CLUSTER, &[]);
    // Wait until the server has both streams.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, syncz) = http_get(controller.debug, "/debug/syncz").await;
        if syncz.contains("\"node_id\":\"stuck.shop\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stream for stuck.shop: {syncz}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    controller.terminate();
    let end = good.next().await.unwrap_err();
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end}");
    let status = wait_exit(
        &mut controller,
        "a proxy that does not read held the controller past its 1 s grace (and WAIT)",
    )
    .await;
    assert!(status.success(), "{status}");
    drop(stuck);
}
