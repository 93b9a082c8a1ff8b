//! The server's metrics, rendered in the Prometheus text format (version 0.0.4).
//!
//! - `lanyard_xds_connected_proxies`: open ADS streams;
//! - `lanyard_xds_pushes_total{type}`, `lanyard_xds_nacks_total{type}`;
//! - `lanyard_xds_stale_nacks_total{type}`, `lanyard_xds_stale_acks_total{type}`: replies
//!   (with and without `error_detail`) whose nonce is not the latest of their type, which are
//!   neither ACK nor NACK of what the proxy now holds;
//! - `lanyard_xds_push_latency_seconds{type}`: change seen → response handed to the stream;
//! - `lanyard_xds_convergence_seconds{type}`: change seen → the proxy's ACK of it;
//! - `lanyard_xds_snapshots_total`, `lanyard_xds_snapshots_rejected_total`,
//!   `lanyard_xds_unknown_type_requests_total`, `lanyard_xds_snapshot_generation`;
//! - `lanyard_xds_withheld_resources`: resources of the snapshot being served that were kept
//!   from proxies because a proxy would refuse them (validation before publishing).
//! - `lanyard_xds_limit_refusals_total{limit}`: clients refused or cut off because they
//!   went over a limit ([`crate::limits`]), by the limit's short name;
//! - `lanyard_xds_open_connections`, `lanyard_xds_open_streams`: ADS connections and
//!   streams open now, streams counted from when they open (before their first request).
//! - `lanyard_translations_total`: translations of the input (objects → model → xDS) the
//!   source ran, set by the source (the controller) as it hands snapshots over.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::resource::ResourceType;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Per-type series.
#[derive(Debug, Default)]
pub struct TypeMetrics {
    /// Responses sent.
    pub pushes: AtomicU64,
    /// NACKs received.
    pub nacks: AtomicU64,
    /// NACKs of a superseded response (a stale nonce).
    pub stale_nacks: AtomicU64,
    /// ACKs of a superseded response (a stale nonce).
    pub stale_acks: AtomicU64,
    /// Change seen → response sent.
    pub push_latency: Histogram,
    /// Change seen → ACK.
    pub convergence: Histogram,
}

/// Everything the server counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open ADS streams.
    pub connected: AtomicI64,
    /// Snapshots published.
    pub snapshots: AtomicU64,
    /// Snapshots refused (inconsistent).
    pub rejected: AtomicU64,
    /// Generation of the snapshot being served.
    pub generation: AtomicU64,
    /// Requests for types Lanyard does not serve.
    pub unknown_types: AtomicU64,
    /// Resources the snapshot being served withholds.
    pub withheld: AtomicU64,
    /// Translations the source ran (set by the source).
    pub translations: AtomicU64,
    /// Open ADS connections.
    pub open_connections: AtomicI64,
    /// Open ADS streams, from when they open (`connected` counts them from their first
    /// request).
    pub open_streams: AtomicI64,
    /// Refusals by limit.
    refusals: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    types: [TypeMetrics; 4],
}

impl Metrics {
    /// The series of one type.
    pub fn of(&self, ty: ResourceType) -> &TypeMetrics {
        &self.types[ty as usize]
    }

    /// Counts a client refused or cut off by the limit named `limit` (a short name).
    pub fn refused(&self, limit: &'static str) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(limit)
            .or_default() += 1;
    }

    /// How many clients the limit named `limit` refused.
    pub fn refusals(&self, limit: &str) -> u64 {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(limit)
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "lanyard_xds_connected_proxies",
            "Open ADS streams.",
            "gauge",
            self.connected.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "lanyard_xds_snapshot_generation",
            "Generation of the snapshot being served (0: none yet).",
            "gauge",
            self.generation.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "lanyard_xds_snapshots_total",
            "Snapshots published.",
            "counter",
            self.snapshots.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "lanyard_xds_snapshots_rejected_total",
            "Snapshots not published because they were inconsistent.",
            "counter",
            self.rejected.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "lanyard_xds_unknown_type_requests_total",
            "Requests for a type URL Lanyard does not serve.",
            "counter",
            self.unknown_types.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "lanyard_xds_withheld_resources",
            "Resources of the snapshot being served kept from proxies because a proxy would refuse them.",
            "gauge",
            self.withheld.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "lanyard_translations_total",
            "Translations of the input (objects to model to xDS) the source ran.",
            "counter",
            self.translations.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "lanyard_xds_open_connections",
            "Open ADS connections.",
            "gauge",
            self.open_connections.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "lanyard_xds_open_streams",
            "Open ADS streams, including those that have not sent a request yet.",
            "gauge",
            self.open_streams.load(Ordering::Relaxed).to_string(),
        );
        {
            let name = "lanyard_xds_limit_refusals_total";
            let _ = writeln!(
                out,
                "# HELP {name} Clients refused or cut off for going over a limit, by limit (README, Operations: limits).\n# TYPE {name} counter"
            );
            let refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
            for (limit, count) in refusals.iter() {
                let _ = writeln!(out, "{name}{{limit=\"{limit}\"}} {count}");
            }
        }
        type Counter = fn(&TypeMetrics) -> &AtomicU64;
        let counters: [(&str, &str, Counter); 4] = [
            (
                "lanyard_xds_pushes_total",
                "Responses sent, by type.",
                |m| &m.pushes,
            ),
            ("lanyard_xds_nacks_total", "NACKs received, by type.", |m| {
                &m.nacks
            }),
            (
                "lanyard_xds_stale_nacks_total",
                "NACKs of a superseded response (stale nonce), by type.",
                |m| &m.stale_nacks,
            ),
            (
                "lanyard_xds_stale_acks_total",
                "ACKs of a superseded response (stale nonce), by type.",
                |m| &m.stale_acks,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ty in ResourceType::ALL {
                let value = get(self.of(ty)).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{type=\"{ty}\"}} {value}");
            }
        }
        type Series = fn(&TypeMetrics) -> &Histogram;
        let histograms: [(&str, &str, Series); 2] = [
            (
                "lanyard_xds_push_latency_seconds",
                "From a change seen by the server to the response that carries it, by type.",
                |m| &m.push_latency,
            ),
            (
                "lanyard_xds_convergence_seconds",
                "From a change seen by the server to the proxy's ACK of it, by type.",
                |m| &m.convergence,
            ),
        ];
        for (name, help, get) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for ty in ResourceType::ALL {
                get(self.of(ty)).render(&mut out, name, &format!("type=\"{ty}\""));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.connected.store(3, Ordering::Relaxed);
        metrics.withheld.store(2, Ordering::Relaxed);
        metrics
            .of(ResourceType::Endpoint)
            .pushes
            .fetch_add(2, Ordering::Relaxed);
        metrics
            .of(ResourceType::Cluster)
            .push_latency
            .observe(Duration::from_millis(30));
        let text = metrics.render();
        assert!(text.contains("lanyard_xds_connected_proxies 3\n"), "{text}");
        assert!(
            text.contains("lanyard_xds_withheld_resources 2\n"),
            "{text}"
        );
        assert!(text.contains("lanyard_xds_pushes_total{type=\"EDS\"} 2\n"));
        assert!(
            text.contains("lanyard_xds_push_latency_seconds_bucket{type=\"CDS\",le=\"0.025\"} 0\n")
        );
        assert!(
            text.contains("lanyard_xds_push_latency_seconds_bucket{type=\"CDS\",le=\"0.05\"} 1\n")
        );
        assert!(text.contains("lanyard_xds_push_latency_seconds_count{type=\"CDS\"} 1\n"));
        assert!(text.contains("# TYPE lanyard_xds_convergence_seconds histogram\n"));
        metrics.refused("connections");
        metrics.refused("connections");
        assert_eq!(metrics.refusals("connections"), 2);
        assert!(
            metrics
                .render()
                .contains("lanyard_xds_limit_refusals_total{limit=\"connections\"} 2\n")
        );
    }

    /// Prometheus refuses an exposition that describes one family twice.
    #[test]
    fn each_family_is_described_once() {
        let metrics = Metrics::default();
        metrics.refused("connections");
        let text = metrics.render();
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let family = line.split_whitespace().nth(2).unwrap();
            assert!(seen.insert(family.to_string()), "{family} twice:\n{text}");
        }
        assert!(seen.contains("lanyard_xds_limit_refusals_total"));
    }
}
