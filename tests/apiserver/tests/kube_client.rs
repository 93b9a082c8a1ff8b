//! The fixture against the real `kube::Client`: create, get, list, update conflicts, delete,
//! finalizers, discovery and the request counter. Patches and status are in `patch_and_status.rs`.

mod support;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{client, code, raw, start};

fn service(name: &str, app: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap()
}

fn rv(obj: &impl kube::Resource) -> u64 {
    obj.meta()
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn create_get_list_and_delete_a_service() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");

    let created = api
        .create(&PostParams::default(), &service("web", "web"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert!(
        created
            .spec
            .as_ref()
            .unwrap()
            .cluster_ip
            .as_deref()
            .unwrap()
            .starts_with("10.96.")
    );
    api.create(&PostParams::default(), &service("api", "api"))
        .await
        .unwrap();

    let got = api.get("web").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert_eq!(
        code(
            api.create(&PostParams::default(), &service("web", "web"))
                .await
                .unwrap_err()
        ),
        409
    );

    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    assert!(
        all.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv(&created)
    );
    let web = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(
        web.items
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        vec!["web"]
    );
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=api"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    assert_eq!(by_name.items[0].metadata.name.as_deref(), Some("api"));

    let deleted = api.delete("web", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        deleted.left().unwrap().metadata.name.as_deref(),
        Some("web")
    );
    assert_eq!(code(api.get("web").await.unwrap_err()), 404);
    assert_eq!(
        code(
            api.delete("web", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        404
    );
    assert!(
        server
            .object("v1", "Service", Some("default"), "web")
            .is_none()
    );
    assert!(
        server
            .object("v1", "Service", Some("default"), "api")
            .is_some()
    );
}

#[tokio::test]
async fn create_checks_names_and_namespaces() {
    let server = start().await;
    let c = client(&server).await;
    let missing_ns: Api<Service> = Api::namespaced(c.clone(), "nowhere");
    assert_eq!(
        code(
            missing_ns
                .create(&PostParams::default(), &service("a", "a"))
                .await
                .unwrap_err()
        ),
        404
    );

    let namespaces: Api<Namespace> = Api::all(c.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let shop: Api<Service> = Api::namespaced(c, "shop");
    let generated: Service =
        serde_json::from_value(json!({"metadata": {"generateName": "web-"}})).unwrap();
    let made = shop
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(made.metadata.name.as_deref().unwrap().starts_with("web-"));

    let (status, body) = raw(
        &server,
        "POST",
        "/api/v1/namespaces/shop/services",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Service","metadata":{}}"#,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("\"reason\":\"Invalid\""), "{body}");

    namespaces
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        server.objects("v1", "Service").is_empty(),
        "namespace deletion removes its objects"
    );
}

#[tokio::test]
async fn update_with_a_stale_resource_version_conflicts() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let first = api
        .create(&PostParams::default(), &service("web", "web"))
        .await
        .unwrap();

    let mut changed = first.clone();
    changed
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "fe".into());
    let second = api
        .replace("web", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert!(rv(&second) > rv(&first));

    let mut stale = first.clone();
    stale
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "be".into());
    let err = api
        .replace("web", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(code(err), 409);
    assert_eq!(
        api.get("web").await.unwrap().metadata.labels.unwrap()["tier"],
        "fe"
    );

    // Without a resourceVersion the update is unconditional.
    let mut unconditional = second.clone();
    unconditional.metadata.resource_version = None;
    unconditional
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "be".into());
    let third = api
        .replace("web", &PostParams::default(), &unconditional)
        .await
        .unwrap();
    assert!(rv(&third) > rv(&second));

    // An update that changes nothing writes nothing.
    let same = api
        .replace("web", &PostParams::default(), &third)
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&third));
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let mut svc = service("web", "web");
    svc.metadata.finalizers = Some(vec!["lanyard.dev/test".into()]);
    api.create(&PostParams::default(), &svc).await.unwrap();
    let deleting = api
        .delete("web", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert!(api.get("web").await.is_ok());
    let clear = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    api.patch("web", &PatchParams::default(), &clear)
        .await
        .unwrap();
    assert_eq!(code(api.get("web").await.unwrap_err()), 404);
}

#[tokio::test]
async fn discovery_and_the_request_counter() {
    let server = start().await;
    let c = client(&server).await;
    let discovery = kube::discovery::Discovery::new(c.clone())
        .run()
        .await
        .unwrap();
    let gateway = discovery
        .groups()
        .find(|g| g.name() == "gateway.networking.k8s.io")
        .expect("gateway group");
    let (ar, caps) = gateway
        .recommended_kind("HTTPRoute")
        .expect("HTTPRoute discovered");
    assert_eq!(
        (ar.version.as_str(), ar.plural.as_str()),
        ("v1", "httproutes")
    );
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    for kind in [
        "Service",
        "EndpointSlice",
        "Lease",
        "GRPCRoute",
        "TrafficSplit",
        "CustomResourceDefinition",
    ] {
        assert!(
            discovery
                .groups()
                .any(|g| g.recommended_kind(kind).is_some()),
            "{kind} discovered"
        );
    }
    let version = c.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");

    let api: Api<Service> = Api::namespaced(c, "default");
    api.list(&ListParams::default()).await.unwrap();
    api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        server.request_count("list", "/api/v1/namespaces/default/services"),
        2
    );
    assert_eq!(server.request_count("get", "/version"), 1);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path == "/apis/gateway.networking.k8s.io/v1")
    );
}

#[tokio::test]
async fn dry_run_stores_nothing_and_deletecollection_uses_selectors() {
    let server = start().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = api.create(&dry, &service("ghost", "web")).await.unwrap();
    assert_eq!(answered.metadata.name.as_deref(), Some("ghost"));
    assert!(
        server
            .object("v1", "Service", Some("default"), "ghost")
            .is_none()
    );
    let version = server.resource_version();

    for (name, app) in [("a", "web"), ("b", "web"), ("c", "api")] {
        api.create(&PostParams::default(), &service(name, app))
            .await
            .unwrap();
    }
    assert_eq!(server.resource_version(), version + 3);
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=web"),
        )
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(deleted.items.len(), 2);
    let left: Vec<_> = server
        .objects("v1", "Service")
        .iter()
        .map(|s| s["metadata"]["name"].clone())
        .collect();
    assert_eq!(left, vec![json!("c")]);
}
