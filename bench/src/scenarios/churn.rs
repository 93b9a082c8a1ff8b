//! Churn soak: 30 endpoint events per second and a route change every 5 s, each a full
//! edit → translate → publish, with the server's default debounce (50 ms, at most
//! 250 ms), at 1k SotW proxies. Convergence of an event: from the edit to the last proxy
//! holding a version that includes it.
//!
//! Which snapshot includes which event is exact: before publishing event `j` the driver
//! notes the address of one resource `Arc` of the mesh it hands over; a snapshot holds the
//! mesh of exactly one publish call, found by that address. A version a proxy reports maps
//! to the first snapshot that served it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanyard_model::NamespaceName;
use lanyard_xds::{MeshResources, ProxyRef, ResourceType, ServerConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use tokio::io::AsyncBufReadExt;

use super::Config;
use crate::fleet::{Fleet, FleetSpec};
use crate::mesh::{self, Shape};
use crate::real::{self, Real};
use crate::report::{self, Table, distribution, f2};
use crate::wire::{Protocol, now_ns};

fn marker(mesh: &MeshResources) -> usize {
    let all = mesh.for_proxy(&ProxyRef::envoy(NamespaceName::new("ns-0"), None));
    all.listeners.first().map_or(0, |l| Arc::as_ptr(l) as usize)
}

/// A served generation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Generation {
    /// The last event it includes.
    pub event: usize,
    /// Versions of EDS (one view for all) and of every RDS view.
    pub versions: Vec<String>,
}

/// What the churn server reports when the churn is over.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ChurnLog {
    /// Per event: when it was handed to the translator (epoch ns) and whether it was a
    /// route change (else an endpoint change).
    pub events: Vec<(u64, bool)>,
    /// Per served generation: the last event it includes and its versions.
    pub generations: Vec<Generation>,
    /// Objects → xDS resources, per event, ms.
    pub translate_ms: Vec<f64>,
    pub seconds: f64,
}

/// `lanyard-bench churn-server`: serves the mesh, prints `listening <addr>`, runs the churn
/// when stdin says `start`, prints the [`ChurnLog`] as one JSON line, and serves until
/// stdin closes. The server runs in a process of its own so that its memory and CPU are
/// measured without the driver's bookkeeping.
pub async fn serve(services: usize, duration: Duration, smoke: bool) -> anyhow::Result<()> {
    let shape = Shape::new(services);
    let mut objects = mesh::objects(&shape);
    let real = Real::start(ServerConfig::default()).await?;
    drop(real.publish(real::translate(&objects)).await?);
    println!("listening {}", real.addr);
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        if line.trim() == "start" {
            break;
        }
    }

    // Snapshot watcher: which event each generation includes, and its versions.
    let markers: Arc<Mutex<Vec<usize>>> = Arc::default();
    let generations: Arc<Mutex<Vec<Generation>>> = Arc::default();
    let namespaces: Vec<ProxyRef> = (0..shape.namespaces)
        .map(|n| ProxyRef::envoy(NamespaceName::new(format!("ns-{n}")), None))
        .collect();
    let watcher = {
        let mut rx = real.server.snapshots();
        rx.borrow_and_update();
        let markers = markers.clone();
        let generations = generations.clone();
        tokio::spawn(async move {
            let mut resolved = 0;
            while rx.changed().await.is_ok() {
                let Some(snapshot) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let mark = marker(snapshot.mesh());
                let markers = markers.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(event) = (resolved..markers.len())
                    .rev()
                    .find(|j| markers[*j] == mark)
                else {
                    continue;
                };
                resolved = event;
                let mut versions = vec![
                    snapshot
                        .view(ResourceType::Endpoint, &namespaces[0])
                        .version()
                        .to_string(),
                ];
                for proxy in &namespaces {
                    versions.push(
                        snapshot
                            .view(ResourceType::Route, proxy)
                            .version()
                            .to_string(),
                    );
                }
                generations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Generation { event, versions });
            }
        })
    };

    let mut log = ChurnLog::default();
    let start = Instant::now();
    let endpoint_every = Duration::from_secs(1) / 30;
    let route_every = if smoke {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let mut next_endpoint = Duration::ZERO;
    let mut next_route = route_every;
    while start.elapsed() < duration {
        let now = start.elapsed();
        let route = now >= next_route;
        if route {
            next_route += route_every;
            let r = log.events.iter().filter(|e| e.1).count();
            mesh::producer_weight(
                &mut objects,
                &shape,
                1 + r % shape.services,
                10 + (r % 80) as u32,
            );
        } else if now >= next_endpoint {
            next_endpoint += endpoint_every;
            let k = log.events.len();
            mesh::endpoint_event(&mut objects, &shape, k % shape.services, k + 1);
        } else {
            tokio::time::sleep(next_endpoint.min(next_route).saturating_sub(now)).await;
            continue;
        }
        let t0 = now_ns();
        let began = Instant::now();
        let mesh = real::translate(&objects);
        log.translate_ms.push(report::ms(began.elapsed()));
        markers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(marker(&mesh));
        log.events.push((t0, route));
        real.server.publish(mesh);
    }
    log.seconds = start.elapsed().as_secs_f64();
    // The last events' snapshots.
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.abort();
    log.generations = std::mem::take(&mut *generations.lock().unwrap_or_else(|e| e.into_inner()));
    println!("{}", serde_json::to_string(&log)?);
    while stdin.next_line().await?.is_some() {}
    real.stop();
    Ok(())
}

/// Runs the scenario.
pub async fn run(config: &Config) -> anyhow::Result<Value> {
    let count = config.sizes(&[20], &[1000])[0];
    let shape = Shape::new(config.mesh_services());
    let mut server = Command::new(&config.bench)
        .args([
            "churn-server",
            "--services",
            &shape.services.to_string(),
            "--churn-secs",
            &config.churn.as_secs().to_string(),
        ])
        .args(config.smoke.then_some("--smoke"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = server.id();
    let mut server_in = server.stdin.take().expect("piped stdin");
    let mut lines = BufReader::new(server.stdout.take().expect("piped stdout")).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("the churn server exited"))??;
        if let Some(a) = line.strip_prefix("listening ") {
            break a.parse()?;
        }
    };
    let (log_tx, mut log_rx) = tokio::sync::oneshot::channel::<anyhow::Result<ChurnLog>>();
    std::thread::spawn(move || {
        let result = match lines.next() {
            Some(Ok(line)) => serde_json::from_str(&line).map_err(anyhow::Error::from),
            _ => Err(anyhow::anyhow!("the churn server exited without its log")),
        };
        let _ = log_tx.send(result);
    });
    let spec = FleetSpec::spread_out(&config.client, addr, count, shape.services, Protocol::Sotw);
    let (mut fleet, _) = Fleet::start_settled(&spec, config.timeout(count)).await?;

    let cpu0 = report::cpu_time(pid);
    let client_cpu0 = report::cpu_time(fleet.pid());
    let rss_start = report::rss_kib(pid);
    let mut rss_samples = vec![(0.0, rss_start)];
    let start = Instant::now();
    writeln!(server_in, "start")?;
    let log = loop {
        tokio::select! {
            log = &mut log_rx => break log??,
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                rss_samples.push((start.elapsed().as_secs_f64(), report::rss_kib(pid)));
                fleet.settle(Duration::ZERO).await?;
            }
        }
    };
    let ChurnLog {
        events,
        generations,
        translate_ms,
        seconds: churn_secs,
    } = log;
    let cpu = report::cpu_time(pid) - cpu0;
    let client_cpu = report::cpu_time(fleet.pid()) - client_cpu0;
    let rss_end = report::rss_kib(pid);
    // Let the last events converge, then watch memory with no churn.
    fleet.settle(Duration::from_secs(2)).await?;
    let settle = if config.smoke { 1 } else { 10 };
    fleet.settle(Duration::from_secs(settle)).await?;
    let rss_after = report::rss_kib(pid);

    // Version → first generation serving it; event → first generation including it.
    let mut first_gen: HashMap<&str, usize> = HashMap::new();
    for (g, generation) in generations.iter().enumerate() {
        for v in &generation.versions {
            first_gen.entry(v.as_str()).or_insert(g);
        }
    }
    let gen_of_event = |j: usize| generations.iter().position(|g| g.event >= j);
    // Per proxy and type, responses in order: (time, generation).
    let mut received: Vec<[Vec<(u64, usize)>; 2]> = vec![[Vec::new(), Vec::new()]; count];
    let mut unknown = 0;
    let t_first = events.first().map_or(u64::MAX, |e| e.0);
    for r in fleet.responses_since(t_first) {
        let slot = match r.ty {
            "EDS" => 0,
            "RDS" => 1,
            _ => continue,
        };
        match first_gen.get(r.version) {
            Some(g) => received[r.proxy][slot].push((r.at, *g)),
            None => unknown += 1,
        }
    }
    let mut convergence = [Vec::new(), Vec::new()];
    let mut missed = 0;
    for (j, (t0, route)) in events.iter().enumerate() {
        let Some(g) = gen_of_event(j) else {
            missed += 1;
            continue;
        };
        let slot = usize::from(*route);
        let mut last = 0u64;
        let mut all = true;
        for proxy in &received {
            match proxy[slot].iter().find(|(at, gen_)| *gen_ >= g && at >= t0) {
                Some((at, _)) => last = last.max(*at),
                None => all = false,
            }
        }
        if all {
            convergence[slot].push(report::ms_between(*t0, last));
        } else {
            missed += 1;
        }
    }
    let halves = |v: &[f64]| {
        let (a, b) = v.split_at(v.len() / 2);
        let p99 = |x: &[f64]| {
            let mut x = x.to_vec();
            x.sort_by(f64::total_cmp);
            report::percentile(&x, 0.99)
        };
        (p99(a), p99(b))
    };
    let (first_half, second_half) = halves(&convergence[0]);
    let endpoint = distribution(&mut convergence[0].clone());
    let route = distribution(&mut convergence[1].clone());
    let slope = drift_kib_per_min(&rss_samples);
    let retries = fleet.retries();
    fleet.stop();
    drop(server_in);
    let _ = server.wait();

    let mut table = Table::new(
        &format!(
            "churn: {count} SotW proxies, {churn_secs:.0} s, 30 endpoint events/s + a route change every {} s",
            if config.smoke { 1 } else { 5 }
        ),
        &[
            "events",
            "kind",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p99 1st half",
            "p99 2nd half",
        ],
    );
    table.row(vec![
        convergence[0].len().to_string(),
        "endpoint".into(),
        endpoint["p50_ms"].to_string(),
        endpoint["p99_ms"].to_string(),
        endpoint["max_ms"].to_string(),
        f2(first_half),
        f2(second_half),
    ]);
    table.row(vec![
        convergence[1].len().to_string(),
        "route".into(),
        route["p50_ms"].to_string(),
        route["p99_ms"].to_string(),
        route["max_ms"].to_string(),
        "-".into(),
        "-".into(),
    ]);
    let cpu_pct = cpu.as_secs_f64() / churn_secs * 100.0;
    table.row(vec![
        format!(
            "CPU {:.0}% (server process: translator + server), client {:.0}%",
            cpu_pct,
            client_cpu.as_secs_f64() / churn_secs * 100.0
        ),
        format!("RSS start {:.1} MB", rss_start as f64 / 1024.0),
        format!("end {:.1} MB", rss_end as f64 / 1024.0),
        format!("after {settle} s idle {:.1} MB", rss_after as f64 / 1024.0),
        format!("drift {slope:.0} KiB/min"),
        format!("{} generations", generations.len()),
        format!("{missed} unconverged"),
    ]);
    let json = json!({
        "scenario": "churn",
        "proxies": count,
        "services": shape.services,
        "seconds": report::round(churn_secs),
        "debounce_ms": 50,
        "events": events.len(),
        "route_changes": convergence[1].len(),
        "endpoint_convergence": endpoint,
        "route_convergence": route,
        "endpoint_p99_first_half_ms": report::round(first_half),
        "endpoint_p99_second_half_ms": report::round(second_half),
        "translate": distribution(&mut translate_ms.clone()),
        "generations": generations.len(),
        "unconverged_events": missed,
        "unknown_versions": unknown,
        "stream_retries": retries.0,
        "first_retry_reason": retries.1,
        "server_cpu_percent": report::round(cpu_pct),
        "client_cpu_percent": report::round(client_cpu.as_secs_f64() / churn_secs * 100.0),
        "rss_start_kib": rss_start,
        "rss_end_kib": rss_end,
        "rss_after_idle_kib": rss_after,
        "rss_drift_kib_per_min": report::round(slope),
        "rss_every_10s_kib": rss_samples.iter().step_by(10).map(|s| s.1).collect::<Vec<_>>(),
        "target": "no RSS growth after churn; p99 convergence stable",
    });
    report::publish(&config.out, "churn", &table, &json)?;
    Ok(json)
}

/// Least-squares slope of RSS over time, KiB per minute, over the second half.
fn drift_kib_per_min(samples: &[(f64, u64)]) -> f64 {
    let half = &samples[samples.len() / 2..];
    let n = half.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = half.iter().map(|s| s.0).sum::<f64>() / n;
    let my = half.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let sxy: f64 = half.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let sxx: f64 = half.iter().map(|s| (s.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx * 60.0 }
}
