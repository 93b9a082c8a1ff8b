//! ADS responses as gRPC frames of pre-encoded, shared bytes.
//!
//! A response goes out as one gRPC message: the 5-byte gRPC header (not compressed,
//! big-endian length), the fields that differ per stream (version, type URL, nonce, and for
//! delta the removed names), then the repeated `resources` field, already encoded. Protobuf
//! lets fields come in any order and a repeated field be split over several runs, so the
//! concatenation is a valid `DiscoveryResponse` / `DeltaDiscoveryResponse`.
//!
//! - State of the world: the `resources` of a view are encoded once per view
//!   ([`crate::cache::TypeView::sotw_resources`]) and every stream with that view sends the
//!   same [`Bytes`]; only a named selection (not a whole view) is encoded per stream.
//! - Delta: each resource's `Resource` entry is encoded once
//!   ([`crate::resource::Resource::delta_entry`]); a stream's response is its header
//!   followed by the entries of the resources it needs, as separate chunks (no copy).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{self, WireType};

use crate::resource::Resource;

/// `DiscoveryResponse.version_info` / `DeltaDiscoveryResponse.system_version_info`.
const VERSION_INFO: u32 = 1;
/// `resources` in both responses.
const RESOURCES: u32 = 2;
/// `type_url` in both responses.
const TYPE_URL: u32 = 4;
/// `nonce` in both responses.
const NONCE: u32 = 5;
/// `DeltaDiscoveryResponse.removed_resources`.
const REMOVED_RESOURCES: u32 = 6;

/// `discovery.v3.Resource.version`.
const RESOURCE_VERSION: u32 = 1;
/// `discovery.v3.Resource.resource` (the `Any`).
const RESOURCE_BODY: u32 = 2;
/// `discovery.v3.Resource.name`.
const RESOURCE_NAME: u32 = 3;

/// gRPC's message header: a compressed flag and a 32-bit big-endian length.
pub const HEADER_LEN: usize = 5;

/// One gRPC message, ready for the wire: the header and per-stream fields in the first
/// chunk, shared encoded resources in the others.
#[derive(Clone, Debug)]
pub struct Frame {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Frame {
    /// A `DiscoveryResponse` whose `resources` field is `resources`, already encoded (see
    /// [`sotw_resources`]).
    pub fn sotw(version: &str, type_url: &str, nonce: &str, resources: Bytes) -> Frame {
        Frame::new(
            |buf| {
                encode_str(VERSION_INFO, version, buf);
                encode_str(TYPE_URL, type_url, buf);
                encode_str(NONCE, nonce, buf);
            },
            vec![resources],
        )
    }

    /// A `DeltaDiscoveryResponse` whose `resources` are these encoded entries (see
    /// [`delta_entry`]).
    pub fn delta(
        system_version: &str,
        type_url: &str,
        nonce: &str,
        removed: &[String],
        resources: impl IntoIterator<Item = Bytes>,
    ) -> Frame {
        Frame::new(
            |buf| {
                encode_str(VERSION_INFO, system_version, buf);
                encode_str(TYPE_URL, type_url, buf);
                encode_str(NONCE, nonce, buf);
                for name in removed {
                    // Repeated: every element goes out, even an empty one.
                    encoding::string::encode(REMOVED_RESOURCES, name, buf);
                }
            },
            resources.into_iter().collect(),
        )
    }

    fn new(fields: impl FnOnce(&mut BytesMut), body: Vec<Bytes>) -> Frame {
        let mut head = BytesMut::with_capacity(128);
        head.put_bytes(0, HEADER_LEN);
        fields(&mut head);
        let body_len: usize = body.iter().map(Bytes::len).sum();
        let message_len = head.len() - HEADER_LEN + body_len;
        let wire_len = u32::try_from(message_len).expect("an xDS response under 4 GiB");
        head[1..HEADER_LEN].copy_from_slice(&wire_len.to_be_bytes());
        let mut chunks = Vec::with_capacity(1 + body.len());
        chunks.push(head.freeze());
        chunks.extend(body.into_iter().filter(|chunk| !chunk.is_empty()));
        Frame {
            chunks,
            len: HEADER_LEN + message_len,
        }
    }

    /// Bytes on the wire, header included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never: a frame has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The chunks, in order: header and per-stream fields first.
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// The protobuf message (without the gRPC header), in one buffer: for tests and tools.
    pub fn message(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.len);
        for chunk in &self.chunks {
            buf.put_slice(chunk);
        }
        buf.freeze().slice(HEADER_LEN..)
    }

    /// Decodes the message, as a client would.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.message())
    }
}

/// The encoded length of a string field (proto3: nothing when empty).
fn str_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        encoding::key_len(tag) + encoding::encoded_len_varint(value.len() as u64) + value.len()
    }
}

fn encode_str(tag: u32, value: &str, buf: &mut BytesMut) {
    if !value.is_empty() {
        encoding::encode_key(tag, WireType::LengthDelimited, buf);
        encoding::encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }
}

/// Resources as the repeated `resources` field of a `DiscoveryResponse` (each its `Any`).
pub fn sotw_resources(resources: &[Arc<Resource>]) -> Bytes {
    let len = resources
        .iter()
        .map(|r| encoding::message::encoded_len(RESOURCES, r.body()))
        .sum();
    let mut buf = BytesMut::with_capacity(len);
    for resource in resources {
        encoding::message::encode(RESOURCES, resource.body(), &mut buf);
    }
    buf.freeze()
}

/// A resource as one entry of the repeated `resources` field of a
/// `DeltaDiscoveryResponse`: a `discovery.v3.Resource` with its name, version and `Any`.
pub fn delta_entry(resource: &Resource) -> Bytes {
    let version = resource.version().to_string();
    let name = resource.name();
    let inner = str_len(RESOURCE_VERSION, &version)
        + encoding::message::encoded_len(RESOURCE_BODY, resource.body())
        + str_len(RESOURCE_NAME, name);
    let mut buf = BytesMut::with_capacity(
        encoding::key_len(RESOURCES) + encoding::encoded_len_varint(inner as u64) + inner,
    );
    encoding::encode_key(RESOURCES, WireType::LengthDelimited, &mut buf);
    encoding::encode_varint(inner as u64, &mut buf);
    encode_str(RESOURCE_VERSION, &version, &mut buf);
    encoding::message::encode(RESOURCE_BODY, resource.body(), &mut buf);
    encode_str(RESOURCE_NAME, name, &mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource as WireResource,
    };
    use prost::Message;

    use super::*;
    use crate::cache::MeshSnapshot;
    use crate::fixtures::rich_model;
    use crate::resource::ResourceType;
    use crate::{ProxyRef, XdsOptions, translate};

    fn snapshot() -> MeshSnapshot {
        MeshSnapshot::build(
            1,
            Instant::now(),
            translate(&rich_model(), &XdsOptions::default()),
        )
        .unwrap()
    }

    fn proxy() -> ProxyRef {
        ProxyRef::envoy(lanyard_model::NamespaceName::new("web"), None)
    }

    fn header(frame: &Frame) -> (u8, usize) {
        let chunks = frame.clone().into_chunks();
        let head = &chunks[0];
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        (head[0], len)
    }

    #[test]
    fn a_sotw_frame_decodes_to_the_response_prost_would_build() {
        let snapshot = snapshot();
        for ty in ResourceType::ALL {
            let view = snapshot.view(ty, &proxy());
            assert!(!view.resources().is_empty(), "{ty}");
            let expected = DiscoveryResponse {
                version_info: view.version().to_string(),
                resources: view.resources().iter().map(|r| r.body().clone()).collect(),
                type_url: ty.type_url().to_string(),
                nonce: "42".into(),
                ..Default::default()
            };
            let frame = Frame::sotw(
                &view.version().to_string(),
                ty.type_url(),
                "42",
                view.sotw_resources().clone(),
            );
            let (compressed, len) = header(&frame);
            assert_eq!(compressed, 0);
            assert_eq!(len, expected.encoded_len(), "{ty}");
            assert_eq!(frame.len(), HEADER_LEN + len);
            assert_eq!(
                frame.decode::<DiscoveryResponse>().unwrap(),
                expected,
                "{ty}"
            );
            // The shared body is the view's own bytes, not a copy.
            let chunks = frame.into_chunks();
            assert_eq!(chunks.len(), 2);
            assert_eq!(chunks[1].as_ptr(), view.sotw_resources().as_ptr());
        }
    }

    #[test]
    fn an_empty_sotw_frame_decodes() {
        let frame = Frame::sotw("v", "type.googleapis.com/x.Y", "1", Bytes::new());
        let expected = DiscoveryResponse {
            version_info: "v".into(),
            type_url: "type.googleapis.com/x.Y".into(),
            nonce: "1".into(),
            ..Default::default()
        };
        assert_eq!(header(&frame).1, expected.encoded_len());
        assert_eq!(frame.decode::<DiscoveryResponse>().unwrap(), expected);
    }

    #[test]
    fn a_delta_frame_decodes_to_the_response_prost_would_build() {
        let snapshot = snapshot();
        let view = snapshot.view(ResourceType::Cluster, &proxy());
        let updates: Vec<_> = view.resources().iter().take(3).cloned().collect();
        assert_eq!(updates.len(), 3);
        let removed = vec!["gone-a".to_string(), "gone-b".to_string()];
        let expected = DeltaDiscoveryResponse {
            system_version_info: "0123456789abcdef".into(),
            resources: updates
                .iter()
                .map(|r| WireResource {
                    name: r.name().to_string(),
                    version: r.version().to_string(),
                    resource: Some(r.body().clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: ResourceType::Cluster.type_url().to_string(),
            removed_resources: removed.clone(),
            nonce: "7".into(),
            ..Default::default()
        };
        let frame = Frame::delta(
            "0123456789abcdef",
            ResourceType::Cluster.type_url(),
            "7",
            &removed,
            updates.iter().map(|r| r.delta_entry().clone()),
        );
        assert_eq!(header(&frame).1, expected.encoded_len());
        assert_eq!(frame.decode::<DeltaDiscoveryResponse>().unwrap(), expected);
        // One chunk per resource, each the resource's own encoded entry.
        let chunks = frame.into_chunks();
        assert_eq!(chunks.len(), 4);
        for (chunk, resource) in chunks[1..].iter().zip(&updates) {
            assert_eq!(chunk.as_ptr(), resource.delta_entry().as_ptr());
        }
        // Only removals.
        let frame = Frame::delta("v", "t", "8", &removed, []);
        let decoded = frame.decode::<DeltaDiscoveryResponse>().unwrap();
        assert_eq!(decoded.removed_resources, removed);
        assert!(decoded.resources.is_empty());
    }
}
