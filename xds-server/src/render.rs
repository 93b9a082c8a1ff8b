//! Stable, readable rendering of Envoy resources for golden files and `lanyardctl`.
//!
//! envoy-types has no serde support, but ships the FileDescriptorSet its code was generated
//! from; `build.rs` copies it into `OUT_DIR`. A message is encoded, decoded as a
//! `prost_reflect::DynamicMessage` against that pool, serialized as proto3 JSON with Envoy's
//! own snake_case field names (like Envoy's config dumps), default fields skipped and `Any`s
//! expanded with their `@type`; then every object's keys are sorted.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Map, Value};

use crate::ProxyResources;

pub use crate::protobuf::any;

/// Key of the object [`message_value`] returns in place of a message it could not render.
pub const RENDER_ERROR_KEY: &str = "@render_error";

const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types_descriptor_set.bin"));

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(DESCRIPTOR_SET)
        .expect("envoy-types' descriptor set (copied by build.rs) decodes")
});

/// Why a message could not be rendered. Every case is a bug in Lanyard (a type missing from
/// envoy-types' descriptor set), not something a user can cause.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The message type is not in the descriptor set.
    #[error("message type {0} is not in envoy-types' descriptor set")]
    UnknownType(String),
    /// The encoded message does not decode against its descriptor.
    #[error("decoding {type_name} against its descriptor: {source}")]
    Decode {
        /// Full protobuf name of the message.
        type_name: String,
        /// What prost-reflect reported.
        source: prost::DecodeError,
    },
    /// JSON serialization failed, typically an `Any` whose type is not in the pool.
    #[error("serializing {type_name} (is every Any's type in the descriptor set?): {source}")]
    Serialize {
        /// Full protobuf name of the message.
        type_name: String,
        /// What serde_json / prost-reflect reported.
        source: serde_json::Error,
    },
}

/// The descriptor pool of every type envoy-types generates.
pub fn descriptor_pool() -> &'static DescriptorPool {
    &POOL
}

/// A message as sorted proto3 JSON, or the reason it could not be rendered.
pub fn try_message_value<M: prost::Message + prost::Name>(
    message: &M,
) -> Result<Value, RenderError> {
    let type_name = M::full_name();
    let descriptor = POOL
        .get_message_by_name(&type_name)
        .ok_or_else(|| RenderError::UnknownType(type_name.clone()))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).map_err(
        |source| RenderError::Decode {
            type_name: type_name.clone(),
            source,
        },
    )?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    let value = dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| RenderError::Serialize { type_name, source })?;
    Ok(sorted(value))
}

/// A message as sorted proto3 JSON. A message that cannot be rendered (a Lanyard bug) comes
/// out as `{"@render_error": "<reason>"}` so that golden files and tests show it.
pub fn message_value<M: prost::Message + prost::Name>(message: &M) -> Value {
    try_message_value(message).unwrap_or_else(|e| {
        Value::Object(Map::from_iter([(
            RENDER_ERROR_KEY.to_string(),
            Value::String(e.to_string()),
        )]))
    })
}

/// `{listeners: [...], routes: [...], clusters: [...], endpoints: [...]}`, in the order the
/// resources are listed (sorted by name).
pub fn resources_value(resources: &ProxyResources) -> Value {
    fn list<M: prost::Message + prost::Name>(items: &[std::sync::Arc<M>]) -> Value {
        Value::Array(items.iter().map(|m| message_value(m.as_ref())).collect())
    }
    sorted(Value::Object(Map::from_iter([
        ("listeners".to_string(), list(&resources.listeners)),
        ("routes".to_string(), list(&resources.routes)),
        ("clusters".to_string(), list(&resources.clusters)),
        ("endpoints".to_string(), list(&resources.endpoints)),
    ])))
}

/// YAML text of a value (keys in the value's order: sorted when it comes from this module).
pub fn to_yaml(value: &Value) -> String {
    serde_yaml::to_string(value).unwrap_or_else(|e| format!("# cannot render as YAML: {e}\n"))
}

/// The value with every object's keys sorted, whatever order `serde_json::Map` keeps (it
/// keeps insertion order if another crate turns on serde_json's `preserve_order`).
pub fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::google::protobuf;
    use serde_json::json;

    use super::*;
    use crate::fixtures::rich_model;
    use crate::{ProxyRef, XdsOptions, translate};
    use lanyard_model::{NamespaceName, WorkloadKey};

    /// Every `Any` rendered (an object with `@type`), and every render error.
    fn walk(value: &Value, types: &mut Vec<String>, errors: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(t)) = map.get("@type") {
                    types.push(t.clone());
                }
                if let Some(e) = map.get(RENDER_ERROR_KEY) {
                    errors.push(e.to_string());
                }
                map.values().for_each(|v| walk(v, types, errors));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, types, errors)),
            _ => {}
        }
    }

    fn full_render() -> Value {
        let mesh = translate(&rich_model(), &XdsOptions::default());
        resources_value(&mesh.for_proxy(&ProxyRef::envoy(
            NamespaceName::new("shop"),
            Some(WorkloadKey::new("shop", "cart-0")),
        )))
    }

    #[test]
    fn every_any_in_a_full_proxy_config_resolves() {
        let value = full_render();
        let (mut types, mut errors) = (Vec::new(), Vec::new());
        walk(&value, &mut types, &mut errors);
        assert!(errors.is_empty(), "render errors: {errors:?}");
        types.sort();
        types.dedup();
        for expected in [
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
            "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
            "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        ] {
            assert!(
                types.iter().any(|t| t == expected),
                "{expected} not in {types:?}"
            );
        }
        for key in ["listeners", "routes", "clusters", "endpoints"] {
            assert!(!value[key].as_array().unwrap().is_empty(), "{key} empty");
        }
    }

    #[test]
    fn route_level_anys_resolve_too() {
        // The CORS FilterConfig (with a CorsPolicy inside) only appears on routes.
        let value = full_render();
        let (mut types, mut errors) = (Vec::new(), Vec::new());
        walk(&value["routes"], &mut types, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            types.contains(&"type.googleapis.com/envoy.config.route.v3.FilterConfig".to_string())
        );
        assert!(types.contains(
            &"type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy".to_string()
        ));
    }

    #[test]
    fn snake_case_names_and_no_defaults() {
        let cluster = crate::clusters::passthrough();
        let value = message_value(&cluster);
        assert_eq!(value["name"], "PassthroughCluster");
        assert_eq!(value["connect_timeout"], "10s");
        assert_eq!(value["lb_policy"], "CLUSTER_PROVIDED");
        assert_eq!(value["type"], "ORIGINAL_DST");
        assert!(value.get("alt_stat_name").is_none());
        assert!(value.get("connectTimeout").is_none());
    }

    #[test]
    fn unknown_any_types_are_reported() {
        let mut cluster = Cluster::default();
        cluster.typed_extension_protocol_options.insert(
            "x".into(),
            protobuf::Any {
                type_url: "type.googleapis.com/not.a.Type".into(),
                value: vec![],
            },
        );
        assert!(matches!(
            try_message_value(&cluster),
            Err(RenderError::Serialize { .. })
        ));
        assert!(message_value(&cluster).get(RENDER_ERROR_KEY).is_some());
    }

    #[test]
    fn keys_are_sorted_recursively() {
        let value = sorted(json!({"b": 1, "a": {"d": [{"z": 1, "y": 2}], "c": 3}}));
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"a":{"c":3,"d":[{"y":2,"z":1}]},"b":1}"#
        );
        let yaml = to_yaml(&value);
        assert!(
            yaml.find("a:").unwrap() < yaml.find("b:").unwrap(),
            "{yaml}"
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        let a = to_yaml(&full_render());
        let b = to_yaml(&full_render());
        assert_eq!(a, b);
        assert!(a.contains("virtualInbound"));
    }
}
