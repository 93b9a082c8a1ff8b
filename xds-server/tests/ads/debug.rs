//! The debug endpoint: syncz, config_dump, metrics, health.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanyard_xds::debug::{Readiness, SourceStatus};
use lanyard_xds::testing::client::{DeltaClient, SotwClient, node};
use lanyard_xds::testing::{TestServer, http_get};
use lanyard_xds::{ServerConfig, XdsServer};
use serde_json::Value;

use crate::mesh::*;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn syncz_shows_each_proxy_and_what_it_was_sent_and_acked() {
    let server = TestServer::start(&base()).await;
    let mut sotw = SotwClient::connect(server.ads, node(CART_0)).await;
    sotw.subscribe(CDS, &[]);
    let clusters = sotw.recv_type(CDS).await;
    sotw.ack(&clusters);
    server
        .wait_acked(CART_0, "CDS", &clusters.version_info)
        .await;
    let mut delta = DeltaClient::connect(server.ads, node("client.web")).await;
    delta.subscribe(EDS, &[CART], &[]);
    let endpoints = delta.recv().await;
    delta.ack(&endpoints);
    server
        .wait_acked("client.web", "EDS", &endpoints.system_version_info)
        .await;

    let (status, body) = server.get("/debug/syncz").await;
    assert_eq!(status, 200, "{body}");
    let syncz = json(&body);
    assert_eq!(syncz["snapshot_generation"], 1);
    let proxies = syncz["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 2);
    let cart = &proxies[0];
    assert_eq!(cart["node_id"], CART_0);
    assert_eq!(cart["namespace"], "shop");
    assert_eq!(cart["pod"], "cart-0");
    assert_eq!(cart["protocol"], "sotw");
    assert_eq!(cart["synced_generation"], 1);
    let cds = &cart["types"]["CDS"];
    assert_eq!(cds["version_sent"], clusters.version_info.as_str());
    assert_eq!(cds["version_acked"], clusters.version_info.as_str());
    assert_eq!(cds["nonce_sent"], clusters.nonce.as_str());
    assert_eq!(cds["subscribed"], serde_json::json!(["*"]));
    assert_eq!(cds["resources_sent"], 5);
    assert!(cds["last_push"].as_str().unwrap().ends_with('Z'));
    assert_eq!(cds["last_nack"], Value::Null);
    let web = &proxies[1];
    assert_eq!(web["protocol"], "delta");
    assert_eq!(web["types"]["EDS"]["subscribed"], serde_json::json!([CART]));
}

#[tokio::test]
async fn config_dump_is_envoy_shaped_sorted_and_stable() {
    let server = TestServer::start(&base()).await;
    let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
    for ty in [CDS, LDS] {
        client.subscribe(ty, &[]);
        let response = client.recv_type(ty).await;
        client.ack(&response);
    }
    client.subscribe(EDS, &[CART]);
    let endpoints = client.recv_type(EDS).await;
    client.ack(&endpoints);
    server
        .wait_acked(CART_0, "EDS", &endpoints.version_info)
        .await;

    let (status, body) = server
        .get(&format!("/debug/config_dump?proxy={CART_0}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let dump = json(&body);
    let configs = dump["configs"].as_array().unwrap();
    let types: Vec<&str> = configs
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
        ]
    );
    let clusters = configs[0]["dynamic_active_clusters"].as_array().unwrap();
    let cluster_names: Vec<&str> = clusters
        .iter()
        .map(|c| c["cluster"]["name"].as_str().unwrap())
        .collect();
    let mut sorted = cluster_names.clone();
    sorted.sort();
    assert_eq!(cluster_names, sorted);
    assert!(cluster_names.contains(&CART));
    assert_eq!(
        clusters[0]["cluster"]["@type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert_eq!(
        configs[1]["dynamic_endpoint_configs"][0]["endpoint_config"]["cluster_name"],
        CART
    );
    assert!(configs[2]["dynamic_listeners"][0]["active_state"]["listener"].is_object());
    // Stable: byte for byte the same, and the same by namespace/pod.
    assert_eq!(
        server
            .get(&format!("/debug/config_dump?proxy={CART_0}"))
            .await
            .1,
        body
    );
    assert_eq!(
        server.get("/debug/config_dump?proxy=shop/cart-0").await.1,
        body
    );

    let (status, body) = server.get("/debug/config_dump?proxy=nobody").await;
    assert_eq!(status, 404);
    // It says where the list is, not the list: a 404 is not sized by the proxies.
    assert!(body.contains("/debug/syncz"), "{body}");
    assert!(!body.contains(CART_0), "{body}");
    let (status, body) = server
        .get(&format!("/debug/config_dump?proxy={}", "x".repeat(4000)))
        .await;
    assert_eq!(status, 404);
    assert!(body.len() < 1024, "{} bytes", body.len());
    assert_eq!(server.get("/debug/config_dump").await.0, 400);
}

#[tokio::test]
async fn metrics_count_proxies_pushes_and_latencies() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(EDS, &[CART]);
    let first = client.recv_type(EDS).await;
    client.ack(&first);
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    let changed = client.recv_type(EDS).await;
    client.ack(&changed);
    server
        .wait_acked(CART_0, "EDS", &changed.version_info)
        .await;

    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        "lanyard_xds_connected_proxies 1\n",
        "lanyard_xds_pushes_total{type=\"EDS\"} 2\n",
        "lanyard_xds_pushes_total{type=\"CDS\"} 0\n",
        "lanyard_xds_snapshot_generation 2\n",
        // Only the push caused by a change is timed, and its ACK.
        "lanyard_xds_push_latency_seconds_count{type=\"EDS\"} 1\n",
        "lanyard_xds_convergence_seconds_count{type=\"EDS\"} 1\n",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    drop(client);
    let gone = tokio::time::timeout(lanyard_xds::testing::WAIT, async {
        while !server.server.streams().is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the stream stayed registered");
    assert!(
        server
            .get("/metrics")
            .await
            .1
            .contains("lanyard_xds_connected_proxies 0\n")
    );
}

#[tokio::test]
async fn ready_only_after_the_first_snapshot() {
    let server = XdsServer::start(ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve_debug(listener).await });
    assert_eq!(http_get(address, "/healthz").await.0, 200);
    let (status, body) = http_get(address, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let mut snapshots = server.snapshots();
    server.publish(lanyard_xds::translate(&base(), &Default::default()));
    tokio::time::timeout(
        lanyard_xds::testing::WAIT,
        snapshots.wait_for(Option::is_some),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(http_get(address, "/readyz").await.0, 200);

    // The source's hook: its lines show either way, and it can hold readiness back.
    let source = Arc::new(Source(Mutex::new(Readiness {
        ready: true,
        detail: vec!["degraded: GRPCRoute unavailable".into()],
    })));
    server.set_source_status(source.clone());
    let (status, body) = http_get(address, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with("\ndegraded: GRPCRoute unavailable\n"),
        "{body}"
    );
    assert!(
        http_get(address, "/metrics")
            .await
            .1
            .ends_with("test_source_series 1\n")
    );
    source.0.lock().unwrap().ready = false;
    let (status, body) = http_get(address, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: serving snapshot 1"), "{body}");
    assert!(!server.is_ready());
    server.shutdown();
}

#[derive(Debug)]
struct Source(Mutex<Readiness>);

impl SourceStatus for Source {
    fn readiness(&self) -> Readiness {
        self.0.lock().unwrap().clone()
    }

    fn metrics(&self) -> String {
        "test_source_series 1\n".into()
    }
}

/// After a NACK the proxy runs what it acknowledged: that is the active config, and the
/// rejected version sits beside it in `error_state` with the proxy's message, as in Envoy's
/// own config dump.
#[tokio::test]
async fn config_dump_shows_the_acked_config_as_active_and_the_rejected_one_beside_it() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(EDS, &[CART]);
    let v1 = client.recv_type(EDS).await;
    client.ack(&v1);
    set_endpoints(&mut model, "cart", &["10.1.0.7"]);
    server.publish(&model).await;
    let v2 = client.recv_type(EDS).await;
    client.nack(&v2, &format!("{CART}: endpoint rejected by the test"));
    server
        .wait_for_stream(CART_0, "showing the NACK", |s| {
            s.type_sync("EDS").is_some_and(|t| t.last_nack.is_some())
        })
        .await;

    let (status, body) = server
        .get(&format!("/debug/config_dump?proxy={CART_0}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let dump = json(&body);
    let endpoints = &dump["configs"][0];
    assert_eq!(
        endpoints["@type"],
        "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"
    );
    let entry = &endpoints["dynamic_endpoint_configs"][0];
    let address = |config: &Value| {
        config["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            ["address"]
            .clone()
    };
    assert_eq!(address(&entry["endpoint_config"]), "10.1.0.5", "{entry}");
    assert_eq!(entry["client_status"], "NACKED");
    let error = &entry["error_state"];
    assert_eq!(
        address(&error["failed_configuration"]),
        "10.1.0.7",
        "{entry}"
    );
    assert_eq!(
        error["details"],
        format!("{CART}: endpoint rejected by the test")
    );
    assert!(
        error["last_update_attempt"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_ne!(error["version_info"], entry["version_info"]);

    // A later version it accepts is active, with no error left.
    set_endpoints(&mut model, "cart", &["10.1.0.8"]);
    server.publish(&model).await;
    let v3 = client.recv_type(EDS).await;
    client.ack(&v3);
    server.wait_acked(CART_0, "EDS", &v3.version_info).await;
    let dump = json(
        &server
            .get(&format!("/debug/config_dump?proxy={CART_0}"))
            .await
            .1,
    );
    let entry = &dump["configs"][0]["dynamic_endpoint_configs"][0];
    assert_eq!(address(&entry["endpoint_config"]), "10.1.0.8", "{entry}");
    assert_eq!(entry["client_status"], "ACKED");
    assert!(entry.get("error_state").is_none(), "{entry}");
}

/// Incremental: a new cluster the proxy rejects is not active; it is listed with its
/// `error_state` only, the others stay active.
#[tokio::test]
async fn config_dump_lists_a_rejected_new_cluster_with_its_error_only() {
    let mut model = base();
    let server = TestServer::start(&model).await;
    let mut client = DeltaClient::connect(server.ads, node(CART_0)).await;
    client.subscribe(CDS, &[], &[]);
    let first = client.recv().await;
    client.ack(&first);
    add_service(&mut model, "new", "10.96.0.20");
    server.publish(&model).await;
    let added = client.recv().await;
    let new = cluster("new");
    client.nack(&added, &format!("cluster {new}: rejected by the test"));
    server
        .wait_for_stream(CART_0, "showing the NACK", |s| {
            s.type_sync("CDS").is_some_and(|t| t.last_nack.is_some())
        })
        .await;
    let dump = json(
        &server
            .get(&format!("/debug/config_dump?proxy={CART_0}"))
            .await
            .1,
    );
    let clusters = &dump["configs"][0];
    assert_eq!(clusters["version_info"], first.system_version_info);
    let entries = clusters["dynamic_active_clusters"].as_array().unwrap();
    assert_eq!(entries.len(), first.resources.len() + 1);
    let rejected: Vec<&Value> = entries
        .iter()
        .filter(|e| e["client_status"] == "NACKED")
        .collect();
    assert_eq!(rejected.len(), 1, "{entries:?}");
    assert!(rejected[0].get("cluster").is_none(), "{:?}", rejected[0]);
    assert_eq!(
        rejected[0]["error_state"]["failed_configuration"]["name"],
        new
    );
    assert!(
        entries
            .iter()
            .filter(|e| e["client_status"] == "ACKED")
            .all(|e| e["cluster"]["name"].is_string())
    );
}

#[tokio::test]
async fn what_a_proxy_chose_is_clipped_on_the_debug_pages() {
    // Names this long are refused by default (--max-name-length): an operator who raised the
    // limit still gets bounded pages.
    let mut limits = lanyard_xds::Limits::default();
    limits.stream.max_name_length = 1 << 20;
    let server = TestServer::start_limited(&base(), limits).await;
    let mut client = SotwClient::connect(server.ads, node(CART_0)).await;
    // 20 names of 100 KB, a NACK message of 1 MB, a version of 100 KB.
    let names: Vec<String> = (0..20)
        .map(|i| format!("{i}{}", "n".repeat(100_000)))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    client.subscribe(LDS, &names);
    client.recv_type(LDS).await;
    client.subscribe(CDS, &[]);
    let clusters = client.recv_type(CDS).await;
    client.nack(&clusters, &"m".repeat(1 << 20));
    server
        .wait_for_stream(CART_0, "showing the NACK", |s| {
            s.type_sync("CDS").is_some_and(|t| t.last_nack.is_some())
        })
        .await;

    let (status, body) = server.get("/debug/syncz").await;
    assert_eq!(status, 200);
    assert!(body.len() < 64 * 1024, "syncz is {} bytes", body.len());
    let syncz = json(&body);
    let lds = &syncz["proxies"][0]["types"]["LDS"];
    assert_eq!(lds["subscribed_count"], 20);
    let first = lds["subscribed"][0].as_str().unwrap();
    assert!(
        first.ends_with("more bytes)"),
        "{}",
        &first[first.len() - 40..]
    );
    let nack = &syncz["proxies"][0]["types"]["CDS"]["last_nack"]["message"];
    assert!(nack.as_str().unwrap().len() < 1024);

    let (status, body) = server
        .get(&format!("/debug/config_dump?proxy={CART_0}"))
        .await;
    assert_eq!(status, 200);
    assert!(
        body.len() < 256 * 1024,
        "config_dump is {} bytes",
        body.len()
    );
}
