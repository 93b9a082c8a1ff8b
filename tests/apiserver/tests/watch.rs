//! Watches against kube-runtime: event delivery, relist after 410 Gone, recovery from dropped
//! connections, bookmarks, resuming from a resourceVersion and streaming lists.

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, Event, InitialListStrategy};
use kube::runtime::{WatchStreamExt, reflector};
use lanyard_test_apiserver::Config;
use serde_json::json;
use support::{client, drive, eventually, raw, start, start_with, until};

fn service(name: &str) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}))
        .unwrap()
}

fn name_of(e: &Event<Service>) -> Option<&str> {
    match e {
        Event::Apply(s) | Event::Delete(s) | Event::InitApply(s) => s.metadata.name.as_deref(),
        _ => None,
    }
}

fn is_init_done(e: &Result<Event<Service>, watcher::Error>) -> bool {
    matches!(e, Ok(Event::InitDone))
}

#[tokio::test]
async fn watcher_sees_added_modified_and_deleted() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    api.create(&PostParams::default(), &service("before"))
        .await
        .unwrap();
    let mut events = drive(watcher::watcher(api.clone(), watcher::Config::default()));

    let init = until(&mut events, is_init_done).await;
    assert!(init.iter().any(
        |e| matches!(e, Ok(Event::InitApply(s)) if s.metadata.name.as_deref() == Some("before"))
    ));

    api.create(&PostParams::default(), &service("web"))
        .await
        .unwrap();
    until(
        &mut events,
        |e| matches!(e, Ok(ev @ Event::Apply(_)) if name_of(ev) == Some("web")),
    )
    .await;

    let label = Patch::Merge(json!({"metadata": {"labels": {"v": "2"}}}));
    api.patch("web", &PatchParams::default(), &label)
        .await
        .unwrap();
    until(&mut events, |e| matches!(e, Ok(Event::Apply(s)) if s.metadata.labels.as_ref().is_some_and(|l| l.contains_key("v")))).await;

    api.delete("web", &DeleteParams::default()).await.unwrap();
    until(
        &mut events,
        |e| matches!(e, Ok(ev @ Event::Delete(_)) if name_of(ev) == Some("web")),
    )
    .await;
}

#[tokio::test]
async fn injected_gone_makes_the_watcher_relist_and_recover() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    api.create(&PostParams::default(), &service("a"))
        .await
        .unwrap();
    let mut events = drive(watcher::watcher(api.clone(), watcher::Config::default()));
    until(&mut events, is_init_done).await;
    eventually("the watch is open", || server.open_watches() == 1).await;
    let lists_before = server.request_count("list", "/api/v1/namespaces/default/services");

    server.inject_gone("Service");
    let seen = until(&mut events, is_init_done).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Err(watcher::Error::WatchError(s)) if s.code == 410)),
        "a 410 error first: {seen:#?}"
    );
    assert!(seen.iter().any(|e| matches!(e, Ok(Event::Init))));
    assert!(
        seen.iter()
            .any(|e| matches!(e, Ok(ev @ Event::InitApply(_)) if name_of(ev) == Some("a")))
    );
    assert_eq!(
        server.request_count("list", "/api/v1/namespaces/default/services"),
        lists_before + 1
    );

    api.create(&PostParams::default(), &service("b"))
        .await
        .unwrap();
    until(
        &mut events,
        |e| matches!(e, Ok(ev @ Event::Apply(_)) if name_of(ev) == Some("b")),
    )
    .await;
}

#[tokio::test]
async fn injected_gone_hits_the_next_watch_when_none_is_open() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    server.inject_gone("services");
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(support::WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, WatchEvent::Error(ref e) if e.code == 410),
        "{first:?}"
    );
}

#[tokio::test]
async fn dropped_watches_resume_from_their_version_without_relisting() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let (reader, writer) = reflector::store();
    let mut events = drive(
        reflector(
            writer,
            watcher::watcher(api.clone(), watcher::Config::default()),
        )
        .default_backoff(),
    );
    until(&mut events, is_init_done).await;
    eventually("the watch is open", || server.open_watches() == 1).await;

    server.drop_watches();
    api.create(&PostParams::default(), &service("after-drop"))
        .await
        .unwrap();
    until(
        &mut events,
        |e| matches!(e, Ok(ev @ Event::Apply(_)) if name_of(ev) == Some("after-drop")),
    )
    .await;
    assert_eq!(reader.state().len(), 1);
    assert_eq!(
        server.request_count("list", "/api/v1/namespaces/default/services"),
        1,
        "resumed, not relisted"
    );
    assert!(server.request_count("watch", "/api/v1/namespaces/default/services") >= 2);
}

#[tokio::test]
async fn a_watch_older_than_the_history_gets_410_and_the_watcher_recovers() {
    // No bookmarks, so the watcher's version stays where the Service list left it.
    let config = Config {
        history_limit: 3,
        bookmark_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    let server = start_with(config).await;
    let c = client(&server).await;
    let api: Api<Service> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), &service("a"))
        .await
        .unwrap();
    let mut events = drive(watcher::watcher(api.clone(), watcher::Config::default()));
    until(&mut events, is_init_done).await;
    eventually("the watch is open", || server.open_watches() == 1).await;

    // Changes to other kinds push the Service watcher's version out of the history; a
    // reconnect from it must then relist.
    let configmaps: Api<ConfigMap> = Api::namespaced(c, "default");
    for i in 0..4 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm{i}")}})).unwrap();
        configmaps
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }
    server.drop_watches();
    let seen = until(&mut events, is_init_done).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Err(watcher::Error::WatchError(s)) if s.code == 410)),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, Ok(ev @ Event::InitApply(_)) if name_of(ev) == Some("a")))
    );

    server.compact_history();
    let (status, body) = raw(
        &server,
        "GET",
        "/api/v1/namespaces/default/services?watch=true&resourceVersion=1",
        "application/json",
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"type\":\"ERROR\"")
            && body.contains("\"code\":410")
            && body.contains("Expired"),
        "{body}"
    );
    let list = "/api/v1/namespaces/default/services?resourceVersion=1&resourceVersionMatch=Exact";
    assert_eq!(
        raw(&server, "GET", list, "application/json", "").await.0,
        410
    );
}

#[tokio::test]
async fn watches_resume_from_a_resource_version_and_send_bookmarks() {
    let server = start_with(Config {
        bookmark_interval: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let a = api
        .create(&PostParams::default(), &service("a"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &service("b"))
        .await
        .unwrap();
    let from = a.metadata.resource_version.unwrap();

    let mut stream = api
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    let seen = until(&mut stream, |e| matches!(e, Ok(WatchEvent::Bookmark(_)))).await;
    assert!(
        matches!(&seen[0], Ok(WatchEvent::Added(s)) if s.metadata.name.as_deref() == Some("b")),
        "{seen:#?}"
    );
    let Some(Ok(WatchEvent::Bookmark(bm))) = seen.last() else {
        unreachable!()
    };
    assert_eq!(
        bm.metadata.resource_version,
        server.resource_version().to_string()
    );

    let quiet = WatchParams {
        bookmarks: false,
        ..WatchParams::default()
    };
    let mut stream = api
        .watch(&quiet, &server.resource_version().to_string())
        .await
        .unwrap()
        .boxed();
    let nothing = tokio::time::timeout(Duration::from_millis(400), stream.next()).await;
    assert!(nothing.is_err(), "no bookmarks unless asked: {nothing:?}");
}

#[tokio::test]
async fn label_selector_watches_report_transitions() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let params = WatchParams::default().labels("app=web");
    let mut stream = api
        .watch(&params, &server.resource_version().to_string())
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &service("s"))
        .await
        .unwrap();
    let label = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
    api.patch("s", &PatchParams::default(), &label("web"))
        .await
        .unwrap();
    api.patch("s", &PatchParams::default(), &label("api"))
        .await
        .unwrap();
    let seen = until(&mut stream, |e| matches!(e, Ok(WatchEvent::Deleted(_)))).await;
    let kinds: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Ok(WatchEvent::Added(_)) => Some("ADDED"),
            Ok(WatchEvent::Deleted(_)) => Some("DELETED"),
            Ok(WatchEvent::Modified(_)) => Some("MODIFIED"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec!["ADDED", "DELETED"]);
}

#[tokio::test]
async fn streaming_lists_end_with_the_initial_events_bookmark() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    api.create(&PostParams::default(), &service("a"))
        .await
        .unwrap();
    let config = watcher::Config::default().streaming_lists();
    assert_eq!(
        config.initial_list_strategy,
        InitialListStrategy::StreamingList
    );
    let mut events = drive(watcher::watcher(api.clone(), config));
    let seen = until(&mut events, is_init_done).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Ok(ev @ Event::InitApply(_)) if name_of(ev) == Some("a"))),
        "{seen:#?}"
    );
    assert_eq!(
        server.request_count("list", "/api/v1/namespaces/default/services"),
        0
    );
    api.create(&PostParams::default(), &service("b"))
        .await
        .unwrap();
    until(
        &mut events,
        |e| matches!(e, Ok(ev @ Event::Apply(_)) if name_of(ev) == Some("b")),
    )
    .await;
}
