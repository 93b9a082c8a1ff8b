//! The webhook over real HTTPS: an in-process server with a self-signed certificate (rcgen)
//! and a rustls client that trusts only that certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use lanyard_webhook::{Server, endpoints, tls};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

struct Webhook {
    addr: SocketAddr,
    client: TlsConnector,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Webhook {
    let (config, client) = mk_tls();
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, endpoints::router())
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    Webhook {
        addr,
        client,
        _stop: stop,
    }
}

impl Webhook {
    async fn send(&self, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let tls = self
            .client
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    /// Posts a ConversionReview and returns its `response`.
    async fn review(&self, desired: &str, objects: Vec<Value>) -> Value {
        let body = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "ConversionReview",
            "request": {"uid": "0b6a4c6e-1d5f-4a8e-9d0e-3f1f0c2b7a11",
                "desiredAPIVersion": desired, "objects": objects},
        });
        let (status, body) = self
            .send("POST", "/convert", serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let review: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(review["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(review["kind"], "ConversionReview");
        assert_eq!(
            review["response"]["uid"],
            "0b6a4c6e-1d5f-4a8e-9d0e-3f1f0c2b7a11"
        );
        review["response"].clone()
    }
}

fn traffic_split(version: &str, weights: [Value; 2]) -> Value {
    json!({
        "apiVersion": format!("split.smi-spec.io/{version}"),
        "kind": "TrafficSplit",
        "metadata": {"name": "web-beta", "namespace": "shop", "uid": "1f2e", "resourceVersion": "42"},
        "spec": {
            "service": "web",
            "matches": [{"kind": "HTTPRouteGroup", "name": "beta-users"}],
            "backends": [{"service": "web-v1", "weight": weights[0]},
                         {"service": "web-v2", "weight": weights[1]}],
        },
    })
}

#[tokio::test]
async fn healthz_answers_ok() {
    let webhook = start().await;
    let (status, body) = webhook.send("GET", "/healthz", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok");
}

#[tokio::test]
async fn a_review_is_converted_and_converts_back() {
    let webhook = start().await;
    let stored = traffic_split("v1alpha4", [json!(250), json!(750)]);
    let response = webhook
        .review("split.smi-spec.io/v1alpha1", vec![stored.clone()])
        .await;
    assert_eq!(response["result"]["status"], "Success");
    let objects = response["convertedObjects"].as_array().unwrap();
    assert_eq!(objects.len(), 1);
    let v1 = &objects[0];
    assert_eq!(v1["apiVersion"], "split.smi-spec.io/v1alpha1");
    assert_eq!(v1["metadata"]["uid"], "1f2e");
    assert_eq!(v1["spec"]["backends"][0]["weight"], "250");
    assert_eq!(v1["spec"]["backends"][1]["weight"], "750");
    assert!(v1["spec"].get("matches").is_none());

    let response = webhook
        .review("split.smi-spec.io/v1alpha4", vec![v1.clone()])
        .await;
    assert_eq!(response["result"]["status"], "Success");
    assert_eq!(response["convertedObjects"], json!([stored]));
}

#[tokio::test]
async fn mixed_kinds_and_versions_of_one_group_convert_in_order() {
    let webhook = start().await;
    let objects = vec![
        json!({"apiVersion": "specs.smi-spec.io/v1alpha1", "kind": "HTTPRouteGroup",
            "metadata": {"name": "api"}, "matches": [{"name": "get", "methods": ["GET"]}]}),
        json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
            "metadata": {"name": "db"}, "spec": {"matches": {"ports": [5432]}}}),
        json!({"apiVersion": "specs.smi-spec.io/v1alpha3", "kind": "HTTPRouteGroup",
            "metadata": {"name": "beta"}, "spec": {"matches": [{"name": "b", "headers": [{"cookie": "beta"}]}]}}),
    ];
    let response = webhook.review("specs.smi-spec.io/v1alpha4", objects).await;
    assert_eq!(response["result"]["status"], "Success");
    let converted = response["convertedObjects"].as_array().unwrap();
    let names: Vec<_> = converted.iter().map(|o| &o["metadata"]["name"]).collect();
    assert_eq!(names, ["api", "db", "beta"]);
    assert!(
        converted
            .iter()
            .all(|o| o["apiVersion"] == "specs.smi-spec.io/v1alpha4")
    );
    assert_eq!(
        converted[0]["spec"]["matches"],
        json!([{"name": "get", "methods": ["GET"]}])
    );
    assert!(converted[0].get("matches").is_none());
    assert_eq!(converted[1]["spec"]["matches"]["ports"], json!([5432]));
}

#[tokio::test]
async fn unknown_versions_and_kinds_fail_the_review() {
    let webhook = start().await;
    let split = traffic_split("v1alpha2", [json!(1), json!(2)]);
    let response = webhook
        .review("split.smi-spec.io/v1beta1", vec![split.clone()])
        .await;
    assert_eq!(response["result"]["status"], "Failure");
    let message = response["result"]["message"].as_str().unwrap();
    assert!(
        message.contains("split.smi-spec.io/v1beta1 is not split.smi-spec.io/v1alpha1..v1alpha4"),
        "{message}"
    );
    assert_eq!(response["convertedObjects"], json!([]));

    let mut v9 = split.clone();
    v9["apiVersion"] = json!("split.smi-spec.io/v1alpha9");
    let response = webhook
        .review("split.smi-spec.io/v1alpha4", vec![split.clone(), v9])
        .await;
    assert_eq!(response["result"]["status"], "Failure");
    let message = response["result"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("object 2 of 2: TrafficSplit in split.smi-spec.io/v1alpha9"),
        "{message}"
    );

    let route = json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute", "metadata": {"name": "db"}});
    let response = webhook
        .review("split.smi-spec.io/v1alpha4", vec![split, route])
        .await;
    assert_eq!(response["result"]["status"], "Failure");

    let bad_weight = traffic_split("v1alpha1", [json!("ten"), json!("1")]);
    let response = webhook
        .review("split.smi-spec.io/v1alpha4", vec![bad_weight])
        .await;
    assert_eq!(response["result"]["status"], "Failure");
    assert_eq!(
        response["result"]["message"],
        "object 1 of 1: TrafficSplit shop/web-beta: spec.backends[0].weight: weight \"ten\" is not a valid quantity"
    );
}

#[tokio::test]
async fn malformed_bodies_are_bad_requests() {
    let webhook = start().await;
    for body in [
        &b"{not json"[..],
        br#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview"}"#,
        br#"{"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "ConversionReview",
             "request": {"uid": "u", "desiredAPIVersion": "split.smi-spec.io/v1alpha4", "objects": []}}"#,
        br#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
             "request": {"uid": "u", "objects": []}}"#,
    ] {
        let (status, text) = webhook.send("POST", "/convert", body.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&text));
        assert!(!text.is_empty());
    }
    let (status, _) = webhook.send("GET", "/convert", Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = webhook.send("GET", "/nowhere", Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn plain_http_is_not_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let webhook = start().await;
    let mut tcp = TcpStream::connect(webhook.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
}

#[test]
fn unusable_pem_files_are_reported() {
    let err = tls::server_config(b"not pem", "cert.pem", b"", "key.pem").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cert.pem: no CERTIFICATE block (expected PEM)"
    );
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let err =
        tls::server_config(key.cert.pem().as_bytes(), "cert.pem", b"", "key.pem").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("key.pem: no usable private key"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let err = tls::load(&dir.path().join("missing.pem"), &dir.path().join("key.pem")).unwrap_err();
    assert!(err.to_string().starts_with("reading "), "{err}");
}

/// A self-signed serving configuration for `localhost` and a client config trusting it.
fn mk_tls() -> (Arc<rustls::ServerConfig>, TlsConnector) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let config = tls::server_config(
        key.cert.pem().as_bytes(),
        "test certificate",
        key.signing_key.serialize_pem().as_bytes(),
        "test key",
    )
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(key.cert.der().to_vec()))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (config, TlsConnector::from(Arc::new(client)))
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A client that never finishes its request headers (slow loris) is disconnected after the
/// header read timeout instead of holding the connection for ever.
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (config, client) = mk_tls();
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, endpoints::router())
        .await
        .unwrap()
        .header_read_timeout(std::time::Duration::from_millis(500));
    let addr = server.local_addr();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = client
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"POST /convert HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, tls.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the connection was still open {WAIT:?} after headers stopped"
    );
}

/// A request in flight when shutdown begins completes, and `serve` (after which the binary
/// exits) returns only after its response went out.
#[tokio::test]
async fn a_request_in_flight_completes_across_shutdown() {
    use axum::routing::post;

    let (config, client) = mk_tls();
    let (entered, mut inside) = tokio::sync::mpsc::channel::<()>(1);
    let (finish, finishing) = tokio::sync::watch::channel(false);
    // A conversion that takes until the test lets it finish.
    let router = endpoints::router().route(
        "/slow",
        post(move || {
            let entered = entered.clone();
            let mut finishing = finishing.clone();
            async move {
                let _ = entered.send(()).await;
                let _ = finishing.wait_for(|f| *f).await;
                "converted"
            }
        }),
    );
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, router)
        .await
        .unwrap()
        .shutdown_grace(WAIT);
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let webhook = Webhook {
        addr,
        client,
        _stop: oneshot::channel().0,
    };
    let request = tokio::spawn(async move { webhook.send("POST", "/slow", Vec::new()).await });
    inside.recv().await.unwrap();

    stop.send(()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !serving.is_finished(),
        "serve returned with a request in flight: the process would exit and abort it"
    );
    finish.send_replace(true);
    let (status, body) = tokio::time::timeout(WAIT, request)
        .await
        .expect("the request in flight was not answered")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"converted");
    tokio::time::timeout(WAIT, serving)
        .await
        .expect("serve did not return once the request was done")
        .unwrap()
        .unwrap();
}

/// A self-signed `localhost` certificate valid until `not_after` (year, month, day): its PEM
/// certificate, PEM key and DER certificate.
fn mk_cert(not_after: (i32, u8, u8)) -> (String, String, Vec<u8>) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Replaces a file in one step, as kubelet swaps a mounted Secret's files.
fn replace(path: &std::path::Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[test]
fn not_after_is_read_from_utc_and_generalized_times() {
    // Before 2050 X.509 writes UTCTime, from 2050 GeneralizedTime.
    assert_eq!(
        tls::not_after(&mk_cert((2021, 1, 1)).2),
        Some(1_609_459_200)
    );
    assert_eq!(
        tls::not_after(&mk_cert((2051, 6, 1)).2),
        Some(2_569_190_400)
    );
    assert_eq!(tls::not_after(b"not a certificate"), None);
}

/// The certificate files are replaced (cert-manager renewed it): a new handshake presents
/// the new certificate without a restart, and `/metrics` gives the new expiry.
#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let old = mk_cert((2090, 1, 1));
    let new = mk_cert((2091, 1, 1));
    replace(&cert_path, &old.0);
    replace(&key_path, &old.1);
    let (cert, config) = tls::ReloadingCert::load(&cert_path, &key_path).unwrap();
    tokio::spawn(cert.clone().watch(std::time::Duration::from_millis(50)));
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        config,
        endpoints::router_with_certificate(cert.clone()),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let mut roots = rustls::RootCertStore::empty();
    for der in [&old.2, &new.2] {
        roots.add(CertificateDer::from(der.clone())).unwrap();
    }
    let client = TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    ));
    let presented = || async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = client
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    assert_eq!(presented().await, old.2);

    replace(&key_path, &new.1);
    replace(&cert_path, &new.0);
    let deadline = std::time::Instant::now() + WAIT;
    while presented().await != new.2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not served within {WAIT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let webhook = Webhook {
        addr,
        client,
        _stop: oneshot::channel().0,
    };
    let (status, body) = webhook.send("GET", "/metrics", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(&format!(
            "lanyard_webhook_certificate_not_after_seconds {}",
            tls::not_after(&new.2).unwrap()
        )),
        "{text}"
    );
}

/// An expired serving certificate turns `/healthz` to 503, saying so.
#[tokio::test]
async fn healthz_fails_once_the_certificate_has_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let expired = mk_cert((2021, 1, 1));
    replace(&cert_path, &expired.0);
    replace(&key_path, &expired.1);
    let (cert, _) = tls::ReloadingCert::load(&cert_path, &key_path).unwrap();
    let response = endpoints::health::handle(Some(cert.clone())).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("expired"),
        "{body:?}"
    );

    // Renewed: healthy again.
    let valid = mk_cert((2090, 1, 1));
    replace(&key_path, &valid.1);
    replace(&cert_path, &valid.0);
    assert!(cert.reload_if_changed());
    let response = endpoints::health::handle(Some(cert)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Serves `endpoints::router()` on a loopback port with these settings until the returned
/// sender is dropped.
async fn serve(
    server: impl FnOnce(Server) -> Server,
) -> (std::net::SocketAddr, TlsConnector, oneshot::Sender<()>) {
    let (config, client) = mk_tls();
    let server = server(
        Server::bind("127.0.0.1:0".parse().unwrap(), config, endpoints::router())
            .await
            .unwrap(),
    );
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    (addr, client, stop)
}

async fn handshake(
    addr: std::net::SocketAddr,
    client: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    client
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A keep-alive connection left idle after a request is closed after the header read
/// timeout.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (addr, client, _stop) =
        serve(|s| s.header_read_timeout(std::time::Duration::from_millis(500))).await;
    let mut tls = handshake(addr, &client).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 1024];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Then nothing: the server closes the connection.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, tls.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "an idle keep-alive connection was still open after {WAIT:?}"
    );
}

/// Past `max_connections` open connections, a new one is not served until one closes.
#[tokio::test]
async fn connections_past_the_limit_wait_for_one_to_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (addr, client, _stop) = serve(|s| s.max_connections(2)).await;
    let first = handshake(addr, &client).await.unwrap();
    let _second = handshake(addr, &client).await.unwrap();
    // The third connects (the kernel's backlog) but its handshake is not answered.
    let client3 = client.clone();
    let third = tokio::spawn(async move {
        let mut tls = handshake(addr, &client3).await?;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        tls.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served with a limit of 2"
    );
    drop(first);
    let response = tokio::time::timeout(WAIT, third)
        .await
        .expect("the third connection was served once one closed")
        .unwrap()
        .unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
}
