//! CRD webhook conversion: a CustomResourceDefinition for trafficsplits.split.smi-spec.io with
//! `conversion.strategy: Webhook` makes the fixture call a (test) HTTPS conversion webhook on
//! writes (to the storage version) and reads (to the request's version), as kube-apiserver does.
//!
//! The test webhook renames one field between versions: `spec.legacyBackends` at v1alpha1,
//! `spec.backends` at every other version, so each version's form is visible.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use lanyard_test_apiserver::{Config, Running};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use support::{Kubectl, WAIT, client, start_with};

const GROUP: &str = "split.smi-spec.io";
const CRD_NAME: &str = "trafficsplits.split.smi-spec.io";
const SERVICE_NS: &str = "lanyard-system";
const SERVICE_NAME: &str = "lanyard-webhook";

// ---------------------------------------------------------------------------------------------
// A small HTTPS conversion webhook.

/// What the test webhook answers.
#[derive(Clone, Debug)]
enum Mode {
    /// Convert by renaming `legacyBackends` (v1alpha1) <-> `backends` (other versions).
    Convert,
    /// Answer `result.status: Failure` with this message.
    Fail(String),
}

/// A CA and a serving certificate it signed for `lanyard-webhook.lanyard-system.svc` and
/// `127.0.0.1`.
struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

fn pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test webhook CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_params = rcgen::CertificateParams::new(vec![
        format!("{SERVICE_NAME}.{SERVICE_NS}.svc"),
        "127.0.0.1".to_string(),
    ])
    .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![leaf.der().clone()],
        key_der: leaf_key.serialize_der(),
    }
}

struct Webhook {
    addr: SocketAddr,
    ca_pem: String,
    mode: Arc<Mutex<Mode>>,
    /// Every ConversionReview request received.
    reviews: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    async fn start() -> Webhook {
        let pki = pki();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                pki.chain,
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der)),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Convert));
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let (m, r) = (mode.clone(), reviews.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, m, r) = (acceptor.clone(), m.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req| serve(m.clone(), r.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Webhook {
            addr,
            ca_pem: pki.ca_pem,
            mode,
            reviews,
            task,
        }
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn reviews(&self) -> Vec<Value> {
        self.reviews.lock().unwrap().clone()
    }

    fn ca_bundle(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    /// Stops listening: later calls are refused.
    async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mode: Arc<Mutex<Mode>>,
    reviews: Arc<Mutex<Vec<Value>>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let review: Value = body
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    assert_eq!(path, "/convert", "the webhook is called on its path");
    reviews.lock().unwrap().push(review["request"].clone());
    let uid = review["request"]["uid"].clone();
    let desired = review["request"]["desiredAPIVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mode = mode.lock().unwrap().clone();
    let response = match mode {
        Mode::Convert => {
            let objects: Vec<Value> = review["request"]["objects"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|o| convert(o, &desired))
                .collect();
            json!({"uid": uid, "result": {"status": "Success"}, "convertedObjects": objects})
        }
        Mode::Fail(message) => {
            json!({"uid": uid, "result": {"status": "Failure", "message": message}})
        }
    };
    let answer = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "response": response,
    });
    Ok(hyper::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap())
}

/// The test webhook's conversion rule.
fn convert(mut object: Value, desired: &str) -> Value {
    let to_legacy = desired.ends_with("/v1alpha1");
    let (from, to) = if to_legacy {
        ("backends", "legacyBackends")
    } else {
        ("legacyBackends", "backends")
    };
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(v) = spec.remove(from)
    {
        spec.insert(to.to_string(), v);
    }
    object["apiVersion"] = json!(desired);
    object
}

// ---------------------------------------------------------------------------------------------
// Fixture helpers.

fn crd(client_config: Value) -> Value {
    let version = |name: &str, served: bool, storage: bool| {
        json!({"name": name, "served": served, "storage": storage,
               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": "TrafficSplit", "listKind": "TrafficSplitList",
                      "plural": "trafficsplits", "singular": "trafficsplit", "shortNames": ["ts"]},
            "versions": [
                version("v1alpha1", true, false),
                version("v1alpha2", true, false),
                version("v1alpha3", false, false),
                version("v1alpha4", true, true),
            ],
            "conversion": {
                "strategy": "Webhook",
                "webhook": {"clientConfig": client_config, "conversionReviewVersions": ["v1"]},
            },
        },
    })
}

fn service_config(webhook: &Webhook) -> Value {
    json!({
        "service": {"namespace": SERVICE_NS, "name": SERVICE_NAME, "port": 443, "path": "/convert"},
        "caBundle": webhook.ca_bundle(),
    })
}

/// The fixture with the webhook's Service mapped to its loopback address.
async fn start(webhook: &Webhook) -> Running {
    let mut config = Config::default();
    config
        .webhook_services
        .insert(format!("{SERVICE_NS}/{SERVICE_NAME}:443"), webhook.addr);
    start_with(config).await
}

async fn create_crd(client: &kube::Client, crd: Value) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(crd).unwrap(),
    )
    .await
    .expect("CRD created");
}

async fn delete_crd(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.delete(CRD_NAME, &DeleteParams::default())
        .await
        .expect("CRD deleted");
}

fn ts(client: &kube::Client, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(GROUP, version, "TrafficSplit");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "trafficsplits");
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn split(version: &str, name: &str, backends_field: &str) -> DynamicObject {
    let gvk = GroupVersionKind::gvk(GROUP, version, "TrafficSplit");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "trafficsplits");
    DynamicObject::new(name, &ar).data(json!({"spec": {
        "service": "web",
        backends_field: [{"service": "web-v1", "weight": 90}, {"service": "web-v2", "weight": 10}],
    }}))
}

fn body(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap()
}

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn writes_store_the_storage_version_and_reads_convert() {
    let webhook = Webhook::start().await;
    let server = start(&webhook).await;
    let client = client(&server).await;
    create_crd(&client, crd(service_config(&webhook))).await;

    // Create at v1alpha1: stored at v1alpha4 (the storage version), answered at v1alpha1.
    let created = ts(&client, "v1alpha1")
        .create(
            &PostParams::default(),
            &split("v1alpha1", "a", "legacyBackends"),
        )
        .await
        .unwrap();
    let created = body(&created);
    assert_eq!(created["apiVersion"], "split.smi-spec.io/v1alpha1");
    assert_eq!(created["spec"]["legacyBackends"][0]["weight"], 90);
    let stored = server
        .object(
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            Some("default"),
            "a",
        )
        .unwrap();
    assert_eq!(stored["apiVersion"], "split.smi-spec.io/v1alpha4");
    assert_eq!(stored["spec"]["backends"][1]["service"], "web-v2");
    assert!(stored["spec"].get("legacyBackends").is_none(), "{stored}");
    let reviews = webhook.reviews();
    assert_eq!(reviews.len(), 2, "to storage, then back for the answer");
    assert_eq!(
        reviews[0]["desiredAPIVersion"],
        "split.smi-spec.io/v1alpha4"
    );
    assert_eq!(
        reviews[1]["desiredAPIVersion"],
        "split.smi-spec.io/v1alpha1"
    );

    // Each version reads its own form; reading the storage version calls no webhook.
    let v1 = body(&ts(&client, "v1alpha1").get("a").await.unwrap());
    assert_eq!(v1["apiVersion"], "split.smi-spec.io/v1alpha1");
    assert_eq!(v1["spec"]["legacyBackends"][0]["service"], "web-v1");
    assert!(v1["spec"].get("backends").is_none());
    let before = webhook.reviews().len();
    let v4 = body(&ts(&client, "v1alpha4").get("a").await.unwrap());
    assert_eq!(v4["apiVersion"], "split.smi-spec.io/v1alpha4");
    assert_eq!(v4["spec"]["backends"][0]["service"], "web-v1");
    assert_eq!(
        webhook.reviews().len(),
        before,
        "no call at the storage version"
    );
    let v2 = body(&ts(&client, "v1alpha2").get("a").await.unwrap());
    assert_eq!(v2["apiVersion"], "split.smi-spec.io/v1alpha2");
    assert_eq!(v2["spec"]["backends"][0]["service"], "web-v1");

    // A list at a non-storage version converts every item in one review.
    ts(&client, "v1alpha4")
        .create(&PostParams::default(), &split("v1alpha4", "b", "backends"))
        .await
        .unwrap();
    let before = webhook.reviews().len();
    let list = ts(&client, "v1alpha1")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);
    for item in &list.items {
        let item = body(item);
        assert_eq!(item["spec"]["legacyBackends"][0]["weight"], 90, "{item}");
    }
    let reviews = webhook.reviews();
    assert_eq!(reviews.len(), before + 1, "one review for the list");
    assert_eq!(reviews[before]["objects"].as_array().unwrap().len(), 2);

    // Merge patch at v1alpha1 works on the v1alpha1 form; the result is stored at v1alpha4.
    let patch = json!({"spec": {"legacyBackends": [{"service": "web-v3", "weight": 100}]}});
    let patched = ts(&client, "v1alpha1")
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        body(&patched)["spec"]["legacyBackends"][0]["service"],
        "web-v3"
    );
    let stored = server
        .object(
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            Some("default"),
            "a",
        )
        .unwrap();
    assert_eq!(
        stored["spec"]["backends"],
        json!([{"service": "web-v3", "weight": 100}])
    );
    assert_eq!(stored["metadata"]["generation"], 2);

    // JSON patch paths name the request version's fields.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/legacyBackends/0/weight", "value": 50}
    ]))
    .unwrap();
    ts(&client, "v1alpha1")
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    let stored = server
        .object(
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            Some("default"),
            "a",
        )
        .unwrap();
    assert_eq!(stored["spec"]["backends"][0]["weight"], 50);

    // Server-side apply at v1alpha1.
    let applied = json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
        "metadata": {"name": "c"},
        "spec": {"service": "api", "legacyBackends": [{"service": "api-v1", "weight": 1}]}});
    let out = ts(&client, "v1alpha1")
        .patch("c", &PatchParams::apply("test"), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(body(&out)["spec"]["legacyBackends"][0]["service"], "api-v1");
    let stored = server
        .object(
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            Some("default"),
            "c",
        )
        .unwrap();
    assert_eq!(stored["apiVersion"], "split.smi-spec.io/v1alpha4");
    assert_eq!(stored["spec"]["backends"][0]["service"], "api-v1");

    // Update (PUT) at v1alpha2 with the current resourceVersion.
    let mut current = ts(&client, "v1alpha2").get("c").await.unwrap();
    current.data["spec"]["backends"][0]["weight"] = json!(7);
    let replaced = ts(&client, "v1alpha2")
        .replace("c", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(body(&replaced)["apiVersion"], "split.smi-spec.io/v1alpha2");
    let stored = server
        .object(
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            Some("default"),
            "c",
        )
        .unwrap();
    assert_eq!(stored["spec"]["backends"][0]["weight"], 7);

    // Delete at v1alpha1 answers the v1alpha1 form.
    let gone = ts(&client, "v1alpha1")
        .delete("c", &DeleteParams::default())
        .await
        .unwrap();
    let gone = gone.left().expect("deleted at once");
    assert_eq!(body(&gone)["spec"]["legacyBackends"][0]["weight"], 7);
}

#[tokio::test]
async fn watch_at_a_non_storage_version_is_converted_and_fails_with_an_error_event() {
    let webhook = Webhook::start().await;
    let server = start(&webhook).await;
    let client = client(&server).await;
    create_crd(&client, crd(service_config(&webhook))).await;
    ts(&client, "v1alpha4")
        .create(&PostParams::default(), &split("v1alpha4", "a", "backends"))
        .await
        .unwrap();

    let mut events = ts(&client, "v1alpha1")
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    match next_event(&mut events).await {
        Some(Ok(WatchEvent::Added(o))) => {
            let o = body(&o);
            assert_eq!(o["apiVersion"], "split.smi-spec.io/v1alpha1");
            assert_eq!(o["spec"]["legacyBackends"][0]["weight"], 90);
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    let patch = json!({"spec": {"backends": [{"service": "web-v2", "weight": 100}]}});
    ts(&client, "v1alpha4")
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    match next_event(&mut events).await {
        Some(Ok(WatchEvent::Modified(o))) => {
            let o = body(&o);
            assert_eq!(o["spec"]["legacyBackends"][0]["service"], "web-v2", "{o}");
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // A change the webhook cannot convert ends the watch with a 500 ERROR event.
    webhook.set_mode(Mode::Fail("weights must add up to 100".into()));
    let patch = json!({"spec": {"service": "web2"}});
    ts(&client, "v1alpha4")
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    match next_event(&mut events).await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 500);
            assert_eq!(e.reason, "InternalError");
            assert_eq!(
                e.message,
                "conversion webhook for split.smi-spec.io/v1alpha4, Kind=TrafficSplit failed: weights must add up to 100"
            );
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert!(next_event(&mut events).await.is_none(), "the watch ends");
    support::eventually("the watch closes", || server.open_watches() == 0).await;
}

async fn next_event<S: futures::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event in time")
}

#[tokio::test]
async fn webhook_down_or_failing_is_500_and_stores_nothing() {
    let mut webhook = Webhook::start().await;
    let server = start(&webhook).await;
    let client = client(&server).await;
    create_crd(&client, crd(service_config(&webhook))).await;
    ts(&client, "v1alpha4")
        .create(&PostParams::default(), &split("v1alpha4", "a", "backends"))
        .await
        .unwrap();

    // A Failed result: 500 with the webhook's message, on reads and writes.
    webhook.set_mode(Mode::Fail("v1alpha1 cannot express this split".into()));
    let err = api_error(ts(&client, "v1alpha1").get("a").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    assert_eq!(
        err.message,
        "conversion webhook for split.smi-spec.io/v1alpha4, Kind=TrafficSplit failed: v1alpha1 cannot express this split"
    );
    let err = api_error(
        ts(&client, "v1alpha2")
            .create(&PostParams::default(), &split("v1alpha2", "b", "backends"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 500);
    assert!(
        err.message.starts_with(
            "conversion webhook for split.smi-spec.io/v1alpha2, Kind=TrafficSplit failed: "
        ),
        "{}",
        err.message
    );
    assert!(
        server
            .object(
                "split.smi-spec.io/v1alpha4",
                "TrafficSplit",
                Some("default"),
                "b"
            )
            .is_none()
    );

    // The webhook unreachable: 500 naming the call; a patch stores nothing.
    webhook.set_mode(Mode::Convert);
    webhook.stop().await;
    let version = server.resource_version();
    let err = api_error(ts(&client, "v1alpha1").get("a").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    assert!(
        err.message.starts_with(
            "conversion webhook for split.smi-spec.io/v1alpha4, Kind=TrafficSplit failed: Post \"https://lanyard-webhook.lanyard-system.svc:443/convert?timeout=10s\": "
        ),
        "{}",
        err.message
    );
    let patch = json!({"spec": {"service": "other"}});
    let err = api_error(
        ts(&client, "v1alpha1")
            .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 500);
    assert_eq!(server.resource_version(), version, "nothing was written");
    let list = api_error(
        ts(&client, "v1alpha2")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(list.code, 500);
    // The storage version needs no webhook.
    let v4 = body(&ts(&client, "v1alpha4").get("a").await.unwrap());
    assert_eq!(v4["spec"]["service"], "web");
}

#[tokio::test]
async fn tls_is_verified_against_the_ca_bundle_and_server_name() {
    let webhook = Webhook::start().await;
    let other = Webhook::start().await; // a different CA
    let server = start(&webhook).await;
    let client = client(&server).await;
    let mut config = service_config(&webhook);
    config["caBundle"] = json!(other.ca_bundle());
    create_crd(&client, crd(config)).await;
    ts(&client, "v1alpha4")
        .create(&PostParams::default(), &split("v1alpha4", "a", "backends"))
        .await
        .unwrap();
    let err = api_error(ts(&client, "v1alpha1").get("a").await.unwrap_err());
    assert_eq!(err.code, 500);
    assert!(err.message.contains("tls: "), "{}", err.message);
    assert!(webhook.reviews().is_empty());

    // A url clientConfig is used as is (the certificate carries 127.0.0.1).
    let url = json!({"url": format!("https://127.0.0.1:{}/convert", webhook.addr.port()),
                     "caBundle": webhook.ca_bundle()});
    let patch = json!({"spec": {"conversion": {"webhook": {"clientConfig": url}}}});
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(CRD_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let v1 = body(&ts(&client, "v1alpha1").get("a").await.unwrap());
    assert_eq!(v1["spec"]["legacyBackends"][0]["weight"], 90);

    // A url whose host the certificate does not name fails verification.
    let url = json!({"url": format!("https://localhost:{}/convert", webhook.addr.port()),
                     "caBundle": webhook.ca_bundle()});
    let patch = json!({"spec": {"conversion": {"webhook": {"clientConfig": url}}}});
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(CRD_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let err = api_error(ts(&client, "v1alpha1").get("a").await.unwrap_err());
    assert_eq!(err.code, 500);
    assert!(err.message.contains("tls: "), "{}", err.message);
}

#[tokio::test]
async fn unserved_versions_are_404_and_deleting_the_crd_restores_rewriting() {
    let webhook = Webhook::start().await;
    let server = start(&webhook).await;
    let client = client(&server).await;
    create_crd(&client, crd(service_config(&webhook))).await;
    ts(&client, "v1alpha1")
        .create(
            &PostParams::default(),
            &split("v1alpha1", "a", "legacyBackends"),
        )
        .await
        .unwrap();

    // v1alpha3 is `served: false`: 404, and gone from discovery.
    let err = api_error(ts(&client, "v1alpha3").get("a").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    let (code, group) = support::raw(
        &server,
        "GET",
        "/apis/split.smi-spec.io",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let group: Value = serde_json::from_str(&group).unwrap();
    let versions: Vec<&str> = group["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v1alpha4", "v1alpha2", "v1alpha1"]);
    let (code, _) = support::raw(
        &server,
        "GET",
        "/apis/split.smi-spec.io/v1alpha3",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 404);

    // Without the CRD: every version answers again, with only apiVersion rewritten.
    delete_crd(&client).await;
    let calls = webhook.reviews().len();
    let v1 = body(&ts(&client, "v1alpha1").get("a").await.unwrap());
    assert_eq!(v1["apiVersion"], "split.smi-spec.io/v1alpha1");
    assert_eq!(
        v1["spec"]["backends"][0]["weight"], 90,
        "the stored body, unconverted"
    );
    let v3 = body(&ts(&client, "v1alpha3").get("a").await.unwrap());
    assert_eq!(v3["apiVersion"], "split.smi-spec.io/v1alpha3");
    ts(&client, "v1alpha1")
        .create(
            &PostParams::default(),
            &split("v1alpha1", "b", "legacyBackends"),
        )
        .await
        .unwrap();
    let stored = server
        .object(
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            Some("default"),
            "b",
        )
        .unwrap();
    assert_eq!(stored["apiVersion"], "split.smi-spec.io/v1alpha4");
    assert!(stored["spec"].get("legacyBackends").is_some());
    assert_eq!(
        webhook.reviews().len(),
        calls,
        "no webhook calls without the CRD"
    );

    // Strategy None: served versions still apply, no conversion.
    let mut none = crd(Value::Null);
    none["spec"]["conversion"] = json!({"strategy": "None"});
    create_crd(&client, none).await;
    let v1 = body(&ts(&client, "v1alpha1").get("a").await.unwrap());
    assert_eq!(v1["spec"]["backends"][0]["weight"], 90);
    assert_eq!(
        api_error(ts(&client, "v1alpha3").get("a").await.unwrap_err()).code,
        404
    );
    assert_eq!(webhook.reviews().len(), calls);
}

// ---------------------------------------------------------------------------------------------
// With the real kubectl.

#[tokio::test]
async fn kubectl_applies_at_one_version_and_gets_another() {
    let webhook = Webhook::start().await;
    let server = start(&webhook).await;
    let kubectl = Kubectl::new(&server);
    let crd_path = kubectl.file(
        "crd.yaml",
        &serde_yaml::to_string(&crd(service_config(&webhook))).unwrap(),
    );
    let ts_path = kubectl.file(
        "ts.yaml",
        "apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata:
  name: web
  namespace: default
spec:
  service: web
  legacyBackends:
  - service: web-v1
    weight: 60
  - service: web-v2
    weight: 40
",
    );
    let out = kubectl.ok(&["apply", "-f", &crd_path]).await;
    assert!(out.contains("created"), "{out}");
    let out = kubectl.ok(&["apply", "-f", &ts_path]).await;
    assert!(
        out.contains("trafficsplit.split.smi-spec.io/web created"),
        "{out}"
    );

    let stored = server
        .object(
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            Some("default"),
            "web",
        )
        .unwrap();
    assert_eq!(stored["apiVersion"], "split.smi-spec.io/v1alpha4");
    assert_eq!(stored["spec"]["backends"][0]["weight"], 60);

    let out = kubectl
        .ok(&[
            "get",
            "trafficsplits.v1alpha4.split.smi-spec.io",
            "web",
            "-n",
            "default",
            "-o",
            "json",
        ])
        .await;
    let got: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["apiVersion"], "split.smi-spec.io/v1alpha4");
    assert_eq!(got["spec"]["backends"][1]["weight"], 40);
    assert!(got["spec"].get("legacyBackends").is_none(), "{got}");

    let out = kubectl
        .ok(&[
            "get",
            "trafficsplits.v1alpha1.split.smi-spec.io",
            "-n",
            "default",
            "-o",
            "json",
        ])
        .await;
    let got: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["items"][0]["apiVersion"], "split.smi-spec.io/v1alpha1");
    assert_eq!(got["items"][0]["spec"]["legacyBackends"][0]["weight"], 60);

    // A second apply at v1alpha1 (a three-way merge patch on the v1alpha1 form) changes a weight.
    let changed = std::fs::read_to_string(&ts_path)
        .unwrap()
        .replace("weight: 60", "weight: 70")
        .replace("weight: 40", "weight: 30");
    std::fs::write(&ts_path, changed).unwrap();
    let out = kubectl.ok(&["apply", "-f", &ts_path]).await;
    assert!(out.contains("configured"), "{out}");
    let stored = server
        .object(
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            Some("default"),
            "web",
        )
        .unwrap();
    assert_eq!(stored["spec"]["backends"][0]["weight"], 70);
    assert!(!webhook.reviews().is_empty());
}
