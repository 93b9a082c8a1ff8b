//! Request paths: which resource, namespace, name and part a URL names, and the request's
//! Kubernetes verb (for the request counter).

use axum::http::Method;

use crate::api_error::ApiError;
use crate::object::Part;
use crate::resources::{self, ResourceType};

/// A path under `/api/v1` or `/apis/<group>/<version>` naming a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub r: &'static ResourceType,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub part: Part,
}

/// Parses a resource path; `Ok(None)` when the path is not under a served group/version.
pub fn parse(path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() || resources::in_group_version(group, version).next().is_none() {
        return Ok(None);
    }
    let namespaced = rest.len() >= 3
        && rest[0] == "namespaces"
        && resources::find(group, version, rest[2]).is_some_and(|r| r.namespaced);
    let (namespace, rest) = if namespaced {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let not_found = || ApiError::no_route(path);
    let r = resources::find(group, version, rest[0]).ok_or_else(not_found)?;
    let part = match rest.get(2) {
        None => Part::Main,
        Some(&"status") if r.has_status => Part::Status,
        Some(_) => return Err(not_found()),
    };
    if rest.len() > 3 || (namespace.is_some() && !r.namespaced) {
        return Err(not_found());
    }
    Ok(Some(Target {
        r,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        part,
    }))
}

/// The Kubernetes verb of a request on a target.
pub fn verb(method: &Method, target: &Target, watch: bool) -> &'static str {
    match (method.as_str(), target.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaced_cluster_and_status_paths() {
        let t = parse("/api/v1/namespaces/default/services/web/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.r.kind, t.namespace.as_deref(), t.name.as_deref(), t.part),
            ("Service", Some("default"), Some("web"), Part::Status)
        );
        let t = parse("/api/v1/namespaces/default").unwrap().unwrap();
        assert_eq!(
            (t.r.kind, t.namespace.as_deref(), t.name.as_deref()),
            ("Namespace", None, Some("default"))
        );
        let t = parse("/api/v1/namespaces/default/status").unwrap().unwrap();
        assert_eq!((t.r.kind, t.part), ("Namespace", Part::Status));
        let t = parse("/apis/gateway.networking.k8s.io/v1/httproutes")
            .unwrap()
            .unwrap();
        assert_eq!((t.r.kind, t.namespace, t.name), ("HTTPRoute", None, None));
        assert!(
            parse("/apis/gateway.networking.k8s.io/v1/namespaces/a/referencegrants/x/status")
                .is_err()
        );
        assert!(parse("/apis/gateway.networking.k8s.io/v1/nothings").is_err());
        assert_eq!(parse("/apis/unknown.io/v1/things").unwrap(), None);
        assert_eq!(parse("/api/v1").unwrap(), None);
    }
}
