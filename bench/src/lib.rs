//! `lanyard-bench`: scale benchmarks of Lanyard's translator and ADS server.
//!
//! The driver (`lanyard-bench`) runs the real translator and [`lanyard_xds::XdsServer`]
//! in-process and starts simulated proxies as real ADS gRPC streams over loopback in a
//! second process (`lanyard-bench-client`), so that their cost is not charged to the
//! server. Every scenario also measures its floor in the same run (the same bytes sent by
//! a server that does nothing else) and reports the ratio.
//!
//! - [`mesh`]: the synthetic mesh and the changes made to it;
//! - [`wire`]: what the client process reports, and the shared clock;
//! - [`fleet`]: the driver's handle on the client process;
//! - [`real`]: the real server, and its responses captured and encoded for the floor;
//! - [`floor`]: the floor server;
//! - [`scenarios`]: translate, fanout, reconnect, idle, churn;
//! - [`report`]: figures, tables, JSON;
//! - [`abuse`]: the abuse suite, against the release controller binary (issue 13).

pub mod abuse;
pub mod fleet;
pub mod floor;
pub mod mesh;
pub mod real;
pub mod report;
pub mod scenarios;
pub mod wire;
