//! Helpers shared by the fixture's own tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use std::time::Instant;

use futures::{Stream, StreamExt};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use lanyard_test_apiserver::{ApiServer, Config, Running};

/// How long any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn start() -> Running {
    start_with(Config::default()).await
}

pub async fn start_with(config: Config) -> Running {
    ApiServer::start(config)
        .await
        .expect("the test API server starts")
}

/// A `kube::Client` built from the kubeconfig the server wrote, as a controller would.
pub async fn client(server: &Running) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig_path).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(config).expect("client builds")
}

pub fn httproute_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    ApiResource::from_gvk_with_plural(&gvk, "httproutes")
}

pub fn httproute(name: &str, spec: serde_json::Value) -> DynamicObject {
    DynamicObject::new(name, &httproute_resource()).data(serde_json::json!({ "spec": spec }))
}

/// The HTTP status code of a kube error answered by the server.
pub fn code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Reads stream items until one satisfies `want`, failing after [`WAIT`]. Returns every item
/// read, the matching one last.
pub async fn until<S, T>(stream: &mut S, mut want: impl FnMut(&T) -> bool) -> Vec<T>
where
    S: Stream<Item = T> + Unpin,
    T: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(item)) => {
                let done = want(&item);
                seen.push(item);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("stream ended; saw {seen:#?}"),
            Err(_) => panic!("timed out; saw {seen:#?}"),
        }
    }
}

/// Polls `stream` on its own task (so a watcher keeps its watch open between reads) and hands
/// its items over through a channel.
pub fn drive<S>(stream: S) -> tokio_stream::wrappers::UnboundedReceiverStream<S::Item>
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
}

/// Polls `check` until it holds, failing after [`WAIT`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One raw HTTP/1.1 request (for what `kube::Client` will not send); returns status and body.
pub async fn raw(
    server: &Running,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let addr = server.addr;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connects");
        s.set_read_timeout(Some(WAIT)).expect("sets timeout");
        s.write_all(request.as_bytes()).expect("writes");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("reads");
        let code = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    })
    .await
    .expect("raw request task")
}

/// The real kubectl (`/usr/bin/kubectl`, or `LANYARD_KUBECTL`) against one server, with a
/// private discovery cache and a directory for manifests.
pub struct Kubectl {
    kubeconfig: String,
    pub dir: tempfile::TempDir,
}

/// What one kubectl run printed, and whether it succeeded.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(server: &Running) -> Kubectl {
        Kubectl {
            kubeconfig: server.kubeconfig_path.display().to_string(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn file(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        path.display().to_string()
    }

    /// Runs kubectl with a private discovery cache; at most 60 s.
    pub async fn run(&self, args: &[&str]) -> Run {
        let bin = std::env::var("LANYARD_KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
        let cache = self.dir.path().join("cache").display().to_string();
        let mut cmd = Command::new(&bin);
        cmd.args(["--kubeconfig", &self.kubeconfig, "--cache-dir", &cache])
            .args(args);
        let what = format!("kubectl {}", args.join(" "));
        tokio::task::spawn_blocking(move || {
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{what} took over 60 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = child.wait_with_output().unwrap();
            Run {
                ok: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .await
        .unwrap()
    }

    /// Runs kubectl and requires success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(run.ok, "kubectl {} failed: {run:#?}", args.join(" "));
        run.stdout
    }
}
