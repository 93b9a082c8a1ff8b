//! Kubernetes churn: the real `lanyard-controller` in Kubernetes mode against the loopback
//! API server (`lanyard-test-apiserver`), both as processes of their own. The driver loads a
//! cluster (1k Services, 10 Pods each, their EndpointSlices, a few hundred HTTPRoutes; Pods
//! carry the metadata a real cluster gives them: `managedFields`, a
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, other annotations, container
//! specs), waits for `/readyz`, then makes Pod updates that change nothing Lanyard reads (an
//! annotation, or a status condition's probe time) at a fixed rate, and reports the
//! controller's RSS (sampled from `/proc`), CPU seconds and the translations it ran
//! (`lanyard_translations_total` from its `/metrics`) during the churn.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::Config;
use crate::report::{self, Table, f2};

/// The size of the cluster and of the churn.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub services: usize,
    pub pods_per_service: usize,
    pub routes: usize,
    pub namespaces: usize,
    /// Pod updates per second.
    pub rate: u32,
    pub churn: Duration,
}

impl Size {
    fn of(config: &Config) -> Size {
        if config.smoke {
            Size {
                services: 20,
                pods_per_service: 3,
                routes: 5,
                namespaces: 2,
                rate: 20,
                churn: Duration::from_secs(3),
            }
        } else {
            let services = config
                .sizes
                .as_ref()
                .and_then(|s| s.first().copied())
                .unwrap_or(1000);
            Size {
                services,
                pods_per_service: 10,
                routes: (services * 3 / 10).max(1),
                namespaces: 20,
                rate: 50,
                churn: config.kube_churn,
            }
        }
    }

    fn pods(&self) -> usize {
        self.services * self.pods_per_service
    }
}

/// An HTTP/1 connection to the API server (or the debug endpoint).
struct Http {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Http {
    async fn connect(addr: &str) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(connection);
        Ok(Http {
            sender,
            host: addr.to_string(),
        })
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    async fn create(&mut self, path: &str, object: &Value) -> anyhow::Result<()> {
        let (status, body) = self
            .request(Method::POST, path, "application/json", Some(object))
            .await?;
        anyhow::ensure!(
            status.is_success(),
            "POST {path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    async fn merge_patch(&mut self, path: &str, patch: &Value) -> anyhow::Result<()> {
        let (status, body) = self
            .request(
                Method::PATCH,
                path,
                "application/merge-patch+json",
                Some(patch),
            )
            .await?;
        anyhow::ensure!(
            status.is_success(),
            "PATCH {path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }
}

fn namespace_of(size: &Size, service: usize) -> String {
    format!("ns-{}", service % size.namespaces)
}

fn pod_ip(n: usize) -> String {
    format!("10.{}.{}.{}", 128 + (n >> 16), (n >> 8) & 0xff, n & 0xff)
}

fn service(size: &Size, i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": namespace_of(size, i),
                     "labels": {"app": format!("svc-{i}")}},
        "spec": {
            "clusterIP": format!("10.96.{}.{}", i >> 8, i & 0xff),
            "selector": {"app": format!("svc-{i}")},
            "ports": [{"name": "http", "port": 8080, "targetPort": "http", "appProtocol": "http"}]
        }
    })
}

fn endpoint_slice(size: &Size, i: usize) -> Value {
    let endpoints: Vec<Value> = (0..size.pods_per_service)
        .map(|k| {
            json!({
                "addresses": [pod_ip(i * size.pods_per_service + k)],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": format!("node-{}", k % 5),
                "zone": format!("zone-{}", k % 3),
                "targetRef": {"kind": "Pod", "namespace": namespace_of(size, i),
                              "name": format!("svc-{i}-{k}")}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": namespace_of(size, i),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}"),
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}],
        "endpoints": endpoints
    })
}

/// A Pod as a Deployment makes it, with the metadata that comes with it.
fn pod(size: &Size, i: usize, k: usize) -> Value {
    let name = format!("svc-{i}-{k}");
    let namespace = namespace_of(size, i);
    let spec = json!({
        "serviceAccountName": format!("svc-{i}"),
        "nodeName": format!("node-{}", k % 5),
        "containers": [{
            "name": "app", "image": format!("registry.example.com/team/svc-{i}:1.2.{k}"),
            "args": ["--port=8080", "--log-level=info", "--config=/etc/app/config.yaml"],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                      {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"cpu": "1", "memory": "512Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"},
                             {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]
        }],
        "volumes": [{"name": "config", "configMap": {"name": format!("svc-{i}-config")}},
                    {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
    });
    let labels = json!({"app": format!("svc-{i}"), "pod-template-hash": "5d8f7c9b6"});
    let applied = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": name, "namespace": namespace, "labels": labels},
                         "spec": spec});
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace, "labels": labels,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": applied.to_string(),
                "kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090",
                "cluster-autoscaler.kubernetes.io/safe-to-evict": "true"
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": format!("svc-{i}-5d8f7c9b6"), "uid": format!("00000000-0000-0000-0000-{i:012}"),
                                 "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": spec
    })
}

fn pod_status(size: &Size, i: usize, k: usize, probe: usize) -> Value {
    let ip = pod_ip(i * size.pods_per_service + k);
    json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "hostIP": format!("192.168.0.{}", k % 5 + 1),
        "qosClass": "Burstable",
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-30T10:00:00Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-30T10:00:05Z",
             "lastProbeTime": format!("2026-11-30T10:{:02}:{:02}Z", (probe / 60) % 60, probe % 60)},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-11-30T10:00:05Z"},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-30T10:00:00Z"}
        ],
        "containerStatuses": [{"name": "app", "ready": true, "started": true, "restartCount": 0,
                               "image": format!("registry.example.com/team/svc-{i}:1.2.{k}"),
                               "imageID": "registry.example.com/team/app@sha256:0123456789abcdef",
                               "containerID": format!("containerd://{:064x}", i * 100 + k),
                               "state": {"running": {"startedAt": "2026-11-30T10:00:03Z"}}}]
    }})
}

fn http_route(size: &Size, i: usize) -> Value {
    let rules: Vec<Value> = (0..4)
        .map(|r| {
            json!({
                "matches": [{"path": {"type": "PathPrefix", "value": if r == 3 { "/".to_string() } else { format!("/api/v{r}") }}}],
                "backendRefs": [{"name": format!("svc-{i}"), "port": 8080, "weight": 90},
                                {"name": format!("svc-{}", (i + size.namespaces) % size.services), "port": 8080, "weight": 10}]
            })
        })
        .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("svc-{i}"), "namespace": namespace_of(size, i)},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": format!("svc-{i}"), "port": 8080}],
            "rules": rules
        }
    })
}

/// Creates the cluster's objects over `connections` parallel connections.
async fn load(api: &str, size: Size, connections: usize) -> anyhow::Result<()> {
    let mut http = Http::connect(api).await?;
    for n in 0..size.namespaces {
        http.create(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{n}")}}),
        )
        .await?;
    }
    let mut tasks = Vec::new();
    for c in 0..connections {
        let api = api.to_string();
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(&api).await?;
            for i in (c..size.services).step_by(connections) {
                let ns = namespace_of(&size, i);
                http.create(
                    &format!("/api/v1/namespaces/{ns}/services"),
                    &service(&size, i),
                )
                .await?;
                for k in 0..size.pods_per_service {
                    http.create(&format!("/api/v1/namespaces/{ns}/pods"), &pod(&size, i, k))
                        .await?;
                    http.merge_patch(
                        &format!("/api/v1/namespaces/{ns}/pods/svc-{i}-{k}/status"),
                        &pod_status(&size, i, k, 0),
                    )
                    .await?;
                }
                http.create(
                    &format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"),
                    &endpoint_slice(&size, i),
                )
                .await?;
                if i < size.routes {
                    http.create(
                        &format!("/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes"),
                        &http_route(&size, i),
                    )
                    .await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// `server: http://ADDR` of the kubeconfig.
fn api_address(kubeconfig: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(kubeconfig)?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .and_then(|s| s.trim().trim_matches('"').strip_prefix("http://"))
        .map(|s| s.trim_end_matches('/').to_string())
        .ok_or_else(|| anyhow::anyhow!("no http server in {}", kubeconfig.display()))
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Reads stdout lines of a child until one starts with `prefix`; returns the rest.
async fn line_with(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
) -> anyhow::Result<String> {
    let found = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(prefix) {
                return anyhow::Ok(rest.trim().to_string());
            }
        }
        anyhow::bail!("the process exited before printing {prefix:?}")
    };
    tokio::time::timeout(Duration::from_secs(60), found)
        .await
        .map_err(|_| anyhow::anyhow!("no {prefix:?} within 60 s"))?
}

/// A counter of the controller's `/metrics`.
async fn metric(debug: &str, name: &str) -> anyhow::Result<f64> {
    let mut http = Http::connect(debug).await?;
    let (_, body) = http
        .request(Method::GET, "/metrics", "text/plain", None)
        .await?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {name} in /metrics"))
}

async fn wait_ready(debug: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut http) = Http::connect(debug).await
            && let Ok((status, _)) = http
                .request(Method::GET, "/readyz", "text/plain", None)
                .await
            && status == StatusCode::OK
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "not ready within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the translation count has not moved for `quiet`.
async fn settle(debug: &str, quiet: Duration, timeout: Duration) -> anyhow::Result<f64> {
    let deadline = Instant::now() + timeout;
    let mut last = metric(debug, "lanyard_translations_total").await?;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = metric(debug, "lanyard_translations_total").await?;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return Ok(last);
        }
        anyhow::ensure!(Instant::now() < deadline, "translations never settled");
    }
}

/// Where the other binaries are: next to this one.
fn sibling(bench: &Path, name: &str) -> PathBuf {
    bench.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

pub async fn run(config: &Config) -> anyhow::Result<Value> {
    let size = Size::of(config);
    let mut apiserver = Command::new(sibling(&config.bench, "lanyard-test-apiserver"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting lanyard-test-apiserver (build it: cargo build --release -p lanyard-test-apiserver)")?;
    let mut lines = BufReader::new(apiserver.stdout.take().context("stdout")?).lines();
    let kubeconfig = PathBuf::from(
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .context("no kubeconfig path")?,
    );
    let _apiserver = Process(apiserver);
    let api = api_address(&kubeconfig)?;

    let started = Instant::now();
    load(&api, size, 4).await?;
    let load_s = started.elapsed().as_secs_f64();
    println!(
        "kube-churn: loaded {} Services, {} Pods, {} EndpointSlices, {} HTTPRoutes in {load_s:.1} s",
        size.services,
        size.pods(),
        size.services,
        size.routes
    );

    let mut controller = Command::new(sibling(&config.bench, "lanyard-controller"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--debug-address",
            "127.0.0.1:0",
            "--metrics-address",
            "127.0.0.1:0",
            "--identity",
            "bench",
            "--log",
            "warn",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context(
            "starting lanyard-controller (build it: cargo build --release -p lanyard-controller)",
        )?;
    let pid = controller.id().context("controller pid")?;
    let mut out = BufReader::new(controller.stdout.take().context("stdout")?).lines();
    let debug = line_with(&mut out, "debug listening on").await?;
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let _controller = Process(controller);
    let started = Instant::now();
    wait_ready(&debug, Duration::from_secs(600)).await?;
    let ready_s = started.elapsed().as_secs_f64();
    // Let the first status pass and any follow-up translation finish.
    let before = settle(&debug, Duration::from_secs(5), Duration::from_secs(300)).await?;
    let rss_start = report::rss_kib(pid);
    let cpu_start = report::cpu_time(pid);

    // The churn: every update changes nothing Lanyard reads.
    let mut http = Http::connect(&api).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / size.rate);
    let churn_start = Instant::now();
    let mut updates = 0usize;
    let mut rss_peak = rss_start;
    let mut next_sample = Instant::now();
    while churn_start.elapsed() < size.churn {
        tick.tick().await;
        let n = (updates * 7919) % size.pods();
        let (i, k) = (n / size.pods_per_service, n % size.pods_per_service);
        let ns = namespace_of(&size, i);
        let path = format!("/api/v1/namespaces/{ns}/pods/svc-{i}-{k}");
        if updates.is_multiple_of(2) {
            http.merge_patch(
                &path,
                &json!({"metadata": {"annotations": {"bench.lanyard.dev/tick": updates.to_string()}}}),
            )
            .await?;
        } else {
            http.merge_patch(&format!("{path}/status"), &pod_status(&size, i, k, updates))
                .await?;
        }
        updates += 1;
        if Instant::now() >= next_sample {
            rss_peak = rss_peak.max(report::rss_kib(pid));
            next_sample += Duration::from_millis(250);
        }
    }
    let churn_s = churn_start.elapsed().as_secs_f64();
    // What the last updates cause, then the figures.
    let after = settle(&debug, Duration::from_secs(3), Duration::from_secs(300)).await?;
    let cpu_s = (report::cpu_time(pid) - cpu_start).as_secs_f64();
    let rss_end = report::rss_kib(pid);
    rss_peak = rss_peak.max(rss_end);
    let translations = after - before;

    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut table = Table::new(
        &format!(
            "kube-churn: lanyard-controller against lanyard-test-apiserver, {} Services / {} Pods / {} HTTPRoutes, {} no-op Pod updates/s for {:.0} s",
            size.services,
            size.pods(),
            size.routes,
            size.rate,
            churn_s
        ),
        &[
            "ready (s)",
            "RSS at start (MiB)",
            "RSS peak (MiB)",
            "RSS end (MiB)",
            "CPU (s)",
            "updates",
            "translations",
        ],
    );
    table.row(vec![
        f2(ready_s),
        f2(mib(rss_start)),
        f2(mib(rss_peak)),
        f2(mib(rss_end)),
        f2(cpu_s),
        updates.to_string(),
        translations.to_string(),
    ]);
    let json = json!({
        "services": size.services, "pods": size.pods(), "routes": size.routes,
        "rate": size.rate, "churn_s": churn_s, "load_s": load_s, "ready_s": ready_s,
        "rss_start_kib": rss_start, "rss_peak_kib": rss_peak, "rss_end_kib": rss_end,
        "rss_hwm_kib": report::peak_rss_kib(pid),
        "cpu_s": cpu_s, "updates": updates, "translations": translations,
    });
    report::publish(&config.out, "kube-churn", &table, &json)?;
    Ok(json)
}
