//! Small constructors for protobuf well-known types and the envoy.config.core building
//! blocks every resource kind uses (ADS config source, socket addresses).

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
};
use envoy_types::pb::google::protobuf;

/// Packs a message into a `google.protobuf.Any` with its `type.googleapis.com/` type URL.
pub fn any<M: prost::Message + prost::Name>(message: &M) -> protobuf::Any {
    protobuf::Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A `google.protobuf.Duration` (saturating at `i64::MAX` seconds).
pub fn duration(d: Duration) -> protobuf::Duration {
    protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A `google.protobuf.UInt32Value`.
pub fn u32_value(value: u32) -> protobuf::UInt32Value {
    protobuf::UInt32Value { value }
}

/// A `google.protobuf.BoolValue`.
pub fn bool_value(value: bool) -> protobuf::BoolValue {
    protobuf::BoolValue { value }
}

/// `{ ads: {}, resource_api_version: V3 }`: fetch over the aggregated stream.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// A TCP socket address.
pub fn socket_address(ip: impl ToString, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use prost::Message;

    use super::*;

    #[test]
    fn durations_keep_sub_second_precision() {
        assert_eq!(
            duration(Duration::from_millis(1500)),
            protobuf::Duration {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(duration(Duration::ZERO), protobuf::Duration::default());
    }

    #[test]
    fn any_round_trips() {
        let cluster = Cluster {
            name: "c".into(),
            ..Default::default()
        };
        let packed = any(&cluster);
        assert_eq!(
            packed.type_url,
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(Cluster::decode(packed.value.as_slice()).unwrap(), cluster);
    }

    #[test]
    fn ads_source_is_v3() {
        let source = ads_config_source();
        assert_eq!(source.resource_api_version, ApiVersion::V3 as i32);
        assert!(matches!(
            source.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
    }
}
