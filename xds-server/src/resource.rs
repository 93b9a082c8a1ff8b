//! The resource types Lanyard serves, and a resource encoded once for every proxy.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use envoy_types::pb::google::protobuf::Any;

use crate::type_url;
use crate::version::{CanonicalError, Version, canonical_hash};

/// A resource type Lanyard serves over ADS. Ordered as pushes go out on a change: clusters,
/// endpoints, listeners, routes (a proxy learns of a cluster before a route sends traffic
/// to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// CDS.
    Cluster,
    /// EDS.
    Endpoint,
    /// LDS.
    Listener,
    /// RDS.
    Route,
}

impl ResourceType {
    /// Every type, in push order.
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    /// The type URL on the wire.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => type_url::CLUSTER,
            ResourceType::Endpoint => type_url::ENDPOINT,
            ResourceType::Listener => type_url::LISTENER,
            ResourceType::Route => type_url::ROUTE,
        }
    }

    /// The type of a type URL, `None` for a type Lanyard does not serve.
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// `CDS`, `EDS`, `LDS`, `RDS`: the name in logs, metrics and the debug endpoint.
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "CDS",
            ResourceType::Endpoint => "EDS",
            ResourceType::Listener => "LDS",
            ResourceType::Route => "RDS",
        }
    }

    /// Full protobuf name of the message.
    pub fn message_name(self) -> &'static str {
        self.type_url()
            .rsplit('/')
            .next()
            .expect("type URLs have a slash")
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// One resource as it goes on the wire: its name, the version of its content and the
/// message packed into an `Any`, encoded once and shared by every proxy that gets it.
#[derive(Clone, Debug)]
pub struct Resource {
    name: Arc<str>,
    version: Version,
    body: Any,
    /// This resource as an entry of a delta response, encoded on first use.
    delta: OnceLock<Bytes>,
}

impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.version == other.version && self.body == other.body
    }
}

impl Resource {
    /// Encodes a message.
    pub fn encode<M: prost::Message + prost::Name>(
        name: &str,
        message: &M,
    ) -> Result<Resource, CanonicalError> {
        let body = crate::render::any(message);
        let version = canonical_hash(&M::full_name(), &body.value)?;
        Ok(Resource {
            name: name.into(),
            version,
            body,
            delta: OnceLock::new(),
        })
    }

    /// The resource name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared.
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// The version of the content.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The encoded message.
    pub fn body(&self) -> &Any {
        &self.body
    }

    /// This resource as one entry of a `DeltaDiscoveryResponse`'s `resources` (name,
    /// version, body), encoded once and shared by every delta stream that gets it.
    pub fn delta_entry(&self) -> &Bytes {
        self.delta
            .get_or_init(|| crate::ads::wire::delta_entry(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_round_trip_and_push_order_is_cds_eds_lds_rds() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(ResourceType::from_type_url(type_url::SECRET), None);
        let names: Vec<_> = ResourceType::ALL.iter().map(|t| t.short_name()).collect();
        assert_eq!(names, ["CDS", "EDS", "LDS", "RDS"]);
        let mut sorted = ResourceType::ALL;
        sorted.sort();
        assert_eq!(sorted, ResourceType::ALL);
        assert_eq!(
            ResourceType::Cluster.message_name(),
            "envoy.config.cluster.v3.Cluster"
        );
    }
}
