//! Faults on demand: error answers (403, 404, 429 with Retry-After, 503) for matching requests,
//! N times or until cleared; stalls; cut watches; unserved versions; the HTTP control endpoint.

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use lanyard_test_apiserver::Fault;
use serde_json::{Value, json};
use support::{client, code, drive, eventually, raw, start, until};

fn service(name: &str) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}))
        .unwrap()
}

#[tokio::test]
async fn status_faults_answer_matching_requests_n_times_or_until_cleared() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let lp = ListParams::default();

    // Twice, only lists of Services in "default".
    let f = server.add_fault(
        Fault::status(403)
            .verb("list")
            .resource("Service")
            .namespace("default")
            .times(2),
    );
    let other: Api<Service> = Api::namespaced(client(&server).await, "kube-system");
    other
        .list(&lp)
        .await
        .expect("another namespace is not matched");
    api.get_opt("web").await.expect("a get is not matched");
    for _ in 0..2 {
        let err = api.list(&lp).await.unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("expected an API error, got {err:?}")
        };
        assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
        assert!(
            status.message.contains("cannot list resource \"services\""),
            "{}",
            status.message
        );
    }
    api.list(&lp).await.expect("used up after two");
    assert_eq!(server.fault_hits(f), 2);

    // Until cleared. (Raw requests: kube-client's default retry policy, kube-client 4.2
    // `RetryPolicy::server_retry`, retries 429/503/504 up to 15 times with backoff.)
    let f = server.add_fault(Fault::status(503).resource("services"));
    let path = "/api/v1/namespaces/default/services";
    for _ in 0..3 {
        let (c, body) = raw(&server, "GET", path, "application/json", "").await;
        assert_eq!(c, 503);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["reason"],
            "ServiceUnavailable"
        );
    }
    let body = serde_json::to_string(&service("web")).unwrap();
    let (c, _) = raw(&server, "POST", path, "application/json", &body).await;
    assert_eq!(c, 503);
    server.clear_fault(f);
    api.create(&PostParams::default(), &service("web"))
        .await
        .unwrap();
    assert_eq!(server.fault_hits(f), 4);

    // 404 on a named get is NotFound for that name.
    server.add_fault(Fault::status(404).verb("get").name("web").times(1));
    assert_eq!(code(api.get("web").await.unwrap_err()), 404);
    api.get("web").await.unwrap();
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let server = start().await;
    server.add_fault(Fault::too_many_requests(7).resource("services").times(1));
    let (code, body) = raw(
        &server,
        "GET",
        "/api/v1/namespaces/default/services",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 429);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 7);
    // The header, read with a raw connection.
    server.add_fault(Fault::too_many_requests(7).resource("services").times(1));
    let head = tokio::task::spawn_blocking({
        let addr = server.addr;
        move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(support::WAIT)).unwrap();
            write!(
                s,
                "GET /api/v1/services HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out.to_ascii_lowercase()
        }
    })
    .await
    .unwrap();
    assert!(head.contains("\r\nretry-after: 7\r\n"), "{head}");
}

#[tokio::test]
async fn watch_faults_match_only_watches_and_watchers_retry() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let f = server.add_fault(Fault::status(403).resource("services").watch(true));
    api.list(&ListParams::default())
        .await
        .expect("a list is not a watch");
    let mut events = drive(watcher::watcher(api.clone(), watcher::Config::default()));
    // The initial list works; the watch after it is refused until the fault is cleared.
    until(&mut events, |e| matches!(e, Ok(Event::InitDone))).await;
    until(
        &mut events,
        |e| matches!(e, Err(watcher::Error::WatchFailed(kube::Error::Api(s))) if s.code == 403),
    )
    .await;
    server.clear_fault(f);
    api.create(&PostParams::default(), &service("web"))
        .await
        .unwrap();
    until(&mut events, |e| matches!(e, Ok(Event::Apply(_)))).await;
}

#[tokio::test]
async fn stalls_hold_requests_for_a_time_or_until_released() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let f = server.add_fault(Fault::stall().verb("create"));
    let held = tokio::spawn({
        let api = api.clone();
        async move { api.create(&PostParams::default(), &service("web")).await }
    });
    eventually("the create to be held", || server.fault_hits(f) == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "the create was held");
    assert!(
        server
            .object("v1", "Service", Some("default"), "web")
            .is_none()
    );
    server.release_stalls();
    tokio::time::timeout(support::WAIT, held)
        .await
        .expect("released")
        .unwrap()
        .expect("then served normally");
    server.clear_fault(f);

    server.add_fault(
        Fault::stall_for(Duration::from_millis(300))
            .verb("get")
            .times(1),
    );
    let started = std::time::Instant::now();
    api.get("web").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn cut_watches_end_only_that_kinds_streams() {
    let server = start().await;
    let c = client(&server).await;
    let services: Api<Service> = Api::namespaced(c.clone(), "default");
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c, "default");
    let mut s = drive(watcher::watcher(services, watcher::Config::default()));
    let mut m = drive(watcher::watcher(maps, watcher::Config::default()));
    until(&mut s, |e| matches!(e, Ok(Event::InitDone))).await;
    until(&mut m, |e| matches!(e, Ok(Event::InitDone))).await;
    eventually("two open watches", || server.open_watches() == 2).await;
    let watches_of = |plural: &str| {
        server
            .requests()
            .iter()
            .filter(|r| r.verb == "watch" && r.path.ends_with(plural))
            .count()
    };
    let (svc_before, cm_before) = (watches_of("/services"), watches_of("/configmaps"));
    server.cut_watches(Some("Service"));
    eventually("the Service watcher to watch again", || {
        watches_of("/services") > svc_before
    })
    .await;
    assert_eq!(watches_of("/configmaps"), cm_before, "ConfigMaps untouched");
    drop((s.next(), m.next()));
}

#[tokio::test]
async fn unserved_versions_leave_discovery_and_answer_404() {
    let server = start().await;
    let c = client(&server).await;
    let group = "gateway.networking.k8s.io";
    let lp = ListParams::default();
    let routes: Api<kube::api::DynamicObject> =
        Api::all_with(c.clone(), &support::httproute_resource());
    routes.list(&lp).await.unwrap();

    server.unserve_version(group, "v1", Some("httproutes"));
    assert_eq!(code(routes.list(&lp).await.unwrap_err()), 404);
    let discovery = kube::Discovery::new(c.clone()).run().await.unwrap();
    let served: Vec<_> = discovery
        .groups()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.resources_by_stability())
        .filter(|(r, _)| r.kind == "HTTPRoute")
        .map(|(r, _)| r.version)
        .collect();
    assert_eq!(served, ["v1beta1"], "only v1beta1 HTTPRoute left");
    let (code_, _) = raw(
        &server,
        "GET",
        &format!("/apis/{group}/v1"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(code_, 200, "other v1 kinds stay");

    server.serve_version(group, "v1", Some("httproutes"));
    routes.list(&lp).await.unwrap();

    // A whole group/version.
    server.unserve_version(group, "v1", None);
    let (code_, _) = raw(
        &server,
        "GET",
        &format!("/apis/{group}/v1"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(code_, 404);
    server.clear_faults();
    routes.list(&lp).await.unwrap();
}

#[tokio::test]
async fn the_control_endpoint_drives_the_same_faults() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let post = |path: &'static str, body: Value| {
        let server = &server;
        async move {
            let (code, body) =
                raw(server, "POST", path, "application/json", &body.to_string()).await;
            assert_eq!(code, 200, "{path}: {body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    let added = post(
        "/_lanyard/faults",
        json!({"match": {"verb": "list", "resource": "services"},
               "action": {"status": {"code": 429, "retryAfter": 1}}, "times": 1}),
    )
    .await;
    let id = added["id"].as_u64().unwrap();
    let (c, _) = raw(
        &server,
        "GET",
        "/api/v1/namespaces/default/services",
        "application/json",
        "",
    )
    .await;
    assert_eq!(c, 429);
    let (_, hits) = raw(
        &server,
        "GET",
        &format!("/_lanyard/faults/{id}"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(serde_json::from_str::<Value>(&hits).unwrap()["hits"], 1);
    api.list(&ListParams::default()).await.unwrap();

    post(
        "/_lanyard/faults/unserve",
        json!({"group": "", "version": "v1", "resource": "services"}),
    )
    .await;
    assert_eq!(
        code(api.list(&ListParams::default()).await.unwrap_err()),
        404
    );
    post(
        "/_lanyard/faults/serve",
        json!({"group": "", "version": "v1", "resource": "services"}),
    )
    .await;
    api.list(&ListParams::default()).await.unwrap();

    post(
        "/_lanyard/faults",
        json!({"match": {"verb": "create"}, "action": {"stall": {}}}),
    )
    .await;
    let held = tokio::spawn({
        let api = api.clone();
        async move { api.create(&PostParams::default(), &service("web")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished());
    let (c, _) = raw(
        &server,
        "DELETE",
        "/_lanyard/faults",
        "application/json",
        "",
    )
    .await;
    assert_eq!(c, 200);
    tokio::time::timeout(support::WAIT, held)
        .await
        .expect("clearing releases stalls")
        .unwrap()
        .unwrap();

    post(
        "/_lanyard/faults/cut-watches",
        json!({"resource": "Service"}),
    )
    .await;
    let (c, _) = raw(
        &server,
        "POST",
        "/_lanyard/faults",
        "application/json",
        r#"{"action": {"explode": {}}}"#,
    )
    .await;
    assert_eq!(c, 400);
}
