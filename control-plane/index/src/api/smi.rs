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
    /// v1alpha1 quantities read in thousandths (`"500m"` is 500, `"1"` is 1000); the weights
    /// of one split always come from one version, so only their ratio matters.
    pub fn weights(&self) -> Vec<Result<u64, String>> {
        let quantity = self.version == "v1alpha1";
        self.spec
            .backends
            .iter()
            .map(|b| read_weight(&b.weight, quantity))
            .collect()
    }
}

fn read_weight(value: &serde_json::Value, quantity: bool) -> Result<u64, String> {
    let shown = value.to_string();
    match value {
        serde_json::Value::Null => Err("weight is missing".to_string()),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if i < 0 {
                    return Err(format!("weight {shown} is negative"));
                }
                let i = i as u64;
                if quantity {
                    i.checked_mul(1000)
                        .ok_or_else(|| format!("weight {shown} is too large"))
                } else {
                    Ok(i)
                }
            } else if let Some(u) = n.as_u64() {
                if quantity {
                    u.checked_mul(1000)
                        .ok_or_else(|| format!("weight {shown} is too large"))
                } else {
                    Ok(u)
                }
            } else if quantity {
                parse_quantity(&shown)
            } else {
                Err(format!("weight {shown} is not a whole number"))
            }
        }
        serde_json::Value::String(s) if quantity => parse_quantity(s),
        serde_json::Value::String(s) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(i) if i < 0 => Err(format!("weight {shown} is negative")),
                Ok(i) => Ok(i as u64),
                Err(_) => Err(format!("weight {shown} is not a whole number")),
            }
        }
        _ => Err(format!("weight {shown} is not a number")),
    }
}

/// A Kubernetes quantity in thousandths: `"10m"` is 10, `"1"` is 1000, `"1.5"` is 1500,
/// `"2k"` is 2_000_000. Fractions below a thousandth are rejected rather than rounded away.
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let bad = || format!("weight {text:?} is not a valid quantity");
    let s = text.trim();
    if s.starts_with('-') {
        return Err(format!("weight {text:?} is negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    // Thousandths per unit of the suffix, as a power of ten (binary suffixes as factors).
    let (pow10, factor): (u32, u64) = match suffix {
        "m" => (0, 1),
        "" => (3, 1),
        "k" => (6, 1),
        "M" => (9, 1),
        "G" => (12, 1),
        "Ki" => (3, 1 << 10),
        "Mi" => (3, 1 << 20),
        "Gi" => (3, 1 << 30),
        _ => return Err(bad()),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if frac.len() > pow10 as usize && frac[pow10 as usize..].chars().any(|c| c != '0') {
        return Err(format!("weight {text:?} is finer than a thousandth"));
    }
    let digits: String = int
        .chars()
        .chain(
            frac.chars()
                .chain(std::iter::repeat('0'))
                .take(pow10 as usize),
        )
        .collect();
    let value = if digits.is_empty() {
        0
    } else {
        digits.parse::<u64>().map_err(|_| bad())?
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("weight {text:?} is too large"))
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
    fn quantities_read_in_thousandths() {
        assert_eq!(parse_quantity("10m"), Ok(10));
        assert_eq!(parse_quantity("500m"), Ok(500));
        assert_eq!(parse_quantity("1"), Ok(1000));
        assert_eq!(parse_quantity("1.5"), Ok(1500));
        assert_eq!(parse_quantity("0"), Ok(0));
        assert_eq!(parse_quantity("2k"), Ok(2_000_000));
        assert_eq!(parse_quantity("1Ki"), Ok(1_024_000));
        assert!(parse_quantity("-1").unwrap_err().contains("negative"));
        assert!(parse_quantity("abc").is_err());
        assert!(parse_quantity("m").is_err());
        assert!(parse_quantity("1.0005").is_err());
        assert!(parse_quantity("99999999999999999999G").is_err());
    }

    #[test]
    fn integer_weights_and_their_errors() {
        let w = |v: serde_json::Value| read_weight(&v, false);
        assert_eq!(w(serde_json::json!(90)), Ok(90));
        assert_eq!(w(serde_json::json!("10")), Ok(10));
        assert!(w(serde_json::json!(-5)).unwrap_err().contains("negative"));
        assert!(w(serde_json::json!(1.5)).is_err());
        assert!(w(serde_json::json!("ten")).is_err());
        assert!(w(serde_json::json!(null)).is_err());
        assert!(w(serde_json::json!([1])).is_err());
        assert_eq!(read_weight(&serde_json::json!(1), true), Ok(1000));
        assert_eq!(read_weight(&serde_json::json!("250m"), true), Ok(250));
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
