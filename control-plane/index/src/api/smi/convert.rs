//! Conversion of SMI objects between versions, as the CRD conversion webhook needs it.
//!
//! Every conversion goes through the hub, v1alpha4 (the storage version): the object is
//! raised to v1alpha4, then lowered to the version asked for. Objects are plain JSON, so
//! fields this module does not know (and `metadata`) pass through untouched.
//!
//! - TrafficSplit weights: v1alpha1 quantities become whole numbers of thousandths
//!   (`"500m"` is 500, `"1"` is 1000), so the ratio between backends is kept; whole numbers
//!   go back to v1alpha1 as `"<n>m"`. A weight that cannot be read fails the conversion with
//!   an [`Error`] naming the backend; it is not written through as it is, because the storage
//!   version types `weight` as an integer and a string there would break every reader.
//! - Fields a lower version cannot hold (TrafficSplit `spec.matches` in v1alpha1 and
//!   v1alpha2, TCPRoute `spec.matches` before v1alpha4) are kept in the annotation
//!   [`PRESERVED_ANNOTATION`] and put back when the object is raised again, so that
//!   v1alpha4 -> v1alpha2 -> v1alpha4 is lossless. The annotation is always removed on the
//!   way up, so it never reaches the storage version.
//! - HTTPRouteGroup: `matches` sits at the top level in v1alpha1 and v1alpha2 and under
//!   `spec` from v1alpha3; every version holds the same match fields.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::{SPECS_GROUP, SPLIT_GROUP, parse_quantity};

/// Annotation holding, as a JSON object shaped like the v1alpha4 object (for example
/// `{"spec":{"matches":[...]}}`), the fields the object's version cannot hold. Present only
/// on objects served in such a version; removed whenever an object is raised.
pub const PRESERVED_ANNOTATION: &str = "lanyard.dev/smi-preserved-fields";

/// The SMI versions Lanyard serves, oldest first. v1alpha4 is the hub and storage version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V1alpha1,
    V1alpha2,
    V1alpha3,
    V1alpha4,
}

impl Version {
    pub const ALL: [Version; 4] = [
        Version::V1alpha1,
        Version::V1alpha2,
        Version::V1alpha3,
        Version::V1alpha4,
    ];
    /// The version objects are stored in and converted through.
    pub const HUB: Version = Version::V1alpha4;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1alpha1 => "v1alpha1",
            Version::V1alpha2 => "v1alpha2",
            Version::V1alpha3 => "v1alpha3",
            Version::V1alpha4 => "v1alpha4",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Version {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Version::ALL.into_iter().find(|v| v.as_str() == s).ok_or(())
    }
}

/// The SMI kinds that have conversions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    TrafficSplit,
    HttpRouteGroup,
    TcpRoute,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::TrafficSplit, Kind::HttpRouteGroup, Kind::TcpRoute];

    pub fn group(self) -> &'static str {
        match self {
            Kind::TrafficSplit => SPLIT_GROUP,
            Kind::HttpRouteGroup | Kind::TcpRoute => SPECS_GROUP,
        }
    }

    /// The `kind` as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TrafficSplit => "TrafficSplit",
            Kind::HttpRouteGroup => "HTTPRouteGroup",
            Kind::TcpRoute => "TCPRoute",
        }
    }

    fn lookup(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an object could not be converted. The message is what the API server shows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the object is not a JSON object")]
    NotAnObject,
    #[error("the object has no apiVersion or kind")]
    MissingTypeMeta,
    #[error(
        "{kind} in {api_version} is not an SMI kind Lanyard converts (TrafficSplit in {SPLIT_GROUP}, HTTPRouteGroup and TCPRoute in {SPECS_GROUP}, v1alpha1 to v1alpha4)"
    )]
    UnknownKind { api_version: String, kind: String },
    #[error(
        "cannot convert {kind} {name} from {from} to {to}: {to} is not {group}/v1alpha1..v1alpha4"
    )]
    UnknownTarget {
        kind: Kind,
        name: String,
        from: String,
        to: String,
        group: &'static str,
    },
    #[error("{kind} {name}: {field}: {message}")]
    Field {
        kind: Kind,
        name: String,
        field: String,
        message: String,
    },
}

/// Converts `object` (any served version of TrafficSplit, HTTPRouteGroup or TCPRoute) to
/// `desired_api_version` (`group/version`, the group must be the object's own).
pub fn convert(object: &Value, desired_api_version: &str) -> Result<Value, Error> {
    let map = object.as_object().ok_or(Error::NotAnObject)?;
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    let kind = map.get("kind").and_then(Value::as_str);
    let (Some(api_version), Some(kind_name)) = (api_version, kind) else {
        return Err(Error::MissingTypeMeta);
    };
    let unknown = || Error::UnknownKind {
        api_version: api_version.to_string(),
        kind: kind_name.to_string(),
    };
    let (group, version) = api_version.rsplit_once('/').ok_or_else(unknown)?;
    let kind = Kind::lookup(group, kind_name).ok_or_else(unknown)?;
    let from: Version = version.parse().map_err(|()| unknown())?;
    let name = object_name(map);
    let to = desired_api_version
        .rsplit_once('/')
        .filter(|(g, _)| *g == group)
        .and_then(|(_, v)| v.parse::<Version>().ok())
        .ok_or_else(|| Error::UnknownTarget {
            kind,
            name: name.clone(),
            from: api_version.to_string(),
            to: desired_api_version.to_string(),
            group: kind.group(),
        })?;
    let mut object = map.clone();
    let cx = Context { kind, name };
    raise(&cx, from, &mut object)?;
    lower(&cx, to, &mut object)?;
    object.insert(
        "apiVersion".to_string(),
        Value::String(format!("{group}/{to}")),
    );
    Ok(Value::Object(object))
}

/// The object's `namespace/name`, for messages.
fn object_name(object: &Map<String, Value>) -> String {
    let meta = object.get("metadata");
    let get = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    match (get("namespace"), get("name")) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_string(),
        _ => "(unnamed)".to_string(),
    }
}

struct Context {
    kind: Kind,
    name: String,
}

impl Context {
    fn error(&self, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Field {
            kind: self.kind,
            name: self.name.clone(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Rewrites `object`, written in `from`, as the hub version (v1alpha4).
fn raise(cx: &Context, from: Version, object: &mut Map<String, Value>) -> Result<(), Error> {
    let preserved = take_preserved(cx, object)?;
    match cx.kind {
        Kind::TrafficSplit => {
            if from == Version::V1alpha1 {
                for_each_weight(object, |i, weight| {
                    *weight = Value::from(quantity_to_thousandths(weight).map_err(|message| {
                        cx.error(format!("spec.backends[{i}].weight"), message)
                    })?);
                    Ok(())
                })?;
            }
        }
        Kind::HttpRouteGroup => {
            if from <= Version::V1alpha2
                && let Some(matches) = object.remove("matches")
            {
                spec_mut(object).insert("matches".to_string(), matches);
            }
        }
        Kind::TcpRoute => {}
    }
    if let Some(preserved) = preserved
        && dropped_fields(cx.kind, from).is_some()
    {
        fill_absent(object, preserved);
    }
    Ok(())
}

/// Rewrites `object`, in the hub version, as `to`.
fn lower(cx: &Context, to: Version, object: &mut Map<String, Value>) -> Result<(), Error> {
    match cx.kind {
        Kind::TrafficSplit => {
            if to == Version::V1alpha1 {
                for_each_weight(object, |i, weight| {
                    let n = weight.as_i64().ok_or_else(|| {
                        cx.error(
                            format!("spec.backends[{i}].weight"),
                            format!("weight {weight} is not a whole number"),
                        )
                    })?;
                    *weight = Value::String(format!("{n}m"));
                    Ok(())
                })?;
            }
        }
        Kind::HttpRouteGroup => {
            if to <= Version::V1alpha2 {
                let matches = object
                    .get_mut("spec")
                    .and_then(Value::as_object_mut)
                    .and_then(|spec| spec.remove("matches"));
                if object
                    .get("spec")
                    .and_then(Value::as_object)
                    .is_some_and(Map::is_empty)
                {
                    object.remove("spec");
                }
                if let Some(matches) = matches {
                    object.insert("matches".to_string(), matches);
                }
            }
        }
        Kind::TcpRoute => {}
    }
    if let Some(field) = dropped_fields(cx.kind, to)
        && let Some(value) = object
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .and_then(|spec| spec.remove(field))
    {
        let preserved = serde_json::json!({ "spec": { field: value } });
        annotations_mut(object).insert(
            PRESERVED_ANNOTATION.to_string(),
            Value::String(preserved.to_string()),
        );
    }
    Ok(())
}

/// The `spec` field that `version` of `kind` cannot hold, if any.
fn dropped_fields(kind: Kind, version: Version) -> Option<&'static str> {
    match kind {
        Kind::TrafficSplit if version <= Version::V1alpha2 => Some("matches"),
        Kind::TcpRoute if version <= Version::V1alpha3 => Some("matches"),
        _ => None,
    }
}

/// Removes [`PRESERVED_ANNOTATION`] (and an `annotations` map it leaves empty) and returns
/// its parsed value.
fn take_preserved(cx: &Context, object: &mut Map<String, Value>) -> Result<Option<Value>, Error> {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Ok(None);
    };
    let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) else {
        return Ok(None);
    };
    let Some(text) = annotations.remove(PRESERVED_ANNOTATION) else {
        return Ok(None);
    };
    if annotations.is_empty() {
        meta.remove("annotations");
    }
    let field = format!("metadata.annotations[{PRESERVED_ANNOTATION}]");
    let text = text
        .as_str()
        .ok_or_else(|| cx.error(&field, "the annotation is not a string"))?;
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(Some(value)),
        Ok(_) => Err(cx.error(&field, "the annotation is not a JSON object")),
        Err(e) => Err(cx.error(&field, format!("the annotation is not valid JSON: {e}"))),
    }
}

/// Copies into `target` every field of `source` that `target` does not have.
fn fill_absent(target: &mut Map<String, Value>, source: Value) {
    let Value::Object(source) = source else {
        return;
    };
    for (key, value) in source {
        match target.get_mut(&key) {
            None => {
                target.insert(key, value);
            }
            Some(Value::Object(inner)) => fill_absent(inner, value),
            Some(_) => {}
        }
    }
}

fn spec_mut(object: &mut Map<String, Value>) -> &mut Map<String, Value> {
    child_object(object, "spec")
}

fn annotations_mut(object: &mut Map<String, Value>) -> &mut Map<String, Value> {
    child_object(child_object(object, "metadata"), "annotations")
}

/// The object under `key`, created (or replacing a non-object) when needed.
fn child_object<'a>(object: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = object
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("just made an object")
}

/// Calls `f` with every `spec.backends[i].weight` that is present and not null.
fn for_each_weight(
    object: &mut Map<String, Value>,
    mut f: impl FnMut(usize, &mut Value) -> Result<(), Error>,
) -> Result<(), Error> {
    let backends = object
        .get_mut("spec")
        .and_then(|s| s.get_mut("backends"))
        .and_then(Value::as_array_mut);
    for (i, backend) in backends.into_iter().flatten().enumerate() {
        if let Some(weight) = backend.get_mut("weight").filter(|w| !w.is_null()) {
            f(i, weight)?;
        }
    }
    Ok(())
}

/// A v1alpha1 weight (a quantity, written as a string or a whole number) in thousandths.
/// Negative quantities are converted too: they are invalid weights, but the translator is
/// the one that reports them, whatever version they were written in.
pub fn quantity_to_thousandths(weight: &Value) -> Result<i64, String> {
    let too_large = || format!("weight {weight} is too large");
    match weight {
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.checked_mul(1000).ok_or_else(too_large),
            None if n.is_u64() => Err(too_large()),
            None => Err(format!(
                "weight {weight} is not a quantity (write a fraction as a string, e.g. \"500m\")"
            )),
        },
        Value::String(s) => {
            let t = s.trim();
            let (negative, magnitude) = match t.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, t),
            };
            // `parse_quantity` names the weight as written in its messages.
            let value = parse_quantity(magnitude).map_err(|e| {
                if negative {
                    e.replace(&format!("{magnitude:?}"), &format!("{s:?}"))
                } else {
                    e
                }
            })?;
            let value = i64::try_from(value).map_err(|_| too_large())?;
            Ok(if negative { -value } else { value })
        }
        _ => Err(format!("weight {weight} is not a quantity")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn split(version: Version, weights: [Value; 2], matches: Option<Value>) -> Value {
        let mut spec = json!({
            "service": "web",
            "backends": [
                {"service": "web-v1", "weight": weights[0]},
                {"service": "web-v2", "weight": weights[1]},
            ],
        });
        if let Some(m) = matches {
            spec["matches"] = m;
        }
        json!({
            "apiVersion": format!("split.smi-spec.io/{version}"),
            "kind": "TrafficSplit",
            "metadata": {"name": "web-beta", "namespace": "shop", "labels": {"app": "web"}},
            "spec": spec,
        })
    }

    fn beta_matches() -> Value {
        json!([{"kind": "HTTPRouteGroup", "name": "beta-users", "apiGroup": "specs.smi-spec.io"}])
    }

    /// The same TrafficSplit in each version, as converting the v1alpha4 form should give it.
    fn split_in(version: Version) -> Value {
        match version {
            Version::V1alpha1 => {
                let mut s = split(version, [json!("250m"), json!("750m")], None);
                s["metadata"]["annotations"] = json!({
                    PRESERVED_ANNOTATION: json!({"spec": {"matches": beta_matches()}}).to_string()
                });
                s
            }
            Version::V1alpha2 => {
                let mut s = split(version, [json!(250), json!(750)], None);
                s["metadata"]["annotations"] = json!({
                    PRESERVED_ANNOTATION: json!({"spec": {"matches": beta_matches()}}).to_string()
                });
                s
            }
            _ => split(version, [json!(250), json!(750)], Some(beta_matches())),
        }
    }

    fn api(group: &str, v: Version) -> String {
        format!("{group}/{v}")
    }

    #[test]
    fn traffic_split_converts_between_every_pair_of_versions() {
        for from in Version::ALL {
            for to in Version::ALL {
                let got = convert(&split_in(from), &api(SPLIT_GROUP, to)).unwrap();
                assert_eq!(got, split_in(to), "{from} -> {to}");
                let back = convert(&got, &api(SPLIT_GROUP, from)).unwrap();
                assert_eq!(back, split_in(from), "{from} -> {to} -> {from}");
            }
        }
    }

    #[test]
    fn v1alpha1_quantities_become_thousandths_and_keep_their_ratio() {
        let v1 = split(Version::V1alpha1, [json!("500m"), json!("1")], None);
        let hub = convert(&v1, "split.smi-spec.io/v1alpha4").unwrap();
        assert_eq!(hub["spec"]["backends"][0]["weight"], json!(500));
        assert_eq!(hub["spec"]["backends"][1]["weight"], json!(1000));
        assert!(hub["spec"].get("matches").is_none());
        assert!(hub["metadata"].get("annotations").is_none());
        // Whole numbers in v1alpha1 are quantities too: 1 is 1000 thousandths.
        let ints = split(Version::V1alpha1, [json!(1), json!("2k")], None);
        let hub = convert(&ints, "split.smi-spec.io/v1alpha2").unwrap();
        assert_eq!(hub["spec"]["backends"][0]["weight"], json!(1000));
        assert_eq!(hub["spec"]["backends"][1]["weight"], json!(2_000_000));
        // Back down, whole numbers are written in thousandths.
        let down = convert(&hub, "split.smi-spec.io/v1alpha1").unwrap();
        assert_eq!(down["spec"]["backends"][0]["weight"], json!("1000m"));
        assert_eq!(down["spec"]["backends"][1]["weight"], json!("2000000m"));
    }

    #[test]
    fn negative_weights_survive_conversion_for_the_translator_to_report() {
        let v2 = split(Version::V1alpha2, [json!(-10), json!(110)], None);
        let v1 = convert(&v2, "split.smi-spec.io/v1alpha1").unwrap();
        assert_eq!(v1["spec"]["backends"][0]["weight"], json!("-10m"));
        assert_eq!(convert(&v1, "split.smi-spec.io/v1alpha2").unwrap(), v2);
    }

    #[test]
    fn a_malformed_weight_is_an_error_naming_the_backend() {
        let bad = split(Version::V1alpha1, [json!("ten"), json!("1")], None);
        let err = convert(&bad, "split.smi-spec.io/v1alpha4").unwrap_err();
        assert_eq!(
            err.to_string(),
            "TrafficSplit shop/web-beta: spec.backends[0].weight: weight \"ten\" is not a valid quantity"
        );
        let fine = split(Version::V1alpha1, [json!("1.0005"), json!("1")], None);
        let err = convert(&fine, "split.smi-spec.io/v1alpha2").unwrap_err();
        assert!(err.to_string().contains("finer than a thousandth"), "{err}");
        let float = split(Version::V1alpha1, [json!(0.5), json!("1")], None);
        assert!(convert(&float, "split.smi-spec.io/v1alpha2").is_err());
        let huge = split(
            Version::V1alpha1,
            [json!("99999999999999999G"), json!("1")],
            None,
        );
        assert!(convert(&huge, "split.smi-spec.io/v1alpha2").is_err());
        // A string in an integer version cannot be written as a quantity either.
        let text = split(Version::V1alpha2, [json!("ten"), json!(1)], None);
        let err = convert(&text, "split.smi-spec.io/v1alpha1").unwrap_err();
        assert!(err.to_string().contains("not a whole number"), "{err}");
        // Between integer versions weights are not read at all.
        assert!(convert(&text, "split.smi-spec.io/v1alpha4").is_ok());
    }

    #[test]
    fn the_preserved_annotation_never_reaches_the_hub() {
        // Written by hand on a v1alpha4 object: dropped, not applied.
        let mut hub = split(Version::V1alpha4, [json!(1), json!(2)], None);
        hub["metadata"]["annotations"] = json!({
            PRESERVED_ANNOTATION: json!({"spec": {"matches": beta_matches()}}).to_string(),
            "team": "web",
        });
        let got = convert(&hub, "split.smi-spec.io/v1alpha3").unwrap();
        assert_eq!(got["metadata"]["annotations"], json!({"team": "web"}));
        assert!(got["spec"].get("matches").is_none());
        // Other annotations stay beside it on the way down.
        let down = convert(&split_in(Version::V1alpha4), "split.smi-spec.io/v1alpha2").unwrap();
        let mut with_other = down.clone();
        with_other["metadata"]["annotations"]["team"] = json!("web");
        let up = convert(&with_other, "split.smi-spec.io/v1alpha4").unwrap();
        assert_eq!(up["metadata"]["annotations"], json!({"team": "web"}));
        assert_eq!(up["spec"]["matches"], beta_matches());
    }

    #[test]
    fn a_broken_preserved_annotation_is_an_error() {
        let mut v2 = split(Version::V1alpha2, [json!(1), json!(2)], None);
        v2["metadata"]["annotations"] = json!({PRESERVED_ANNOTATION: "{not json"});
        let err = convert(&v2, "split.smi-spec.io/v1alpha4").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("TrafficSplit shop/web-beta: metadata.annotations[lanyard.dev/smi-preserved-fields]: the annotation is not valid JSON"),
            "{err}"
        );
    }

    fn route_group(version: Version) -> Value {
        let matches = json!([
            {"name": "beta-cookie", "headers": [{"cookie": "^(.*;\\s*)?version=beta(;.*)?$"}]},
            {"name": "get-api", "pathRegex": "^/api$", "methods": ["GET"]},
        ]);
        let mut group = json!({
            "apiVersion": format!("specs.smi-spec.io/{version}"),
            "kind": "HTTPRouteGroup",
            "metadata": {"name": "beta-users", "namespace": "shop"},
        });
        if version <= Version::V1alpha2 {
            group["matches"] = matches;
        } else {
            group["spec"] = json!({ "matches": matches });
        }
        group
    }

    #[test]
    fn http_route_group_converts_between_every_pair_of_versions() {
        for from in Version::ALL {
            for to in Version::ALL {
                let got = convert(&route_group(from), &api(SPECS_GROUP, to)).unwrap();
                assert_eq!(got, route_group(to), "{from} -> {to}");
                let back = convert(&got, &api(SPECS_GROUP, from)).unwrap();
                assert_eq!(back, route_group(from), "{from} -> {to} -> {from}");
            }
        }
    }

    fn tcp_route(version: Version) -> Value {
        let mut route = json!({
            "apiVersion": format!("specs.smi-spec.io/{version}"),
            "kind": "TCPRoute",
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {},
        });
        let matches = json!({"name": "pg", "ports": [5432, 5433]});
        if version == Version::V1alpha4 {
            route["spec"]["matches"] = matches;
        } else {
            route["metadata"]["annotations"] = json!({
                PRESERVED_ANNOTATION: json!({"spec": {"matches": matches}}).to_string()
            });
        }
        route
    }

    #[test]
    fn tcp_route_converts_between_every_pair_of_versions() {
        for from in Version::ALL {
            for to in Version::ALL {
                let got = convert(&tcp_route(from), &api(SPECS_GROUP, to)).unwrap();
                assert_eq!(got, tcp_route(to), "{from} -> {to}");
                let back = convert(&got, &api(SPECS_GROUP, from)).unwrap();
                assert_eq!(back, tcp_route(from), "{from} -> {to} -> {from}");
            }
        }
    }

    #[test]
    fn an_old_tcp_route_without_spec_reads_as_v1alpha4() {
        let old = json!({"apiVersion": "specs.smi-spec.io/v1alpha1", "kind": "TCPRoute",
            "metadata": {"name": "db"}});
        let hub = convert(&old, "specs.smi-spec.io/v1alpha4").unwrap();
        assert_eq!(
            hub,
            json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
                "metadata": {"name": "db"}})
        );
    }

    #[test]
    fn unknown_kinds_groups_and_versions_are_errors() {
        let err = |object: Value, to: &str| convert(&object, to).unwrap_err().to_string();
        let split = split_in(Version::V1alpha2);
        assert!(
            err(split.clone(), "split.smi-spec.io/v1beta1")
                .contains("v1beta1 is not split.smi-spec.io/v1alpha1..v1alpha4")
        );
        assert!(
            err(split.clone(), "specs.smi-spec.io/v1alpha4").contains("is not split.smi-spec.io")
        );
        let mut v9 = split.clone();
        v9["apiVersion"] = json!("split.smi-spec.io/v1alpha9");
        assert!(err(v9, "split.smi-spec.io/v1alpha4").contains("not an SMI kind"));
        let target = json!({"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget"});
        assert!(
            err(target, "access.smi-spec.io/v1alpha2")
                .contains("TrafficTarget in access.smi-spec.io/v1alpha3")
        );
        assert_eq!(
            err(json!([]), "split.smi-spec.io/v1alpha4"),
            "the object is not a JSON object"
        );
        assert_eq!(
            err(
                json!({"kind": "TrafficSplit"}),
                "split.smi-spec.io/v1alpha4"
            ),
            "the object has no apiVersion or kind"
        );
    }

    #[test]
    fn quantities_in_thousandths() {
        let q = |v: Value| quantity_to_thousandths(&v);
        assert_eq!(q(json!("500m")), Ok(500));
        assert_eq!(q(json!("1")), Ok(1000));
        assert_eq!(q(json!(" 1.5 ")), Ok(1500));
        assert_eq!(q(json!("-10m")), Ok(-10));
        assert_eq!(q(json!(3)), Ok(3000));
        assert_eq!(q(json!(-3)), Ok(-3000));
        assert_eq!(
            q(json!("-x")),
            Err("weight \"-x\" is not a valid quantity".to_string())
        );
        assert!(q(json!(u64::MAX)).is_err());
        assert!(q(json!(null)).is_err());
        assert!(q(json!(true)).is_err());
    }
}
