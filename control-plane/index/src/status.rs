//! Route status as data: what the translator decided for each route and each Service parent.
//!
//! The shapes follow the Gateway API's `status.parents[]`. Writing it to the API server (with
//! `lastTransitionTime`) is the controller's job; the translator only decides.

use serde::Serialize;

use crate::api::ParentReference;
use crate::objects::ObjectRef;

/// The controller name written into `status.parents[].controllerName`.
pub const DEFAULT_CONTROLLER_NAME: &str = "lanyard.dev/mesh-controller";

/// Status of one route.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    #[serde(skip)]
    pub route: ObjectRef,
    /// `metadata.generation` of the route the status was computed from.
    #[serde(skip)]
    pub generation: Option<i64>,
    /// One entry per Service parentRef (Gateway parents belong to other controllers).
    pub parents: Vec<ParentStatus>,
}

/// Status for one parentRef.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentStatus {
    pub parent_ref: ParentReference,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// A condition as the Gateway API defines it (without `lastTransitionTime`, which the
/// writer fills in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `"True"` or `"False"`.
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn new(
        type_: &str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
    ) -> Self {
        Self {
            type_: type_.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            observed_generation: generation,
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

impl ParentStatus {
    /// The condition of a type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

impl RouteStatus {
    /// The `status` stanza as it would appear on the object (`{parents: [...]}`).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Condition types and reasons used by the translator.
pub mod reasons {
    pub const ACCEPTED: &str = "Accepted";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";

    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const CONFLICTED: &str = "Conflicted";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";

    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
}
