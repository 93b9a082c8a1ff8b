//! Every limit the xDS server puts on what one client can make it hold, do or write, in
//! one place: what each bounds, its default, and why that default. The controller's flags
//! set them (README, "Operations: limits"); a client over a limit gets a clear gRPC status
//! and a metric, and everyone else is unaffected.
//!
//! Each section is its own struct so that a part of the server takes only what it needs.

/// All of the server's limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Per connection and for all connections together (the transport).
    pub connection: ConnectionLimits,
    /// Per ADS stream: requests, subscriptions, unknown types, what it may log.
    pub stream: StreamLimits,
    /// What a proxy's `Node` may carry (id, metadata, labels).
    pub node: NodeLimits,
    /// What the debug endpoint echoes back.
    pub debug: DebugLimits,
}

/// Per connection and for all connections together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionLimits {}

/// Per ADS stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamLimits {}

/// What a proxy's `Node` may carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLimits {}

/// What the debug endpoint echoes back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugLimits {}
