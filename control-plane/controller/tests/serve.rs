//! `lanyard-controller --config-dir DIR` serves ADS and the debug endpoint on the addresses
//! it prints, follows edits of DIR live, and shuts down cleanly on SIGTERM.

use std::ffi::OsStr;
use std::path::Path;

use std::process::Command;
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

    let pid = controller.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The stream ends cleanly, and the process exits 0.
    let end = client.next().await.unwrap_err();
    assert_eq!(end.code(), tonic::Code::Ok, "{end}");
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
