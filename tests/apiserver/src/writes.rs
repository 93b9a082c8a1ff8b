//! The verbs that write: create, update, patch (merge, JSON, strategic and server-side apply),
//! delete and deletecollection, all committed through the store under its lock. With webhook
//! conversion in effect (see `conversion`), create, update and patch work on the request's
//! version and store the storage version; see [`write_converted`].

use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::apply::write_entries;
use crate::handlers::{Request, ok};
use crate::object::{self, Part, meta_mut, prepare_create, prepare_update, same_content};
use crate::patch::{self, PatchType};
use crate::resources::ResourceType;
use crate::store::Outcome;

/// Runs `decide` on the current object as the request's version sees it, commits the outcome,
/// and returns the stored object as served at the request's version.
///
/// Without webhook conversion this is one store write under the lock. With it, the webhook is
/// never called under the lock: the current object is read and (if `convert_current`)
/// converted to the request's version, `decide` runs on it, an object to store is converted to
/// the storage version, and the outcome is committed only if the stored object has not changed
/// meanwhile (else all of it again). A failed conversion stores nothing.
async fn write_converted(
    req: &Request<'_>,
    name: &str,
    convert_current: bool,
    mut decide: impl FnMut(Option<&Value>) -> Result<Outcome, ApiError>,
) -> Result<Value, ApiError> {
    let r = req.target.r;
    let converter = req.converter();
    let Some(storage) = converter.storage_version().map(str::to_string) else {
        let stored = req.shared.store.write(r, req.ns(), name, decide)?;
        return converter.convert_one(stored, r.version).await;
    };
    loop {
        let current = req.shared.store.get(r.storage_key(), req.ns(), name);
        let seen_version = current
            .as_ref()
            .and_then(object::resource_version)
            .map(str::to_string);
        let seen = match current {
            Some(c) if convert_current => Some(converter.convert_one(c, r.version).await?),
            c => c,
        };
        let outcome = match decide(seen.as_ref())? {
            Outcome::Put(new) => Outcome::Put(converter.convert_one(new, &storage).await?),
            other => other,
        };
        let mut stale = false;
        let result = req.shared.store.write(r, req.ns(), name, |now| {
            if now.and_then(object::resource_version) != seen_version.as_deref() {
                stale = true;
                return Err(ApiError::conflict(
                    r.group,
                    r.plural,
                    name,
                    "changed meanwhile",
                ));
            }
            Ok(outcome)
        });
        if !stale {
            return converter.convert_one(result?, r.version).await;
        }
    }
}

pub async fn create(req: &Request<'_>) -> Result<Response, ApiError> {
    let r = req.target.r;
    if r.namespaced && req.target.namespace.is_none() {
        return Err(ApiError::method_not_supported(
            "POST",
            "a collection across namespaces",
        ));
    }
    let mut obj = req.decode_body()?;
    req.check_type(&obj)?;
    req.check_namespace_exists()?;
    if let (Some(path_ns), Some(body_ns)) =
        (&req.target.namespace, object::meta_str(&obj, "namespace"))
        && !body_ns.is_empty()
        && body_ns != path_ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let name = match (object::name(&obj), object::meta_str(&obj, "generateName")) {
        (Some(n), _) => n.to_string(),
        (None, Some(prefix)) if !prefix.is_empty() => {
            let n = format!("{prefix}{}", &object::new_uid()[..5]);
            meta_mut(&mut obj).insert("name".into(), json!(n));
            n
        }
        _ => {
            return Err(ApiError::invalid(
                r.kind,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
    };
    let manager = req.manager();
    let stored = write_converted(req, &name, false, |current| {
        if current.is_some() {
            return Err(ApiError::already_exists(r.group, r.plural, &name));
        }
        let mut new = prepare_create(r, obj.clone(), req.target.namespace.as_deref());
        let entries = req.writer(&manager).record_update(None, &new);
        write_entries(&mut new, entries);
        Ok(req.outcome(Outcome::Put(new), None))
    })
    .await?;
    ok(StatusCode::CREATED, stored)
}

/// The outcome of replacing `current` with the prepared `new` object: a delete when the last
/// finalizer of a deleting object went, nothing when nothing changed.
fn replace_outcome(current: &Value, new: Value) -> Outcome {
    let deleting = object::meta(&new).is_some_and(|m| m.contains_key("deletionTimestamp"));
    let finalizers = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if deleting && !finalizers {
        Outcome::Delete
    } else if same_content(current, &new) {
        Outcome::Unchanged(current.clone())
    } else {
        Outcome::Put(new)
    }
}

fn check_version(
    r: &ResourceType,
    current: &Value,
    desired: &Value,
    name: &str,
) -> Result<(), ApiError> {
    match object::resource_version(desired) {
        Some(v) if Some(v) != object::resource_version(current) => Err(ApiError::conflict(
            r.group,
            r.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
        _ => Ok(()),
    }
}

pub async fn update(req: &Request<'_>) -> Result<Response, ApiError> {
    let r = req.target.r;
    let name = req.target.name.clone().unwrap_or_default();
    let desired = req.decode_body()?;
    req.check_type(&desired)?;
    req.check_name(&desired)?;
    let manager = req.manager();
    let stored = write_converted(req, &name, true, |current| {
        let current = current.ok_or_else(|| ApiError::not_found(r.group, r.plural, &name))?;
        check_version(r, current, &desired, &name)?;
        let mut new = prepare_update(r, req.target.part, current, desired.clone());
        let entries = req.writer(&manager).record_update(Some(current), &new);
        write_entries(&mut new, entries);
        Ok(req.outcome(replace_outcome(current, new), Some(current)))
    })
    .await?;
    ok(StatusCode::OK, stored)
}

pub async fn patch(req: &Request<'_>) -> Result<Response, ApiError> {
    let r = req.target.r;
    let name = req.target.name.clone().unwrap_or_default();
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = PatchType::from_content_type(ct)?;
    let manager = req.manager();
    let force = req.flag("force");
    if kind != PatchType::Apply && force {
        return Err(ApiError::invalid(
            "PatchOptions",
            "",
            "force",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    let applied = if kind == PatchType::Apply {
        if req.q("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                "PatchOptions",
                "",
                "fieldManager",
                "Required value: is required for apply patch",
            ));
        }
        let applied = req.decode_body_as_yaml()?;
        req.check_type(&applied)?;
        if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in an apply configuration",
            ));
        }
        req.check_name(&applied)?;
        Some(applied)
    } else {
        None
    };
    let mut created = false;
    // Checked before taking the store lock (the check reads the store).
    let namespace_missing = req.check_namespace_exists().err();
    let stored = write_converted(req, &name, true, |current| {
        created = false;
        let writer = req.writer(&manager);
        let Some(current) = current else {
            let Some(applied) = applied.as_ref().filter(|_| req.target.part == Part::Main) else {
                return Err(ApiError::not_found(r.group, r.plural, &name));
            };
            if let Some(err) = &namespace_missing {
                return Err(err.clone());
            }
            let (merged, entries) = writer.apply(None, applied, force)?;
            let mut new = prepare_create(r, merged, req.target.namespace.as_deref());
            meta_mut(&mut new).insert("name".into(), json!(name));
            write_entries(&mut new, entries);
            created = true;
            return Ok(req.outcome(Outcome::Put(new), None));
        };
        let (mut new, entries) = match &applied {
            Some(applied) => {
                let (merged, entries) = writer.apply(Some(current), applied, force)?;
                (prepare_update(r, req.target.part, current, merged), entries)
            }
            None => {
                let patched = patch::apply_patch(kind, r, &req.shared.schema, current, &req.body)?;
                check_version(r, current, &patched, &name)?;
                let new = prepare_update(r, req.target.part, current, patched);
                let entries = writer.record_update(Some(current), &new);
                (new, entries)
            }
        };
        write_entries(&mut new, entries);
        Ok(req.outcome(replace_outcome(current, new), Some(current)))
    })
    .await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    ok(code, stored)
}

impl Request<'_> {
    pub(crate) fn decode_body_as_yaml(&self) -> Result<Value, ApiError> {
        let v: Value = serde_yaml::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "the apply configuration must be an object",
            ));
        }
        Ok(v)
    }
}

pub async fn delete(req: &Request<'_>) -> Result<Response, ApiError> {
    let r = req.target.r;
    let name = req.target.name.clone().unwrap_or_default();
    let options: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let dry_run_body = options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    let stored = req.shared.store.write(r, req.ns(), &name, |current| {
        let current = current.ok_or_else(|| ApiError::not_found(r.group, r.plural, &name))?;
        for (field, pointer) in [
            ("uid", "/metadata/uid"),
            ("resourceVersion", "/metadata/resourceVersion"),
        ] {
            if let Some(want) = options
                .pointer(&format!("/preconditions/{field}"))
                .filter(|v| !v.is_null())
                && current.pointer(pointer) != Some(want)
            {
                return Err(ApiError::conflict(
                    r.group,
                    r.plural,
                    &name,
                    &format!("Precondition failed: {field} mismatch"),
                ));
            }
        }
        let has_finalizers = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let outcome = if !has_finalizers {
            Outcome::Delete
        } else if object::meta(current).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            Outcome::Unchanged(current.clone())
        } else {
            let mut new = current.clone();
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            Outcome::Put(new)
        };
        if dry_run_body {
            return Ok(Outcome::Unchanged(current.clone()));
        }
        Ok(req.outcome(outcome, Some(current)))
    })?;
    let deleted = req
        .shared
        .store
        .get(r.storage_key(), req.ns(), &name)
        .is_none();
    if r.kind == "Namespace" && r.group.is_empty() && deleted && !req.dry_run() && !dry_run_body {
        req.shared.store.delete_namespace_contents(&name);
    }
    ok(StatusCode::OK, req.present(stored).await?)
}

pub async fn delete_collection(req: &Request<'_>) -> Result<Response, ApiError> {
    let r = req.target.r;
    let selector = req.selector()?;
    let (items, _) = req
        .shared
        .store
        .list(r.storage_key(), req.target.namespace.as_deref());
    let mut deleted = Vec::new();
    for obj in items.into_iter().filter(|o| selector.matches(o)) {
        let name = object::name(&obj).unwrap_or_default().to_string();
        let ns = object::meta_str(&obj, "namespace")
            .unwrap_or_default()
            .to_string();
        if req.dry_run() {
            deleted.push(obj);
            continue;
        }
        if let Ok(last) = req
            .shared
            .store
            .write(r, &ns, &name, |_| Ok(Outcome::Delete))
        {
            deleted.push(last);
        }
    }
    let deleted = req.present_all(deleted).await?;
    ok(
        StatusCode::OK,
        json!({
            "kind": format!("{}List", r.kind),
            "apiVersion": r.api_version(),
            "metadata": {"resourceVersion": req.shared.store.rv().to_string()},
            "items": deleted,
        }),
    )
}
