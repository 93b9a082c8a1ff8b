//! `lanyard-controller --config-dir DIR` serves ADS and the debug endpoint on the addresses
//! it prints, follows edits of DIR live, and shuts down cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lanyard_xds::testing::client::{SotwClient, names, node};
use lanyard_xds::testing::{WAIT, http_get};
use lanyard_xds::type_url;

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

struct Controller {
    child: Child,
    xds: SocketAddr,
    debug: SocketAddr,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on free ports and reads the addresses it prints.
fn start(dir: &Path) -> Controller {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lanyard-controller"))
        .args(["--config-dir"])
        .arg(dir)
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--debug-address",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the controller starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut xds, mut debug) = (None, None);
    let deadline = Instant::now() + WAIT;
    while xds.is_none() || debug.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the controller printed its addresses in time");
        if let Some(address) = line.strip_prefix("xds listening on ") {
            xds = Some(address.parse().unwrap());
        } else if let Some(address) = line.strip_prefix("debug listening on ") {
            debug = Some(address.parse().unwrap());
        }
    }
    Controller {
        child,
        xds: xds.unwrap(),
        debug: debug.unwrap(),
    }
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
