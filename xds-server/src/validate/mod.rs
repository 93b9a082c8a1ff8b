//! What a receiver will refuse, checked before anything is published.
//!
//! Each submodule holds one receiver's rules and reports [`Violation`]s with the path of the
//! field that breaks them:
//! - the protoc-gen-validate rules carried in Envoy's own proto descriptors;
//! - the rules Envoy enforces in code rather than in its descriptors (RE2 and its program-size
//!   limit, header mutations);
//! - what gRPC's xDS client accepts (proxyless clients).

pub mod pgv;

use std::fmt;

pub mod envoy;
pub mod grpc;

/// One rule a resource breaks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Violation {
    /// The field, from the resource's root, in protobuf field names: `virtual_hosts[0].routes[3].match.safe_regex.regex`.
    /// Map entries are `field["key"]`; a message packed in an `Any` continues after
    /// `field{full.type.Name}`. Empty for the resource as a whole.
    pub path: String,
    /// What is wrong, in the receiver's terms.
    pub message: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}
