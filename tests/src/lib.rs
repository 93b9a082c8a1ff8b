//! Support for Lanyard's end-to-end and golden tests.
//!
//! [`Mesh`] runs the real pipeline on manifest files (file source, index translation, xDS
//! translation) and answers what a given client pod's proxy would do with a request;
//! [`simulate`] walks the proxy's xDS resources with Envoy's semantics.

pub mod simulate;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use lanyard_controller::files::FileSource;
use lanyard_index::{Objects, Options, Translation};
use lanyard_model::{NamespaceName, ServiceKey, WorkloadKey};
use lanyard_xds::{MeshResources, ProxyRef, ProxyResources, XdsOptions};

use crate::simulate::{ProxyConfig, Request};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Gateway API mesh conformance manifests and expectations: `LANYARD_CONFORMANCE_DIR`, or
/// the copy in the repository, `tests/conformance/gateway-api-v1.6.1` (its README says where
/// it comes from), so that a clean clone has everything its tests read.
pub fn conformance_dir() -> PathBuf {
    std::env::var_os("LANYARD_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/conformance/gateway-api-v1.6.1"))
}

/// Whether golden files should be rewritten instead of compared.
pub fn update_golden() -> bool {
    std::env::var_os("LANYARD_UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty())
}

/// Compares `actual` with the golden file, or rewrites it when `LANYARD_UPDATE_GOLDEN` is set.
pub fn check_golden(path: &Path, actual: &str) -> Result<(), String> {
    if update_golden() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, actual).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} (run with LANYARD_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    })?;
    if expected == actual {
        return Ok(());
    }
    let first_difference = expected
        .lines()
        .zip(actual.lines())
        .enumerate()
        .find(|(_, (e, a))| e != a)
        .map(|(i, (e, a))| format!("line {}:\n  expected: {e}\n  actual:   {a}", i + 1))
        .unwrap_or_else(|| "one output is a prefix of the other".to_string());
    Err(format!(
        "{} differs from the translation ({first_difference}); rerun with LANYARD_UPDATE_GOLDEN=1 if the change is intended",
        path.display()
    ))
}

/// The whole pipeline on a set of manifest files.
pub struct Mesh {
    pub objects: Objects,
    pub translation: Translation,
    pub resources: MeshResources,
    /// Errors the file source reported.
    pub errors: Vec<String>,
}

impl Mesh {
    /// Loads the files (through the same file source the controller uses) and translates.
    pub fn load(paths: &[PathBuf]) -> Mesh {
        let mut source = FileSource::new(paths.iter().cloned()).expect("file source");
        let loaded = source.load();
        let errors = loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        Mesh::from_objects(Objects::clone(&loaded.objects), errors)
    }

    pub fn from_objects(objects: Objects, errors: Vec<String>) -> Mesh {
        let translation = lanyard_index::translate(&objects, &Options::default());
        let resources = lanyard_xds::translate(&translation.model, &XdsOptions::default());
        Mesh {
            objects,
            translation,
            resources,
            errors,
        }
    }

    /// The first pod (by name) in `namespace` carrying every `key=value` label.
    pub fn client(&self, namespace: &str, labels: &str) -> Result<WorkloadKey, String> {
        let wanted: Vec<(&str, &str)> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        self.translation
            .model
            .workloads
            .values()
            .find(|w| {
                w.key.namespace.as_str() == namespace
                    && wanted
                        .iter()
                        .all(|(k, v)| w.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|w| w.key.clone())
            .ok_or_else(|| format!("no pod labelled {labels} in {namespace}"))
    }

    /// What the client pod's proxy receives.
    pub fn proxy(&self, client: &WorkloadKey) -> ProxyResources {
        self.resources.for_proxy(&ProxyRef::envoy(
            client.namespace.clone(),
            Some(client.clone()),
        ))
    }

    /// Cluster DNS as a pod in `client_namespace` sees it: `svc`, `svc.ns`, `svc.ns.svc`,
    /// `svc.ns.svc.cluster.local`, or an IP literal.
    pub fn resolve(&self, host: &str, client_namespace: &NamespaceName) -> Result<IpAddr, String> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            return Ok(ip);
        }
        let host = host
            .trim_end_matches(".cluster.local")
            .trim_end_matches(".svc");
        let key = match host.split_once('.') {
            Some((name, ns)) => ServiceKey::new(ns, name),
            None => ServiceKey::new(client_namespace.as_str(), host),
        };
        // From the Service objects as loaded, not from the translated model that the listeners
        // come from too: a ClusterIP the translation got wrong then sends the request to no
        // listener of its Service.
        let service = self
            .objects
            .services
            .get(&lanyard_index::ObjectKey::new(
                key.namespace.as_str(),
                key.name.as_str(),
            ))
            .ok_or_else(|| format!("{host}: no such Service ({key})"))?;
        let spec = service.spec.as_ref();
        spec.and_then(|s| s.cluster_ips.as_ref().and_then(|ips| ips.first()))
            .or_else(|| spec.and_then(|s| s.cluster_ip.as_ref()))
            .filter(|ip| ip.as_str() != "None")
            .ok_or_else(|| format!("Service {key} has no ClusterIP"))?
            .parse()
            .map_err(|e| format!("Service {key}: ClusterIP: {e}"))
    }

    /// The pod that owns an IP.
    pub fn pod_at(&self, ip: IpAddr) -> Option<&WorkloadKey> {
        self.translation
            .model
            .workloads
            .values()
            .find(|w| w.ips.contains(&ip))
            .map(|w| &w.key)
    }
}

/// Borrows a proxy's resources in the shape the simulator takes.
pub fn proxy_config(resources: &ProxyResources) -> ProxyConfig<'_> {
    ProxyConfig {
        listeners: resources.listeners.iter().map(|r| r.as_ref()).collect(),
        routes: resources.routes.iter().map(|r| r.as_ref()).collect(),
        clusters: resources.clusters.iter().map(|r| r.as_ref()).collect(),
        endpoints: resources.endpoints.iter().map(|r| r.as_ref()).collect(),
    }
}

/// An HTTP request to `host[:port]` from a client in `client_namespace`.
pub fn http_request(
    mesh: &Mesh,
    client_namespace: &NamespaceName,
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: Vec<(String, String)>,
) -> Result<Request, String> {
    let ip = mesh.resolve(host, client_namespace)?;
    let authority = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| {
            if port == 80 {
                host.to_string()
            } else {
                format!("{host}:{port}")
            }
        });
    Ok(Request {
        destination: (ip, port),
        authority,
        method: method.to_string(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.to_string()
        },
        headers: headers
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
            .collect(),
    })
}
