//! SMI in Kubernetes mode, against the loopback API server with the real kubectl:
//!
//! - Lanyard's SMI CRDs (`crds/smi/`) applied with the conversion webhook's CA bundle, as an
//!   installer does, with `lanyard-webhook` serving `/convert`: a v1alpha1 TrafficSplit
//!   reads back as v1alpha4 with integer weights, and the controller (watching v1alpha4)
//!   follows it to an xDS client, records an Event, and shows it on `/debug/translation`.
//! - A broken edit keeps the last valid split in effect; an HTTPRoute on the root wins.
//! - With OSM's CRDs (TrafficSplit served at v1alpha2 only), the controller watches v1alpha2.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use lanyard_test_apiserver::{ApiServer, Config, Running};
use lanyard_xds::testing::client::{SotwClient, find, node};
use lanyard_xds::testing::{WAIT, http_get};
use lanyard_xds::type_url;
use serde_json::Value;

mod cluster;
mod process;

use cluster::*;

const WEBHOOK_SERVICE: &str = "lanyard-system/lanyard-webhook:443";
const WEBHOOK_NAME: &str = "lanyard-webhook.lanyard-system.svc";

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts `lanyard-webhook`'s server in-process with a self-signed certificate for its
/// Service name; returns its address and the certificate (the CA bundle) in PEM.
async fn start_webhook() -> (std::net::SocketAddr, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![WEBHOOK_NAME.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = lanyard_webhook::tls::server_config(
        cert.pem().as_bytes(),
        "test certificate",
        key.serialize_pem().as_bytes(),
        "test key",
    )
    .unwrap();
    let server = lanyard_webhook::Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        tls,
        lanyard_webhook::endpoints::router(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    (addr, cert.pem())
}

/// `kubectl apply` of Lanyard's SMI CRDs with `caBundle` filled in.
async fn apply_lanyard_crds(kubeconfig: &Path, ca_pem: &str) {
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let dir = repo_dir().join("crds/smi");
    let mut documents = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let mut crd: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let client_config = &mut crd["spec"]["conversion"]["webhook"]["clientConfig"];
        assert!(
            client_config["service"]["name"].as_str() == Some("lanyard-webhook"),
            "{}: the conversion webhook is not lanyard-webhook",
            file.display()
        );
        client_config["caBundle"] = bundle.clone().into();
        documents.push(serde_yaml::to_string(&crd).unwrap());
    }
    assert_eq!(
        documents.len(),
        3,
        "trafficsplits, httproutegroups, tcproutes"
    );
    kubectl_apply(kubeconfig, &documents).await;
}

fn mk_split(api_version: &str, weights: (&str, &str)) -> String {
    format!(
        "apiVersion: split.smi-spec.io/{api_version}\nkind: TrafficSplit\nmetadata: {{name: cart-canary, namespace: shop}}\nspec:\n  service: cart\n  backends:\n  - {{service: cart-v1, weight: {}}}\n  - {{service: cart-v2, weight: {}}}\n",
        weights.0, weights.1
    )
}

fn shop() -> Vec<String> {
    vec![
        mk_shop(),
        mk_service("cart"),
        mk_service("cart-v1"),
        mk_service("cart-v2"),
        mk_endpoint_slice("cart-v1", "10.1.0.1"),
        mk_endpoint_slice("cart-v2", "10.1.0.2"),
    ]
}

/// The weighted clusters of the first route of `cart:80` (a single cluster reads as
/// weight 1), from the latest route configuration the client received.
fn route_weights(config: &RouteConfiguration) -> Vec<(String, u32)> {
    let route = &config.virtual_hosts[0].routes[0];
    match &route.action {
        Some(Action::Route(action)) => match &action.cluster_specifier {
            Some(ClusterSpecifier::WeightedClusters(weighted)) => weighted
                .clusters
                .iter()
                .map(|c| (c.name.clone(), c.weight.map(|w| w.value).unwrap_or(0)))
                .collect(),
            Some(ClusterSpecifier::Cluster(name)) => vec![(name.clone(), 1)],
            other => panic!("unexpected cluster specifier {other:?}"),
        },
        other => panic!("unexpected action {other:?}"),
    }
}

/// Receives route configurations (acking each) until `cart:80` routes with `weights`.
async fn wait_for_weights(client: &mut SotwClient, weights: &[(&str, u32)]) {
    let want: Vec<(String, u32)> = weights
        .iter()
        .map(|(service, w)| (cluster(service), *w))
        .collect();
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let response = client.recv().await;
        client.ack(&response);
        if response.type_url == type_url::ROUTE
            && let Some(config) = find::<RouteConfiguration>(&response, ROUTE_CONFIG)
        {
            seen = route_weights(&config);
            if seen == want {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "cart:80 never routed {want:?}; last seen {seen:?}"
        );
    }
}

/// `/debug/translation`'s report of the split, once `f` holds for it.
async fn wait_for_report(debug: std::net::SocketAddr, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(debug, "/debug/translation").await;
        if status == 200 {
            let report: Value = serde_json::from_str(&body).unwrap();
            if let Some(entry) = report["smi"]
                .as_array()
                .and_then(|s| s.iter().find(|e| e["name"] == "cart-canary"))
                && f(entry)
            {
                return entry.clone();
            }
            assert!(Instant::now() < deadline, "no such SMI report: {body}");
        }
        assert!(
            Instant::now() < deadline,
            "/debug/translation: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for an Event regarding the split with this reason; returns it.
async fn wait_for_event(kubeconfig: &Path, reason: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let json = kubectl(
            kubeconfig,
            &["get", "events.events.k8s.io", "-n", "shop", "-o", "json"],
        )
        .await;
        let events: Value = serde_json::from_str(&json).unwrap();
        if let Some(event) = events["items"].as_array().and_then(|items| {
            items.iter().find(|e| {
                e["regarding"]["kind"] == "TrafficSplit"
                    && e["regarding"]["name"] == "cart-canary"
                    && e["reason"] == reason
            })
        }) {
            return event.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} Event for the TrafficSplit: {json}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn watched(server: &Running, path: &str) -> bool {
    server
        .requests()
        .iter()
        .any(|r| r.verb == "watch" && r.path == path)
}

async fn client_of_cart(controller: &process::Controller) -> SotwClient {
    let mut client = SotwClient::connect(controller.xds, node("client.shop")).await;
    client.subscribe(type_url::ROUTE, &[ROUTE_CONFIG]);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lanyard_smi_crds_convert_and_a_traffic_split_is_followed_reported_and_kept() {
    let (webhook, ca_pem) = start_webhook().await;
    let mut config = Config::default();
    config
        .webhook_services
        .insert(WEBHOOK_SERVICE.to_string(), webhook);
    let server = ApiServer::start(config).await.unwrap();
    let kubeconfig = server.kubeconfig_path.clone();
    apply_lanyard_crds(&kubeconfig, &ca_pem).await;
    kubectl_apply(&kubeconfig, &shop()).await;
    // Written at v1alpha1, with quantity weights...
    let written = mk_split("v1alpha1", ("900m", "\"0.1\""));
    kubectl_apply(&kubeconfig, std::slice::from_ref(&written)).await;

    // ... stored at v1alpha4 with whole-number weights of the same ratio, and readable at
    // either version, at v1alpha1 exactly as written.
    let read = |version: &'static str| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let resource = format!("trafficsplits.{version}.split.smi-spec.io");
            let json = kubectl(
                &kubeconfig,
                &["get", &resource, "cart-canary", "-n", "shop", "-o", "json"],
            )
            .await;
            serde_json::from_str::<Value>(&json).unwrap()
        }
    };
    let v4 = read("v1alpha4").await;
    assert_eq!(v4["apiVersion"], "split.smi-spec.io/v1alpha4");
    assert_eq!(v4["spec"]["backends"][0]["weight"], 9, "{v4}");
    assert_eq!(v4["spec"]["backends"][1]["weight"], 1, "{v4}");
    let v1 = read("v1alpha1").await;
    assert_eq!(v1["spec"]["backends"][0]["weight"], "900m", "{v1}");
    assert_eq!(v1["spec"]["backends"][1]["weight"], "0.1", "{v1}");
    // So applying the same manifest again is no change for client-side apply.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("split.yaml");
    std::fs::write(&file, &written).unwrap();
    let again = kubectl(&kubeconfig, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(again.contains("unchanged"), "{again}");

    let controller =
        process::start(&[std::ffi::OsStr::new("--kubeconfig"), kubeconfig.as_os_str()]);
    wait_ready(controller.debug).await;
    assert!(
        watched(&server, "/apis/split.smi-spec.io/v1alpha4/trafficsplits"),
        "the controller watches the newest version served"
    );
    let mut client = client_of_cart(&controller).await;
    wait_for_weights(&mut client, &[("cart-v1", 9), ("cart-v2", 1)]).await;
    let report = wait_for_report(controller.debug, |e| e["outcome"] == "Applied").await;
    assert_eq!(
        report["message"], "shop/cart port 80 split: cart-v1 90%, cart-v2 10%",
        "{report}"
    );
    let event = wait_for_event(&kubeconfig, "Applied").await;
    assert_eq!(event["type"], "Normal", "{event}");
    assert_eq!(
        event["regarding"]["apiVersion"],
        "split.smi-spec.io/v1alpha4"
    );
    assert!(event["regarding"]["uid"].as_str().is_some(), "{event}");

    // Flagger's next step, written at v1alpha2: followed.
    kubectl_apply(&kubeconfig, &[mk_split("v1alpha2", ("75", "25"))]).await;
    wait_for_weights(&mut client, &[("cart-v1", 75), ("cart-v2", 25)]).await;

    // A broken edit: reported invalid, and the last valid split stays in effect.
    kubectl_apply(&kubeconfig, &[mk_split("v1alpha2", ("-5", "25"))]).await;
    let report = wait_for_report(controller.debug, |e| e["outcome"] == "Invalid").await;
    assert_eq!(report["reason"], "InvalidWeight", "{report}");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.contains("negative") && message.contains("stays in effect and is applied"),
        "{message}"
    );
    let event = wait_for_event(&kubeconfig, "InvalidWeight").await;
    assert_eq!(event["type"], "Warning", "{event}");
    let held = tokio::time::timeout(Duration::from_millis(500), client.next_untimed()).await;
    if let Ok(Ok(response)) = &held {
        assert!(
            response.type_url != type_url::ROUTE
                || find::<RouteConfiguration>(response, ROUTE_CONFIG)
                    .is_none_or(|c| route_weights(&c)
                        == vec![(cluster("cart-v1"), 75), (cluster("cart-v2"), 25)]),
            "the broken split changed the routes: {response:?}"
        );
    }

    // Fixed again, then a Gateway API route on the root wins over the split.
    kubectl_apply(&kubeconfig, &[mk_split("v1alpha2", ("50", "50"))]).await;
    wait_for_weights(&mut client, &[("cart-v1", 50), ("cart-v2", 50)]).await;
    kubectl_apply(&kubeconfig, &[mk_route("cart-v2")]).await;
    wait_for_weights(&mut client, &[("cart-v2", 1)]).await;
    wait_for_event(&kubeconfig, "GatewayAPIRoute").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_osm_crds_the_controller_watches_the_version_they_serve() {
    // OSM's CRD (fixtures/osm/README.md), which serves TrafficSplit at v1alpha2 only.
    let osm =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/osm/smi_traffic_split.yaml");
    assert!(osm.is_file(), "{} is missing", osm.display());
    let server = ApiServer::start(Config::default()).await.unwrap();
    let kubeconfig = server.kubeconfig_path.clone();
    kubectl(&kubeconfig, &["apply", "-f", osm.to_str().unwrap()]).await;
    kubectl_apply(&kubeconfig, &shop()).await;
    kubectl_apply(&kubeconfig, &[mk_split("v1alpha2", ("90", "10"))]).await;

    let controller =
        process::start(&[std::ffi::OsStr::new("--kubeconfig"), kubeconfig.as_os_str()]);
    wait_ready(controller.debug).await;
    let mut client = client_of_cart(&controller).await;
    wait_for_weights(&mut client, &[("cart-v1", 90), ("cart-v2", 10)]).await;
    assert!(watched(
        &server,
        "/apis/split.smi-spec.io/v1alpha2/trafficsplits"
    ));
    assert!(!watched(
        &server,
        "/apis/split.smi-spec.io/v1alpha4/trafficsplits"
    ));
}

/// What a proxy rejects of a TrafficSplit's configuration: a `Warning` Event
/// `ProxiesRejected` naming the resource and the proxy's message, and `rejected` on
/// `/debug/translation`; once the proxy accepts a later version, a `Normal`
/// `ProxiesAccepted` Event and no `rejected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejected_split_gets_a_warning_event_and_an_accepted_one_when_fixed() {
    let (webhook, ca_pem) = start_webhook().await;
    let mut config = Config::default();
    config
        .webhook_services
        .insert(WEBHOOK_SERVICE.to_string(), webhook);
    let server = ApiServer::start(config).await.unwrap();
    let kubeconfig = server.kubeconfig_path.clone();
    apply_lanyard_crds(&kubeconfig, &ca_pem).await;
    kubectl_apply(&kubeconfig, &shop()).await;
    kubectl_apply(&kubeconfig, &[mk_split("v1alpha4", ("90", "10"))]).await;
    let controller =
        process::start(&[std::ffi::OsStr::new("--kubeconfig"), kubeconfig.as_os_str()]);
    wait_ready(controller.debug).await;
    let mut client = client_of_cart(&controller).await;

    // The client refuses the split's route configuration, naming it.
    let message = format!("{ROUTE_CONFIG}: refused by the test");
    let deadline = Instant::now() + WAIT;
    loop {
        let response = client.recv().await;
        if response.type_url == type_url::ROUTE
            && let Some(config) = find::<RouteConfiguration>(&response, ROUTE_CONFIG)
            && route_weights(&config).len() == 2
        {
            client.nack(&response, &message);
            break;
        }
        client.ack(&response);
        assert!(
            Instant::now() < deadline,
            "the split never reached the client"
        );
    }
    let event = wait_for_event(&kubeconfig, "ProxiesRejected").await;
    assert_eq!(event["type"], "Warning", "{event}");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.starts_with(&format!(
            "1 proxy rejected RouteConfiguration {ROUTE_CONFIG} (version "
        )) && note.ends_with(&format!("): {message}")),
        "{note}"
    );
    let report = wait_for_report(controller.debug, |e| e["rejected"].is_string()).await;
    assert_eq!(report["rejected"], note, "{report}");

    // A new version the client accepts clears it (after the hold).
    kubectl_apply(&kubeconfig, &[mk_split("v1alpha4", ("50", "50"))]).await;
    wait_for_weights(&mut client, &[("cart-v1", 50), ("cart-v2", 50)]).await;
    let event = wait_for_event(&kubeconfig, "ProxiesAccepted").await;
    assert_eq!(event["type"], "Normal", "{event}");
    wait_for_report(controller.debug, |e| e.get("rejected").is_none()).await;
}
