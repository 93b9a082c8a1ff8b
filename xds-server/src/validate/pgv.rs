//! The protoc-gen-validate (PGV) rules of Envoy's protos, read from the descriptors
//! envoy-types ships and checked the way Envoy's generated C++ validators check them.
//!
//! Envoy refuses a resource that breaks a `validate.rules` annotation: `MessageUtil::validate`
//! runs the generated `Validate()` of the resource, which recurses into every set message
//! field, and each typed config packed in an `Any` is validated when its extension is built
//! (source/common/protobuf/utility.h, `MessageUtil::anyConvertAndValidate`). Lanyard checks
//! the same rules before it publishes, so that a proxy never NACKs them.
//!
//! The rules are compiled once per message type of the pool (`table`), with the semantics of
//! PGV's C++ templates (`rules`), and checked by walking the encoded message (`walk`): only
//! fields that carry rules or lead to messages that do are read, so most bytes are skipped.

mod rules;
mod table;
mod walk;

use std::sync::LazyLock;

use super::Violation;

static TABLES: LazyLock<table::Tables> =
    LazyLock::new(|| table::Tables::build(crate::render::descriptor_pool()));

/// Every PGV violation in `message` (a resource such as a Listener, RouteConfiguration,
/// Cluster or ClusterLoadAssignment), descending into nested messages and into `Any` fields
/// whose type the pool knows. Empty when valid.
pub fn check<M: prost::Message + prost::Name>(message: &M) -> Vec<Violation> {
    check_encoded(&M::full_name(), &message.encode_to_vec())
}

/// The same for an already-encoded message of the given full type name (what the ADS cache
/// holds).
pub fn check_encoded(full_name: &str, bytes: &[u8]) -> Vec<Violation> {
    let tables = &*TABLES;
    let Some(idx) = tables.index(full_name) else {
        return vec![Violation::new(
            "",
            format!("message type {full_name} is not in envoy-types' descriptor set"),
        )];
    };
    let mut walker = walk::Walker::new(tables);
    walker.message(idx, bytes);
    walker.finish()
}

#[cfg(test)]
mod tests;
