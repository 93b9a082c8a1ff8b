//! Which watches cannot be read, for `/readyz`, `/metrics` and the logs.
//!
//! - A required kind ([`is_required`]: Services, EndpointSlices, Pods, HTTPRoutes) that the
//!   API server refuses or fails holds readiness back, and `/readyz` names the permission.
//! - An optional kind (GRPCRoutes, ReferenceGrants, the SMI kinds) that cannot
//!   be read counts as listed with no objects (or keeps the objects of its last list):
//!   `/readyz` stays 200 and says which kind is left out and what it needs.
//! - `lanyard_k8s_watches_unavailable{kind,reason}` counts the watches that cannot be read
//!   now; `lanyard_k8s_watch_errors_total{kind,code}` counts every error a watch got.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use kube::api::ApiResource;
use kube::runtime::watcher;
use lanyard_index::Kind;
use lanyard_xds::debug::{Readiness, SourceStatus};

use super::KINDS;
use super::store::Watched;

/// Whether Lanyard cannot work without reading `kind`.
pub fn is_required(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Service | Kind::EndpointSlice | Kind::Pod | Kind::HttpRoute
    )
}

/// The HTTP code of a watcher error from the API server (`None`: no answer, e.g. the
/// connection failed).
pub fn error_code(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    }
}

/// Whether the API server refused the request for want of a permission (401, 403).
pub fn is_forbidden(error: &watcher::Error) -> bool {
    matches!(error_code(error), Some(401 | 403))
}

/// The permission a watch needs, worded as the API server words a refusal: `list and watch
/// on "grpcroutes" in API group "gateway.networking.k8s.io" at the cluster scope`.
pub fn permission(watched: &Watched, resource: &ApiResource) -> String {
    let scope = match &watched.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    format!(
        "list and watch on {:?} in API group {:?} at version {} {scope}",
        resource.plural, resource.group, resource.version
    )
}

/// Why a watch cannot be read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// `forbidden` (401/403: a permission is missing), `not_served` (404: the CRD is not
    /// installed) or `failing` (any other error).
    pub reason: &'static str,
    /// The permission it needs (see [`permission`]).
    pub needs: String,
    /// The last error, one line.
    pub error: String,
}

impl Unavailable {
    /// Why a watch of `watched` at `resource` failed with `error`.
    pub fn new(watched: &Watched, resource: &ApiResource, error: &watcher::Error) -> Self {
        let reason = match error_code(error) {
            Some(401 | 403) => "forbidden",
            Some(404) => "not_served",
            _ => "failing",
        };
        Self {
            reason,
            needs: permission(watched, resource),
            error: error.to_string().replace('\n', " "),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    unavailable: Vec<Option<Unavailable>>,
    errors: BTreeMap<(Kind, String), u64>,
}

/// The health of every watch, shared by the watches and the debug endpoint.
#[derive(Debug)]
pub struct Health {
    watches: Vec<Watched>,
    state: Mutex<State>,
}

impl Health {
    pub fn new(watches: Vec<Watched>) -> Self {
        let n = watches.len();
        Self {
            watches,
            state: Mutex::new(State {
                unavailable: vec![None; n],
                errors: BTreeMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an error of watch number `watch`.
    pub fn count_error(&self, watch: usize, error: &watcher::Error) {
        let code = error_code(error).map_or_else(|| "none".to_string(), |c| c.to_string());
        let kind = self.watches[watch].kind;
        *self.state().errors.entry((kind, code)).or_default() += 1;
    }

    /// Records why watch number `watch` cannot be read (`None`: it can), and returns what it
    /// was before.
    pub fn set(&self, watch: usize, unavailable: Option<Unavailable>) -> Option<Unavailable> {
        std::mem::replace(&mut self.state().unavailable[watch], unavailable)
    }

    /// Why watch number `watch` cannot be read, if it cannot.
    pub fn get(&self, watch: usize) -> Option<Unavailable> {
        self.state().unavailable[watch].clone()
    }
}

impl SourceStatus for Health {
    fn readiness(&self) -> Readiness {
        let state = self.state();
        let mut ready = true;
        let mut detail = Vec::new();
        for (watched, unavailable) in self.watches.iter().zip(&state.unavailable) {
            let Some(u) = unavailable else { continue };
            // A required kind that is not served (no Gateway API CRDs) is empty, not broken.
            let blocks = is_required(watched.kind) && u.reason != "not_served";
            ready &= !blocks;
            let what = match (blocks, u.reason) {
                (true, _) => "not ready: cannot read the required kind",
                (false, "not_served") => "degraded: not served, treated as empty:",
                (false, _) => "degraded: cannot read the optional kind, left out:",
            };
            let namespace = watched
                .namespace
                .as_deref()
                .map(|ns| format!(" (namespace {ns})"))
                .unwrap_or_default();
            detail.push(format!(
                "{what} {}{namespace}: {}; needs {}; last error: {}",
                watched.kind, u.reason, u.needs, u.error
            ));
        }
        Readiness { ready, detail }
    }

    fn metrics(&self) -> String {
        let state = self.state();
        let mut out = String::new();
        let name = "lanyard_k8s_watches_unavailable";
        let _ = writeln!(
            out,
            "# HELP {name} Watches that cannot be read now, by kind and reason (forbidden, not_served, failing).\n# TYPE {name} gauge"
        );
        for kind in KINDS {
            let mut by_reason: BTreeMap<&str, u64> = ["forbidden", "not_served", "failing"]
                .map(|r| (r, 0))
                .into();
            for (watched, u) in self.watches.iter().zip(&state.unavailable) {
                if let (true, Some(u)) = (watched.kind == kind, u) {
                    *by_reason.entry(u.reason).or_default() += 1;
                }
            }
            for (reason, n) in by_reason {
                let _ = writeln!(out, "{name}{{kind=\"{kind}\",reason=\"{reason}\"}} {n}");
            }
        }
        let name = "lanyard_k8s_watch_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Errors the watches got, by kind and HTTP code (none: no answer).\n# TYPE {name} counter"
        );
        for ((kind, code), n) in &state.errors {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\",code=\"{code}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_forbidden(list: bool) -> watcher::Error {
        let status = Box::new(kube::core::Status {
            code: 403,
            ..Default::default()
        });
        if list {
            watcher::Error::InitialListFailed(kube::Error::Api(status))
        } else {
            watcher::Error::WatchStartFailed(kube::Error::Api(status))
        }
    }

    fn mk_watched(kind: Kind, namespace: Option<&str>) -> Watched {
        Watched {
            kind,
            namespace: namespace.map(Into::into),
        }
    }

    #[test]
    fn an_optional_kind_degrades_and_a_required_one_holds_readiness_back() {
        let watches = vec![
            mk_watched(Kind::GrpcRoute, Some("shop")),
            mk_watched(Kind::Service, None),
        ];
        let health = Health::new(watches.clone());
        assert_eq!(health.readiness().detail.len(), 0);
        let grpc = super::super::api_resource(Kind::GrpcRoute);
        health.set(
            0,
            Some(Unavailable::new(&watches[0], &grpc, &mk_forbidden(true))),
        );
        health.count_error(0, &mk_forbidden(true));
        health.count_error(0, &mk_forbidden(false));
        let readiness = health.readiness();
        assert!(readiness.ready);
        assert!(
            readiness.detail[0].contains(
                "GRPCRoute (namespace shop): forbidden; needs list and watch on \"grpcroutes\" in API group \"gateway.networking.k8s.io\" at version v1 in the namespace \"shop\""
            ),
            "{readiness:?}"
        );
        let metrics = health.metrics();
        assert!(metrics.contains(
            "lanyard_k8s_watches_unavailable{kind=\"GRPCRoute\",reason=\"forbidden\"} 1\n"
        ));
        assert!(metrics.contains(
            "lanyard_k8s_watches_unavailable{kind=\"Service\",reason=\"forbidden\"} 0\n"
        ));
        assert!(
            metrics.contains("lanyard_k8s_watch_errors_total{kind=\"GRPCRoute\",code=\"403\"} 2\n")
        );

        let services = super::super::api_resource(Kind::Service);
        health.set(
            1,
            Some(Unavailable::new(
                &watches[1],
                &services,
                &mk_forbidden(true),
            )),
        );
        let readiness = health.readiness();
        assert!(!readiness.ready);
        assert!(readiness.detail[1].contains("not ready: cannot read the required kind Service: forbidden; needs list and watch on \"services\" in API group \"\" at version v1 at the cluster scope"), "{readiness:?}");

        assert!(health.set(1, None).is_some());
        assert!(health.readiness().ready);
    }
}
