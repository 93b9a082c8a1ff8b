//! One change, fan-out; and the reconnect storm.
//!
//! Fan-out: N proxies hold their full config; one change is made to the objects and
//! handed to the translator and the server (the clock starts there; the server's debounce
//! is set to zero, so the figure has none of it: the default adds 50 ms); the figure is
//! the time until the last affected proxy received (and at once ACKed) it. Which proxies
//! are affected, and in which types, is read from the server's own snapshots before and
//! after (a proxy is affected in a type when the version of its view changed). Three
//! changes: a consumer route weight (one namespace sees it), a producer route weight
//! (every namespace), an endpoint address (every proxy, EDS only).
//!
//! Floor: the same client process against the floor server, which pushes the very
//! responses the real server produced (encoded beforehand) to the same proxies.
//!
//! Reconnect storm: N proxies connect within one second; the figure is the time from the
//! first connection until the last proxy has all four types. Floor: the floor server
//! sending the same responses, encoded beforehand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_index::Objects;
use lanyard_xds::{MeshSnapshot, ServerConfig};
use serde_json::{Value, json};

use super::Config;
use crate::fleet::{Fleet, FleetSpec};
use crate::floor::Floor;
use crate::mesh::{self, Shape};
use crate::real::{self, Encoder, Real, Views, type_index};
use crate::report::{self, Table, distribution, f2, ms, ms_between, ratio};
use crate::wire::{Protocol, now_ns};

const TYPE_NAMES: [&str; 4] = ["CDS", "EDS", "LDS", "RDS"];
/// The reconnect storm's connections start evenly over this long.
const SPREAD_NS: u64 = 1_000_000_000;

/// A change to the mesh.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// The consumer route's weight: clients in one namespace.
    OneNamespace,
    /// A producer route's weight: every client.
    AllNamespaces,
    /// An endpoint's address: every client, EDS.
    Endpoint,
}

impl Change {
    const ALL: [Change; 3] = [
        Change::OneNamespace,
        Change::AllNamespaces,
        Change::Endpoint,
    ];

    fn name(self) -> &'static str {
        match self {
            Change::OneNamespace => "route, one namespace",
            Change::AllNamespaces => "route, all namespaces",
            Change::Endpoint => "endpoint",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Change::OneNamespace => "route_one_namespace",
            Change::AllNamespaces => "route_all_namespaces",
            Change::Endpoint => "endpoint",
        }
    }

    fn apply(self, objects: &mut Objects, shape: &Shape) {
        match self {
            Change::OneNamespace => mesh::consumer_weight(objects, shape, 70),
            Change::AllNamespaces => mesh::producer_weight(objects, shape, 1, 60),
            Change::Endpoint => mesh::endpoint_event(objects, shape, 2, 1),
        }
    }
}

/// What one change did, for one server.
#[derive(Debug, Default)]
struct Outcome {
    /// Per affected proxy: change made → its last affected type received, ms.
    latencies: Vec<f64>,
    affected: usize,
    unaffected_pushed: usize,
    /// Responses per type, over all proxies.
    responses: [usize; 4],
    bytes: [usize; 4],
    /// Responses of a type that had not changed for that proxy.
    needless: usize,
    translate_ms: f64,
    snapshot_ms: f64,
}

impl Outcome {
    fn json(&mut self) -> Value {
        let per_type = |v: &[usize; 4]| -> BTreeMap<&str, usize> {
            TYPE_NAMES.iter().copied().zip(v.iter().copied()).collect()
        };
        json!({
            "affected_proxies": self.affected,
            "unaffected_proxies_pushed": self.unaffected_pushed,
            "needless_type_responses": self.needless,
            "responses": per_type(&self.responses),
            "bytes": per_type(&self.bytes),
            "latency": distribution(&mut self.latencies),
            "translate_ms": report::round(self.translate_ms),
            "publish_to_snapshot_ms": report::round(self.snapshot_ms),
        })
    }

    fn max(&self) -> f64 {
        self.latencies.iter().copied().fold(f64::NAN, f64::max)
    }
}

/// Waits until each affected (proxy, type) got a response since `t0`, lets stray pushes
/// arrive, and tallies.
/// How far out of order (in time) proxies' reports may arrive.
const REPORT_SLACK_NS: u64 = 2_000_000_000;

async fn collect(
    fleet: &mut Fleet,
    t0: u64,
    changed: &[[bool; 4]],
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let expected: usize = changed
        .iter()
        .map(|c| c.iter().filter(|x| **x).count())
        .sum();
    let waited = fleet
        .wait_until(
            timeout,
            "every affected proxy to get the change",
            |events| {
                let mut got = vec![[false; 4]; changed.len()];
                for e in events.iter().rev() {
                    if let crate::wire::Event::Resp { p, t, at, .. } = e {
                        // Proxies report from their own tasks, so an event from before the
                        // change can land after later ones: stop only well before it.
                        if *at < t0.saturating_sub(REPORT_SLACK_NS) {
                            break;
                        }
                        if *at < t0 {
                            continue;
                        }
                        if let (Some(t), Some(g)) = (type_index(t), got.get_mut(*p)) {
                            g[t] |= changed[*p][t];
                        }
                    }
                }
                got.iter()
                    .map(|g| g.iter().filter(|x| **x).count())
                    .sum::<usize>()
                    >= expected
            },
        )
        .await;
    if let Err(e) = waited {
        return Err(e.context(missing(fleet, t0, changed)));
    }
    fleet.settle(Duration::from_millis(300)).await?;
    let mut outcome = Outcome {
        affected: changed.iter().filter(|c| c.iter().any(|x| *x)).count(),
        ..Outcome::default()
    };
    let mut last = vec![0u64; changed.len()];
    let mut pushed = vec![false; changed.len()];
    for r in fleet.responses_since(t0) {
        let Some(t) = type_index(r.ty) else { continue };
        outcome.responses[t] += 1;
        outcome.bytes[t] += r.bytes;
        pushed[r.proxy] = true;
        if changed[r.proxy][t] {
            last[r.proxy] = last[r.proxy].max(r.at);
        } else {
            outcome.needless += 1;
        }
    }
    for (p, c) in changed.iter().enumerate() {
        if c.iter().any(|x| *x) {
            outcome.latencies.push(ms_between(t0, last[p]));
        } else if pushed[p] {
            outcome.unaffected_pushed += 1;
        }
    }
    Ok(outcome)
}

/// For a timeout: each affected (proxy, type) with no response since `t0`, and what that
/// proxy received last (times relative to `t0`), so that a failure says what was lost.
fn missing(fleet: &Fleet, t0: u64, changed: &[[bool; 4]]) -> String {
    let mut got = vec![[false; 4]; changed.len()];
    for r in fleet.responses_since(t0) {
        if let (Some(t), Some(g)) = (type_index(r.ty), got.get_mut(r.proxy)) {
            g[t] = true;
        }
    }
    let rel = |at: u64| (at as i128 - t0 as i128) as f64 / 1e6;
    let mut lines = Vec::new();
    for (p, c) in changed.iter().enumerate() {
        let lost: Vec<&str> = (0..4)
            .filter(|&t| c[t] && !got[p][t])
            .map(|t| TYPE_NAMES[t])
            .collect();
        if lost.is_empty() {
            continue;
        }
        let last: Vec<String> = fleet
            .events
            .iter()
            .filter_map(|e| match e {
                crate::wire::Event::Resp { p: q, t, v, at, .. } if *q == p => {
                    Some(format!("{t} {v} at {:+.1} ms", rel(*at)))
                }
                crate::wire::Event::Retry { p: q, msg, at } if *q == p => {
                    Some(format!("retry ({msg}) at {:+.1} ms", rel(*at)))
                }
                _ => None,
            })
            .rev()
            .take(6)
            .collect();
        lines.push(format!(
            "proxy {p} lacks {lost:?}; its last events: {last:?}"
        ));
    }
    format!(
        "{} (proxy, type) pairs got nothing since the change: {}",
        lines.len(),
        lines.join("; ")
    )
}

/// The real server's side of one size and protocol: changes, and what the floor needs.
struct RealRun {
    outcomes: Vec<Outcome>,
    /// Per change: per proxy, the responses to push.
    pushes: Vec<Vec<Vec<bytes::Bytes>>>,
    changed: Vec<Vec<[bool; 4]>>,
    initial_ms: f64,
    /// Streams that failed and were opened again (see `Fleet::retries`).
    retries: (usize, Option<String>),
}

async fn real_run(
    config: &Config,
    shape: &Shape,
    count: usize,
    protocol: Protocol,
) -> anyhow::Result<RealRun> {
    let mut objects = mesh::objects(shape);
    let real = Real::start(ServerConfig {
        debounce: Duration::ZERO,
        max_delay: Duration::ZERO,
        ..ServerConfig::default()
    })
    .await?;
    let mut snapshot = real.publish(real::translate(&objects)).await?;
    let mut views = Views::of(&snapshot, shape, count)?;
    let timeout = config.timeout(count);
    let t_connect = now_ns();
    let spec = FleetSpec::spread_out(&config.client, real.addr, count, shape.services, protocol);
    let (mut fleet, ready) = Fleet::start_settled(&spec, timeout).await?;
    let mut encoder = Encoder::default();
    let mut run = RealRun {
        outcomes: Vec::new(),
        pushes: Vec::new(),
        changed: Vec::new(),
        initial_ms: ms_between(t_connect, ready),
        retries: (0, None),
    };
    for change in Change::ALL {
        let t0 = now_ns();
        let start = Instant::now();
        change.apply(&mut objects, shape);
        let mesh = real::translate(&objects);
        let translated = start.elapsed();
        let next: Arc<MeshSnapshot> = real.publish(mesh).await?;
        let served = start.elapsed();
        let next_views = Views::of(&next, shape, count)?;
        let changed = views.changed(&next_views);
        let mut outcome = collect(&mut fleet, t0, &changed, timeout).await?;
        outcome.translate_ms = ms(translated);
        outcome.snapshot_ms = ms(served - translated);
        run.pushes.push(
            views
                .views
                .iter()
                .zip(&next_views.views)
                .map(|(old, new)| encoder.change(protocol, old, new))
                .collect(),
        );
        run.changed.push(changed);
        run.outcomes.push(outcome);
        snapshot = next;
        views = next_views;
        fleet.settle(Duration::from_millis(200)).await?;
    }
    drop(snapshot);
    run.retries = fleet.retries();
    fleet.stop();
    real.stop();
    Ok(run)
}

/// The floor for the same changes: the captured responses pushed to the same proxies.
async fn floor_run(
    config: &Config,
    shape: &Shape,
    count: usize,
    protocol: Protocol,
    run: &RealRun,
) -> anyhow::Result<(Vec<Outcome>, f64, usize)> {
    // The floor starts from the state before the first change.
    let objects = mesh::objects(shape);
    let snapshot = MeshSnapshot::build(1, std::time::Instant::now(), real::translate(&objects))?;
    let views = Views::of(&snapshot, shape, count)?;
    let mut encoder = Encoder::default();
    let initial = real::initial(&views, protocol, &mut encoder);
    let listener = real::listener()?;
    let addr = listener.local_addr()?;
    let floor = Floor::start(listener, initial);
    let timeout = config.timeout(count);
    let t_connect = now_ns();
    let spec = FleetSpec::spread_out(&config.client, addr, count, shape.services, protocol);
    let (mut fleet, ready) = Fleet::start_settled(&spec, timeout).await?;
    let mut outcomes = Vec::new();
    for (pushes, changed) in run.pushes.iter().zip(&run.changed) {
        let t0 = now_ns();
        for (p, responses) in pushes.iter().enumerate() {
            for bytes in responses {
                floor.push(p, bytes.clone()).await;
            }
        }
        outcomes.push(collect(&mut fleet, t0, changed, timeout).await?);
    }
    let retries = fleet.retries().0;
    fleet.stop();
    floor.stop();
    Ok((outcomes, ms_between(t_connect, ready), retries))
}

/// Runs the fan-out scenario.
pub async fn run(config: &Config) -> anyhow::Result<Value> {
    let sizes = config.sizes(&[20], &[1000, 5000, 10000]);
    let shape = Shape::new(config.mesh_services());
    let mut table = Table::new(
        &format!(
            "fanout: one change → last affected proxy has it ({} Services, debounce 0)",
            shape.services
        ),
        &[
            "proxies",
            "protocol",
            "change",
            "affected",
            "unaffected pushed",
            "types sent",
            "p50 ms",
            "p99 ms",
            "max ms",
            "floor max ms",
            "ratio (max)",
            "MB sent",
            "translate ms",
            "retries",
        ],
    );
    let mut results = Vec::new();
    for &count in &sizes {
        for protocol in [Protocol::Sotw, Protocol::Delta] {
            let mut real_run = real_run(config, &shape, count, protocol).await?;
            let (mut floor, _, floor_retries) =
                floor_run(config, &shape, count, protocol, &real_run).await?;
            for ((change, real), floor) in Change::ALL
                .iter()
                .zip(real_run.outcomes.iter_mut())
                .zip(floor.iter_mut())
            {
                let types: Vec<&str> = TYPE_NAMES
                    .iter()
                    .zip(real.responses)
                    .filter(|(_, n)| *n > 0)
                    .map(|(t, _)| *t)
                    .collect();
                let mut sorted = real.latencies.clone();
                sorted.sort_by(f64::total_cmp);
                table.row(vec![
                    count.to_string(),
                    protocol.name().to_string(),
                    change.name().to_string(),
                    real.affected.to_string(),
                    real.unaffected_pushed.to_string(),
                    types.join("+"),
                    f2(report::percentile(&sorted, 0.5)),
                    f2(report::percentile(&sorted, 0.99)),
                    f2(real.max()),
                    f2(floor.max()),
                    ratio(real.max(), floor.max()),
                    f2(real.bytes.iter().sum::<usize>() as f64 / 1e6),
                    f2(real.translate_ms),
                    real_run.retries.0.to_string(),
                ]);
                results.push(json!({
                    "proxies": count,
                    "protocol": protocol.name(),
                    "change": change.key(),
                    "services": shape.services,
                    "real": real.json(),
                    "floor": floor.json(),
                    "ratio_max": report::round(real.max() / floor.max()),
                    "initial_sync_ms": report::round(real_run.initial_ms),
                    "stream_retries": real_run.retries.0,
                    "first_retry_reason": real_run.retries.1,
                    "floor_stream_retries": floor_retries,
                }));
            }
        }
    }
    let json = json!({
        "scenario": "fanout",
        "debounce_ms": 0,
        "note": "the server's debounce is set to 0 (ServerConfig); with the default, add 50 ms to every latency",
        "target": "max ≤ 2× floor; 0 unaffected proxies pushed; an endpoint change sends only EDS",
        "results": results,
    });
    report::publish(&config.out, "fanout", &table, &json)?;
    Ok(json)
}

/// Runs the reconnect storm.
pub async fn reconnect(config: &Config) -> anyhow::Result<Value> {
    let sizes = config.sizes(&[20], &[10000]);
    let shape = Shape::new(config.mesh_services());
    let mut table = Table::new(
        &format!(
            "reconnect: N proxies connect within 1 s → the last has its full config ({} Services)",
            shape.services
        ),
        &[
            "proxies",
            "protocol",
            "last ready ms",
            "floor ms",
            "after last connect ms",
            "floor ms",
            "ratio",
            "per-proxy p99 ms",
            "floor p99 ms",
            "MB sent",
            "all complete",
            "retries",
        ],
    );
    let mut results = Vec::new();
    for &count in &sizes {
        let protocol = Protocol::Sotw;
        let objects = mesh::objects(&shape);
        let mut outcome = BTreeMap::new();
        let mut bytes_total = 0;
        for floor in [false, true] {
            let snapshot_views;
            let (addr, stop): (_, Box<dyn FnOnce()>) = if floor {
                let snapshot = MeshSnapshot::build(1, Instant::now(), real::translate(&objects))?;
                snapshot_views = Views::of(&snapshot, &shape, count)?;
                let initial = real::initial(&snapshot_views, protocol, &mut Encoder::default());
                let listener = real::listener()?;
                let addr = listener.local_addr()?;
                let f = Floor::start(listener, initial);
                (addr, Box::new(move || f.stop()))
            } else {
                let r = Real::start(ServerConfig::default()).await?;
                let snapshot = r.publish(real::translate(&objects)).await?;
                snapshot_views = Views::of(&snapshot, &shape, count)?;
                (r.addr, Box::new(move || r.stop()))
            };
            let t0 = now_ns();
            let mut fleet = Fleet::spawn(&FleetSpec {
                client: &config.client,
                addr,
                count,
                services: shape.services,
                protocol,
                spread: Duration::from_nanos(SPREAD_NS),
            })?;
            let ready = fleet.wait_ready(config.timeout(count)).await?;
            // Every proxy holds the version of each type its view has.
            let mut complete = vec![[false; 4]; count];
            let mut bytes = 0;
            for r in fleet.responses_since(0) {
                bytes += r.bytes;
                if let Some(t) = type_index(r.ty) {
                    complete[r.proxy][t] |=
                        snapshot_views.views[r.proxy][t].version().to_string() == r.version;
                }
            }
            // Per proxy: from its scheduled connection start to its full config.
            let mut per_proxy: Vec<f64> = fleet
                .events
                .iter()
                .filter_map(|e| match e {
                    crate::wire::Event::Ready { p, at } => {
                        let start = t0 + (SPREAD_NS * *p as u64) / count as u64;
                        Some(ms_between(start, *at))
                    }
                    _ => None,
                })
                .collect();
            let all = complete.iter().all(|c| c.iter().all(|x| *x));
            let retries = fleet.retries();
            fleet.stop();
            stop();
            if !floor {
                bytes_total = bytes;
            }
            let total = ms_between(t0, ready);
            outcome.insert(
                floor,
                (total, all, bytes, distribution(&mut per_proxy), retries),
            );
        }
        let (real_ms, real_all, _, real_each, real_retries) = outcome[&false].clone();
        let (floor_ms, floor_all, floor_bytes, floor_each, floor_retries) = outcome[&true].clone();
        let tail = |total: f64| total - SPREAD_NS as f64 / 1e6;
        table.row(vec![
            count.to_string(),
            protocol.name().to_string(),
            f2(real_ms),
            f2(floor_ms),
            f2(tail(real_ms)),
            f2(tail(floor_ms)),
            ratio(tail(real_ms), tail(floor_ms)),
            real_each["p99_ms"].to_string(),
            floor_each["p99_ms"].to_string(),
            f2(bytes_total as f64 / 1e6),
            (real_all && floor_all).to_string(),
            format!("{}/{}", real_retries.0, floor_retries.0),
        ]);
        results.push(json!({
            "proxies": count,
            "protocol": protocol.name(),
            "services": shape.services,
            "connect_spread_ms": 1000,
            "real_ms": report::round(real_ms),
            "floor_ms": report::round(floor_ms),
            "after_last_connect_ms": report::round(tail(real_ms)),
            "floor_after_last_connect_ms": report::round(tail(floor_ms)),
            "ratio_after_last_connect": report::round(tail(real_ms) / tail(floor_ms)),
            "ratio_total": report::round(real_ms / floor_ms),
            "per_proxy": real_each,
            "floor_per_proxy": floor_each,
            "bytes_real": bytes_total,
            "bytes_floor": floor_bytes,
            "every_proxy_full_config": real_all,
            "stream_retries": real_retries.0,
            "first_retry_reason": real_retries.1,
            "floor_stream_retries": floor_retries.0,
            "floor_every_proxy_full_config": floor_all,
        }));
    }
    let json = json!({
        "scenario": "reconnect",
        "target": "≤ 2× floor",
        "note": "real_ms/floor_ms run from the first connection (the 1 s spread included); after_last_connect subtracts the spread; per_proxy runs from each proxy's scheduled connection to its full config",
        "results": results,
    });
    report::publish(&config.out, "reconnect", &table, &json)?;
    Ok(json)
}
