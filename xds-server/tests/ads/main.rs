//! The ADS server against a test client of our own (envoy-types + tonic), on 127.0.0.1:0.
//!
//! Waits are bounded (see `lanyard_xds::testing::WAIT`); absence of a push is shown with a
//! later change whose push must come next on the same stream, never with a sleep.

mod debug;
mod delta;
mod envoy;
mod failures;
mod limits;
mod mesh;
mod node_limits;
mod propagation;
mod sotw;
