//! A loopback Kubernetes API server for Lanyard's tests.
//!
//! **This is a test fixture, not a product feature.** No real API server can be installed on the
//! machines Lanyard builds on, so tests start this one on `127.0.0.1` and point the real
//! `kube::Client`, kube-runtime watchers and the real `kubectl` at it through the kubeconfig it
//! writes. It keeps everything in memory, has no authentication, authorization, admission,
//! validation or garbage collection, and must never be shipped or used as a cluster.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lanyard_test_apiserver::{ApiServer, Config};
//! let server = ApiServer::start(Config::default()).await?;
//! println!("kubectl --kubeconfig {}", server.kubeconfig_path.display());
//! server.inject_gone("HTTPRoute"); // the HTTPRoute watches get 410 Gone and must relist
//! # Ok(()) }
//! ```
//!
//! What it serves, and what it leaves out, is listed in the crate's README.md. The modules:
//! [`resources`] (the table of kinds that drives everything), `routes` (URL parsing),
//! `discovery`, `handlers` (requests and the reading verbs), `writes` (the writing verbs),
//! `watch` (event streams), `store` (objects, versions, history), `patch` (merge, JSON and
//! strategic merge patch), `apply` and `fields` (server-side apply and managed fields), `schema`
//! (list merge rules), `object` (server-owned metadata and defaults), `selectors`, `table`
//! (kubectl's table output), `openapi`, `kubeconfig`, and `conversion` with `webhook_client`
//! (what a stored CRD changes: served versions and webhook conversion).

mod api_error;
mod apply;
mod conversion;
mod discovery;
pub mod faults;
mod fields;
mod handlers;
mod kubeconfig;
mod object;
mod openapi;
mod patch;
pub mod resources;
mod routes;
mod schema;
mod selectors;
mod store;
mod table;
mod watch;
mod webhook_client;
mod writes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use faults::{Action, Fault, FaultId, Match};
pub use schema::RouteParents;

use api_error::{ApiError, json_response};
use resources::ResourceType;
use store::Store;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (a real server: ~1 min).
    pub bookmark_interval: Duration,
    /// How many changes the history keeps for watches to resume from; older versions get 410.
    pub history_limit: usize,
    /// Namespaces that exist from the start (objects may only be created in existing ones).
    pub namespaces: Vec<String>,
    /// How server-side apply merges `status.parents` of HTTPRoute and GRPCRoute.
    pub route_parents: RouteParents,
    /// Where the Services that CRD conversion webhooks name (`clientConfig.service`) listen,
    /// since there is no cluster DNS: key `"namespace/name:port"` (or `"namespace/name"` for
    /// any port), value a loopback address. The server still checks the certificate against
    /// `<name>.<namespace>.svc`. Also settable later with [`Running::set_webhook_service`].
    pub webhook_services: HashMap<String, SocketAddr>,
    /// How long one conversion webhook call may take (default 10 s; kube-apiserver's is 30 s).
    pub conversion_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 0,
            bookmark_interval: Duration::from_secs(1),
            history_limit: 10_000,
            namespaces: ["default", "kube-system", "kube-public", "kube-node-lease"]
                .map(String::from)
                .to_vec(),
            route_parents: RouteParents::default(),
            webhook_services: HashMap::new(),
            conversion_timeout: Duration::from_secs(10),
        }
    }
}

/// One request the server answered, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection;
    /// `get` for discovery and other non-resource paths.
    pub verb: String,
    pub method: String,
    pub path: String,
    pub query: String,
}

/// State shared by the request handlers.
pub(crate) struct Shared {
    store: Store,
    schema: schema::Schema,
    bookmark_interval: Duration,
    server_address: String,
    requests: Mutex<Vec<RequestRecord>>,
    webhook_services: Mutex<HashMap<String, SocketAddr>>,
    conversion_timeout: Duration,
    faults: faults::Faults,
}

/// Starts servers.
pub struct ApiServer;

/// A started server. Dropping it stops the server and ends its watches.
pub struct Running {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// A kubeconfig naming this server (for `kubectl --kubeconfig` and `kube::Config`), in a
    /// temporary directory that lives as long as this value.
    pub kubeconfig_path: PathBuf,
    /// The task serving HTTP.
    pub handle: JoinHandle<()>,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

impl ApiServer {
    /// Binds `127.0.0.1:port`, writes the kubeconfig, creates the configured namespaces and
    /// serves until the returned [`Running`] is dropped.
    pub async fn start(config: Config) -> std::io::Result<Running> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let dir = tempfile::Builder::new()
            .prefix("lanyard-test-apiserver-")
            .tempdir()?;
        let kubeconfig_path = kubeconfig::write(dir.path(), &base_url)?;
        let shared = Arc::new(Shared {
            store: Store::new(config.history_limit),
            schema: schema::Schema {
                route_parents: config.route_parents,
            },
            bookmark_interval: config.bookmark_interval,
            server_address: addr.to_string(),
            requests: Mutex::new(Vec::new()),
            webhook_services: Mutex::new(config.webhook_services),
            conversion_timeout: config.conversion_timeout,
            faults: faults::Faults::default(),
        });
        let ns = resources::find("", "v1", "namespaces").expect("namespaces are served");
        for name in &config.namespaces {
            let obj = object::prepare_create(ns, json!({"metadata": {"name": name}}), None);
            shared
                .store
                .write(ns, "", name, |_| Ok(store::Outcome::Put(obj)))
                .map_err(|e| std::io::Error::other(e.message))?;
        }
        let app = Router::new()
            .fallback(dispatch)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("test API server stopped: {e}");
            }
        });
        Ok(Running {
            addr,
            base_url,
            kubeconfig_path,
            handle,
            shared,
            _dir: dir,
        })
    }
}

/// Where the objects of a kind (kind or plural, case-insensitive, every group serving that
/// name) are stored; panics when no served kind has that name.
fn storage_keys(kind: &str) -> Vec<resources::StorageKey> {
    let mut keys: Vec<_> = resources::by_kind_or_plural(kind)
        .map(ResourceType::storage_key)
        .collect();
    keys.dedup();
    assert!(!keys.is_empty(), "no served kind {kind:?}");
    keys
}

impl Running {
    /// Makes watches of a kind (by kind or plural, case-insensitive; every group serving that
    /// name) fail with `410 Gone`: each open one gets an ERROR event and ends; if none is open,
    /// the next watch request gets it instead. Clients must then relist.
    pub fn inject_gone(&self, kind: &str) {
        for key in storage_keys(kind) {
            self.shared.store.inject_gone(key);
        }
    }

    /// Closes every open watch stream without an error; clients resume from their last version.
    pub fn drop_watches(&self) {
        self.cut_watches(None);
    }

    /// Forgets the change history: watches resuming from any earlier version get 410 Gone.
    pub fn compact_history(&self) {
        self.shared.store.compact();
    }

    /// Adds a fault: the first fault matching a request acts on it (see [`Fault`]); it stays
    /// until cleared or, with [`Fault::times`], for that many matching requests.
    pub fn add_fault(&self, fault: Fault) -> FaultId {
        self.shared.faults.add(fault)
    }

    /// Removes one fault (requests it stalls go on).
    pub fn clear_fault(&self, id: FaultId) {
        self.shared.faults.clear(id);
    }

    /// Removes every fault and unserved version; stalled requests go on.
    pub fn clear_faults(&self) {
        self.shared.faults.clear_all();
    }

    /// How many requests a fault has acted on (also after it is used up or cleared).
    pub fn fault_hits(&self, id: FaultId) -> usize {
        self.shared.faults.hits(id)
    }

    /// Lets requests held by [`Fault::stall`] go on (they are then served normally).
    pub fn release_stalls(&self) {
        self.shared.faults.release();
    }

    /// Closes the open watches of a kind (kind or plural, any group), or all with `None`,
    /// without an error event: clients resume from their last version.
    pub fn cut_watches(&self, kind: Option<&str>) {
        let Some(kind) = kind else {
            self.shared.store.cut_watches(None);
            return;
        };
        for key in storage_keys(kind) {
            self.shared.store.cut_watches(Some(key));
        }
    }

    /// Stops serving `group`/`version` (one resource by plural, or all of it with `None`):
    /// discovery leaves it out and its requests get 404, as when a CRD version is unserved.
    /// Open watches are not ended (see [`Running::cut_watches`]).
    pub fn unserve_version(&self, group: &str, version: &str, plural: Option<&str>) {
        self.shared
            .faults
            .set_unserved(group, version, plural, true);
    }

    /// Undoes [`Running::unserve_version`] for the same arguments.
    pub fn serve_version(&self, group: &str, version: &str, plural: Option<&str>) {
        self.shared
            .faults
            .set_unserved(group, version, plural, false);
    }

    /// Number of watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.shared.store.open_watches()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.rv()
    }

    /// The stored object, read directly (`apiVersion` like `v1` or `gateway.networking.k8s.io/v1`).
    /// `apiVersion` is rewritten to the one asked for, except while a CRD with webhook
    /// conversion covers the kind: then the body is returned as stored (at its stored version,
    /// normally the CRD's storage version; no webhook is called).
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let r = resources::by_api_version_kind(api_version, kind)?;
        let obj = self
            .shared
            .store
            .get(r.storage_key(), namespace.unwrap_or(""), name)?;
        Some(self.as_read(r, obj))
    }

    fn as_read(&self, r: &ResourceType, mut obj: Value) -> Value {
        if conversion::Converter::new(&self.shared, r)
            .storage_version()
            .is_none()
        {
            obj["apiVersion"] = json!(r.api_version());
        }
        obj
    }

    /// Points the Service `namespace/name` (port `port`, or any port if `None`) that a CRD's
    /// conversion webhook `clientConfig.service` names at a loopback address (see
    /// [`Config::webhook_services`]).
    pub fn set_webhook_service(
        &self,
        namespace: &str,
        name: &str,
        port: Option<u16>,
        addr: SocketAddr,
    ) {
        let key = match port {
            Some(p) => format!("{namespace}/{name}:{p}"),
            None => format!("{namespace}/{name}"),
        };
        self.shared
            .webhook_services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, addr);
    }

    /// All stored objects of a kind, across namespaces (`apiVersion` as for [`Running::object`]).
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some(r) = resources::by_api_version_kind(api_version, kind) else {
            return Vec::new();
        };
        let (items, _) = self.shared.store.list(r.storage_key(), None);
        items.into_iter().map(|o| self.as_read(r, o)).collect()
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many requests had this verb and exactly this path.
    pub fn request_count(&self, verb: &str, path: &str) -> usize {
        let requests = self
            .shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        requests
            .iter()
            .filter(|r| r.verb == verb && r.path == path)
            .count()
    }

    /// Request counts by (verb, path).
    pub fn request_counts(&self) -> HashMap<(String, String), usize> {
        let mut out = HashMap::new();
        for r in self.requests() {
            *out.entry((r.verb, r.path)).or_default() += 1;
        }
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.abort();
        self.shared.store.cut_watches(None);
    }
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let path = uri.path().to_string();
    let target = routes::parse(&path);
    let verb = match &target {
        Ok(Some(t)) => routes::verb(
            &method,
            t,
            matches!(query.get("watch").map(String::as_str), Some("true" | "1")),
        ),
        _ => "get",
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(RequestRecord {
            verb: verb.to_string(),
            method: method.to_string(),
            path: path.clone(),
            query: uri.query().unwrap_or("").to_string(),
        });
    tracing::debug!(%method, %uri, "test API server request");
    if let Some(rest) = path.strip_prefix(faults::CONTROL_PATH)
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return faults::control(&shared, &method, rest, &body);
    }
    let watch = verb == "watch";
    let info = faults::RequestInfo {
        verb,
        path: &path,
        resource: target.as_ref().ok().and_then(|t| t.as_ref()).map(|t| t.r),
        namespace: target
            .as_ref()
            .ok()
            .and_then(|t| t.as_ref())
            .and_then(|t| t.namespace.as_deref()),
        name: target
            .as_ref()
            .ok()
            .and_then(|t| t.as_ref())
            .and_then(|t| t.name.as_deref()),
        watch,
    };
    match shared.faults.check(&info) {
        faults::Verdict::Serve => {}
        faults::Verdict::Answer(resp) => return resp,
        faults::Verdict::Stall(d) => shared.faults.stall(d).await,
    }
    match target {
        Err(e) => e.into_response(),
        Ok(Some(target)) if !conversion::served(&shared, target.r) => {
            ApiError::no_route(&path).into_response()
        }
        Ok(Some(target)) => {
            let req = handlers::Request {
                shared: shared.clone(),
                method: &method,
                target,
                query: &query,
                headers: &headers,
                body,
            };
            handlers::handle(req)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        Ok(None) if method == Method::GET => non_resource(&shared, &path, &headers),
        Ok(None) => ApiError::method_not_supported(method.as_str(), &path).into_response(),
    }
}

fn non_resource(shared: &Shared, path: &str, headers: &HeaderMap) -> Response {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let served = |r: &ResourceType| conversion::served(shared, r);
    let found = match segs.as_slice() {
        ["version"] => Some(discovery::version()),
        ["api"] => return discovery::root(true, headers, &shared.server_address, &served),
        ["apis"] => return discovery::root(false, headers, &shared.server_address, &served),
        ["api", v] => discovery::resource_list("", v, &served),
        ["apis", g] => discovery::group(g, &served),
        ["apis", g, v] => discovery::resource_list(g, v, &served),
        ["openapi", rest @ ..] => return openapi::serve(rest),
        ["healthz" | "livez" | "readyz"] => {
            return (StatusCode::OK, "ok").into_response();
        }
        _ => None,
    };
    match found {
        Some(doc) => json_response(StatusCode::OK, &doc),
        None => ApiError::no_route(path).into_response(),
    }
}
