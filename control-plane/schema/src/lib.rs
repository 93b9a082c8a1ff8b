//! Validation and defaulting of custom resources as kube-apiserver does them, for file mode.
//!
//! In a cluster the API server checks an object against its CRD's OpenAPI v3 schema and its CEL
//! rules, and fills in the schema's defaults, before anyone reads it. File mode has no API
//! server; this crate does the same with the CRDs Lanyard ships (`crds/`), so a file that a
//! cluster would refuse is refused with the same message, and one it would accept means the
//! same thing in both places.
//!
//! Left out: ObjectMeta validation (names, labels), pruning of unknown fields (file mode reports
//! them instead), and the CEL cost budget.

mod defaults;
mod field;
mod rules;
mod schema;
mod validate;

use std::fmt;
use std::sync::LazyLock;

pub use field::{BadValue, ErrorType, FieldError};
pub use schema::SchemaError;

use field::Path;
use schema::Schema;

/// The CRD files compiled into Lanyard.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "gateway-api-v1.6.1/gateway.networking.k8s.io_httproutes.yaml",
        include_str!("../../../crds/gateway-api-v1.6.1/gateway.networking.k8s.io_httproutes.yaml"),
    ),
    (
        "gateway-api-v1.6.1/gateway.networking.k8s.io_grpcroutes.yaml",
        include_str!("../../../crds/gateway-api-v1.6.1/gateway.networking.k8s.io_grpcroutes.yaml"),
    ),
    (
        "gateway-api-v1.6.1/gateway.networking.k8s.io_referencegrants.yaml",
        include_str!(
            "../../../crds/gateway-api-v1.6.1/gateway.networking.k8s.io_referencegrants.yaml"
        ),
    ),
    (
        "smi/trafficsplits.yaml",
        include_str!("../../../crds/smi/trafficsplits.yaml"),
    ),
    (
        "smi/httproutegroups.yaml",
        include_str!("../../../crds/smi/httproutegroups.yaml"),
    ),
    (
        "smi/tcproutes.yaml",
        include_str!("../../../crds/smi/tcproutes.yaml"),
    ),
];

/// The embedded CRDs, read once.
pub struct Crds {
    versions: Vec<VersionSchema>,
}

/// One served version of one CRD.
pub struct VersionSchema {
    group: String,
    kind: String,
    version: String,
    schema: Schema,
    /// Whether any node has CEL rules (the API server has no CEL validator otherwise).
    has_rules: bool,
}

static CRDS: LazyLock<Result<Crds, String>> = LazyLock::new(|| {
    let mut versions = Vec::new();
    for (file, text) in EMBEDDED {
        read_crd(text, &mut versions).map_err(|e| format!("crds/{file}: {e}"))?;
    }
    Ok(Crds { versions })
});

/// The embedded CRDs.
///
/// The CRDs are part of the binary and checked by this crate's tests; should one ever fail to
/// read, there are no schemas (every lookup is `None`) and [`load_error`] says why.
pub fn crds() -> &'static Crds {
    static EMPTY: Crds = Crds {
        versions: Vec::new(),
    };
    match &*CRDS {
        Ok(crds) => crds,
        Err(_) => &EMPTY,
    }
}

/// Why the embedded CRDs could not be read, if they could not.
pub fn load_error() -> Option<&'static str> {
    CRDS.as_ref().err().map(String::as_str)
}

fn read_crd(text: &str, versions: &mut Vec<VersionSchema>) -> Result<(), SchemaError> {
    let invalid = |message: &str| SchemaError::Invalid {
        path: String::new(),
        message: message.to_string(),
    };
    let crd: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| invalid(&format!("not YAML: {e}")))?;
    let group = crd
        .pointer("/spec/group")
        .and_then(|g| g.as_str())
        .ok_or_else(|| invalid("no spec.group"))?;
    let kind = crd
        .pointer("/spec/names/kind")
        .and_then(|k| k.as_str())
        .ok_or_else(|| invalid("no spec.names.kind"))?;
    let list = crd
        .pointer("/spec/versions")
        .and_then(|v| v.as_array())
        .ok_or_else(|| invalid("no spec.versions"))?;
    for version in list {
        let name = version
            .get("name")
            .and_then(|n| n.as_str())
            .ok_or_else(|| invalid("a version without a name"))?;
        if version.get("served").and_then(|s| s.as_bool()) != Some(true) {
            continue;
        }
        let root = version
            .pointer("/schema/openAPIV3Schema")
            .ok_or_else(|| invalid("a served version without a schema"))?;
        let schema = Schema::parse(root, &format!("{name}.openAPIV3Schema"))?;
        versions.push(VersionSchema {
            group: group.to_string(),
            kind: kind.to_string(),
            version: name.to_string(),
            has_rules: schema.has_rules(),
            schema,
        });
    }
    Ok(())
}

impl Crds {
    /// The schema for apiVersion/kind, if Lanyard ships a CRD for it and serves that version.
    pub fn schema(&self, api_version: &str, kind: &str) -> Option<&VersionSchema> {
        let (group, version) = api_version.split_once('/')?;
        self.versions
            .iter()
            .find(|v| v.group == group && v.version == version && v.kind == kind)
    }
}

impl VersionSchema {
    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Applies defaults, then validates; `Err` lists every problem as the API server words it.
    ///
    /// The order is the API server's: schema errors, then duplicate keys of sets and maps,
    /// then CEL rules. As there, the rules are not run once the schema reported a missing,
    /// unsupported, too long or mistyped value, or too many items; a last error says so
    /// (only for a CRD that has rules).
    // Kubernetes: apiextensions-apiserver pkg/registry/customresource/strategy.go
    // (customResourceStrategy.Validate) and validator.go (customResourceValidator.Validate).
    pub fn default_and_validate(&self, object: &mut serde_json::Value) -> Result<(), Invalid> {
        defaults::prune_nulls(object, Some(&self.schema));
        defaults::apply(object, &self.schema);

        let root = Path::default();
        let mut causes = Vec::new();
        validate::openapi(object, &self.schema, &root, &mut causes);
        validate::list_types(object, &self.schema, &root, &mut causes);
        if !self.has_rules {
            // Kubernetes: cel.NewValidator returns nil for a schema without rules.
        } else if causes.iter().any(FieldError::blocks_cel) {
            causes.push(FieldError::new(
                ErrorType::Invalid,
                "<nil>",
                BadValue::Value(serde_json::Value::Null),
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ));
        } else {
            rules::validate(object, &self.schema, &root, &mut causes);
        }
        if causes.is_empty() {
            return Ok(());
        }
        let name = object
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        Err(Invalid {
            kind: self.kind.clone(),
            group: self.group.clone(),
            name,
            causes,
        })
    }
}

/// The API server's `Invalid` error (HTTP 422) for one object.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct Invalid {
    pub kind: String,
    pub group: String,
    pub name: String,
    pub causes: Vec<FieldError>,
}

impl fmt::Display for Invalid {
    /// `HTTPRoute.gateway.networking.k8s.io "name" is invalid: <errors>`; several errors are
    /// `[a, b]`, repeated ones once.
    // Kubernetes: apimachinery pkg/api/errors/errors.go (NewInvalid) and
    // pkg/util/errors/errors.go (aggregate.Error).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        write!(f, "{kind} {} is invalid", field::go_quote(&self.name))?;
        let mut messages: Vec<String> = Vec::new();
        for cause in &self.causes {
            let message = cause.to_string();
            if !messages.contains(&message) {
                messages.push(message);
            }
        }
        match messages.as_slice() {
            [] => Ok(()),
            [one] => write!(f, ": {one}"),
            many => write!(f, ": [{}]", many.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests;
