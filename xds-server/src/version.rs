//! Versions: a hash of a canonical form of the content, the same on every run and every
//! machine for the same resources.
//!
//! Raw protobuf bytes are not canonical: envoy-types generates map fields as `HashMap`s,
//! which prost encodes in their (randomly seeded) iteration order. [`canonical_hash`] walks
//! the encoded message against its descriptor (envoy-types' own descriptor set) and hashes a
//! re-encoding in which every map's entries are sorted, and every `google.protobuf.Any` is
//! canonicalized through the type it names. Everything else prost already encodes
//! deterministically (fields in number order).
//!
//! The hash is FNV-1a 64: a fixed algorithm, no seed, so versions survive restarts and
//! upgrades of the Rust toolchain. A version only changes when the content does.

use std::fmt;

use prost_reflect::{Kind, MessageDescriptor};

use crate::render::descriptor_pool;

/// The version of a resource, or of a set of resources: 16 hex digits on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u64);

impl Version {
    /// The version a set of `(name, version)` pairs has; the pairs in name order.
    pub fn of_set<'a>(entries: impl IntoIterator<Item = (&'a str, Version)>) -> Version {
        let mut hash = Fnv::new();
        for (name, version) in entries {
            hash.write(name.as_bytes());
            hash.write(&[0]);
            hash.write(&version.0.to_be_bytes());
        }
        Version(hash.finish())
    }

    /// Parses the wire form; `None` for anything this server did not write.
    pub fn parse(text: &str) -> Option<Version> {
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A message that does not parse against its descriptor: a Lanyard bug.
#[derive(Debug, thiserror::Error)]
#[error("cannot canonicalize {type_name}: {reason}")]
pub struct CanonicalError {
    type_name: String,
    reason: &'static str,
}

/// The version of an encoded message of type `type_name` (full protobuf name).
pub fn canonical_hash(type_name: &str, bytes: &[u8]) -> Result<Version, CanonicalError> {
    let descriptor = descriptor_pool()
        .get_message_by_name(type_name)
        .ok_or_else(|| CanonicalError {
            type_name: type_name.to_string(),
            reason: "not in envoy-types' descriptor set",
        })?;
    let mut out = Vec::with_capacity(bytes.len());
    canonicalize(&descriptor, bytes, &mut out).map_err(|reason| CanonicalError {
        type_name: type_name.to_string(),
        reason,
    })?;
    let mut hash = Fnv::new();
    hash.write(&out);
    Ok(Version(hash.finish()))
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// Re-encodes `bytes` (a message of type `descriptor`) into `out` with map entries sorted
/// (after the other fields, by field number) and nested messages canonicalized.
fn canonicalize(
    descriptor: &MessageDescriptor,
    mut bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let mut maps: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
    while !bytes.is_empty() {
        let tag = read_varint(&mut bytes)?;
        let (number, wire) = (tag >> 3, tag & 7);
        match wire {
            WIRE_VARINT => {
                let value = read_varint(&mut bytes)?;
                write_varint(out, tag);
                write_varint(out, value);
            }
            WIRE_FIXED64 | WIRE_FIXED32 => {
                let n = if wire == WIRE_FIXED64 { 8 } else { 4 };
                let value = take(&mut bytes, n)?;
                write_varint(out, tag);
                out.extend_from_slice(value);
            }
            WIRE_LEN => {
                let len = usize::try_from(read_varint(&mut bytes)?).map_err(|_| "length")?;
                let value = take(&mut bytes, len)?;
                let field = u32::try_from(number)
                    .ok()
                    .and_then(|n| descriptor.get_field(n));
                let message = field.as_ref().and_then(|f| match f.kind() {
                    Kind::Message(m) => Some((f.is_map(), m)),
                    _ => None,
                });
                match message {
                    Some((true, entry)) => {
                        let mut canonical = Vec::with_capacity(value.len());
                        canonicalize(&entry, value, &mut canonical)?;
                        match maps.iter_mut().find(|(n, _)| *n == number) {
                            Some((_, entries)) => entries.push(canonical),
                            None => maps.push((number, vec![canonical])),
                        }
                    }
                    Some((false, nested)) => {
                        let mut canonical = Vec::with_capacity(value.len());
                        if nested.full_name() == "google.protobuf.Any" {
                            canonicalize_any(&nested, value, &mut canonical)?;
                        } else {
                            canonicalize(&nested, value, &mut canonical)?;
                        }
                        write_len(out, tag, &canonical);
                    }
                    // Strings, bytes, packed scalars: already canonical.
                    None => write_len(out, tag, value),
                }
            }
            _ => return Err("unsupported wire type (groups?)"),
        }
    }
    maps.sort_by_key(|(number, _)| *number);
    for (number, mut entries) in maps {
        entries.sort();
        for entry in entries {
            write_len(out, (number << 3) | WIRE_LEN, &entry);
        }
    }
    Ok(())
}

/// An `Any`: its `value` canonicalized as the type `type_url` names (kept as is when that
/// type is unknown).
fn canonicalize_any(
    any: &MessageDescriptor,
    original: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let mut bytes = original;
    let mut type_url: &[u8] = &[];
    let mut value: &[u8] = &[];
    while !bytes.is_empty() {
        let tag = read_varint(&mut bytes)?;
        if tag & 7 != WIRE_LEN {
            // Not an Any as prost writes it: fall back to the generic walk.
            return canonicalize(any, original, out);
        }
        let len = usize::try_from(read_varint(&mut bytes)?).map_err(|_| "length")?;
        let field = take(&mut bytes, len)?;
        match tag >> 3 {
            1 => type_url = field,
            2 => value = field,
            _ => {}
        }
    }
    write_len(out, (1 << 3) | WIRE_LEN, type_url);
    let type_name = std::str::from_utf8(type_url)
        .ok()
        .and_then(|url| url.rsplit('/').next());
    match type_name.and_then(|name| descriptor_pool().get_message_by_name(name)) {
        Some(descriptor) => {
            let mut canonical = Vec::with_capacity(value.len());
            canonicalize(&descriptor, value, &mut canonical)?;
            write_len(out, (2 << 3) | WIRE_LEN, &canonical);
        }
        None => write_len(out, (2 << 3) | WIRE_LEN, value),
    }
    Ok(())
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or("truncated varint")?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long")
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if bytes.len() < n {
        return Err("truncated field");
    }
    let (value, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(value)
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn write_len(out: &mut Vec<u8>, tag: u64, value: &[u8]) {
    write_varint(out, tag);
    write_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};
    use prost::{Message, Name};

    use super::*;
    use crate::protobuf::any;

    fn string_value(s: &str) -> Value {
        Value {
            kind: Some(ValueKind::StringValue(s.to_string())),
        }
    }

    /// A cluster whose metadata holds maps (also inside an `Any`) with many entries, built
    /// in the given key order.
    fn mk_cluster(keys: &[&str]) -> Cluster {
        let fields: HashMap<String, Value> = keys
            .iter()
            .map(|k| (k.to_string(), string_value(k)))
            .collect();
        let strukt = Struct { fields };
        let mut filter_metadata = HashMap::new();
        let mut typed_filter_metadata = HashMap::new();
        for k in keys {
            filter_metadata.insert(format!("f.{k}"), strukt.clone());
            typed_filter_metadata.insert(format!("t.{k}"), any(&strukt));
        }
        Cluster {
            name: "c".into(),
            metadata: Some(Metadata {
                filter_metadata,
                typed_filter_metadata,
            }),
            ..Default::default()
        }
    }

    fn version(cluster: &Cluster) -> Version {
        canonical_hash(&Cluster::full_name(), &cluster.encode_to_vec()).unwrap()
    }

    #[test]
    fn map_order_does_not_change_the_version() {
        let keys: Vec<String> = (0..24).map(|i| format!("k{i}")).collect();
        let forward: Vec<&str> = keys.iter().map(String::as_str).collect();
        let backward: Vec<&str> = forward.iter().rev().copied().collect();
        let a = mk_cluster(&forward);
        let b = mk_cluster(&backward);
        // Equal maps (the `Any`s inside hold differently ordered bytes already).
        assert!(
            a.metadata.as_ref().unwrap().filter_metadata
                == b.metadata.as_ref().unwrap().filter_metadata
        );
        // The premise: the raw encodings differ (maps iterate in per-instance order).
        let raw: std::collections::BTreeSet<Vec<u8>> = (0..8)
            .map(|_| mk_cluster(&forward).encode_to_vec())
            .collect();
        assert!(raw.len() > 1, "raw encodings were all equal: premise gone");
        assert_eq!(version(&a), version(&b));
        for _ in 0..8 {
            assert_eq!(version(&mk_cluster(&forward)), version(&a));
        }
    }

    #[test]
    fn content_changes_change_the_version() {
        let a = mk_cluster(&["x", "y"]);
        let mut b = a.clone();
        b.name = "d".into();
        assert_ne!(version(&a), version(&b));
        let c = mk_cluster(&["x", "z"]);
        assert_ne!(version(&a), version(&c));
    }

    #[test]
    fn versions_are_fixed_across_runs() {
        // FNV-1a of nothing, and of a known cluster: if these change, every proxy reloads
        // after an upgrade.
        assert_eq!(Version::of_set([]).to_string(), "cbf29ce484222325");
        let cluster = Cluster {
            name: "outbound|80||a.b.svc.cluster.local".into(),
            ..Default::default()
        };
        assert_eq!(version(&cluster).to_string(), "a7d2f2ac76b3e40b");
    }

    #[test]
    fn set_versions_depend_on_names_and_versions() {
        let v = Version(1);
        let w = Version(2);
        let a = Version::of_set([("a", v), ("b", w)]);
        assert_ne!(a, Version::of_set([("a", v), ("b", v)]));
        assert_ne!(a, Version::of_set([("a", v)]));
        assert_ne!(Version::of_set([("ab", v)]), Version::of_set([("a", v)]));
        assert_eq!(Version::parse(&a.to_string()), Some(a));
        assert_eq!(Version::parse("nope"), None);
    }
}
