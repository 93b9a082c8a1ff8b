//! What a stored CustomResourceDefinition changes for a kind the table serves: which versions
//! answer (`served: true`), and, with `spec.conversion.strategy: Webhook`, conversion of bodies
//! between versions through the CRD's conversion webhook, as a real kube-apiserver does it.
//!
//! The CRD is read from the store on every use (by name `<plural>.<group>`), so creating,
//! changing or deleting it takes effect on the next request. Without a CRD, or with strategy
//! `None`, every version sees the same stored body with only `apiVersion` rewritten.
//!
//! With a webhook: writes store the body converted to the CRD's storage version; reads, watch
//! events and write answers are converted to the version of the request. Objects already at the
//! wanted version are not sent; a list goes in one `ConversionReview`. The answer is checked as
//! kube-apiserver checks it (uid, `result.status`, count, apiVersion, kind, name, namespace,
//! uid of each object), and only labels and annotations are taken from the converted metadata.
//! Failures are 500 `InternalError` with `conversion webhook for <gvk> failed: <why>`.

use base64::Engine;
use serde_json::{Value, json};

use crate::Shared;
use crate::api_error::ApiError;
use crate::object;
use crate::resources::{self, ResourceType};
use crate::webhook_client::{self, Endpoint};

/// A CRD's `spec.conversion.webhook`, as far as the fixture uses it.
#[derive(Debug, Clone)]
struct WebhookSpec {
    client_config: Value,
    review_versions: Vec<String>,
}

/// What a stored CRD says about one of the table's (group, plural).
#[derive(Debug, Clone)]
struct CrdView {
    served: Vec<String>,
    storage: Option<String>,
    webhook: Option<WebhookSpec>,
}

fn crd_for(shared: &Shared, r: &ResourceType) -> Option<CrdView> {
    if !r.is_custom() {
        return None;
    }
    let crds = resources::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")?;
    let crd = shared
        .store
        .get(crds.storage_key(), "", &format!("{}.{}", r.plural, r.group))?;
    let spec = crd.get("spec")?;
    let str_at = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    if str_at(spec, "/group").as_deref() != Some(r.group)
        || str_at(spec, "/names/plural").as_deref() != Some(r.plural)
    {
        return None;
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let named = |flag: &str| -> Vec<String> {
        versions
            .iter()
            .filter(|v| v.get(flag).and_then(Value::as_bool) == Some(true))
            .filter_map(|v| str_at(v, "/name"))
            .collect()
    };
    let served = named("served");
    let storage = named("storage").into_iter().next();
    let webhook = match str_at(spec, "/conversion/strategy").as_deref() {
        Some("Webhook") => Some(WebhookSpec {
            client_config: spec
                .pointer("/conversion/webhook/clientConfig")
                .cloned()
                .unwrap_or(Value::Null),
            review_versions: spec
                .pointer("/conversion/webhook/conversionReviewVersions")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }),
        _ => None,
    };
    Some(CrdView {
        served,
        storage,
        webhook,
    })
}

/// Whether `r` answers: always without a CRD for its group/plural; with one, only when the CRD
/// marks its version `served: true` (a real server 404s the others); never while a test has
/// unserved it ([`crate::Running::unserve_version`]).
pub fn served(shared: &Shared, r: &ResourceType) -> bool {
    if shared.faults.unserved(r) {
        return false;
    }
    match crd_for(shared, r) {
        None => true,
        Some(crd) => crd.served.iter().any(|v| v == r.version),
    }
}

/// How bodies of one kind move between versions right now.
pub struct Converter<'a> {
    shared: &'a Shared,
    r: &'a ResourceType,
    /// The webhook and the storage version, when webhook conversion is in effect.
    webhook: Option<(WebhookSpec, String)>,
}

impl<'a> Converter<'a> {
    pub fn new(shared: &'a Shared, r: &'a ResourceType) -> Self {
        let webhook = crd_for(shared, r).and_then(|crd| {
            let storage = crd.storage.unwrap_or_else(|| r.version.to_string());
            crd.webhook.map(|w| (w, storage))
        });
        Converter { shared, r, webhook }
    }

    /// The version writes store, when webhook conversion is in effect.
    pub fn storage_version(&self) -> Option<&str> {
        self.webhook.as_ref().map(|(_, s)| s.as_str())
    }

    fn api_version(&self, version: &str) -> String {
        if self.r.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.r.group)
        }
    }

    /// `objects` at `version`: converted by the webhook when one is in effect (objects already
    /// at that version are not sent), else with `apiVersion` rewritten.
    pub async fn convert(
        &self,
        objects: Vec<Value>,
        version: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let desired = self.api_version(version);
        let Some((webhook, _)) = &self.webhook else {
            return Ok(objects
                .into_iter()
                .map(|mut o| {
                    o["apiVersion"] = json!(desired);
                    o
                })
                .collect());
        };
        let pending: Vec<usize> = (0..objects.len())
            .filter(|&i| objects[i].get("apiVersion").and_then(Value::as_str) != Some(&desired))
            .collect();
        let Some(&first) = pending.first() else {
            return Ok(objects);
        };
        let gvk = format!(
            "{}, Kind={}",
            objects[first]
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or(""),
            self.r.kind
        );
        let sent: Vec<Value> = pending.iter().map(|&i| objects[i].clone()).collect();
        let converted = self
            .call(webhook, &desired, sent)
            .await
            .map_err(|why| failed(&gvk, &why))?;
        if converted.len() != pending.len() {
            return Err(ApiError::new(
                500,
                "InternalError",
                format!(
                    "conversion webhook for {gvk} returned {} objects, expected {}",
                    converted.len(),
                    pending.len()
                ),
            ));
        }
        let mut out = objects;
        for (n, (&i, new)) in pending.iter().zip(converted).enumerate() {
            out[i] = restore(&out[i], new, &desired).map_err(|why| {
                let at = if pending.len() > 1 {
                    format!(" at index {n}")
                } else {
                    String::new()
                };
                failed(&gvk, &format!("invalid converted object{at}: {why}"))
            })?;
        }
        Ok(out)
    }

    /// One object at `version` (see [`Converter::convert`]).
    pub async fn convert_one(&self, object: Value, version: &str) -> Result<Value, ApiError> {
        let mut out = self.convert(vec![object], version).await?;
        Ok(out.pop().unwrap_or(Value::Null))
    }

    /// Sends one ConversionReview and returns `response.convertedObjects`.
    async fn call(
        &self,
        webhook: &WebhookSpec,
        desired: &str,
        objects: Vec<Value>,
    ) -> Result<Vec<Value>, String> {
        if !webhook.review_versions.iter().any(|v| v == "v1") {
            return Err(format!(
                "none of the conversionReviewVersions {:?} is supported (only v1 is)",
                webhook.review_versions
            ));
        }
        let (endpoint, ca) = self.endpoint(&webhook.client_config)?;
        let uid = object::new_uid();
        let review = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "ConversionReview",
            "request": {"uid": uid, "desiredAPIVersion": desired, "objects": objects},
        });
        let body = serde_json::to_vec(&review).map_err(|e| e.to_string())?;
        let timeout = self.shared.conversion_timeout;
        let answer = webhook_client::post_json(&endpoint, &ca, body, timeout).await?;
        let answer: Value = serde_json::from_slice(&answer)
            .map_err(|e| format!("error decoding the webhook's answer: {e}"))?;
        if answer.get("apiVersion").and_then(Value::as_str) != Some("apiextensions.k8s.io/v1")
            || answer.get("kind").and_then(Value::as_str) != Some("ConversionReview")
        {
            return Err(format!(
                "expected webhook response of apiextensions.k8s.io/v1, Kind=ConversionReview, got {}, Kind={}",
                answer
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                answer.get("kind").and_then(Value::as_str).unwrap_or("")
            ));
        }
        let Some(response) = answer.get("response").filter(|r| r.is_object()) else {
            return Err("no response provided".into());
        };
        let got = response.get("uid").and_then(Value::as_str).unwrap_or("");
        if got != uid {
            return Err(format!("expected response.uid={uid:?}, got {got:?}"));
        }
        let status = response
            .pointer("/result/status")
            .and_then(Value::as_str)
            .unwrap_or("");
        if status != "Success" {
            return Err(
                match response.pointer("/result/message").and_then(Value::as_str) {
                    Some(m) if !m.is_empty() => m.to_string(),
                    _ => format!("response.result.status was '{status}', not 'Success'"),
                },
            );
        }
        match response.get("convertedObjects") {
            Some(Value::Array(objects)) => Ok(objects.clone()),
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(_) => Err("response.convertedObjects is not a list".into()),
        }
    }

    /// Where the clientConfig points, and the CA bundle (PEM) to verify it with.
    fn endpoint(&self, client: &Value) -> Result<(Endpoint, Vec<u8>), String> {
        let ca = match client.get("caBundle").and_then(Value::as_str) {
            Some(b) if !b.is_empty() => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| format!("invalid caBundle: {e}"))?,
            _ => Vec::new(),
        };
        let timeout = format!("timeout={}s", self.shared.conversion_timeout.as_secs());
        let with_timeout = |path: &str| {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}{timeout}")
        };
        if let Some(url) = client.get("url").and_then(Value::as_str) {
            let uri: axum::http::Uri = url
                .parse()
                .map_err(|e| format!("invalid webhook url {url:?}: {e}"))?;
            if uri.scheme_str() != Some("https") {
                return Err(format!("webhook url {url:?} must use https"));
            }
            let host = uri.host().unwrap_or("").to_string();
            let port = uri.port_u16().unwrap_or(443);
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let authority = format!("{host}:{port}");
            return Ok((
                Endpoint {
                    connect: authority.clone(),
                    server_name: host,
                    authority,
                    path_and_query: with_timeout(path),
                },
                ca,
            ));
        }
        let Some(service) = client.get("service").filter(|s| s.is_object()) else {
            return Err(
                "the CRD's conversion webhook clientConfig names neither url nor service".into(),
            );
        };
        let field = |f: &str| service.get(f).and_then(Value::as_str).unwrap_or("");
        let (namespace, name) = (field("namespace"), field("name"));
        let port = service
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(443);
        let path = match field("path") {
            "" => "/",
            p => p,
        };
        let host = format!("{name}.{namespace}.svc");
        let authority = format!("{host}:{port}");
        let services = self
            .shared
            .webhook_services
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let addr = services
            .get(&format!("{namespace}/{name}:{port}"))
            .or_else(|| services.get(&format!("{namespace}/{name}")))
            .ok_or_else(|| {
                format!(
                    "Post \"https://{authority}{}\": service \"{name}\" in namespace \"{namespace}\" has no address in Config::webhook_services",
                    with_timeout(path)
                )
            })?;
        Ok((
            Endpoint {
                connect: addr.to_string(),
                server_name: host,
                authority,
                path_and_query: with_timeout(path),
            },
            ca,
        ))
    }
}

fn failed(gvk: &str, why: &str) -> ApiError {
    ApiError::new(
        500,
        "InternalError",
        format!("conversion webhook for {gvk} failed: {why}"),
    )
}

/// Checks a converted object against the one sent and keeps the sent metadata except labels
/// and annotations, as kube-apiserver does.
fn restore(original: &Value, converted: Value, desired: &str) -> Result<Value, String> {
    let got = converted
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if got != desired {
        return Err(format!("expected apiVersion {desired:?}, got {got:?}"));
    }
    let text = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    for (what, pointer) in [
        ("kind", "/kind"),
        ("name", "/metadata/name"),
        ("namespace", "/metadata/namespace"),
        ("UID", "/metadata/uid"),
    ] {
        let (e, a) = (text(original, pointer), text(&converted, pointer));
        if e != a {
            return Err(format!("must have the same {what}: {e} != {a}"));
        }
    }
    let mut out = converted;
    if !out.is_object() {
        return Err("not an object".into());
    }
    let mut meta = object::meta(original).cloned().unwrap_or_default();
    for f in ["labels", "annotations"] {
        match object::meta(&out).and_then(|m| m.get(f)) {
            Some(v) if !v.is_null() => meta.insert(f.to_string(), v.clone()),
            _ => meta.remove(f),
        };
    }
    out["metadata"] = Value::Object(meta);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_keeps_server_metadata_and_takes_labels() {
        let original = json!({"apiVersion": "g/v1", "kind": "K",
            "metadata": {"name": "a", "namespace": "n", "uid": "u", "resourceVersion": "7",
                         "labels": {"x": "1"}},
            "spec": {"old": 1}});
        let converted = json!({"apiVersion": "g/v2", "kind": "K",
            "metadata": {"name": "a", "namespace": "n", "uid": "u", "resourceVersion": "9",
                         "labels": {"y": "2"}},
            "spec": {"new": 1}});
        let out = restore(&original, converted, "g/v2").unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "7");
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(out["spec"], json!({"new": 1}));
        let renamed = json!({"apiVersion": "g/v2", "kind": "K", "metadata": {"name": "b"}});
        assert!(
            restore(&original, renamed, "g/v2")
                .unwrap_err()
                .contains("same name")
        );
        let wrong = json!({"apiVersion": "g/v1", "kind": "K", "metadata": {}});
        assert!(restore(&original, wrong, "g/v2").is_err());
    }
}
