//! Measures the controller with many connected proxies: how long a route weight change
//! takes to reach N state-of-the-world clients (until each has ACKed it), and how much
//! memory each idle connected proxy costs the controller (RSS difference / N).
//!
//! ```sh
//! cargo build --release -p lanyard-controller --bin lanyard-controller
//! cargo run --release -p lanyard-xds --example fanout -- \
//!     target/release/lanyard-controller examples/ 100
//! ```
//!
//! Each client subscribes like Envoy (CDS, EDS, LDS, RDS, all wildcard) as
//! `bench-<i>.bookinfo`. The change rewrites the 90/10 weights of
//! `reviews/routes.yaml` (in a copy of the directory) to 50/50.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lanyard_xds::testing::client::{SotwClient, node};
use lanyard_xds::testing::http_get;
use lanyard_xds::type_url;
use tokio::sync::mpsc;

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// (sum, count) of a histogram series in Prometheus text.
fn histogram(metrics: &str, name: &str, labels: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        let prefix = format!("{name}_{suffix}{{{labels}}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let controller = PathBuf::from(args.next().expect("usage: fanout CONTROLLER DIR [N]"));
    let source = PathBuf::from(args.next().expect("usage: fanout CONTROLLER DIR [N]"));
    let clients: usize = args
        .next()
        .map_or(100, |n| n.parse().expect("N is a number"));

    let dir = std::env::temp_dir().join(format!("lanyard-fanout-{}", std::process::id()));
    copy_dir(&source, &dir).expect("copy the config directory");
    let routes = dir.join("reviews/routes.yaml");
    let original = std::fs::read_to_string(&routes).expect("reviews/routes.yaml");

    let mut child = Command::new(&controller)
        .arg("--config-dir")
        .arg(&dir)
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--debug-address",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the controller");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut xds, mut debug): (Option<SocketAddr>, Option<SocketAddr>) = (None, None);
    while xds.is_none() || debug.is_none() {
        let line = lines.next().expect("controller output").unwrap();
        if let Some(a) = line.strip_prefix("xds listening on ") {
            xds = Some(a.parse().unwrap());
        } else if let Some(a) = line.strip_prefix("debug listening on ") {
            debug = Some(a.parse().unwrap());
        }
    }
    let (xds, debug) = (xds.unwrap(), debug.unwrap());
    while http_get(debug, "/readyz").await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(pid);

    // Every RDS response each client gets: (client, version, when).
    let (events, mut rx) = mpsc::unbounded_channel::<(usize, String, Instant)>();
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<usize>();
    for i in 0..clients {
        let events = events.clone();
        let ready_tx = ready_tx.clone();
        tokio::spawn(async move {
            let mut client = SotwClient::connect(xds, node(&format!("bench-{i}.bookinfo"))).await;
            for ty in [
                type_url::CLUSTER,
                type_url::ENDPOINT,
                type_url::LISTENER,
                type_url::ROUTE,
            ] {
                client.subscribe(ty, &[]);
                let response = client.recv_type(ty).await;
                client.ack(&response);
                if ty == type_url::ROUTE {
                    let _ = events.send((i, response.version_info.clone(), Instant::now()));
                }
            }
            let _ = ready_tx.send(i);
            loop {
                let Ok(response) = client.next_untimed().await else {
                    return;
                };
                client.ack(&response);
                if response.type_url == type_url::ROUTE {
                    let _ = events.send((i, response.version_info.clone(), Instant::now()));
                }
            }
        });
    }
    for _ in 0..clients {
        ready.recv().await.unwrap();
    }
    let mut initial = vec![String::new(); clients];
    while let Ok((i, version, _)) = rx.try_recv() {
        initial[i] = version;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);
    let metrics_before = http_get(debug, "/metrics").await.1;

    let changed =
        original
            .replacen("weight: 90", "weight: 50", 1)
            .replacen("weight: 10", "weight: 50", 1);
    assert_ne!(changed, original, "no 90/10 weights in reviews/routes.yaml");
    let aside = routes.with_extension("tmp");
    std::fs::write(&aside, changed).unwrap();
    let start = Instant::now();
    std::fs::rename(&aside, &routes).unwrap();
    let mut reached = vec![None; clients];
    let mut left = clients;
    while left > 0 {
        let (i, version, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("every client got the change within 30 s")
            .unwrap();
        if version != initial[i] && reached[i].is_none() {
            reached[i] = Some(at.duration_since(start));
            left -= 1;
        }
    }
    let mut times: Vec<Duration> = reached.into_iter().map(Option::unwrap).collect();
    times.sort();
    // Let the last ACKs reach the server before reading its histogram.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics_after = http_get(debug, "/metrics").await.1;
    let (sum0, count0) = histogram(
        &metrics_before,
        "lanyard_xds_convergence_seconds",
        "type=\"RDS\"",
    );
    let (sum1, count1) = histogram(
        &metrics_after,
        "lanyard_xds_convergence_seconds",
        "type=\"RDS\"",
    );
    let (psum0, pcount0) = histogram(
        &metrics_before,
        "lanyard_xds_push_latency_seconds",
        "type=\"RDS\"",
    );
    let (psum1, pcount1) = histogram(
        &metrics_after,
        "lanyard_xds_push_latency_seconds",
        "type=\"RDS\"",
    );

    println!("clients: {clients}");
    println!(
        "weight change, file renamed -> RDS received and ACKed by the client: p50 {:?}, p90 {:?}, max {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        times[times.len() - 1]
    );
    println!(
        "server-side, change seen -> response sent (RDS): mean {:.1} ms over {} pushes",
        (psum1 - psum0) / (pcount1 - pcount0).max(1.0) * 1e3,
        pcount1 - pcount0
    );
    println!(
        "server-side, change seen -> ACK (RDS): mean {:.1} ms over {} ACKs",
        (sum1 - sum0) / (count1 - count0).max(1.0) * 1e3,
        count1 - count0
    );
    println!(
        "controller RSS: {} KiB before clients, {} KiB with {clients} idle clients: {:.1} KiB per proxy",
        rss_before,
        rss_idle,
        (rss_idle as f64 - rss_before as f64) / clients as f64
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(0);
}
