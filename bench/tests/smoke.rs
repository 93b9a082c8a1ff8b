//! Every scenario at a tiny size, asserting correctness facts only (tests never time
//! anything): no unaffected proxy is pushed, an endpoint change sends only EDS, every
//! proxy gets its full config, every churn event converges.

use std::path::PathBuf;
use std::time::Duration;

use lanyard_bench::scenarios::{self, Config};
use serde_json::Value;

fn config(name: &str) -> Config {
    Config {
        out: std::env::temp_dir()
            .join(format!("lanyard-bench-smoke-{}-{name}", std::process::id())),
        client: PathBuf::from(env!("CARGO_BIN_EXE_lanyard-bench-client")),
        bench: PathBuf::from(env!("CARGO_BIN_EXE_lanyard-bench")),
        smoke: true,
        sizes: None,
        mesh_services: 20,
        churn: Duration::from_secs(3),
        kube_churn: Duration::from_secs(3),
    }
}

fn results(json: &Value) -> &Vec<Value> {
    json["results"].as_array().expect("results")
}

#[test]
fn translate_reports_every_type() {
    let json = scenarios::translate::run(&config("translate")).unwrap();
    for r in results(&json) {
        for ty in ["CDS", "EDS", "LDS", "RDS"] {
            assert!(r["bytes"][ty].as_u64().unwrap() > 0, "{ty}: {r}");
        }
        // Every synthetic table has a segment prefix match, so proxyless gRPC clients get a
        // form of their own beside the Envoy form; one more is the consumer route variant.
        assert_eq!(
            r["distinct_resources"]["RDS"],
            2 * r["services"].as_u64().unwrap() + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fanout_pushes_only_affected_proxies_and_only_changed_types() {
    let json = scenarios::fanout::run(&config("fanout")).await.unwrap();
    assert_eq!(results(&json).len(), 6);
    for r in results(&json) {
        let real = &r["real"];
        let floor = &r["floor"];
        assert_eq!(r["stream_retries"], 0, "{r}");
        assert_eq!(real["unaffected_proxies_pushed"], 0, "{r}");
        assert_eq!(real["needless_type_responses"], 0, "{r}");
        assert_eq!(
            floor["responses"], real["responses"],
            "the floor sends what the server sent: {r}"
        );
        let affected = real["affected_proxies"].as_u64().unwrap();
        let proxies = r["proxies"].as_u64().unwrap();
        let sent = |ty: &str| real["responses"][ty].as_u64().unwrap();
        match r["change"].as_str().unwrap() {
            "route_one_namespace" => {
                assert!(affected > 0 && affected < proxies, "{r}");
                assert_eq!(sent("RDS"), affected, "{r}");
            }
            "route_all_namespaces" => {
                assert_eq!(affected, proxies, "{r}");
                assert_eq!(sent("RDS"), proxies, "{r}");
            }
            "endpoint" => {
                assert_eq!(affected, proxies, "{r}");
                assert_eq!(sent("EDS"), proxies, "{r}");
            }
            other => panic!("unexpected change {other}"),
        }
        let others: u64 = ["CDS", "EDS", "LDS", "RDS"].iter().map(|t| sent(t)).sum();
        assert_eq!(
            others, affected,
            "one response per affected proxy, of the changed type only: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_gives_every_proxy_its_full_config() {
    let json = scenarios::fanout::reconnect(&config("reconnect"))
        .await
        .unwrap();
    for r in results(&json) {
        assert_eq!(r["every_proxy_full_config"], true, "{r}");
        assert_eq!(r["stream_retries"], 0, "{r}");
        assert_eq!(r["floor_every_proxy_full_config"], true, "{r}");
        // The same responses, but for their nonces.
        let real = r["bytes_real"].as_f64().unwrap();
        let floor = r["bytes_floor"].as_f64().unwrap();
        assert!((real - floor).abs() <= real * 0.01, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_measures_both_servers() {
    let json = scenarios::idle::run(&config("idle")).await.unwrap();
    for r in results(&json) {
        assert!(r["real_rssn_kib"].as_u64().unwrap() > 0, "{r}");
        assert!(r["floor_rssn_kib"].as_u64().unwrap() > 0, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn churn_events_all_converge() {
    let json = scenarios::churn::run(&config("churn")).await.unwrap();
    assert!(json["events"].as_u64().unwrap() > 10, "{json}");
    assert!(json["route_changes"].as_u64().unwrap() >= 1, "{json}");
    assert_eq!(json["unconverged_events"], 0, "{json}");
    assert_eq!(json["stream_retries"], 0, "{json}");
    assert_eq!(json["unknown_versions"], 0, "{json}");
}
