//! The real thing, in-process: objects through `lanyard_index::translate` and
//! `lanyard_xds::translate` into an [`XdsServer`] serving ADS on loopback; and the
//! responses it serves, captured from its snapshots and encoded for the floor.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource as WireResource,
};
use lanyard_index::Objects;
use lanyard_xds::cache::TypeView;
use lanyard_xds::{
    MeshResources, MeshSnapshot, ProxyIdentity, ProxyRef, ResourceType, ServerConfig, XdsOptions,
    XdsServer,
};
use prost::Message;
use tokio::net::TcpListener;

use crate::mesh::Shape;
use crate::wire::{Protocol, node};

/// Objects → model → xDS resources (not yet encoded: the server encodes on publish).
pub fn translate(objects: &Objects) -> MeshResources {
    let translation = lanyard_index::translate(objects, &lanyard_index::Options::default());
    lanyard_xds::translate(&translation.model, &XdsOptions::default())
}

/// A loopback listener with a deep accept queue: thousands of proxies connecting within a
/// second overflow the default (1024) while the server is busy, and the kernel then drops
/// or resets connections (see BENCHMARKS.md).
pub fn listener() -> anyhow::Result<TcpListener> {
    Ok(lanyard_xds::listen::listen("127.0.0.1:0".parse()?)?)
}

/// An [`XdsServer`] serving ADS on `127.0.0.1:<ephemeral>`.
pub struct Real {
    pub server: XdsServer,
    pub addr: SocketAddr,
}

impl Real {
    pub async fn start(config: ServerConfig) -> anyhow::Result<Real> {
        let server = XdsServer::start(config);
        let listener = listener()?;
        let addr = listener.local_addr()?;
        let s = server.clone();
        tokio::spawn(async move { s.serve_ads(listener).await });
        Ok(Real { server, addr })
    }

    /// Publishes and waits until the snapshot is served; returns it.
    pub async fn publish(&self, mesh: MeshResources) -> anyhow::Result<Arc<MeshSnapshot>> {
        let mut snapshots = self.server.snapshots();
        let before = snapshots
            .borrow_and_update()
            .as_ref()
            .map_or(0, |s| s.generation());
        self.server.publish(mesh);
        let published = tokio::time::timeout(
            Duration::from_secs(120),
            snapshots.wait_for(|s| s.as_ref().is_some_and(|s| s.generation() > before)),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no snapshot within 120 s (rejected as inconsistent?)"))??;
        published
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no snapshot"))
    }

    pub fn stop(&self) {
        self.server.shutdown();
    }
}

/// The view of each type each proxy gets from a snapshot, as the server computes it.
pub struct Views {
    /// Per proxy, per type (in `ResourceType::ALL` order).
    pub views: Vec<[Arc<TypeView>; 4]>,
}

impl Views {
    pub fn of(snapshot: &MeshSnapshot, shape: &Shape, count: usize) -> anyhow::Result<Views> {
        let mut by_ref: HashMap<ProxyRef, [Arc<TypeView>; 4]> = HashMap::new();
        let mut views = Vec::with_capacity(count);
        for p in 0..count {
            let (id, namespace, pod) = shape.proxy(p);
            let identity = ProxyIdentity::from_node(Some(&node(&id, &namespace, &pod)))?;
            let proxy = snapshot.proxy_ref(&identity);
            let entry = by_ref
                .entry(proxy.clone())
                .or_insert_with(|| ResourceType::ALL.map(|ty| snapshot.view(ty, &proxy)));
            views.push(entry.clone());
        }
        Ok(Views { views })
    }

    /// Which types changed for each proxy between `self` and `next`.
    pub fn changed(&self, next: &Views) -> Vec<[bool; 4]> {
        self.views
            .iter()
            .zip(&next.views)
            .map(|(a, b)| std::array::from_fn(|t| a[t].version() != b[t].version()))
            .collect()
    }
}

/// The index of a type in `ResourceType::ALL` from its short name.
pub fn type_index(short: &str) -> Option<usize> {
    ResourceType::ALL
        .iter()
        .position(|t| t.short_name() == short)
}

/// A view as a map key: equal when it is the same allocation. The key owns the `Arc`, so
/// the allocation lives as long as the entry and its address cannot be handed to a later
/// view. (A key of the bare address is reused: a snapshot's views are freed once the next
/// replaces it, and a view of a later snapshot can be allocated at the same address, which
/// then finds the encoding of a different view, even of a different type.)
#[derive(Clone)]
struct ViewId(Arc<TypeView>);

impl PartialEq for ViewId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ViewId {}

impl std::hash::Hash for ViewId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

/// Encodes responses as the server sends them, each distinct view once.
#[derive(Default)]
pub struct Encoder {
    full: HashMap<(ViewId, Protocol), Bytes>,
    deltas: HashMap<(ViewId, ViewId), Bytes>,
}

impl Encoder {
    /// The response carrying all of `view` (SotW, or a first delta response).
    pub fn full(&mut self, ty: ResourceType, view: &Arc<TypeView>, protocol: Protocol) -> Bytes {
        self.full
            .entry((ViewId(view.clone()), protocol))
            .or_insert_with(|| match protocol {
                Protocol::Sotw => sotw_response(ty, view),
                Protocol::Delta => delta_response(ty, view, |_| true, Vec::new()),
            })
            .clone()
    }

    /// The delta response from `old` to `new`: changed resources, removed names.
    pub fn delta(&mut self, ty: ResourceType, old: &Arc<TypeView>, new: &Arc<TypeView>) -> Bytes {
        let key = (ViewId(old.clone()), ViewId(new.clone()));
        self.deltas
            .entry(key)
            .or_insert_with(|| {
                let removed = old
                    .resources()
                    .iter()
                    .filter(|r| new.get(r.name()).is_none())
                    .map(|r| r.name().to_string())
                    .collect();
                delta_response(
                    ty,
                    new,
                    |r| old.get(r.name()).map(|o| o.version()) != Some(r.version()),
                    removed,
                )
            })
            .clone()
    }

    /// The responses of a change for one proxy, in push order.
    pub fn change(
        &mut self,
        protocol: Protocol,
        old: &[Arc<TypeView>; 4],
        new: &[Arc<TypeView>; 4],
    ) -> Vec<Bytes> {
        ResourceType::ALL
            .iter()
            .enumerate()
            .filter(|(t, _)| old[*t].version() != new[*t].version())
            .map(|(t, ty)| match protocol {
                Protocol::Sotw => self.full(*ty, &new[t], protocol),
                Protocol::Delta => self.delta(*ty, &old[t], &new[t]),
            })
            .collect()
    }
}

fn sotw_response(ty: ResourceType, view: &TypeView) -> Bytes {
    DiscoveryResponse {
        version_info: view.version().to_string(),
        resources: view.resources().iter().map(|r| r.body().clone()).collect(),
        type_url: ty.type_url().to_string(),
        nonce: "1000000".to_string(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

fn delta_response(
    ty: ResourceType,
    view: &TypeView,
    include: impl Fn(&lanyard_xds::Resource) -> bool,
    removed: Vec<String>,
) -> Bytes {
    DeltaDiscoveryResponse {
        system_version_info: view.version().to_string(),
        resources: view
            .resources()
            .iter()
            .filter(|r| include(r))
            .map(|r| WireResource {
                name: r.name().to_string(),
                version: r.version().to_string(),
                resource: Some(r.body().clone()),
                ..Default::default()
            })
            .collect(),
        type_url: ty.type_url().to_string(),
        removed_resources: removed,
        nonce: "1000000".to_string(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

/// Every proxy's first responses, for the floor.
pub fn initial(views: &Views, protocol: Protocol, encoder: &mut Encoder) -> crate::floor::Initial {
    views
        .views
        .iter()
        .map(|v| std::array::from_fn(|t| Some(encoder.full(ResourceType::ALL[t], &v[t], protocol))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh;
    use prost::Message;

    /// Snapshot after snapshot, each dropped before the next is built (as the fan-out
    /// scenario does): every response the encoder hands out must carry the view it was
    /// asked for. Keyed by bare addresses, a later view allocated where an earlier one was
    /// got that one's bytes, and the floor pushed a stale RDS response where an EDS change
    /// was due (the smoke test then waited 61 s for an EDS response that never came).
    #[test]
    fn responses_match_their_views_across_dropped_snapshots() {
        let shape = Shape::new(6);
        let count = 6;
        let mut objects = mesh::objects(&shape);
        let mut encoder = Encoder::default();
        let mut previous: Option<Views> = None;
        for round in 0..12u32 {
            let snapshot = MeshSnapshot::build(
                u64::from(round) + 1,
                std::time::Instant::now(),
                translate(&objects),
            )
            .unwrap();
            let views = Views::of(&snapshot, &shape, count).unwrap();
            for (p, view) in views.views.iter().enumerate() {
                for (t, ty) in ResourceType::ALL.iter().enumerate() {
                    let sotw =
                        DiscoveryResponse::decode(encoder.full(*ty, &view[t], Protocol::Sotw))
                            .unwrap();
                    assert_eq!(sotw.type_url, ty.type_url(), "round {round} proxy {p}");
                    assert_eq!(
                        sotw.version_info,
                        view[t].version().to_string(),
                        "round {round} proxy {p} {ty}"
                    );
                    let full = DeltaDiscoveryResponse::decode(encoder.full(
                        *ty,
                        &view[t],
                        Protocol::Delta,
                    ))
                    .unwrap();
                    assert_eq!(
                        full.system_version_info,
                        view[t].version().to_string(),
                        "round {round} proxy {p} {ty}"
                    );
                    if let Some(old) = &previous {
                        let delta = DeltaDiscoveryResponse::decode(encoder.delta(
                            *ty,
                            &old.views[p][t],
                            &view[t],
                        ))
                        .unwrap();
                        assert_eq!(delta.type_url, ty.type_url(), "round {round} proxy {p}");
                        assert_eq!(
                            delta.system_version_info,
                            view[t].version().to_string(),
                            "round {round} proxy {p} {ty}"
                        );
                    }
                }
            }
            // The previous snapshot's views go; this one's stay for the next delta.
            previous = Some(views);
            drop(snapshot);
            match round % 3 {
                0 => mesh::consumer_weight(&mut objects, &shape, 10 + round),
                1 => mesh::producer_weight(&mut objects, &shape, 1, 10 + round),
                _ => mesh::endpoint_event(&mut objects, &shape, 2, round as usize),
            }
        }
    }
}
