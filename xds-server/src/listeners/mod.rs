//! LDS: the capture listeners (`virtualOutbound`, `virtualInbound`), the per-ClusterIP
//! outbound listeners, and the filters they are made of.

pub mod filters;
mod inbound;
mod outbound;

pub use inbound::virtual_inbound;
pub use outbound::{cluster_ip_listeners, virtual_outbound};
