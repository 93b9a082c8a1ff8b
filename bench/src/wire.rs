//! What the client process tells the driver: one JSON object per line on its stdout.
//!
//! Clock: every time is wall-clock nanoseconds since the Unix epoch (`SystemTime`), read in
//! the process where the thing happened. Both processes run on one machine and read the
//! same system clock, so a client's receive time minus the driver's change time is a
//! latency (`Instant` is per process and cannot be compared across them).

use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Which ADS protocol the simulated proxies speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `StreamAggregatedResources`.
    Sotw,
    /// `DeltaAggregatedResources`.
    Delta,
}

impl Protocol {
    /// `sotw` / `delta`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
        }
    }
}

/// What happened to one simulated proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "e")]
pub enum Event {
    /// The ADS stream is open (the server answered the call).
    Open { p: usize, at: u64 },
    /// A response arrived (and was ACKed right away).
    Resp {
        p: usize,
        /// `CDS`, `EDS`, `LDS`, `RDS`.
        t: String,
        /// `version_info` (SotW) or `system_version_info` (delta).
        v: String,
        /// Resources in it.
        n: usize,
        /// Names removed (delta).
        r: usize,
        /// Encoded size of the response message.
        b: usize,
        at: u64,
    },
    /// The proxy has a response of every type.
    Ready { p: usize, at: u64 },
    /// The stream failed or ended; the proxy opens it again after a backoff.
    Retry { p: usize, msg: String, at: u64 },
}

/// The short name of a type URL Lanyard serves.
pub fn short_type(type_url: &str) -> &'static str {
    match type_url {
        lanyard_xds::type_url::CLUSTER => "CDS",
        lanyard_xds::type_url::ENDPOINT => "EDS",
        lanyard_xds::type_url::LISTENER => "LDS",
        lanyard_xds::type_url::ROUTE => "RDS",
        _ => "?",
    }
}

/// Type URLs in the order Envoy subscribes on ADS.
pub const TYPES: [&str; 4] = [
    lanyard_xds::type_url::CLUSTER,
    lanyard_xds::type_url::ENDPOINT,
    lanyard_xds::type_url::LISTENER,
    lanyard_xds::type_url::ROUTE,
];

/// The node a simulated proxy sends: its id and, in metadata, its namespace and pod.
pub fn node(id: &str, namespace: &str, pod: &str) -> Node {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    Node {
        id: id.to_string(),
        metadata: Some(Struct {
            fields: HashMap::from([
                (lanyard_xds::node::NAMESPACE.to_string(), string(namespace)),
                (lanyard_xds::node::POD_NAME.to_string(), string(pod)),
            ]),
        }),
        ..Default::default()
    }
}
