//! Idle memory: (RSS(N) − RSS(0)) / N of the server process with N proxies connected,
//! holding their config, doing nothing. The server runs in a child process of its own
//! (`lanyard-bench serve`) so that nothing else in the driver counts.
//!
//! Floor: the same N connections, each with an open ADS stream, to the floor server with
//! no config (an idle HTTP/2 connection and stream).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use lanyard_xds::ServerConfig;
use serde_json::{Value, json};

use super::Config;
use crate::fleet::{Fleet, FleetSpec};
use crate::floor::Floor;
use crate::mesh::{self, Shape};
use crate::real::{self, Real};
use crate::report::{self, Table, f2, ratio};
use crate::wire::Protocol;

/// What `lanyard-bench serve` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The real server with the mesh published.
    Real,
    /// The floor server with no config.
    Floor,
    /// The floor server having sent each proxy the same responses the real server sends
    /// (pre-encoded): what the transport keeps after delivering the config.
    FloorConfig,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Real => "real",
            Mode::Floor => "floor",
            Mode::FloorConfig => "floor-config",
        }
    }
}

/// `lanyard-bench serve`: serves until stdin closes; prints `listening <addr>` first.
pub async fn serve(mode: Mode, services: usize, count: usize) -> anyhow::Result<()> {
    let stop: Box<dyn FnOnce()> = match mode {
        Mode::Real => {
            let real = Real::start(ServerConfig::default()).await?;
            real.publish(real::translate(&mesh::objects(&Shape::new(services))))
                .await?;
            println!("listening {}", real.addr);
            Box::new(move || real.stop())
        }
        Mode::Floor => {
            let listener = real::listener()?;
            println!("listening {}", listener.local_addr()?);
            let floor = Floor::start(listener, Vec::new());
            Box::new(move || floor.stop())
        }
        Mode::FloorConfig => {
            let shape = Shape::new(services);
            let initial = {
                let snapshot = lanyard_xds::MeshSnapshot::build(
                    1,
                    std::time::Instant::now(),
                    real::translate(&mesh::objects(&shape)),
                )?;
                let views = real::Views::of(&snapshot, &shape, count)?;
                real::initial(&views, Protocol::Sotw, &mut real::Encoder::default())
            };
            let listener = real::listener()?;
            println!("listening {}", listener.local_addr()?);
            let floor = Floor::start(listener, initial);
            Box::new(move || floor.stop())
        }
    };
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    })
    .await?;
    stop();
    Ok(())
}

struct Measured {
    server_per_proxy_kib: f64,
    client_per_proxy_kib: f64,
    rss0_kib: u64,
    rss_n_kib: u64,
    retries: usize,
}

async fn measure(
    config: &Config,
    mode: Mode,
    count: usize,
    services: usize,
) -> anyhow::Result<Measured> {
    let mut server = Command::new(&config.bench)
        .args([
            "serve",
            "--mode",
            mode.name(),
            "--services",
            &services.to_string(),
        ])
        .args(["--count", &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = server.id();
    let mut lines = BufReader::new(server.stdout.take().expect("piped stdout")).lines();
    let addr: SocketAddr = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("the server process exited"))??;
        if let Some(a) = line.strip_prefix("listening ") {
            break a.parse()?;
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = report::rss_kib(pid);
    let mut fleet = Fleet::spawn(&FleetSpec::spread_out(
        &config.client,
        addr,
        count,
        services,
        Protocol::Sotw,
    ))?;
    let client_pid = fleet.pid();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client0 = report::rss_kib(client_pid);
    match mode {
        Mode::Real | Mode::FloorConfig => {
            fleet.wait_ready(config.timeout(count)).await?;
        }
        Mode::Floor => fleet.wait_open(config.timeout(count)).await?,
    }
    fleet
        .settle(Duration::from_secs(if config.smoke { 1 } else { 3 }))
        .await?;
    let rss_n = report::rss_kib(pid);
    let client_n = report::rss_kib(client_pid);
    let retries = fleet.retries().0;
    fleet.stop();
    drop(server.stdin.take());
    let _ = server.wait();
    Ok(Measured {
        server_per_proxy_kib: (rss_n as f64 - rss0 as f64) / count as f64,
        client_per_proxy_kib: (client_n as f64 - client0 as f64) / count as f64,
        rss0_kib: rss0,
        rss_n_kib: rss_n,
        retries,
    })
}

/// Runs the scenario.
pub async fn run(config: &Config) -> anyhow::Result<Value> {
    let sizes = config.sizes(&[20], &[1000, 5000, 10000]);
    let services = config.mesh_services();
    let mut table = Table::new(
        &format!("idle memory: (RSS(N) − RSS(0)) / N of the server process ({services} Services)"),
        &[
            "proxies",
            "real KiB/proxy",
            "floor KiB/proxy",
            "ratio",
            "floor+config KiB/proxy",
            "real RSS(0) MB",
            "real RSS(N) MB",
            "client KiB/proxy",
            "retries",
        ],
    );
    let mut results = Vec::new();
    for &count in &sizes {
        let real = measure(config, Mode::Real, count, services).await?;
        let floor = measure(config, Mode::Floor, count, services).await?;
        let floor_config = measure(config, Mode::FloorConfig, count, services).await?;
        table.row(vec![
            count.to_string(),
            f2(real.server_per_proxy_kib),
            f2(floor.server_per_proxy_kib),
            ratio(real.server_per_proxy_kib, floor.server_per_proxy_kib),
            f2(floor_config.server_per_proxy_kib),
            f2(real.rss0_kib as f64 / 1024.0),
            f2(real.rss_n_kib as f64 / 1024.0),
            f2(real.client_per_proxy_kib),
            format!(
                "{}/{}/{}",
                real.retries, floor.retries, floor_config.retries
            ),
        ]);
        results.push(json!({
            "proxies": count,
            "services": services,
            "real_kib_per_proxy": report::round(real.server_per_proxy_kib),
            "floor_kib_per_proxy": report::round(floor.server_per_proxy_kib),
            "floor_with_config_kib_per_proxy": report::round(floor_config.server_per_proxy_kib),
            "real_rss0_kib": real.rss0_kib,
            "real_rssn_kib": real.rss_n_kib,
            "floor_rss0_kib": floor.rss0_kib,
            "floor_rssn_kib": floor.rss_n_kib,
            "client_kib_per_proxy": report::round(real.client_per_proxy_kib),
            "stream_retries": real.retries,
            "floor_stream_retries": floor.retries + floor_config.retries,
        }));
    }
    let json =
        json!({"scenario": "idle", "target": "≤ 100 KB per proxy at 10k", "results": results});
    report::publish(&config.out, "idle", &table, &json)?;
    Ok(json)
}
