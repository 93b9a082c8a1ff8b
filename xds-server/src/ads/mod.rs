//! The Aggregated Discovery Service: `StreamAggregatedResources` (state of the world) and
//! `DeltaAggregatedResources` (incremental), each stream run by one task over the shared
//! core in [`core`], served at the HTTP level by [`http`] with responses pre-encoded by
//! [`wire`].

pub mod budget;
pub mod core;
pub mod delta;
pub mod http;
pub mod order;
pub mod sotw;
pub mod subscription;
pub mod wire;

pub use http::AdsService;
