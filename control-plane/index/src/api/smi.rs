//! Service Mesh Interface types: `split.smi-spec.io` TrafficSplit (v1alpha1 to v1alpha4) and
//! `specs.smi-spec.io` HTTPRouteGroup (v1alpha1 to v1alpha4) and TCPRoute.
//!
//! Every version parses into one internal shape. Weights are kept as written and read
//! through [`TrafficSplit::weights`], so that a negative or malformed weight makes the split
//! invalid (reported by the translator) instead of making the whole manifest unreadable.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

pub mod convert;
pub mod quantity;

use quantity::Quantity;

pub const SPLIT_GROUP: &str = "split.smi-spec.io";
pub const SPECS_GROUP: &str = "specs.smi-spec.io";

/// `TrafficSplit`, any version from v1alpha1 to v1alpha4.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplit {
    /// The version the object was written in (`v1alpha1` .. `v1alpha4`); it decides how
    /// weights read. Set by the parser from `apiVersion`.
    #[serde(skip)]
    pub version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: TrafficSplitSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitSpec {
    /// The root (apex) Service that clients call.
    pub service: String,
    #[serde(default)]
    pub backends: Vec<TrafficSplitBackend>,
    /// v1alpha3 and later: the HTTPRouteGroups whose matches the split applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TrafficSplitMatch>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitBackend {
    pub service: String,
    /// As written: an integer (v1alpha2 and later) or a Kubernetes quantity (v1alpha1).
    #[serde(default)]
    pub weight: serde_json::Value,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
}

impl TrafficSplit {
    /// Each backend's weight as a relative whole number, or why it cannot be read.
    /// v1alpha1 quantities of the readable backends become whole numbers with their ratio
    /// ([`quantity::whole_weights`]: `"500m"` and `"1"` are 5 and 10); the weights of one
    /// split always come from one version, so only their ratio matters.
    pub fn weights(&self) -> Vec<Result<u64, String>> {
        if self.version != "v1alpha1" {
            return self
                .spec
                .backends
                .iter()
                .map(|b| read_weight(&b.weight))
                .collect();
        }
        let read: Vec<Result<Quantity, String>> = self
            .spec
            .backends
            .iter()
            .map(|b| match read_quantity(&b.weight) {
                Ok(q) if q.negative && !q.is_zero() => {
                    Err(format!("weight {} is negative", b.weight))
                }
                other => other,
            })
            .collect();
        let readable: Vec<Quantity> = read.iter().filter_map(|r| r.clone().ok()).collect();
        let mut whole = quantity::whole_weights(&readable).into_iter();
        read.into_iter()
            .map(|r| r.map(|_| whole.next().unwrap_or_default()))
            .collect()
    }
}

/// A v1alpha1 weight: a quantity written as a string, or as a number (whose text is read
/// as a quantity too, so `1` is one and `0.5` is a half).
pub fn read_quantity(value: &serde_json::Value) -> Result<Quantity, String> {
    let shown = value.to_string();
    let text = match value {
        serde_json::Value::Null => return Err("weight is missing".to_string()),
        serde_json::Value::String(s) => s.as_str(),
        serde_json::Value::Number(_) => shown.as_str(),
        _ => return Err(format!("weight {shown} is not a quantity")),
    };
    text.parse().map_err(|e| format!("weight {shown} {e}"))
}

/// An integer weight (v1alpha2 and later).
fn read_weight(value: &serde_json::Value) -> Result<u64, String> {
    let shown = value.to_string();
    match value {
        serde_json::Value::Null => Err("weight is missing".to_string()),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                u64::try_from(i).map_err(|_| format!("weight {shown} is negative"))
            } else if let Some(u) = n.as_u64() {
                Ok(u)
            } else {
                Err(format!("weight {shown} is not a whole number"))
            }
        }
        serde_json::Value::String(s) => match s.trim().parse::<i64>() {
            Ok(i) => u64::try_from(i).map_err(|_| format!("weight {shown} is negative")),
            Err(_) => Err(format!("weight {shown} is not a whole number")),
        },
        _ => Err(format!("weight {shown} is not a number")),
    }
}

/// `HTTPRouteGroup`, any version from v1alpha1 to v1alpha4. v1alpha1 and v1alpha2 keep
/// `matches` at the top level, later versions under `spec`; both read into `spec`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct HttpRouteGroup {
    pub metadata: ObjectMeta,
    pub spec: HttpRouteGroupSpec,
}

#[derive(Deserialize)]
struct RawHttpRouteGroup {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<HttpRouteGroupSpec>,
    #[serde(default)]
    matches: Vec<HttpMatch>,
}

impl<'de> Deserialize<'de> for HttpRouteGroup {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawHttpRouteGroup::deserialize(deserializer)?;
        let mut spec = raw.spec.unwrap_or_default();
        spec.matches.extend(raw.matches);
        Ok(HttpRouteGroup {
            metadata: raw.metadata,
            spec,
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteGroupSpec {
    #[serde(default)]
    pub matches: Vec<HttpMatch>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HttpHeaders>,
}

/// Header conditions: OSM's list of single-key maps, or the plain map of some spec prose.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum HttpHeaders {
    List(Vec<BTreeMap<String, String>>),
    Map(BTreeMap<String, String>),
}

impl HttpMatch {
    /// Header name and value regex pairs, in the order written.
    pub fn headers(&self) -> Vec<(String, String)> {
        match &self.headers {
            None => Vec::new(),
            Some(HttpHeaders::Map(map)) => {
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            }
            Some(HttpHeaders::List(list)) => list
                .iter()
                .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect(),
        }
    }
}

/// `TCPRoute` (v1alpha4 `spec.matches.ports`; earlier versions have no fields).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TcpRouteSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpRouteSpec {
    #[serde(default)]
    pub matches: TcpMatch,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Empty: every port of the Service.
    #[serde(default)]
    pub ports: Vec<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_weights_and_their_errors() {
        let w = |v: serde_json::Value| read_weight(&v);
        assert_eq!(w(serde_json::json!(90)), Ok(90));
        assert_eq!(w(serde_json::json!("10")), Ok(10));
        assert!(w(serde_json::json!(-5)).unwrap_err().contains("negative"));
        assert!(w(serde_json::json!(1.5)).is_err());
        assert!(w(serde_json::json!("ten")).is_err());
        assert!(w(serde_json::json!(null)).is_err());
        assert!(w(serde_json::json!([1])).is_err());
    }

    #[test]
    fn quantity_weights_read_from_strings_and_numbers() {
        let q = |v: serde_json::Value| read_quantity(&v).map(|q| (q.mantissa, q.exponent));
        assert_eq!(q(serde_json::json!("250m")), Ok((25, -2)));
        assert_eq!(q(serde_json::json!(1)), Ok((1, 0)));
        assert_eq!(q(serde_json::json!(0.5)), Ok((5, -1)));
        assert_eq!(
            q(serde_json::json!("ten")),
            Err("weight \"ten\" is not a valid quantity".to_string())
        );
        assert!(q(serde_json::json!(null)).is_err());
        assert!(q(serde_json::json!(true)).is_err());
    }

    #[test]
    fn headers_read_as_list_or_map() {
        let list: HttpMatch = serde_json::from_value(serde_json::json!({
            "name": "m", "headers": [{"cookie": "beta"}, {"x-a": "1"}]
        }))
        .unwrap();
        assert_eq!(
            list.headers(),
            vec![("cookie".into(), "beta".into()), ("x-a".into(), "1".into())]
        );
        let map: HttpMatch = serde_json::from_value(serde_json::json!({
            "name": "m", "headers": {"x-b": "2", "x-a": "1"}
        }))
        .unwrap();
        assert_eq!(
            map.headers(),
            vec![("x-a".into(), "1".into()), ("x-b".into(), "2".into())]
        );
    }
}
