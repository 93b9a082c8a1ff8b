//! A resource request (its target, query, headers and body), dispatch to its verb, and the
//! verbs that read: get, list (also as kubectl's Table) and watch. Writes are in `writes`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::Shared;
use crate::api_error::{ApiError, json_response};
use crate::apply::Writer;
use crate::conversion::Converter;
use crate::object::{self, Part};
use crate::resources;
use crate::routes::Target;
use crate::selectors::Selector;
use crate::store::Outcome;
use crate::{table, watch, writes};

/// One request on a resource path, with what the handlers need from it.
pub struct Request<'a> {
    pub shared: Arc<Shared>,
    pub method: &'a Method,
    pub target: Target,
    pub query: &'a HashMap<String, String>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

impl Request<'_> {
    pub(crate) fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    pub(crate) fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    pub(crate) fn ns(&self) -> &str {
        self.target.namespace.as_deref().unwrap_or("")
    }

    pub(crate) fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }

    /// The field manager: `fieldManager`, else the User-Agent's product name.
    pub(crate) fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        let ua = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        ua.split('/').next().unwrap_or("unknown").to_string()
    }

    pub(crate) fn selector(&self) -> Result<Selector, ApiError> {
        Selector::parse(self.q("labelSelector"), self.q("fieldSelector"))
    }

    pub(crate) fn writer<'s>(&'s self, manager: &'s str) -> Writer<'s> {
        Writer {
            r: self.target.r,
            schema: &self.shared.schema,
            part: self.target.part,
            manager,
        }
    }

    /// How bodies move between versions for this request's kind.
    pub(crate) fn converter(&self) -> Converter<'_> {
        Converter::new(&self.shared, self.target.r)
    }

    /// The object as served at this request's version (converted by the CRD's webhook when one
    /// is in effect, else with `apiVersion` rewritten).
    pub(crate) async fn present(&self, obj: Value) -> Result<Value, ApiError> {
        self.converter()
            .convert_one(obj, self.target.r.version)
            .await
    }

    /// Objects as served at this request's version, converted in one review.
    pub(crate) async fn present_all(&self, objects: Vec<Value>) -> Result<Vec<Value>, ApiError> {
        self.converter()
            .convert(objects, self.target.r.version)
            .await
    }

    pub(crate) fn decode_body(&self) -> Result<Value, ApiError> {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        let v: Value = if ct.contains("yaml") {
            serde_yaml::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        } else if ct.contains("json") {
            serde_json::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
        } else {
            return Err(ApiError::unsupported_media_type(ct));
        };
        if !v.is_object() {
            return Err(ApiError::bad_request("the request body must be an object"));
        }
        Ok(v)
    }

    /// Refuses a body whose `apiVersion`/`kind` are set and name another resource.
    pub(crate) fn check_type(&self, obj: &Value) -> Result<(), ApiError> {
        let r = self.target.r;
        let (group, _) = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(resources::split_api_version)
            .unwrap_or((r.group, r.version));
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(r.kind);
        if group != r.group || kind != r.kind {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({}) or kind ({kind}) is not {}",
                obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                r.api_version(),
                r.kind
            )));
        }
        Ok(())
    }

    pub(crate) fn check_name(&self, obj: &Value) -> Result<(), ApiError> {
        let url = self.target.name.as_deref().unwrap_or("");
        match object::name(obj) {
            Some(n) if n != url => Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({url})"
            ))),
            _ => Ok(()),
        }
    }

    pub(crate) fn check_namespace_exists(&self) -> Result<(), ApiError> {
        let Some(ns) = &self.target.namespace else {
            return Ok(());
        };
        let key = resources::find("", "v1", "namespaces")
            .expect("namespaces are served")
            .storage_key();
        match self.shared.store.get(key, "", ns) {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found("", "namespaces", ns)),
        }
    }

    /// Commits `outcome` unless this is a dry run.
    pub(crate) fn outcome(&self, outcome: Outcome, current: Option<&Value>) -> Outcome {
        match (self.dry_run(), outcome) {
            (true, Outcome::Put(v)) => Outcome::Unchanged(v),
            (true, Outcome::Delete) => Outcome::Unchanged(current.cloned().unwrap_or(Value::Null)),
            (_, o) => o,
        }
    }
}

/// Dispatches a resource request to its verb.
pub async fn handle(req: Request<'_>) -> Result<Response, ApiError> {
    let has_name = req.target.name.is_some();
    let watch = req.flag("watch");
    match (req.method.as_str(), has_name) {
        ("GET", _) if watch => serve_watch(&req),
        ("GET", true) => get(&req).await,
        ("GET", false) => list(&req).await,
        ("POST", false) if req.target.part == Part::Main => writes::create(&req).await,
        ("PUT", true) => writes::update(&req).await,
        ("PATCH", true) => writes::patch(&req).await,
        ("DELETE", true) if req.target.part == Part::Main => writes::delete(&req).await,
        ("DELETE", false) => writes::delete_collection(&req).await,
        (m, _) => Err(ApiError::method_not_supported(m, req.target.r.plural)),
    }
}

pub fn ok(code: StatusCode, body: Value) -> Result<Response, ApiError> {
    Ok(json_response(code, &body))
}

async fn get(req: &Request<'_>) -> Result<Response, ApiError> {
    let r = req.target.r;
    let name = req.target.name.as_deref().unwrap_or("");
    let obj = req
        .shared
        .store
        .get(r.storage_key(), req.ns(), name)
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
    let obj = req.present(obj).await?;
    if table::wanted(req.headers) {
        return ok(
            StatusCode::OK,
            table::build(r, &[obj], req.shared.store.rv()),
        );
    }
    ok(StatusCode::OK, obj)
}

async fn list(req: &Request<'_>) -> Result<Response, ApiError> {
    let r = req.target.r;
    let selector = req.selector()?;
    if req.q("resourceVersionMatch") == Some("Exact")
        && let Some(Some(rv)) = req.q("resourceVersion").map(|v| v.parse::<u64>().ok())
    {
        let oldest = req.shared.store.oldest_resumable();
        if rv < oldest {
            return Err(ApiError::gone(rv, oldest));
        }
    }
    let (items, rv) = req
        .shared
        .store
        .list(r.storage_key(), req.target.namespace.as_deref());
    let items: Vec<Value> = items.into_iter().filter(|o| selector.matches(o)).collect();
    let items = req.present_all(items).await?;
    if table::wanted(req.headers) {
        return ok(StatusCode::OK, table::build(r, &items, rv));
    }
    ok(
        StatusCode::OK,
        json!({
            "kind": format!("{}List", r.kind),
            "apiVersion": r.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }),
    )
}

fn serve_watch(req: &Request) -> Result<Response, ApiError> {
    let mut selector = req.selector()?;
    if let Some(name) = &req.target.name {
        selector = selector.with_name(name);
    }
    let initial_events = req.flag("sendInitialEvents");
    if initial_events && !req.flag("allowWatchBookmarks") {
        return Err(ApiError::invalid(
            "ListOptions",
            "",
            "sendInitialEvents",
            "requires allowWatchBookmarks=true",
        ));
    }
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs);
    Ok(watch::serve(
        req.shared.clone(),
        watch::WatchRequest {
            r: req.target.r,
            namespace: req.target.namespace.clone(),
            selector,
            from: watch::parse_from(req.q("resourceVersion"))?,
            initial_events,
            bookmarks: req.flag("allowWatchBookmarks"),
            timeout,
        },
    ))
}
