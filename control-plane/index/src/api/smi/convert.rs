//! Conversion of SMI objects between versions, as the CRD conversion webhook needs it.
//!
//! Every conversion goes through the hub, v1alpha4 (the storage version): the object is
//! raised to v1alpha4, then lowered to the version asked for. Objects are plain JSON, so
//! fields this module does not know (and `metadata`) pass through untouched.
//!
//! - TrafficSplit weights: v1alpha1 quantities become whole numbers with the same ratio
//!   ([`whole_weights`]: `"500m"` and `"1"` are 5 and 10, `"90"` stays 90); whole numbers
//!   go back to v1alpha1 as canonical quantities (`1000` is `"1k"`). So that a v1alpha1 object
//!   reads back as written (client-side `kubectl apply` compares it), the text and the numbers
//!   it became are kept in [`WEIGHTS_ANNOTATION`] when the canonical text would differ; the
//!   text is given back only while the numbers are unchanged, so a later edit in another
//!   version reads back canonically. A weight that cannot be read fails the conversion with
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

use super::quantity::{Quantity, canonical, same_ratio, whole_weights};
use super::{SPECS_GROUP, SPLIT_GROUP, read_quantity};

/// Annotation holding, as a JSON object shaped like the v1alpha4 object (for example
/// `{"spec":{"matches":[...]}}`), the fields the object's version cannot hold. Present only
/// on objects served in such a version; removed whenever an object is raised.
pub const PRESERVED_ANNOTATION: &str = "lanyard.dev/smi-preserved-fields";

/// Annotation holding, as JSON `{"v1alpha1": [...], "v1alpha4": [...]}`, the v1alpha1 weights
/// as written (`null` where a backend has none) and the whole numbers they stand for in the
/// other versions. Unlike [`PRESERVED_ANNOTATION`] it is stored, since the text must survive
/// in the storage version; it is present only when the canonical text of the numbers differs
/// from what was written, and trusted only while both lists still agree with the object.
pub const WEIGHTS_ANNOTATION: &str = "lanyard.dev/smi-v1alpha1-weights";

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
                raise_weights(cx, object)?;
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
                lower_weights(cx, object)?;
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

/// Each backend's `weight`, `null` when it has none.
fn weights_of(object: &Map<String, Value>) -> Vec<Value> {
    let backends = object
        .get("spec")
        .and_then(|s| s.get("backends"))
        .and_then(Value::as_array);
    backends
        .into_iter()
        .flatten()
        .map(|b| b.get("weight").cloned().unwrap_or(Value::Null))
        .collect()
}

/// Replaces every backend's `weight` that is present and not null with `weights[i]`.
fn set_weights(object: &mut Map<String, Value>, weights: Vec<Value>) {
    let backends = object
        .get_mut("spec")
        .and_then(|s| s.get_mut("backends"))
        .and_then(Value::as_array_mut);
    for (backend, weight) in backends.into_iter().flatten().zip(weights) {
        if let Some(slot) = backend.get_mut("weight").filter(|w| !w.is_null()) {
            *slot = weight;
        }
    }
}

/// The whole numbers that v1alpha1 weights stand for: the magnitudes' [`whole_weights`]
/// with their signs (negative weights are converted too: they are invalid, but the
/// translator is the one that reports them, whatever version they were written in).
fn numbers_of(texts: &[Value]) -> Result<Vec<Option<i64>>, (usize, String)> {
    let mut read = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        read.push(match text {
            Value::Null => None,
            _ => Some(read_quantity(text).map_err(|e| (i, e))?),
        });
    }
    let magnitudes: Vec<Quantity> = read.iter().flatten().map(|q| q.magnitude()).collect();
    let mut whole = whole_weights(&magnitudes).into_iter();
    Ok(read
        .iter()
        .map(|q| {
            let q = q.as_ref()?;
            // At most `MAX_TOTAL`, so it fits.
            let w = i64::try_from(whole.next()?).unwrap_or(i64::MAX);
            Some(if q.negative { -w } else { w })
        })
        .collect())
}

/// Whether two lists of signed weights have the same signs, zeros and ratio.
fn same_numbers(a: &[Option<i64>], b: &[Option<i64>]) -> bool {
    let signs =
        |l: &[Option<i64>]| -> Vec<Option<bool>> { l.iter().map(|w| w.map(|w| w < 0)).collect() };
    let magnitudes =
        |l: &[Option<i64>]| -> Vec<u64> { l.iter().flatten().map(|w| w.unsigned_abs()).collect() };
    signs(a) == signs(b) && same_ratio(&magnitudes(a), &magnitudes(b))
}

fn canonical_texts(numbers: &[Option<i64>]) -> Vec<Value> {
    numbers
        .iter()
        .map(|n| n.map_or(Value::Null, |n| Value::String(canonical(n))))
        .collect()
}

fn numbers_json(numbers: &[Option<i64>]) -> Vec<Value> {
    numbers
        .iter()
        .map(|n| n.map_or(Value::Null, Value::from))
        .collect()
}

/// The texts and numbers in [`WEIGHTS_ANNOTATION`]; a malformed annotation is ignored, as
/// it only spares a rewrite of the text.
fn kept_weights(object: &Map<String, Value>) -> Option<(Vec<Value>, Vec<Option<i64>>)> {
    let text = object
        .get("metadata")?
        .get("annotations")?
        .get(WEIGHTS_ANNOTATION)?
        .as_str()?;
    let kept: Value = serde_json::from_str(text).ok()?;
    let texts = kept.get(Version::V1alpha1.as_str())?.as_array()?.clone();
    let numbers = kept
        .get(Version::V1alpha4.as_str())?
        .as_array()?
        .iter()
        .map(|n| match n {
            Value::Null => Some(None),
            n => n.as_i64().map(Some),
        })
        .collect::<Option<Vec<_>>>()?;
    (texts.len() == numbers.len()).then_some((texts, numbers))
}

/// Writes [`WEIGHTS_ANNOTATION`] when `texts` are not what `numbers` read back as without
/// it, and removes it otherwise.
fn keep_weights(object: &mut Map<String, Value>, texts: &[Value], numbers: &[Option<i64>]) {
    let canonical = canonical_texts(numbers);
    let plain = texts == canonical.as_slice()
        && numbers_of(&canonical).is_ok_and(|n| n.as_slice() == numbers);
    if plain {
        let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(WEIGHTS_ANNOTATION);
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
        return;
    }
    let kept = serde_json::json!({
        Version::V1alpha1.as_str(): texts,
        Version::V1alpha4.as_str(): numbers_json(numbers),
    });
    annotations_mut(object).insert(
        WEIGHTS_ANNOTATION.to_string(),
        Value::String(kept.to_string()),
    );
}

/// v1alpha1 quantities to whole numbers, the ones kept in the annotation when they are for
/// these very texts (a v1alpha4 `[90, 10]` read at v1alpha1 and written back stays 90/10).
fn raise_weights(cx: &Context, object: &mut Map<String, Value>) -> Result<(), Error> {
    let texts = weights_of(object);
    let mut numbers = numbers_of(&texts)
        .map_err(|(i, message)| cx.error(format!("spec.backends[{i}].weight"), message))?;
    if let Some((kept_texts, kept_numbers)) = kept_weights(object)
        && kept_texts == texts
        && same_numbers(&kept_numbers, &numbers)
    {
        numbers = kept_numbers;
    }
    keep_weights(object, &texts, &numbers);
    set_weights(object, numbers_json(&numbers));
    Ok(())
}

/// Whole numbers to v1alpha1 quantities: the text kept in the annotation when it was
/// written for these very numbers, else their canonical form.
fn lower_weights(cx: &Context, object: &mut Map<String, Value>) -> Result<(), Error> {
    let mut numbers = Vec::new();
    for (i, weight) in weights_of(object).iter().enumerate() {
        numbers.push(match weight {
            Value::Null => None,
            w => Some(w.as_i64().ok_or_else(|| {
                cx.error(
                    format!("spec.backends[{i}].weight"),
                    format!("weight {w} is not a whole number"),
                )
            })?),
        });
    }
    let texts = match kept_weights(object) {
        Some((kept_texts, kept_numbers))
            if kept_numbers == numbers
                && numbers_of(&kept_texts).is_ok_and(|n| same_numbers(&n, &numbers)) =>
        {
            kept_texts
        }
        _ => canonical_texts(&numbers),
    };
    keep_weights(object, &texts, &numbers);
    set_weights(object, texts);
    Ok(())
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
                let mut s = split(version, [json!("1"), json!("3k")], None);
                s["metadata"]["annotations"] = json!({
                    PRESERVED_ANNOTATION: json!({"spec": {"matches": beta_matches()}}).to_string()
                });
                s
            }
            Version::V1alpha2 => {
                let mut s = split(version, [json!(1), json!(3000)], None);
                s["metadata"]["annotations"] = json!({
                    PRESERVED_ANNOTATION: json!({"spec": {"matches": beta_matches()}}).to_string()
                });
                s
            }
            _ => split(version, [json!(1), json!(3000)], Some(beta_matches())),
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

    fn weights(object: &Value) -> Vec<Value> {
        weights_of(object.as_object().unwrap())
    }

    fn kept(object: &Value) -> Option<&Value> {
        object["metadata"]
            .get("annotations")
            .and_then(|a| a.get(WEIGHTS_ANNOTATION))
    }

    #[test]
    fn v1alpha1_quantities_become_whole_numbers_with_their_ratio() {
        let v1 = split(Version::V1alpha1, [json!("500m"), json!("1")], None);
        let hub = convert(&v1, "split.smi-spec.io/v1alpha4").unwrap();
        assert_eq!(weights(&hub), vec![json!(5), json!(10)]);
        assert!(hub["spec"].get("matches").is_none());
        // Whole numbers in v1alpha1 are quantities too, and every suffix reads.
        let ints = split(Version::V1alpha1, [json!(1), json!("2k")], None);
        let hub = convert(&ints, "split.smi-spec.io/v1alpha2").unwrap();
        assert_eq!(weights(&hub), vec![json!(1), json!(2000)]);
        for (texts, numbers) in [
            ([json!("1e3"), json!("1")], [json!(1000), json!(1)]),
            ([json!("2T"), json!("1T")], [json!(2), json!(1)]),
            ([json!("1Ti"), json!("1Gi")], [json!(1024), json!(1)]),
            ([json!("1500u"), json!("1m")], [json!(15), json!(10)]),
            ([json!("+1.5"), json!(".5")], [json!(15), json!(5)]),
        ] {
            let v1 = split(Version::V1alpha1, texts.clone(), None);
            let hub = convert(&v1, "split.smi-spec.io/v1alpha4").unwrap();
            assert_eq!(weights(&hub), numbers.to_vec(), "{texts:?}");
        }
    }

    #[test]
    fn v1alpha1_weights_read_back_as_written() {
        for texts in [
            [json!("1"), json!("1")],
            [json!(1), json!("500m")],
            [json!("1e3"), json!("2T")],
            [json!("1Ti"), json!("1500u")],
            [json!("0.5"), json!("0")],
            [json!("-10m"), json!("1")],
        ] {
            let v1 = split(Version::V1alpha1, texts.clone(), None);
            for via in [Version::V1alpha2, Version::V1alpha3, Version::V1alpha4] {
                let there = convert(&v1, &api(SPLIT_GROUP, via)).unwrap();
                let hub = convert(&there, "split.smi-spec.io/v1alpha4").unwrap();
                let back = convert(&hub, "split.smi-spec.io/v1alpha1").unwrap();
                assert_eq!(weights(&back), texts.to_vec(), "{texts:?} via {via}");
                let mut without = back.clone();
                if let Some(a) = without["metadata"]
                    .get_mut("annotations")
                    .and_then(Value::as_object_mut)
                {
                    a.remove(WEIGHTS_ANNOTATION);
                    if a.is_empty() {
                        without["metadata"]
                            .as_object_mut()
                            .unwrap()
                            .remove("annotations");
                    }
                }
                assert_eq!(without, v1, "{texts:?} via {via}");
            }
        }
        // Canonical text needs no annotation.
        let plain = split(Version::V1alpha1, [json!("1k"), json!("3")], None);
        let hub = convert(&plain, "split.smi-spec.io/v1alpha4").unwrap();
        assert_eq!(kept(&hub), None);
        assert_eq!(convert(&hub, "split.smi-spec.io/v1alpha1").unwrap(), plain);
    }

    #[test]
    fn an_edit_in_another_version_reads_back_canonically() {
        let v1 = split(Version::V1alpha1, [json!("500m"), json!("1")], None);
        let mut hub = convert(&v1, "split.smi-spec.io/v1alpha4").unwrap();
        assert!(kept(&hub).is_some());
        hub["spec"]["backends"][1]["weight"] = json!(1500);
        let down = convert(&hub, "split.smi-spec.io/v1alpha1").unwrap();
        assert_eq!(weights(&down), vec![json!("5"), json!("1500")]);
        assert_eq!(kept(&down), None, "the stale text is dropped");
        // Whole numbers read at v1alpha1 and written back are the same numbers.
        let hub = split(Version::V1alpha4, [json!(90), json!(10)], None);
        let down = convert(&hub, "split.smi-spec.io/v1alpha1").unwrap();
        assert_eq!(weights(&down), vec![json!("90"), json!("10")]);
        assert_eq!(kept(&down), None);
        assert_eq!(convert(&down, "split.smi-spec.io/v1alpha4").unwrap(), hub);
        // Numbers whose canonical text would read back in another ratio unit keep their own.
        let big = split(
            Version::V1alpha4,
            [json!(4_000_000_000u64), json!(2_000_000_000u64)],
            None,
        );
        let down = convert(&big, "split.smi-spec.io/v1alpha1").unwrap();
        assert_eq!(weights(&down), vec![json!("4G"), json!("2G")]);
        assert!(kept(&down).is_some());
        let up = convert(&down, "split.smi-spec.io/v1alpha4").unwrap();
        assert_eq!(weights(&up), weights(&big));
        // The same text with numbers of another ratio (a hand-edited annotation) is not
        // trusted either way.
        let mut forged = v1.clone();
        forged["metadata"]["annotations"] = json!({
            WEIGHTS_ANNOTATION: json!({"v1alpha1": ["500m", "1"], "v1alpha4": [1, 1]}).to_string()
        });
        let hub = convert(&forged, "split.smi-spec.io/v1alpha4").unwrap();
        assert_eq!(weights(&hub), vec![json!(5), json!(10)]);
        let mut forged = split(Version::V1alpha4, [json!(1), json!(1)], None);
        forged["metadata"]["annotations"] = json!({
            WEIGHTS_ANNOTATION: json!({"v1alpha1": ["500m", "1"], "v1alpha4": [1, 1]}).to_string()
        });
        let down = convert(&forged, "split.smi-spec.io/v1alpha1").unwrap();
        assert_eq!(weights(&down), vec![json!("1"), json!("1")]);
    }

    #[test]
    fn negative_weights_survive_conversion_for_the_translator_to_report() {
        let v2 = split(Version::V1alpha2, [json!(-10), json!(110)], None);
        let v1 = convert(&v2, "split.smi-spec.io/v1alpha1").unwrap();
        assert_eq!(v1["spec"]["backends"][0]["weight"], json!("-10"));
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
        for weight in [json!("1e1.5"), json!("1K"), json!(true), json!("")] {
            let bad = split(Version::V1alpha1, [json!("1"), weight.clone()], None);
            let err = convert(&bad, "split.smi-spec.io/v1alpha2").unwrap_err();
            assert!(
                err.to_string().contains("spec.backends[1].weight"),
                "{weight}: {err}"
            );
        }
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
}
