//! Kubernetes and Gateway API objects in; Lanyard's mesh model and route status out.
//!
//! [`objects`] parses manifests and keeps the raw objects; [`translate()`] is a pure function
//! from those objects to a [`lanyard_model::Model`] plus the status of every route. It does
//! not know or care whether the objects came from files or from the API server.

pub mod api;
pub mod objects;
pub mod status;
mod translate;

pub use objects::{Kind, Object, ObjectKey, ObjectRef, Objects, ParseError, Parsed, parse_value};
pub use status::{Condition, ParentStatus, RouteStatus};
pub use translate::{
    Options, PortProvenance, RuleRef, SmiOutcome, SmiReport, Translation, translate,
};
