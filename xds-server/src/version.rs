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
//! The walk uses a compact table built once from the descriptor set (`Layouts`): per
//! message type, only the fields that can hold a map (directly, through nested messages or
//! through an `Any`). Every other field, and every nested message whose type cannot hold a
//! map, is already canonical and is copied as a whole, without being parsed.
//!
//! The hash is FNV-1a 64: a fixed algorithm, no seed, so versions survive restarts and
//! upgrades of the Rust toolchain. A version only changes when the content does.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, Kind};

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
    let layouts = &*LAYOUTS;
    let error = |reason| CanonicalError {
        type_name: type_name.to_string(),
        reason,
    };
    let ty = layouts
        .by_name(type_name)
        .ok_or_else(|| error("not in envoy-types' descriptor set"))?;
    let mut hash = Fnv::new();
    if !layouts.messages[ty].special {
        // Nothing in it can be a map: the bytes are canonical as they are.
        hash.write(bytes);
        return Ok(Version(hash.finish()));
    }
    SCRATCH.with(|scratch| {
        let mut out = scratch.borrow_mut();
        out.clear();
        canonicalize(layouts, ty, bytes, &mut out).map_err(error)?;
        hash.write(&out);
        Ok(Version(hash.finish()))
    })
}

thread_local! {
    /// The canonical encoding being hashed, kept between calls (its capacity, that is).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

static LAYOUTS: LazyLock<Layouts> = LazyLock::new(|| Layouts::new(descriptor_pool()));

/// What the canonical walk needs to know of every message type of the descriptor set.
struct Layouts {
    index: HashMap<String, usize>,
    messages: Vec<Layout>,
    /// `google.protobuf.Any`.
    any: Option<usize>,
}

/// One message type.
#[derive(Default)]
struct Layout {
    /// Whether a map can occur in it: a map field, an `Any`, or a nested message type that
    /// is itself special. A message that is not special is canonical as prost encodes it.
    special: bool,
    /// The fields that are maps, `Any`s or special messages, by field number.
    fields: Vec<(u32, Field)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// A map; its entries are messages of this type.
    Map(usize),
    /// A `google.protobuf.Any`.
    Any,
    /// A message of this (special) type.
    Message(usize),
}

impl Layouts {
    fn new(pool: &DescriptorPool) -> Layouts {
        let descriptors: Vec<_> = pool.all_messages().collect();
        let index: HashMap<String, usize> = descriptors
            .iter()
            .enumerate()
            .map(|(i, d)| (d.full_name().to_string(), i))
            .collect();
        let any = index.get("google.protobuf.Any").copied();
        // Every message-typed field, then keep those that can hold a map.
        let fields: Vec<Vec<(u32, Field)>> = descriptors
            .iter()
            .map(|d| {
                d.fields()
                    .filter_map(|f| {
                        let Kind::Message(m) = f.kind() else {
                            return None;
                        };
                        let ty = *index.get(m.full_name())?;
                        let field = if f.is_map() {
                            Field::Map(ty)
                        } else if Some(ty) == any {
                            Field::Any
                        } else {
                            Field::Message(ty)
                        };
                        Some((f.number(), field))
                    })
                    .collect()
            })
            .collect();
        let mut special: Vec<bool> = fields
            .iter()
            .map(|f| {
                f.iter()
                    .any(|(_, f)| matches!(f, Field::Map(_) | Field::Any))
            })
            .collect();
        loop {
            let mut changed = false;
            for (i, f) in fields.iter().enumerate() {
                if !special[i]
                    && f.iter()
                        .any(|(_, f)| matches!(f, Field::Message(t) if special[*t]))
                {
                    special[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let messages = fields
            .into_iter()
            .enumerate()
            .map(|(i, mut fields)| {
                // A message field that cannot hold a map is copied as is, like a string.
                fields.retain(|(_, f)| !matches!(f, Field::Message(t) if !special[*t]));
                fields.sort_by_key(|&(n, _)| n);
                Layout {
                    special: special[i],
                    fields,
                }
            })
            .collect();
        Layouts {
            index,
            messages,
            any,
        }
    }

    fn by_name(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn field(&self, ty: usize, number: u64) -> Option<Field> {
        let fields = &self.messages[ty].fields;
        let number = u32::try_from(number).ok()?;
        fields
            .binary_search_by_key(&number, |&(n, _)| n)
            .ok()
            .map(|i| fields[i].1)
    }
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

/// Appends the canonical encoding of `bytes`, a message of type `ty`, to `out`: its fields
/// in their order, except that map entries come last (by field number, each map's entries
/// sorted by their canonical encoding) and that nested messages that can hold maps (and
/// `Any`s) are canonicalized in turn. Runs of other fields are copied as they are.
fn canonicalize(
    layouts: &Layouts,
    ty: usize,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let layout = &layouts.messages[ty];
    if !layout.special {
        out.extend_from_slice(bytes);
        return Ok(());
    }
    // (field number, entry type, entry).
    let mut maps: Vec<(u64, usize, &[u8])> = Vec::new();
    let mut rest = bytes;
    // Where the run of fields copied as they are starts.
    let mut run = 0;
    while !rest.is_empty() {
        let field_start = bytes.len() - rest.len();
        let tag = read_varint(&mut rest)?;
        match tag & 7 {
            WIRE_VARINT => {
                read_varint(&mut rest)?;
            }
            WIRE_FIXED64 => {
                take(&mut rest, 8)?;
            }
            WIRE_FIXED32 => {
                take(&mut rest, 4)?;
            }
            WIRE_LEN => {
                let len = usize::try_from(read_varint(&mut rest)?).map_err(|_| "length")?;
                let value = take(&mut rest, len)?;
                let Some(field) = layouts.field(ty, tag >> 3) else {
                    // Strings, bytes, packed scalars, messages without maps: canonical.
                    continue;
                };
                out.extend_from_slice(&bytes[run..field_start]);
                run = bytes.len() - rest.len();
                match field {
                    Field::Map(entry) => maps.push((tag >> 3, entry, value)),
                    Field::Any => {
                        nested(out, tag, value, |out| canonicalize_any(layouts, value, out))?
                    }
                    Field::Message(nested_ty) => nested(out, tag, value, |out| {
                        canonicalize(layouts, nested_ty, value, out)
                    })?,
                }
            }
            _ => return Err("unsupported wire type (groups?)"),
        }
    }
    out.extend_from_slice(&bytes[run..]);
    // Stable: the entries of one map stay together, and are sorted next.
    maps.sort_by_key(|&(number, _, _)| number);
    for group in maps.chunk_by(|a, b| a.0 == b.0) {
        let (number, entry, _) = group[0];
        let mut entries = group
            .iter()
            .map(|&(_, _, value)| {
                if layouts.messages[entry].special {
                    let mut canonical = Vec::with_capacity(value.len());
                    canonicalize(layouts, entry, value, &mut canonical)?;
                    Ok(Cow::Owned(canonical))
                } else {
                    Ok(Cow::Borrowed(value))
                }
            })
            .collect::<Result<Vec<Cow<'_, [u8]>>, &'static str>>()?;
        entries.sort_unstable();
        for entry in entries {
            write_len(out, (number << 3) | WIRE_LEN, &entry);
        }
    }
    Ok(())
}

/// Appends a length-delimited field `tag` whose value `write` appends canonicalized from
/// `original`.
fn nested(
    out: &mut Vec<u8>,
    tag: u64,
    original: &[u8],
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    write_varint(out, tag);
    // The canonical form nearly always has the original's length (the same fields in
    // another order); fix the prefix up when not (an `Any` without a value gains one).
    let at = out.len();
    write_varint(out, original.len() as u64);
    let start = out.len();
    write(out)?;
    let len = out.len() - start;
    if len != original.len() {
        let mut prefix = Vec::with_capacity(10);
        write_varint(&mut prefix, len as u64);
        out.splice(at..start, prefix);
    }
    Ok(())
}

/// An `Any`: its `type_url`, then its `value` canonicalized as the type `type_url` names
/// (kept as is when that type is unknown).
fn canonicalize_any(
    layouts: &Layouts,
    original: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let mut bytes = original;
    let mut type_url: &[u8] = &[];
    let mut value: &[u8] = &[];
    while !bytes.is_empty() {
        let tag = read_varint(&mut bytes)?;
        if tag & 7 != WIRE_LEN {
            // Not an Any as prost writes it: as a message without maps.
            return match layouts.any {
                Some(any) => canonicalize(layouts, any, original, out),
                None => Err("no google.protobuf.Any in the descriptor set"),
            };
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
    match type_name.and_then(|name| layouts.by_name(name)) {
        Some(ty) => nested(out, (2 << 3) | WIRE_LEN, value, |out| {
            canonicalize(layouts, ty, value, out)
        })?,
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

/// The canonical form as the first implementation built it, through prost-reflect
/// descriptors and a buffer per nested message: what versions must stay equal to.
#[cfg(test)]
mod reference {
    use prost_reflect::{Kind, MessageDescriptor};

    use super::{
        WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT, read_varint, take, write_len,
        write_varint,
    };

    /// Re-encodes `bytes` (a message of type `descriptor`) into `out` with map entries sorted
    /// (after the other fields, by field number) and nested messages canonicalized.
    pub(super) fn canonicalize(
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
        match type_name.and_then(|name| crate::render::descriptor_pool().get_message_by_name(name))
        {
            Some(descriptor) => {
                let mut canonical = Vec::with_capacity(value.len());
                canonicalize(&descriptor, value, &mut canonical)?;
                write_len(out, (2 << 3) | WIRE_LEN, &canonical);
            }
            None => write_len(out, (2 << 3) | WIRE_LEN, value),
        }
        Ok(())
    }
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

    /// The canonical encoding by the table walk, and by the reference implementation.
    fn both_forms(type_name: &str, bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let layouts = &*LAYOUTS;
        let mut fast = Vec::new();
        canonicalize(
            layouts,
            layouts.by_name(type_name).unwrap(),
            bytes,
            &mut fast,
        )
        .unwrap();
        let descriptor = descriptor_pool().get_message_by_name(type_name).unwrap();
        let mut slow = Vec::new();
        reference::canonicalize(&descriptor, bytes, &mut slow).unwrap();
        (fast, slow)
    }

    fn assert_same_form<M: Message + Name>(message: &M) {
        let bytes = message.encode_to_vec();
        let (fast, slow) = both_forms(&M::full_name(), &bytes);
        assert!(
            fast == slow,
            "canonical forms differ for a {}",
            M::full_name()
        );
        let mut hash = Fnv::new();
        hash.write(&slow);
        assert_eq!(
            canonical_hash(&M::full_name(), &bytes).unwrap(),
            Version(hash.finish())
        );
    }

    /// A cluster that holds, in an `Any` (its typed extension protocol options), another
    /// cluster with maps; and an `Any` of an empty message (encoded without a value).
    fn mk_nested(keys: &[&str]) -> Cluster {
        use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
        let inner = mk_cluster(keys);
        let mut options = HashMap::new();
        for k in keys {
            options.insert(format!("o.{k}"), any(&inner));
        }
        options.insert("empty".to_string(), any(&Router::default()));
        options.insert(
            "unknown".to_string(),
            envoy_types::pb::google::protobuf::Any {
                type_url: "type.googleapis.com/not.a.Type".into(),
                value: vec![8, 1],
            },
        );
        Cluster {
            name: "outer".into(),
            typed_extension_protocol_options: options,
            ..mk_cluster(keys)
        }
    }

    #[test]
    fn versions_equal_the_reference_canonical_form() {
        // Every resource Lanyard builds for a rich model, and clusters full of maps.
        let mesh = crate::translate(&crate::fixtures::rich_model(), &Default::default());
        let all = mesh.distinct();
        assert!(!all.routes.is_empty() && !all.listeners.is_empty());
        all.listeners
            .iter()
            .for_each(|m| assert_same_form(m.as_ref()));
        all.routes.iter().for_each(|m| assert_same_form(m.as_ref()));
        all.clusters
            .iter()
            .for_each(|m| assert_same_form(m.as_ref()));
        all.endpoints
            .iter()
            .for_each(|m| assert_same_form(m.as_ref()));
        assert_same_form(&mk_cluster(&["a", "b", "c"]));
        assert_same_form(&mk_nested(&["a", "b", "c", "d"]));
        assert_same_form(&Cluster::default());
    }

    #[test]
    fn nested_any_maps_do_not_change_the_version() {
        let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        let forward: Vec<&str> = keys.iter().map(String::as_str).collect();
        let backward: Vec<&str> = forward.iter().rev().copied().collect();
        let a = version(&mk_nested(&forward));
        let raw: std::collections::BTreeSet<Vec<u8>> = (0..8)
            .map(|_| mk_nested(&forward).encode_to_vec())
            .collect();
        assert!(raw.len() > 1, "raw encodings were all equal: premise gone");
        for _ in 0..8 {
            assert_eq!(version(&mk_nested(&forward)), a);
            assert_eq!(version(&mk_nested(&backward)), a);
        }
        // A change deep inside an Any inside a map changes it.
        let mut changed = mk_nested(&forward);
        let inner = changed
            .typed_extension_protocol_options
            .get_mut("o.k3")
            .unwrap();
        let mut cluster = Cluster::decode(inner.value.as_slice()).unwrap();
        cluster
            .metadata
            .as_mut()
            .unwrap()
            .filter_metadata
            .remove("f.k5");
        *inner = any(&cluster);
        assert_ne!(version(&changed), a);
    }

    #[test]
    fn every_field_change_changes_the_version() {
        let base = mk_nested(&["x", "y"]);
        let v = version(&base);
        let mut seen = std::collections::BTreeSet::from([v]);
        let mut changed = |f: &dyn Fn(&mut Cluster)| {
            let mut c = base.clone();
            f(&mut c);
            let w = version(&c);
            assert!(seen.insert(w), "a change kept a version already seen");
        };
        changed(&|c| c.name.push('!'));
        changed(&|c| c.per_connection_buffer_limit_bytes = Some(crate::protobuf::u32_value(1)));
        changed(&|c| c.alt_stat_name = "alt".into());
        changed(&|c| {
            c.metadata
                .as_mut()
                .unwrap()
                .filter_metadata
                .insert("f.z".into(), Struct::default());
        });
        changed(&|c| {
            let m = c.metadata.as_mut().unwrap();
            let s = m.filter_metadata.get_mut("f.x").unwrap();
            s.fields.insert("x".into(), string_value("other"));
        });
        changed(&|c| {
            c.typed_extension_protocol_options.remove("empty");
        });
        changed(&|c| {
            c.typed_extension_protocol_options
                .get_mut("unknown")
                .unwrap()
                .value = vec![8, 2];
        });
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
